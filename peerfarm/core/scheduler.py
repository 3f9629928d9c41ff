"""Which chunks a node should claim next: a pure decision over the state and this
node's own measurements (docs/scheduling.md).

Which job: the highest-priority, oldest active job (not paused) with a pending chunk,
skipping jobs this node is blocklisted for or cannot render, and chunks that failed
here while another node could try them.

How much of it:

- A job submitted with ``--chunk N`` (not adaptive) is claimed one chunk at a time.
  Each rendering node starts its search at its own share of the chunk range (its
  rank among rendering peers) so idle nodes rarely reach for the same chunk.
- An adaptive job's chunks are single frames, and a node claims a *run* of them from
  the first pending frame on, sized by factoring (guided self-scheduling weighted by
  speed): half of this node's proportional share of the frames still unclaimed, so
  chunks are big while much is left and small at the end. The share comes from every
  node's measured speed (NODE_SPEED in the state); a run is at least a few start-ups
  long (so loading the scene is paid rarely) but never more than the whole share. A
  node that has not measured its speed yet takes a short probe run.

Concurrent claims that still collide are settled by the reducer (a run wins whole or
not at all), and the loser simply asks again.
"""

from __future__ import annotations

import math
from collections.abc import Container, Mapping
from typing import NamedTuple

from peerfarm.core.state import ACTIVE, PENDING, UP, Job, Peer, State, able_renderers

PROBE_FRAMES = 2  # a node that has not measured itself yet: first frame and one more
STARTUPS_PER_RUN = 4  # a run renders for at least this many start-ups (when it can)


class Pick(NamedTuple):
    job_id: str
    chunk: int  # the run's first chunk
    count: int = 1  # chunks in the run


class Measured(NamedTuple):
    """What this node measured itself, kept by its machine (never in the state)."""

    # job id -> seconds per frame of that job on this node, recent renders
    frame_seconds: Mapping[str, float] = {}


def job_order(state: State) -> list[Job]:
    active = [j for j in state.jobs.values() if j.state == ACTIVE and not j.paused]
    return sorted(active, key=lambda j: (-j.priority, j.submitted_lamport, j.id))


def _rank(state: State, node_id: str) -> tuple[int, int]:
    renderers = sorted(n for n, p in state.peers.items() if p.renders and p.state == UP)
    if node_id not in renderers:
        return 0, max(len(renderers), 1)
    return renderers.index(node_id), len(renderers)


def pick_chunk(
    state: State,
    node_id: str,
    busy: Container[tuple[str, int]] = (),
    skip_jobs: Container[str] = (),
) -> tuple[str, int] | None:
    """The (job id, first chunk) this node should claim next, or None if there is no
    work; ``pick_run`` also says how many chunks."""
    pick = pick_run(state, node_id, busy, skip_jobs)
    return None if pick is None else (pick.job_id, pick.chunk)


def pick_run(
    state: State,
    node_id: str,
    busy: Container[tuple[str, int]] = (),
    skip_jobs: Container[str] = (),
    measured: Measured | None = None,
) -> Pick | None:
    """The run of chunks this node should claim next, or None if there is no work.

    ``busy`` holds chunks this node is already rendering, ``skip_jobs`` jobs it
    must not take (e.g. a renderer it lacks).
    """
    me = state.peers.get(node_id)
    if me is None or me.state != UP:
        # Not announced yet (the farm does not know what we can render), or declared
        # down and not rejoined yet (a claim would not count: core/reducers.py).
        return None
    measured = measured or Measured()
    for job in job_order(state):
        if job.id in skip_jobs or not me.can_render(job):
            continue  # never claim what this node cannot render
        if not job.takes(node_id):
            continue  # this node failed too many of its chunks
        if job.adaptive and job.tiles == 1:
            pick = _adaptive_run(state, job, node_id, me, busy, measured)
        else:
            pick = _fixed_chunk(state, job, node_id, busy)
        if pick is not None:
            return pick
    return None


def _claimable(state: State, job: Job, index: int, node_id: str, busy: Container) -> bool:
    chunk = job.chunk(index)
    if chunk.state != PENDING or (job.id, index) in busy:
        return False
    # A chunk that failed here goes to another node, if any other can take it.
    return not (node_id in chunk.failed_on and able_renderers(state, job, chunk.failed_on))


def _fixed_chunk(state: State, job: Job, node_id: str, busy: Container) -> Pick | None:
    rank, renderers = _rank(state, node_id)
    total = job.chunk_total
    start = (rank * total) // renderers
    for step in range(total):
        index = (start + step) % total
        if _claimable(state, job, index, node_id, busy):
            return Pick(job.id, index)
    return None


def _adaptive_run(
    state: State, job: Job, node_id: str, me: Peer, busy: Container, measured: Measured
) -> Pick | None:
    total = job.chunk_total
    first = next((i for i in range(total) if _claimable(state, job, i, node_id, busy)), None)
    if first is None:
        return None
    unclaimed = total - sum(1 for c in job.chunks.values() if c.state != PENDING)
    want = run_length(state, job, node_id, me, unclaimed, measured)
    count = 1
    while (
        count < want
        and first + count < total
        and _claimable(state, job, first + count, node_id, busy)
    ):
        count += 1
    return Pick(job.id, first, count)


def run_length(
    state: State, job: Job, node_id: str, me: Peer, unclaimed: int, measured: Measured
) -> int:
    """How many chunks (frames) this node should claim of ``unclaimed`` ones."""
    mine = me.speed(job.renderer)
    if mine is None:
        return PROBE_FRAMES  # measure first: a short run tells our speed and start-up
    my_rate = 1.0 / mine[0]
    # The farm's rate, per slot: every node that may take this job, at its measured
    # speed; one not measured yet counts as fast as the fastest (smaller runs, never
    # a run that would end long after everyone else's).
    rates = {
        n: 1.0 / s[0]
        for n in able_renderers(state, job)
        if (s := state.peers[n].speed(job.renderer)) is not None
    }
    fastest = max(rates.values(), default=my_rate)
    farm_rate = sum(
        state.peers[n].slots * rates.get(n, fastest) for n in able_renderers(state, job)
    )
    share = unclaimed * my_rate / max(farm_rate, my_rate)  # this slot's share of what is left
    frames = math.ceil(share / 2)  # factoring: half of it now, the rest in smaller runs
    # Long enough that loading the scene is paid rarely: seconds per frame of this job
    # measured here (the start-up is the same for every job of a renderer).
    seconds = measured.frame_seconds.get(job.id, mine[0] / 1000.0) * job.chunk_size
    startup = mine[1] / 1000.0
    if seconds > 0:
        frames = max(frames, math.ceil(STARTUPS_PER_RUN * startup / seconds))
    return max(1, min(frames, math.ceil(share)))
