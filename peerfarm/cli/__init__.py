"""The `peerfarm` command: a face of the node (see docs/architecture.md)."""

from peerfarm.cli.main import main

__all__ = ["main"]
