"""Deterministic simulation of a whole farm in one process (in FoundationDB's spirit).

Many nodes, each with a real ``peerfarm.core.log.ActionLog``, run the runtime's
rules over a simulated network with a simulated clock. Every run is a pure
function of its seed: replay one with ``python -m peerfarm.sim --seed N``.
See docs/simulation.md.
"""

from peerfarm.sim.farm import Farm, RunResult, SimulationFailure, run_schedule, run_seed
from peerfarm.sim.schedule import FaultPlan, JobPlan, NodePlan, Schedule, random_schedule

__all__ = [
    "Farm",
    "FaultPlan",
    "JobPlan",
    "NodePlan",
    "RunResult",
    "Schedule",
    "SimulationFailure",
    "random_schedule",
    "run_schedule",
    "run_seed",
]
