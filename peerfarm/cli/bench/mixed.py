"""`peerfarm bench mixed`: a real farm with one slow node, its makespan against the
lower bound (docs/scheduling.md, "On real processes").

A bootstrap server and N node processes on loopback (one slot each) render one
adaptive job with the paced renderer (renderers/paced.py: a real renderer process
that sleeps a set time per frame), one node SLOW times slower than the others. The
makespan runs from the submit to the job done at the submitter. The lower bound is
the frames spread over every node at the speed it measured itself (NODE_SPEED, from
its own renders), plus one start-up; the bound from the paces the bench set is
printed too.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from peerfarm.cli.bench.scale import statuses_of
from peerfarm.cli.demo import Farm
from peerfarm.cli.errors import CliError
from peerfarm.job_request import JobRequest
from peerfarm.renderers import paced
from peerfarm.runtime.client import NodeClient
from peerfarm.security.farm_key import FarmKey

TARGET_RATIO = 1.10


def add_mixed_parser(benches: argparse._SubParsersAction) -> None:
    p = benches.add_parser(
        "mixed",
        help="a real farm with one node slowed: makespan of one job against the lower bound",
    )
    p.add_argument("--nodes", type=int, default=4, help="node processes (default 4)")
    p.add_argument("--frames", type=int, default=120, help="frames of the job (default 120)")
    p.add_argument(
        "--frame-seconds",
        type=float,
        default=0.5,
        metavar="S",
        help="seconds per frame on a normal node (default 0.5)",
    )
    p.add_argument(
        "--startup", type=float, default=1.0, metavar="S", help="renderer start-up (default 1)"
    )
    p.add_argument(
        "--slow", type=float, default=4.0, metavar="X", help="the last node is X times slower (4)"
    )
    p.add_argument(
        "--again",
        action="store_true",
        help="then submit the job again, on a farm that now knows its speeds; its makespan "
        'is under "again"',
    )
    p.add_argument("--timeout", type=float, default=600.0, help="give up after (600 s)")
    p.add_argument("--logs", type=Path, help="keep the processes' logs in this folder")
    p.add_argument("--json", action="store_true", help="only the JSON object, no progress")


def run_mixed(args: argparse.Namespace, say: Callable[[str], None]) -> dict[str, Any]:
    if args.nodes < 2 or args.frames < 1:
        raise CliError("--nodes must be at least 2 and --frames at least 1")
    if not 0 < args.frame_seconds <= 60 or not 0 <= args.startup <= 60 or not 1 <= args.slow <= 100:
        raise CliError("give --frame-seconds 0-60 (not 0), --startup 0-60 and --slow 1-100")
    paces = [args.frame_seconds] * (args.nodes - 1) + [args.frame_seconds * args.slow]
    with tempfile.TemporaryDirectory(prefix="peerfarm-bench-mixed-") as tmp:
        root = Path(tmp)
        farm, key = Farm.with_new_key(root)
        before = os.environ.get(paced.ENV_VAR)
        try:
            _, bootstrap = farm.start_bootstrap(root / "bootstrap")
            addresses = []
            for i, pace in enumerate(paces, start=1):
                # Each node's renderer pace comes from its environment (renderers/paced.py).
                os.environ[paced.ENV_VAR] = f"{pace!r},{args.startup!r}"
                addresses.append(farm.start_node(f"node-{i}", bootstrap, root / f"node-{i}", 1)[1])
            return trio.run(_measure, args, key, addresses, paces, root, say)
        finally:
            if before is None:
                os.environ.pop(paced.ENV_VAR, None)
            else:
                os.environ[paced.ENV_VAR] = before
            farm.stop()
            if args.logs is not None:  # kept for reading after the run
                args.logs.mkdir(parents=True, exist_ok=True)
                for log in root.glob("*.log"):
                    (args.logs / log.name).write_text(log.read_text(errors="replace"))


async def _measure(
    args: argparse.Namespace,
    key: FarmKey,
    addresses: list[str],
    paces: list[float],
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
    ids = [s["node_id"] for s in statuses if s is not None]
    request = JobRequest(
        renderer="paced",
        scene="paced",
        name="mixed",
        frames=(1, args.frames),
        output=str(root / "out"),
    )  # no chunk size: an adaptive job, runs sized to each node's speed
    say(
        f"{len(addresses)} nodes, one slot each, {paces[0]:g} s a frame, the last node "
        f"{paces[-1]:g} s; start-up {args.startup:g} s; {args.frames} frames"
    )
    async with NodeClient(addresses[0], key) as client:
        makespan, job = await _render(client, request, args.timeout)
        if args.again:
            say("the job again, on a farm that knows its speeds")
            again = dataclasses.replace(request, output=str(root / "out-again"))
            makespan_again, job_again = await _render(client, again, args.timeout)
    statuses = await statuses_of(key, addresses)
    seen = next(s for s in statuses if s is not None)
    speeds = {p["id"]: p["speeds"].get("paced") for p in seen["peers"] if p["id"] in ids} | {
        seen["node_id"]: seen["speeds"].get("paced")
    }
    measured = [speeds.get(node_id) for node_id in ids]
    if any(m is None for m in measured):
        raise CliError("a node never measured its speed: the bound cannot be computed")
    by_node = job["frames_by_node"]
    startup = min(m["startup_seconds"] for m in measured)
    bound = args.frames / sum(1.0 / m["frame_seconds"] for m in measured) + startup
    set_bound = args.frames / sum(1.0 / p for p in paces) + args.startup
    result: dict[str, Any] = {
        "nodes": len(addresses),
        "frames": args.frames,
        "frame_seconds": paces,
        "startup_seconds": args.startup,
        "makespan": round(makespan, 2),
        "lower_bound": round(bound, 2),
        "ratio": round(makespan / bound, 4),
        "lower_bound_from_paces": round(set_bound, 2),
        "ratio_to_paces": round(makespan / set_bound, 4),
        "target_ratio": TARGET_RATIO,
        "measured": [
            {
                "frame_seconds": m["frame_seconds"],
                "startup_seconds": m["startup_seconds"],
                "frames_rendered": by_node.get(node_id, 0),
            }
            for m, node_id in zip(measured, ids, strict=True)
        ],
        "frame_renders": job["frame_renders"],
    }
    if args.again:
        result["again"] = {
            "makespan": round(makespan_again, 2),
            "ratio": round(makespan_again / bound, 4),
            "ratio_to_paces": round(makespan_again / set_bound, 4),
            "frames_rendered": [job_again["frames_by_node"].get(n, 0) for n in ids],
            "frame_renders": job_again["frame_renders"],
        }
    return result


async def _render(client: NodeClient, request: JobRequest, timeout: float) -> tuple[float, dict]:
    """Submit the job and wait for it: its makespan (submit to done, as the submitter
    sees it) and its status."""
    started = time.monotonic()
    job_id = await client.submit(request)
    while True:
        status = await client.status()
        now = time.monotonic() - started
        job = next(j for j in status["jobs"] if j["id"] == job_id)
        if job["state"] == "done":
            return now, job
        if job["state"] in ("failed", "cancelled"):
            raise CliError(f"the job {job['state']}: {job.get('error', '')}")
        if now > timeout:
            raise CliError(f"not finished after {timeout:.0f} s")
        await trio.sleep(0.1)
