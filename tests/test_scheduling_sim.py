"""The scheduler on a simulated farm (the real node machine): adaptive runs, backups
of the runs expected to finish last, hung renderers, and the scheduling benchmark."""

from __future__ import annotations

import dataclasses
import json
import random

from peerfarm.cli.main import main
from peerfarm.core import actions as act
from peerfarm.sim import JobPlan, NodePlan, Schedule, run_schedule
from peerfarm.sim.network import NetworkConditions
from peerfarm.sim.schedule import node_ids
from peerfarm.sim.scheduling_bench import (
    SUBMIT_AT,
    Scenario,
    complexity_curve,
    measure,
    schedule_for,
)


def _farm(nodes: list[NodePlan], frames: int = 60, **extra) -> Schedule:
    return Schedule(
        node_ids=node_ids(random.Random(3), len(nodes)),
        nodes=nodes,
        jobs=[JobPlan("job-s", 1.0, 0, 1, frames, 1, adaptive=True)],
        network=NetworkConditions(max_delay=0.01),
        frame_time=0.5,
        fault_end=1.0,
        startup=0.5,
        **extra,
    )


def _warmed(schedule: Schedule, frames: int = 20) -> Schedule:
    """The schedule with a short job before its own: the nodes know their speeds (its
    first parts measured them) when the test's job arrives."""
    job = schedule.jobs[0]
    warm = dataclasses.replace(job, job_id="job-w", frame_end=frames)
    return dataclasses.replace(schedule, jobs=[warm, dataclasses.replace(job, at=15.0)])


def _by(result, schedule, type_):
    index = {nid: i for i, nid in enumerate(schedule.node_ids)}
    return [(index[a.origin], a) for a in result.emitted(type_)]


def test_first_parts_are_given_back_by_the_slow_node_and_runs_follow_speed():
    schedule = _farm([NodePlan(1, 1.0), NodePlan(1, 1.0), NodePlan(1, 4.0)], frames=200)
    result = run_schedule(schedule, random.Random(1), 1)
    assert result.jobs == {"job-s": "done"}
    claims = _by(result, schedule, act.CLAIM_CHUNK)
    sizes = {i: [a.payload.get("count", 1) for n, a in claims if n == i] for i in range(3)}
    # Nobody knew its speed: each node's first run is its equal part of the job.
    assert sorted(sizes[i][0] for i in range(3)) == [66, 67, 67]
    # Measured from the parts' first frames, shared while they render.
    speeds = {i: a.payload["frame_ms"] for i, a in _by(result, schedule, act.NODE_SPEED)}
    assert speeds[2] > 2 * max(speeds[0], speeds[1])  # measured, not told
    # The slow node gives back what the fast ones render sooner; it claims nothing more,
    # and they take what it gave back in runs after their parts.
    given = [
        a.payload.get("count", 1) for n, a in _by(result, schedule, act.RELEASE_CHUNK) if n == 2
    ]
    assert sum(given) > 20 and len(sizes[2]) == 1
    assert len(sizes[0]) >= 2 and len(sizes[1]) >= 2


def test_a_hung_renderer_is_backed_up_and_the_job_completes():
    # n2's second render (its first of job-s) hangs: never a frame, never an exit.
    nodes = [NodePlan(1, 1.0), NodePlan(1, 1.0), NodePlan(1, 1.0, hang_after=1)]
    schedule = _warmed(_farm(nodes, hung_limit=0.0))  # the node itself never gives up
    result = run_schedule(schedule, random.Random(1), 1)
    assert result.jobs == {"job-w": "done", "job-s": "done"}
    # n2's second claim is its second render (its sequence numbers also count other
    # actions it emits: PEER_JOINED, NODE_SPEED, ENABLE_FEATURE, ...).
    hung_claim = [a for n, a in _by(result, schedule, act.CLAIM_CHUNK) if n == 2][1]
    backups = _by(result, schedule, act.BACKUP_CHUNK)
    assert [a.payload["claim_seq"] for _, a in backups] == [hung_claim.seq]
    copier = backups[0][0]
    done = [
        a
        for n, a in _by(result, schedule, act.DONE)
        if a.payload["chunk"] == hung_claim.payload["chunk"] and a.payload["job_id"] == "job-s"
    ]
    assert [a.origin for a in done] == [schedule.node_ids[copier]]  # the copy's DONE won


def test_a_first_part_that_hangs_before_its_first_frame_is_copied():
    """A fresh farm's part whose renderer hangs from the start: its holder never
    measured itself, and the idle nodes never looked at the run again (their next look
    skipped runs of unmeasured holders); the job never ended. Such a holder counts as
    fast as the idle node, as the copy's decision counts it."""
    nodes = [NodePlan(1, 1.0), NodePlan(1, 1.0), NodePlan(1, 1.0, hang_after=0)]
    schedule = _farm(nodes, hung_limit=0.0)
    result = run_schedule(schedule, random.Random(1), 1)
    assert result.jobs == {"job-s": "done"}
    (hung,) = [a for n, a in _by(result, schedule, act.CLAIM_CHUNK) if n == 2]
    backups = _by(result, schedule, act.BACKUP_CHUNK)
    # (Copied in pieces: the next test.)
    assert backups and {a.payload["claim_seq"] for _, a in backups} == {hung.seq}


def test_a_renderer_that_hangs_on_a_long_run_gives_the_rest_back_at_once():
    """A warm farm (speeds known); the 1 s node's renderer hangs at the start of its
    run of the 400-frame job, and its node never stops it (no hung limit). Before, the
    idle nodes left the run alone (its holder gives its tail back, at a frame's end:
    never), copied all of it once it was twice past its estimate, and one node rendered
    it alone: the job ended 184 s after its submission (seed 1), 2.3 times the three
    working nodes' bound of 80 s. Now the holder looks while the frame is stuck and
    gives back the frames after it; only that frame is copied."""
    nodes = [NodePlan(1, 1.0), NodePlan(1, 1.0), NodePlan(1, 2.0), NodePlan(1, 1.0, hang_after=1)]
    schedule = _warmed(_farm(nodes, frames=400, hung_limit=0.0, converge_within=5000.0))
    result = run_schedule(schedule, random.Random(1), 1)
    assert result.jobs == {"job-w": "done", "job-s": "done"}
    given = [a for n, a in _by(result, schedule, act.RELEASE_CHUNK) if n == 3]
    assert sum(a.payload.get("count", 1) for a in given) > 50
    backups = [
        a for _, a in _by(result, schedule, act.BACKUP_CHUNK) if a.payload["job_id"] == "job-s"
    ]
    assert backups and all(a.payload.get("count", 1) <= 2 for a in backups)
    # Three nodes render 5 frames a second: 80 s for 400 frames.
    assert result.done_at["job-s"] - 15.0 < 1.25 * 80.0


def test_a_fresh_farms_part_hung_before_its_first_frame_gives_the_rest_back():
    """A fresh farm's part whose renderer hangs from the start: its holder has measured
    nothing, so it goes by the slowest node the farm has measured once one has; its
    first frame runs 16 times that, and it gives back every frame after it. Before, the
    idle nodes waited for the part (100 frames) to be twice past its estimate and the
    first of them copied all of it (the job ended 152 s after its submission, seed 1),
    or copied it in pieces (136 s); now 89 s, against a bound of 80 s."""
    nodes = [NodePlan(1, 1.0), NodePlan(1, 1.0), NodePlan(1, 2.0), NodePlan(1, 1.0, hang_after=0)]
    schedule = _farm(nodes, frames=400, converge_within=5000.0)
    result = run_schedule(schedule, random.Random(1), 1)
    assert result.jobs == {"job-s": "done"}
    (hung,) = [a for n, a in _by(result, schedule, act.CLAIM_CHUNK) if n == 3]
    given = [a for n, a in _by(result, schedule, act.RELEASE_CHUNK) if n == 3]
    assert sum(a.payload.get("count", 1) for a in given) == hung.payload["count"] - 1
    copies = [a for _, a in _by(result, schedule, act.BACKUP_CHUNK)]
    assert copies and all(a.payload.get("count", 1) == 1 for a in copies)
    assert result.done_at["job-s"] - 1.0 < 1.25 * 80.0


def test_a_renderer_past_the_hung_limit_is_stopped_and_counted_a_failure():
    nodes = [NodePlan(1, 1.0), NodePlan(1, 1.0, hang_after=2)]  # its second render of job-s
    schedule = _warmed(
        _farm(nodes, frames=400, hung_limit=2.0, backups=False, converge_within=900.0)
    )
    result = run_schedule(schedule, random.Random(1), 1)
    assert result.jobs == {"job-w": "done", "job-s": "done"}
    failed = [a for n, a in _by(result, schedule, act.CHUNK_FAILED) if n == 1]
    assert failed and all("stopped as hung" in a.payload["error"] for a in failed)
    assert any(
        "ran" in line and "times this node's estimate; stopping it" in line for line in result.trace
    )


def test_a_scene_whose_renderer_never_ends_fails_the_job_with_why():
    """Every node's renderer hangs on the job's first frame: no node has a frame time
    of the job to go by, so nothing counted as hung and the job rendered "0/60 frames"
    forever. A job's first frame on a node now gets FIRST_FRAME_SECONDS times the hung
    limit (four hours at the default; 72 s here), and the job fails saying what to do."""
    nodes = [NodePlan(1, 1.0, hang_after=0) for _ in range(3)]
    schedule = _farm(nodes, hung_limit=0.05, backups=False, converge_within=900.0)
    result = run_schedule(schedule, random.Random(1), 1)
    assert result.jobs == {"job-s": "failed"}
    failed = [a.payload["error"] for _, a in _by(result, schedule, act.CHUNK_FAILED)]
    assert len({n for n, _ in _by(result, schedule, act.CHUNK_FAILED)}) == 3  # on each node
    assert all("ran 72 s without finishing a frame of this job" in e for e in failed)
    assert all("--hung-limit 0.05 allows 72 s" in e and "higher --hung-limit" in e for e in failed)


def test_the_benchmark_beats_the_baseline_on_a_mixed_farm():
    scenario = Scenario((1.0, 1.0, 4.0, 7.0), tuple(complexity_curve("ramp", 120)), 2.0, seed=1)
    ours, base = measure(scenario, "peerfarm"), measure(scenario, "baseline")
    assert ours["lower_bound"] == base["lower_bound"] == round(scenario.lower_bound, 2)
    assert 1.0 <= ours["ratio"] < base["ratio"]


def test_a_long_job_on_a_fresh_mixed_farm_has_only_the_last_frames_of_runs_copied():
    """A fresh farm cuts its first job into equal parts, one a node. On 1,500 frames a
    fast node done with its part copied the rest of a slow node's part (136 frames); a
    copied run is never given back, and the job ended at 4.9 times the lower bound. Idle
    nodes now leave a run's tail to its holder, and copy only its last frames."""
    speeds = (1.0, 1.0, 2.0, 2.0, 4.0, 4.0, 7.0, 7.0)
    scenario = Scenario(speeds, tuple(complexity_curve("wave", 1000)), 5.0, 3, "wave")
    schedule = schedule_for(scenario, "peerfarm")
    result = run_schedule(schedule, random.Random(scenario.seed), scenario.seed)
    assert result.jobs == {"job-bench": "done"}
    copies = [a.payload.get("count", 1) for a in result.emitted(act.BACKUP_CHUNK)]
    assert max(copies, default=0) <= 2  # (before: a copy of 99 frames)
    assert result.done_at["job-bench"] - SUBMIT_AT < 1.10 * scenario.lower_bound


def test_bench_schedule_prints_one_json_object(capsys):
    assert (
        main(["bench", "schedule", "--speeds", "1,3", "--frames", "40", "--startup", "1", "--json"])
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"peerfarm", "baseline", "scenario"}
    for policy in ("peerfarm", "baseline"):
        assert set(out[policy]) >= {"makespan", "lower_bound", "ratio"}
        assert out[policy]["makespan"] >= out[policy]["lower_bound"] > 0
    assert out["scenario"]["speeds"] == [1.0, 3.0] and out["scenario"]["frames"] == 40


def test_bench_schedule_refuses_bad_input(capsys, tmp_path):
    assert main(["bench", "schedule", "--speeds", "1,-2"]) == 1
    assert "--speeds 1,-2: give positive seconds" in capsys.readouterr().err
    assert main(["bench", "schedule", "--complexity", "nosuch"]) == 1
    assert "not a curve (flat, ramp, wave, spikes, tail) nor a file" in capsys.readouterr().err
    costs = tmp_path / "costs.txt"
    costs.write_text("1\n2\n8\n")
    assert main(["bench", "schedule", "--speeds", "1,2", "--complexity", str(costs), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["scenario"]["frames"] == 3


def _run_times(result, job_id):
    """(claimed at, done at) of each run of a job, by its claim."""
    claimed = {
        (a.origin, a.seq): t
        for t, _, a in result.actions
        if a.type == act.CLAIM_CHUNK and a.payload["job_id"] == job_id
    }
    return [
        (claimed[(a.origin, a.payload["claim_seq"])], t)
        for t, _, a in result.actions
        if a.type == act.DONE
        and a.payload["job_id"] == job_id
        and (a.origin, a.payload["claim_seq"]) in claimed
    ]


def test_equal_priority_jobs_share_the_farm_and_finish_together():
    nodes = [NodePlan(1, 1.0), NodePlan(1, 1.0), NodePlan(1, 2.0), NodePlan(1, 3.0)]
    jobs = [
        JobPlan("job-a", 1.0, 0, 1, 120, 1, adaptive=True),
        JobPlan("job-b", 1.0, 1, 1, 120, 1, adaptive=True),
    ]
    schedule = Schedule(
        node_ids=node_ids(random.Random(4), len(nodes)),
        nodes=nodes,
        jobs=jobs,
        network=NetworkConditions(max_delay=0.01),
        frame_time=0.5,
        fault_end=1.0,
        startup=0.5,
    )
    # Over several runs (the nodes hear of the jobs in another order each time): three
    # of four nodes took parts of one job before they heard of the other, and a slow
    # node kept its tail of one job counting on no help from the other's nodes: 4 runs
    # in 12 ended more than 10% apart (25% at worst).
    for seed in range(6):
        result = run_schedule(schedule, random.Random(seed), seed)
        assert result.jobs == {"job-a": "done", "job-b": "done"}
        a, b = (result.done_at[j] - 1.0 for j in ("job-a", "job-b"))
        assert abs(a - b) <= 0.1 * max(a, b), (seed, a, b)  # not one after the other


def test_equal_priority_jobs_on_a_fresh_farm_finish_together():
    """A fresh farm of four nodes alike, two short jobs, the second heard 0.3 s after
    the first: every node took its part of the first before it heard of the second,
    and none had measured its speed, which takes a node a tenth of such a job. The
    nodes waited to measure themselves before any moved, and one moved at a time: the
    first job ended 21-34% before the second over 12 runs (real processes: 25%)."""
    schedule = Schedule(
        node_ids=node_ids(random.Random(4), 4),
        nodes=[NodePlan(1, 1.0)] * 4,
        jobs=[
            JobPlan("job-a", 1.0, 0, 1, 48, 1, adaptive=True),
            JobPlan("job-b", 1.3, 1, 1, 48, 1, adaptive=True),
        ],
        network=NetworkConditions(max_delay=0.01),
        frame_time=3.5,
        fault_end=1.0,
        startup=1.0,
    )
    apart = []
    for seed in range(6):
        result = run_schedule(schedule, random.Random(seed), seed)
        assert result.jobs == {"job-a": "done", "job-b": "done"}
        a, b = result.done_at["job-a"] - 1.0, result.done_at["job-b"] - 1.3
        apart.append(abs(a - b) / max(a, b))
    # Each run of frames renders up to 25% slower or faster than the next (the
    # simulator's noise), so the jobs' runs alone end them a few percent apart: 13% at
    # worst in these six runs, 4 of 40 runs more than 10% apart.
    assert max(apart) <= 0.15 and sum(apart) / len(apart) <= 0.08, apart


def test_a_priority_job_gets_its_first_frames_within_one_run():
    nodes = [NodePlan(1, 1.0), NodePlan(1, 1.0), NodePlan(1, 2.0)]
    jobs = [
        JobPlan("job-big", 1.0, 0, 1, 300, 1, adaptive=True),
        JobPlan("job-urgent", 30.0, 1, 1, 20, 1, priority=10, adaptive=True),
    ]
    schedule = Schedule(
        node_ids=node_ids(random.Random(5), len(nodes)),
        nodes=nodes,
        jobs=jobs,
        network=NetworkConditions(max_delay=0.01),
        frame_time=0.5,
        fault_end=1.0,
        startup=0.5,
    )
    result = run_schedule(schedule, random.Random(2), 2)
    assert result.jobs == {"job-big": "done", "job-urgent": "done"}
    runs = _run_times(result, "job-big")
    longest = max(done - claimed for claimed, done in runs)
    first_done = min(done for _, done in _run_times(result, "job-urgent"))
    assert first_done - 30.0 <= longest  # whoever frees a slot first takes it
    # The fresh farm's parts of the big job give their tails back at their next frame.
    first_claim = min(
        t
        for t, _, a in result.actions
        if a.type == act.CLAIM_CHUNK and a.payload["job_id"] == "job-urgent"
    )
    assert first_claim - 30.0 < 3.0
    # While the urgent job had frames nobody had claimed, nobody claimed the big one's.
    urgent_claims = [
        t
        for t, _, a in result.actions
        if a.type == act.CLAIM_CHUNK and a.payload["job_id"] == "job-urgent"
    ]
    big_claims_meanwhile = [
        t
        for t, _, a in result.actions
        if a.type == act.CLAIM_CHUNK
        and a.payload["job_id"] == "job-big"
        and 30.1 < t < max(urgent_claims)
    ]
    assert not big_claims_meanwhile


def test_requirements_and_max_nodes_hold_at_every_step():
    gib = 2**30
    nodes = [
        NodePlan(1, 1.0, tags=("gpu",), memory=16 * gib),
        NodePlan(1, 2.0, tags=("gpu", "lab2"), memory=32 * gib),
        NodePlan(1, 1.0, tags=("gpu",), memory=4 * gib),  # too little memory
        NodePlan(1, 1.0),
        NodePlan(2, 1.0, memory=64 * gib),
    ]
    jobs = [
        JobPlan(
            "job-gpu", 1.0, 3, 1, 40, 1, adaptive=True, require=("gpu",), require_memory=8 * gib
        ),
        JobPlan("job-two", 1.0, 4, 1, 60, 1, adaptive=True, max_nodes=2),
        JobPlan("job-fixed", 2.0, 0, 1, 30, 3, max_nodes=1),
    ]
    schedule = Schedule(
        node_ids=node_ids(random.Random(6), len(nodes)),
        nodes=nodes,
        jobs=jobs,
        # Delays let nodes claim at once, so claims past the limit race and lose.
        network=NetworkConditions(min_delay=0.01, max_delay=0.2),
        frame_time=0.5,
        fault_end=1.0,
        startup=0.5,
    )
    # The farm checks after every event, on every node, that no job is rendered by more
    # nodes than its max_nodes (peerfarm/sim/farm.py): a violation fails the run.
    result = run_schedule(schedule, random.Random(3), 3)
    assert result.jobs == {"job-gpu": "done", "job-two": "done", "job-fixed": "done"}
    by_job: dict[str, set[int]] = {}
    for n, a in _by(result, schedule, act.DONE) + _by(result, schedule, act.CLAIM_CHUNK):
        by_job.setdefault(a.payload["job_id"], set()).add(n)
    for n, a in _by(result, schedule, act.BACKUP_CHUNK):
        by_job.setdefault(a.payload["job_id"], set()).add(n)
    # Only nodes with the gpu tag and 8 GiB ever claimed or rendered the gpu job.
    assert by_job["job-gpu"] == {0, 1}
    # The limited jobs were rendered by several nodes over time, never more at once.
    assert len(by_job["job-two"]) >= 2
    assert len(by_job["job-fixed"]) >= 1


def test_a_run_that_overruns_gives_its_tail_back_and_its_kept_frames_count():
    # Costs climb 1 to 8 along the job and nobody knows them yet: the last runs, sized
    # from the cheaper frames before them, take longer than sized. Their holder gives
    # the frames it has not reached back (RELEASE_CHUNK of the run's tail) once the
    # others should be idle, and stops once the frames it kept are done.
    frames = 120
    schedule = dataclasses.replace(
        _farm([NodePlan(1, 1.0), NodePlan(1, 1.0), NodePlan(1, 3.0)], frames=frames),
        jobs=[
            JobPlan(
                "job-s",
                1.0,
                0,
                1,
                frames,
                1,
                adaptive=True,
                costs=tuple(complexity_curve("ramp", frames)),
            )
        ],
        startup=2.0,
    )
    result = run_schedule(schedule, random.Random(1), 1)
    assert result.jobs == {"job-s": "done"}
    releases = result.emitted(act.RELEASE_CHUNK)
    assert releases  # no fault here: every release is a run's tail given back
    claims = {(a.origin, a.seq): a.payload for a in result.emitted(act.CLAIM_CHUNK)}
    done = result.emitted(act.DONE)
    for release in releases:
        claim = claims[(release.origin, release.payload["claim_seq"])]
        first, end = claim["chunk"], claim["chunk"] + claim.get("count", 1)
        tail = release.payload["chunk"]
        assert first < tail < end  # a tail: the holder keeps the run's first frames
        assert release.payload["chunk"] + release.payload.get("count", 1) <= end
        # The holder's DONEs of that claim (a long run tells its finished chunks as it
        # goes) name the frames it kept, and only them.
        theirs = [
            range(a.payload["chunk"], a.payload["chunk"] + a.payload.get("count", 1))
            for a in done
            if a.origin == release.origin and a.payload["claim_seq"] == release.payload["claim_seq"]
        ]
        assert sorted(i for run in theirs for i in run) == list(range(first, tail))
    # Every frame was rendered and counted once: the released ones by new claims.
    counted = sorted(
        i
        for a in done
        for i in range(a.payload["chunk"], a.payload["chunk"] + a.payload.get("count", 1))
    )
    assert set(counted) == set(range(frames))
