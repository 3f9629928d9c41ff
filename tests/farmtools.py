"""Helpers for tests that run real node processes on loopback."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import trio

from peerfarm.demo import Farm
from peerfarm.runtime.client import ClientError, NodeClient


def status(address: str) -> dict[str, Any]:
    async def ask():
        async with NodeClient(address) as client:
            return await client.status()

    return trio.run(ask)


def submit(address: str, spec: dict[str, Any]) -> str:
    async def go():
        async with NodeClient(address) as client:
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
