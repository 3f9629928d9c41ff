"""The scheduling benchmark: one job on a mixed farm, our policy against the baseline.

It runs the simulator (the real node machine, reducers and scheduler on a simulated
clock) on a farm with no faults, once with peerfarm's policy and once with the
research prototype's (fixed 5-frame chunks taken first come first served, no
backups), and compares each makespan with a lower bound no schedule can beat: the
total work spread over every node at its speed, plus one start-up.

A scenario is plain data: each node's seconds per frame-unit (``speeds``), the
frames' relative costs (a named curve or a list), the renderer's start-up per chunk
(seconds) and a seed for the simulator's random numbers (render times vary by a few
percent, network delays). ``random_scenario`` draws one from a seed.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass

from peerfarm.sim.farm import run_schedule
from peerfarm.sim.network import NetworkConditions
from peerfarm.sim.schedule import JobPlan, NodePlan, Schedule, node_ids

DEFAULT_SPEEDS = (1.0, 1.0, 2.0, 2.0, 4.0, 4.0, 7.0, 7.0)
DEFAULT_FRAMES = 500
DEFAULT_STARTUP = 5.0
DEFAULT_COMPLEXITY = "wave"
BASELINE_CHUNK = 5  # the research prototype's fixed chunk
SUBMIT_AT = 5.0  # every node is up and working by then
RENDER_NOISE = (0.95, 1.05)  # two renders of one frame on one node differ this much


def complexity_curve(name: str, frames: int) -> list[float]:
    """Per-frame relative costs of a named curve; every curve but "flat" spans 1 to 8.

    - ``flat``: every frame costs the same;
    - ``ramp``: cheap at the start, 8x as costly at the end (a camera flying into detail);
    - ``wave`` (the default): two slow swells between 1 and 8 (a shot that gets busy twice);
    - ``spikes``: mostly cheap frames with every tenth 8x as costly (explosions);
    - ``tail``: the last tenth of the frames 8x as costly as the rest (the heavy end of a
      shot: the case learned costs help most, ``--resubmit``).
    """
    if name == "flat":
        return [1.0] * frames
    span = max(frames - 1, 1)
    if name == "ramp":
        return [1.0 + 7.0 * i / span for i in range(frames)]
    if name == "wave":
        return [1.0 + 3.5 * (1.0 - math.cos(4.0 * math.pi * i / span)) for i in range(frames)]
    if name == "spikes":
        return [8.0 if i % 10 == 9 else 1.0 for i in range(frames)]
    if name == "tail":
        return [8.0 if i >= frames - frames // 10 else 1.0 for i in range(frames)]
    raise ValueError(f"no complexity curve {name!r}: use one of {', '.join(CURVES)} or a file")


RANDOM_CURVES = ("flat", "ramp", "wave", "spikes")  # what --random draws from
CURVES = (*RANDOM_CURVES, "tail")


@dataclass(frozen=True)
class Scenario:
    speeds: tuple[float, ...]  # each node's seconds per frame-unit (one slot each)
    costs: tuple[float, ...]  # each frame's cost in frame-units
    startup: float  # seconds a renderer process needs before its first frame
    seed: int = 0
    complexity: str = DEFAULT_COMPLEXITY  # how the costs were made (shown in the output)

    @property
    def lower_bound(self) -> float:
        """Total work over the farm's total speed, plus one start-up: no schedule does
        better (a perfectly balanced one with a single chunk per node reaches it)."""
        rate = sum(1.0 / s for s in self.speeds)
        return sum(self.costs) / rate + self.startup

    def describe(self) -> dict[str, object]:
        return {
            "speeds": list(self.speeds),
            "frames": len(self.costs),
            "complexity": self.complexity,
            "cost_spread": round(max(self.costs) / min(self.costs), 2),
            "startup": self.startup,
            "seed": self.seed,
        }


def random_scenario(seed: int) -> Scenario:
    """3-12 nodes up to 7x apart in speed, a cost curve up to 8x apart (one of the named
    shapes, or a random walk), 0-30 s of start-up and 200-2000 frames."""
    rng = random.Random(seed)
    nodes = rng.randint(3, 12)
    slowest = rng.uniform(1.5, 7.0)
    speeds = tuple(round(rng.uniform(1.0, slowest), 2) for _ in range(nodes))
    frames = rng.randint(200, 2000)
    shape = rng.choice((*RANDOM_CURVES, "walk"))
    if shape == "walk":
        spread = rng.uniform(2.0, 8.0)
        level, costs = 0.5, []
        for _ in range(frames):
            level = min(max(level + rng.uniform(-0.05, 0.05), 0.0), 1.0)
            costs.append(1.0 + (spread - 1.0) * level)
    else:
        costs = complexity_curve(shape, frames)
    startup = round(rng.uniform(0.0, 30.0), 1)
    return Scenario(speeds, tuple(costs), startup, seed, shape)


BENCH_SCENE = "bench scene"  # the scene content of the benchmark's job
OTHER_SCENE = "another scene"  # a second submission of other content (same frame costs)
RESUBMIT_JOB = "job-again"
RESUBMIT_PAUSE = 10.0  # seconds between the first job's end and the second submission


def schedule_for(
    scenario: Scenario, policy: str, again_at: float | None = None, again_scene: str = ""
) -> Schedule:
    """The simulator's schedule: one node per speed (one slot each), one job submitted
    to the first node, no faults; ``policy`` is "peerfarm" or "baseline". With
    ``again_at``, the same frames are submitted again then, as ``again_scene``
    (BENCH_SCENE: the same scene content, so its frame costs are known)."""
    rng = random.Random(scenario.seed)
    frames = len(scenario.costs)
    chunk = BASELINE_CHUNK if policy == "baseline" else 0
    job = JobPlan(
        job_id="job-bench",
        at=SUBMIT_AT,
        submitter=0,
        frame_start=1,
        frame_end=frames,
        chunk_size=chunk or 1,
        costs=scenario.costs,
        scene=BENCH_SCENE,
        adaptive=policy != "baseline",
    )
    jobs = [job]
    if again_at is not None:
        jobs.append(dataclasses.replace(job, job_id=RESUBMIT_JOB, at=again_at, scene=again_scene))
    return Schedule(
        node_ids=node_ids(rng, len(scenario.speeds)),
        nodes=[NodePlan(1, speed) for speed in scenario.speeds],
        jobs=jobs,
        network=NetworkConditions(max_delay=0.002),
        frame_time=1.0,
        fault_end=SUBMIT_AT,
        startup=scenario.startup,
        render_noise=RENDER_NOISE,
        backups=policy != "baseline",
        # Ten times the slowest node rendering it all alone: only a stuck farm is slower.
        converge_within=10.0
        * len(jobs)
        * max(scenario.speeds)
        * (sum(scenario.costs) + scenario.startup),
    )


def measure(scenario: Scenario, policy: str) -> dict[str, float]:
    """Run the scenario under ``policy``: makespan, lower bound and their ratio."""
    schedule = schedule_for(scenario, policy)
    result = run_schedule(schedule, random.Random(scenario.seed), scenario.seed)
    if result.jobs.get("job-bench") != "done":
        raise RuntimeError(f"the benchmark job ended {result.jobs.get('job-bench')}")
    makespan = result.done_at["job-bench"] - SUBMIT_AT
    bound = scenario.lower_bound
    return {
        "makespan": round(makespan, 2),
        "lower_bound": round(bound, 2),
        "ratio": round(makespan / bound, 4),
        "frame_renders": result.frame_renders,
    }


def compare(scenario: Scenario) -> dict[str, object]:
    """What ``peerfarm bench schedule --json`` prints."""
    ours = measure(scenario, "peerfarm")
    base = measure(scenario, "baseline")
    return {
        "peerfarm": ours,
        "baseline": base,
        "scenario": scenario.describe(),
        "shorter_than_baseline": round(1.0 - ours["makespan"] / base["makespan"], 4),
    }


def _ratio(makespan: float, bound: float, frame_renders: int) -> dict[str, float]:
    return {
        "makespan": round(makespan, 2),
        "lower_bound": round(bound, 2),
        "ratio": round(makespan / bound, 4),
        "frame_renders": frame_renders,
    }


def measure_resubmitted(scenario: Scenario, scene: str = BENCH_SCENE) -> dict[str, object]:
    """The scenario's job rendered once (the farm learns each frame's cost), then the
    same frames submitted again as ``scene``: both makespans against the lower bound.
    With BENCH_SCENE the second job is the same scene content and is scheduled knowing
    its frame costs; with OTHER_SCENE it is not (the farm knows the speeds either way)."""
    first = measure(scenario, "peerfarm")
    again_at = SUBMIT_AT + first["makespan"] + RESUBMIT_PAUSE
    schedule = schedule_for(scenario, "peerfarm", again_at, scene)
    result = run_schedule(schedule, random.Random(scenario.seed), scenario.seed)
    if result.jobs.get(RESUBMIT_JOB) != "done":
        raise RuntimeError(f"the re-submitted job ended {result.jobs.get(RESUBMIT_JOB)}")
    renders = sum(
        len(range(a.payload["chunk"], a.payload["chunk"] + a.payload.get("count", 1)))
        for _, _, a in result.actions
        if a.type in ("CLAIM_CHUNK", "BACKUP_CHUNK") and a.payload["job_id"] == RESUBMIT_JOB
    )
    bound = scenario.lower_bound
    return {
        "first": first,
        "resubmitted": _ratio(result.done_at[RESUBMIT_JOB] - again_at, bound, renders),
        "same_scene": scene == BENCH_SCENE,
    }


def compare_resubmitted(scenario: Scenario) -> dict[str, object]:
    """What ``peerfarm bench schedule --resubmit --json`` prints: the first submission,
    the same scene submitted again (its frame costs learned) and, for comparison, the
    same frames submitted as another scene (speeds known, costs not)."""
    same = measure_resubmitted(scenario, BENCH_SCENE)
    other = measure_resubmitted(scenario, OTHER_SCENE)
    return {
        "first": same["first"],
        "resubmitted": same["resubmitted"],
        "other_scene": other["resubmitted"],
        "scenario": scenario.describe(),
        "resubmitted_shorter_than_first": round(
            1.0 - same["resubmitted"]["makespan"] / same["first"]["makespan"], 4
        ),
    }
