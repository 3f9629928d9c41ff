"""Per-job requirements and limits (core/requirements.py): tags, memory and cores on
PEER_JOINED, require / require_memory / max_nodes on NEW_JOB, checked, folded, and
obeyed by the scheduler, its backups and the reducers."""

from __future__ import annotations

import pytest
from factories import A, B, C, joined_payload, new_job_payload

from peerfarm.core.actions import InvalidAction, validate_action
from peerfarm.core.log import ActionLog
from peerfarm.core.refused import Refused
from peerfarm.core.requirements import (
    holders,
    parse_max_nodes,
    parse_memory,
    parse_tags,
    why_waiting,
)
from peerfarm.core.scheduler import Measured, pick_backup, pick_run, run_length

D = "d" * 16
GIB = 2**30


def node(log: ActionLog, node_id: str, tags=(), memory: int = 8 * GIB, cores: int = 4) -> None:
    payload = {**joined_payload(node_id[:1]), "tags": list(tags), "memory": memory, "cores": cores}
    assert log.add(log.create(node_id, "PEER_JOINED", payload))


def job(log: ActionLog, frames: int = 40, **extra) -> None:
    payload = {**new_job_payload(frames=(1, frames), chunk=1), "adaptive": True, **extra}
    assert log.add(log.create(A, "NEW_JOB", payload))


def emit(log: ActionLog, origin: str, type_: str, payload: dict):  # noqa: ANN201
    action = log.create(origin, type_, payload)
    assert log.add(action)
    return action


def claim(log: ActionLog, origin: str, chunk: int, count: int = 1):  # noqa: ANN201
    return emit(log, origin, "CLAIM_CHUNK", {"job_id": "job1", "chunk": chunk, "count": count})


def speed(log: ActionLog, origin: str, frame_ms: int = 1000) -> None:
    payload = {"renderer": "builtin", "frame_ms": frame_ms, "startup_ms": 0}
    emit(log, origin, "NODE_SPEED", payload)


def _wire(type_: str, payload: dict) -> dict:
    return {"type": type_, "payload": payload, "origin": A, "seq": 1, "lamport": 1}


# -- checked as they arrive ------------------------------------------------------------


def test_peer_joined_carries_tags_memory_and_cores():
    payload = {**joined_payload("a"), "tags": ["gpu", "lab2"], "memory": 16 * GIB, "cores": 8}
    validate_action(_wire("PEER_JOINED", payload))
    validate_action(_wire("PEER_JOINED", joined_payload("a")))  # absent: unknown, no tags


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("tags", ["GPU"], "tags: [0]: expected a tag"),
        ("tags", [""], "tags: [0]: expected a tag"),
        ("tags", ["a" * 33], "tags: [0]: expected a tag"),
        ("tags", ["a b"], "tags: [0]: expected a tag"),
        ("tags", [f"t{i}" for i in range(33)], "tags: more than 32 items"),
        ("tags", "gpu", "tags: expected a list"),
        ("memory", -1, "memory: expected 0.."),
        ("memory", 2**51, "memory: expected 0.."),
        ("memory", 1.5, "memory: expected an integer"),
        ("cores", 70_000, "cores: expected 0.."),
    ],
)
def test_bad_node_fields_are_refused(field, value, why):
    payload = {**joined_payload("a"), field: value}
    with pytest.raises(InvalidAction, match=why.replace("[", r"\[").replace("]", r"\]")):
        validate_action(_wire("PEER_JOINED", payload))


def test_new_job_carries_requirements_and_limits():
    payload = {**new_job_payload(), "require": ["gpu"], "require_memory": 16 * GIB, "max_nodes": 4}
    validate_action(_wire("NEW_JOB", payload))


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("require", ["Gpu"], "require: [0]: expected a tag"),
        ("require", [f"t{i}" for i in range(17)], "require: more than 16 items"),
        ("require_memory", 0, "require_memory: expected 1.."),
        ("require_memory", "16G", "require_memory: expected an integer"),
        ("max_nodes", 0, "max_nodes: expected 1.."),
        ("max_nodes", 100_001, "max_nodes: expected 1.."),
    ],
)
def test_bad_job_requirements_are_refused(field, value, why):
    payload = {**new_job_payload(), field: value}
    with pytest.raises(InvalidAction, match=why.replace("[", r"\[").replace("]", r"\]")):
        validate_action(_wire("NEW_JOB", payload))


def test_what_users_type_is_parsed_or_refused_with_what_to_type():
    assert parse_tags(["GPU", "lab2", "gpu"]) == ("gpu", "lab2")
    assert parse_memory("16G") == 16 * GIB
    assert parse_memory("512M") == 512 * 2**20
    assert parse_memory("1.5G") == int(1.5 * GIB)
    assert parse_memory("4096") == 4096
    assert parse_max_nodes("4") == 4
    with pytest.raises(Refused, match="tag 'gp u'.*e.g. gpu"):
        parse_tags(["gp u"])
    with pytest.raises(Refused, match="at most 16"):
        parse_tags([f"t{i}" for i in range(17)], job=True)
    with pytest.raises(Refused, match="memory '16Q'.*such as 16G"):
        parse_memory("16Q")
    with pytest.raises(Refused, match="memory '0'.*from 1 byte"):
        parse_memory("0")
    for bad in ("0", "-2", "four", "1.5"):
        with pytest.raises(Refused, match="give a whole number from 1"):
            parse_max_nodes(bad)


# -- folded ----------------------------------------------------------------------------


def test_the_state_keeps_what_nodes_advertise_and_jobs_require():
    log = ActionLog()
    node(log, B, tags=["lab2", "gpu", "gpu"], memory=16 * GIB, cores=12)
    job(log, require=["gpu"], require_memory=8 * GIB, max_nodes=2)
    peer = log.state.peers[B]
    assert (peer.tags, peer.memory, peer.cores) == (("gpu", "lab2"), 16 * GIB, 12)
    j = log.state.jobs["job1"]
    assert (j.require, j.require_memory, j.max_nodes) == (("gpu",), 8 * GIB, 2)


def test_old_actions_without_the_fields_require_nothing():
    log = ActionLog()
    log.add(log.create(B, "PEER_JOINED", joined_payload("b")))
    job(log)
    peer, j = log.state.peers[B], log.state.jobs["job1"]
    assert (peer.tags, peer.memory, peer.cores) == ((), 0, 0)
    assert (j.require, j.require_memory, j.max_nodes) == ((), 0, 0)
    claim(log, B, 0)
    assert log.state.jobs["job1"].chunk(0).claim_origin == B


def test_a_claim_from_a_node_without_the_tag_or_the_memory_wins_nothing():
    log = ActionLog()
    node(log, B, tags=["gpu"], memory=4 * GIB)
    node(log, C, tags=["gpu"], memory=32 * GIB)
    node(log, D, memory=64 * GIB)
    job(log, require=["gpu"], require_memory=16 * GIB)
    claim(log, B, 0)  # too little memory
    claim(log, D, 1)  # no gpu
    j = log.state.jobs["job1"]
    assert j.chunk(0).state == j.chunk(1).state == "pending"
    assert j.frame_renders == 2  # both started a render: counted, as any lost claim
    claim(log, C, 0, 2)
    assert {log.state.jobs["job1"].chunk(i).claim_origin for i in (0, 1)} == {C}


def test_a_claim_past_max_nodes_wins_nothing_but_a_holder_may_claim_more():
    log = ActionLog()
    for n in (B, C, D):
        node(log, n)
    job(log, max_nodes=2)
    claim(log, B, 0)
    claim(log, C, 1)
    claim(log, D, 2)  # a third node: the limit is 2
    claim(log, B, 3, 2)  # B holds a claim already: more is fine
    j = log.state.jobs["job1"]
    assert holders(j) == {B, C}
    assert j.chunk(2).state == "pending" and j.chunk(3).claim_origin == B
    # C finishes: D may come in.
    c = next(a for a in log.actions() if a.origin == C and a.type == "CLAIM_CHUNK")
    emit(log, C, "DONE", {"job_id": "job1", "chunk": 1, "claim_seq": c.seq})
    claim(log, D, 2)
    assert holders(log.state.jobs["job1"]) == {B, D}


def test_a_backup_counts_against_max_nodes_and_requirements():
    log = ActionLog()
    node(log, B, tags=["gpu"])
    node(log, C, tags=["gpu"])
    node(log, D)
    job(log, require=["gpu"], max_nodes=1)
    b = claim(log, B, 0, 4)
    ref = {"job_id": "job1", "chunk": 0, "claim_seq": b.seq, "count": 4}
    emit(log, D, "BACKUP_CHUNK", ref)  # no gpu
    emit(log, C, "BACKUP_CHUNK", ref)  # a second node: the limit is 1
    assert not log.state.jobs["job1"].chunk(0).backup_origin


# -- the scheduler ---------------------------------------------------------------------


def test_only_nodes_with_every_tag_and_enough_memory_pick_the_job():
    log = ActionLog()
    node(log, B, tags=["gpu", "lab2"], memory=32 * GIB)
    node(log, C, tags=["gpu"], memory=32 * GIB)
    node(log, D, tags=["gpu", "lab2"], memory=8 * GIB)
    job(log, require=["gpu", "lab2"], require_memory=16 * GIB)
    assert pick_run(log.state, B) is not None
    assert pick_run(log.state, C) is None  # lacks lab2
    assert pick_run(log.state, D) is None  # 8 GiB < 16 GiB


def test_max_nodes_stops_a_new_node_but_not_one_already_rendering():
    log = ActionLog()
    for n in (B, C, D):
        node(log, n)
    job(log, max_nodes=2)
    claim(log, B, 0, 2)
    claim(log, C, 2, 2)
    assert pick_run(log.state, D) is None
    assert pick_run(log.state, B) is not None
    # Another job without a limit is still open to D.
    payload = {**new_job_payload("job2", frames=(1, 4), chunk=1), "adaptive": True}
    emit(log, A, "NEW_JOB", payload)
    assert pick_run(log.state, D).job_id == "job2"


def test_backups_respect_tags_and_max_nodes():
    log = ActionLog()
    node(log, B, tags=["gpu"])
    node(log, C, tags=["gpu"])
    node(log, D)
    for n in (B, C, D):
        speed(log, n)
    job(log, frames=4, require=["gpu"])
    b = claim(log, B, 0, 4)
    seen = {("job1", 0, b.seq): 0.0}
    # Long past its estimate (4 s): hung. D has no gpu, C has.
    assert pick_backup(log.state, D, 100.0, seen) is None
    assert pick_backup(log.state, C, 100.0, seen).holder == B
    # With max_nodes 1 the run is not copied by anyone else.
    log2 = ActionLog()
    node(log2, B, tags=["gpu"])
    node(log2, C, tags=["gpu"])
    for n in (B, C):
        speed(log2, n)
    job(log2, frames=4, require=["gpu"], max_nodes=1)
    b = claim(log2, B, 0, 4)
    assert pick_backup(log2.state, C, 100.0, {("job1", 0, b.seq): 0.0}) is None


def test_a_runs_share_counts_only_the_nodes_that_may_take_the_job():
    def first_run(**require) -> int:
        log = ActionLog()
        node(log, B, tags=["gpu"])
        for n in (C, D, A):
            node(log, n)
        for n in (A, B, C, D):
            speed(log, n, 1000)
        job(log, frames=400, **require)
        state = log.state
        return run_length(state, state.jobs["job1"], B, state.peers[B], 400, Measured())

    # Four equal nodes: a quarter of the frames is B's share, half of it now. Only B
    # has the gpu: all of them are its share, half now.
    assert first_run() == 50
    assert first_run(require=["gpu"]) == 200
    # At most 2 nodes: half of them is B's share.
    assert first_run(max_nodes=2) == 100


def test_a_job_no_node_can_take_says_why_it_waits():
    log = ActionLog()
    node(log, B, memory=8 * GIB)
    node(log, C, tags=["gpu"], memory=4 * GIB)
    job(log, require=["gpu", "cuda"], require_memory=16 * GIB)
    assert why_waiting(log.state, log.state.jobs["job1"]) == (
        "waiting: no node has tag cuda; needs 16 GiB of memory, the largest node has 8 GiB"
    )
    log2 = ActionLog()
    node(log2, B, tags=["gpu"], memory=4 * GIB)
    node(log2, C, memory=32 * GIB)
    job(log2, require=["gpu"], require_memory=16 * GIB)
    assert why_waiting(log2.state, log2.state.jobs["job1"]) == (
        "waiting: no one node has all of: tag gpu, 16 GiB of memory"
    )
    node(log2, D, tags=["gpu"], memory=16 * GIB)  # a matching node joins
    assert why_waiting(log2.state, log2.state.jobs["job1"]) == ""


def test_the_reducers_keep_the_rendering_nodes_of_a_limited_job_as_its_chunks_say():
    import random

    from peerfarm.core.state import CLAIMED

    rng = random.Random(11)
    nodes = [B, C, D, "e" * 16]
    for _ in range(30):
        log = ActionLog()
        for n in nodes:
            node(log, n)
        job(log, frames=30, max_nodes=rng.choice((1, 2, 3)))
        for _ in range(60):
            j = log.state.jobs["job1"]
            origin = rng.choice(nodes)
            kind = rng.random()
            claimed = [(i, c) for i, c in j.chunks.items() if c.state == CLAIMED]
            if kind < 0.4 or not claimed:
                claim(log, origin, rng.randrange(30), rng.choice((1, 2, 3)))
            elif kind < 0.55:
                i, c = rng.choice(claimed)
                ref = {"job_id": "job1", "chunk": i, "claim_seq": c.claim_seq}
                emit(log, origin, "BACKUP_CHUNK", ref)
            else:
                i, c = rng.choice(claimed)
                ref = {"job_id": "job1", "chunk": i, "claim_seq": c.claim_seq}
                what = rng.choice(("DONE", "RELEASE_CHUNK", "CHUNK_FAILED", "PEER_DOWN", "LEFT"))
                if what == "CHUNK_FAILED":
                    emit(log, c.claim_origin, what, {**ref, "error": "boom"})
                elif what == "PEER_DOWN":
                    peer = log.state.peers[c.claim_origin]
                    emit(log, A, what, {"node_id": c.claim_origin, "incarnation": peer.incarnation})
                    node(log, c.claim_origin)  # it comes back
                elif what == "LEFT":
                    emit(log, c.claim_origin, "PEER_LEFT", {})
                    node(log, c.claim_origin)
                else:
                    emit(log, rng.choice((c.claim_origin, origin)), what, ref)
            j = log.state.jobs["job1"]
            assert set(j.holders) == holders(j)
            assert len(holders(j)) <= j.max_nodes
