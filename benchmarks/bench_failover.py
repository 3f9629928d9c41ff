"""Failover latencies on a real local farm (separate processes on loopback).

- kill: SIGKILL a node while it renders a chunk; time until an idle node renders
  that chunk (target: < 1 s).
- freeze: SIGSTOP a rendering node; time until an idle node renders its chunk
  (target: < 5 s with the default 3 s peer timeout).
- cancel: cancel the job; time until no node renders anything (target: < 1 s).

Prints JSON. Unix only (SIGSTOP).

    python benchmarks/bench_failover.py
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from factories import demo_spec  # noqa: E402
from farmtools import start_farm, status, submit  # noqa: E402

from peerfarm.runtime.client import NodeClient  # noqa: E402


def rendering(address: str) -> set[tuple[str, int]]:
    try:
        st = status(address)
    except Exception:
        return set()
    return {(r["job_id"], r["chunk"]) for r in st["worker"]["rendering"]}


def poll(check, timeout: float = 30.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(0.02)
    raise SystemExit("timed out")


def takeover(nodes, procs, victim_index, how) -> float:
    """Start a job with one chunk fewer than live nodes, then hit a busy node."""
    victim = nodes[victim_index]
    poll(lambda: rendering(victim))
    (chunk,) = rendering(victim)
    others = [n for n in nodes if n != victim]
    how(procs[victim_index].pid)
    return poll(lambda: any(chunk in rendering(n) for n in others))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        farm, _, _, nodes = start_farm(root, nodes=5)
        procs = farm.procs[1:]
        try:
            time.sleep(3.5)
            # 3 chunks of long frames, 5 nodes: two stay idle, ready to take over.
            spec = demo_spec(root / "out", frames=(1, 30), chunk=10, size=(640, 480))
            submit(nodes[0], spec)
            poll(lambda: sum(bool(rendering(n)) for n in nodes) == 3)
            # Never the submitter (index 0): we ask it for status and cancel through it.
            busy = next(i for i in (1, 2, 3, 4) if rendering(nodes[i]))
            kill_s = takeover(nodes, procs, busy, lambda pid: os.kill(pid, signal.SIGKILL))
            live = [i for i in range(5) if i != busy]
            poll(lambda: sum(bool(rendering(nodes[i])) for i in live) == 3)
            frozen = next(i for i in live if i != 0 and rendering(nodes[i]))
            freeze_s = takeover(
                [nodes[i] for i in live],
                [procs[i] for i in live],
                live.index(frozen),
                lambda pid: os.kill(pid, signal.SIGSTOP),
            )
            job_id = status(nodes[0])["jobs"][0]["id"]
            awake = [nodes[i] for i in live if i != frozen]

            async def cancel() -> None:
                async with NodeClient(nodes[0]) as client:
                    await client.cancel(job_id)

            start = time.monotonic()
            trio.run(cancel)
            cancel_s = time.monotonic() - start + poll(lambda: not any(rendering(n) for n in awake))
        finally:
            for p in procs:
                if p.poll() is None:
                    os.kill(p.pid, signal.SIGCONT)
            farm.stop()
    print(
        json.dumps(
            {
                "benchmark": "failover",
                "peer_timeout_s": 3.0,
                "killed_node_chunk_rendered_elsewhere_after_s": round(kill_s, 3),
                "frozen_node_chunk_rendered_elsewhere_after_s": round(freeze_s, 3),
                "cancel_to_no_renderer_running_s": round(cancel_s, 3),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
