"""Hardening: no action, peer or disk can crash a node, split the farm or write outside
its folders. Each case was reproduced on real processes before its fix."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio
from factories import Member, demo_spec, joined_payload, new_job_payload
from farmtools import (
    farm_running,
    job_of,
    logs,
    peerfarm_cli,
    start_farm,
    start_node,
    status,
    submit,
    wait_for_rendering_mesh,
    wait_until,
)
from rawpeer import join_as, on_feed, tls_connect

from peerfarm.cli.demo import Farm
from peerfarm.core import actions as act
from peerfarm.core.actions import MAX_FIRST_LAMPORT, MAX_LAMPORT_STEP
from peerfarm.core.log import ActionLog
from peerfarm.runtime import store
from peerfarm.runtime.client import ClientError, NodeClient
from peerfarm.runtime.node import Node, NodeConfig
from peerfarm.security.farm_key import new_key, resolve_key
from peerfarm.security.identity import load_or_create_identity, new_identity
from peerfarm.wire.messages import message


def make_node(tmp_path: Path, name: str = "n1", **kw) -> Node:
    kw.setdefault("zeroconf", False)
    return Node(NodeConfig(listen=("127.0.0.1", 0), data_dir=tmp_path / name, name=name, **kw))


def test_no_action_can_stop_a_node(tmp_path):
    """A member's actions with extreme values (a Lamport time near the limit that made
    every node's next action invalid, for good; names that climb out of the data folder;
    a format that is a shell script) are refused where they enter, and the node goes on
    rendering with its own actions, also after a restart from its log."""
    spec = demo_spec(tmp_path / "out", frames=(1, 4), chunk=2)

    async def first_life():
        node = make_node(tmp_path, slots=1)
        async with trio.open_nursery() as nursery:
            address = await nursery.start(node.run)
            member = new_identity()
            link = await join_as(address, identity=member)
            await link.receive()  # VV
            peer = member.node_id

            def action(seq, type_, payload, lamport):
                return {
                    "type": type_,
                    "payload": payload,
                    "origin": peer,
                    "seq": seq,
                    "lamport": lamport,
                }

            poison = [
                # The one that bricked the farm: over the schema's bound now.
                action(1, act.SET_PRIORITY, {"job_id": "nojob", "priority": 1}, 2**62),
                # Within the bound, but the origin's first action may not start that high.
                action(1, act.SET_PRIORITY, {"job_id": "nojob", "priority": 1}, 2**53 - 1),
                action(1, act.NEW_JOB, {**new_job_payload("up"), "name": "../../up"}, 5),
                action(1, act.NEW_JOB, {**new_job_payload("sh"), "format": "sh"}, 5),
                action(1, act.NEW_JOB, {**new_job_payload("con"), "name": "con"}, 5),
            ]
            fine = action(1, act.PEER_JOINED, joined_payload("member"), MAX_FIRST_LAMPORT)
            # Its next action may not jump its clock by more than MAX_LAMPORT_STEP.
            jump = action(2, act.SET_PRIORITY, {"job_id": "x", "priority": 1}, 2**52)
            signed = [a for p in poison for a in on_feed(member, [p])]
            signed += on_feed(member, [fine, jump])
            await link.send(message("ACTIONS", actions=signed))
            with trio.fail_after(5):
                while peer not in node.state.peers:
                    await node.wait_for_change(0.1)
            job_id = await node.submit(spec)
            with trio.fail_after(60):
                while not node.output_progress(job_id)["complete"]:
                    await node.wait_for_change(0.2)
            lamports = [a.lamport for a in node.actions() if a.origin == node.node_id]
            peers_seqs = [a.seq for a in node.actions() if a.origin == peer]
            node.request_stop()
        return node.state.jobs, lamports, peers_seqs

    jobs, lamports, peer_seqs = trio.run(first_life)
    assert not {"up", "sh", "con"} & set(jobs)
    assert peer_seqs == [1]  # the jump was refused, and with it the rest of its stream
    assert lamports == sorted(lamports) and max(lamports) <= MAX_FIRST_LAMPORT + MAX_LAMPORT_STEP
    assert not list(tmp_path.rglob("up_*"))  # nothing written outside the data folder

    async def second_life():  # the log holds what was accepted: the node starts again
        node = make_node(tmp_path, slots=1)
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            job_id = await node.submit(spec.replace(output=str(tmp_path / "again")))
            with trio.fail_after(60):
                while not node.output_progress(job_id)["complete"]:
                    await node.wait_for_change(0.2)
            node.request_stop()

    trio.run(second_life)


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_strangers_cannot_make_a_node_hold_their_messages(tmp_path):
    """Before the farm-key proof a connection may make the node hold a few KiB, not the
    64 MiB a member's frame may need: 8 connections without the key, each streaming a
    60 MB message, took a node from ~70 MB to 546 MB resident."""
    farm, _, bootstrap, nodes = start_farm(tmp_path, nodes=1)
    with farm_running(farm, tmp_path):
        pid = farm.procs[1].pid
        before = _peak_rss_kib(pid)
        sent = []

        async def stream_one() -> None:
            stream, _ = await tls_connect(nodes[0])
            header = b"\xc6" + (60 * 1024 * 1024).to_bytes(4, "big")  # bin32 of 60 MB
            total = 0
            try:
                await stream.send_all(header)
                piece = b"x" * (256 * 1024)
                with trio.move_on_after(10):
                    while total < 60 * 1024 * 1024:
                        await stream.send_all(piece)
                        total += len(piece)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            sent.append(total)

        async def flood() -> None:
            async with trio.open_nursery() as nursery:
                for _ in range(8):
                    nursery.start_soon(stream_one)

        trio.run(flood)
        grown_mib = (_peak_rss_kib(pid) - before) / 1024
        assert status(nodes[0])["name"] == "node-1"  # still serving
    assert max(sent) < 16 * 1024 * 1024, sent  # cut off long before 60 MB
    assert grown_mib < 40, f"peak resident memory grew by {grown_mib:.0f} MiB"


def test_a_flood_from_many_addresses_leaves_the_farm_its_way_in(tmp_path):
    """Idle connections from 20 source addresses held every handshake slot: `peerfarm
    status` from this machine failed for the whole flood. Slots are now reserved for
    this machine's own clients and the farm's known members."""
    key = new_key()

    async def main():
        node = make_node(tmp_path, slots=0, farm_key=key)
        async with trio.open_nursery() as nursery:
            address = await nursery.start(node.run)
            host, port = address.rsplit(":", 1)
            idle = []
            for i in range(20):
                for _ in range(16):
                    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    await sock.bind((f"127.0.0.{i + 2}", 0))
                    try:
                        await sock.connect((host, int(port)))
                    except OSError:
                        sock.close()
                        continue
                    idle.append(sock)
            await trio.sleep(0.5)
            held = node.mesh.pending_handshakes()
            started = time.monotonic()
            async with NodeClient(address, key) as client:
                st = await client.status()
            took = time.monotonic() - started
            for sock in idle:
                sock.close()
            node.request_stop()
        return held, st, took

    held, st, took = trio.run(main)
    assert held >= 96  # the flood took every slot it may take
    assert st["node_id"]  # and this machine's own client still got in
    assert took < 5


def test_a_corrupt_node_json_is_one_clear_line(tmp_path):
    data = tmp_path / "node"
    data.mkdir()
    (data / "node.json").write_text("{garbage")
    proc = subprocess.run(
        [sys.executable, "-m", "peerfarm", "node", "--data-dir", str(data), "--no-zeroconf"]
        + ["--listen", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert errors == [next(line for line in errors if "node.json" in line)], (
        proc.stderr
    )  # one line, no traceback
    assert "Traceback" not in proc.stderr
    assert "fix it, or remove it" in errors[0]


def test_a_second_node_on_the_same_data_folder_is_refused(tmp_path):
    """Two nodes on one data folder (the app and a `peerfarm node` of one user, on two
    ports) started both: one identity signing in two processes (the farm excludes such
    a member as an equivocator), one log file written by two, and the second killed
    the first's renderers as "left running by an earlier run". The second is refused
    before it reads or writes anything; once the first has stopped, it starts."""
    farm, _, _, (address,) = start_farm(tmp_path, nodes=1)
    data = tmp_path / "node-1"
    node = [sys.executable, "-m", "peerfarm", "node", "--data-dir", str(data)]
    node += ["--listen", "127.0.0.1:0", "--no-zeroconf", "--no-config"]
    with farm_running(farm, tmp_path):
        second = subprocess.run(node, capture_output=True, text=True, timeout=60)
        assert second.returncode == 1, second.stderr
        assert second.stderr.strip().splitlines() == [
            f"peerfarm: error: another peerfarm node (process {farm.procs[-1].pid}) is "
            f"running with the data folder {data.resolve()}; stop it, or give this one a "
            "folder of its own with --data-dir"
        ]
        assert "left running by an earlier run" not in (tmp_path / "node-1.log").read_text()
        assert status(address)["name"] == "node-1"  # the first goes on
        farm.stop()
    started = subprocess.Popen(node, stderr=subprocess.PIPE, text=True)
    try:
        assert started.stderr is not None
        assert "listening on" in next(line for line in started.stderr if "listening" in line)
    finally:
        started.terminate()
        started.wait(timeout=60)


@pytest.fixture
def small_disk(tmp_path):
    """A 48 MiB file system of its own (tmpfs), for a node whose disk fills up."""
    where = tmp_path / "disk"
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(where)], capture_output=True
    )
    if mounted.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"cannot mount a tmpfs: {mounted.stderr.decode()}")
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(disk: Path, leave: int) -> Path:
    """Take all but ``leave`` bytes of the disk's free space."""
    filler = disk / f"filler-{time.monotonic_ns()}"
    free = shutil.disk_usage(disk).free
    with open(filler, "wb") as f:
        if free > leave:
            os.posix_fallocate(f.fileno(), 0, free - leave)
    return filler


@pytest.mark.skipif(not hasattr(os, "posix_fallocate"), reason="fills a disk with fallocate")
def test_a_full_disk_stops_claiming_and_the_node_goes_on_when_there_is_room(tmp_path, small_disk):
    """ENOSPC while appending to log.bin ended the process with a raw exception group,
    and a renderer's failure said nothing. Now the node stops claiming and says why,
    keeps serving, and renders again once there is room."""
    farm = Farm(tmp_path)
    with farm_running(farm, tmp_path):
        _, bootstrap = farm.start_bootstrap(tmp_path / "b")
        _, node = farm.start_node(
            "node-1", bootstrap, small_disk / "node-1", 1, "--min-free-space", "16M"
        )
        wait_until("the node is up", lambda: status(node)["worker"] is not None, 30)
        filler = _fill(small_disk, 8 * 2**20)  # below the node's 16M
        problem = wait_until(
            "the node to see its disk nearly full",
            lambda: status(node)["worker"]["disk_problem"],
            30,
        )
        assert "MiB free" in problem and "--min-free-space" in problem
        job_id = submit(node, demo_spec(tmp_path / "out", frames=(1, 12), chunk=1))
        time.sleep(2)
        st = status(node)
        assert job_of(st, job_id)["frames_done"] == 0 and not st["worker"]["rendering"]
        # Completely full: the log file cannot grow either. The node stays up.
        full = _fill(small_disk, 0)
        control = submit(node, demo_spec(tmp_path / "out2", frames=(1, 2), chunk=1))
        time.sleep(2)
        assert status(node)["worker"]["disk_problem"]
        full.unlink()
        filler.unlink()
        wait_until(
            "the node to take chunks again", lambda: not status(node)["worker"]["disk_problem"], 30
        )
        for job in (job_id, control):
            wait_until(
                f"job {job} to complete",
                lambda job=job: job_of(status(node), job).get("complete"),
                120,
            )
        assert farm.procs[1].poll() is None  # never died
    assert "Traceback" not in (tmp_path / "node-1.log").read_text()


@pytest.mark.skipif(not hasattr(os, "posix_fallocate"), reason="fills a disk with fallocate")
def test_a_full_output_disk_is_said_while_submit_waits_and_nothing_is_lost(tmp_path, small_disk):
    """The node's data on one disk, the job's output folder on another that is full:
    `submit --wait` showed "0 in output, done" and waited without a word, and `status`
    called the job done. Now both say the output disk is full and what to do; once
    there is room the frames come in by themselves and the wait ends."""
    farm = Farm(tmp_path)
    out = small_disk / "out"
    with farm_running(farm, tmp_path):
        _, bootstrap = farm.start_bootstrap(tmp_path / "b")
        _, node = farm.start_node("node-1", bootstrap, tmp_path / "node-1", 2)
        wait_until("the node is up", lambda: status(node)["worker"] is not None, 30)
        out.mkdir()
        filler = _fill(small_disk, 0)
        waiting = tmp_path / "submit.out"
        with open(waiting, "w") as printed:
            submitting = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "peerfarm",
                    "submit",
                    "builtin:demo",
                    "--node",
                    node,
                    "--frames",
                    "1-6",
                    "--chunk",
                    "1",
                    "--size",
                    "64x48",
                    "--output",
                    str(out),
                    "--wait",
                ],
                stdout=printed,
                stderr=subprocess.STDOUT,
                text=True,
            )
        try:
            wait_until(
                "submit --wait to say why it waits",
                lambda: "waiting: cannot write to the output folder" in waiting.read_text(),
                60,
            )
            assert "No space left on device" in waiting.read_text()
            assert "free some space there" in waiting.read_text()
            assert submitting.poll() is None  # it goes on waiting
            job_id = waiting.read_text().splitlines()[0]

            def rendered() -> dict:
                job = job_of(status(node), job_id)
                return job if job["state"] == "done" else {}

            job = wait_until("every frame rendered", rendered, 60)
            assert not job["complete"]
            assert "No space left on device" in job["output_waiting"]
            said = peerfarm_cli("status", "--node", node)
            assert "No space left on device" in said.stdout, said.stdout + said.stderr
            filler.unlink()
            assert submitting.wait(timeout=120) == 0, waiting.read_text()
        finally:
            if submitting.poll() is None:
                submitting.kill()
        assert "done: 6 frames" in waiting.read_text()
        assert sorted(p.name for p in out.glob("*.png")) == [
            f"demo_{f:04d}.png" for f in range(1, 7)
        ]
        assert job_of(status(node), job_id)["output_waiting"] == ""
        assert farm.procs[1].poll() is None  # never died
    assert "Traceback" not in (tmp_path / "node-1.log").read_text()


@pytest.mark.skipif(sys.platform == "win32", reason="sets a POSIX open-files limit")
def test_the_gif_of_a_job_longer_than_the_open_files_limit(tmp_path):
    """The GIF step opened every frame at once: 1,100 frames on a submitter with the
    common limit of 1,024 open files never completed. It is written one frame at a
    time now (a preview of at most GIF_MAX_FRAMES)."""
    script = f"""
import resource
from pathlib import Path
from PIL import Image
from peerfarm.core.state import Job
from peerfarm.runtime.outputs import GIF_MAX_FRAMES, _write_gif, output_gif_path

resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
out = Path({str(tmp_path)!r})
job = Job(id="j", name="long", renderer="builtin", renderer_version="", scene="", files=(),
          main="", options=(), frame_start=1, frame_end=1100, chunk_size=10, padding=4,
          width=16, height=12, output=str(out), priority=0, submitter="x", submitted_lamport=1)
for f in range(1, 1101):
    Image.new("RGB", (16, 12), (f % 256, 0, 0)).save(out / job.frame_file_name(f))
_write_gif(job)
with Image.open(output_gif_path(job)) as gif:
    print(gif.n_frames, GIF_MAX_FRAMES)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    shown, most = proc.stdout.split()
    assert shown == most  # 1,100 frames shown as an evenly spread preview


def test_the_gif_of_a_long_job_of_identical_frames(tmp_path):
    """Pillow merges identical GIF frames and adds up their times: 20,000 identical
    frames at 24 fps made one frame of 833 s, past the 16-bit delay, and the error
    stopped the submitting node. The GIF's whole time is bounded now."""
    from PIL import Image

    from peerfarm.core.state import Job
    from peerfarm.runtime.outputs import (
        GIF_MAX_TOTAL_MS,
        _write_gif,
        gif_frames,
        output_gif_path,
    )

    job = Job(id="j", name="still", renderer="builtin", renderer_version="", scene="",
              files=(), main="", options=(), frame_start=1, frame_end=20_000, chunk_size=1,
              padding=5, width=4, height=4, output=str(tmp_path), priority=0,
              submitter="x", submitted_lamport=1)  # fmt: skip
    for frame in gif_frames(job):  # (the frames the GIF shows)
        Image.new("RGB", (4, 4), (9, 9, 9)).save(tmp_path / job.frame_file_name(frame))
    _write_gif(job)
    with Image.open(output_gif_path(job)) as gif:
        assert gif.info["duration"] <= GIF_MAX_TOTAL_MS


def test_a_node_whose_log_lost_actions_comes_back_as_a_new_incarnation(tmp_path):
    """A corrupt record in the middle of log.bin is cut off with all after it, the
    node's own actions among them. It must never emit those seqs again (the farm would
    split for good): it comes back under a new id, and the farm converges."""
    farm, _, bootstrap, nodes = start_farm(tmp_path, nodes=2)
    with farm_running(farm, tmp_path):
        wait_for_rendering_mesh(nodes)
        job_id = submit(nodes[0], demo_spec(tmp_path / "out", frames=(1, 16), chunk=1))
        wait_until(
            "node-2 to render some frames",
            lambda: (
                any(p["renders"] for p in status(nodes[1])["peers"])
                and job_of(status(nodes[0]), job_id).get("frames_done", 0) >= 4
            ),
            60,
        )
        old_id = status(nodes[1])["node_id"]
        farm.procs[2].kill()
        farm.procs[2].wait()
        log_file = tmp_path / "node-2" / "log.bin"
        data = bytearray(log_file.read_bytes())
        middle = len(data) // 2
        data[middle : middle + 16] = b"\xff" * 16  # a record in the middle goes bad
        log_file.write_bytes(bytes(data))
        _, address = start_node(farm, tmp_path, 2, bootstrap)
        new_id = status(address)["node_id"]
        assert new_id != old_id
        wait_until(
            "the job to complete", lambda: job_of(status(nodes[0]), job_id).get("complete"), 120
        )
        wait_until(
            "every node to hold the same state",
            lambda: len({status(a)["state_digest"] for a in (nodes[0], address, bootstrap)}) == 1,
            30,
        )
        retired = [p for p in status(nodes[0])["peers"] if p["id"] == old_id]
        assert retired and retired[0]["state"] == "down"
    text = (tmp_path / "node-2.log").read_text()
    assert f"joins as a new node {new_id[:12]}" in text and old_id[:12] in text


def test_a_member_cannot_forge_nor_split_the_farm(tmp_path):
    """Issue cases 2 and 4 on real processes. A member (it holds the farm key) sends
    (a) a NEW_JOB and a PEER_LEFT in another node's name: refused, nothing changes;
    (b) two different signed versions of its own action #2, one to each node (that split
    the farm for good before): both nodes prove it faulty, drop both versions and end
    with the same digest."""
    farm, _, _, nodes = start_farm(tmp_path, nodes=2)
    with farm_running(farm, tmp_path):
        wait_for_rendering_mesh(nodes)
        victim = status(nodes[1])["node_id"]
        member = new_identity()

        def action(seq, type_, payload, lamport, origin=member.node_id):
            return {
                "type": type_,
                "payload": payload,
                "origin": origin,
                "seq": seq,
                "lamport": lamport,
            }

        joined = action(1, act.PEER_JOINED, joined_payload("member"), 1)
        forged = on_feed(
            member,
            [
                action(1, act.NEW_JOB, new_job_payload("forged"), 50, origin=victim),
                action(1, act.PEER_LEFT, {}, 51, origin=victim),
            ],
        )
        one = on_feed(member, [joined, action(2, act.NEW_JOB, new_job_payload("one"), 60)])
        two = on_feed(member, [joined, action(2, act.NEW_JOB, new_job_payload("two"), 60)])

        async def send_all():
            key = resolve_key(None)  # the farm's (tests/conftest.py)
            first = await join_as(nodes[0], identity=member, farm_key=key, name="member")
            second = await join_as(nodes[1], identity=member, farm_key=key, name="member")
            for link in (first, second):
                await link.receive()  # VV
            await first.send(message("ACTIONS", actions=forged))
            await first.send(message("ACTIONS", actions=one))
            await second.send(message("ACTIONS", actions=two))
            await trio.sleep(0.5)
            for link in (first, second):
                await link.close()

        trio.run(send_all)

        def settled():
            views = [status(n) for n in nodes]
            states = [{p["id"]: p["state"] for p in v["peers"]}.get(member.node_id) for v in views]
            digests = {v["state_digest"] for v in views}
            return views if states == ["faulty", "faulty"] and len(digests) == 1 else None

        views = wait_until("both nodes to prove the member faulty", settled, 30)
        for view in views:
            assert {j["id"] for j in view["jobs"]} == set()  # forged, one and two: none
            assert {p["id"]: p["state"] for p in view["peers"]}.get(victim, "up") == "up"
        text = logs(tmp_path)
        assert "not on their origin's signed feed" in text
        assert "signed two different actions as #2" in text


def test_a_log_from_before_signed_feeds_is_set_aside(tmp_path, caplog):
    """A log.bin written by protocol 2 (actions without ``prev``) cannot be shown to
    protocol 3 nodes: it is kept beside as log.protocol2.bin, the node starts a new
    history and says what to do."""
    data = tmp_path / "n1"
    data.mkdir()
    old = {
        "type": act.NEW_JOB,
        "payload": new_job_payload("old"),
        "origin": "ab" * 16,
        "seq": 1,
        "lamport": 1,
    }
    store.LogFile(data / "log.bin").append([old])

    async def main():
        node = make_node(tmp_path, slots=0)
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            jobs = dict(node.state.jobs)
            node.request_stop()
        return jobs

    with caplog.at_level(logging.WARNING):
        jobs = trio.run(main)
    assert jobs == {}
    assert (data / "log.protocol2.bin").exists()
    assert "protocol 2, before signed feeds" in caplog.text
    assert "must be submitted again" in caplog.text


def test_a_node_proven_faulty_comes_back_under_a_new_id(tmp_path, caplog):
    """A copied data folder: another machine signed a different action with this node's
    key, and the farm proved it (an EQUIVOCATION in the log). On its next start the node
    sets that id aside and joins as a new node; its jobs stay its own."""
    data = tmp_path / "n1"
    data.mkdir()
    me = Member(load_or_create_identity(data))
    mine = me.emit((act.PEER_JOINED, joined_payload("n1")))
    (ours,) = me.emit((act.SET_PRIORITY, {"job_id": "j", "priority": 1}))
    copy = ours._replace(payload={"job_id": "j", "priority": 2}, sig=b"")
    copy = copy._replace(sig=me.identity.sign(copy.hash))
    witness = ActionLog(authenticate=True)
    witness.add_all([*mine, ours, copy])
    (proof,) = witness.forks
    other = Member(new_identity())
    (equivocation,) = other.emit((act.EQUIVOCATION, proof))
    store.LogFile(data / "log.bin").append([a.to_wire() for a in (*mine, ours, equivocation)])

    async def main():
        node = make_node(tmp_path, slots=0)
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            st = node.status()
            node.request_stop()
        return st

    with caplog.at_level(logging.WARNING):
        st = trio.run(main)
    assert st["node_id"] != me.id and not st["faulty"]
    assert "another machine ran with this node's identity" in caplog.text
    assert me.id in json.loads((data / "node.json").read_text())["former_ids"]
    assert list(data.glob(f"node.key.retired-{me.id[:12]}"))


def _this_machine_on_the_lan() -> str | None:
    """An address of this machine that is not loopback (None if it has none)."""
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
    except OSError:
        infos = []
    hosts = [info[4][0] for info in infos] + ["192.0.2.2"]
    for host in hosts:
        if host.startswith("127."):
            continue
        try:
            with socket.socket() as probe:
                probe.bind((host, 0))
        except OSError:
            continue
        return host
    return None


def test_a_remote_member_writes_outputs_only_where_the_node_allows(tmp_path):
    """Output folders are a user's choice on their own machine. A job submitted from
    another machine (a member holding the key) gets its output only inside the node's
    remote-outputs folder: elsewhere is refused with the folder to use; a relative
    folder is taken inside it."""
    host = _this_machine_on_the_lan()
    if host is None:
        pytest.skip("this machine has no address but loopback")
    key = new_key()
    outside = tmp_path / "elsewhere"

    async def main():
        node = Node(
            NodeConfig(
                listen=(host, 0),
                data_dir=tmp_path / "n1",
                name="n1",
                zeroconf=False,
                farm_key=key,
                slots=1,
            )
        )
        async with trio.open_nursery() as nursery:
            address = await nursery.start(node.run)
            async with NodeClient(address, key) as client:
                with pytest.raises(ClientError) as refused:
                    await client.submit(demo_spec(outside))
                job_id = await client.submit(demo_spec("shots"))
            with trio.fail_after(60):
                while not node.output_progress(job_id)["complete"]:
                    await node.wait_for_change(0.2)
            output = node.state.jobs[job_id].output
            node.request_stop()
        return str(refused.value), output, node.remote_outputs

    why, output, root = trio.run(main)
    assert f"only inside {root}" in why
    assert not outside.exists()
    assert output == str(root / "shots") and list((root / "shots").glob("*.png"))


@pytest.mark.skipif(sys.platform == "win32", reason="sets a POSIX file-size limit")
def test_a_gif_that_cannot_be_written_leaves_no_part_of_it(tmp_path):
    """On a full disk the GIF's save failed part way, and demo.gif.tmp (556 KiB) stayed
    in the output folder beside the frames. A write that fails part way (here a file-size
    limit the GIF passes) raises to the caller, which reports it, and no part stays."""
    script = f"""
import os, random, resource, signal
from pathlib import Path
from PIL import Image
from peerfarm.core.state import Job
from peerfarm.runtime.outputs import _write_gif, output_gif_path

out = Path({str(tmp_path)!r})
job = Job(id="j", name="cut", renderer="builtin", renderer_version="", scene="", files=(),
          main="", options=(), frame_start=1, frame_end=10, chunk_size=1, padding=4,
          width=64, height=64, output=str(out), priority=0, submitter="x", submitted_lamport=1)
rng = random.Random(1)
for f in range(1, 11):
    Image.frombytes("RGB", (64, 64), rng.randbytes(64 * 64 * 3)).save(out / job.frame_file_name(f))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))
try:
    _write_gif(job)
except OSError as exc:
    print("failed", exc.errno)
print(sorted(p.suffix for p in out.iterdir()))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    failed, left = proc.stdout.splitlines()
    assert failed == f"failed {errno.EFBIG}"
    assert left == str([".png"] * 10)
