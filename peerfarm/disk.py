"""Writing files so that a reader (or a crash) sees the old content or the new, never half."""

from __future__ import annotations

import os
import threading
from pathlib import Path


def write_atomically(path: Path, data: bytes) -> None:
    """Write a file so a reader (or a crash) sees the old or the new content, never half."""
    # A name of its own per writer thread, so two writers never share a temp file.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
