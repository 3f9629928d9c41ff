"""Finished jobs summarised (core/summary.py): once a done job is collected by its
submitter (and the farm enabled job_summaries), its chunk records become runs of who
rendered them. Every order of the same actions, and a snapshot plus its tail, still
fold to one digest; the job reads as it did (chunks done, by whom, failures kept)."""

from __future__ import annotations

import random

import pytest
from factories import A, B, C, joined_payload, new_job_payload
from hypothesis import given, settings
from hypothesis import strategies as st
from test_log import reference_digest
from test_machine import Harness

from peerfarm.core import actions as act
from peerfarm.core import log as log_module
from peerfarm.core import snapshot as snap
from peerfarm.core import summary
from peerfarm.core.actions import Action
from peerfarm.core.digest import canonical
from peerfarm.core.features import JOB_SUMMARIES
from peerfarm.core.log import ActionLog
from peerfarm.core.reducers import reduce
from peerfarm.core.refused import Refused
from peerfarm.core.state import CHUNK_DONE, EMPTY_STATE, JOB_DONE, Job, State
from peerfarm.machine import job_control
from peerfarm.runtime.renderer_logs import chunks_of_interest
from ui.farm_summary import cell_text

NODES = [A, B, C]


@pytest.fixture(autouse=True)
def small_checkpoints(monkeypatch):
    monkeypatch.setattr(log_module, "CHECKPOINT_EVERY", 4)


def _joined(name: str) -> dict:
    return {**joined_payload(name), "features": [JOB_SUMMARIES]}


def history(seed: int, steps: int) -> list[Action]:
    """Three nodes emitting and exchanging actions at random, messages late: jobs
    rendered (claims race, renders fail, copies finish late), collected by their
    submitter, lost frames, retries, cancels, and job_summaries enabled somewhere."""
    rng = random.Random(seed)
    logs = {n: ActionLog() for n in NODES}
    inbox: dict[str, list[Action]] = {n: [] for n in NODES}
    everything: list[Action] = []
    jobs = 0

    def emit(node: str, type_: str, payload: dict) -> None:
        action = logs[node].create(node, type_, payload)
        logs[node].add(action)
        everything.append(action)
        for other in NODES:
            if other != node:
                inbox[other].append(action)

    for node in NODES:
        emit(node, act.PEER_JOINED, _joined(node[:3]))
    for _ in range(steps):
        node = rng.choice(NODES)
        state = logs[node].state
        roll = rng.random()
        mine = [
            (j, i, c)
            for j in state.jobs.values()
            for i, c in j.chunks.items()
            if c.state == "claimed" and c.claim_origin == node
        ]
        others = [
            (j, i, c)
            for j in state.jobs.values()
            for i, c in j.chunks.items()
            if c.state == "claimed" and c.claim_origin != node
        ]
        if roll < 0.08 or not state.jobs:
            jobs += 1
            payload = new_job_payload(
                f"job{jobs}-{node[0]}", (1, rng.randint(1, 10)), rng.randint(1, 3)
            )
            if state.jobs and rng.random() < 0.3:  # a new revision of an earlier job
                payload["supersedes"] = rng.choice(sorted(state.jobs))
            emit(node, act.NEW_JOB, payload)
        elif roll < 0.4:
            job = rng.choice(list(state.jobs.values()))
            emit(node, act.CLAIM_CHUNK, {"job_id": job.id, "chunk": rng.randrange(job.chunk_total)})
        elif roll < 0.65 and mine:
            j, i, c = rng.choice(mine)
            kind = rng.choice([act.DONE, act.DONE, act.DONE, act.RELEASE_CHUNK, act.CHUNK_FAILED])
            payload = {"job_id": j.id, "chunk": i, "claim_seq": c.claim_seq}
            if kind == act.CHUNK_FAILED:
                payload["error"] = "boom"
            emit(node, kind, payload)
        elif roll < 0.68 and others:  # a copy that finishes: counts if first
            j, i, c = rng.choice(others)
            emit(node, act.DONE, {"job_id": j.id, "chunk": i, "claim_seq": c.claim_seq})
        elif roll < 0.78:
            done = [j for j in state.jobs.values() if j.state == JOB_DONE and j.submitter == node]
            if done:
                emit(node, act.JOB_COLLECTED, {"job_id": rng.choice(done).id})
        elif roll < 0.8:
            if rng.random() < 0.5:
                emit(node, act.ENABLE_FEATURE, {"feature": JOB_SUMMARIES})
        elif roll < 0.82:
            done = [
                (j, i, c)
                for j in state.jobs.values()
                for i in range(j.chunk_total)
                if (c := j.chunk(i)).state == CHUNK_DONE
            ]
            if done:
                j, i, c = rng.choice(done)
                emit(node, act.CHUNK_LOST, {"job_id": j.id, "chunk": i, "holder": c.done_by})
        elif roll < 0.84:
            job = rng.choice(list(state.jobs.values()))
            emit(node, rng.choice([act.RETRY_JOB, act.CANCEL_JOB]), {"job_id": job.id})
        else:
            pending = inbox[node]
            rng.shuffle(pending)
            for _ in range(rng.randint(0, len(pending))):
                logs[node].add(pending.pop())
    return everything


def fold(actions: list[Action]) -> State:
    state = EMPTY_STATE
    for a in sorted({(a.origin, a.seq): a for a in actions}.values(), key=lambda a: a.key):
        state = reduce(state, a)
    return state


def without_summaries(actions: list[Action]) -> list[Action]:
    return [a for a in actions if a.type != act.ENABLE_FEATURE]


def reads_alike(summarised: Job, kept: Job) -> None:
    """What faces read of a job: its fields, every chunk's state and holder, failures."""
    skip = {"chunks", "done_runs"}
    for name in Job._fields:
        if name not in skip:
            assert getattr(summarised, name) == getattr(kept, name), name
    for index in range(kept.chunk_total):
        one, other = summarised.chunk(index), kept.chunk(index)
        assert (one.state, one.done_by) == (other.state, other.done_by), index
        if other.failed_on or other.attempts or other.error:
            assert one == other  # a failure on the way keeps its whole record
    assert summary.frames_by_node(summarised) == summary.frames_by_node(kept)
    assert summary.done_chunks(summarised) == summary.done_chunks(kept)
    assert summarised.display_state == kept.display_state
    # `peerfarm logs` (which chunks, on which nodes) and the app's frame grid.
    assert chunks_of_interest(summarised, None) == chunks_of_interest(kept, None)
    for index in range(kept.chunk_total):
        assert cell_text(summarised, index, {}) == cell_text(kept, index, {})


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32), steps=st.integers(10, 160), cut=st.floats(0, 1))
def test_summary_and_tail_fold_to_the_full_digest(seed, steps, cut):
    actions = history(seed, steps)
    full = ActionLog()
    shuffled = list(actions)
    random.Random(seed).shuffle(shuffled)
    full.add_all(shuffled)  # any arrival order: late actions re-fold across summaries
    assert full.digest() == reference_digest(actions)
    count = int(len(full) * cut)
    if count:
        full.compact(count)
    loaded = snap.log_from_snapshot(snap.decode(snap.encode(snap.snapshot_of(full))))
    assert loaded.base_state == full.base_state
    loaded.add_all(full.actions())
    assert loaded.digest() == reference_digest(actions)


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32), steps=st.integers(10, 160))
def test_a_summarised_job_reads_as_its_records(seed, steps):
    actions = history(seed, steps)
    state, kept = fold(actions), fold(without_summaries(actions))
    assert set(state.jobs) == set(kept.jobs)
    for job_id, job in state.jobs.items():
        if job.done_runs:
            assert job.state == JOB_DONE and job.collected
            assert JOB_SUMMARIES in state.features
            assert not kept.jobs[job_id].done_runs
        reads_alike(job, kept.jobs[job_id])


def test_histories_do_summarise():
    """The properties above are not empty: jobs get summarised, at JOB_COLLECTED and at
    the ENABLE_FEATURE after it, and some keep a failed chunk's record."""
    at_collect = at_enable = with_failure = 0
    for seed in range(60):
        actions = history(seed, 160)
        for job in fold(actions).jobs.values():
            if not job.done_runs:
                continue
            with_failure += bool(job.chunks)
            collected = next(
                a for a in actions if a.type == act.JOB_COLLECTED and a.payload["job_id"] == job.id
            )
            enabled = min(a.key for a in actions if a.type == act.ENABLE_FEATURE)
            if enabled < collected.key:
                at_collect += 1
            else:
                at_enable += 1
    assert at_collect and at_enable and with_failure


def _done_job(log: ActionLog, job_id: str = "j", frames: int = 6) -> None:
    log.add(log.create(B, act.NEW_JOB, new_job_payload(job_id, (1, frames), 1)))
    for chunk in range(frames):
        node = (A, C)[chunk // 3 % 2]  # runs of three chunks by one node
        claim = log.create(node, act.CLAIM_CHUNK, {"job_id": job_id, "chunk": chunk})
        log.add(claim)
        log.add(
            log.create(node, act.DONE, {"job_id": job_id, "chunk": chunk, "claim_seq": claim.seq})
        )


def _farm(enable: bool = True) -> ActionLog:
    log = ActionLog()
    for node in NODES:
        log.add(log.create(node, act.PEER_JOINED, _joined(node[:3])))
    if enable:
        log.add(log.create(A, act.ENABLE_FEATURE, {"feature": JOB_SUMMARIES}))
    return log


def test_collecting_a_done_job_summarises_it_once_the_farm_enabled_it():
    log = _farm()
    _done_job(log)
    assert not log.state.jobs["j"].done_runs  # done, not collected yet: records kept
    log.add(log.create(B, act.JOB_COLLECTED, {"job_id": "j"}))
    job = log.state.jobs["j"]
    assert job.done_runs == ((0, 3, A), (3, 3, C))
    assert len(job.chunks) == 0
    assert summary.frames_by_node(job) == {A: 3, C: 3}

    off = _farm(enable=False)
    _done_job(off)
    off.add(off.create(B, act.JOB_COLLECTED, {"job_id": "j"}))
    assert not off.state.jobs["j"].done_runs  # an older build's farm: records kept
    # ... until the farm enables it: jobs collected before are summarised then.
    off.add(off.create(A, act.ENABLE_FEATURE, {"feature": JOB_SUMMARIES}))
    assert off.state.jobs["j"].done_runs == job.done_runs


def test_a_job_not_summarised_encodes_as_before_the_summary_existed():
    """The digest leaves done_runs out while it is empty: a build without it encodes
    the same fields (so the two agree until the farm enables job_summaries)."""
    log = _farm(enable=False)
    _done_job(log)
    (entry,) = canonical(log.state)[0]
    assert len(entry[1]) == len(Job._fields) - 2  # neither chunks nor done_runs
    log.add(log.create(A, act.ENABLE_FEATURE, {"feature": JOB_SUMMARIES}))
    log.add(log.create(B, act.JOB_COLLECTED, {"job_id": "j"}))
    (entry,) = canonical(log.state)[0]
    assert len(entry[1]) == len(Job._fields) - 1
    assert entry[2] == []  # no chunk records left


def test_late_actions_on_a_summarised_job_change_nothing():
    log = _farm()
    _done_job(log)
    log.add(log.create(B, act.JOB_COLLECTED, {"job_id": "j"}))
    before = log.state.jobs["j"]
    late = [
        (C, act.DONE, {"job_id": "j", "chunk": 0, "claim_seq": 1}),
        (C, act.CLAIM_CHUNK, {"job_id": "j", "chunk": 1}),
        (A, act.CHUNK_LOST, {"job_id": "j", "chunk": 0, "holder": A}),
        (A, act.RELEASE_CHUNK, {"job_id": "j", "chunk": 0, "claim_seq": 2}),
        (A, act.CHUNK_FAILED, {"job_id": "j", "chunk": 0, "claim_seq": 2, "error": "x"}),
        (B, act.RETRY_JOB, {"job_id": "j"}),
        (B, act.CANCEL_JOB, {"job_id": "j"}),
        (C, act.PEER_LEFT, {}),
    ]
    for origin, type_, payload in late:
        log.add(log.create(origin, type_, payload))
    assert log.state.jobs["j"] == before  # the same job record: nothing counted
    assert [(before.chunk(i).state, before.chunk(i).done_by) for i in range(6)] == [
        (CHUNK_DONE, A if i < 3 else C) for i in range(6)
    ]


def test_a_summarised_job_is_refused_a_retry_and_its_scene_rendered_again_works():
    log = _farm()
    _done_job(log)
    log.add(log.create(B, act.JOB_COLLECTED, {"job_id": "j"}))
    with pytest.raises(Refused, match="job j is done: there is nothing to retry"):
        job_control.retry(log.state, "j")
    # Submitted again (a new revision of it): a job of its own, rendered as any other.
    again = {**new_job_payload("k", (1, 6), 1), "supersedes": "j"}
    log.add(log.create(B, act.NEW_JOB, again))
    assert log.state.jobs["j"].state == JOB_DONE  # a finished job is not cancelled
    claim = log.create(A, act.CLAIM_CHUNK, {"job_id": "k", "chunk": 0})
    log.add(claim)
    log.add(log.create(A, act.DONE, {"job_id": "k", "chunk": 0, "claim_seq": claim.seq}))
    assert log.state.jobs["k"].frames_done == 1
    _done_job(log, "k2")
    log.add(log.create(B, act.JOB_COLLECTED, {"job_id": "k2"}))
    assert log.state.jobs["k2"].done_runs


def test_status_of_a_summarised_job_shows_what_it_showed():
    """The node machine's status (what `status` and `status --json` print) of one job,
    summarised and not."""
    entries = []
    for enable in (True, False):
        h = Harness()
        for node in NODES:
            h.receive(node, h.peer_action(node, act.PEER_JOINED, _joined(node[:3])))
        if enable:
            h.receive(A, h.peer_action(A, act.ENABLE_FEATURE, {"feature": JOB_SUMMARIES}))
        h.receive(B, h.peer_action(B, act.NEW_JOB, new_job_payload("j", (1, 8), 2)))
        for chunk in range(4):
            node = (A, C)[chunk % 2]
            claim = h.peer_action(node, act.CLAIM_CHUNK, {"job_id": "j", "chunk": chunk})
            done = h.peer_action(
                node, act.DONE, {"job_id": "j", "chunk": chunk, "claim_seq": claim["seq"]}
            )
            h.receive(node, claim, done)
        h.receive(B, h.peer_action(B, act.JOB_COLLECTED, {"job_id": "j"}))
        assert bool(h.machine.state.jobs["j"].done_runs) == enable
        (entry,) = h.machine.status()["jobs"]
        entries.append(entry)
    assert entries[0] == entries[1]
    assert entries[0]["frames_by_node"] == {A: 4, C: 4}
    assert entries[0]["state"] == "done" and entries[0]["frames_done"] == 8
