"""The scheduling policy (core/scheduler.py) and the actions it rests on: runs of chunks
claimed whole or not at all, measured speeds shared as NODE_SPEED."""

from __future__ import annotations

from factories import A, B, C, joined_payload, new_job_payload

from peerfarm.core.actions import InvalidAction, validate_action
from peerfarm.core.log import ActionLog
from peerfarm.core.scheduler import (
    CLAIM_SECONDS,
    DONE_DELAY_SECONDS,
    OVERDUE_FACTOR,
    PROBE_FRAMES,
    STARTUPS_PER_RUN,
    Measured,
    Pick,
    job_speed,
    last_round_slots,
    last_round_work,
    overdue_at,
    pick_backup,
    pick_run,
    probe_frames,
    run_estimate,
    run_length,
    run_started,
    split_keep,
)

D = "d" * 16  # a fourth node


def adaptive_log(*renderers: str, frames: int = 100) -> ActionLog:
    log = ActionLog()
    for node in renderers:
        log.add(log.create(node, "PEER_JOINED", joined_payload(node[:1])))
    payload = {**new_job_payload(frames=(1, frames), chunk=1), "adaptive": True}
    log.add(log.create(A, "NEW_JOB", payload))
    return log


def emit(log: ActionLog, node: str, type_: str, payload: dict):  # noqa: ANN201
    action = log.create(node, type_, payload)
    assert log.add(action)
    return action


def speed(log: ActionLog, node: str, frame_ms: int, startup_ms: int = 0) -> None:
    payload = {"renderer": "builtin", "frame_ms": frame_ms, "startup_ms": startup_ms}
    emit(log, node, "NODE_SPEED", payload)


def test_a_run_is_claimed_whole_or_not_at_all():
    log = adaptive_log(A, B)
    first = emit(log, B, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 10, "count": 5})
    job = log.state.jobs["job1"]
    assert {job.chunk(i).claim_seq for i in range(10, 15)} == {first.seq}
    assert job.chunk(15).state == "pending"
    # A run that overlaps B's by one chunk wins nothing, not even its free chunks.
    emit(log, C, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 14, "count": 4})
    job = log.state.jobs["job1"]
    assert job.chunk(14).claim_origin == B
    assert all(job.chunk(i).state == "pending" for i in range(15, 18))
    assert job.frame_renders == 5 + 4  # the losing claim started a render too


def test_a_run_past_the_last_chunk_has_no_effect():
    log = adaptive_log(A, B, frames=10)
    emit(log, B, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 8, "count": 3})
    assert len(log.state.jobs["job1"].chunks) == 0


def test_done_release_and_failure_of_a_run():
    log = adaptive_log(A, B, C, frames=10)
    claim = emit(log, B, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 0, "count": 4})
    ref = {"job_id": "job1", "chunk": 0, "claim_seq": claim.seq, "count": 4}
    emit(log, B, "CHUNK_FAILED", {**ref, "error": "boom"})
    job = log.state.jobs["job1"]
    assert dict(job.failures) == {B: 1}  # one renderer process failed: one failure
    assert all(job.chunk(i).state == "pending" and job.chunk(i).failed_on == (B,) for i in range(4))
    claim = emit(log, C, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 0, "count": 6})
    ref = {"job_id": "job1", "chunk": 0, "claim_seq": claim.seq, "count": 6}
    emit(log, C, "RELEASE_CHUNK", {**ref, "count": 2})  # gives back the first two only
    job = log.state.jobs["job1"]
    assert [job.chunk(i).state for i in range(7)] == ["pending"] * 2 + ["claimed"] * 4 + ["pending"]
    emit(log, C, "DONE", {**ref, "chunk": 2, "count": 4})
    job = log.state.jobs["job1"]
    assert (job.chunks_done, job.frames_done) == (4, 4)
    claim = emit(log, A, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 0, "count": 2})
    emit(log, A, "DONE", {"job_id": "job1", "chunk": 0, "claim_seq": claim.seq, "count": 2})
    claim = emit(log, A, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 6, "count": 4})
    emit(log, A, "DONE", {"job_id": "job1", "chunk": 6, "claim_seq": claim.seq, "count": 4})
    job = log.state.jobs["job1"]
    assert (job.state, job.chunks_done, job.frames_done) == ("done", 10, 10)


def test_node_speed_is_kept_per_renderer_and_survives_a_rejoin():
    log = adaptive_log(A, B)
    speed(log, B, 1500, 700)
    assert log.state.peers[B].speed("builtin") == (1500, 700)
    speed(log, B, 1200, 650)
    emit(log, B, "PEER_JOINED", joined_payload("b"))  # announces itself again
    assert log.state.peers[B].speed("builtin") == (1200, 650)
    assert log.state.peers[B].speed("povray") is None


def test_node_speed_is_validated():
    raw = {
        "type": "NODE_SPEED",
        "payload": {"renderer": "builtin", "frame_ms": 0, "startup_ms": 10},
        "origin": A,
        "seq": 1,
        "lamport": 1,
    }
    try:
        validate_action(raw)
    except InvalidAction as exc:
        assert "frame_ms" in str(exc)
    else:
        raise AssertionError("a zero frame time was accepted")


def test_unmeasured_nodes_take_their_equal_part_of_a_fresh_job_as_one_run():
    """A probe run and the runs after it each paid a start-up: on a job the farm has
    just started, a node that does not know its speed claims its equal part whole."""
    log = adaptive_log(A, B, C)
    # 100 chunks over 3 slots: parts of 34, in the nodes' order.
    assert pick_run(log.state, A) == Pick("job1", 0, 34)
    assert pick_run(log.state, B) == Pick("job1", 34, 34)
    assert pick_run(log.state, C) == Pick("job1", 68, 32)
    # A node of two slots has two parts.
    two = ActionLog()
    two.add(two.create(A, "PEER_JOINED", {**joined_payload("a"), "slots": 2}))
    two.add(two.create(B, "PEER_JOINED", joined_payload("b")))
    two.add(
        two.create(A, "NEW_JOB", {**new_job_payload(frames=(1, 99), chunk=1), "adaptive": True})
    )
    assert pick_run(two.state, A) == Pick("job1", 0, 33)
    assert pick_run(two.state, A, busy={("job1", i) for i in range(33)}) == Pick("job1", 33, 33)
    assert pick_run(two.state, B) == Pick("job1", 66, 33)


def test_measured_nodes_take_parts_of_a_fresh_job_weighted_by_speed():
    """On a farm that knows its speeds, each node's part of a fresh job is what it
    renders, after its start-up, by when the farm should be done: one start-up a node,
    all ending about together (factoring's first runs were half a share, then more)."""
    log = adaptive_log(A, B, C, frames=100)
    speed(log, A, 1000)
    speed(log, B, 2000)
    speed(log, C, 4000, startup_ms=4000)
    # 100 frames by t: t + t/2 + (t - 4)/4 = 100, t = 57.7: parts of 58, 29 and 13.
    assert pick_run(log.state, A) == Pick("job1", 0, 58)
    assert pick_run(log.state, B) == Pick("job1", 58, 29)
    assert pick_run(log.state, C) == Pick("job1", 87, 13)
    # Claimed its part, a node sizes its next run by factoring, and so does a node
    # whose part another node's run overlaps.
    emit(log, A, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 0, "count": 58})
    assert pick_run(log.state, A, busy={("job1", i) for i in range(58)}).count < 29
    emit(log, A, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 58, "count": 3})
    assert pick_run(log.state, B).chunk == 61
    # A node of two slots takes two parts, each weighted by its speed.
    two = ActionLog()
    two.add(two.create(A, "PEER_JOINED", {**joined_payload("a"), "slots": 2}))
    two.add(two.create(B, "PEER_JOINED", joined_payload("b")))
    speed(two, A, 2000)
    speed(two, B, 1000)
    two.add(
        two.create(A, "NEW_JOB", {**new_job_payload(frames=(1, 100), chunk=1), "adaptive": True})
    )
    emit(two, A, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 0, "count": 25})
    assert pick_run(two.state, A, busy={("job1", i) for i in range(25)}) == Pick("job1", 25, 25)
    assert pick_run(two.state, B) == Pick("job1", 50, 50)
    # Some nodes measured and others not: no parts (the unmeasured one probes).
    log = adaptive_log(A, B, C)
    speed(log, A, 1000)
    assert pick_run(log.state, C).count == PROBE_FRAMES


def test_an_unmeasured_node_probes_a_job_under_way_near_the_first_pending_frame():
    log = adaptive_log(A, B, C)
    # The job is under way: a node measured already holds part of each node's part.
    for first in (0, 34, 68):
        emit(log, D, "CLAIM_CHUNK", {"job_id": "job1", "chunk": first, "count": 2})
    # Nodes probing at once each skip their rank's worth of probe runs.
    assert pick_run(log.state, A) == Pick("job1", 2, PROBE_FRAMES)
    assert pick_run(log.state, B) == Pick("job1", 2 + PROBE_FRAMES, PROBE_FRAMES)
    emit(log, A, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 2, "count": PROBE_FRAMES})
    assert pick_run(log.state, B) == Pick("job1", 2 + 2 * PROBE_FRAMES, PROBE_FRAMES)
    speed(log, B, 1000)  # measured: from the first pending frame on
    assert pick_run(log.state, B).chunk == 2 + PROBE_FRAMES


def test_no_equal_parts_for_a_job_sharing_the_farm_or_limited_to_n_nodes():
    log = adaptive_log(A, B)
    limited = {**new_job_payload("job2", frames=(1, 100), chunk=1), "adaptive": True}
    emit(log, A, "NEW_JOB", {**limited, "priority": 5, "max_nodes": 1})
    assert pick_run(log.state, A) == Pick("job2", 0, PROBE_FRAMES)
    log = adaptive_log(A, B)
    emit(log, A, "NEW_JOB", {**new_job_payload("job2", frames=(1, 100), chunk=1), "adaptive": True})
    assert pick_run(log.state, A).count == PROBE_FRAMES  # two jobs share the farm


def test_runs_follow_speed_and_shrink_towards_the_end():
    log = adaptive_log(A, B, frames=1000)
    speed(log, A, 1000)  # A renders a frame a second
    speed(log, B, 3000)  # B a frame in three
    state = log.state
    me_a, me_b = state.peers[A], state.peers[B]
    job = state.jobs["job1"]
    # Factoring: half of each node's proportional share (A 3/4, B 1/4 of the farm).
    assert run_length(state, job, A, me_a, 1000, Measured()) == 375
    assert run_length(state, job, B, me_b, 1000, Measured()) == 125
    assert run_length(state, job, A, me_a, 8, Measured()) == 3
    assert run_length(state, job, B, me_b, 2, Measured()) == 1


def test_a_run_pays_its_startup_rarely_but_never_exceeds_the_share():
    log = adaptive_log(A, B, frames=1000)
    speed(log, A, 1000, startup_ms=30_000)  # 30 s to load the scene
    speed(log, B, 1000, startup_ms=30_000)
    state = log.state
    job = state.jobs["job1"]
    measured = Measured({"job1": 1.0})
    # 1000 frames left: half of A's share (250) is less than 4 start-ups' worth (120)? no.
    assert run_length(state, job, A, state.peers[A], 1000, measured) == 250
    # 200 left: half the share is 50 frames, but 4 start-ups are 120 s: take the share.
    assert run_length(state, job, A, state.peers[A], 200, measured) == 100


def test_the_last_round_leaves_out_a_node_whose_run_ends_after_it():
    """A node whose run should end after the farm is done with the unclaimed frames
    takes none of them: the others share them. Sized as a share of the unclaimed work
    plus the work in flight, A took 133 of the 100 frames left (C's long run counted as
    work A should share), leaving B nothing to do."""
    log = adaptive_log(A, B, C, frames=400)
    for node in (A, B, C):
        speed(log, node, 1000, startup_ms=10_000)
    claim = emit(log, C, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 0, "count": 300})
    state = log.state
    measured = Measured({"job1": 1.0}, now=0.0, seen={("job1", 0, claim.seq): 0.0})
    # 100 frames left, A and B free now, 10 s of start-up each: both end at 60 s.
    assert run_length(state, state.jobs["job1"], A, state.peers[A], 100, measured) == 50


def test_the_rest_of_a_run_that_told_finished_chunks_pays_no_startup():
    """A long run tells its finished chunks as it goes; the rest of it is estimated
    from that DONE on without a start-up (its renderer is running). With one, every
    long run looked a start-up longer than it was to the nodes sizing their last runs."""
    log = adaptive_log(A, B, frames=100)
    speed(log, A, 1000, startup_ms=30_000)
    claim = emit(log, A, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 0, "count": 40})
    ref = {"job_id": "job1", "claim_seq": claim.seq}
    job = log.state.jobs["job1"]
    assert not run_started(job, 0, A, claim.seq)
    assert run_estimate(log.state, job, A, 0, 40, 1.0, claim.seq) == 30 + 40
    emit(log, A, "DONE", {**ref, "chunk": 0, "count": 10})
    job = log.state.jobs["job1"]
    assert run_started(job, 10, A, claim.seq)
    assert run_estimate(log.state, job, A, 10, 30, 1.0, claim.seq) == 30
    assert run_estimate(log.state, job, A, 10, 30, 1.0) == 30 + 30  # a copy pays it
    # Chunks after a run another claim rendered are a fresh run.
    other = emit(log, B, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 40, "count": 10})
    assert not run_started(log.state.jobs["job1"], 40, B, other.seq)


def test_frames_of_a_millisecond_are_claimed_in_runs_worth_several_claims():
    """A run renders for STARTUPS_PER_RUN claims' cost at least, even past the node's
    share: else the farm would spend its time on claims and DONEs, not on frames."""
    log = adaptive_log(A, B, frames=5000)
    speed(log, A, 1)  # a frame a millisecond, no start-up (the bench's null renderer)
    speed(log, B, 1)
    state = log.state
    job = state.jobs["job1"]
    measured = Measured({"job1": 0.001})
    least = round(STARTUPS_PER_RUN * CLAIM_SECONDS / 0.001)
    assert least == 400
    # 5000 left: half the share (1250) is more than the least run: factoring decides.
    assert run_length(state, job, A, state.peers[A], 5000, measured) == 1250
    # 600 left: half the share is 150 frames, the whole share 300: both too short.
    assert run_length(state, job, A, state.peers[A], 600, measured) == least
    # Less than that left: all of it.
    assert run_length(state, job, A, state.peers[A], 120, measured) == 120
    # Frames of a second are not concerned: factoring as before (half the share of 4).
    slow = Measured({"job1": 1.0})
    speed(log, A, 1000)
    speed(log, B, 1000)
    state = log.state
    assert run_length(state, job, A, state.peers[A], 8, slow) == 2


def test_a_node_not_measured_yet_counts_as_fast_as_the_fastest():
    log = adaptive_log(A, B, C, frames=1000)
    speed(log, A, 1000)
    speed(log, B, 4000)
    state = log.state
    # C is unknown: counted at 1 frame/s, so A's share is 1/(1+0.25+1) of what is left.
    assert run_length(state, state.jobs["job1"], A, state.peers[A], 900, Measured()) == 200


def test_a_job_with_a_fixed_chunk_is_claimed_one_chunk_at_a_time():
    log = ActionLog()
    for node in (A, B):
        log.add(log.create(node, "PEER_JOINED", joined_payload(node[:1])))
    log.add(log.create(A, "NEW_JOB", new_job_payload(frames=(1, 100), chunk=5)))
    speed(log, B, 1000)
    pick = pick_run(log.state, B)
    assert pick is not None and pick.count == 1


def test_a_job_without_chunk_is_adaptive_and_one_with_chunk_is_not():
    from factories import builtin_request

    from peerfarm.jobspec import build_new_job
    from peerfarm.renderers.registry import renderer_plugins

    plugins = renderer_plugins()
    auto = build_new_job(builtin_request(frames=(1, 40)), "j1", plugins, {"builtin"})
    assert (auto["chunk_size"], auto.get("adaptive")) == (1, True)
    fixed = build_new_job(builtin_request(frames=(1, 40), chunk_size=5), "j2", plugins, {"builtin"})
    assert (fixed["chunk_size"], fixed.get("adaptive")) == (5, None)
    tiled = build_new_job(builtin_request(frames=(1, 2), tiles=4), "j3", plugins, {"builtin"})
    assert (tiled["chunk_size"], tiled.get("adaptive")) == (1, None)


def test_status_shows_measured_speeds():
    from peerfarm.cli.commands import describe_speeds
    from peerfarm.machine.machine import speeds_of

    log = adaptive_log(A, B)
    speed(log, B, 1250, 650)
    shown = speeds_of(log.state.peers[B])
    assert shown == {"builtin": {"frame_seconds": 1.25, "startup_seconds": 0.65}}
    assert describe_speeds(shown) == "builtin 1.25 s/frame (start-up 0.65 s)"
    assert speeds_of(log.state.peers[A]) == {} and speeds_of(None) == {}


def test_a_run_over_chunks_with_a_history_folds_each_chunk_by_the_rules():
    """Claims and DONEs of runs update the map in one go: chunks claimed before keep
    counting their epochs, chunks done before are not counted again."""
    log = adaptive_log(A, B, C, frames=20)
    first = emit(log, B, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 4, "count": 4})
    ref = {"job_id": "job1", "chunk": 4, "claim_seq": first.seq}
    emit(log, B, "RELEASE_CHUNK", {**ref, "count": 2})  # 4, 5 pending again (epoch 1)
    emit(log, B, "DONE", {**ref, "chunk": 6, "count": 2})  # 6, 7 done by B
    claim = emit(log, C, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 0, "count": 6})
    job = log.state.jobs["job1"]
    assert [job.chunk(i).epoch for i in range(6)] == [1, 1, 1, 1, 2, 2]
    assert {job.chunk(i).claim_seq for i in range(6)} == {claim.seq}
    # A DONE over 0-9: 6 and 7 were done already, 8 and 9 never claimed (they count).
    emit(log, C, "DONE", {"job_id": "job1", "chunk": 0, "claim_seq": claim.seq, "count": 10})
    job = log.state.jobs["job1"]
    assert (job.chunks_done, job.frames_done) == (10, 10)
    assert [job.chunk(i).done_by for i in range(10)] == [C] * 6 + [B] * 2 + [C] * 2
    assert [job.chunk(i).epoch for i in range(6)] == [1, 1, 1, 1, 2, 2]
    assert job.chunk(10).state == "pending" and job.frame_renders == 4 + 6


def test_claimable_gaps_are_the_runs_of_chunks_a_walk_over_every_index_finds():
    import random

    from peerfarm.core.scheduler import _claimable, claimable_gaps

    rng = random.Random(3)
    log = adaptive_log(A, B, C, frames=300)
    for _ in range(60):
        first = rng.randrange(300)
        ref = {"job_id": "job1", "chunk": first, "count": rng.randint(1, min(20, 300 - first))}
        node = rng.choice([A, B, C])
        claim = emit(log, node, "CLAIM_CHUNK", ref)
        kind = rng.choice(["DONE", "RELEASE_CHUNK", "CHUNK_FAILED", None])
        if kind:
            extra = {"error": "boom"} if kind == "CHUNK_FAILED" else {}
            emit(log, node, kind, {**ref, "claim_seq": claim.seq, **extra})
        state, job = log.state, log.state.jobs["job1"]
        busy = {("job1", rng.randrange(300)) for _ in range(3)}
        walk: list[tuple[int, int]] = []
        for i in range(job.chunk_total):
            if _claimable(state, job, i, A, busy):
                if walk and sum(walk[-1]) == i:
                    walk[-1] = (walk[-1][0], walk[-1][1] + 1)
                else:
                    walk.append((i, 1))
        assert claimable_gaps(state, job, A, busy) == walk


def test_nodes_with_frames_faster_than_a_claim_take_runs_from_their_own_part():
    """Frames of a millisecond: nodes claim again before the others' claims arrive, so
    each takes its runs from its rank's part of the job instead of all the same gap."""
    log = adaptive_log(A, B, C, frames=30000)
    emit(log, A, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 0, "count": 100})
    emit(log, B, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 10000, "count": 19000})
    for node in (A, B, C):
        speed(log, node, 1)
    fast = Measured({"job1": 0.001})
    a, b, c = (pick_run(log.state, node, measured=fast) for node in (A, B, C))
    assert (a.chunk, c.chunk) == (100, 29000)  # A's part starts at 0, C's at 20000
    assert c.count == 1000  # what is left of C's part (and of the job past it)
    # B's part (10000 to 20000) is claimed: B takes a run from the end of the longest
    # gap left (A, whose part it is, takes its runs from the front).
    assert b.chunk + b.count == 10000 and b.count < 9900
    emit(log, C, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 29000, "count": 1000})
    c = pick_run(log.state, C, measured=fast)
    # C steals too, the run before B's: B's and C's claims cross on the wire without
    # colliding.
    assert c.chunk + c.count == 10000 - c.count and c.chunk > 100
    emit(log, B, "CLAIM_CHUNK", {"job_id": "job1", "chunk": b.chunk, "count": b.count})
    assert pick_run(log.state, A, measured=fast).chunk == 100  # A goes on from the front
    c = pick_run(log.state, C, measured=fast)
    assert c.chunk + c.count == b.chunk - c.count  # the longest gap now: [100, b.chunk)
    # A gap too short for a run each: its end.
    emit(log, A, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 100, "count": b.chunk - 110})
    c = pick_run(log.state, C, measured=fast)
    assert (c.chunk, c.count) == (b.chunk - 10, 10)
    # Frames of a second: the first gap for each, as before (they rarely claim at once).
    for node in (A, B, C):
        speed(log, node, 1000)
    slow = Measured({"job1": 1.0})
    assert {pick_run(log.state, node, measured=slow).chunk for node in (A, B, C)} == {c.chunk}


def test_a_job_of_few_frames_a_node_is_probed_with_two_frames():
    # 30 frames on 3 nodes: a slow node's 4-frame probe could outlast the whole job.
    log = adaptive_log(A, B, C, frames=30)
    assert probe_frames(log.state, log.state.jobs["job1"]) == 2
    log = adaptive_log(A, B, C, frames=400)
    assert probe_frames(log.state, log.state.jobs["job1"]) == PROBE_FRAMES


def test_a_run_gives_back_the_tail_the_idle_farm_should_render_sooner():
    # A holds frames 0-59 and renders 4 s a frame, twice its measured speed (these frames
    # cost more than sized); B and C are idle, measured at 1 s a frame (so 2 s a frame
    # of these) after a 2 s start-up; nothing is left unclaimed.
    log = adaptive_log(A, B, C, frames=100)
    for node in (A, B, C):
        speed(log, node, 2000 if node == A else 1000, startup_ms=2000)
    claim = emit(log, A, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 0, "count": 60})
    emit(log, B, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 60, "count": 40})
    emit(log, B, "DONE", {"job_id": "job1", "chunk": 60, "count": 40, "claim_seq": 2})
    state = log.state
    job = state.jobs["job1"]
    finished = [12.0, 16.0, 20.0, 24.0]  # 4 frames done, 4 s apart
    measured = Measured({"job1": 2.0}, now=24.0, seen={("job1", 0, claim.seq): 0.0})
    keep = split_keep(state, A, job, 0, 60, finished, measured)
    # A keeps what it renders by the time B and C, after their start-up, are done with
    # the rest, shared between them at 2 s a frame.
    assert 4 < keep < 60
    left_a = (keep - 4) * 4.0
    left_others = 2.0 + (60 - keep) / 2 * 2.0
    assert abs(left_a - left_others) <= 4.0  # about together, to a frame of A's
    # Frames left unclaimed are the idle nodes' work too: A then keeps more of its run
    # (counted as A's to share out, nodes giving back at once each counted on every
    # idle slot and gave back too much).
    emit(
        log,
        A,
        "RELEASE_CHUNK",
        {"job_id": "job1", "chunk": 50, "claim_seq": claim.seq, "count": 10},
    )
    # The same work is left (A's 46 frames and 10 pending against A's 56): the same end.
    assert split_keep(log.state, A, log.state.jobs["job1"], 0, 50, finished, measured) == keep


def test_speeds_in_a_job_learning_its_costs_compare_where_the_nodes_runs_meet():
    """A fresh farm measures each node on its own part of the job: A (1 s a frame-unit)
    on frames of cost 4 measured 4 s a frame, B (7 s) on frames of cost 1 measured 7 s,
    and B looked 1.75 times slower than A. Where their runs meet (frames of cost 2: A's
    2 s against B's 14 s) the job tells the true ratio, and decisions about who should
    render what (estimates of runs, tails given back, copies) compare them by it."""
    log = adaptive_log(A, B, frames=40)
    speed(log, A, 4000, startup_ms=1000)
    speed(log, B, 7000, startup_ms=1000)
    assert job_speed(log.state, log.state.jobs["job1"], B)[0] / 4000 == 1.75
    a = emit(log, A, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 0, "count": 10})
    b = emit(log, B, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 10, "count": 10})
    a_ms = [0] + [4000] * 6 + [2000] * 3  # the first frame also paid the start-up
    b_ms = [0] + [14000] * 3 + [7000] * 6
    for node, claim, first, ms in ((A, a, 0, a_ms), (B, b, 10, b_ms)):
        payload = {"job_id": "job1", "chunk": first, "count": 10, "claim_seq": claim.seq}
        emit(log, node, "DONE", {**payload, "frame_ms": ms})
    state = log.state
    job = state.jobs["job1"]
    fast, slow = job_speed(state, job, A), job_speed(state, job, B)
    assert abs(slow[0] / fast[0] - 7.0) < 0.01
    assert (fast[1], slow[1]) == (1000, 1000)  # start-ups as measured
    # The same frames, estimated for each node: 7 times as long on B (start-up aside).
    a_run = run_estimate(state, job, A, 20, 10, 1.0)
    b_run = run_estimate(state, job, B, 20, 10, 1.0)
    assert abs((b_run - 1.0) / (a_run - 1.0) - 7.0) < 0.01
    # A job whose costs were learned before it (job.costs) compares measured speeds.
    known = job._replace(costs=(1.0,) * 40)
    assert job_speed(state, known, B) == state.peers[B].speed("builtin")


def test_a_run_gives_back_its_tail_only_when_a_slot_frees_before_its_next_frame():
    """Given back while every other node is busy, a tail waited, sized by guesses the
    next frames refine: the holder gives it back once a slot should be free before its
    next frame ends (it looks again then)."""
    log = adaptive_log(A, B, C, frames=80)
    for node in (A, B, C):
        speed(log, node, 2000 if node == A else 1000, startup_ms=2000)
    claim = emit(log, A, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 0, "count": 60})
    b = emit(log, B, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 60, "count": 10})
    c = emit(log, C, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 70, "count": 10})
    job = log.state.jobs["job1"]
    finished = [12.0, 16.0, 20.0, 24.0]
    seen = {("job1", 0, claim.seq): 0.0}
    # B and C claimed 10 frames at 10 s, of 2 s (A's pace: these frames cost twice the
    # measured) after 2 s of start-up: free at 32 s. A looks at 24 s.
    busy = Measured(
        {"job1": 2.0}, now=24.0, seen={**seen, ("job1", 60, b.seq): 10.0, ("job1", 70, c.seq): 10.0}
    )
    assert split_keep(log.state, A, job, 0, 60, finished, busy) == 60
    # At 29 s (A's next frame ends at 33 s) they free up before it: A gives back.
    later = busy._replace(now=29.0)
    assert split_keep(log.state, A, job, 0, 60, finished + [28.0], later) < 60


def test_a_run_stuck_on_a_frame_keeps_only_that_frame():
    """A frame far past its estimate (a hung renderer, a frame far heavier than its
    guessed cost) keeps the rest of its run waiting. Looked at while that frame renders
    (frame_began), the run counts what the frame has taken: the longer it runs, the less
    the run keeps; stuck long enough, only that frame, and idle nodes render the rest.
    A frame a little past its estimate is taken to end any moment."""
    log = adaptive_log(A, B, C, frames=60)
    for node in (A, B, C):
        speed(log, node, 2000 if node == A else 1000, startup_ms=2000)
    claim = emit(log, A, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 0, "count": 60})
    job = log.state.jobs["job1"]
    finished = [12.0, 16.0, 20.0, 24.0]  # A's pace: 4 s a frame; B and C are idle
    measured = Measured({"job1": 2.0}, now=24.0, seen={("job1", 0, claim.seq): 0.0})
    at_frame_end = split_keep(log.state, A, job, 0, 60, finished, measured)
    assert 5 < at_frame_end < 60
    # The same look 2 s into the frame (began at 24 s): the same frames kept.
    assert split_keep(log.state, A, job, 0, 60, finished, measured._replace(now=26.0), 24.0) == (
        at_frame_end
    )
    # 6 s into a frame of 4 s: it ends any moment, the frames after it start now.
    late = split_keep(log.state, A, job, 0, 60, finished, measured._replace(now=30.0), 24.0)
    assert late >= at_frame_end
    # 76 s into it: the frame should take 38 s more, and the run keeps fewer after it.
    stuck = split_keep(log.state, A, job, 0, 60, finished, measured._replace(now=100.0), 24.0)
    assert 5 < stuck < at_frame_end
    # 200 s: B and C render all the rest before it ends; A keeps the frame it is on.
    assert split_keep(log.state, A, job, 0, 60, finished, measured._replace(now=224.0), 24.0) == 5


def test_a_run_with_a_copy_or_near_its_end_is_kept_whole():
    log = adaptive_log(A, B, frames=40)
    speed(log, A, 2000, startup_ms=2000)
    speed(log, B, 1000, startup_ms=2000)
    claim = emit(log, A, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 0, "count": 40})
    measured = Measured({"job1": 2.0}, now=24.0, seen={("job1", 0, claim.seq): 0.0})
    finished = [12.0, 16.0, 20.0, 24.0]
    job = log.state.jobs["job1"]
    assert split_keep(log.state, A, job, 0, 40, finished, measured) < 40
    # The last frame being rendered: nothing to give.
    assert split_keep(log.state, A, job, 0, 5, finished, measured) == 5
    emit(
        log, B, "BACKUP_CHUNK", {"job_id": "job1", "chunk": 0, "count": 40, "claim_seq": claim.seq}
    )
    job = log.state.jobs["job1"]
    assert split_keep(log.state, A, job, 0, 40, finished, measured) == 40


def test_an_idle_node_leaves_a_long_run_to_give_back_its_tail_and_copies_its_last_frames():
    """A copied run is never split: a fresh farm's equal parts of 1,500 frames, a fast
    node idle first copied a slow node's rest of 136 frames, and the job ended with
    copies of long runs, six nodes idle for 7,000 s. An idle node leaves a run with
    frames after the one its holder renders to the holder, which gives them back (it
    looks at every frame's end); it copies the run's last frames, or a hung run."""
    log = adaptive_log(A, B, frames=40)
    speed(log, A, 7000, startup_ms=2000)
    speed(log, B, 1000, startup_ms=2000)
    run = emit(log, A, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 0, "count": 40})
    seen = {("job1", 0, run.seq): 0.0}
    measured = Measured({"job1": 1.0}, now=50.0)
    # A needs 282 s for its run, B 42 s: a copy would end far sooner, but A's tail goes
    # back to the farm at A's next frame and B takes it then.
    assert pick_backup(log.state, B, 50.0, seen, measured=measured) is None
    job = log.state.jobs["job1"]
    assert split_keep(log.state, A, job, 0, 40, [9.0, 16.0, 23.0, 30.0], measured) < 40
    # Hung (twice past its estimate): copied, as before. B looks again then,
    # also once the moment a copy would have been worth it has passed.
    for now in (50.0, 300.0):
        assert overdue_at(log.state, B, seen, measured._replace(now=now)) == 2 * 282.0
    hung = pick_backup(log.state, B, 600.0, seen, measured=measured._replace(now=600.0))
    # Copied from its head, where A is stuck: the run B would claim of 40 unclaimed
    # frames (half its share of 35, factoring); the rest is left for the next idle node.
    assert hung is not None and (hung.chunk, hung.count) == (0, 18)
    # The run's last two frames (the one A renders and one more): nothing to give back,
    # B copies them.
    emit(log, A, "DONE", {"job_id": "job1", "chunk": 0, "count": 38, "claim_seq": run.seq})
    copy = pick_backup(log.state, B, 270.0, seen, measured=measured._replace(now=270.0))
    assert copy is not None and (copy.chunk, copy.count, copy.holder) == (38, 2, A)


def test_a_slow_node_leaves_the_last_frames_to_a_busy_faster_node_ending_them_sooner():
    """Every run was at least a frame: a slow node free first took one of the last
    round's frames and ended the job a slow frame after the fast nodes. It takes none
    when slots now rendering runs render all that is left before its own first frame
    would end; not counting idle slots or runs past their estimate (one counted on a
    node that would never take the frame, and the job never ended)."""
    log = adaptive_log(A, B, frames=20)
    speed(log, A, 7000, startup_ms=1000)
    speed(log, B, 1000, startup_ms=1000)
    run = emit(log, B, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 0, "count": 19})
    seen = {("job1", 0, run.seq): 0.0}
    # B ends its run (20 s) at 20 s and frame 19 by 22 s; A would end it at 26 s.
    assert pick_run(log.state, A, measured=Measured({}, now=18.0, seen=seen)) is None
    # B's run past its estimate: nobody knows when B is free, A takes the frame.
    late = pick_run(log.state, A, measured=Measured({}, now=21.0, seen=seen))
    assert late == Pick("job1", 19, 1)


def test_an_idle_node_leaves_a_copy_to_a_busy_faster_node_ending_it_sooner():
    """A slow idle node that copied a run held its one copy (the first BACKUP_CHUNK
    wins), and the faster nodes free a moment later could not copy it."""
    log = adaptive_log(A, B, C, frames=5)
    speed(log, A, 3000, startup_ms=1000)
    speed(log, B, 1000, startup_ms=1000)
    speed(log, C, 7000, startup_ms=1000)
    b = emit(log, B, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 0, "count": 3})
    c = emit(log, C, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 3, "count": 2})
    seen = {("job1", 0, b.seq): 0.0, ("job1", 3, c.seq): 0.0}
    # At 2 s C's run has 13 s to go, A's copy would take 7 s, B's ends by 5 s (B is
    # free at 4 s): A leaves it to B.
    assert pick_backup(log.state, A, 2.0, seen, measured=Measured({}, 2.0, seen)) is None
    # B's run past its estimate (not free as estimated): A copies C's run.
    copy = pick_backup(log.state, A, 5.0, seen, measured=Measured({}, 5.0, seen))
    assert copy is not None and (copy.chunk, copy.count, copy.holder) == (3, 2, C)


def test_a_run_of_milliseconds_is_not_copied_before_its_done_could_arrive():
    """A 100-frame run estimated at 0.1 s on a node starved for a second or two looked
    overdue and was rendered twice: no copy before DONE_DELAY_SECONDS have passed."""
    log = adaptive_log(A, B, C, frames=400)
    for node in (A, B, C):
        speed(log, node, 1)
    run = emit(log, B, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 0, "count": 100})
    emit(log, A, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 100, "count": 300})
    seen = {("job1", 0, run.seq): 10.0}
    fast = Measured({"job1": 0.001}, now=10.0)
    for now in (10.0, 10.5, 11.0, 10.0 + DONE_DELAY_SECONDS - 0.01):
        assert pick_backup(log.state, C, now, seen, measured=fast) is None, now
    # C looks again once the run is past the delay, and copies it then (past it, the
    # run counts as overdue as before: half as long again as it has run).
    wake = overdue_at(log.state, C, seen, fast)
    assert 10.0 + DONE_DELAY_SECONDS <= wake <= 10.0 + OVERDUE_FACTOR * DONE_DELAY_SECONDS
    copy = pick_backup(log.state, C, wake, seen, measured=fast)
    assert copy is not None and (copy.chunk, copy.count, copy.holder) == (0, 100, B)
    # A run of real frames (100 s estimated) is judged against its own estimate: hung
    # once past twice it.
    for node in (A, B, C):
        speed(log, node, 1000)
    slow = Measured({"job1": 1.0}, now=10.0)
    assert pick_backup(log.state, C, 10.0 + 190.0, seen, measured=slow) is None
    assert pick_backup(log.state, C, 10.0 + 210.0, seen, measured=slow) is not None


def test_idle_nodes_copy_different_late_runs():
    """Idle nodes look for copies at about once near a job's end: each takes another of
    the runs worth copying (by rank), not all the same one."""
    log = adaptive_log(A, B, C, D, frames=400)
    for node in (A, B, C, D):
        speed(log, node, 1)
    b = emit(log, B, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 0, "count": 100})
    c = emit(log, C, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 100, "count": 300})
    seen = {("job1", 0, b.seq): 0.0, ("job1", 100, c.seq): 0.0}
    fast = Measured({"job1": 0.001}, now=100.0)
    copies = {n: pick_backup(log.state, n, 100.0, seen, measured=fast) for n in (A, D)}
    assert {copy.holder for copy in copies.values()} == {B, C}  # both hung: one each


def test_a_copy_leaves_out_the_part_of_a_run_another_node_copies():
    """Two idle nodes that heard of different DONEs of one run copy different tails of
    it: the part one copies has a copy, the rest of the run not. The other node copies
    that rest only (a copy over a chunk with one is refused by the reducer: copying the
    whole run, the node logged "internal error: our backup ... does not hold")."""
    log = adaptive_log(A, B, C, D, frames=10)
    for node in (A, B, C, D):
        speed(log, node, 1000)
    b = emit(log, B, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 0, "count": 10})
    ref = {"job_id": "job1", "claim_seq": b.seq}
    emit(log, B, "DONE", {**ref, "chunk": 0, "count": 8})
    # D heard B finish chunk 8 too and copies chunk 9; C has not heard that DONE yet.
    emit(log, D, "BACKUP_CHUNK", {**ref, "chunk": 9})
    seen = {("job1", 0, b.seq): 0.0, ("job1", 8, b.seq): 0.0}  # as C's worker notes them
    copy = pick_backup(log.state, C, 1000.0, seen, measured=Measured({"job1": 1.0}, now=1000.0))
    assert (copy.chunk, copy.count) == (8, 1)
    emit(log, C, "BACKUP_CHUNK", {**ref, "chunk": copy.chunk})
    assert log.state.jobs["job1"].chunk(8).backup_origin == C


def test_slow_runs_giving_back_at_once_count_on_each_others_tails():
    """A fresh farm's equal parts: the slow nodes each gave back their tails counting
    on every idle node for their own tail alone, kept too little, were done long before
    the farm and came back for more, a start-up each. A run counts the tails the other
    runs past the farm's end give back too: together, the idle nodes end them about
    when the slow nodes end what they keep."""
    log = adaptive_log(A, B, C, D, frames=160)
    for node in (A, B, C, D):
        speed(log, node, 4000 if node in (A, B) else 1000, startup_ms=1000)
    runs = {
        node: emit(log, node, "CLAIM_CHUNK", {"job_id": "job1", "chunk": i * 40, "count": 40})
        for i, node in enumerate((A, B, C, D))
    }
    for i, node in enumerate((C, D)):  # the fast nodes are done: idle
        done = {"job_id": "job1", "chunk": 80 + i * 40, "count": 40}
        emit(log, node, "DONE", {**done, "claim_seq": runs[node].seq})
    seen = {("job1", i * 40, runs[node].seq): 0.0 for i, node in enumerate((A, B))}
    finished = [5.0, 9.0, 13.0, 17.0]  # 4 s a frame after a start-up of 1 s
    measured = Measured({"job1": 4.0}, now=17.0, seen=seen)
    job = log.state.jobs["job1"]
    keep_a = split_keep(log.state, A, job, 0, 40, finished, measured)
    assert keep_a == split_keep(log.state, B, job, 40, 40, finished, measured)
    # Both tails to C and D (1 s a frame, a start-up each), A and B at 4 s a frame.
    kept_seconds = (keep_a - len(finished)) * 4.0
    tails_seconds = 1.0 + 2 * (40 - keep_a) / 2
    assert abs(kept_seconds - tails_seconds) <= 4.0, (keep_a, kept_seconds, tails_seconds)


def test_a_run_gives_back_its_tail_when_a_job_of_higher_priority_waits():
    """A fresh farm's parts are whole shares of its first job: an urgent job submitted
    meanwhile waited for minutes. A run ends with the frame it renders and gives the
    rest back while a job of higher priority has frames nobody renders."""
    log = adaptive_log(A, B, frames=100)
    for node in (A, B):
        speed(log, node, 1000, startup_ms=1000)
    claim = emit(log, A, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 0, "count": 50})
    emit(log, B, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 50, "count": 50})
    measured = Measured({"job1": 1.0}, now=6.0, seen={("job1", 0, claim.seq): 0.0})
    finished = [2.0, 3.0, 4.0, 5.0]
    assert split_keep(log.state, A, log.state.jobs["job1"], 0, 50, finished, measured) == 50
    urgent = {**new_job_payload("job2", frames=(1, 20), chunk=1), "adaptive": True}
    emit(log, A, "NEW_JOB", {**urgent, "priority": 10})
    assert split_keep(log.state, A, log.state.jobs["job1"], 0, 50, finished, measured) == 5
    # Once the urgent job's frames are all claimed, runs go on as before.
    emit(log, B, "CLAIM_CHUNK", {"job_id": "job2", "chunk": 0, "count": 20})
    assert split_keep(log.state, A, log.state.jobs["job1"], 0, 50, finished, measured) == 50


def test_a_run_gives_back_its_tail_to_a_job_of_equal_priority_with_less_speed_on_it():
    """Two jobs submitted at once: three of four nodes took parts of the first before
    they heard of the second, which then ended long after it. A node moves to the other
    job (its run ends with the frame it renders) when that evens the two jobs' running
    speeds out: their difference is more than the node's own speed on both."""
    log = adaptive_log(A, B, C, D, frames=120)
    for node in (A, B, C, D):
        speed(log, node, 1000, startup_ms=500)
    claims = {
        node: emit(log, node, "CLAIM_CHUNK", {"job_id": "job1", "chunk": i * 30, "count": 30})
        for i, node in enumerate((A, B, C))
    }
    other = {**new_job_payload("job2", frames=(1, 120), chunk=1), "adaptive": True}
    emit(log, D, "NEW_JOB", other)
    emit(log, D, "CLAIM_CHUNK", {"job_id": "job2", "chunk": 0, "count": 30})
    measured = Measured({"job1": 1.0}, now=6.0, seen={("job1", 0, claims[A].seq): 0.0})
    finished = [2.0, 3.0, 4.0, 5.0]
    # 3 frames a second on job1 against 1 on job2: A moving makes it 2 and 2.
    assert split_keep(log.state, A, log.state.jobs["job1"], 0, 30, finished, measured) == 5
    # B, looking before A's move shows (A holds job1 until its frame is done), leaves
    # the move to A: every holder works out the same movers (on a real farm all four
    # gave back at once when each looked for itself).
    b_seen = Measured({"job1": 1.0}, now=6.0, seen={("job1", 30, claims[B].seq): 0.0})
    assert split_keep(log.state, B, log.state.jobs["job1"], 30, 30, finished, b_seen) == 30
    # Once A has moved (its tail given back, its next run on job2), 2 against 2: B stays.
    emit(
        log,
        A,
        "RELEASE_CHUNK",
        {"job_id": "job1", "chunk": 5, "claim_seq": claims[A].seq, "count": 25},
    )
    emit(log, A, "DONE", {"job_id": "job1", "chunk": 0, "count": 5, "claim_seq": claims[A].seq})
    emit(log, A, "CLAIM_CHUNK", {"job_id": "job2", "chunk": 30, "count": 30})
    assert split_keep(log.state, B, log.state.jobs["job1"], 30, 30, finished, b_seen) == 30


def test_a_fresh_farm_evens_out_two_jobs_before_its_nodes_measured_themselves():
    """Two jobs submitted together to a fresh farm: every node took its part of the
    first before it heard of the second, and none had measured its speed (that takes a
    few frames: a tenth of a short job), so none moved until then and the first job
    ended 25% before the second. Not measured, a node counts as the farm's typical
    one: the first two by id give their runs back, each keeping the frame it renders,
    and the other two stay (4 against 0: 2 and 2)."""
    log = adaptive_log(A, B, C, D, frames=48)
    for i, node in enumerate((A, B, C, D)):
        emit(log, node, "CLAIM_CHUNK", {"job_id": "job1", "chunk": i * 12, "count": 12})
    other = {**new_job_payload("job2", frames=(1, 48), chunk=1), "adaptive": True}
    emit(log, D, "NEW_JOB", other)
    job = log.state.jobs["job1"]
    keep = {
        node: split_keep(log.state, node, job, i * 12, 12, [], Measured(now=0.5))
        for i, node in enumerate((A, B, C, D))
    }
    assert keep == {A: 1, B: 1, C: 12, D: 12}
    # One frame in, the same (its pace so far not known either).
    assert split_keep(log.state, A, job, 0, 12, [4.5], Measured(now=4.5)) == 2


def test_a_node_with_two_slots_moves_one_run_to_even_out_two_jobs():
    """The movers were nodes: a node of two slots rendering two runs of one job moved
    both to the other job, then both back at their next frames, and so on, each move
    paying a start-up. They are runs now: one of its two moves, and then none."""
    log = ActionLog()
    log.add(log.create(A, "PEER_JOINED", {**joined_payload("a"), "slots": 2}))
    payload = {**new_job_payload(frames=(1, 48), chunk=1), "adaptive": True}
    log.add(log.create(A, "NEW_JOB", payload))
    first = emit(log, A, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 0, "count": 24})
    second = emit(log, A, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 24, "count": 24})
    speed(log, A, 1000, startup_ms=500)
    other = {**new_job_payload("job2", frames=(1, 48), chunk=1), "adaptive": True}
    emit(log, A, "NEW_JOB", other)
    job = log.state.jobs["job1"]
    finished = [2.0, 3.0, 4.0]
    seen = {("job1", 0, first.seq): 0.0, ("job1", 24, second.seq): 0.0}
    keep = [
        split_keep(log.state, A, job, c, 24, finished, Measured({}, 5.0, seen)) for c in (0, 24)
    ]
    assert sorted(keep) == [4, 24]
    # The run that moved renders job2 now: 1 against 1, neither moves.
    moved = 0 if keep[0] == 4 else 24
    emit(
        log,
        A,
        "RELEASE_CHUNK",
        {
            "job_id": "job1",
            "chunk": moved + 4,
            "claim_seq": (first if moved == 0 else second).seq,
            "count": 20,
        },
    )
    emit(
        log,
        A,
        "DONE",
        {
            "job_id": "job1",
            "chunk": moved,
            "count": 4,
            "claim_seq": (first if moved == 0 else second).seq,
        },
    )
    run = emit(log, A, "CLAIM_CHUNK", {"job_id": "job2", "chunk": 0, "count": 24})
    stay = 24 - moved
    assert (
        split_keep(
            log.state, A, log.state.jobs["job1"], stay, 24, finished, Measured({}, 6.0, seen)
        )
        == 24
    )
    on_job2 = Measured({}, 6.0, {("job2", 0, run.seq): 5.0})
    assert split_keep(log.state, A, log.state.jobs["job2"], 0, 24, finished, on_job2) == 24


def test_a_run_gives_back_its_tail_to_slots_busy_now_for_one_startup_of_gain():
    """A run gives its tail back to slots busy now when the farm ends sooner by one
    start-up, the job's costs guessed or known (its takers counted in whole frames:
    below). It was three start-ups where the costs were guessed: a node of random
    --seed 9 kept 20 frames that, shared, ended the farm 40 s sooner."""
    log = adaptive_log(A, B, frames=16)
    for node in (A, B):
        speed(log, node, 1000, startup_ms=2000)
    claim = emit(log, A, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 0, "count": 14})
    theirs = emit(log, B, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 14, "count": 2})
    seen = {("job1", 0, claim.seq): 0.0, ("job1", 14, theirs.seq): 1.5}
    measured = Measured({"job1": 1.0}, now=4.0, seen=seen)
    finished = [1.0, 2.0, 3.0, 4.0]
    # 10 frames left at 1 s; B's run (2 s of start-up, 2 frames) ends in 1.5 s, then its
    # start-up: B renders 3 whole frames by 7 s while A renders 7, A alone 10 s (3 s
    # sooner: more than one start-up).
    guessed = log.state.jobs["job1"]
    assert split_keep(log.state, A, guessed, 0, 14, finished, measured) == 11
    known = guessed._replace(costs=(1.0,) * 16)
    assert split_keep(log.state, A, known, 0, 14, finished, measured) == 11
    # With a start-up of 4 s, B renders 2 whole frames by 8 s: 2 s sooner, less than it.
    for node in (A, B):
        speed(log, node, 1000, startup_ms=4000)
    guessed = log.state.jobs["job1"]
    assert split_keep(log.state, A, guessed, 0, 14, finished, measured) == 14


def test_a_run_gives_its_tail_back_to_idle_slots_for_one_startup_of_gain():
    """On slots idle now the gain is no guess, the frames' costs known or not: one
    start-up of gain is enough (a node of a fresh farm kept 32 frames, 62 s, while five
    nodes stood idle 40 s: random --seed 8 ended at 1.145 of the bound)."""
    log = adaptive_log(A, B, frames=14)
    for node in (A, B):
        speed(log, node, 1000, startup_ms=2000)
    claim = emit(log, A, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 0, "count": 14})
    measured = Measured({"job1": 1.0}, now=4.0, seen={("job1", 0, claim.seq): 0.0})
    finished = [1.0, 2.0, 3.0, 4.0]
    # 10 frames left at 1 s; B idle, 2 s of start-up: together 6 s, A alone 10 s.
    job = log.state.jobs["job1"]
    assert job.costs == ()
    assert split_keep(log.state, A, job, 0, 14, finished, measured) == 10
    # B busy for good (a run of another job with frames left to claim): A keeps its run.
    other = {**new_job_payload("job2", frames=(1, 50), chunk=1), "adaptive": True}
    emit(log, A, "NEW_JOB", other)
    emit(log, B, "CLAIM_CHUNK", {"job_id": "job2", "chunk": 0, "count": 5})
    job = log.state.jobs["job1"]
    assert split_keep(log.state, A, job, 0, 14, finished, measured) == 14


def test_a_tail_is_given_back_only_for_what_its_takers_render_in_whole_frames():
    """Each node that takes part of a tail renders whole frames of it after its start-up.
    Counted as a fluid (every idle slot a ninth of a frame), a tail of one frame given
    to nine idle nodes looked 14.4 s sooner, more than a start-up; taken by one node, it
    is 6 s sooner, and the frame costs that node a 14 s start-up: the run keeps it."""
    others = [letter * 16 for letter in "bcdefghij"]
    log = adaptive_log(A, *others, frames=12)
    for node in (A, *others):
        speed(log, node, 10000, startup_ms=14000)
    claim = emit(log, A, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 0, "count": 12})
    job = log.state.jobs["job1"]
    assert job.costs == ()
    measured = Measured({"job1": 10.0}, now=100.0, seen={("job1", 0, claim.seq): 0.0})
    finished = [float(t) for t in range(20, 110, 10)]  # 9 frames done, 10 s apart
    # 3 frames left (30 s alone); one taker ends the last at 14 + 10 = 24 s.
    assert split_keep(log.state, A, job, 0, 12, finished, measured) == 12
    known = job._replace(costs=(1.0,) * 12)  # the same with the costs learned before
    assert split_keep(log.state, A, known, 0, 12, finished, measured) == 12
    # With a start-up of 2 s, A renders 2 of them (20 s) and a taker the last (12 s):
    # 10 s sooner, more than that start-up.
    for node in (A, *others):
        speed(log, node, 10000, startup_ms=2000)
    assert split_keep(log.state, A, log.state.jobs["job1"], 0, 12, finished, measured) < 12


def test_a_last_round_run_counts_the_others_taking_whole_frames():
    """A node sizing its part of the last round counts on each other node rendering
    whole frames after its start-up. 10 frames left; A renders 2 s a frame, eight idle
    nodes 10 s a frame, all after 5 s of start-up. As a fluid, each of the eight took
    0.77 of a frame and A 3.85 frames: A claimed 4, and six nodes paid a start-up for
    a frame each. In whole frames A takes 5 and five others one each: the same end
    (15 s), a start-up fewer."""
    others = [letter * 16 for letter in "bcdefghi"]
    log = adaptive_log(A, *others, frames=10)
    speed(log, A, 2000, startup_ms=5000)
    for node in others:
        speed(log, node, 10000, startup_ms=5000)
    job = log.state.jobs["job1"]
    slots = last_round_slots(log.state, job, A, 2.0, Measured({}, now=0.0))
    assert last_round_work(slots, 10.0, 2.0, 5.0) == 5.0
