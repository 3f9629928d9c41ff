"""The job's video: an H.264 MP4 of the collected frames, made with ffmpeg.

The submitter encodes it once every frame is in the output folder. ffmpeg runs
as its own process (trio.run_process), so the node's event loop never waits on
it. Frames are handed to ffmpeg as links (copies where links are impossible)
named 000000.EXT, 000001.EXT, ... in a hidden folder beside them: ffmpeg's
image-sequence reader needs numbers from 0 without gaps, and frame numbers may
be negative or padded differently. H.264 in yuv420p needs even sizes: an odd
width or height gets one black column or row (pad, never scaled).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

import trio

from peerfarm.child_processes import no_window_options
from peerfarm.disk import replace_file
from peerfarm.programs import find_program, where_from

FFMPEG_PACKAGE_HINT = (
    "install the ffmpeg package (Debian/Ubuntu: sudo apt-get install ffmpeg; Fedora: "
    "sudo dnf install ffmpeg; macOS: brew install ffmpeg; Windows: winget install ffmpeg)"
)
PROBE_TIMEOUT = 20.0
ERROR_TAIL_CHARS = 2000


@functools.lru_cache(maxsize=1)
def _encoders(ffmpeg: str) -> str:
    result = subprocess.run(
        [ffmpeg, "-hide_banner", "-encoders"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=PROBE_TIMEOUT,
        check=False,
        **no_window_options(),
    )
    return result.stdout


def ffmpeg_problem() -> str | None:
    """Why this machine cannot encode the video, or None when it can (blocking: it may
    run `ffmpeg -encoders` once)."""
    ffmpeg = find_program("ffmpeg")
    if ffmpeg is None:
        where = where_from("ffmpeg")
        return f"ffmpeg is not installed here (looked at: {where}): {FFMPEG_PACKAGE_HINT}"
    try:
        encoders = _encoders(ffmpeg)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"ffmpeg at {ffmpeg} does not run ({exc}): {FFMPEG_PACKAGE_HINT}"
    if " libx264 " not in encoders:
        return (
            f"ffmpeg at {ffmpeg} has no H.264 encoder (libx264); install an ffmpeg built "
            "with it (Debian/Ubuntu's ffmpeg package is)"
        )
    return None


def video_command(ffmpeg: str, frames_dir: Path, ext: str, fps: int, output: Path) -> list[str]:
    """The ffmpeg command that encodes frames_dir/000000.EXT ... into the MP4 `output`."""
    return [
        ffmpeg,
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostdin",
        "-y",
        "-framerate",
        str(fps),
        "-start_number",
        "0",
        "-i",
        str(frames_dir / f"%06d.{ext}"),
        "-vf",
        "pad=ceil(iw/2)*2:ceil(ih/2)*2",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-r",
        str(fps),
        "-movflags",
        "+faststart",
        "-f",
        "mp4",
        str(output),
    ]


def _link_frames(frames: list[Path], folder: Path, ext: str) -> None:
    shutil.rmtree(folder, ignore_errors=True)  # a folder an interrupted encode left
    folder.mkdir(parents=True)
    for number, frame in enumerate(frames):
        target = folder / f"{number:06d}.{ext}"
        try:
            os.link(frame, target)
        except OSError:  # no hard links on this file system
            shutil.copyfile(frame, target)


class VideoError(Exception):
    """ffmpeg could not make the video; the message says why."""


async def encode_video(frames: list[Path], ext: str, fps: int, output: Path) -> None:
    """Encode `frames` (in order) into the MP4 `output`, atomically: a reader sees no
    file or the whole video. Raises VideoError."""
    problem = await trio.to_thread.run_sync(ffmpeg_problem)
    if problem is not None:
        raise VideoError(problem)
    ffmpeg = find_program("ffmpeg") or "ffmpeg"
    folder = output.with_name(f".{output.name}.frames")
    partial = output.with_name(f".{output.name}.partial")
    try:
        await trio.to_thread.run_sync(_link_frames, frames, folder, ext)
        result = await trio.run_process(
            video_command(ffmpeg, folder, ext, fps, partial),
            stdin=subprocess.DEVNULL,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            **no_window_options(),  # the packaged app has no console to lend ffmpeg
        )
        if result.returncode != 0:
            tail = result.stderr.decode("utf-8", errors="replace")[-ERROR_TAIL_CHARS:].strip()
            raise VideoError(f"ffmpeg failed with exit status {result.returncode}: {tail}")
        await trio.to_thread.run_sync(_sync_and_rename, partial, output)
    finally:
        await trio.to_thread.run_sync(_clean_up, folder, partial)


def _sync_and_rename(partial: Path, output: Path) -> None:
    with open(partial, "r+b") as file:  # writable: Windows syncs only those
        os.fsync(file.fileno())
    replace_file(partial, output)  # Windows: retried while a video player holds it


def _clean_up(folder: Path, partial: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    partial.unlink(missing_ok=True)
