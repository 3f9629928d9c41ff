"""Build the peerfarm app: a folder an artist unzips and double-clicks, no Python needed.

    python packaging/build_app.py [--dist DIR] [--work DIR]

Needs `pip install -e '.[gui,package]'` (PySide6 and PyInstaller). Builds for the
platform it runs on (PyInstaller does not cross-build):

    Linux    DIR/peerfarm/peerfarm (+ peerfarm.desktop, peerfarm.png)
    Windows  DIR/peerfarm/peerfarm.exe
    macOS    DIR/peerfarm.app

and zips it as DIR/peerfarm-<version>-<platform>.zip. Only the Linux build is
tested (tests/test_packaging.py, PEERFARM_PACKAGING=1).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SPEC = HERE / "peerfarm.spec"
DESKTOP_FILE = HERE / "linux" / "peerfarm.desktop"


class BuildError(Exception):
    """The app could not be built; the message says what to do."""


def platform_tag() -> str:
    """linux-x86_64, windows-amd64, macos-arm64, ..."""
    system = {"darwin": "macos", "win32": "windows"}.get(sys.platform, sys.platform)
    if system.startswith("linux"):
        system = "linux"
    return f"{system}-{platform.machine().lower() or 'unknown'}"


def render_icon(path: Path, size: int = 256) -> None:
    """Save the app's own icon (drawn by ui/icon.py) as a PNG."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # no display needed to draw it
    from PySide6.QtGui import QGuiApplication

    from ui.icon import app_icon

    _app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])
    path.parent.mkdir(parents=True, exist_ok=True)
    if not app_icon().pixmap(size, size).save(str(path), "PNG"):
        raise BuildError(f"could not write the icon {path}")


def run_pyinstaller(dist: Path, work: Path, icon: Path, version: str) -> None:
    env = dict(os.environ, PEERFARM_APP_ICON=str(icon), PEERFARM_APP_VERSION=version)
    command = [
        sys.executable,
        "-m",
        "PyInstaller",
        "--noconfirm",
        "--clean",
        "--log-level=WARN",
        f"--distpath={dist}",
        f"--workpath={work}",
        str(SPEC),
    ]
    if subprocess.run(command, env=env, cwd=ROOT).returncode != 0:
        raise BuildError("PyInstaller failed (its messages are above)")


def zip_folder(source: Path, archive: Path) -> None:
    """Zip SOURCE (a folder) so it unzips as one folder, keeping executable bits."""
    archive.unlink(missing_ok=True)
    if sys.platform == "darwin":
        # ditto keeps the .app's symlinks and extended attributes (code signature).
        command = ["ditto", "-c", "-k", "--keepParent", str(source), str(archive)]
        subprocess.run(command, check=True)
        return
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(source.rglob("*")):
            zf.write(path, path.relative_to(source.parent))  # stores the file mode too


def build(dist: Path, work: Path) -> Path:
    """Build the app into DIST; return the zip's path."""
    try:
        import PyInstaller  # noqa: F401
    except ImportError:
        raise BuildError(
            "PyInstaller is not installed; run: pip install -e '.[gui,package]'"
        ) from None
    try:
        import PySide6  # noqa: F401
    except ImportError:
        raise BuildError("PySide6 is not installed; run: pip install -e '.[gui,package]'") from None
    from peerfarm import __version__

    dist, work = dist.resolve(), work.resolve()
    icon = work / "peerfarm.png"
    render_icon(icon)
    run_pyinstaller(dist, work, icon, __version__)
    if sys.platform == "darwin":
        app = dist / "peerfarm.app"
        shutil.rmtree(dist / "peerfarm", ignore_errors=True)  # the .app holds it all
    else:
        app = dist / "peerfarm"
        if sys.platform.startswith("linux"):
            # What the artist double-clicks, with the app's icon.
            shutil.copy2(DESKTOP_FILE, app / "peerfarm.desktop")
            (app / "peerfarm.desktop").chmod(0o755)  # file managers launch only trusted ones
            shutil.copy2(icon, app / "peerfarm.png")
    archive = dist / f"peerfarm-{__version__}-{platform_tag()}.zip"
    zip_folder(app, archive)
    return archive


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the peerfarm app with PyInstaller.")
    parser.add_argument("--dist", type=Path, default=ROOT / "dist", help="output folder")
    parser.add_argument(
        "--work", type=Path, default=ROOT / "build" / "pyinstaller", help="scratch folder"
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        archive = build(args.dist, args.work)
    except BuildError as exc:
        print(f"build_app: error: {exc}", file=sys.stderr)
        return 1
    size = archive.stat().st_size / 2**20
    print(f"built {archive} ({size:.0f} MiB) in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
