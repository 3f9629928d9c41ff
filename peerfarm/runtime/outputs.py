"""A job's outputs on a real disk: what the node machine's collector asks for.

The machine decides which frame to fetch from whom and when a frame is lost;
this module does the I/O and reports back: reading which frames an output
folder already holds (ScanOutputs), pulling a frame or tile from its holder and
writing it atomically with a thumbnail beside it (FetchFrame), stitching a
tiled frame (Stitch, runtime/stitch.py), and writing the animated GIF and the
MP4 once every frame is in (FinishOutputs, runtime/video.py). Disk work runs
in threads, never on the event loop.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import re
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

from peerfarm.core.names import safe_name
from peerfarm.core.state import Job
from peerfarm.disk import write_atomically
from peerfarm.formats import pillow_reads
from peerfarm.machine import effects as fx
from peerfarm.machine import events as ev
from peerfarm.renderers.base import Renderer
from peerfarm.runtime.data_dir import DataDir
from peerfarm.runtime.stitch import StitchError, stitch_tiles
from peerfarm.runtime.video import VideoError, encode_video

log = logging.getLogger(__name__)

THUMBNAIL_SIZE = (160, 120)

Report = Callable[[object], None]
# holder, job id, frame, tile -> bytes; None: no answer; b"": the holder lacks it
FetchFromPeer = Callable[[str, str, int, "int | None"], Awaitable["bytes | None"]]


def output_frame_path(job: Job, frame: int) -> Path:
    return Path(job.output) / job.frame_file_name(frame)


def output_gif_path(job: Job) -> Path:
    return Path(job.output) / f"{safe_name(job.name)}.gif"


def output_video_path(job: Job) -> Path:
    return Path(job.output) / f"{safe_name(job.name)}.mp4"


def thumbnail_path(job: Job, frame: int) -> Path:
    """A small PNG copy of each frame, for the desktop app's frame grid."""
    return (Path(job.output) / ".thumbs" / job.frame_file_name(frame)).with_suffix(".png")


def previews_note(job: Job) -> str:
    """What the collector skips for this job's format, and why ("" when nothing)."""
    if pillow_reads(job.format):
        return ""
    return f"no thumbnails and no GIF: Pillow cannot read {job.format} frames"


class Outputs:
    def __init__(
        self,
        node_id: str,
        data_dir: DataDir,
        plugins: dict[str, Renderer],
        fetch_from_peer: FetchFromPeer,
        report: Report,
        wanted: Callable[[str], bool] = lambda job_id: True,
    ) -> None:
        self.node_id = node_id
        self.data_dir = data_dir
        self.plugins = plugins
        self.fetch_from_peer = fetch_from_peer
        self.report = report
        self.wanted = wanted  # job id -> whether its frames may still be written
        self._nursery: trio.Nursery | None = None

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await trio.sleep_forever()

    def carry_out(
        self, effect: fx.ScanOutputs | fx.FetchFrame | fx.Stitch | fx.FinishOutputs
    ) -> None:
        assert self._nursery is not None
        if isinstance(effect, fx.ScanOutputs):
            self._nursery.start_soon(self._scan, effect.job)
        elif isinstance(effect, fx.FetchFrame):
            self._nursery.start_soon(self._fetch, effect)
        elif isinstance(effect, fx.Stitch):
            self._nursery.start_soon(self._stitch, effect.job, effect.frame)
        else:
            self._nursery.start_soon(self._finish, effect.job)

    def progress(self, job: Job, collected: dict) -> dict:
        """The output paths of a job's collection progress (``collected``: the machine's)."""
        return {
            **collected,
            "gif": str(output_gif_path(job)) if collected.get("gif") else None,
            "video_path": str(output_video_path(job))
            if job.video and collected.get("complete")
            else None,
            "output_note": previews_note(job),
        }

    async def _scan(self, job: Job) -> None:
        try:
            frames, tiles = await trio.to_thread.run_sync(self._on_disk, job)
        except OSError as exc:
            error = f"cannot use the output folder {job.output}: {exc}"
            self.report(ev.OutputsScanned(job.id, frozenset(), {}, error))
            return
        except UnicodeError:  # a POSIX node in a locale that is not UTF-8 (PYTHONUTF8=0)
            error = (
                f"cannot use the output folder {job.output}: this node's file names are "
                f"{sys.getfilesystemencoding()}, which cannot hold its name; run the node in "
                "a UTF-8 locale (e.g. LANG=C.UTF-8) or choose another output folder"
            )
            self.report(ev.OutputsScanned(job.id, frozenset(), {}, error))
            return
        self.report(ev.OutputsScanned(job.id, frames, tiles))

    def _on_disk(self, job: Job) -> tuple[frozenset[int], dict[int, frozenset[int]]]:
        """Frames in the output folder; for a tiled job also the tiles of frames not
        stitched yet that are in this node's frames folder (blocking).

        One listing of each folder, not a look per frame: a job of a million frames
        resumes in a moment."""
        Path(job.output).mkdir(parents=True, exist_ok=True)
        if job.supersedes:
            # A new revision: the frames there are the old revision's; they stay until
            # this job's replace them. (After a restart, this job's own are fetched again.)
            frames: frozenset[int] = frozenset()
        else:
            frames = frozenset(_numbered(Path(job.output), job, rf"\.{re.escape(job.format)}"))
        tiles: dict[int, frozenset[int]] = {}
        if job.tiles > 1:
            found: dict[int, set[int]] = {}
            folder = self.data_dir.frames_dir(job.id)
            pattern = rf"\.tile(\d+)\.{re.escape(job.format)}"
            for frame, tile in _numbered(folder, job, pattern, with_group=True):
                if frame not in frames and tile < job.tiles:
                    found.setdefault(frame, set()).add(tile)
            tiles = {f: frozenset(t) for f, t in found.items()}
        return frames, tiles

    async def _fetch(self, effect: fx.FetchFrame) -> None:
        job, frame, tile, holder = effect.job, effect.frame, effect.tile, effect.holder

        def fetched(outcome: str, error: str = "") -> None:
            self.report(ev.FrameFetched(job.id, frame, tile, holder, outcome, error))

        path = self.data_dir.frame_path(job, frame, tile)
        try:
            if holder == self.node_id:
                if tile is not None:  # rendered here: it is in our frames folder already
                    here = await trio.to_thread.run_sync(path.exists)
                    fetched(ev.STORED if here else ev.MISSING)
                    return
                try:
                    data = await trio.to_thread.run_sync(path.read_bytes)
                except FileNotFoundError:
                    data = b""
            else:
                data = await self.fetch_from_peer(holder, job.id, frame, tile)
                if data is None:
                    fetched(ev.UNREACHABLE)
                    return
            if not data:
                fetched(ev.MISSING)
                return
            if not self.wanted(job.id):  # cancelled (or replaced) while it was fetched
                fetched(ev.UNREACHABLE)
                return
            if tile is None:
                await trio.to_thread.run_sync(_store_frame, job, frame, data)
            else:
                await trio.to_thread.run_sync(_store_tile, path, data)
        except OSError as exc:
            where = f"the output folder {job.output}" if tile is None else str(self.data_dir.root)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # room may come back: try again
                fetched(
                    ev.NO_SPACE,
                    f"cannot write to {where}: {exc}; free some space there: "
                    "the frames wait on the nodes that rendered them and come in by themselves",
                )
            else:
                fetched(ev.WRITE_FAILED, f"cannot write to {where}: {exc}")
            return
        fetched(ev.STORED)

    async def _stitch(self, job: Job, frame: int) -> None:
        plugin = self.plugins.get(job.renderer)
        try:
            if plugin is None:
                raise StitchError(f"the {job.renderer} renderer plugin is not installed here")
            files = [self.data_dir.frame_path(job, frame, tile) for tile in range(job.tiles)]
            data = await trio.to_thread.run_sync(stitch_tiles, files, plugin.tile_align, job.format)
            await trio.to_thread.run_sync(_store_frame, job, frame, data)
        except StitchError as exc:
            self.report(ev.Stitched(job.id, frame, f"cannot stitch frame {frame}: {exc}"))
            return
        except OSError as exc:
            error = f"cannot write to the output folder {job.output}: {exc}"
            self.report(ev.Stitched(job.id, frame, error))
            return
        log.info("job %s: frame %d stitched from %d tiles", job.id, frame, job.tiles)
        self.report(ev.Stitched(job.id, frame))

    async def _finish(self, job: Job) -> None:
        gif = pillow_reads(job.format)
        if gif:
            try:
                await trio.to_thread.run_sync(_write_gif, job)
            except OSError as exc:
                error = f"cannot write the GIF in {job.output}: {exc}"
                self.report(ev.OutputsFinished(job.id, False, error))
                return
        else:
            log.info("job %s: %s", job.id, previews_note(job))
        if job.video:
            frames = [output_frame_path(job, f) for f in range(job.frame_start, job.frame_end + 1)]
            try:
                await encode_video(frames, job.format, job.fps, output_video_path(job))
            except (VideoError, OSError) as exc:
                error = f"the frames are in {job.output}, but the video could not be made: {exc}"
                self.report(ev.OutputsFinished(job.id, gif, error))
                return
            log.info("job %s: video %s", job.id, output_video_path(job))
        log.info(
            "job %s (%s): all %d frames are in %s", job.id, job.name, job.frames_total, job.output
        )
        self.report(ev.OutputsFinished(job.id, gif))


def _numbered(folder: Path, job: Job, suffix: str, with_group: bool = False) -> list:
    """Frame numbers (and a number from ``suffix``) of the job's files in a folder."""
    name = re.compile(rf"{re.escape(job.name)}_(-?\d{{{job.padding},}}){suffix}")
    out = []
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return []
    for entry in entries:
        m = name.fullmatch(entry.name)
        if m is None:
            continue
        frame = int(m[1])
        # Exactly the name the job gives that frame (not e.g. an extra leading zero).
        if job.frame_start <= frame <= job.frame_end and f"{frame:0{job.padding}d}" == m[1]:
            out.append((frame, int(m[2])) if with_group else frame)
    return out


def _store_tile(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, data)


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


# The GIF is a preview of the animation: at most this many frames (evenly spread over
# a longer job, each shown longer), each fitted into this box. The frames and the MP4
# are the full output; the GIF must stay cheap for a job of 100,000 frames too.
GIF_MAX_FRAMES = 300
GIF_BOX = (320, 320)
# A GIF frame shows for at most 655.35 s (16 bits of centiseconds), and Pillow merges
# identical frames into one, adding up their times: the whole GIF stays under that, or
# a long job of still frames (a static scene, the null renderer's) could not be written.
GIF_MAX_TOTAL_MS = 655_000


def gif_frames(job: Job) -> list[int]:
    """The frames the job's GIF shows."""
    total = job.frames_total
    count = min(total, GIF_MAX_FRAMES)
    return [job.frame_start + (i * total) // count for i in range(count)]


def _write_gif(job: Job) -> None:
    """Write the GIF one frame at a time: one frame file open at once, whatever the job's
    length (1,100 frames used to mean 1,100 open files, and no GIF past the limit)."""
    from PIL import Image

    shown = gif_frames(job)

    def preview(frame: int) -> Image.Image:
        with Image.open(output_frame_path(job, frame)) as im:
            im.thumbnail(GIF_BOX)
            # A GIF has 256 colours a frame. Fast octree picks them 8x faster than the
            # median cut Pillow's GIF writer uses for RGB (0.09 s against 0.73 s of CPU
            # for 24 frames at 320x240), for about one level more error per channel:
            # it is a preview, written after the last frame before `submit --wait` ends.
            # (Loaded: the file is closed when this returns.)
            return im.convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE)

    step = job.frames_total / len(shown)
    gif = io.BytesIO()  # (a preview: at most GIF_MAX_FRAMES thumbnails)
    preview(shown[0]).save(
        gif,
        format="GIF",
        save_all=True,
        append_images=(preview(frame) for frame in shown[1:]),
        duration=min(round(1000 * step / job.fps), GIF_MAX_TOTAL_MS // len(shown)),
        loop=0,
    )
    # Written whole or not at all: on a full disk a GIF written in place failed part way
    # and demo.gif.tmp (556 KiB) stayed in the output folder beside the frames.
    write_atomically(output_gif_path(job), gif.getvalue())
