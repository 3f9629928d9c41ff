"""Who may join the farm: the farm key, each node's certificate, and the proof
that ties them together on every link (see docs/security.md)."""
