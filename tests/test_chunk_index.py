"""The chunk index (core/chunk_index.py) answers as walks over every chunk would, at
every step of random runs of claims, DONEs, backups, releases, failures and peers
leaving, folded in and out of order (late actions re-fold the log)."""

from __future__ import annotations

import random

import pytest
from factories import A, B, C, act, joined_payload, new_job_payload

from peerfarm.core import chunk_index
from peerfarm.core.log import ActionLog
from peerfarm.core.scheduler import _unclaimed, claimable_gaps, claimed_runs
from peerfarm.core.state import CHUNK_DONE, CLAIMED, PENDING, Job, State, able_renderers
from peerfarm.core.summary import frames_by_node

CHUNKS = 120


def walked_segments(job: Job) -> list[tuple[int, int, object]]:
    """Maximal runs of consecutive stored chunks with equal records, by a walk."""
    out: list[tuple[int, int, object]] = []
    for index in sorted(job.chunks):
        record = job.chunks[index]
        if out and out[-1][1] == index and out[-1][2] == record:
            out[-1] = (out[-1][0], index + 1, record)
        else:
            out.append((index, index + 1, record))
    return out


def walked_claimed_runs(job: Job) -> list[tuple[int, int, str, int]]:
    runs: list[tuple[int, int, str, int]] = []
    for index in sorted(i for i, c in job.chunks.items() if c.state == CLAIMED):
        chunk = job.chunks[index]
        if runs:
            first, count, holder, seq = runs[-1]
            if first + count == index and (holder, seq) == (chunk.claim_origin, chunk.claim_seq):
                runs[-1] = (first, count + 1, holder, seq)
                continue
        runs.append((index, 1, chunk.claim_origin, chunk.claim_seq))
    return runs


def walked_gaps(state: State, job: Job, node_id: str, busy: set) -> list[tuple[int, int]]:
    blocked = {
        i
        for i, c in job.chunks.items()
        if c.state != PENDING
        or (node_id in c.failed_on and able_renderers(state, job, c.failed_on))
    } | {i for j, i in busy if j == job.id and i < job.chunk_total}
    gaps, start = [], 0
    for index in sorted(blocked):
        if index > start:
            gaps.append((start, index - start))
        start = index + 1
    if job.chunk_total > start:
        gaps.append((start, job.chunk_total - start))
    return gaps


def walked_frames_by_node(job: Job) -> dict[str, int]:
    counts: dict[str, int] = {}
    for c in job.chunks.values():
        if c.state == CHUNK_DONE and c.done_by:
            counts[c.done_by] = counts.get(c.done_by, 0) + 1
    return dict(sorted(counts.items()))


def random_actions(rng: random.Random, count: int) -> list:
    """A farm of three nodes and a job of CHUNKS one-frame chunks, then ``count`` run
    actions naming runs at random (many lose, or name claims that never held)."""
    actions = [act("NEW_JOB", new_job_payload(frames=(1, CHUNKS), chunk=1), A, 1, 1)]
    seqs = {A: 1, B: 0, C: 0}
    lamport = 1
    for node in (A, B, C):
        seqs[node] += 1
        lamport += 1
        actions.append(act("PEER_JOINED", joined_payload(node[:1]), node, seqs[node], lamport))
    claims: list[tuple[str, int, int, int]] = []  # (origin, seq, chunk, count)
    last = {node: lamport for node in (A, B, C)}
    for _ in range(count):
        lamport += 1
        kind = rng.choice(["CLAIM_CHUNK"] * 4 + ["DONE"] * 4 + ["BACKUP_CHUNK", "RELEASE_CHUNK"])
        if rng.random() < 0.03:
            kind = rng.choice(["CHUNK_FAILED", "PEER_LEFT"])
        if kind not in ("CLAIM_CHUNK", "PEER_LEFT") and not claims:
            kind = "CLAIM_CHUNK"
        origin, claim_seq, first, n = rng.choice(claims) if claims else (A, 0, 0, 1)
        # DONE, RELEASE and failures come from the claim's node
        node = (
            origin if kind in ("DONE", "RELEASE_CHUNK", "CHUNK_FAILED") else rng.choice((A, B, C))
        )
        seqs[node] += 1
        # Lamports a little behind the farm's now and then (a node that has not heard
        # the latest), never behind its own last one.
        stamp = last[node] = max(last[node] + 1, lamport - rng.choice((0, 0, 1, 3)))
        if kind == "PEER_LEFT":
            actions.append(act(kind, {}, node, seqs[node], stamp))
            continue
        if kind == "CLAIM_CHUNK":
            first = rng.randrange(CHUNKS)
            n = rng.randint(1, min(30, CHUNKS - first))
            claims.append((node, seqs[node], first, n))
            payload = {"job_id": "job1", "chunk": first, "count": n}
            actions.append(act(kind, payload, node, seqs[node], stamp))
            continue
        # part of the run now and then (a run that told some of its frames)
        cut = rng.randint(1, n) if rng.random() < 0.3 else n
        payload = {"job_id": "job1", "chunk": first, "count": cut, "claim_seq": claim_seq}
        if kind == "CHUNK_FAILED":
            payload["error"] = "boom"
        actions.append(act(kind, payload, node, seqs[node], stamp))
    return actions


@pytest.mark.parametrize("seed", range(12))
def test_the_index_answers_as_walks_over_every_chunk_would(seed: int) -> None:
    rng = random.Random(seed)
    actions = random_actions(rng, 160)
    # Out of order now and then: a late action re-folds what came after it.
    order = actions[:4] + sorted(actions[4:], key=lambda a: (a.seq + rng.random() * 3, a.origin))
    log = ActionLog()
    for step, action in enumerate(order):
        log.add_all([action], trusted=True)
        job = log.state.jobs.get("job1")
        if job is None:
            continue
        seg = chunk_index.segments(job.chunks)
        assert list(zip(seg.starts, seg.ends, seg.records, strict=True)) == walked_segments(job), (
            step
        )
        assert claimed_runs(job) == walked_claimed_runs(job), step
        assert frames_by_node(job) == walked_frames_by_node(job), step
        busy = {("job1", rng.randrange(CHUNKS)) for _ in range(rng.randint(0, 3))}
        for node in (A, B, C):
            assert claimable_gaps(log.state, job, node, busy) == walked_gaps(
                log.state, job, node, busy
            ), step
        pending = len(job.chunks) < job.chunk_total or any(
            c.state == PENDING for c in job.chunks.values()
        )
        assert _unclaimed(job) == pending
        assert chunk_index.left_pending(job.chunks) == sum(
            1 for c in job.chunks.values() if c.state != PENDING
        )


def test_a_map_without_notes_is_walked_and_a_long_chain_of_notes_is_followed() -> None:
    actions = random_actions(random.Random(99), 200)
    log = ActionLog()
    log.add_all(actions, trusted=True)  # no one asked on the way: every note unfollowed
    job = log.state.jobs["job1"]
    seg = chunk_index.segments(job.chunks)
    assert list(zip(seg.starts, seg.ends, seg.records, strict=True)) == walked_segments(job)
    chunk_index._INDEXED.clear()
    chunk_index._NOTES.clear()
    seg = chunk_index.segments(job.chunks)  # nothing known: a walk
    assert list(zip(seg.starts, seg.ends, seg.records, strict=True)) == walked_segments(job)
