"""Waiting for a job in a terminal: a live progress bar until every frame is in."""

from __future__ import annotations

import sys
import time
from typing import Any

import trio

from peerfarm.cli.errors import CliError
from peerfarm.runtime.client import NodeClient
from peerfarm.security.farm_key import FarmKey

WAIT_POLL = 0.5
# Rendering this long without a frame done: say where to look (a renderer stuck on the
# scene is stopped only past --hung-limit, four hours at the default).
NO_FRAME_SAID_AFTER = 600.0


async def wait_for_job(
    node: str,
    job_id: str,
    farm_key: FarmKey | None = None,
    out=sys.stdout,  # noqa: ANN001
) -> int:
    """Show a live progress bar until every frame is in the output folder."""
    started = time.monotonic()
    tty = out.isatty()
    last_line: tuple = ()
    told_waiting = ""
    rendering_since: float | None = None
    told_no_frame = False
    job: dict[str, Any] = {}
    async with NodeClient(node, farm_key) as client:
        while True:
            status = await client.status()
            job = next((j for j in status["jobs"] if j["id"] == job_id), {})
            if not job:
                raise CliError(f"job {job_id} is not known to the node at {node}")
            total, done = job["frames_total"], job["frames_done"]
            collected = job.get("frames_collected", 0)
            rate = done / max(time.monotonic() - started, 1e-6)
            unit = "frames"
            if job.get("tiles", 1) > 1:  # a tiled still: tiles show the progress
                total, done = job["chunks_total"], job["chunks_done"]
                rate = done / max(time.monotonic() - started, 1e-6)
                unit = f"tiles ({job['frames_done']}/{job['frames_total']} frames)"
            eta = f"{(total - done) / rate:5.0f}s" if rate > 0 else "    ?"
            width = 30
            filled = int(width * done / total) if total else width
            per_second = "tiles/s" if job.get("tiles", 1) > 1 else "fps"
            line = (
                f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {unit}, "
                f"{rate:4.1f} {per_second}, ETA {eta}, {collected} in output, {job['state']}"
            )
            if tty:
                print("\r" + line, end="", file=out, flush=True)
            elif (done, collected, job["state"]) != last_line:
                print(line, file=out, flush=True)  # a log file gets a line per change
            last_line = (done, collected, job["state"])
            waiting = job.get("output_waiting", "")
            if waiting and waiting != told_waiting:  # the output disk is full: say why we wait
                print(("\n" if tty else "") + f"waiting: {waiting}", file=out, flush=True)
            told_waiting = waiting
            now = time.monotonic()
            if job["state"] == "rendering" and rendering_since is None:
                rendering_since = now
            if (
                not done
                and not told_no_frame
                and rendering_since is not None
                and now - rendering_since >= NO_FRAME_SAID_AFTER
            ):
                told_no_frame = True
                print(("\n" if tty else "") + no_frame_yet(job_id, node), file=out, flush=True)
            if job["state"] in ("failed", "cancelled"):
                if tty:
                    print(file=out)
                reason = job.get("error") or "cancelled"
                raise CliError(f"job {job_id} {job['state']}: {reason}")
            if job.get("output_error"):
                raise CliError(job["output_error"])
            if job.get("complete"):
                break
            await trio.sleep(WAIT_POLL)
    if tty:
        print(file=out)
    elapsed = time.monotonic() - started
    animation = job["gif"] or f"none ({job.get('output_note') or 'no GIF'})"
    video = f"; video: {job['video_path']}" if job.get("video_path") else ""
    print(
        f"done: {job['frames_total']} frames in {job['output']} ({elapsed:.1f}s); "
        f"animation: {animation}{video}",
        file=out,
        flush=True,
    )
    return 0


def no_frame_yet(job_id: str, node: str) -> str:
    minutes = NO_FRAME_SAID_AFTER / 60
    return (
        f"note: no frame done yet, {minutes:.0f} min after the job began rendering: the "
        "renderer may still be loading the scene, or be stuck on it. Its output so far: "
        f"`peerfarm logs {job_id} --node {node}`; to stop the job: `peerfarm cancel "
        f"{job_id} --node {node}`. A job's first frame still running after --hung-limit "
        "(four hours at the default) is stopped as hung."
    )
