"""The output collector: brings the frames of the jobs this node submitted home.

Frames stay on the node that rendered them until the submitter pulls them
(GET_FRAME over the mesh; no shared drive). Pulling rather than pushing means
a submitter that was away simply collects when it comes back. Each frame is
written atomically (temp file + rename, fsync) to the job's output folder;
when the last one is in, an animated GIF of the job is written beside them.
Thumbnails and the GIF need frames Pillow can read: for other formats (exr,
hdr) they are skipped, and the job's progress says so. A job submitted with
--video then gets an MP4 of its frames (runtime/video.py, ffmpeg in a process
of its own); the job is complete once it is written.

A tiled job's tiles are pulled into this node's own frames folder (where the
tiles it rendered itself already are); once every tile of a frame is there,
the frame is stitched (runtime/stitch.py) and written to the output folder
like any other frame.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from peerfarm.core import actions as act
from peerfarm.core.state import CANCELLED, CHUNK_DONE, DOWN, LEFT, Job
from peerfarm.formats import pillow_reads
from peerfarm.jobspec import safe_name
from peerfarm.runtime.stitch import StitchError, stitch_tiles
from peerfarm.runtime.store import write_atomically
from peerfarm.runtime.video import VideoError, encode_video

if TYPE_CHECKING:
    from peerfarm.runtime.node import Node

log = logging.getLogger(__name__)

MAX_FETCHES = 8
RETRY_INTERVAL = 1.0
THUMBNAIL_SIZE = (160, 120)


def output_frame_path(job: Job, frame: int) -> Path:
    return Path(job.output) / job.frame_file_name(frame)


def output_gif_path(job: Job) -> Path:
    return Path(job.output) / f"{safe_name(job.name)}.gif"


def output_video_path(job: Job) -> Path:
    return Path(job.output) / f"{safe_name(job.name)}.mp4"


class Collector:
    def __init__(self, node: Node) -> None:
        self.node = node
        self._collected: dict[str, set[int]] = {}  # job id -> frames in the output folder
        # Tiled jobs: job id -> frame -> tiles in our frames folder, for frames not stitched yet.
        self._tiles: dict[str, dict[int, set[int]]] = {}
        self._stitching: set[tuple[str, int]] = set()
        self._fetching: set[tuple[str, int] | tuple[str, int, int]] = set()
        self._complete: set[str] = set()  # jobs whose outputs are all written
        self._gif: set[str] = set()  # jobs whose GIF is written
        self._writing_gif: set[str] = set()
        self._errors: dict[str, str] = {}
        self._reported_lost: set[tuple[str, int, int, str]] = set()

    def progress(self, job: Job) -> dict[str, Any]:
        collected = self._collected.get(job.id, ())
        waiting = self._tiles.get(job.id, {})
        return {
            "frames_collected": len(collected),
            # tiles of stitched frames count as collected
            "tiles_collected": len(collected) * job.tiles
            + sum(len(tiles) for frame, tiles in waiting.items() if frame not in collected),
            "complete": job.id in self._complete,
            "gif": str(output_gif_path(job)) if job.id in self._gif else None,
            "video_path": str(output_video_path(job))
            if job.video and job.id in self._complete
            else None,
            "output_error": self._errors.get(job.id, ""),
            "output_note": _previews_note(job),
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
        if job.tiles > 1:
            await self._collect_tiles(job, collected, nursery)
            return
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

    async def _collect_tiles(self, job: Job, collected: set[int], nursery: trio.Nursery) -> None:
        node = self.node
        here = self._tiles.get(job.id)
        if here is None:
            here = await trio.to_thread.run_sync(_tiles_on_disk, node, job, collected)
            self._tiles[job.id] = here
        for index, chunk in job.chunks.items():
            if chunk.state != CHUNK_DONE:
                continue
            frame = job.frames_of(index).start
            tile = job.tile_of(index)
            if frame in collected or tile in here.get(frame, ()):
                continue
            if chunk.done_by == node.node_id:  # rendered here: it is in our frames folder
                path = node.frame_path(job, frame, tile)
                if await trio.to_thread.run_sync(path.exists):
                    here.setdefault(frame, set()).add(tile)
                else:
                    self._lost(job, index, chunk.done_by, f"tile {tile} of frame {frame} is gone")
                continue
            holder = node.state.peers.get(chunk.done_by)
            if (holder is None or holder.state in (DOWN, LEFT)) and node.link_to(
                chunk.done_by
            ) is None:
                self._lost(job, index, chunk.done_by, "its holder is gone")
                continue
            key = (job.id, frame, tile)
            if key in self._fetching:
                continue
            if len(self._fetching) >= MAX_FETCHES:
                break
            self._fetching.add(key)
            nursery.start_soon(self._fetch_tile, job, frame, tile, chunk.done_by)
        for frame, tiles in list(here.items()):
            if len(tiles) == job.tiles and frame not in collected:
                if (job.id, frame) not in self._stitching:
                    self._stitching.add((job.id, frame))
                    nursery.start_soon(self._stitch, job, frame)
        if len(collected) == job.frames_total and job.id not in self._writing_gif:
            self._writing_gif.add(job.id)
            nursery.start_soon(self._finish, job)

    async def _fetch_tile(self, job: Job, frame: int, tile: int, holder: str) -> None:
        node = self.node
        try:
            data = await node.fetch_frame(holder, job.id, frame, tile)
            if data is None:
                return  # holder unreachable now; the next pass tries again
            if not data:
                index = job.chunks_of_frame(frame)[tile]
                self._lost(job, index, holder, f"tile {tile} of frame {frame} is missing")
                return
            path = node.frame_path(job, frame, tile)
            await trio.to_thread.run_sync(_store_tile, path, data)
            self._tiles[job.id].setdefault(frame, set()).add(tile)
            node._notify_change()
        except OSError as exc:
            self._errors[job.id] = f"cannot keep a tile in {node.data_dir}: {exc}"
            log.error("job %s: %s", job.id, self._errors[job.id])
        finally:
            self._fetching.discard((job.id, frame, tile))

    async def _stitch(self, job: Job, frame: int) -> None:
        node = self.node
        plugin = node.plugins.get(job.renderer)
        try:
            if plugin is None:
                raise StitchError(f"the {job.renderer} renderer plugin is not installed here")
            files = [node.frame_path(job, frame, tile) for tile in range(job.tiles)]
            data = await trio.to_thread.run_sync(stitch_tiles, files, plugin.tile_align, job.format)
            await trio.to_thread.run_sync(_store_frame, job, frame, data)
        except StitchError as exc:
            self._errors[job.id] = f"cannot stitch frame {frame}: {exc}"
            log.error("job %s: %s", job.id, self._errors[job.id])
            return
        except OSError as exc:
            self._errors[job.id] = f"cannot write to the output folder {job.output}: {exc}"
            log.error("job %s: %s", job.id, self._errors[job.id])
            return
        finally:
            self._stitching.discard((job.id, frame))
        self._collected[job.id].add(frame)
        self._tiles[job.id].pop(frame, None)
        log.info("job %s: frame %d stitched from %d tiles", job.id, frame, job.tiles)
        node._notify_change()

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
        if pillow_reads(job.format):
            try:
                await trio.to_thread.run_sync(_write_gif, job)
            except OSError as exc:
                self._errors[job.id] = f"cannot write the GIF in {job.output}: {exc}"
                log.error("job %s: %s", job.id, self._errors[job.id])
                return
            self._gif.add(job.id)
        else:
            log.info("job %s: %s", job.id, _previews_note(job))
        if job.video:
            frames = [output_frame_path(job, f) for f in range(job.frame_start, job.frame_end + 1)]
            try:
                await encode_video(frames, job.format, job.fps, output_video_path(job))
            except (VideoError, OSError) as exc:
                self._errors[job.id] = (
                    f"the frames are in {job.output}, but the video could not be made: {exc}"
                )
                log.error("job %s: %s", job.id, self._errors[job.id])
                return
            log.info("job %s: video %s", job.id, output_video_path(job))
        self._complete.add(job.id)
        log.info(
            "job %s (%s): all %d frames are in %s", job.id, job.name, job.frames_total, job.output
        )
        self.node._notify_change()


def _previews_note(job: Job) -> str:
    """What the collector skips for this job's format, and why ("" when nothing)."""
    if pillow_reads(job.format):
        return ""
    return f"no thumbnails and no GIF: Pillow cannot read {job.format} frames"


def _frames_on_disk(job: Job) -> set[int]:
    Path(job.output).mkdir(parents=True, exist_ok=True)
    return {
        f for f in range(job.frame_start, job.frame_end + 1) if output_frame_path(job, f).exists()
    }


def _tiles_on_disk(node: Node, job: Job, collected: set[int]) -> dict[int, set[int]]:
    """Tiles of frames not stitched yet that are in this node's frames folder."""
    here: dict[int, set[int]] = {}
    for frame in range(job.frame_start, job.frame_end + 1):
        if frame in collected:
            continue
        tiles = {t for t in range(job.tiles) if node.frame_path(job, frame, t).exists()}
        if tiles:
            here[frame] = tiles
    return here


def _store_tile(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, data)


def thumbnail_path(job: Job, frame: int) -> Path:
    """A small PNG copy of each frame, for the desktop app's frame grid."""
    return (Path(job.output) / ".thumbs" / job.frame_file_name(frame)).with_suffix(".png")


def _store_frame(job: Job, frame: int, data: bytes) -> None:
    write_atomically(output_frame_path(job, frame), data)
    if not pillow_reads(job.format):
        return  # the job's progress says why there are no thumbnails
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
            tmp,
            format="GIF",
            save_all=True,
            append_images=rest,
            duration=round(1000 / job.fps),
            loop=0,
        )
        tmp.replace(output_gif_path(job))
    finally:
        for im in frames:
            im.close()
