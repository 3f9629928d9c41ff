"""Where the app finds a finished frame's image: the output folder, this node's own
renders, or the node that rendered it (fetched over the mesh, as the collector does)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import trio

from peerfarm.core.state import CHUNK_DONE, Job
from peerfarm.preview import preview_output
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


# Earlier thumbnails are looked for once per job, for jobs up to this many frames.
EARLIER_FRAMES_LIMIT = 5000


def has_earlier_frames(job: Job) -> bool:
    """Whether pictures from before this job may stand in for its frames: it replaced
    an earlier revision, or it has a preview (one stat call)."""
    if job.frames_total > EARLIER_FRAMES_LIMIT:
        return False
    return bool(job.supersedes) or Path(preview_output(job.output)).is_dir()


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def read_earlier_thumbnails(job: Job, frames: list[int]) -> dict[int, bytes]:
    """Thumbnails of frames this job has not brought in yet, from before it: the
    revision it replaced (same output folder) or its preview (the preview folder), the
    newer of the two (blocking)."""
    out = {}
    for frame in frames:
        own = thumbnail_path(job, frame)
        preview = Path(preview_output(job.output)) / own.relative_to(job.output)
        found = [(t, p) for p in (own, preview) if (t := _mtime(p)) is not None]
        if found:
            data = _read(max(found)[1])
            if data:
                out[frame] = data
    return out
