"""The renderer plugin interface.

A renderer plugin tells the farm whether its program is installed here (and
which version), turns a job's scene into files a renderer process can read,
builds the command that renders one chunk (all its frames in one process, so
start-up is paid once per chunk), and reads progress from that process's
output. The built-in ray tracer is a plugin like any other; third parties add
theirs through the ``peerfarm.renderers`` entry-point group.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any


class RendererError(ValueError):
    """A job's scene cannot be rendered by this renderer; the message says why."""


class Renderer(ABC):
    #: The name jobs use (`--renderer NAME`) and nodes advertise.
    name: str = ""

    @abstractmethod
    def probe(self) -> str | None:
        """The installed version, or None when this renderer cannot run here.

        May block (it can run the program): the node calls it from a thread.
        """

    @abstractmethod
    def check_job(self, spec: dict[str, Any]) -> tuple[int, int]:
        """Validate a submitted scene; return the scene's own frame range.

        ``spec["files"]`` maps package paths to contents: bytes, or (for files a
        client uploaded as blobs) the path of a file holding them, which may be
        big: read what you need of it. Runs in a thread; may block. Raises
        RendererError with a message the user can act on.
        """

    @abstractmethod
    def prepare(self, job: Any, work_dir: Path) -> None:
        """Write what the renderer process needs into ``work_dir`` (blocking)."""

    @abstractmethod
    def chunk_command(
        self, job: Any, frames: range, work_dir: Path, output_pattern: str
    ) -> list[str]:
        """The command that renders ``frames`` into files named by ``output_pattern``
        (a Python format string with a ``frame`` field)."""

    def frame_finished(self, line: str) -> bool:
        """True when a line of the renderer's standard output reports a finished frame."""
        return False


# What a renderer process inherits from the node's environment: what programs need
# to start and find their libraries, nothing else (no tokens, no PEERFARM_* settings).
_INHERITED = (
    "PATH",
    "LD_LIBRARY_PATH",
    "SYSTEMROOT",  # Windows: needed by Python and most programs
    "WINDIR",
    "COMSPEC",
    "PATHEXT",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
)


def renderer_environment(temp_dir: Path) -> dict[str, str]:
    """The cleaned environment a renderer process runs with: home and temp folders
    inside the job's own folder (``temp_dir``), so nothing it writes lands elsewhere."""
    env = {name: os.environ[name] for name in _INHERITED if os.environ.get(name)}
    env.setdefault("PATH", os.defpath)
    for name in ("HOME", "USERPROFILE", "TMPDIR", "TMP", "TEMP"):
        env[name] = str(temp_dir)
    return env


def frame_range_arg(text: str) -> tuple[int, int]:
    """argparse type for a renderer process's ``--frames A-B`` (or ``N``; negative
    frames allowed, as jobs may have them): the farm's own parsing rule."""
    import argparse

    from peerfarm.jobspec import SubmitError, parse_frames

    try:
        return parse_frames(text)
    except SubmitError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def escape_braces(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def output_pattern(out_dir: Path, stem: str, padding: int = 4, ext: str = "png") -> str:
    """``out_dir/stem_{frame:04d}.ext`` as a format string (braces in the path escaped)."""
    return escape_braces(str(out_dir)) + os.sep + f"{stem}_{{frame:0{padding}d}}.{ext}"
