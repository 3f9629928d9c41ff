"""`peerfarm bench memory`: the resident memory of a headless node holding a big job.

A bootstrap server and one node process (started with the null renderer, which writes
a 1x1 PNG per frame in the node's own process: renderers/null.py) render a job of
--frames one-frame chunks, claimed, done and collected through the real node machine,
log and disk. The node's resident memory is sampled while it runs, and its peak
(Linux: VmHWM, the kernel's own high-water mark) reported against the target.

Then a 1,000,000-frame job: submitted with --chunk 1 it is more chunks than a job may
have and must be refused with a message saying so; submitted without --chunk it is
accepted as at most MAX_CHUNKS chunks (runs of frames), rendered for a while, and the
node's memory measured again; then cancelled. The node must answer throughout.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from peerfarm.cli.demo import Farm
from peerfarm.cli.errors import CliError
from peerfarm.core.actions import MAX_CHUNKS
from peerfarm.job_request import JobRequest
from peerfarm.renderers import null
from peerfarm.runtime.client import ClientError, NodeClient
from peerfarm.security.farm_key import FarmKey

TARGET_MB = 100
MILLION = 1_000_000
SAMPLE_S = 0.2


def resident_mb(pid: int) -> tuple[float, float | None] | None:
    """(resident MB now, peak resident MB so far or None) of a live process: psutil
    where installed (every platform), else /proc (Linux); None when neither works."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            info = psutil.Process(pid).memory_info()
        except psutil.Error:
            return None
        peak = getattr(info, "peak_wset", None)  # Windows keeps a peak
        now_mb = info.rss / 2**20
        peak_mb = _proc_peak_mb(pid) or (None if peak is None else peak / 2**20)
        return now_mb, peak_mb
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss = fields.get("VmRSS")
    if rss is None:
        return None
    return int(rss.split()[0]) / 1024, _proc_peak_mb(pid)


def _proc_peak_mb(pid: int) -> float | None:
    """Linux: the kernel's high-water mark of a process's resident memory (VmHWM)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class Sampler:
    """The highest resident memory seen in samples of one process."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.max_mb = 0.0

    def sample(self) -> float:
        seen = resident_mb(self.pid)
        if seen is None:
            raise CliError(f"the node process {self.pid} is gone (or its memory is unreadable)")
        self.max_mb = max(self.max_mb, seen[0])
        return seen[0]

    def peak_mb(self) -> float:
        """The kernel's peak where it keeps one (a spike between samples too)."""
        seen = resident_mb(self.pid)
        kernel_peak = seen[1] if seen is not None else None
        return max(self.max_mb, kernel_peak or 0.0)


def run_memory(args: argparse.Namespace, say: Callable[[str], None]) -> dict[str, Any]:
    if args.frames < 1 or args.chunk < 1 or args.slots < 1:
        raise CliError("--frames, --chunk and --slots must be at least 1")
    if resident_mb(os.getpid()) is None:
        raise CliError("cannot read a process's memory here: install psutil (pip install psutil)")
    os.environ[null.ENV_VAR] = "1"  # the node this bench starts has the null renderer
    with tempfile.TemporaryDirectory(prefix="peerfarm-bench-memory-") as tmp:
        root = Path(tmp)
        farm, key = Farm.with_new_key(root)
        try:
            _, bootstrap = farm.start_bootstrap(root / "bootstrap")
            node, address = farm.start_node("node", bootstrap, root / "node", args.slots)
            result = trio.run(_measure, args, key, address, node.pid, root, say)
            result["node_alive_at_end"] = node.poll() is None
            return result
        finally:
            farm.stop()


async def _measure(
    args: argparse.Namespace,
    key: FarmKey,
    address: str,
    pid: int,
    root: Path,
    say: Callable[[str], None],
) -> dict[str, Any]:
    sampler = Sampler(pid)
    async with NodeClient(address, key) as client:
        await client.status()
        idle_mb = sampler.sample()
        say(f"node idle: {idle_mb:.1f} MB resident; submitting {args.frames} frames")
        request = JobRequest(
            renderer="null",
            scene="null",
            name="memory",
            frames=(1, args.frames),
            chunk_size=args.chunk,
            output=str(root / "out"),
        )
        started = time.monotonic()
        job_id = await client.submit(request)
        job = await _wait(client, job_id, sampler, args.timeout, say)
        seconds = time.monotonic() - started
        if job["frames_done"] != args.frames or not job.get("complete"):
            raise CliError(f"the job ended {job['state']} with {job['frames_done']} frames done")
        held_mb = sampler.sample()  # the finished job still held (state, log)
        result: dict[str, Any] = {
            "frames": args.frames,
            "chunk": args.chunk,
            "slots": args.slots,
            "rss_mb_peak": round(sampler.peak_mb(), 1),
            "rss_mb_idle_before": round(idle_mb, 1),
            "rss_mb_holding_the_done_job": round(held_mb, 1),
            "target_mb": TARGET_MB,
            "job_seconds": round(seconds, 1),
            "log_length": (await client.status())["log_length"],
        }
        if args.million_seconds > 0:
            result["million"] = await _million(client, sampler, args, root, say)
        result["rss_mb_peak_overall"] = round(sampler.peak_mb(), 1)
        return result


async def _wait(
    client: NodeClient, job_id: str, sampler: Sampler, timeout: float, say: Callable[[str], None]
) -> dict[str, Any]:
    started = time.monotonic()
    last_said = 0.0
    while True:
        mb = sampler.sample()
        job = next(j for j in (await client.status())["jobs"] if j["id"] == job_id)
        if job.get("complete") or job["state"] in ("failed", "cancelled"):
            return job
        now = time.monotonic() - started
        if now > timeout:
            raise CliError(f"the job was not done after {timeout:.0f} s")
        if now - last_said >= 5:
            say(f"  {now:5.1f} s: {job['frames_done']} frames done, {mb:.1f} MB resident")
            last_said = now
        await trio.sleep(SAMPLE_S)


async def _million(
    client: NodeClient,
    sampler: Sampler,
    args: argparse.Namespace,
    root: Path,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """A 1,000,000-frame job: refused as one-frame chunks, accepted as runs."""
    request = JobRequest(
        renderer="null",
        scene="null",
        name="million",
        frames=(1, MILLION),
        chunk_size=1,
        output=str(root / "million"),
    )
    out: dict[str, Any] = {"frames": MILLION, "max_chunks_per_job": MAX_CHUNKS}
    try:
        job_id = await client.submit(request)
    except ClientError as exc:
        out["chunk_1"] = {"refused": True, "message": str(exc)}
    else:
        await client.cancel(job_id)
        out["chunk_1"] = {"refused": False}
    say(f"1,000,000 frames with --chunk 1: {out['chunk_1']}")
    # Without --chunk: adaptive, at most MAX_CHUNKS chunks.
    started = time.monotonic()
    job_id = await client.submit(request.replace(chunk_size=None))
    submit_s = time.monotonic() - started
    after_submit_mb = sampler.sample()
    job = next(j for j in (await client.status())["jobs"] if j["id"] == job_id)
    say(f"1,000,000 frames adaptive: accepted, {after_submit_mb:.1f} MB; rendering a while")
    deadline = time.monotonic() + args.million_seconds
    while time.monotonic() < deadline:
        sampler.sample()
        job = next(j for j in (await client.status())["jobs"] if j["id"] == job_id)
        await trio.sleep(SAMPLE_S)
    rendering_mb = sampler.sample()
    await client.cancel(job_id)
    await trio.sleep(1.0)
    status = await client.status()  # the node still answers
    job = next(j for j in status["jobs"] if j["id"] == job_id)
    out["adaptive"] = {
        "accepted": True,
        "chunks": job["chunks_total"],
        "submit_s": round(submit_s, 2),
        "rss_mb_after_submit": round(after_submit_mb, 1),
        "rendered_for_s": args.million_seconds,
        "frames_done_then": job["frames_done"],
        "rss_mb_while_rendering": round(rendering_mb, 1),
        "state_after_cancel": job["state"],
    }
    return out
