"""Content-addressed blobs: the store on disk, and chunked, resumable fetching
between real nodes over loopback TCP in one trio run."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import pytest
import trio
from rawpeer import join_as

from peerfarm.runtime.addresses import parse_address
from peerfarm.runtime.blobs import BlobError, BlobStore, fetch_blob
from peerfarm.runtime.node import Node, NodeConfig
from peerfarm.security.identity import new_identity
from peerfarm.wire.messages import MAX_BLOB_CHUNK_BYTES, MessageError, message, parse_message

MB = 1_000_000
CHUNK = 256 * 1024


def sha_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stored_files(store: BlobStore) -> list[Path]:
    """Complete blobs only (not partial/ or tmp/)."""
    return sorted(p for p in store.root.glob("??/*") if p.is_file())


# -- the store ------------------------------------------------------------------------


def test_put_bytes_dedups_and_leaves_no_temp_files(tmp_path):
    store = BlobStore(tmp_path / "blobs")
    data = os.urandom(3000)
    sha = store.put_bytes(data)
    assert sha == sha_of(data) and store.has(sha) and store.size(sha) == 3000
    before = store.path(sha).stat()
    assert store.put_bytes(data) == sha
    source = tmp_path / "scene.pov"
    source.write_bytes(data)
    assert store.put_file(source) == sha
    assert stored_files(store) == [store.path(sha)]
    after = store.path(sha).stat()
    assert after.st_ino == before.st_ino  # not written again ...
    assert after.st_mtime_ns >= before.st_mtime_ns  # ... only renewed (retention keeps it)
    assert list((store.root / "tmp").iterdir()) == []
    assert store.read_range(sha, 1000, 500) == data[1000:1500]
    assert store.read_range(sha, 2900, 500) == data[2900:]  # short at the end


def test_put_file_streams_big_files_and_names_unreadable_ones(tmp_path):
    store = BlobStore(tmp_path / "blobs")
    data = os.urandom(3 * 1024 * 1024 + 7)  # several copy blocks
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    sha = store.put_file(source)
    assert sha == sha_of(data) and store.path(sha).read_bytes() == data
    with pytest.raises(BlobError, match="missing.pov"):
        store.put_file(tmp_path / "missing.pov")
    assert list((store.root / "tmp").iterdir()) == []


def test_a_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    store = BlobStore(tmp_path / "blobs")
    data = b"scene" * 100

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError):
        store.put_bytes(data)
    monkeypatch.undo()
    assert not store.has(sha_of(data)) and stored_files(store) == []
    assert list((store.root / "tmp").iterdir()) == []


@pytest.mark.parametrize(
    "bad",
    [
        "../" + "a" * 61,
        "A" * 64,
        "a" * 63,
        "a" * 65,
        "a" * 64 + "\n",
        "/" + "a" * 63,
        "g" * 64,
        "",
        None,
        b"a" * 64,
    ],
)
def test_a_bad_sha_never_becomes_a_path(tmp_path, bad):
    store = BlobStore(tmp_path / "blobs")
    for call in (store.path, store.has, store.partial_path, store.partial_size):
        with pytest.raises(BlobError, match="not a blob id"):
            call(bad)
    with pytest.raises(BlobError):
        store.append_partial(bad, 0, b"x")
    with pytest.raises(BlobError):
        store.read_range(bad, 0, 1)
    assert not (tmp_path / "blobs").exists() or not any((tmp_path / "blobs").rglob("*"))


def test_partial_finishes_only_with_the_right_hash(tmp_path):
    store = BlobStore(tmp_path / "blobs")
    data = os.urandom(10_000)
    sha = sha_of(data)
    assert store.partial_size(sha) == 0
    assert store.append_partial(sha, 0, data[:4000]) == 4000
    with pytest.raises(BlobError, match="offset 3000"):
        store.append_partial(sha, 3000, data[3000:5000])  # overlaps
    with pytest.raises(BlobError, match="offset 5000"):
        store.append_partial(sha, 5000, data[5000:])  # leaves a hole
    assert store.partial_size(sha) == 4000
    store.append_partial(sha, 4000, data[4000:])
    assert store.finish_partial(sha)
    assert store.path(sha).read_bytes() == data and store.partial_size(sha) == 0

    other = sha_of(b"something else")
    store.append_partial(other, 0, b"not what was asked for")
    assert not store.finish_partial(other)
    assert not store.has(other) and not store.partial_path(other).exists()

    empty = sha_of(b"")
    assert store.finish_partial(empty) and store.path(empty).read_bytes() == b""


def test_read_range_refuses_ranges_outside_the_blob(tmp_path):
    store = BlobStore(tmp_path / "blobs")
    sha = store.put_bytes(b"0123456789")
    for offset in (10, 11, -1):
        with pytest.raises(BlobError):
            store.read_range(sha, offset, 4)
    with pytest.raises(BlobError, match="not in"):
        store.read_range(sha_of(b"absent"), 0, 4)


def test_blob_messages_are_bounded():
    sha = "ab" * 32
    ok = parse_message(message("GET_BLOB", sha=sha, offset=0, length=MAX_BLOB_CHUNK_BYTES))
    assert ok["length"] == MAX_BLOB_CHUNK_BYTES
    bad = [
        message("GET_BLOB", sha=sha, offset=0, length=MAX_BLOB_CHUNK_BYTES + 1),
        message("GET_BLOB", sha=sha, offset=0, length=0),
        message("GET_BLOB", sha="../" + sha[3:], offset=0, length=1),
        message("GET_BLOB", sha=sha.upper(), offset=0, length=1),
        message("BLOB", sha=sha, offset=-1, data=b""),
        message("BLOB", sha=sha, offset=0, data=b"x" * (MAX_BLOB_CHUNK_BYTES + 1)),
        message("BLOB_MISSING", sha=sha[:-1], offset=0, reason=""),
    ]
    for msg in bad:
        with pytest.raises(MessageError):
            parse_message(msg)


# -- transfer between real nodes -----------------------------------------------------------


def make_node(tmp_path: Path, name: str, *bootstraps: str) -> Node:
    config = NodeConfig(
        listen=("127.0.0.1", 0),
        data_dir=tmp_path / name,
        name=name,
        slots=0,
        renders=False,
        zeroconf=False,
        bootstraps=[parse_address(b) for b in bootstraps],
    )
    return Node(config)


async def start(nursery: trio.Nursery, tmp_path: Path, name: str, *via: Node) -> Node:
    node = make_node(tmp_path, name, *(n.address for n in via))
    await nursery.start(node.run)
    with trio.fail_after(10):
        while any(node.link_to(n.node_id) is None for n in via):
            await node.wait_for_change(0.05)
    return node


def count_served(node: Node) -> list[tuple[int, int]]:
    """Record (offset, bytes) of every piece the node reads to serve a GET_BLOB."""
    served: list[tuple[int, int]] = []
    read_range = node.blobs.read_range

    def counting(sha: str, offset: int, length: int) -> bytes:
        data = read_range(sha, offset, length)
        served.append((offset, len(data)))
        return data

    node.blobs.read_range = counting  # type: ignore[method-assign]
    return served


def stop_all(*nodes: Node) -> None:
    for node in nodes:
        node.request_stop()


def test_a_blob_spreads_to_every_node_from_any_holder(tmp_path):
    data = os.urandom(20 * MB)
    sha = sha_of(data)

    async def main():
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                a = await start(nursery, tmp_path, "a")
                b = await start(nursery, tmp_path, "b", a)
                c = await start(nursery, tmp_path, "c", a)
                d = await start(nursery, tmp_path, "d", b)  # D is linked to B, not to A
                from_a = count_served(a)
                from_b = count_served(b)
                assert await trio.to_thread.run_sync(a.blobs.put_bytes, data) == sha
                async with trio.open_nursery() as fetches:
                    fetches.start_soon(fetch_blob, b, sha, len(data), [a.node_id])
                    # Two fetches of one sha on one node: the second waits and finds it.
                    fetches.start_soon(fetch_blob, c, sha, len(data), [a.node_id])
                    fetches.start_soon(fetch_blob, c, sha, len(data), [a.node_id])
                await fetch_blob(d, sha, len(data), [a.node_id, b.node_id])
                stop_all(a, b, c, d)
        return a, b, c, d, from_a, from_b

    a, b, c, d, from_a, from_b = trio.run(main)
    for node in (b, c, d):
        assert sha_of(node.blobs.path(sha).read_bytes()) == sha
        assert node.blobs.partial_size(sha) == 0
    assert sum(n for _, n in from_a) == 2 * len(data)  # once for B, once for C
    assert sum(n for _, n in from_b) == len(data)  # D took it from B


def test_a_cut_link_resumes_from_the_partial_size(tmp_path, caplog):
    data = os.urandom(4 * MB)
    sha = sha_of(data)
    cut_after = 5

    async def main():
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                a = await start(nursery, tmp_path, "a")
                b = await start(nursery, tmp_path, "b", a)
                served = count_served(a)
                await trio.to_thread.run_sync(a.blobs.put_bytes, data)
                held: list[int] = []
                cut_at: list[int] = []

                def progress(have: int, size: int) -> None:
                    held.append(have)
                    if len(held) == cut_after:
                        cut_at.append(have)
                        nursery.start_soon(b.link_to(a.node_id).close)

                await fetch_blob(
                    b, sha, len(data), [a.node_id], chunk_bytes=CHUNK, progress=progress
                )
                stop_all(a, b)
        return b, served, held, cut_at

    with caplog.at_level(logging.WARNING):
        b, served, held, cut_at = trio.run(main)
    assert "did not answer" in caplog.text  # the cut really interrupted the fetch
    assert b.blobs.path(sha).read_bytes() == data
    assert cut_at == [cut_after * CHUNK]
    assert held == sorted(held) and held[-1] == len(data)  # never went back to zero
    resent = sum(n for _, n in served) - len(data)
    assert 0 <= resent <= CHUNK
    offsets = [o for o, _ in served]
    assert offsets.count(0) == 1  # the first piece was never asked for again


def test_a_silent_source_times_out_and_the_next_one_finishes(tmp_path):
    data = os.urandom(1 * MB)
    sha = sha_of(data)

    async def main():
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                a = await start(nursery, tmp_path, "a")
                b = await start(nursery, tmp_path, "b", a)
                await trio.to_thread.run_sync(a.blobs.put_bytes, data)
                # A peer that links up and then never answers anything.
                mute_identity = new_identity()
                mute = await join_as(b.address, identity=mute_identity, name="mute")
                stream, silent_id = mute.stream, mute_identity.node_id
                while b.link_to(silent_id) is None:
                    await b.wait_for_change(0.05)
                nursery.start_soon(drain, stream)
                started = trio.current_time()
                await fetch_blob(b, sha, len(data), [silent_id, a.node_id], timeout=0.3)
                elapsed = trio.current_time() - started
                stop_all(a, b)
                await stream.aclose()
        return b, elapsed

    b, elapsed = trio.run(main)
    assert b.blobs.path(sha).read_bytes() == data
    assert 0.3 <= elapsed < 5


async def drain(stream: trio.SocketStream) -> None:
    try:
        while await stream.receive_some(65536):
            pass
    except trio.ClosedResourceError:
        pass


def test_identical_content_is_neither_fetched_nor_stored_again(tmp_path):
    data = os.urandom(2 * MB)
    sha = sha_of(data)

    async def main():
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                a = await start(nursery, tmp_path, "a")
                b = await start(nursery, tmp_path, "b", a)
                served = count_served(a)
                await trio.to_thread.run_sync(a.blobs.put_bytes, data)
                await fetch_blob(b, sha, len(data), [a.node_id])
                first = len(served)
                before = b.blobs.path(sha).stat()
                # The same content again, by fetch and by put: nothing moves, nothing is written.
                await fetch_blob(b, sha, len(data), [a.node_id])
                assert await trio.to_thread.run_sync(b.blobs.put_bytes, data) == sha
                after = b.blobs.path(sha).stat()
                stop_all(a, b)
        return b, served, first, before, after

    b, served, first, before, after = trio.run(main)
    assert first > 0 and len(served) == first
    assert after.st_ino == before.st_ino  # not written again ...
    assert after.st_mtime_ns >= before.st_mtime_ns  # ... only renewed (retention keeps it)
    assert stored_files(b.blobs) == [b.blobs.path(sha)]


def test_a_source_with_corrupt_data_is_caught(tmp_path, caplog):
    data = os.urandom(1 * MB)
    sha = sha_of(data)

    async def main():
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                a = await start(nursery, tmp_path, "a")  # its copy rots on disk
                c = await start(nursery, tmp_path, "c")  # holds a good copy
                b = await start(nursery, tmp_path, "b", a, c)
                for node in (a, c):
                    await trio.to_thread.run_sync(node.blobs.put_bytes, data)
                rotten = bytearray(data)
                rotten[len(data) // 2] ^= 0x01
                a.blobs.path(sha).write_bytes(bytes(rotten))
                with pytest.raises(BlobError) as only_bad:
                    await fetch_blob(b, sha, len(data), [a.node_id], chunk_bytes=CHUNK)
                partial_after_failure = b.blobs.partial_size(sha)
                await fetch_blob(b, sha, len(data), [a.node_id, c.node_id], chunk_bytes=CHUNK)
                stop_all(a, b, c)
        return b, str(only_bad.value), partial_after_failure

    with caplog.at_level(logging.WARNING):
        b, error, partial_after_failure = trio.run(main)
    assert "does not match" in error and sha[:12] in error and "peer a (" in error
    assert partial_after_failure == 0
    assert b.blobs.path(sha).read_bytes() == data
    assert "does not match the blob's SHA-256" in caplog.text


def test_no_source_gives_a_clear_error(tmp_path):
    sha = sha_of(b"nobody has this")

    async def main():
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                a = await start(nursery, tmp_path, "a")
                b = await start(nursery, tmp_path, "b", a)
                with pytest.raises(BlobError) as missing:
                    await fetch_blob(b, sha, 15, [a.node_id])
                stop_all(a, b)
        return str(missing.value)

    error = trio.run(main)
    assert sha[:12] in error and "peer a (" in error and "cannot serve it" in error


def test_get_blob_from_a_raw_connection(tmp_path):
    data = b"scene data " * 1000

    async def main():
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                a = await start(nursery, tmp_path, "a")
                sha = await trio.to_thread.run_sync(a.blobs.put_bytes, data)
                client = await join_as(a.address, role="client", name="cli")
                for offset, length in ((100, 50), (len(data), 1), (0, 10)):
                    await client.send(message("GET_BLOB", sha=sha, offset=offset, length=length))
                absent = sha_of(b"absent")
                await client.send(message("GET_BLOB", sha=absent, offset=0, length=1))
                replies = [await client.receive() for _ in range(4)]
                await client.close()
                stop_all(a)
        return sha, replies

    sha, (piece, past_end, first, absent) = trio.run(main)
    assert piece == message("BLOB", sha=sha, offset=100, data=data[100:150])
    assert past_end["type"] == "BLOB_MISSING" and past_end["offset"] == len(data)
    assert first["type"] == "BLOB" and first["data"] == data[:10]
    assert absent["type"] == "BLOB_MISSING" and "not in" in absent["reason"]
