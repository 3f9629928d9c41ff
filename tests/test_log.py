"""The ordered, replicated log: any arrival order, any duplication -> the same state."""

from __future__ import annotations

import random

import pytest
from factories import A, B, C, act, joined_payload, new_job_payload
from hypothesis import given, settings
from hypothesis import strategies as st

from peerfarm.core import log as log_module
from peerfarm.core.actions import Action
from peerfarm.core.digest import state_digest
from peerfarm.core.log import ActionLog
from peerfarm.core.reducers import reduce
from peerfarm.core.state import EMPTY_STATE

NODES = [A, B, C]


def simulate(seed: int, steps: int) -> list[Action]:
    """A causally plausible history: three nodes with their own logs, emitting and
    exchanging actions at random, so claims race and messages arrive late."""
    rng = random.Random(seed)
    logs = {n: ActionLog() for n in NODES}
    inbox: dict[str, list[Action]] = {n: [] for n in NODES}
    everything: list[Action] = []
    jobs = 0
    for _ in range(steps):
        node = rng.choice(NODES)
        nlog = logs[node]
        roll = rng.random()
        action = None
        if roll < 0.08 or not nlog.state.jobs:
            jobs += 1
            payload = new_job_payload(
                f"job{jobs}-{node[0]}", (1, rng.randint(1, 12)), rng.randint(1, 3)
            )
            action = nlog.create(node, "NEW_JOB", payload)
        elif roll < 0.45:
            job = rng.choice(list(nlog.state.jobs.values()))
            action = nlog.create(
                node, "CLAIM_CHUNK", {"job_id": job.id, "chunk": rng.randrange(job.chunk_total)}
            )
        elif roll < 0.7:
            mine = [
                (j, i, c)
                for j in nlog.state.jobs.values()
                for i, c in j.chunks.items()
                if c.state == "claimed" and c.claim_origin == node
            ]
            if mine:
                j, i, c = rng.choice(mine)
                kind = rng.choice(["DONE", "DONE", "RELEASE_CHUNK", "CHUNK_FAILED"])
                payload = {"job_id": j.id, "chunk": i, "claim_seq": c.claim_seq}
                if kind == "CHUNK_FAILED":
                    payload["error"] = "boom"
                action = nlog.create(node, kind, payload)
        elif roll < 0.73:
            job = rng.choice(list(nlog.state.jobs.values()))
            action = nlog.create(node, "CANCEL_JOB", {"job_id": job.id})
        elif roll < 0.74:
            action = nlog.create(node, "PEER_LEFT", {})
        elif roll < 0.75:
            done = [
                (j, i, c)
                for j in nlog.state.jobs.values()
                for i, c in j.chunks.items()
                if c.state == "done"
            ]
            if done:
                j, i, c = rng.choice(done)
                payload = {"job_id": j.id, "chunk": i, "holder": c.done_by}
                action = nlog.create(node, "CHUNK_LOST", payload)
        elif roll < 0.76:
            other = rng.choice([n for n in NODES if n != node])
            peer = nlog.state.peers.get(other)
            if peer is not None:
                payload = {"node_id": other, "incarnation": peer.incarnation}
                action = nlog.create(node, "PEER_DOWN", payload)
        elif roll < 0.8:
            action = nlog.create(
                node,
                "PEER_JOINED",
                joined_payload(node[:3]),
            )
        else:
            # deliver some pending messages, possibly out of order
            pending = inbox[node]
            rng.shuffle(pending)
            for _ in range(rng.randint(0, len(pending))):
                nlog.add(pending.pop())
        if action is not None:
            nlog.add(action)
            everything.append(action)
            for other in NODES:
                if other != node:
                    inbox[other].append(action)
    return everything


def reference_digest(actions: list[Action]) -> str:
    """Fold the de-duplicated set in total order with the plain reducer."""
    unique = {(a.origin, a.seq): a for a in actions}
    state = EMPTY_STATE
    for a in sorted(unique.values(), key=lambda a: a.key):
        state = reduce(state, a)
    return state_digest(state)


@pytest.fixture(autouse=True)
def small_checkpoints(monkeypatch):
    # Small checkpoint spacing so late inserts cross checkpoints in short histories.
    monkeypatch.setattr(log_module, "CHECKPOINT_EVERY", 4)
    # And few recent states: re-folds start from them, or from a checkpoint before.
    monkeypatch.setattr(log_module, "RECENT_KEPT", 3)


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32), steps=st.integers(5, 120), shuffle_seed=st.integers(0, 2**32))
def test_any_order_and_duplication_gives_identical_digest(seed, steps, shuffle_seed):
    history = simulate(seed, steps)
    rng = random.Random(shuffle_seed)
    delivered = history + rng.sample(history, k=len(history) // 3)  # duplicates
    rng.shuffle(delivered)
    log = ActionLog()
    for a in delivered:
        log.add(a)
    assert len(log) == len(history)
    assert log.held_count() == 0
    assert log.digest() == reference_digest(history)
    in_order = ActionLog()
    in_order.add_all(history)
    assert in_order.digest() == log.digest()
    assert in_order.version_vector() == log.version_vector()


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32), steps=st.integers(5, 80))
def test_anti_entropy_brings_a_peer_up_to_date(seed, steps):
    history = simulate(seed, steps)
    rng = random.Random(seed)
    full = ActionLog()
    full.add_all(history)
    partial = ActionLog()
    partial.add_all(a for a in history if rng.random() < 0.5)
    partial.add_all(full.missing_for(partial.version_vector()))
    assert partial.digest() == full.digest()
    assert full.missing_for(partial.version_vector()) == []


def test_gap_is_held_until_filled():
    log = ActionLog()
    a1 = act("NEW_JOB", new_job_payload(), A, 1, 1)
    a2 = act("CANCEL_JOB", {"job_id": "job1"}, A, 2, 2)
    assert log.add(a2) == []
    assert log.held_count() == 1 and log.version_vector() == {}
    assert log.add(a1) == [a1, a2]
    assert log.version_vector() == {A: 2}
    assert log.state.jobs["job1"].state == "cancelled"


def test_concurrent_claims_have_one_winner_everywhere():
    job = act("NEW_JOB", new_job_payload(), A, 1, 1)
    # B and C both saw only the job and claim chunk 0 at the same Lamport time.
    claim_b = act("CLAIM_CHUNK", {"job_id": "job1", "chunk": 0}, B, 1, 2)
    claim_c = act("CLAIM_CHUNK", {"job_id": "job1", "chunk": 0}, C, 1, 2)
    done_c = act("DONE", {"job_id": "job1", "chunk": 0, "claim_seq": 1}, C, 2, 3)
    for order in ([job, claim_b, claim_c], [job, claim_c, claim_b], [claim_c, job, claim_b]):
        log = ActionLog()
        log.add_all(order)
        chunk = log.state.jobs["job1"].chunk(0)
        assert (chunk.claim_origin, chunk.epoch) == (B, 1)  # (2, B, 1) < (2, C, 1)
    # The loser finished anyway before hearing of B: its DONE still counts, once.
    log = ActionLog()
    log.add_all([job, claim_c, done_c, claim_b])
    j = log.state.jobs["job1"]
    assert j.chunk(0).state == "done" and j.chunk(0).done_by == C
    assert j.frames_done == 2 and j.frame_renders == 4


def test_create_follows_everything_seen():
    log = ActionLog()
    log.add(act("NEW_JOB", new_job_payload(), A, 1, 41))
    mine = log.create(B, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 0})
    assert (mine.seq, mine.lamport) == (1, 42)


def test_the_digest_encodes_chunks_block_by_block_as_the_whole_encoding():
    """The digest re-encodes only the blocks of chunks that changed since it last ran:
    at every step it equals the SHA-256 of the whole canonical encoding."""
    import hashlib

    import msgpack

    from peerfarm.core.digest import CHUNK_BLOCK, canonical

    log = ActionLog()
    log.add(log.create(A, "PEER_JOINED", joined_payload("a")))
    frames = 3 * CHUNK_BLOCK + 7
    payload = {**new_job_payload(frames=(1, frames), chunk=1), "adaptive": True}
    log.add(log.create(A, "NEW_JOB", payload))
    rng = random.Random(5)
    for _ in range(60):
        first = rng.randrange(frames)
        count = rng.randint(1, min(600, frames - first))
        ref = {"job_id": "job1", "chunk": first, "count": count}
        claim = log.create(A, "CLAIM_CHUNK", ref)
        log.add(claim)
        kind = rng.choice(["DONE", "RELEASE_CHUNK", "CHUNK_FAILED", None])
        if kind == "CHUNK_FAILED":  # a change the chunk index has no note of: read whole
            log.add(log.create(A, kind, {**ref, "claim_seq": claim.seq, "error": "x"}))
        elif kind:
            log.add(log.create(A, kind, {**ref, "claim_seq": claim.seq}))
        if rng.random() < 0.3:
            continue  # several changes between two digests: their blocks, all of them
        whole = msgpack.packb(canonical(log.state), use_bin_type=True)
        assert log.digest() == hashlib.sha256(whole).hexdigest()


def test_the_digest_reads_again_the_blocks_a_run_touched_and_no_other_log_s_blocks():
    """Blocks the reducers' notes name are encoded again, the one a run's last chunk
    opens included; a block past the last encoded map's highest chunk is never taken
    from the cache (another log of the same job, as the simulator's nodes, filled it)."""
    import hashlib

    import msgpack

    from peerfarm.core.digest import CHUNK_BLOCK, canonical

    def new_log() -> ActionLog:
        log = ActionLog()
        log.add(log.create(A, "PEER_JOINED", joined_payload("a")))
        payload = {**new_job_payload(frames=(1, 3 * CHUNK_BLOCK), chunk=1), "adaptive": True}
        log.add(log.create(A, "NEW_JOB", payload))
        return log

    def claim_and_check(log: ActionLog, first: int, count: int) -> None:
        log.add(log.create(A, "CLAIM_CHUNK", {"job_id": "job1", "chunk": first, "count": count}))
        whole = msgpack.packb(canonical(log.state), use_bin_type=True)
        assert log.digest() == hashlib.sha256(whole).hexdigest()

    other = new_log()
    claim_and_check(other, CHUNK_BLOCK + 88, 10)  # block 1 in the cache, from this log
    log = new_log()
    claim_and_check(log, 0, 10)
    claim_and_check(log, 2 * CHUNK_BLOCK + 10, 10)  # block 1 lies below: not from the cache
    claim_and_check(log, CHUNK_BLOCK - 7, 8)  # its last chunk opens block 1
