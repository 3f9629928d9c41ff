"""Which chunks are taken first (order: spread), and new revisions of a job."""

from __future__ import annotations

import pytest
from factories import A, B, act, builtin_request, joined_payload, new_job_payload

from peerfarm.core.chunk_order import chunk_order, spread
from peerfarm.core.log import ActionLog
from peerfarm.core.scheduler import pick_chunk
from peerfarm.job_request import JobRequest, SubmitError
from peerfarm.jobspec import build_new_job
from peerfarm.renderers.registry import renderer_plugins as builtin_plugins


def farm(*actions):
    log = ActionLog()
    for a in actions:
        assert log.add(a), a
    return log.state


@pytest.mark.parametrize("total", [0, 1, 2, 3, 7, 8, 100, 1000])
def test_spread_takes_every_chunk_once(total):
    assert sorted(spread(total)) == list(range(total))
    for rank in range(3):
        assert sorted(chunk_order(total, "spread", rank, 3)) == list(range(total))
        assert sorted(chunk_order(total, "in-order", rank, 3)) == list(range(total))


def test_spread_covers_the_shot_early():
    assert list(spread(9)) == [0, 8, 4, 2, 6, 1, 3, 5, 7]
    # After k picks of a long job, no gap between picked chunks is more than about
    # total / (k - 1): the artist sees the whole shot, ever finer.
    first = sorted(list(spread(1000))[:17])
    assert max(b - a for a, b in zip(first, first[1:], strict=False)) <= 1000 // 16 + 1
    # Two nodes start at different places of the sequence.
    assert [next(chunk_order(9, "spread", r, 2)) for r in (0, 1)] == [0, 8]


def test_in_order_starts_at_the_nodes_share():
    assert list(chunk_order(6, "in-order", 1, 2)) == [3, 4, 5, 0, 1, 2]


def test_pick_chunk_follows_the_jobs_order():
    joined = act("PEER_JOINED", joined_payload("b"), B, 1, 1)
    payload = {**new_job_payload(frames=(1, 9), chunk=1), "order": "spread"}
    state = farm(joined, act("NEW_JOB", payload, A, 1, 2))
    picks = []
    for seq in range(2, 7):
        pick = pick_chunk(state, B)
        picks.append(pick[1])
        state = farm(
            joined,
            act("NEW_JOB", payload, A, 1, 2),
            *[
                act("CLAIM_CHUNK", {"job_id": "job1", "chunk": c}, B, s, 2 + s)
                for s, c in zip(range(2, seq + 1), picks, strict=True)
            ],
        )
    assert picks == [0, 8, 4, 2, 6]


def test_a_new_revision_cancels_the_old_one_everywhere():
    old = act("NEW_JOB", new_job_payload("job1"), A, 1, 1)
    new = act("NEW_JOB", {**new_job_payload("job2"), "supersedes": "job1"}, A, 2, 2)
    claimed = act("CLAIM_CHUNK", {"job_id": "job1", "chunk": 0}, B, 1, 2)
    for order in ([old, claimed, new], [new, claimed, old], [claimed, new, old]):
        log = ActionLog()
        for a in order:  # a gap (job2 before job1) is held until it is filled
            log.add(a)
        state = log.state
        assert state.jobs["job1"].state == "cancelled"
        assert state.jobs["job2"].state == "active"
        assert state.jobs["job2"].supersedes == "job1"


def test_a_revision_of_a_finished_job_leaves_it_done():
    old = act("NEW_JOB", new_job_payload("job1", frames=(1, 2), chunk=2), A, 1, 1)
    claim = act("CLAIM_CHUNK", {"job_id": "job1", "chunk": 0}, B, 1, 2)
    done = act("DONE", {"job_id": "job1", "chunk": 0, "claim_seq": 1}, B, 2, 3)
    new = act("NEW_JOB", {**new_job_payload("job2"), "supersedes": "job1"}, A, 2, 4)
    assert farm(old, claim, done, new).jobs["job1"].state == "done"


def test_the_job_request_carries_order_and_supersedes():
    request = builtin_request(order="spread", supersedes="abc123")
    assert JobRequest.from_wire(request.to_wire()) == request.replace(scene_notes=())
    payload = build_new_job(request, "job2", builtin_plugins(), {"builtin"})
    assert (payload["order"], payload["supersedes"]) == ("spread", "abc123")
    plain = build_new_job(builtin_request(), "job3", builtin_plugins(), {"builtin"})
    assert "order" not in plain and "supersedes" not in plain
    with pytest.raises(SubmitError, match="--order sideways: choose in-order or spread"):
        build_new_job(builtin_request(order="sideways"), "j", builtin_plugins(), {"builtin"})
    with pytest.raises(SubmitError, match="supersedes"):
        build_new_job(builtin_request(supersedes="NOT AN ID"), "j", builtin_plugins(), {"builtin"})
