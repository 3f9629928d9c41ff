"""One node per data folder: a lock on DATA_DIR/node.lock, held while the node runs.

Two nodes on one data folder (the desktop app and a `peerfarm node` of the same user,
on two ports) share one identity: each killed the other's renderers as "left running by
an earlier run", both wrote the same log file, and both signed actions in one name, so
the farm proved that member an equivocator and excluded it. The operating system
releases the lock when the process ends, however it ends.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import BinaryIO

LOCK_NAME = "node.lock"
_LOCKED_BYTE = 1 << 20  # Windows locks bytes: one past the pid, which stays readable


class FolderInUse(Exception):
    """Another process holds the folder's lock; the message says which and what to do."""


class FolderLock:
    def __init__(self, root: Path) -> None:
        self.path = Path(root) / LOCK_NAME
        self._file: BinaryIO | None = None

    def acquire(self) -> None:
        """Hold the lock, or raise FolderInUse naming the process that holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file = open(self.path, "a+b")  # noqa: SIM115 (held until release)
        try:
            _lock(file)
        except OSError:
            file.seek(0)
            holder = file.read(32).decode("ascii", errors="replace").strip()
            file.close()
            by = f"process {holder}" if holder.isdigit() else "another process"
            raise FolderInUse(
                f"another peerfarm node ({by}) is running with the data folder "
                f"{self.path.parent}; stop it, or give this one a folder of its own "
                "with --data-dir"
            ) from None
        file.seek(0)
        file.truncate()
        file.write(f"{os.getpid()}\n".encode("ascii"))
        file.flush()
        self._file = file

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # (closing drops the lock)
            self._file = None


def _lock(file: BinaryIO) -> None:
    if sys.platform == "win32":
        import msvcrt

        file.seek(_LOCKED_BYTE)
        msvcrt.locking(file.fileno(), msvcrt.LK_NBLCK, 1)
    else:
        import fcntl

        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
