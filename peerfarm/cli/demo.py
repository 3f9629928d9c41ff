"""`peerfarm demo`: a whole farm on this machine, as real separate processes.

Starts a bootstrap server and N nodes on loopback (each its own process and
data folder), submits ``builtin:demo``, shows progress, writes the frames and
the GIF, and stops everything it started, whatever happens.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

from peerfarm.child_processes import no_window_options
from peerfarm.cli.errors import CliError
from peerfarm.cli.progress import wait_for_job
from peerfarm.core.user_text import parse_size
from peerfarm.job_request import JobRequest, builtin_scene
from peerfarm.runtime.client import NodeClient
from peerfarm.security.farm_key import ENV_VAR, FarmKey, new_key, write_key

START_TIMEOUT = 30.0


class Farm:
    """Processes started for the demo (and for tests): stopped on exit, in reverse order."""

    def __init__(self, root: Path, farm_key_file: Path | None = None) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.procs: list[subprocess.Popen] = []
        # Without one, the processes inherit $PEERFARM_FARM_KEY_FILE (or have no key).
        self.farm_key_file = farm_key_file
        # How `peerfarm` is run (a test may run another build of it for some processes).
        self.command = [sys.executable, "-m", "peerfarm"]

    @classmethod
    def with_new_key(cls, root: Path) -> tuple[Farm, FarmKey]:
        """A farm of its own in ``root`` (a bench's or a test's folder): a new farm key,
        written there, that every process it starts uses."""
        root.mkdir(parents=True, exist_ok=True)
        key = new_key()
        write_key(key, root / "farm.key")
        return cls(root, root / "farm.key"), key

    def start(self, name: str, args: list[str]) -> tuple[subprocess.Popen, str]:
        """Start `peerfarm ARGS`; return the process and the address it listens on."""
        proc = self.launch(name, args)
        return proc, self.listening(name, proc)

    def launch(self, name: str, args: list[str]) -> subprocess.Popen:
        """Start `peerfarm ARGS` without waiting for it (many at once: a lab at 8 am)."""
        log_file = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        env = dict(os.environ)
        if self.farm_key_file is not None:
            env[ENV_VAR] = str(self.farm_key_file)
        proc = subprocess.Popen(
            [*self.command, *args],
            stdout=subprocess.PIPE,
            stderr=log_file,
            stdin=subprocess.DEVNULL,
            env=env,
            **no_window_options(),
        )
        log_file.close()
        self.procs.append(proc)
        return proc

    def listening(self, name: str, proc: subprocess.Popen) -> str:
        """The address a launched process listens on, from its first line."""
        assert proc.stdout is not None
        line = proc.stdout.readline().decode(errors="replace").strip()
        if " listening on " not in line:
            log_text = (self.root / f"{name}.log").read_text(errors="replace")[-2000:]
            raise CliError(f"{name} did not start:\n{log_text}")
        return line.rsplit(" ", 1)[1]

    def start_bootstrap(self, data_dir: Path, name: str = "bootstrap"):  # noqa: ANN201
        """A private bootstrap server on a free loopback port (no LAN discovery, and no
        config file: this machine's settings are not the throwaway farm's)."""
        return self.start(
            name,
            [
                "bootstrap",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                str(data_dir),
                "--no-zeroconf",
                "--no-config",
            ],
        )

    def start_node(  # noqa: ANN201
        self, name: str, bootstrap: str, data_dir: Path, slots: int, *extra: str
    ):
        """A private node on a free loopback port; a throwaway farm must not join (or
        be joined by) farms on the LAN, so LAN discovery is off, and it reads no config
        file (a metrics port or bootstrap servers set there are not for it)."""
        return self.start(name, self.node_args(name, bootstrap, data_dir, slots, *extra))

    @staticmethod
    def node_args(name: str, bootstrap: str, data_dir: Path, slots: int, *extra: str) -> list[str]:
        return [
            "node",
            "--listen",
            "127.0.0.1:0",
            "--bootstrap",
            bootstrap,
            "--data-dir",
            str(data_dir),
            "--name",
            name,
            "--slots",
            str(slots),
            "--no-zeroconf",
            "--no-config",
            *extra,
        ]

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 10
        for proc in self.procs:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout:
                proc.stdout.close()


def run_demo(args: argparse.Namespace) -> int:
    if args.nodes < 1 or args.frames < 1 or args.chunk < 1:
        raise CliError("--nodes, --frames and --chunk must be at least 1")
    width, height = parse_size(args.size)
    output = args.output.resolve()
    slots = max(1, (os.cpu_count() or 1) // args.nodes)
    with tempfile.TemporaryDirectory(prefix="peerfarm-demo-") as tmp:
        # A throwaway farm key: the demo farm is a real, closed farm of its own.
        key = new_key()
        write_key(key, Path(tmp) / "farm.key")
        farm = Farm(Path(tmp), Path(tmp) / "farm.key")
        try:
            _, bootstrap = farm.start_bootstrap(Path(tmp) / "bootstrap")
            print(f"bootstrap server on {bootstrap}")
            nodes = []
            for i in range(1, args.nodes + 1):
                _, address = farm.start_node(f"node-{i}", bootstrap, Path(tmp) / f"node-{i}", slots)
                nodes.append(address)
                print(f"node-{i} on {address} ({slots} slot{'s' * (slots > 1)})")
            scene, _ = builtin_scene("builtin:demo")
            request = JobRequest(
                scene=scene,
                name="demo",
                frames=(1, args.frames),
                chunk_size=args.chunk,
                width=width,
                height=height,
                output=str(output),
            )
            return trio.run(_submit_and_wait, nodes[0], request, key)
        finally:
            farm.stop()
            print("demo farm stopped")


async def _submit_and_wait(node: str, request: JobRequest, key: FarmKey) -> int:
    async with NodeClient(node, key) as client:
        job_id = await client.submit(request)
    assert request.frames is not None
    print(
        f"submitted job {job_id}: {request.frames[1]} frames of builtin:demo at "
        f"{request.width}x{request.height}, {request.chunk_size} frames per chunk"
    )
    return await wait_for_job(node, job_id, key)
