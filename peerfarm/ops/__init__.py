"""Operations: what running peerfarm unattended needs, shared by the faces.

The config file (config.py), logging (logs.py), the metrics endpoint
(metrics.py), serving a headless node with them (serving.py), and the checks of
`peerfarm doctor` (doctor.py, qt_platform.py). A layer of its own between the
faces and the drivers: `peerfarm node` (the CLI), `peerfarm bootstrap` (its own
face) and the desktop app use it without importing each other, and the runtime
never imports it (docs/architecture.md).
"""
