"""A renderer that does no work, for `peerfarm bench dispatch` only.

It measures the farm itself (claims, DONEs, the log, the mesh, collection) with
the renderer's cost taken out: each frame is a tiny fixed PNG written in the
node's own process. A node has it only when started with
PEERFARM_NULL_RENDERER=1 (renderers/registry.py), so no real farm ever sees it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peerfarm import __version__
from peerfarm.renderers.base import Renderer, RendererError

if TYPE_CHECKING:
    from peerfarm.job_request import JobRequest

ENV_VAR = "PEERFARM_NULL_RENDERER"

# A valid 1x1 grey PNG: what the collector fetches and the GIF step can read.
FRAME = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010800000000"
    "3a7e9b550000000a49444154789c6368000000820081dd436af40000000049454e44ae426082"
)


class NullRenderer(Renderer):
    name = "null"
    in_process = True  # renders in the node's process: see render_in_process

    def probe(self) -> str | None:
        return __version__

    def check_job(self, request: JobRequest) -> tuple[int, int]:
        if request.frames is None:
            raise RendererError("the null renderer needs --frames FIRST-LAST")
        first, last = request.frames
        return first, last

    def prepare(self, job: Any, work_dir: Path) -> None:
        pass

    def chunk_command(
        self, job: Any, frames: range, work_dir: Path, output_pattern: str
    ) -> list[str]:
        raise RendererError("the null renderer runs in the node's process")

    def render_in_process(
        self, frames: range, output_pattern: str, written: Callable[[int], None] | None = None
    ) -> None:
        """Write each frame (no fsync: nothing here is worth keeping), and tell
        ``written`` of each."""
        for frame in frames:
            with open(output_pattern.format(frame=frame), "wb") as f:
                f.write(FRAME)
            if written is not None:
                written(frame)
