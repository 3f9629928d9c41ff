"""Where the app finds a finished frame's image: the output folder, this node's own
renders, or the node that rendered it (fetched over the mesh, as the collector does)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import trio

from peerfarm.core.state import CHUNK_DONE, Job
from peerfarm.runtime.outputs import output_frame_path, thumbnail_path

if TYPE_CHECKING:
    from peerfarm.runtime.node import Node


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


async def frame_bytes(node: Node, job: Job, frame: int) -> tuple[bytes | None, str]:
    """(PNG bytes, where they came from), or (None, why not) for a frame not available now."""
    chunk = job.chunk(job.chunk_of_frame(frame))
    if job.submitter == node.node_id:
        data = await trio.to_thread.run_sync(_read, output_frame_path(job, frame))
        if data:
            return data, str(output_frame_path(job, frame))
    if chunk.state != CHUNK_DONE:
        return None, f"frame {frame} is not rendered yet"
    if chunk.done_by == node.node_id:
        data = await trio.to_thread.run_sync(_read, node.frame_path(job, frame))
        if data:
            return data, "rendered on this computer"
    holder = node.state.peers.get(chunk.done_by)
    name = holder.name if holder else chunk.done_by[:8]
    data = await node.fetch_frame(chunk.done_by, job.id, frame)
    if data:
        return data, f"fetched from {name}, which rendered it"
    return None, f"frame {frame} is on {name}, which cannot be reached now"


def read_thumbnails(job: Job, frames: list[int]) -> dict[int, bytes]:
    """Thumbnails the collector wrote beside the frames of one of our jobs (blocking)."""
    out = {}
    for frame in frames:
        data = _read(thumbnail_path(job, frame))
        if data:
            out[frame] = data
    return out
