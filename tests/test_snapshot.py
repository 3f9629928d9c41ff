"""Snapshots: the folded prefix of the log, plus the tail, gives exactly the full fold."""

from __future__ import annotations

import random

import msgpack
import pytest
from factories import A, B, Member, joined_payload, new_job_payload
from hypothesis import given, settings
from hypothesis import strategies as st
from test_feeds import ALICE, BOB, joined, new_job, wire
from test_log import reference_digest, simulate

from peerfarm.core import digest
from peerfarm.core import log as log_module
from peerfarm.core import snapshot as snap
from peerfarm.core.digest import state_digest
from peerfarm.core.log import ActionLog


@pytest.fixture(autouse=True)
def small_checkpoints(monkeypatch):
    monkeypatch.setattr(log_module, "CHECKPOINT_EVERY", 4)


def _through_bytes(log: ActionLog) -> ActionLog:
    return snap.log_from_snapshot(snap.decode(snap.encode(snap.snapshot_of(log))))


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32), steps=st.integers(5, 120), cut=st.floats(0, 1))
def test_snapshot_and_tail_fold_to_the_full_digest(seed, steps, cut):
    history = simulate(seed, steps)
    full = ActionLog()
    full.add_all(history)
    count = int(len(full) * cut)
    if count:
        full.compact(count)
    assert full.digest() == reference_digest(history)
    # Through bytes: a node that loads the snapshot and gets the tail.
    loaded = _through_bytes(full)
    assert loaded.base_state == full.base_state  # the very records: tuples, maps
    assert state_digest(loaded.base_state) == state_digest(full.base_state)
    loaded.add_all(full.actions())
    assert loaded.digest() == reference_digest(history)
    assert loaded.version_vector() == full.version_vector()
    assert len(loaded) == len(history) - count


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32), steps=st.integers(5, 120), order_seed=st.integers(0, 2**32))
def test_a_compacted_log_takes_late_duplicate_and_new_actions(seed, steps, order_seed):
    """Compact at the prefix a partial log holds, then deliver everything (duplicates,
    any order): the digest is the full fold's as long as nothing sorts before the base."""
    history = simulate(seed, steps)
    rng = random.Random(order_seed)
    full = ActionLog()
    full.add_all(history)
    log = ActionLog()
    log.add_all(history[: len(history) // 2])
    # What both hold, in the same order: the stable prefix (the min of the two vectors).
    ours, theirs = log.version_vector(), full.version_vector()
    stable = {o: min(n, theirs.get(o, 0)) for o, n in ours.items()}
    count = min(log.foldable(stable), full.foldable(stable))
    if count:
        log.compact(count)
    rest = list(history)
    rng.shuffle(rest)
    log.add_all(rest)
    if log.behind_base == 0:
        assert log.digest() == reference_digest(history)
    assert log.version_vector() == full.version_vector()
    assert log.missing_for(full.version_vector()) == []
    assert full.missing_for(log.version_vector()) == []


def test_compaction_changes_neither_state_nor_vector_nor_what_comes_next():
    history = simulate(7, 200)
    log = ActionLog()
    log.add_all(history)
    digest, vv = log.digest(), log.version_vector()
    nxt = log.create(A, "PEER_LEFT", {})
    log.compact(log.foldable(vv))
    assert log.digest() == digest
    assert log.version_vector() == vv
    assert log.create(A, "PEER_LEFT", {}) == nxt
    assert log.base_count > 0
    assert not log.needs_base(vv)
    assert log.needs_base({})
    # A peer with nothing cannot get the base from the log: only the tail.
    assert len(log.missing_for({})) == len(log)


def test_compact_refuses_a_cut_beyond_the_log():
    log = ActionLog()
    log.add_all(simulate(3, 60))
    with pytest.raises(ValueError):
        log.compact(0)
    with pytest.raises(ValueError):
        log.compact(len(log) + 4)


def test_snapshot_bytes_are_deterministic_and_damage_is_refused():
    history = simulate(11, 150)
    one, two = ActionLog(), ActionLog()
    one.add_all(history)
    two.add_all(reversed(history))
    vv = one.version_vector()
    one.compact(one.foldable(vv))
    two.compact(two.foldable(vv))
    data = snap.encode(snap.snapshot_of(one))
    assert data == snap.encode(snap.snapshot_of(two))
    with pytest.raises(snap.SnapshotError):
        snap.decode(b"\x00garbage")
    tampered = snap.decode(data)
    state = tampered["state"]
    tampered["state"] = state[:-1] + bytes([state[-1] ^ 1])
    with pytest.raises(snap.SnapshotError, match="digest"):
        snap.log_from_snapshot(tampered)


def test_an_action_sorting_before_the_base_is_folded_after_it():
    """A member's action that reached no one before it went down for long sorts before
    what the others compacted since: it is taken (the origin's chain goes on) and folded
    right after the base."""
    log = ActionLog()
    log.add(log.create(A, "PEER_JOINED", joined_payload("a")))
    for _ in range(7):
        log.add(
            log.create(A, "NODE_SPEED", {"renderer": "builtin", "frame_ms": 5, "startup_ms": 1})
        )
    late = ActionLog().create(B, "PEER_JOINED", joined_payload("b"))  # knew nothing
    log.compact(log.foldable(log.version_vector()))
    log.add(late)
    assert log.behind_base == 1
    assert log.version_vector()[B] == 1
    assert B in log.state.peers


def test_signed_feeds_go_on_after_a_snapshot():
    """A node that starts from a snapshot checks the origins' later signatures with the
    keys of their compacted first actions, and refuses what does not chain on."""
    alice, bob = Member(ALICE), Member(BOB)
    farm = ActionLog(authenticate=True)
    farm.add_all(wire(alice.emit(joined("a"), new_job("j1"), new_job("j2"))))
    farm.add_all(wire(bob.emit(joined("b"))))
    alice.log.add_all(wire(bob.log.actions()))
    farm.compact(4)
    joiner = snap.log_from_snapshot(
        snap.decode(snap.encode(snap.snapshot_of(farm))), authenticate=True
    )
    assert joiner.digest() == farm.digest()
    later = wire(alice.emit(new_job("j3")))
    assert joiner.add_all(later) == later
    assert "j3" in joiner.state.jobs and joiner.unauthentic == 0
    forged = later[0]._replace(seq=5, prev=later[0].hash, payload=new_job_payload("j4"))
    forged = forged._replace(sig=BOB.sign(forged.hash))  # Bob signs in Alice's name
    assert joiner.add_all([forged]) == []
    assert joiner.unauthentic == 1


def test_the_digest_encodes_many_jobs_as_one_encoding_of_the_whole_state():
    """The digest is built from each job's cached encoding: the bytes must be those of
    encoding the whole state at once (msgpack array headers of every size)."""
    log = ActionLog()
    log.add(log.create(A, "PEER_JOINED", joined_payload("a")))
    for i in range(20):
        log.add(log.create(A, "NEW_JOB", new_job_payload(f"job{i:02d}", (1, 40), 1)))
        for chunk in range(0, 40, 3):
            claim = log.create(A, "CLAIM_CHUNK", {"job_id": f"job{i:02d}", "chunk": chunk})
            log.add(claim)
            payload = {"job_id": f"job{i:02d}", "chunk": chunk, "claim_seq": claim.seq}
            log.add(log.create(A, "DONE", {**payload, "frame_ms": [100 + chunk]}))
        assert digest.encoding(log.state) == msgpack.packb(
            digest.canonical(log.state), use_bin_type=True
        )
    # Frame times learned per scene (core/costs.py) go through a snapshot too.
    assert log.state.scenes
    assert snap.state_from_bytes(snap.state_bytes(log.state)) == log.state
