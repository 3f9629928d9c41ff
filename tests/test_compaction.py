"""Log compaction on real nodes (trio, TCP on loopback, files on disk): the snapshot and
the tail survive a restart, a crash between the two writes loses nothing, and a node that
joins after the history was compacted gets the snapshot and the tail."""

from __future__ import annotations

import pytest
import trio
from factories import Member, demo_spec
from test_feeds import ALICE, joined, new_job, wire

from peerfarm.core import snapshot
from peerfarm.core.log import ActionLog
from peerfarm.runtime import store
from peerfarm.runtime.addresses import parse_address
from peerfarm.runtime.node import Node, NodeConfig


def make_node(tmp_path, name, **kw) -> Node:
    kw.setdefault("zeroconf", False)
    return Node(NodeConfig(listen=("127.0.0.1", 0), data_dir=tmp_path / name, name=name, **kw))


async def wait_for(what: str, check, timeout: float = 30.0) -> None:
    with trio.fail_after(timeout):
        while not check():
            await trio.sleep(0.05)


def test_a_compacted_log_restarts_and_a_late_joiner_gets_the_snapshot(tmp_path):
    spec = demo_spec(tmp_path / "out", frames=(1, 40), chunk=1)

    async def first_life():
        # A node that does not render: the job's 40 chunks stay queued, and every
        # submit adds actions (NEW_JOB) until the log is long enough to compact.
        node = make_node(tmp_path, "a", slots=0, compact_after=4)
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            for _ in range(6):
                await node.submit(spec)
            await wait_for("compaction", lambda: node.machine.log.base_count >= 4, 20)
            # A little later (the flusher writes the snapshot after the batch before it).
            await wait_for("snapshot file", lambda: node.data_dir.snapshot_file.exists(), 10)
            node.request_stop()
        # After the stop (its PEER_LEFT is in the log too).
        return node.digest, node.machine.log.version_vector(), node.machine.log.base_count

    digest, vv, compacted = trio.run(first_life)
    data_dir = tmp_path / "a"
    on_disk = snapshot.decode((data_dir / "snapshot.bin").read_bytes())
    assert on_disk["count"] >= 4
    tail = store.LogFile(data_dir / "log.bin").load()
    counts = {origin: n for origin, n, _, _ in on_disk["origins"]}
    assert all(r["seq"] > counts.get(r["origin"], 0) for r in tail)  # the tail only

    async def second_life():
        node = make_node(tmp_path, "a", slots=0, compact_after=4)
        async with trio.open_nursery() as nursery:
            address = await nursery.start(node.run)
            assert node.digest == digest
            assert node.machine.log.version_vector() == vv
            # A new node, with an empty log, joins after the history was compacted.
            joiner = make_node(
                tmp_path, "b", slots=0, compact_after=0, bootstraps=[parse_address(address)]
            )
            await nursery.start(joiner.run)
            await wait_for("the joiner's digest", lambda: joiner.digest == node.digest, 30)
            got = joiner.machine.log.base_count
            joiner.request_stop()
            node.request_stop()
        return got

    assert trio.run(second_life) >= compacted


@pytest.mark.parametrize("crash", [True, False])
def test_a_crash_between_the_snapshot_and_the_log_rewrite_loses_nothing(tmp_path, crash):
    """Compaction writes the snapshot, then rewrites the log file as the tail. A power
    cut in between leaves the new snapshot beside the old, whole log file: the node
    loads both (the actions already in the snapshot are duplicates) to the same state."""
    alice = Member(ALICE)
    actions = wire(alice.emit(joined("alice"), *(new_job(f"j{i}") for i in range(9))))
    full = ActionLog(authenticate=True)
    full.add_all(actions)
    data_dir = tmp_path / "a"
    data_dir.mkdir()
    logfile = store.LogFile(data_dir / "log.bin")
    logfile.append([a.to_wire() for a in actions])
    full.compact(6)
    data = snapshot.encode(snapshot.snapshot_of(full))
    tail = [a.to_wire() for a in full.actions()]
    snapshot_file = store.SnapshotFile(data_dir / "snapshot.bin")
    if crash:

        def power_cut(self, records):
            raise RuntimeError("power cut")

        with pytest.MonkeyPatch.context() as patched:
            patched.setattr(store.LogFile, "rewrite", power_cut)
            with pytest.raises(RuntimeError):
                store.compact(snapshot_file, logfile, data, tail)
        assert len(logfile.load()) == len(actions)  # the old log file, whole
    else:
        store.compact(snapshot_file, logfile, data, tail)
        assert len(logfile.load()) == len(actions) - 6  # the tail only

    async def start():
        node = make_node(tmp_path, "a", slots=0)
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            result = node.digest, node.machine.log.version_vector(), node.machine.log.base_count
            node.request_stop()
        return result

    assert trio.run(start) == (full.digest(), full.version_vector(), 6)
