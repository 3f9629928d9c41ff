"""Blob transfer over the mesh: MB/s between two in-process nodes on loopback.

Prints JSON. Node A stores a random blob; node B fetches it in GET_BLOB pieces
(append to the partial file, verify SHA-256, rename into the store). The
baseline is reading the same file locally, with and without hashing it.

    python benchmarks/bench_blobs.py [--mb 50] [--chunk-kib 1024]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

import trio

from peerfarm.runtime.blobs import CHUNK_BYTES, COPY_BLOCK, fetch_blob
from peerfarm.runtime.node import Node, NodeConfig


def make_node(root: Path, name: str, bootstraps: list[tuple[str, int]]) -> Node:
    config = NodeConfig(
        listen=("127.0.0.1", 0),
        data_dir=root / name,
        name=name,
        slots=0,
        renders=False,
        zeroconf=False,
        bootstraps=bootstraps,
    )
    return Node(config)


def read_locally(path: Path, hash_it: bool) -> float:
    digest = hashlib.sha256()
    start = time.perf_counter()
    with open(path, "rb") as f:
        while block := f.read(COPY_BLOCK):
            if hash_it:
                digest.update(block)
    return time.perf_counter() - start


async def transfer(root: Path, data: bytes, chunk_bytes: int) -> tuple[float, str, Path]:
    a = make_node(root, "a", [])
    async with trio.open_nursery() as nursery:
        address = await nursery.start(a.run)
        host, port = address.rsplit(":", 1)
        b = make_node(root, "b", [(host, int(port))])
        await nursery.start(b.run)
        sha = await trio.to_thread.run_sync(a.blobs.put_bytes, data)
        with trio.fail_after(10):
            while b.link_to(a.node_id) is None:
                await b.wait_for_change(0.05)
        start = time.perf_counter()
        await fetch_blob(b, sha, len(data), [a.node_id], chunk_bytes=chunk_bytes)
        seconds = time.perf_counter() - start
        a.request_stop()
        b.request_stop()
    return seconds, sha, b.blobs.path(sha)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=50)
    parser.add_argument("--chunk-kib", type=int, default=CHUNK_BYTES // 1024)
    args = parser.parse_args()
    data = os.urandom(args.mb * 1_000_000)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        seconds, sha, fetched = trio.run(transfer, root, data, args.chunk_kib * 1024)
        assert fetched.read_bytes() == data
        read_locally(fetched, False)  # warm the page cache like the source's copy
        local = min(read_locally(fetched, False) for _ in range(3))
        local_hashed = min(read_locally(fetched, True) for _ in range(3))
    mb = len(data) / 1e6
    print(
        json.dumps(
            {
                "blob_mb": round(mb, 1),
                "chunk_kib": args.chunk_kib,
                "transfer_seconds": round(seconds, 3),
                "transfer_mb_per_s": round(mb / seconds, 1),
                "local_read_mb_per_s": round(mb / local, 1),
                "local_read_and_sha256_mb_per_s": round(mb / local_hashed, 1),
                "transfer_to_local_read_ratio": round(seconds / local, 1),
                "transfer_to_local_read_and_sha256_ratio": round(seconds / local_hashed, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
