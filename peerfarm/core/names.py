"""Job names as they appear in file names, on every node and every platform.

A job's name becomes the stem of its frames' file names (``NAME_0001.png``) on every
node that renders or collects them, so a name that arrives from a peer must already
be safe there: ASCII letters, digits, ``.``, ``_`` and ``-``; no leading or trailing
dot (``..``, hidden files, Windows' trailing-dot trap); not a Windows device name
(``con``, ``nul``, ``com1``...), which no Windows folder can hold.
"""

from __future__ import annotations

import re

MAX_NAME = 64
_NAME = re.compile(r"[A-Za-z0-9_-](?:[A-Za-z0-9._-]{0,62}[A-Za-z0-9_-])?")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
# Windows refuses these as file names, with any extension (con.png, aux_0001.png is fine).
_DEVICES = {"con", "prn", "aux", "nul"} | {f"{d}{n}" for d in ("com", "lpt") for n in range(10)}


def is_safe_name(name: object) -> bool:
    return (
        type(name) is str
        and _NAME.fullmatch(name) is not None
        and name.split(".")[0].lower() not in _DEVICES
    )


def safe_name(name: str) -> str:
    """A job name made safe as a file name stem on every platform (see is_safe_name)."""
    cleaned = _UNSAFE.sub("_", name)[:MAX_NAME].strip("._")
    stem, dot, rest = cleaned.partition(".")
    if stem.lower() in _DEVICES:
        # con -> con_, nul.final -> nul_.final: Windows refuses a device name before any dot
        cleaned = f"{stem}_{dot}{rest}"
    return cleaned[:MAX_NAME] or "job"
