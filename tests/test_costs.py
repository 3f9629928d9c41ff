"""Learned per-frame costs (core/costs.py): frame times reported in DONE, kept per scene
content, and a re-submitted scene scheduled knowing which frames are heavy."""

from __future__ import annotations

import json
import random

import pytest
from factories import A, B, C, joined_payload, new_job_payload
from immutables import Map

from peerfarm.cli.main import main
from peerfarm.core import costs
from peerfarm.core.actions import InvalidAction, validate_action
from peerfarm.core.log import ActionLog
from peerfarm.core.reducers import reduce
from peerfarm.core.scheduler import Measured, pick_run
from peerfarm.core.state import EMPTY_STATE
from peerfarm.sim.farm import run_schedule
from peerfarm.sim.scheduling_bench import (
    BENCH_SCENE,
    DEFAULT_SPEEDS,
    OTHER_SCENE,
    RESUBMIT_JOB,
    Scenario,
    complexity_curve,
    measure_resubmitted,
    schedule_for,
)


def _table(speeds: dict[str, float], truth: list[float], runs: list[tuple[str, int, int]]) -> Map:
    """Frame times as nodes of ``speeds`` report them for ``runs`` (node, first, count):
    each run's first frame not measured, as the worker reports it."""
    scenes = Map()
    for node, first, count in runs:
        frames = range(first, first + count)
        ms = [0] + [round(truth[f - 1] * speeds[node] * 1000) for f in frames[1:]]
        scenes = costs.record(scenes, "scene", node, frames, ms, 1)
    return scenes


def test_costs_from_several_nodes_are_put_on_one_scale():
    truth = [1.0 + 7.0 * i / 99 for i in range(100)]  # a ramp, 1 to 8
    speeds = {A: 1.0, B: 3.0, C: 7.0}
    runs = [(A, 1, 30), (B, 31, 10), (C, 41, 5), (A, 46, 30), (B, 76, 15), (C, 91, 10)]
    learned = costs.frame_costs(_table(speeds, truth, runs)["scene"], 1, 100)
    mean = sum(truth) / len(truth)
    assert len(learned) == 100
    assert sum(learned) == pytest.approx(100, abs=0.1)  # mean 1
    # Frame 1 was never measured: it costs as its neighbours, on a slope.
    assert learned[0] == pytest.approx(truth[0] / mean, rel=0.2)
    for got, true in zip(learned[1:], truth[1:], strict=True):
        assert got == pytest.approx(true / mean, rel=0.1)
    # Without the scales (each node's raw times) the slow node's light frames would
    # look as heavy as the fast node's heavy ones.
    scales = costs.node_scales(_table(speeds, truth, runs)["scene"].frames)
    assert scales[B] / scales[A] == pytest.approx(3.0, rel=0.1)
    assert scales[C] / scales[A] == pytest.approx(7.0, rel=0.1)


def test_a_spike_at_a_boundary_does_not_skew_a_node_s_scale():
    truth = [8.0 if i % 10 == 9 else 1.0 for i in range(200)]
    speeds = {A: 1.0, B: 4.0}
    runs = [(A, 1, 2), (B, 3, 2)] + [
        (A if k % 2 else B, 5 + 15 * k, 15) for k in range(13)
    ]  # probes of one measured frame each, then runs of 15
    scales = costs.node_scales(_table(speeds, truth, runs)["scene"].frames)
    assert scales[B] / scales[A] == pytest.approx(4.0, rel=0.1)


def test_nodes_linked_by_one_boundary_are_put_on_one_scale():
    """Found in `peerfarm bench mixed`: one node's two runs met the slow node's on both
    sides, and a third node's once. Each boundary was outvoted at both its ends (a
    median over a node's boundaries, the slow node's counted twice), so the pair of
    nodes beyond it kept their starting scale: the farm then took the fast and the
    slow node for 3.7 times faster than they are."""
    truth = [1.0] * 120
    D = "d" * 16
    speeds = {A: 0.5, B: 2.0, C: 0.5, D: 0.5}
    runs = [(A, 1, 30), (B, 31, 10), (A, 41, 8), (C, 49, 7), (D, 56, 5), (D, 61, 30)]
    runs.append((C, 91, 30))
    table = _table(speeds, truth, runs)["scene"].frames
    scales = costs.node_scales(table)
    assert scales[B] / scales[A] == pytest.approx(4.0, rel=0.01)
    assert scales[C] / scales[A] == pytest.approx(1.0, rel=0.01)
    assert scales[D] / scales[A] == pytest.approx(1.0, rel=0.01)
    # On the farm's scale (the speeds the nodes shared): each node's own speed.
    prior = {A: 500.0, B: 2000.0, C: 501.0, D: 501.0}
    on_prior = costs.node_scales(table, prior)
    for node, seconds in speeds.items():
        assert on_prior[node] == pytest.approx(seconds * 1000, rel=0.01)


def test_any_runs_on_a_flat_scene_give_each_node_its_speed():
    """Frames that all cost the same: wherever the runs fall, every node is put at its
    true speed relative to the others (one layout in 200 failed before)."""
    for seed in range(200):
        rng = random.Random(seed)
        nodes = [A, B, C, "d" * 16, "e" * 16][: rng.randint(2, 5)]
        speeds = {n: rng.choice([0.5, 1.0, 2.0, 3.0, 7.0]) for n in nodes}
        runs, frame = [], 1
        while frame < 300:
            count = rng.randint(1, 30)
            runs.append((rng.choice(nodes), frame, count))
            frame += count + rng.choice([0, 0, 0, 1])  # a frame left out now and then
        table = _table(speeds, [1.0] * 400, runs)["scene"].frames
        scales = costs.node_scales(table)
        rendered = sorted({n for n, _ in table.values()})
        first = rendered[0]
        for node in rendered:
            assert scales[node] / scales[first] == pytest.approx(
                speeds[node] / speeds[first], rel=0.01
            ), (seed, node)


def test_too_few_known_frames_give_no_costs():
    truth = [1.0] * 100
    scenes = _table({A: 1.0}, truth, [(A, 1, 30)])
    assert costs.frame_costs(scenes["scene"], 1, 100) == ()  # 29 of 100 known
    assert costs.frame_costs(scenes["scene"], 1, 40) != ()
    assert costs.frame_costs(None, 1, 10) == ()


def test_the_table_is_bounded():
    scenes = Map()
    for n in range(costs.MAX_SCENES + 3):
        scenes = costs.record(scenes, f"scene{n}", A, range(1, 4), [0, 5, 5], lamport=n)
    assert len(scenes) == costs.MAX_SCENES
    assert "scene0" not in scenes and f"scene{costs.MAX_SCENES + 2}" in scenes
    big = range(1, costs.MAX_FRAMES + 11)
    scenes = costs.record(Map(), "s", A, big, [7] * len(big), 1)
    assert len(scenes["s"].frames) == costs.MAX_FRAMES


def _log() -> ActionLog:
    log = ActionLog()
    for node in (A, B):
        log.add(log.create(node, "PEER_JOINED", joined_payload(node[:1])))
    return log


def _emit(log: ActionLog, node: str, type_: str, payload: dict):  # noqa: ANN201
    action = log.create(node, type_, payload)
    assert log.add(action)
    return action


def _job(job_id: str, scene: str = "{}", frames: int = 20) -> dict:
    payload = new_job_payload(job_id, frames=(1, frames), chunk=1)
    return {**payload, "scene": scene, "adaptive": True}


def _render(log: ActionLog, node: str, job_id: str, first: int, ms: list[int]) -> None:
    claim = _emit(log, node, "CLAIM_CHUNK", {"job_id": job_id, "chunk": first, "count": len(ms)})
    ref = {"job_id": job_id, "chunk": first, "claim_seq": claim.seq, "count": len(ms)}
    _emit(log, node, "DONE", {**ref, "frame_ms": ms})


def test_a_resubmitted_scene_arrives_with_its_frame_costs_and_another_scene_without():
    log = _log()
    _emit(log, A, "NEW_JOB", _job("job1"))
    # Frames 1-10 cost 1 (100 ms), 11-20 cost 4 (400 ms), all rendered on A.
    _render(log, A, "job1", 0, [0] + [100] * 9)
    _render(log, A, "job1", 10, [0] + [400] * 9)
    assert log.state.jobs["job1"].costs == ()  # nothing was known when it arrived
    assert len(log.state.scenes) == 1
    _emit(log, B, "NEW_JOB", _job("job2"))
    _emit(log, B, "NEW_JOB", _job("job3", scene='{"other": 1}'))
    job2 = log.state.jobs["job2"]
    assert job2.content == log.state.jobs["job1"].content
    light, heavy = set(job2.costs[:10]), set(job2.costs[11:])
    assert len(light) == len(heavy) == 1  # frame 11, not measured, is in between
    assert heavy.pop() / light.pop() == pytest.approx(4.0, rel=0.01)
    assert log.state.jobs["job3"].costs == ()  # another scene: its own costs, unknown


def test_the_scheduler_sizes_runs_by_work():
    log = _log()
    _emit(log, A, "NEW_JOB", _job("job1", frames=100))
    light, heavy = [0] + [100] * 49, [0] + [800] * 49
    _render(log, A, "job1", 0, light)
    _render(log, A, "job1", 50, heavy)
    _emit(log, A, "NEW_JOB", _job("job2", frames=100))
    for node in (A, B):
        _emit(log, node, "NODE_SPEED", {"renderer": "builtin", "frame_ms": 100, "startup_ms": 0})
    job2 = log.state.jobs["job2"]
    assert job2.costs[0] < job2.costs[-1]
    # A's part of the fresh job (A and B alike: half the farm): half the job's work, the
    # light first half and a quarter of the heavy second (about 72 frames, not 50).
    measured = Measured({"job2": 0.1}, 0.0, {})
    pick = pick_run(log.state, A, skip_jobs={"job1"}, measured=measured)
    work = sum(job2.costs[: pick.count])
    assert work == pytest.approx(sum(job2.costs) / 2, rel=0.1)
    assert pick.count > 60


def test_frame_ms_is_validated():
    ref = {"job_id": "job1", "chunk": 0, "claim_seq": 1}
    action = {"type": "DONE", "origin": A, "seq": 1, "lamport": 1}
    validate_action({**action, "payload": {**ref, "frame_ms": [0, 12]}})
    with pytest.raises(InvalidAction, match="frame_ms"):
        validate_action({**action, "payload": {**ref, "frame_ms": [-1]}})


def test_a_resubmitted_scene_with_a_heavy_tail_finishes_sooner_in_the_simulator():
    costs_ = tuple(complexity_curve("tail", 200))
    scenario = Scenario((1.0, 2.0, 4.0), costs_, 5.0, seed=2, complexity="tail")
    same = measure_resubmitted(scenario, BENCH_SCENE)
    other = measure_resubmitted(scenario, OTHER_SCENE)
    assert same["first"] == other["first"]
    # Not only because the speeds are known: the same frames as another scene take longer
    # (206.1 s against 213.4 s; 237.0 s before the speeds in a job learning its costs
    # were compared where the nodes' runs meet, core/scheduler.py job_speed). With a
    # start-up of 2 s the last round sized by free slots (core/scheduler.py
    # last_round_work) brought the other scene level with the same scene: docs/
    # scheduling.md, "Re-submitted scenes".
    assert same["resubmitted"]["makespan"] < 0.98 * other["resubmitted"]["makespan"]
    # (Since a fresh farm's nodes claim equal parts of the job and give back what they
    # should not render, core/scheduler.py _first_part, the first submission here takes
    # 201.0 s, less than the second's 217.2 s: a farm that knows its speeds still sizes
    # its first runs by factoring. docs/scheduling.md, "Re-submitted scenes".)


def test_only_the_same_scene_content_gets_the_costs_in_the_simulator():
    scenario = Scenario(DEFAULT_SPEEDS[:4], tuple(complexity_curve("ramp", 120)), 1.0, seed=1)
    for scene, known in ((BENCH_SCENE, True), (OTHER_SCENE, False)):
        schedule = schedule_for(scenario, "peerfarm", again_at=400.0, again_scene=scene)
        result = run_schedule(schedule, random.Random(1), 1)
        assert result.jobs == {"job-bench": "done", RESUBMIT_JOB: "done"}
        new_jobs = [a for _, _, a in result.actions if a.type == "NEW_JOB"]
        assert len(new_jobs) == 2
        dones = [a for _, _, a in result.actions if a.type == "DONE"]
        assert all("frame_ms" in a.payload for a in dones if a.payload.get("count", 1) > 1)
        state = EMPTY_STATE
        for _, _, action in sorted(result.actions, key=lambda t: t[2].key):
            state = reduce(state, action)
        assert state.jobs["job-bench"].costs == ()  # nothing rendered before it
        again = state.jobs[RESUBMIT_JOB].costs
        assert bool(again) == known
        if known:  # the ramp, learned: dear at the end, cheap at the start
            truth = complexity_curve("ramp", 120)
            mean = sum(truth) / len(truth)
            # The first and last tenths (a run's first frame is never measured: it also
            # pays the start-up, so the job's first frame is extrapolated alone).
            tenth = len(truth) // 10
            for learned, true in ((again[:tenth], truth[:tenth]), (again[-tenth:], truth[-tenth:])):
                assert sum(learned) / tenth == pytest.approx(sum(true) / tenth / mean, rel=0.15)
            assert sum(again[:tenth]) * 4 < sum(again[-tenth:])  # cheap start, dear end


def test_bench_schedule_resubmit_prints_both_submissions(capsys):
    args = ["bench", "schedule", "--speeds", "1,3", "--frames", "60", "--startup", "1"]
    assert main([*args, "--complexity", "tail", "--resubmit", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"first", "resubmitted", "other_scene", "scenario"}
    for key in ("first", "resubmitted", "other_scene"):
        # The bound is of the frames' nominal costs; a render takes 0.95 to 1.05 of its
        # (RENDER_NOISE), so a lucky run may end a little under it.
        assert out[key]["makespan"] >= 0.95 * out[key]["lower_bound"] > 0


def test_a_job_whose_costs_were_not_known_learns_from_its_own_rendered_frames():
    from peerfarm.core.scheduler import LIVE_REACH, job_costs

    log = _log()
    _emit(log, A, "NEW_JOB", _job("job1", frames=200))
    assert job_costs(log.state, log.state.jobs["job1"]) == ()  # nothing rendered yet
    _render(log, A, "job1", 0, [0] + [100] * 9)  # frames 1-10: light
    _render(log, A, "job1", 10, [0] + [400] * 9)  # frames 11-20: 4x as heavy
    job = log.state.jobs["job1"]
    assert job.costs == ()  # what it arrived with
    live = job_costs(log.state, job)
    assert len(live) == 200
    assert live[12] == pytest.approx(4 * live[2], rel=0.01)
    # Next to the heavy frames: heavy (the mean of the measured frames around the
    # nearest one, frame 10's light one among them); far from any: the median one.
    assert 3 * live[2] < live[20 + LIVE_REACH - 1] < live[12]
    assert live[150] == pytest.approx(sorted(live[:20])[10], rel=0.01)


def test_frames_next_to_a_spiky_stretch_cost_its_mean_not_the_nearest_frame():
    """A shot with a heavy frame in five: the frames not rendered yet next to it cost as
    much as its frames on average. Costed as the nearest rendered frame alone, a gap
    next to it looked as cheap as its cheap frames, and runs sized over it ran about
    twice as long as sized (the spikes row of the scheduling bench)."""
    from peerfarm.core.scheduler import job_costs

    log = _log()
    _emit(log, A, "NEW_JOB", _job("job1", frames=100))
    spiky = [0] + [800 if f % 5 == 0 else 100 for f in range(2, 20)]  # frames 1-19
    _render(log, A, "job1", 0, spiky[:10])
    _render(log, A, "job1", 10, spiky[10:])
    live = job_costs(log.state, log.state.jobs["job1"])
    rendered = live[1:19]  # frame 1 is not measured (its run's start-up)
    gap = live[21:30]  # frames 22-30: none rendered, nor two frames from one
    assert sum(gap) / len(gap) == pytest.approx(sum(rendered) / len(rendered), rel=0.15)
    assert min(gap) > 2 * min(rendered)


def test_learned_costs_and_requirements_survive_a_snapshot():
    """A snapshot holds what the farm learned of scenes (and jobs' requirements): a node
    that loads it schedules a re-submitted scene as the others do, and digests agree."""
    import msgpack

    from peerfarm.core import digest
    from peerfarm.core import snapshot as snap

    log = _log()
    _emit(log, A, "NEW_JOB", {**_job("job1"), "require": ["gpu"], "max_nodes": 2})
    _render(log, A, "job1", 0, [0] + [100] * 9)
    _render(log, A, "job1", 10, [0] + [400] * 9)
    assert len(log.state.scenes) == 1
    assert digest.encoding(log.state) == msgpack.packb(
        digest.canonical(log.state), use_bin_type=True
    )
    before = log.digest()
    log.compact(len(log))
    loaded = snap.log_from_snapshot(snap.decode(snap.encode(snap.snapshot_of(log))))
    assert loaded.base_state == log.base_state
    assert loaded.digest() == before
    _emit(loaded, B, "NEW_JOB", _job("job2"))
    _emit(log, B, "NEW_JOB", _job("job2"))
    assert loaded.state.jobs["job2"].costs == log.state.jobs["job2"].costs != ()
    assert loaded.digest() == log.digest()


def test_nodes_whose_frames_never_meet_are_put_on_one_scale_by_their_measured_speeds():
    # The first runs of a farm are scattered along the job: here no frame of the slow
    # node C is within reach of A's or B's, so no boundary compares it with them.
    truth = [1.0] * 100
    speeds = {A: 1.0, B: 1.0, C: 7.0}
    runs = [(A, 1, 10), (B, 11, 10), (C, 60, 10)]
    table = _table(speeds, truth, runs)["scene"]
    blind = costs.frame_costs(table, 1, 100, at_least=0.0)
    assert blind[64] / blind[4] == pytest.approx(7.0, rel=0.05)  # C's frames look 7x heavy
    prior = {A: 1000.0, B: 1000.0, C: 7000.0}  # NODE_SPEED: ms per frame
    learned = costs.frame_costs(table, 1, 100, at_least=0.0, prior=prior)
    assert learned == pytest.approx([1.0] * 100, rel=0.01)  # flat, as it is
    # Nodes the boundaries do compare keep their ratio from the table (A and B here,
    # though the prior says otherwise).
    skewed = costs.node_scales(table.frames, {A: 1000.0, B: 3000.0, C: 7000.0})
    assert skewed[B] / skewed[A] == pytest.approx(1.0, rel=0.01)
    assert skewed[C] / skewed[A] == pytest.approx(7.0 / 2.0, rel=0.3)


def test_a_node_that_has_not_shared_its_speed_yet_counts_as_a_typical_one():
    """A fresh farm: C's frames are in the table (its DONE came) before its NODE_SPEED.
    Its scale stays about 1 while A's and B's are in ms per frame: C's frames looked
    thousands of times as heavy as theirs, and theirs cost 0 after rounding (a run of
    them looked done: never given back nor copied). Counted as a typical node, all
    frames cost about what they do."""
    truth = [1.0] * 100
    speeds = {A: 1.0, B: 1.0, C: 2.0}
    runs = [(A, 1, 10), (B, 11, 10), (C, 60, 10)]
    table = _table(speeds, truth, runs)["scene"]
    learned = costs.frame_costs(table, 1, 100, at_least=0.0, prior={A: 1000.0, B: 1000.0})
    assert min(learned) > 0.3 and max(learned) < 3.0
    scales = costs.node_scales(table.frames, {A: 1000.0, B: 1000.0})
    assert scales[C] == pytest.approx(1000.0, rel=0.01)  # the typical group's factor


def test_frames_far_from_any_rendered_one_cost_the_mean_rendered_frame_while_a_job_renders():
    # Every tenth frame 8x: the first 40 frames rendered, frames 61-100 beyond reach.
    truth = [8.0 if i % 10 == 9 else 1.0 for i in range(100)]
    table = _table({A: 1.0}, truth, [(A, 1, 40)])["scene"]
    median = costs.frame_costs(table, 1, 100, at_least=0.0, reach=20)
    mean = costs.frame_costs(table, 1, 100, at_least=0.0, reach=20, unknown_as_mean=True)
    assert median[80] == pytest.approx(min(median), rel=0.01)  # as cheap as the cheapest
    # A run out there should cost what an average frame cost: 1.7 (not 1), relative
    # to the frames known as light.
    assert mean[80] / mean[1] == pytest.approx(1.7, rel=0.1)
