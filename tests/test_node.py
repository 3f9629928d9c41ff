"""The node runtime in one process, over real TCP on loopback."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import sys
from pathlib import Path

import trio
from factories import demo_spec, new_job_payload
from PIL import Image
from rawpeer import (
    hello,
    identity_sorting_before,
    join_as,
    on_feed,
    read_messages,
    send,
    tcp_connect,
    tls_connect,
)

from peerfarm.job_request import JobRequest
from peerfarm.renderers.base import Renderer
from peerfarm.runtime.addresses import parse_address
from peerfarm.runtime.client import NodeClient
from peerfarm.runtime.node import Node, NodeConfig
from peerfarm.security.identity import new_identity
from peerfarm.wire.messages import PROTOCOL_VERSION, message


def make_node(tmp_path, name="n1", **kw) -> Node:
    kw.setdefault("zeroconf", False)
    return Node(NodeConfig(listen=("127.0.0.1", 0), data_dir=tmp_path / name, name=name, **kw))


def test_restart_keeps_identity_and_state(tmp_path):
    spec = demo_spec(tmp_path / "out")

    async def first_life():
        node = make_node(tmp_path, slots=0)  # no rendering: the job stays queued
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            job_id = await node.submit(spec)
            await node.wait_for_change(0.2)
            node.request_stop()
        return node.node_id, job_id, node.digest, len(node.actions())

    async def second_life():
        node = make_node(tmp_path, slots=0)
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            result = node.node_id, node.state.jobs, node.digest, len(node.actions())
            node.request_stop()
        return result

    node_id, job_id, digest, length = trio.run(first_life)
    node_id2, jobs, digest2, length2 = trio.run(second_life)
    assert node_id2 == node_id
    assert job_id in jobs and jobs[job_id].frames_total == 6
    assert (digest2, length2) == (digest, length)


def test_protocol_version_mismatch_is_refused_clearly(tmp_path, caplog):
    async def main():
        node = make_node(tmp_path, slots=0)
        async with trio.open_nursery() as nursery:
            address = await nursery.start(node.run)
            stream, _ = await tls_connect(address)
            ident = new_identity()
            await send(
                stream,
                hello(
                    ident,
                    name="future",
                    protocol=99,
                    cert=ident.cert_der,
                    nonce=b"n" * 32,
                    key_id="none",
                ),
            )
            (reply,) = await read_messages(stream, 1)
            node.request_stop()
        return reply

    with caplog.at_level(logging.WARNING):
        reply = trio.run(main)
    assert reply["type"] == "ERROR" and reply["code"] == "protocol_version"
    assert f"speaks peerfarm protocol {PROTOCOL_VERSION}" in reply["message"]
    assert "99" in reply["message"]
    assert "protocol version mismatch" in caplog.text


def test_garbage_and_invalid_actions_leave_the_node_unharmed(tmp_path, caplog):
    async def main():
        node = make_node(tmp_path, slots=0)
        async with trio.open_nursery() as nursery:
            address = await nursery.start(node.run)
            before = node.digest
            # 1. raw garbage instead of TLS: told (in plaintext) that TLS is required
            s = await tcp_connect(address)
            await s.send_all(b"\xc1GET / HTTP/1.1\r\n\r\n" * 100)
            (told,) = await read_messages(s, 1)
            # 2. garbage inside TLS instead of a HELLO, and an oversized string length
            s, _ = await tls_connect(address)
            await s.send_all(b"\xc1GET / HTTP/1.1\r\n\r\n" * 100)
            assert await read_messages(s, 1) == []  # closed
            s, _ = await tls_connect(address)
            await s.send_all(b"\xdb\xff\xff\xff\xff")
            # 3. a greeted peer sending invalid actions next to a valid one
            ident = new_identity()
            link = await join_as(address, identity=ident)
            peer = ident.node_id
            await link.receive()  # VV
            good = {
                "type": "NEW_JOB",
                "payload": new_job_payload("ok1"),
                "origin": peer,
                "seq": 1,
                "lamport": 1,
            }
            bad = [
                {**good, "seq": 2, "payload": {**new_job_payload("x"), "width": -1}},
                {**good, "origin": "NOT-HEX"},
                "just a string",
            ]
            (good,) = on_feed(ident, [good])
            await link.send(message("ACTIONS", actions=[*bad, good]))
            with trio.fail_after(5):
                while "ok1" not in node.state.jobs:
                    await node.wait_for_change(0.1)
            # 4. the node still answers clients
            async with NodeClient(address) as client:
                st = await client.status()
            node.request_stop()
        return before, st, told

    with caplog.at_level(logging.WARNING):
        before, st, told = trio.run(main)
    assert told["code"] == "tls_required" and "TLS" in told["message"]
    assert [j["id"] for j in st["jobs"]] == ["ok1"]
    assert "dropped an invalid action" in caplog.text
    assert "width" in caplog.text


def test_loser_of_a_claim_race_stops_and_takes_other_work(tmp_path, caplog):
    """A concurrent claim that sorts before ours arrives while we render: our
    renderer is stopped and the worker claims another chunk."""
    spec = demo_spec(tmp_path / "out", frames=(1, 40), chunk=10, size=(320, 240))

    async def main():
        node = make_node(tmp_path, slots=1)
        async with trio.open_nursery() as nursery:
            address = await nursery.start(node.run)
            job_id = await node.submit(spec)

            def rendering() -> list[tuple[str, int]]:
                return [(r["job_id"], r["chunk"]) for r in node.status()["worker"]["rendering"]]

            with trio.fail_after(10):
                while not rendering():
                    await node.wait_for_change(0.05)
            job, chunk = rendering()[0]
            ours = next(
                a
                for a in node.actions()
                if a.origin == node.node_id
                and a.type == "CLAIM_CHUNK"
                and a.payload == {"job_id": job, "chunk": chunk}
            )
            # A peer whose id sorts before ours wins a claim made at the same Lamport time.
            rival_identity = identity_sorting_before(node.node_id)
            rival = rival_identity.node_id
            link = await join_as(address, identity=rival_identity, name="rival")
            await link.receive()  # VV
            claim = {
                "type": "CLAIM_CHUNK",
                "payload": {"job_id": job_id, "chunk": chunk},
                "origin": rival,
                "seq": 1,
                "lamport": ours.lamport,
            }
            await link.send(message("ACTIONS", actions=on_feed(rival_identity, [claim])))
            with trio.fail_after(10):
                while (job, chunk) in rendering() or not rendering():
                    await node.wait_for_change(0.05)
            other = rendering()[0]
            winner = node.state.jobs[job_id].chunk(chunk).claim_origin
            node.request_stop()
        return chunk, other, winner, rival

    with caplog.at_level(logging.INFO):
        chunk, other, winner, rival = trio.run(main)
    assert winner == rival
    assert other[1] != chunk
    assert f"claim lost to {rival[:8]}" in caplog.text


class CopyRenderer(Renderer):
    """A test plugin whose 'renderer' copies the package's main file (a PNG) to every
    frame: enough to prove scene files reach the worker through the blob store."""

    name = "copy"

    def probe(self):
        return "1.0"

    def check_job(self, spec):
        return (1, 3)

    def prepare(self, job, work_dir):
        pass

    def chunk_command(self, job, frames, work_dir, output_pattern):
        script = (
            "import json, os, shutil, sys\n"
            "src, pattern, a, b = sys.argv[1:]\n"
            "open(f'env-{a}.json', 'w').write(json.dumps({'cwd': os.getcwd(), **os.environ}))\n"
            "for f in range(int(a), int(b) + 1):\n"
            "    shutil.copyfile(src, pattern.format(frame=f)); print('FRAME', f, flush=True)\n"
        )
        return [
            sys.executable,
            "-c",
            script,
            str(work_dir / job.main),
            output_pattern,
            str(frames.start),
            str(frames.stop - 1),
        ]

    def frame_finished(self, line):
        return line.startswith("FRAME ")


def test_scene_files_travel_as_blobs_to_the_worker(tmp_path):
    png = io.BytesIO()
    Image.new("RGB", (8, 6), (200, 30, 30)).save(png, format="PNG")
    files = {"shots/main.png": png.getvalue(), "textures/wood.txt": b"x" * 100_000}
    spec = JobRequest(
        renderer="copy",
        files=files,
        main="shots/main.png",
        name="copy",
        frames=(1, 3),
        chunk_size=1,
        output=str(tmp_path / "out"),
    )

    async def main():
        submitter = make_node(tmp_path, "submitter", slots=0)
        worker = make_node(tmp_path, "worker", slots=1)
        for node in (submitter, worker):
            node.plugins["copy"] = CopyRenderer()
        async with trio.open_nursery() as nursery:
            address = await nursery.start(submitter.run)
            worker.config.bootstraps = [parse_address(address)]
            await nursery.start(worker.run)
            with trio.fail_after(15):
                while "copy" not in {
                    n for p in submitter.state.peers.values() for n, _ in p.renderers
                }:
                    await submitter.wait_for_change(0.1)
            job_id = await submitter.submit(spec)
            with trio.fail_after(30):
                while not submitter.output_progress(job_id)["complete"]:
                    await submitter.wait_for_change(0.1)
            work = worker.data_dir.work_dir(job_id)
            env = json.loads((work / "env-1.json").read_text())
            got = {
                p.relative_to(work).as_posix(): p.read_bytes()
                for p in work.rglob("*")
                if p.is_file() and not p.name.startswith("env-")
            }
            submitter.request_stop()
            worker.request_stop()
        return got, env, work

    got, env, work = trio.run(main)
    assert got == files  # every scene file, byte for byte, in the worker's job folder
    # The renderer ran in the job's folder with a cleaned environment.
    assert Path(env.pop("cwd")) == work
    assert "PEERFARM_FARM_KEY_FILE" not in env and os.environ["PEERFARM_FARM_KEY_FILE"]
    assert env["HOME"] == env["TMPDIR"] == str(work / ".home")
    assert set(env) <= {
        "PATH",
        "LD_LIBRARY_PATH",
        "LANG",
        "LC_ALL",
        "LC_CTYPE",
        "TZ",
        "HOME",
        "USERPROFILE",
        "TMPDIR",
        "TMP",
        "TEMP",
        "PYTHONUTF8",
        "PYTHONIOENCODING",
        "PYTHONSAFEPATH",  # the job folder's files are never imported
        "PYTHONNOUSERSITE",
    }, env
    out = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert out == ["copy_0001.png", "copy_0002.png", "copy_0003.png"]


def test_resubmitting_with_one_changed_file_moves_only_that_file(tmp_path):
    png = io.BytesIO()
    Image.new("RGB", (8, 6), (30, 200, 30)).save(png, format="PNG")
    big = os.urandom(20 * 1024 * 1024)  # a 20 MB texture
    files = {"main.png": png.getvalue(), "textures/big.bin": big, "notes.txt": b"v1"}
    changed = {**files, "notes.txt": b"version two"}
    big_sha = hashlib.sha256(big).hexdigest()

    def spec(files, out):
        return JobRequest(
            renderer="copy",
            files=files,
            main="main.png",
            name="copy",
            frames=(1, 3),
            chunk_size=1,
            output=str(tmp_path / out),
        )

    async def main():
        submitter = make_node(tmp_path, "submitter", slots=0)
        workers = [make_node(tmp_path, f"w{i}", slots=1) for i in range(3)]
        received: dict[str, int] = {}  # worker -> scene bytes it fetched
        for node in (submitter, *workers):
            node.plugins["copy"] = CopyRenderer()
        for w in workers:
            append = w.blobs.append_partial

            def counting(sha, offset, data, append=append, name=w.name):
                received[name] = received.get(name, 0) + len(data)
                return append(sha, offset, data)

            w.blobs.append_partial = counting
        async with trio.open_nursery() as nursery:
            address = await nursery.start(submitter.run)
            for w in workers:
                w.config.bootstraps = [parse_address(address)]
                await nursery.start(w.run)

            async def render(files, out) -> dict[str, int]:
                received.clear()
                job_id = await submitter.submit(spec(files, out))
                with trio.fail_after(60):
                    while not submitter.output_progress(job_id)["complete"]:
                        await submitter.wait_for_change(0.1)
                return dict(received)

            with trio.fail_after(15):
                while sum(1 for p in submitter.state.peers.values() if p.renderers) < 4:
                    await submitter.wait_for_change(0.1)
            first = await render(files, "out1")
            had_scene = {w.name for w in workers if w.blobs.has(big_sha)}
            second = await render(changed, "out2")
            for node in (submitter, *workers):
                node.request_stop()
        return first, had_scene, second

    first, had_scene, second = trio.run(main)
    assert sum(first.values()) >= len(big) and had_scene  # the scene went out at least once
    # Second job: a node that had the first scene fetches only the changed file, whether
    # it renders, loses a claim race or copies a run (the scheduler decides); a node new
    # to the scene fetches all of it.
    unchanged = len(big) + len(files["main.png"])
    for name, got in second.items():
        limit = len(b"version two") + (0 if name in had_scene else unchanged)
        assert got <= limit, (name, got, had_scene)
    assert sum(second.values()) >= len(b"version two")
