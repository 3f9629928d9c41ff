"""`peerfarm bench dispatch`: how many frames a second the farm itself hands out.

Node processes on loopback with the real mesh, log, signed feeds and reducers
render a job of one-frame chunks with the null renderer (renderers/null.py: no
work, a tiny frame written in the node's process). Frames per second from the
submit until every node knows the last DONE; then the digests, and when the
submitter had collected every frame. Besides, the CPU the node processes used over
the same span (where /proc tells it): frames per CPU-second do not depend on how
busy the machine's other programs keep its cores, as frames per second do.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from contextlib import AsyncExitStack, ExitStack
from pathlib import Path
from typing import Any

import trio

from peerfarm.cli.bench.scale import cpu_seconds, statuses_of
from peerfarm.cli.demo import Farm
from peerfarm.cli.errors import CliError
from peerfarm.job_request import JobRequest
from peerfarm.renderers import null
from peerfarm.runtime.client import NodeClient
from peerfarm.runtime.data_dir import DataDir
from peerfarm.runtime.store import LogFile
from peerfarm.security.farm_key import FarmKey


def run_dispatch(args: argparse.Namespace, say: Callable[[str], None]) -> dict[str, Any]:
    if args.nodes < 1 or args.frames < 1 or args.slots < 1:
        raise CliError("--nodes, --frames and --slots must be at least 1")
    os.environ[null.ENV_VAR] = "1"  # the nodes this bench starts have the null renderer
    if args.keep is not None and args.keep.exists() and any(args.keep.iterdir()):
        raise CliError(f"--keep {args.keep}: the folder is not empty; give a new or empty one")
    with ExitStack() as stack:
        if args.keep is not None:
            root = args.keep.resolve()
            root.mkdir(parents=True, exist_ok=True)
        else:
            root = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="peerfarm-bench-dispatch-"))
            )
        farm, key = Farm.with_new_key(root)
        try:
            _, bootstrap = farm.start_bootstrap(root / "bootstrap")
            started = [
                farm.start_node(f"node-{i}", bootstrap, root / f"node-{i}", args.slots)
                for i in range(1, args.nodes + 1)
            ]
            addresses = [address for _, address in started]
            pids = [proc.pid for proc, _ in started]
            result = trio.run(_measure, args, key, addresses, pids, root, say)
        finally:
            farm.stop()
        result.update(_actions_logged(root / "node-1"))
        return result


def _actions_logged(data_dir: Path) -> dict[str, Any]:
    """How many claims and DONEs the farm needed (node-1's log holds every node's):
    the farm's own cost grows with them, not with the frames."""
    if DataDir(data_dir).snapshot_file.exists():
        return {}  # the log was compacted: its counts would be partial
    types = [r.get("type") for r in LogFile(DataDir(data_dir).log_file).load()]
    claims, dones = types.count("CLAIM_CHUNK"), types.count("DONE")
    return {"claim_actions": claims, "done_actions": dones}


async def _measure(
    args: argparse.Namespace,
    key: FarmKey,
    addresses: list[str],
    pids: list[int],
    root: Path,
    say: Callable[[str], None],
) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:  # every node renders, and knows every other does
        statuses = await statuses_of(key, addresses)
        ready = sum(
            s is not None
            and sum(1 for p in s["peers"] if p["renders"] and p["state"] == "up")
            == len(addresses) - 1
            for s in statuses
        )
        if ready == len(addresses):
            break
        if time.monotonic() > deadline:
            raise CliError(f"only {ready} of {len(addresses)} nodes saw the whole farm in 60 s")
        await trio.sleep(0.5)
    request = JobRequest(
        renderer="null",
        scene="null",
        name="dispatch",
        frames=(1, args.frames),
        # Without --chunk (as users submit): one-frame chunks, claimed in runs sized to
        # each node's measured speed; --fixed: one claim per chunk.
        chunk_size=1 if args.fixed else None,
        output=str(root / "out"),
    )
    say(f"{len(addresses)} nodes x {args.slots} slots; submitting {args.frames} one-frame chunks")
    async with AsyncExitStack() as stack:
        # One connection per node for the whole run: a TLS handshake per look would
        # cost the nodes more than what is measured.
        clients = [await stack.enter_async_context(NodeClient(a, key)) for a in addresses]
        return await _run_job(args, request, clients, pids, say)


def _nodes_cpu_seconds(pids: list[int]) -> float | None:
    """CPU seconds the node processes used so far, together; None where not known."""
    seconds = [cpu_seconds(pid) for pid in pids]
    return None if None in seconds else sum(s for s in seconds if s is not None)


async def _run_job(
    args: argparse.Namespace,
    request: JobRequest,
    clients: list[NodeClient],
    pids: list[int],
    say: Callable[[str], None],
) -> dict[str, Any]:
    async def statuses() -> list[dict[str, Any]]:
        return [await c.status() for c in clients]

    cpu_before = _nodes_cpu_seconds(pids)
    started = time.monotonic()
    job_id = await clients[0].submit(request)
    knows_last: dict[int, float] = {}
    cpu_dispatch: float | None = None
    collected_s = None
    while len(knows_last) < len(clients) or collected_s is None:
        seen = await statuses()
        now = time.monotonic() - started
        for i, s in enumerate(seen):
            job = next((j for j in (s or {}).get("jobs", []) if j["id"] == job_id), None)
            if job is None:
                continue
            if i not in knows_last and job["frames_done"] == args.frames:
                knows_last[i] = now
            if i == 0 and job.get("complete"):
                collected_s = now
            if i == 0 and job["state"] in ("failed", "cancelled"):
                raise CliError(f"the job {job['state']}: {job.get('error', '')}")
        if cpu_dispatch is None and len(knows_last) == len(clients):
            cpu_after = _nodes_cpu_seconds(pids)
            if cpu_before is not None and cpu_after is not None:
                cpu_dispatch = cpu_after - cpu_before
        if len(knows_last) < len(clients):
            done = max(
                (j["frames_done"] for s in seen for j in s["jobs"] if j["id"] == job_id),
                default=0,
            )
            say(f"  {now:6.1f} s: {done}/{args.frames} frames done")
        if now > args.timeout:
            raise CliError(f"not finished after {args.timeout:.0f} s")
        await trio.sleep(0.2)
    dispatch_s = max(knows_last.values())
    digests = {s["state_digest"] for s in await statuses()}
    return {
        "nodes": len(clients),
        "slots_per_node": args.slots,
        "frames": args.frames,
        "frames_per_s": round(args.frames / dispatch_s, 1),
        "seconds_to_last_done_everywhere": round(dispatch_s, 2),
        "seconds_to_all_collected": round(collected_s, 2),
        "digests_equal": len(digests) == 1,
        # The nodes' CPU from the submit to the last DONE known everywhere (their
        # collecting of frames in that span included); null where /proc is missing.
        "node_cpu_seconds": None if cpu_dispatch is None else round(cpu_dispatch, 2),
        "frames_per_cpu_second": (round(args.frames / cpu_dispatch, 1) if cpu_dispatch else None),
        "claims": "one per frame" if args.fixed else "runs sized to speed",
        "target_frames_per_s": 10_000,
    }
