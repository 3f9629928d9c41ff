"""`peerfarm bench scale`: N node processes started at once, as a lab's machines boot
at 8 am. Reports whether any process died, how long until every node sees the full
mesh, the idle CPU of each node once it has, and a job rendered across all of them
with equal digests at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from peerfarm.cli.demo import Farm
from peerfarm.cli.errors import CliError
from peerfarm.job_request import JobRequest, builtin_scene
from peerfarm.runtime.client import ClientError, NodeClient
from peerfarm.security.farm_key import FarmKey

DEMO_FRAMES = 48  # builtin:demo's animation, the job rendered across the farm

# What a node's log says when the start went wrong (counted per run).
LOG_SIGNS = {
    "rejoined": "the farm declared this node down",
    "declared_down": "is down; its chunks go back to the pool",
    "handshakes_refused": "too many handshakes in progress",
    "tracebacks": "Traceback (most recent call last)",
}


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) a live process has used; None where /proc is missing
    (macOS, Windows: the bench then reports no idle CPU rather than a guess)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime


def run_scale(args: argparse.Namespace, say: Callable[[str], None]) -> dict[str, Any]:
    if args.nodes < 2:
        raise CliError("--nodes must be at least 2")
    frames = args.frames or min(2 * args.nodes, DEMO_FRAMES)
    if not 1 <= frames <= DEMO_FRAMES:
        raise CliError(f"--frames must be from 1 to {DEMO_FRAMES} (builtin:demo's animation)")
    with tempfile.TemporaryDirectory(prefix="peerfarm-bench-scale-") as tmp:
        root = Path(tmp)
        farm, key = Farm.with_new_key(root)
        try:
            _, bootstrap = farm.start_bootstrap(root / "bootstrap")
            names = [f"node-{i}" for i in range(1, args.nodes + 1)]
            started = time.monotonic()
            procs = [
                farm.launch(name, Farm.node_args(name, bootstrap, root / name, 1)) for name in names
            ]
            addresses = [farm.listening(n, p) for n, p in zip(names, procs, strict=True)]
            listening = time.monotonic()
            say(f"{args.nodes} nodes listening {listening - started:.1f} s after their start")
            result = trio.run(
                _measure, args, key, addresses, procs, (started, listening), frames, root, say
            )
        finally:
            farm.stop()
        logs = [(root / f"{name}.log").read_text(errors="replace") for name in names]
        if args.logs is not None:  # kept for reading after the run
            args.logs.mkdir(parents=True, exist_ok=True)
            for name, text in zip(
                ["bootstrap", *names],
                [(root / "bootstrap.log").read_text(errors="replace"), *logs],
                strict=True,
            ):
                (args.logs / f"{name}.log").write_text(text)
    died = [n for n, p in zip(names, procs, strict=True) if p.returncode not in (None, 0, -15)]
    result["processes_died_before_stop"] = result.pop("died")
    result["exit_codes_not_clean"] = died
    for what, sign in LOG_SIGNS.items():
        result[what] = sum(log.count(sign) for log in logs)
    return result


async def statuses_of(key: FarmKey, addresses: list[str]) -> list[dict[str, Any] | None]:
    out: list[dict[str, Any] | None] = [None] * len(addresses)

    async def ask(i: int) -> None:
        try:
            with trio.fail_after(10):
                async with NodeClient(addresses[i], key) as client:
                    out[i] = await client.status()
        except (ClientError, OSError, trio.TooSlowError):
            out[i] = None

    async with trio.open_nursery() as nursery:
        for i in range(len(addresses)):
            nursery.start_soon(ask, i)
    return out


def _sees_full_mesh(status: dict[str, Any] | None, ids: set[str]) -> bool:
    if status is None:
        return False
    others = ids - {status["node_id"]}
    seen = {p["id"] for p in status["peers"] if p["connected"] and p["state"] == "up"}
    return others <= seen


async def _measure(
    args: argparse.Namespace,
    key: FarmKey,
    addresses: list[str],
    procs: list,
    times: tuple[float, float],
    frames: int,
    root: Path,
    say: Callable[[str], None],
) -> dict[str, Any]:
    # Starting N Python processes at once takes seconds of CPU each: on a busy machine
    # most of the time to a mesh is that, so both are reported, and the mesh gets its
    # --mesh-timeout from when the last node listened.
    started, listening = times
    result: dict[str, Any] = {
        "nodes": len(addresses),
        "all_listening_s": round(listening - started, 2),
    }
    ids: set[str] = set()
    mesh_s = None
    while time.monotonic() - listening < args.mesh_timeout:
        statuses = await statuses_of(key, addresses)
        ids |= {s["node_id"] for s in statuses if s is not None}
        full = sum(_sees_full_mesh(s, ids) for s in statuses)
        if len(ids) == len(addresses) and full == len(addresses):
            mesh_s = time.monotonic() - started
            break
        say(f"  {time.monotonic() - started:5.1f} s: {full}/{len(addresses)} see the full mesh")
        await trio.sleep(1.0)
    result["mesh_formed_s"] = None if mesh_s is None else round(mesh_s, 2)
    result["mesh_formed_after_all_listening_s"] = (
        None if mesh_s is None else round(mesh_s - (listening - started), 2)
    )
    result["died"] = [i + 1 for i, p in enumerate(procs) if p.poll() is not None]
    if mesh_s is None:
        result["note"] = (
            f"the mesh did not form within {args.mesh_timeout:.0f} s of the last node listening"
        )
        return result

    # Idle: nothing asked of the nodes (no status polling) while measuring.
    await trio.sleep(3.0)
    before = [cpu_seconds(p.pid) for p in procs]
    t0 = time.monotonic()
    say(f"mesh formed in {mesh_s:.1f} s; measuring {args.idle:.0f} s of idle CPU")
    await trio.sleep(args.idle)
    elapsed = time.monotonic() - t0
    after = [cpu_seconds(p.pid) for p in procs]
    if all(b is not None for b in before) and all(a is not None for a in after):
        shares = [100 * (a - b) / elapsed for a, b in zip(after, before, strict=True)]  # type: ignore[operator]
        result["idle_cpu_percent_per_node"] = {
            "mean": round(statistics.mean(shares), 2),
            "max": round(max(shares), 2),
            "min": round(min(shares), 2),
        }
    else:
        result["idle_cpu_percent_per_node"] = None

    # A job across all of them, then every node's digest.
    scene, _ = builtin_scene("builtin:demo")
    request = JobRequest(
        scene=scene,
        name="scale",
        frames=(1, frames),
        chunk_size=1,
        width=32,
        height=24,
        output=str(root / "out"),
    )
    t0 = time.monotonic()
    async with NodeClient(addresses[0], key) as client:
        job_id = await client.submit(request)
        while True:
            status = await client.status()
            job = next(j for j in status["jobs"] if j["id"] == job_id)
            if job["state"] in ("done", "failed", "cancelled"):
                break
            await trio.sleep(0.2)
    result["job"] = {
        "frames": frames,
        "state": job["state"],
        "seconds": round(time.monotonic() - t0, 2),
    }
    digests: set[str] = set()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        statuses = await statuses_of(key, addresses)
        digests = {s["state_digest"] for s in statuses if s is not None}
        if len(digests) == 1 and all(s is not None for s in statuses):
            break
        await trio.sleep(0.5)
    result["digests_equal"] = len(digests) == 1
    result["died"] = [i + 1 for i, p in enumerate(procs) if p.poll() is not None]
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run it as `peerfarm bench scale`")
