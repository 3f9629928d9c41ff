"""What security costs: TLS + the farm-key handshake per connection, TLS
throughput against plain TCP on loopback, and a job's time with a garbage
flood at its nodes against without. Prints JSON; compare as ratios in one run.

    python benchmarks/bench_security.py [--connections 200] [--megabytes 200] [--frames 24]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from farmtools import start_farm  # noqa: E402

from peerfarm.job_request import JobRequest
from peerfarm.renderers.builtin import builtin_scene_text  # noqa: E402
from peerfarm.runtime.client import NodeClient  # noqa: E402
from peerfarm.runtime.node import Node, NodeConfig  # noqa: E402
from peerfarm.runtime.tls import accept_tls, connect_tls, server_context  # noqa: E402
from peerfarm.security.farm_key import ENV_VAR, new_key, write_key  # noqa: E402
from peerfarm.security.identity import load_or_create_identity  # noqa: E402

PIECE = 1 << 20


async def handshakes(count: int, root: Path) -> dict:
    key = new_key()
    node = Node(
        NodeConfig(
            listen=("127.0.0.1", 0), data_dir=root / "hs", slots=0, zeroconf=False, farm_key=key
        )
    )
    async with trio.open_nursery() as nursery:
        address = await nursery.start(node.run)
        start = time.perf_counter()
        for _ in range(count):
            async with NodeClient(address, key) as client:
                await client.status()
        elapsed = time.perf_counter() - start
        node.request_stop()
        node.request_stop()
    return {"connections": count, "ms_per_connection_with_status": 1000 * elapsed / count}


async def throughput(megabytes: int, root: Path, tls: bool) -> float:
    """MB/s through one loopback connection, plain TCP or TLS 1.3 as links use it."""
    identity = load_or_create_identity(root / "tp")
    ctx = server_context(identity)
    done = trio.Event()
    received = 0

    async def serve(stream):
        nonlocal received
        if tls:
            stream = await accept_tls(stream, ctx)
        while data := await stream.receive_some(256 * 1024):
            received += len(data)
            if received >= megabytes * PIECE:
                done.set()
                break

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, serve, listeners)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        if tls:
            stream, _ = await connect_tls(stream)
        payload = os.urandom(PIECE)
        start = time.perf_counter()
        for _ in range(megabytes):
            await stream.send_all(payload)
        await done.wait()
        elapsed = time.perf_counter() - start
        nursery.cancel_scope.cancel()
    return megabytes / elapsed


def job_seconds(frames: int, root: Path, flood: bool) -> float:
    farm, _, _, nodes = start_farm(root, nodes=2)
    try:
        spec = JobRequest(
            scene=builtin_scene_text("demo"),
            name="demo",
            frames=(1, frames),
            chunk_size=2,
            width=160,
            height=120,
            output=str(root / "out"),
        )

        async def flood_forever(address: str) -> None:
            rng = random.Random(7)
            host, port = address.rsplit(":", 1)
            while True:
                try:
                    s = await trio.open_tcp_stream(host, int(port))
                    await s.send_all(rng.randbytes(512))
                    await s.aclose()
                except OSError:
                    pass
                await trio.sleep(0.005)  # ~200 connections/s per node

        async def go() -> float:
            from peerfarm.security.farm_key import resolve_key

            async with NodeClient(nodes[0], resolve_key(None)) as client:
                await trio.sleep(3.5)
                async with trio.open_nursery() as nursery:
                    if flood:
                        for address in nodes:
                            nursery.start_soon(flood_forever, address)
                    start = time.perf_counter()
                    job_id = await client.submit(spec)
                    while True:
                        st = await client.status()
                        job = next(j for j in st["jobs"] if j["id"] == job_id)
                        if job.get("frames_collected") == frames:
                            elapsed = time.perf_counter() - start
                            nursery.cancel_scope.cancel()
                            return elapsed
                        await trio.sleep(0.05)

        return trio.run(go)
    finally:
        farm.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--megabytes", type=int, default=200)
    parser.add_argument("--frames", type=int, default=24)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        key_file = root / "farm.key"
        write_key(new_key(), key_file)
        os.environ[ENV_VAR] = str(key_file)
        result = {"handshake": trio.run(handshakes, args.connections, root)}
        plain = trio.run(throughput, args.megabytes, root, False)
        tls = trio.run(throughput, args.megabytes, root, True)
        result["throughput_MBps"] = {"tcp": plain, "tls": tls, "tls_over_tcp": tls / plain}
        quiet = job_seconds(args.frames, root / "quiet", flood=False)
        flooded = job_seconds(args.frames, root / "flooded", flood=True)
        result["job_under_flood"] = {
            "frames": args.frames,
            "seconds_quiet": quiet,
            "seconds_flooded": flooded,
            "flooded_over_quiet": flooded / quiet,
            "flood": "~200 garbage connections/s at each of 2 nodes",
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
