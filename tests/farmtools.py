"""Helpers for tests that run real node processes on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import trio

from peerfarm.cli.demo import Farm
from peerfarm.runtime.client import ClientError, NodeClient
from peerfarm.security.farm_key import resolve_key


def status(address: str) -> dict[str, Any]:
    async def ask():
        async with NodeClient(address, resolve_key(None)) as client:
            return await client.status()

    return trio.run(ask)


def submit(address: str, spec: dict[str, Any]) -> str:
    async def go():
        async with NodeClient(address, resolve_key(None)) as client:
            return await client.submit(spec)

    return trio.run(go)


def wait_until(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.3) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except ClientError as exc:
            last_error = exc
            result = None
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what} (last error: {last_error})"
    )


def wait_for_rendering_mesh(nodes: list[str], timeout: float = 30) -> None:
    """Wait until every node is linked with every other rendering node."""
    wait_until(
        f"{len(nodes)} linked rendering nodes",
        lambda: all(
            sum(1 for p in status(n)["peers"] if p["connected"] and p["renders"]) == len(nodes) - 1
            for n in nodes
        ),
        timeout,
    )


def job_of(st: dict[str, Any], job_id: str) -> dict[str, Any]:
    """The job's entry in a status, or {} if that node does not know the job (yet)."""
    return next((j for j in st["jobs"] if j["id"] == job_id), {})


def start_node(farm: Farm, tmp_path, i: int, bootstrap: str, *extra: str):
    """Start (or restart: same data folder, same identity) node-i; (process, address)."""
    return farm.start_node(f"node-{i}", bootstrap, tmp_path / f"node-{i}", 1, *extra)


def start_bootstrap(farm: Farm, tmp_path, name: str = "bootstrap"):
    """Start (or restart, same data folder) the bootstrap server; (process, address)."""
    return farm.start_bootstrap(tmp_path / "b", name)


def start_farm(tmp_path, nodes=3):
    farm = Farm(tmp_path)
    bootstrap_proc, bootstrap = start_bootstrap(farm, tmp_path)
    addresses = [start_node(farm, tmp_path, i, bootstrap)[1] for i in range(1, nodes + 1)]
    return farm, bootstrap_proc, bootstrap, addresses


def logs(tmp_path) -> str:
    return "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
        for p in sorted(tmp_path.glob("*.log"))
    )


@contextmanager
def farm_running(farm: Farm, log_dir):
    """Run a test body against a farm: on failure print every process's log; always
    wake frozen processes and stop everything the test started."""
    try:
        yield farm
    except BaseException:
        print(logs(log_dir))
        raise
    finally:
        if hasattr(signal, "SIGCONT"):  # a test may have frozen a process with SIGSTOP
            for proc in farm.procs:
                if proc.poll() is None:
                    os.kill(proc.pid, signal.SIGCONT)
        farm.stop()


def peerfarm_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the `peerfarm` command as a user would, capturing what it prints."""
    return subprocess.run(
        [sys.executable, "-m", "peerfarm", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
