"""Which chunk a node should claim next: a pure decision over the state.

Policy (simple for now): the highest-priority, oldest active job (not paused) with a
pending chunk, skipping jobs this node is blocklisted for and chunks that failed here
while another node could try them. To keep idle nodes from all reaching for the
same chunk at once, each rendering node starts its search at its own share of
the chunk range (its rank among rendering peers); concurrent claims that still
collide are settled by the reducer, and the loser simply asks again.
"""

from __future__ import annotations

from collections.abc import Container

from peerfarm.core.chunk_order import chunk_order
from peerfarm.core.state import ACTIVE, PENDING, UP, Job, State, able_renderers


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
    """The (job id, chunk) this node should claim next, or None if there is no work.

    ``busy`` holds chunks this node is already rendering, ``skip_jobs`` jobs it
    must not take (e.g. a renderer it lacks).
    """
    me = state.peers.get(node_id)
    if me is None or me.state != UP:
        # Not announced yet (the farm does not know what we can render), or declared
        # down and not rejoined yet (a claim would not count: core/reducers.py).
        return None
    rank, renderers = _rank(state, node_id)
    for job in job_order(state):
        if job.id in skip_jobs or not me.can_render(job):
            continue  # never claim what this node cannot render
        if not job.takes(node_id):
            continue  # this node failed too many of its chunks
        for index in chunk_order(job.chunk_total, job.order, rank, renderers):
            chunk = job.chunk(index)
            if chunk.state != PENDING or (job.id, index) in busy:
                continue
            # A chunk that failed here goes to another node, if any other can take it.
            if node_id in chunk.failed_on and able_renderers(state, job, chunk.failed_on):
                continue
            return job.id, index
    return None
