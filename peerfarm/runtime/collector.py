"""The output collector: brings the frames of the jobs this node submitted home.

Frames stay on the node that rendered them until the submitter pulls them
(GET_FRAME over the mesh; no shared drive). Pulling rather than pushing means
a submitter that was away simply collects when it comes back. Each frame is
written atomically (temp file + rename, fsync) to the job's output folder;
when the last one is in, an animated GIF of the job is written beside them.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from peerfarm.core import actions as act
from peerfarm.core.state import CANCELLED, CHUNK_DONE, DOWN, LEFT, Job
from peerfarm.jobspec import safe_name
from peerfarm.runtime.store import write_atomically

if TYPE_CHECKING:
    from peerfarm.runtime.node import Node

log = logging.getLogger(__name__)

MAX_FETCHES = 8
RETRY_INTERVAL = 1.0
GIF_FRAME_MS = 1000 // 24
THUMBNAIL_SIZE = (160, 120)


def output_frame_path(job: Job, frame: int) -> Path:
    return Path(job.output) / job.frame_file_name(frame)


def output_gif_path(job: Job) -> Path:
    return Path(job.output) / f"{safe_name(job.name)}.gif"


class Collector:
    def __init__(self, node: Node) -> None:
        self.node = node
        self._collected: dict[str, set[int]] = {}  # job id -> frames in the output folder
        self._fetching: set[tuple[str, int]] = set()
        self._complete: set[str] = set()  # jobs whose GIF is written
        self._writing_gif: set[str] = set()
        self._errors: dict[str, str] = {}
        self._reported_lost: set[tuple[str, int, int, str]] = set()

    def progress(self, job: Job) -> dict[str, Any]:
        return {
            "frames_collected": len(self._collected.get(job.id, ())),
            "complete": job.id in self._complete,
            "gif": str(output_gif_path(job)) if job.id in self._complete else None,
            "output_error": self._errors.get(job.id, ""),
        }

    def frames_collected(self, job_id: str) -> frozenset[int]:
        """Frames of one of our jobs that are in its output folder (with a thumbnail
        beside them, if Pillow could read them)."""
        return frozenset(self._collected.get(job_id, ()))

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                for job in list(self.node.state.jobs.values()):
                    if job.submitter == self.node.node_id and job.state != CANCELLED:
                        await self._collect(job, nursery)
                await self.node.wait_for_change(RETRY_INTERVAL)

    async def _collect(self, job: Job, nursery: trio.Nursery) -> None:
        if job.id in self._complete or job.id in self._errors:
            return
        collected = self._collected.get(job.id)
        if collected is None:
            collected = await trio.to_thread.run_sync(_frames_on_disk, job)
            self._collected[job.id] = collected
        for index, chunk in job.chunks.items():
            if chunk.state != CHUNK_DONE:
                continue
            missing = [f for f in job.frames_of(index) if f not in collected]
            holder = self.node.state.peers.get(chunk.done_by)
            # Gone by the farm's account, and we cannot hear it either (after a
            # partition the state may call it down before its rejoin arrives).
            if (
                missing
                and chunk.done_by != self.node.node_id
                and (holder is None or holder.state in (DOWN, LEFT))
                and self.node.link_to(chunk.done_by) is None
            ):
                self._lost(job, index, chunk.done_by, "its holder is gone")
                continue
            for frame in missing:
                key = (job.id, frame)
                if frame in collected or key in self._fetching:
                    continue
                if len(self._fetching) >= MAX_FETCHES:
                    return
                self._fetching.add(key)
                nursery.start_soon(self._fetch, job, frame, chunk.done_by)
        if len(collected) == job.frames_total and job.id not in self._writing_gif:
            self._writing_gif.add(job.id)
            nursery.start_soon(self._finish, job)

    async def _fetch(self, job: Job, frame: int, holder: str) -> None:
        node = self.node
        try:
            if holder == node.node_id:
                try:
                    data = await trio.to_thread.run_sync(node.frame_path(job, frame).read_bytes)
                except FileNotFoundError:
                    data = b""
            else:
                data = await node.fetch_frame(holder, job.id, frame)
                if data is None:
                    return  # holder unreachable now; the next pass tries again
            if not data:
                self._lost(job, job.chunk_of_frame(frame), holder, f"frame {frame} is missing")
                return
            await trio.to_thread.run_sync(_store_frame, job, frame, data)
            self._collected[job.id].add(frame)
            node._notify_change()
        except OSError as exc:
            self._errors[job.id] = f"cannot write to the output folder {job.output}: {exc}"
            log.error("job %s: %s", job.id, self._errors[job.id])
        finally:
            self._fetching.discard((job.id, frame))

    def _lost(self, job: Job, index: int, holder: str, why: str) -> None:
        """The only copy of a chunk's frames is gone before we collected them: render again."""
        # Per holder too: after a re-fold another node can hold the same epoch's frames.
        key = (job.id, index, job.chunk(index).epoch, holder)
        if key in self._reported_lost:
            return
        self._reported_lost.add(key)
        log.warning(
            "job %s: frames of chunk %d are lost (%s); rendering them again", job.id, index, why
        )
        self.node.emit(act.CHUNK_LOST, {"job_id": job.id, "chunk": index, "holder": holder})

    async def _finish(self, job: Job) -> None:
        try:
            await trio.to_thread.run_sync(_write_gif, job)
        except OSError as exc:
            self._errors[job.id] = f"cannot write the GIF in {job.output}: {exc}"
            log.error("job %s: %s", job.id, self._errors[job.id])
            return
        self._complete.add(job.id)
        log.info(
            "job %s (%s): all %d frames are in %s", job.id, job.name, job.frames_total, job.output
        )
        self.node._notify_change()


def _frames_on_disk(job: Job) -> set[int]:
    Path(job.output).mkdir(parents=True, exist_ok=True)
    return {
        f for f in range(job.frame_start, job.frame_end + 1) if output_frame_path(job, f).exists()
    }


def thumbnail_path(job: Job, frame: int) -> Path:
    """A small copy of each frame, for the desktop app's frame grid."""
    return Path(job.output) / ".thumbs" / job.frame_file_name(frame)


def _store_frame(job: Job, frame: int, data: bytes) -> None:
    write_atomically(output_frame_path(job, frame), data)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.thumbnail(THUMBNAIL_SIZE)
            out = io.BytesIO()
            image.save(out, format="PNG")
    except (UnidentifiedImageError, OSError):
        return  # not an image Pillow reads: the frame is kept, without a thumbnail
    path = thumbnail_path(job, frame)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, out.getvalue())


def _write_gif(job: Job) -> None:
    from PIL import Image

    frames = [
        Image.open(output_frame_path(job, f)) for f in range(job.frame_start, job.frame_end + 1)
    ]
    try:
        first, rest = frames[0], frames[1:]
        tmp = output_gif_path(job).with_suffix(".gif.tmp")
        first.save(
            tmp, format="GIF", save_all=True, append_images=rest, duration=GIF_FRAME_MS, loop=0
        )
        tmp.replace(output_gif_path(job))
    finally:
        for im in frames:
            im.close()
