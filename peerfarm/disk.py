"""Writing files so that a reader (or a crash) sees the old content or the new, never
half; renaming over a file Windows holds open; paths past Windows' 260 characters."""

from __future__ import annotations

import ntpath
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

# Seconds to wait between tries of a rename Windows refuses because another program (an
# image viewer showing the frame, an antivirus or search indexer reading it) holds the
# target open: about 2 s in all, then the error stands.
REPLACE_WAITS = (0.05, 0.1, 0.2, 0.5, 1.0)


def replace_file(
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    platform: str = sys.platform,
    rename: Callable[[str | os.PathLike[str], str | os.PathLike[str]], None] = os.replace,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """`os.replace(source, target)`; on Windows tried again a few times while it fails with
    PermissionError (the target is open in another program without delete sharing). POSIX
    renames over open files, so a PermissionError there is real and raised at once."""
    waits = REPLACE_WAITS if platform == "win32" else ()
    for wait in waits:
        try:
            rename(source, target)
            return
        except PermissionError:
            sleep(wait)
    rename(source, target)


def long_path(path: str | os.PathLike[str], platform: str = sys.platform) -> str:
    """`path` in a form Windows opens past 260 characters (MAX_PATH): absolute, with the
    \\\\?\\ prefix (\\\\?\\UNC\\ for a network share). Unchanged elsewhere, and when it has
    the prefix already. A scene's own paths are up to 200 characters, and the data folder
    they are unpacked in adds its own: together they easily pass 260."""
    text = os.fspath(path)
    if platform != "win32" or text.startswith("\\\\?\\"):
        return text
    text = ntpath.normpath(ntpath.join(os.getcwd(), text) if platform == sys.platform else text)
    if text.startswith("\\\\"):  # \\server\share\... -> \\?\UNC\server\share\...
        return "\\\\?\\UNC\\" + text[2:]
    return "\\\\?\\" + text


def write_atomically(path: Path, data: bytes) -> None:
    """Write a file so a reader (or a crash) sees the old or the new content, never half."""
    # A name of its own per writer thread, so two writers never share a temp file.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        replace_file(tmp, path)
    except BaseException:
        # A full disk: the half-written temp file would hold on to the space it took, and
        # every retry of the write left one more (a 3 MB output folder held 240 of them).
        tmp.unlink(missing_ok=True)
        raise
