"""Log compaction in the simulator (the very machine, simulated disks and faults): a
crash in the middle of compacting, a member down for long that returns after the farm
compacted what it lacks, a node that joins after compaction. Each run must converge
(one digest, every job final, every frame collected: docs/simulation.md)."""

from __future__ import annotations

import random

from peerfarm.sim import FaultPlan, JobPlan, NodePlan, RunResult, Schedule, run_schedule
from peerfarm.sim.network import NetworkConditions
from peerfarm.sim.schedule import CRASH, CRASH_COMPACTING, node_ids


def _schedule(plans: list[NodePlan], faults: list[FaultPlan], frames: int = 80) -> Schedule:
    return Schedule(
        node_ids=node_ids(random.Random(len(plans)), len(plans)),
        nodes=plans,
        jobs=[JobPlan("job-big", 0.5, 0, 1, frames, 1)],
        faults=faults,
        network=NetworkConditions(loss=0.0, max_delay=0.01),
        frame_time=0.2,
        fault_end=15.0,
    )


def _lines(result: RunResult, node: str, text: str) -> list[str]:
    return [line for line in result.trace if f" {node} " in line and text in line]


def test_a_crash_between_writing_the_snapshot_and_rewriting_the_log():
    schedule = _schedule([NodePlan(1)] * 3, [FaultPlan(CRASH_COMPACTING, 1.0, (1,), 3.0)])
    result = run_schedule(schedule, random.Random(1))
    assert _lines(result, "n1", "crash in the middle of compacting")
    # It came back from the new snapshot and the old, whole log file.
    restarts = _lines(result, "n1", "start (")
    assert len(restarts) == 2
    assert result.jobs == {"job-big": "done"}


def test_a_member_down_for_long_gets_the_snapshot_when_it_returns():
    # n2 is down for 90 s: after 60 s the others stop waiting for it and compact the
    # history it lacks; back, it is sent the snapshot and the tail.
    schedule = _schedule([NodePlan(1)] * 3, [FaultPlan(CRASH, 2.0, (2,), 90.0)])
    result = run_schedule(schedule, random.Random(1))
    compacted = [line for line in result.trace if "compacted: snapshot of" in line]
    assert any(" n0 " in line for line in compacted)
    assert _lines(result, "n2", "took a snapshot from")
    assert result.jobs == {"job-big": "done"}


def test_a_node_that_joins_after_compaction_gets_the_snapshot():
    plans = [NodePlan(1), NodePlan(1), NodePlan(1), NodePlan(1, start_at=40.0)]
    result = run_schedule(_schedule(plans, []), random.Random(1))
    first_compaction = min(
        float(line.split()[0]) for line in result.trace if "compacted: snapshot of" in line
    )
    assert first_compaction < 40.0
    assert _lines(result, "n3", "took a snapshot from")
    assert result.jobs == {"job-big": "done"}
