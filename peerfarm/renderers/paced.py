"""A renderer that takes a set time per frame, for `peerfarm bench mixed` and its test.

A real renderer process (this module run with ``python -m``) that sleeps a start-up,
then sleeps each frame's time and writes a tiny PNG, printing a line per frame as
real renderers do. Sleeping, not computing, so a node can be made slow on purpose and
the farm's schedule is measured the same on a busy shared machine. A node has it
only when started with PEERFARM_PACED_RENDERER="SECONDS_PER_FRAME[,START_UP_SECONDS]"
(renderers/registry.py), so no real farm ever sees it.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peerfarm import __version__
from peerfarm.renderers.base import Renderer, RendererError
from peerfarm.renderers.null import FRAME

if TYPE_CHECKING:
    from peerfarm.job_request import JobRequest

ENV_VAR = "PEERFARM_PACED_RENDERER"
LINE = "peerfarm-paced frame"


def pace_from_env() -> tuple[float, float] | None:
    """(seconds per frame, start-up seconds) from PEERFARM_PACED_RENDERER, or None."""
    text = os.environ.get(ENV_VAR, "")
    if not text:
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not 1 <= len(values) <= 2 or any(not 0 <= v <= 3600 for v in values):
        raise RendererError(
            f"{ENV_VAR}={text!r}: give SECONDS_PER_FRAME or SECONDS_PER_FRAME,START_UP_SECONDS"
        )
    return values[0], values[1] if len(values) == 2 else 0.0


class PacedRenderer(Renderer):
    name = "paced"

    def __init__(self, frame_seconds: float, startup_seconds: float = 0.0) -> None:
        self.frame_seconds = frame_seconds
        self.startup_seconds = startup_seconds

    def probe(self) -> str | None:
        return __version__

    def check_job(self, request: JobRequest) -> tuple[int, int]:
        if request.frames is None:
            raise RendererError("the paced renderer needs --frames FIRST-LAST")
        return request.frames

    def prepare(self, job: Any, work_dir: Path) -> None:
        pass

    def chunk_command(
        self, job: Any, frames: range, work_dir: Path, output_pattern: str
    ) -> list[str]:
        return [
            sys.executable,
            "-m",
            "peerfarm.renderers.paced",
            output_pattern,
            str(frames.start),
            str(frames.stop - 1),
            repr(self.frame_seconds),
            repr(self.startup_seconds),
        ]

    def frame_finished(self, line: str) -> bool:
        return line.startswith(LINE)


def render(pattern: str, first: int, last: int, frame_seconds: float, startup: float) -> None:
    time.sleep(startup)
    for frame in range(first, last + 1):
        time.sleep(frame_seconds)
        Path(pattern.format(frame=frame)).write_bytes(FRAME)
        print(f"{LINE} {frame}", flush=True)


if __name__ == "__main__":
    pattern_, first_, last_, seconds_, startup_ = sys.argv[1:6]
    render(pattern_, int(first_), int(last_), float(seconds_), float(startup_))
