"""`peerfarm status --watch`: a live view of the farm in the terminal.

One connection to the node, a status every --interval seconds, the screen
redrawn (on a terminal; elsewhere each view is printed after the last), frame
rates measured between views. Ctrl+C quits.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import deque
from typing import Any, TextIO

import trio

from peerfarm.cli.commands import describe_machine
from peerfarm.runtime.client import NodeClient

CLEAR = "\x1b[H\x1b[2J"
RATE_WINDOW = 30.0  # seconds of history a job's frame rate is measured over
BAR = 20


class Rates:
    """Frames (or tiles) per second of each job, over the last RATE_WINDOW seconds."""

    def __init__(self) -> None:
        self._seen: dict[str, deque[tuple[float, int]]] = {}

    def update(self, job_id: str, done: int, now: float) -> float | None:
        seen = self._seen.setdefault(job_id, deque())
        seen.append((now, done))
        while len(seen) > 2 and now - seen[0][0] > RATE_WINDOW:
            seen.popleft()
        (t0, d0), (t1, d1) = seen[0], seen[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 else None


def _progress(job: dict[str, Any]) -> tuple[int, int, str]:
    if job.get("tiles", 1) > 1:
        return job["chunks_done"], job["chunks_total"], "tiles"
    return job["frames_done"], job["frames_total"], "frames"


def render_view(
    st: dict[str, Any], rates: Rates, now: float, interval: float, wall: float | None = None
) -> str:
    """One view of a node's status (plain text, fits 100 columns)."""
    clock = time.strftime("%H:%M:%S", time.localtime(wall if wall is not None else time.time()))
    peers = st["peers"]
    health: dict[str, int] = {}
    for p in peers:
        health[p["state"]] = health.get(p["state"], 0) + 1
    linked = sum(1 for p in peers if p["connected"])
    lines = [
        f"{st['name']} ({st['node_id'][:12]}) at {st['address']}, {st['role']} -- {clock}, "
        f"every {interval:g}s, Ctrl+C quits",
        f"peers: {len(peers)} ("
        + (", ".join(f"{n} {s}" for s, n in sorted(health.items())) or "none")
        + f"), {linked} linked; log {st['log_length']} actions, digest {st['state_digest'][:12]}",
    ]
    worker = st.get("worker")
    if worker is not None:
        running = worker["rendering"]
        state = "paused" if worker["paused"] else f"{len(running)}/{worker['slots']} slots busy"
        lines.append(f"this machine: {state}")
        for r in running:
            what = (
                f"tile {r['tile']} of frame {r['frames'][0]}"
                if r.get("tile") is not None
                else f"frames {r['frames'][0]}-{r['frames'][1]}"
            )
            lines.append(f"  rendering job {r['job_id']} chunk {r['chunk']}: {what}")
    lines.append("")
    lines.append(
        f"{'JOB':<13} {'NAME':<16} {'STATE':<10} {'PROGRESS':<{BAR + 2}} {'FRAMES':>13} "
        f"{'PER SEC':>8} {'ETA':>7}"
    )
    for job in st["jobs"]:
        done, total, unit = _progress(job)
        rate = rates.update(job["id"], done, now)
        filled = int(BAR * done / total) if total else BAR
        left = total - done
        if job["state"] in ("done", "cancelled", "failed") or not left:
            eta = "-"
        elif rate:
            eta = f"{left / rate:.0f}s"
        else:
            eta = "?"
        finished = job["state"] in ("done", "cancelled", "failed")
        shown_rate = "-" if rate is None or finished else f"{rate:.2f}/s"
        amount = f"{done}/{total}" + (" tiles" if unit == "tiles" else "")
        lines.append(
            f"{job['id'][:12]:<13} {job['name'][:16]:<16} {job['state'][:10]:<10} "
            f"[{'#' * filled}{'.' * (BAR - filled)}] {amount:>13} {shown_rate:>8} {eta:>7}"
        )
        # why it waits: no node up may take it (its requirements), or its output disk is full
        for why in (job.get("waiting"), job.get("output_waiting")):
            if why:
                lines.append(f"{'':<13} {why}")
    if not st["jobs"]:
        lines.append("(no jobs)")
    lines.append("")
    lines.append(f"{'PEER':<18} {'ADDRESS':<24} {'STATE':<8} {'LINK':<14} {'SLOTS':<6} MACHINE")
    for p in peers:
        link = "connected" if p["connected"] else "not connected"
        slots = "-" if p.get("slots") is None else str(p["slots"])
        machine = describe_machine(p) if p.get("renders") else ""
        lines.append(
            f"{(p['name'] or '?')[:18]:<18} {p['address'][:24]:<24} {p['state']:<8} {link:<14} "
            f"{slots:<6} {machine}".rstrip()
        )
    return "\n".join(lines)


async def watch_status(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    tty = out.isatty()
    interval = max(args.interval, 0.1)
    rates = Rates()
    shown = 0
    async with NodeClient(args.node, args.farm_key) as client:
        while True:
            st = await client.status()
            view = render_view(st, rates, time.monotonic(), interval)
            print((CLEAR if tty else ("\n" if shown else "")) + view, file=out, flush=True)
            shown += 1
            if args.count and shown >= args.count:
                return 0
            await trio.sleep(interval)
