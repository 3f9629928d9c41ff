"""`peerfarm bench join`: a node joins a farm whose history holds many actions.

The history is made fast and written as a log file before the farm starts:
finished jobs (``--jobs``) of one-frame chunks (NEW_JOB, then a CLAIM_CHUNK and a
DONE per chunk, then JOB_COLLECTED: its frames are home) of the null renderer, which
no node of this farm offers, signed by a node of the past that rendered them and
left. A bootstrap server starts with it as its log; a node joins and catches up;
with compaction on, both fold the history into their snapshots. Then a new node
starts and joins: the time from its start (and from when it listens) until its state
digest equals the bootstrap server's. Log file and snapshot sizes, and the
processes' memory (where /proc tells), come with it.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from peerfarm.cli.bench.scale import statuses_of
from peerfarm.cli.demo import Farm
from peerfarm.cli.errors import CliError
from peerfarm.core import actions as act
from peerfarm.core.actions import MAX_CHUNKS, Action
from peerfarm.core.features import SPOKEN
from peerfarm.core.feeds import GENESIS
from peerfarm.runtime import store
from peerfarm.runtime.client import ClientError, NodeClient
from peerfarm.security.farm_key import FarmKey
from peerfarm.security.identity import new_identity

SIGN_EVERY = 1000  # a signature covers the actions before it (core/feeds.py MAX_CHAIN)


def make_history(path: Path, actions: int, jobs: int = 1) -> int:
    """Write a log file holding about ``actions`` actions: ``jobs`` finished jobs of
    one-frame chunks (a NEW_JOB, then a CLAIM_CHUNK and a DONE per chunk, then the
    JOB_COLLECTED of their submitter), rendered by a node that joined (speaking
    job_summaries, which it enabled) and left; returns how many it holds."""
    extra = 3 + jobs  # PEER_JOINED, ENABLE_FEATURE, PEER_LEFT, and each JOB_COLLECTED
    per_job = max(1, min((actions - extra - jobs) // (2 * jobs), MAX_CHUNKS))
    past = new_identity()
    origin = past.node_id
    records: list[dict[str, Any]] = []
    prev = GENESIS

    def emit(type_: str, payload: dict[str, Any], last: bool = False) -> int:
        # As ActionLog.create makes them (one origin: its Lamport time is its seq),
        # without folding each into a state.
        nonlocal prev
        seq = len(records) + 1
        cert = past.cert_der if seq == 1 else b""
        action = Action(type_, payload, origin, seq, seq, prev, b"", cert)
        prev = action.hash
        if seq % SIGN_EVERY == 0 or last:
            action = action._replace(sig=past.sign(prev))
        records.append(action.to_wire())
        return seq

    joined = {
        "name": "past",
        "address": "127.0.0.1:9",
        "slots": 1,
        "renders": True,
        "renderers": {},
        "features": sorted(SPOKEN),
    }
    emit(act.PEER_JOINED, joined)
    for feature in sorted(SPOKEN):
        emit(act.ENABLE_FEATURE, {"feature": feature})
    for number in range(jobs):
        job_id = f"history-{number}"
        emit(
            act.NEW_JOB,
            {
                "job_id": job_id,
                "name": job_id,
                "renderer": "null",  # no node of this farm has it: none claims a chunk
                "renderer_version": "",
                "scene": "{}",
                "files": {},
                "main": "",
                "options": [],
                "frame_start": 1,
                "frame_end": per_job,
                "chunk_size": 1,
                "padding": 6,
                "width": 32,
                "height": 24,
                "output": job_id,
                "priority": 0,
            },
        )
        for chunk in range(per_job):
            claim_seq = emit(act.CLAIM_CHUNK, {"job_id": job_id, "chunk": chunk})
            payload = {"job_id": job_id, "chunk": chunk, "claim_seq": claim_seq}
            emit(act.DONE, payload)
        emit(act.JOB_COLLECTED, {"job_id": job_id})  # its submitter holds every frame
    # The end of the feed is signed, or no one would take what the last signature
    # before it does not cover.
    emit(act.PEER_LEFT, {}, last=True)
    store.LogFile(path).append(records)
    return len(records)


def rss_bytes(pid: int) -> int | None:
    """Resident memory of a live process; None where /proc is missing."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def run_join(args: argparse.Namespace, say: Callable[[str], None]) -> dict[str, Any]:
    if args.actions < 3:
        raise CliError("--actions must be at least 3")
    compact_after = str(max(args.compact_after, 0))
    with tempfile.TemporaryDirectory(prefix="peerfarm-bench-join-") as tmp:
        root = Path(tmp)
        farm, key = Farm.with_new_key(root)
        boot_dir = root / "bootstrap"
        boot_dir.mkdir()
        say(f"writing a history of about {args.actions} actions")
        started = time.monotonic()
        count = make_history(boot_dir / "log.bin", args.actions, max(args.jobs, 1))
        made_s = time.monotonic() - started
        log_bytes_before = _size(boot_dir / "log.bin")
        try:
            boot, bootstrap = farm.start(
                "bootstrap",
                [
                    "bootstrap",
                    "--listen",
                    "127.0.0.1:0",
                    "--data-dir",
                    str(boot_dir),
                    "--no-zeroconf",
                    "--no-config",
                    "--compact-after",
                    compact_after,
                ],
            )
            member_started = time.monotonic()
            member, member_address = farm.start_node(
                "member", bootstrap, root / "member", 1, "--compact-after", compact_after
            )
            result = trio.run(
                _measure,
                args,
                key,
                farm,
                root,
                (bootstrap, member_address, member_started),
                compact_after,
                say,
            )
            result.update(
                {
                    "actions": count,
                    "jobs": max(args.jobs, 1),
                    "history_written_s": round(made_s, 2),
                    "log_bytes_before": log_bytes_before,
                    "log_bytes_after": _size(boot_dir / "log.bin"),
                    "snapshot_bytes": _size(boot_dir / "snapshot.bin"),
                    "rss_bytes": {
                        "bootstrap": rss_bytes(boot.pid),
                        "member": rss_bytes(member.pid),
                        "joiner": rss_bytes(farm.procs[-1].pid),
                    },
                }
            )
            return result
        finally:
            farm.stop()
            if args.logs is not None:
                args.logs.mkdir(parents=True, exist_ok=True)
                for log_file in root.glob("*.log"):
                    shutil.copyfile(log_file, args.logs / log_file.name)


async def _status(address: str, key: FarmKey) -> dict[str, Any] | None:
    try:
        with trio.fail_after(10):
            async with NodeClient(address, key) as client:
                return await client.status()
    except (ClientError, OSError, trio.TooSlowError):
        return None


async def _measure(
    args: argparse.Namespace,
    key: FarmKey,
    farm: Farm,
    root: Path,
    farm_addresses: tuple[str, str, float],
    compact_after: str,
    say: Callable[[str], None],
) -> dict[str, Any]:
    bootstrap, member, member_started = farm_addresses
    compacting = int(compact_after) > 0
    deadline = time.monotonic() + args.timeout
    caught_up_s = None
    say("waiting for the member to catch up" + (" and both to compact" if compacting else ""))
    while True:
        boot, mem = await statuses_of(key, [bootstrap, member])
        ready = boot is not None and mem is not None
        ready = ready and boot["state_digest"] == mem["state_digest"]
        if ready and caught_up_s is None:
            caught_up_s = time.monotonic() - member_started
        if ready and compacting:
            ready = boot.get("log_compacted", 0) > 0 and mem.get("log_compacted", 0) > 0
        if ready:
            break
        if time.monotonic() > deadline:
            raise CliError(
                f"the bootstrap server and the member did not agree in {args.timeout:.0f} s"
            )
        await trio.sleep(0.5)
    say("starting the joiner")
    started = time.monotonic()
    proc = farm.launch(
        "joiner",
        Farm.node_args("joiner", bootstrap, root / "joiner", 1, "--compact-after", compact_after),
    )
    address = await trio.to_thread.run_sync(farm.listening, "joiner", proc)
    listening_s = time.monotonic() - started
    deadline = time.monotonic() + args.timeout
    equal_s: float | None = None
    async with NodeClient(address, key) as joiner, NodeClient(bootstrap, key) as boot_client:
        while True:
            mine = await joiner.status()
            theirs = await boot_client.status()
            if mine["state_digest"] == theirs["state_digest"]:
                equal_s = time.monotonic() - started
                break
            if time.monotonic() > deadline:
                say(f"the joiner's digest was not equal in {args.timeout:.0f} s")
                break
            await trio.sleep(0.02)
        compacted = mine.get("log_compacted", 0)
        in_memory = mine["log_length"]
    _check_alive(proc)
    return {
        "compact_after": int(compact_after),
        # The first node to join, with no snapshot yet (before either compacted).
        "member_start_to_equal_digest_s": round(caught_up_s or 0.0, 3),
        # None: not equal within --timeout.
        "join_to_equal_digest_s": None if equal_s is None else round(equal_s - listening_s, 3),
        "start_to_equal_digest_s": None if equal_s is None else round(equal_s, 3),
        "start_to_listening_s": round(listening_s, 3),
        "joiner_log_compacted": compacted,
        "joiner_log_length": in_memory,
        "joiner_log_bytes": _size(root / "joiner" / "log.bin"),
        "target_join_s": 2.0,
    }


def _check_alive(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        raise CliError(f"the joiner exited with {proc.returncode}")
