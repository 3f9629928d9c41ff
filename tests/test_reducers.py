"""Reducers settle every conflict the same way on every node."""

from __future__ import annotations

import pytest
from factories import A, B, C, act, joined_payload, new_job_payload

from peerfarm.core.actions import InvalidAction, validate_action
from peerfarm.core.log import ActionLog
from peerfarm.core.scheduler import pick_chunk


def farm(*actions):
    log = ActionLog()
    for a in actions:
        assert log.add(a), a
    return log.state


JOB = act("NEW_JOB", new_job_payload(frames=(1, 8), chunk=2), A, 1, 1)


def claim(origin, seq, lamport, chunk=0):
    return act("CLAIM_CHUNK", {"job_id": "job1", "chunk": chunk}, origin, seq, lamport)


def ref(kind, origin, seq, lamport, claim_seq, chunk=0, **extra):
    return act(
        kind,
        {"job_id": "job1", "chunk": chunk, "claim_seq": claim_seq, **extra},
        origin,
        seq,
        lamport,
    )


def test_new_job_chunks_and_frames():
    job = farm(JOB).jobs["job1"]
    assert (job.chunk_total, job.frames_total, job.display_state) == (4, 8, "queued")
    assert list(job.frames_of(3)) == [7, 8]


def test_done_counts_once_and_finishes_the_job():
    actions = [JOB]
    for i in range(4):
        actions += [
            claim(B, 2 * i + 1, 2 * i + 2, i),
            ref("DONE", B, 2 * i + 2, 2 * i + 3, 2 * i + 1, i),
        ]
    actions.append(ref("DONE", C, 1, 20, 1, 0))  # a stray second DONE
    job = farm(*actions).jobs["job1"]
    assert (job.state, job.frames_done, job.chunks_done) == ("done", 8, 4)


def test_release_only_by_the_holder():
    state = farm(JOB, claim(B, 1, 2), ref("RELEASE_CHUNK", C, 1, 3, 1))
    assert state.jobs["job1"].chunk(0).claim_origin == B
    state = farm(JOB, claim(B, 1, 2), ref("RELEASE_CHUNK", B, 2, 3, 1))
    assert state.jobs["job1"].chunk(0).state == "pending"
    assert state.jobs["job1"].chunk(0).epoch == 1


def farm_log(*renderers: str) -> ActionLog:
    """A log where these nodes joined as renderers and A submitted job1 (8 frames, chunks of 2)."""
    log = ActionLog()
    for node in renderers:
        payload = joined_payload(node[:1])
        log.add(log.create(node, "PEER_JOINED", payload))
    log.add(log.create(A, "NEW_JOB", new_job_payload(frames=(1, 8), chunk=2)))
    return log


def fail(log: ActionLog, node: str, chunk: int, error: str) -> None:
    claim_action = log.create(node, "CLAIM_CHUNK", {"job_id": "job1", "chunk": chunk})
    log.add(claim_action)
    payload = {"job_id": "job1", "chunk": chunk, "claim_seq": claim_action.seq, "error": error}
    log.add(log.create(node, "CHUNK_FAILED", payload))


def test_a_lone_node_retries_three_times_then_the_job_fails():
    log = farm_log(B)
    for n in range(3):
        assert log.state.jobs["job1"].state == "active"
        fail(log, B, 0, f"crash {n}")
    job = log.state.jobs["job1"]
    assert job.state == "failed" and job.chunk(0).attempts == 3
    assert "frames 1-2 failed 3 times on 1 node(s): crash 2" in job.error
    assert pick_chunk(log.state, B) is None


def test_cancel_stops_claims_and_done():
    state = farm(JOB, act("CANCEL_JOB", {"job_id": "job1"}, A, 2, 2), claim(B, 1, 3))
    job = state.jobs["job1"]
    assert job.state == "cancelled" and job.chunk(0).state == "pending"
    assert pick_chunk(state, B) is None


def test_peer_left_returns_its_claims():
    joined = act("PEER_JOINED", joined_payload("b"), B, 1, 1)
    state = farm(
        JOB, joined, claim(B, 2, 2), claim(B, 3, 3, chunk=1), act("PEER_LEFT", {}, B, 4, 4)
    )
    job = state.jobs["job1"]
    assert job.chunk(0).state == job.chunk(1).state == "pending"
    assert state.peers[B].state == "left"


def test_peer_down_releases_claims_of_that_incarnation_only():
    def joined(seq, lamport):
        payload = joined_payload("b")
        return act("PEER_JOINED", payload, B, seq, lamport)

    def down(seq, lamport, incarnation):
        payload = {"node_id": B, "incarnation": incarnation}
        return act("PEER_DOWN", payload, C, seq, lamport)

    state = farm(JOB, joined(1, 1), claim(B, 2, 2), down(1, 3, 1), down(2, 4, 1))
    assert state.peers[B].state == "down"
    assert state.jobs["job1"].chunk(0).state == "pending"
    # B comes back with its own identity: a new incarnation, unaffected by the stale
    # declaration that sorts after its rejoin.
    state = farm(
        JOB,
        joined(1, 1),
        claim(B, 2, 2),
        down(1, 3, 1),
        joined(3, 5),
        claim(B, 4, 6, chunk=1),
        down(2, 7, 1),
    )
    assert state.peers[B].state == "up" and state.peers[B].incarnation == 3
    assert state.jobs["job1"].chunk(1).claim_origin == B


def test_actions_on_unknown_jobs_change_nothing():
    log = ActionLog()
    log.add(JOB)
    before = log.digest()
    log.add(act("CLAIM_CHUNK", {"job_id": "nope", "chunk": 0}, B, 1, 5))
    log.add(act("CLAIM_CHUNK", {"job_id": "job1", "chunk": 99}, B, 2, 6))
    assert log.digest() == before


def test_scheduler_spreads_nodes_over_the_range():
    peers = [act("PEER_JOINED", joined_payload(n[:1]), n, 1, 1) for n in (A, B)]
    state = farm(*peers, act("NEW_JOB", new_job_payload(frames=(1, 8), chunk=2), C, 1, 2))
    assert pick_chunk(state, A) == ("job1", 0)
    assert pick_chunk(state, B) == ("job1", 2)
    assert pick_chunk(state, A, busy={("job1", 0)}) == ("job1", 1)


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda d: d.update(type="NOPE"), "expected one of"),
        (lambda d: d.update(origin="ZZ"), "node id"),
        (lambda d: d.update(seq=0), "seq"),
        (lambda d: d.update(seq=True), "integer"),
        (lambda d: d["payload"].update(extra=1), "unexpected field"),
        (lambda d: d["payload"].pop("chunk_size"), "missing field"),
        (lambda d: d["payload"].update(frame_end=-5), "before frame_start"),
        (lambda d: d["payload"].update(width=-1), "width"),
        (lambda d: d["payload"].update(renderer="../evil"), "renderer"),
        (lambda d: d.update(payload=[1]), "payload"),
        (lambda d: d.pop("lamport"), "missing field 'lamport'"),
    ],
)
def test_invalid_actions_are_refused_with_a_reason(mutate, reason):
    data = JOB.to_wire()
    data["payload"] = dict(data["payload"])
    mutate(data)
    with pytest.raises(InvalidAction, match=reason):
        validate_action(data)


def test_valid_action_round_trips():
    assert validate_action(JOB.to_wire()) == JOB


def test_a_failing_chunk_moves_to_other_nodes_and_fails_after_three():
    log = farm_log(A, B, C)
    for node in (B, C, A):
        fail(log, node, 0, "segv")
        if node != A:
            # the node that failed it does not take chunk 0 again while others can
            others_busy = {("job1", i) for i in (1, 2, 3)}
            assert pick_chunk(log.state, node, busy=others_busy) is None
    job = log.state.jobs["job1"]
    assert job.state == "failed" and job.chunk(0).failed_on == (B, C, A)
    assert "failed 3 times on 3 node(s): segv" in job.error


def test_a_node_failing_three_chunks_of_a_job_stops_taking_it():
    log = farm_log(B, C)
    for chunk in range(3):
        fail(log, B, chunk, "x")
    assert log.state.jobs["job1"].state == "active"
    assert pick_chunk(log.state, B) is None  # blocklisted for this job
    assert pick_chunk(log.state, C) is not None


def test_lost_frames_are_rendered_again():
    log = farm_log(B, C)
    claim_action = log.create(B, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 0})
    log.add(claim_action)
    log.add(log.create(B, "DONE", {"job_id": "job1", "chunk": 0, "claim_seq": claim_action.seq}))
    assert log.state.jobs["job1"].frames_done == 2
    log.add(log.create(A, "CHUNK_LOST", {"job_id": "job1", "chunk": 0, "holder": C}))
    assert log.state.jobs["job1"].chunk(0).state == "done"  # C never held it: no effect
    log.add(log.create(A, "CHUNK_LOST", {"job_id": "job1", "chunk": 0, "holder": B}))
    job = log.state.jobs["job1"]
    assert job.chunk(0).state == "pending" and job.frames_done == 0
    assert pick_chunk(log.state, C, busy={("job1", i) for i in (1, 2, 3)}) == ("job1", 0)


def test_nodes_never_claim_what_they_cannot_render():
    log = ActionLog()
    log.add(log.create(A, "PEER_JOINED", joined_payload("a", {"builtin": "0.1.0"})))
    log.add(
        log.create(
            B, "PEER_JOINED", joined_payload("b", {"builtin": "0.1.0", "povray": "3.7.0.10"})
        )
    )
    pov = {**new_job_payload("pov1"), "renderer": "povray", "renderer_version": "3.7"}
    log.add(log.create(C, "NEW_JOB", pov))
    assert pick_chunk(log.state, A) is None
    assert pick_chunk(log.state, B)[0] == "pov1"
    old = {**new_job_payload("pov2"), "renderer": "povray", "renderer_version": "3.8"}
    log.add(log.create(C, "NEW_JOB", old))
    log.add(log.create(C, "CANCEL_JOB", {"job_id": "pov1"}))
    assert pick_chunk(log.state, B) is None  # 3.7.0.10 does not satisfy "3.8"


# -- job control: pause, resume, retry, priority ---------------------------------------


def control(log: ActionLog, kind: str, job_id: str = "job1", **extra) -> None:
    log.add(log.create(A, kind, {"job_id": job_id, **extra}))


def test_a_paused_job_gets_no_new_claims_and_its_chunks_in_flight_still_count():
    log = farm_log(B)
    claim_action = log.create(B, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 0})
    log.add(claim_action)
    control(log, "PAUSE_JOB")
    job = log.state.jobs["job1"]
    assert (job.paused, job.display_state) == (True, "paused")
    assert pick_chunk(log.state, B) is None
    paused_state = log.state
    control(log, "PAUSE_JOB")  # pausing twice changes nothing
    assert log.state.jobs["job1"] is paused_state.jobs["job1"]
    log.add(log.create(B, "DONE", {"job_id": "job1", "chunk": 0, "claim_seq": claim_action.seq}))
    assert log.state.jobs["job1"].frames_done == 2  # the render in flight finished
    control(log, "RESUME_JOB")
    assert log.state.jobs["job1"].display_state == "rendering"
    assert pick_chunk(log.state, B) is not None


def test_pausing_a_finished_job_has_no_effect():
    state = farm(
        JOB,
        act("CANCEL_JOB", {"job_id": "job1"}, A, 2, 2),
        act("PAUSE_JOB", {"job_id": "job1"}, A, 3, 3),
    )
    assert state.jobs["job1"].display_state == "cancelled" and not state.jobs["job1"].paused


def test_retry_renders_the_failed_frames_again_with_a_clean_slate():
    log = farm_log(B, C)
    for chunk in range(3):
        fail(log, B, chunk, "missing texture")  # B is blocklisted for job1
    for node in (C, A):
        fail(log, node, 0, "missing texture")
    fail(log, C, 0, "missing texture")
    job = log.state.jobs["job1"]
    assert job.state == "failed" and job.chunk(0).state == "failed"
    control(log, "RETRY_JOB")
    job = log.state.jobs["job1"]
    assert (job.state, job.error, len(job.failures)) == ("active", "", 0)
    for index in (0, 1, 2):
        chunk = job.chunk(index)
        assert (chunk.state, chunk.attempts, chunk.failed_on, chunk.error) == ("pending", 0, (), "")
    assert pick_chunk(log.state, B) is not None  # no longer blocklisted
    retried = log.state
    control(log, "RETRY_JOB")  # nothing failed since: no effect
    assert log.state.jobs["job1"] is retried.jobs["job1"]


def test_retry_frees_claims_whose_holder_left_while_the_job_was_failed():
    log = farm_log(B, C)
    held = log.create(C, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 3})
    log.add(held)
    for node in (B, C, A):
        fail(log, node, 0, "segv")
    assert log.state.jobs["job1"].state == "failed"
    log.add(log.create(C, "PEER_LEFT", {}))
    assert log.state.jobs["job1"].chunk(3).state == "claimed"  # failed jobs keep claims
    control(log, "RETRY_JOB")
    assert log.state.jobs["job1"].chunk(3).state == "pending"


def test_retry_frees_claims_of_members_that_stopped_rendering_when_the_job_failed():
    """A node rendering a chunk when the job failed stops that render (the job is not
    active) and gives nothing back: after the retry nobody would render that chunk."""
    log = farm_log(B, C)
    held = log.create(C, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 3})
    log.add(held)
    for node in (B, C, A):
        fail(log, node, 0, "segv")
    assert log.state.jobs["job1"].chunk(3).state == "claimed"  # C is up
    control(log, "RETRY_JOB")
    assert log.state.jobs["job1"].chunk(3).state == "pending"
    # A render of it that finished before it was stopped still counts.
    log.add(log.create(C, "DONE", {"job_id": "job1", "chunk": 3, "claim_seq": held.seq}))
    assert log.state.jobs["job1"].chunk(3).state == "done"


def test_retry_of_a_done_or_cancelled_job_has_no_effect():
    log = farm_log(B)
    control(log, "CANCEL_JOB")
    before = log.state
    control(log, "RETRY_JOB")
    assert log.state.jobs["job1"] is before.jobs["job1"]


def test_set_priority_reorders_the_jobs_and_the_last_in_the_total_order_wins():
    log = farm_log(B)
    log.add(log.create(A, "NEW_JOB", new_job_payload("job2")))
    assert pick_chunk(log.state, B)[0] == "job1"  # the older job first
    control(log, "SET_PRIORITY", "job2", priority=5)
    assert pick_chunk(log.state, B)[0] == "job2"
    # Two users set priorities at once: every node keeps the one that sorts last.
    first = act("SET_PRIORITY", {"job_id": "job1", "priority": 7}, B, 10, 100)
    second = act("SET_PRIORITY", {"job_id": "job1", "priority": -3}, C, 1, 100)
    results = set()
    for order in ([first, second], [second, first]):
        other = farm_log(B)
        for a in order:
            other.add(a)
        results.add(other.state.jobs["job1"].priority)
    assert results == {-3}  # (100, C, 1) sorts after (100, B, 10)


@pytest.mark.parametrize(
    "payload, reason",
    [
        ({"job_id": "job1", "priority": 5000}, "priority"),
        ({"job_id": "job1"}, "missing field 'priority'"),
        ({"job_id": "job1", "priority": True}, "integer"),
    ],
)
def test_invalid_set_priority_is_refused(payload, reason):
    data = act("SET_PRIORITY", payload, A, 1, 1).to_wire()
    with pytest.raises(InvalidAction, match=reason):
        validate_action(data)
