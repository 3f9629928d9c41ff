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
  long (so loading the scene is paid rarely) but never more than the whole share. On
  a fresh farm's first job, nodes that have not measured their speed yet each claim
  an equal part of the job as one run, measure themselves from its first frames, and
  give back the tail the farm should render sooner (split_keep); on a farm whose nodes
  all know their speeds the parts are weighted by them; a node that joins a job under
  way takes a short probe run.

Concurrent claims that still collide are settled by the reducer (a run wins whole or
not at all), and the loser simply asks again.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Container, Mapping, Sequence
from typing import NamedTuple

from immutables import Map

from peerfarm.core import chunk_index
from peerfarm.core.chunk_order import IN_ORDER, chunk_order
from peerfarm.core.costs import frame_costs, node_scales, work_of
from peerfarm.core.requirements import has_room
from peerfarm.core.state import (
    ACTIVE,
    CHUNK_DONE,
    PENDING,
    UP,
    Job,
    Peer,
    State,
    able_renderers,
)

PROBE_FRAMES = 4  # a node not measured yet: its first frame and 3 more (a median of 3)
PROBE_FRAMES_SHORT_JOB = 2  # ... on a job of few frames a node: its first and one more
PROBE_SHARE = 8  # a 4-frame probe needs this many times 4 frames a node in the job
STARTUPS_PER_RUN = 8  # a run renders for at least this many start-ups (when it can)
FIRST_PART = 0.5  # of its share of what is left a node claims at once
# What one claim costs the farm besides the render, for the claim and its DONE: each
# signed, logged with an fsync, sent to every peer and folded by every node (20-60 ms
# on loopback, docs/performance.md "Dispatch"). A run renders for at least
# STARTUPS_PER_RUN of these too: frames of a millisecond claimed a few at a time
# would keep the farm busy with claims instead of frames.
CLAIM_SECONDS = 0.05


class Pick(NamedTuple):
    job_id: str
    chunk: int  # the run's first chunk
    count: int = 1  # chunks in the run


class Slot(NamedTuple):
    """Another node's slot as a run weighs the farm's end (_free_slots)."""

    free: float  # seconds from now until it is free
    startup: float  # its renderer's start-up, seconds
    per: float  # its seconds per frame-unit of the job
    on_job: bool  # it renders a run of the job (without a copy) until then


class Measured(NamedTuple):
    """What this node measured itself, kept by its machine (never in the state)."""

    # job id -> seconds per frame of that job on this node, recent renders
    frame_seconds: Mapping[str, float] = {}
    now: float = 0.0  # this node's clock, as its machine has it
    # (job id, first chunk, claim seq) -> when this node first saw that claim
    seen: Mapping[tuple[str, int, int], float] = {}


def job_order(state: State) -> list[Job]:
    """Active jobs in the order nodes serve them: higher priority first; among equal
    priorities the job with the least speed rendering it now (fair share of the
    farm: the summed speed of the nodes running its renders, re-balanced at every
    claim as jobs arrive and finish, never by stopping a render), then the oldest."""
    active = [j for j in state.jobs.values() if j.state == ACTIVE and not j.paused]
    return sorted(
        active, key=lambda j: (-j.priority, running_rate(state, j), j.submitted_lamport, j.id)
    )


def running_rate(state: State, job: Job) -> float:
    """Frames per millisecond the nodes running renders of ``job`` now render, by their
    measured speed (a node not measured yet counts as the farm's typical one)."""
    holders = {(holder, seq) for _, _, holder, seq in claimed_runs(job)}
    return sum(1.0 / _rate_speed(state, job.renderer, holder) for holder, _ in holders)


# (peers, renderer) -> the farm's median measured ms per frame with that renderer
_TYPICAL: dict[str, tuple[object, float]] = {}


def _rate_speed(state: State, renderer: str, node_id: str) -> float:
    """ms per frame of ``node_id`` with ``renderer`` as running speeds count it: its
    measured speed, else the farm's median one (1 frame a second when nobody measured):
    a fresh farm's first parts are given back to even out jobs before the nodes have
    measured themselves (a probe is a tenth of a short job), and a node measured among
    nodes not measured yet compares with what they likely are."""
    peer = state.peers.get(node_id)
    speed = peer.speed(renderer) if peer is not None else None
    if speed is not None:
        return float(speed[0])
    cached = _TYPICAL.get(renderer)
    if cached is not None and cached[0] is state.peers:
        return cached[1]
    known = sorted(s[0] for p in state.peers.values() if (s := p.speed(renderer)) is not None)
    typical = float(known[len(known) // 2]) if known else 1000.0
    _TYPICAL[renderer] = (state.peers, typical)
    return typical


def _sharing(state: State, job: Job) -> list[Job]:
    """Jobs of the same priority with unclaimed frames, this one included: they share
    the farm, so each run is sized to a part of it (each node's part: the ones of them
    whose requirements and limit let it in, ``_asks_for``)."""
    return [
        j
        for j in state.jobs.values()
        if j.state == ACTIVE
        and not j.paused
        and j.priority == job.priority
        and (j.id == job.id or _unclaimed(j))
    ]


def _asks_for(state: State, job: Job, node_id: str) -> bool:
    # A job's requirements and limit let the node in (a farm of jobs that ask nothing
    # shares every node among all of them).
    return state.peers[node_id].meets(job) and has_room(job, node_id)


def may_take(state: State, job: Job, node_id: str) -> bool:
    """Whether the node may start rendering more of ``job``: it has the renderer in the
    version asked, every tag and the memory the job requires, it is not blocklisted,
    and the job's ``max_nodes`` leaves room for it (core/requirements.py)."""
    peer = state.peers.get(node_id)
    return (
        peer is not None
        and peer.can_render(job)
        and peer.meets(job)
        and job.takes(node_id)
        and has_room(job, node_id)
    )


def _unclaimed(job: Job) -> bool:
    # Chunks absent from the map never left "pending"; asked at every frame of a run
    # (split_keep): the chunk index answers without a walk over a job of 1,000,000.
    return len(job.chunks) < job.chunk_total or chunk_index.any_pending_stored(job.chunks)


def probe_frames(state: State, job: Job) -> int:
    """Frames of a probe run: 4 (the median of three frames tells the speed), or 2 on a
    job of few frames a node, where a slow node's 4-frame probe could outlast the job
    (copied by faster nodes and stopped, it would never measure itself)."""
    renderers = _rank(state, "")[1]
    return max(
        PROBE_FRAMES_SHORT_JOB, min(PROBE_FRAMES, job.chunk_total // (PROBE_SHARE * renderers))
    )


def _rank(state: State, node_id: str) -> tuple[int, int]:
    renderers = sorted(n for n, p in state.peers.items() if p.renders and p.state == UP)
    if node_id not in renderers:
        return 0, max(len(renderers), 1)
    return renderers.index(node_id), len(renderers)


def pick_chunk(
    state: State,
    node_id: str,
    busy: Collection[tuple[str, int]] = (),
    skip_jobs: Container[str] = (),
) -> tuple[str, int] | None:
    """The (job id, first chunk) this node should claim next, or None if there is no
    work; ``pick_run`` also says how many chunks."""
    pick = pick_run(state, node_id, busy, skip_jobs)
    return None if pick is None else (pick.job_id, pick.chunk)


def pick_run(
    state: State,
    node_id: str,
    busy: Collection[tuple[str, int]] = (),
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
        if job.id in skip_jobs or not me.can_render(job) or not me.meets(job):
            continue  # never claim what this node cannot render, or lacks tags or memory for
        if not has_room(job, node_id):
            continue  # the job's --max-nodes other nodes are rendering it
        if not job.takes(node_id):
            continue  # this node failed too many of its chunks
        # Adaptive runs are contiguous; a job that asked for another order (spread, for
        # a re-render the artist watches) is taken chunk by chunk in that order.
        if job.adaptive and job.tiles == 1 and job.order == IN_ORDER:
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
    for index in chunk_order(job.chunk_total, job.order, rank, renderers):
        if _claimable(state, job, index, node_id, busy):
            return Pick(job.id, index)
    return None


class _Live(NamedTuple):
    """A job's live costs (job_costs, job_speed) and what they were computed from."""

    tables: list[Map]  # the scene's table of frame times, and tables found equal to it
    peers: Map  # the peers they were last asked with
    speeds: tuple[tuple[str, float], ...]  # the nodes' measured speeds, sorted
    value: tuple[tuple[float, ...], dict[str, float]]  # the costs, the nodes' scales


_LIVE: dict[str, _Live] = {}  # content -> its job's live costs
LIVE_KEPT = 16
LIVE_TABLES = 64  # equal tables of frame times known by identity (_same_table)
LIVE_REACH = 20  # frames: farther from any rendered frame, a frame costs as the typical one


def job_costs(state: State, job: Job) -> tuple[float, ...]:
    """Each frame's relative cost (mean 1) as far as the farm knows it now: learned from
    earlier renders of the scene when the job arrived (job.costs), else from this job's
    own frames rendered so far (a frame not rendered yet costs as its nearest rendered
    neighbours: costs change slowly along most shots); () when nothing is known."""
    if job.costs or not job.adaptive or job.tiles != 1:
        return job.costs
    return _live(state, job)[0]


def job_speed(state: State, job: Job, node_id: str) -> tuple[float, float] | None:
    """``node_id``'s speed for ``job`` as (ms per frame, start-up ms), to compare with
    the other nodes': its measured speed (NODE_SPEED), or while the job's costs are
    learned from its own frames, the nodes' speeds as those frames tell them where
    their runs meet (core/costs.py node_scales). A fresh farm's speeds are measured
    each on its own part of the job: a node on the heavy end of a shot looks as many
    times slower as its frames are heavier (a 7 s node on frames of cost 1 looked only
    1.8 times slower than a 1 s node on frames of cost 4), and who should render the
    end of the job was decided by that. None when the node has not measured it."""
    peer = state.peers.get(node_id)
    measured = peer.speed(job.renderer) if peer is not None else None
    if measured is None or job.costs or not job.adaptive or job.tiles != 1:
        return measured
    ms = _live(state, job)[1].get(node_id)
    return (ms, measured[1]) if ms else measured


def _live(state: State, job: Job) -> tuple[tuple[float, ...], dict[str, float]]:
    times = state.scenes.get(job.content)
    if times is None:
        return (), {}
    cached = _LIVE.get(job.content)
    same_table = cached is not None and _same_table(cached.tables, times.frames)
    # The same table and the same peers (immutable maps): asked for every node and run
    # at every look, so not even the speeds below are gathered again.
    if cached is not None and same_table and cached.peers is state.peers:
        return cached.value
    # The nodes' measured speeds put their frame times on one scale where their runs
    # never meet (the first runs of a farm are scattered along the job).
    prior = {
        n: float(s[0]) for n, p in state.peers.items() if (s := p.speed(job.renderer)) is not None
    }
    speeds = tuple(sorted(prior.items()))
    if cached is not None and same_table and cached.speeds == speeds:
        _LIVE[job.content] = cached._replace(peers=state.peers)
        return cached.value
    scales = node_scales(times.frames, prior) if len(times.frames) >= 2 else {}
    live = frame_costs(
        times,
        job.frame_start,
        job.frame_end,
        at_least=0.0,
        reach=LIVE_REACH,
        prior=prior,
        unknown_as_mean=True,
        scales=scales,
    )
    if len(_LIVE) >= LIVE_KEPT:
        _LIVE.clear()  # a cache: recomputed when needed
    _LIVE[job.content] = _Live([times.frames], state.peers, speeds, (live, scales))
    return live, scales


def _same_table(tables: list[Map], table: Map) -> bool:
    """Whether ``table`` is one of ``tables`` (all equal), or equal to them: then it is
    kept among them. The simulator runs many nodes in one process, each with its own
    table of the same frame times; compared by identity alone, each node's look
    recomputed the costs another's had just computed, and a 10,000-frame job spent half
    its time there (an equal table is compared once, then known by identity)."""
    if any(known is table for known in tables):
        return True
    if tables[0] != table:
        return False
    if len(tables) < LIVE_TABLES:
        tables.append(table)
    return True


def run_work(job: Job, costs: tuple[float, ...], first: int, count: int) -> float:
    """The work of ``count`` chunks from ``first`` in frame-units: their frames' costs
    (``costs``, mean 1: job_costs), or one per frame when the costs are not known."""
    return work_of(costs, job.frame_start, job.run_frames(first, count))


def _run_fitting(job: Job, costs: tuple[float, ...], first: int, length: int, want: float) -> int:
    """How many chunks from ``first`` (at most ``length``) make ``want`` frame-units of
    work: at least one."""
    if not costs:
        return max(1, min(length, math.ceil(want - 1e-9)))
    work, count = 0.0, 0
    while count < length and work < want - 1e-9:
        work += run_work(job, costs, first + count, 1)
        count += 1
    return max(1, count)


def _adaptive_run(
    state: State,
    job: Job,
    node_id: str,
    me: Peer,
    busy: Collection[tuple[str, int]],
    measured: Measured,
) -> Pick | None:
    total = job.chunk_total
    gaps = claimable_gaps(state, job, node_id, busy)
    if not gaps:
        return None
    part = _first_part(state, job, node_id, gaps)
    if part is not None:
        return part
    if me.speed(job.renderer) is None:
        # Nodes probing their speed all start at once: each skips its rank's worth of
        # probe runs from the first pending frame, so their claims rarely collide.
        want = probe_frames(state, job)
        skip = _rank(state, node_id)[0] * want
        for first, length in gaps:
            if skip < length:
                return Pick(job.id, first + skip, min(want, length - skip))
            skip -= length
        first, length = gaps[-1]
        return Pick(job.id, first, min(want, length))
    costs = job_costs(state, job)
    if costs:
        unclaimed = _pending_work(job, costs)
    else:
        unclaimed = total - chunk_index.left_pending(job.chunks)
    want = run_length(state, job, node_id, me, unclaimed, measured)
    if want <= 0:
        return None  # the last frames are the faster nodes' (_busy_slots_end_it)
    spread = _spread_run(state, job, node_id, me, costs, gaps, want, measured)
    if spread is not None:
        return spread
    if not any(r.claim_origin == node_id for r in chunk_index.segments(job.chunks).records):
        # This node's first claim on the job, on nodes that know their speeds: they
        # all claim at about once, so each starts past the first runs of the nodes
        # ranked before it (as they should size them), and their claims rarely collide.
        offset = _start_offset(state, job, node_id, unclaimed, costs)
        for first, length in gaps:
            if 0 < offset and first <= offset < first + length:
                end = first + length
                return Pick(job.id, offset, _run_fitting(job, costs, offset, end - offset, want))
    # The first gap, even one shorter than the run: a gap left between runs (probes
    # that skipped past each other) costs a start-up whenever it is taken, and taken
    # now the later runs are sized around it, while taken at the end it is a tail of
    # one-frame runs, each loading the scene again.
    first, length = gaps[0]
    return Pick(job.id, first, _run_fitting(job, costs, first, length, want))


def _first_part(state: State, job: Job, node_id: str, gaps: list[tuple[int, int]]) -> Pick | None:
    """The first run of a node on a job the farm has just started: its part of the job,
    claimed whole. The job is cut into one part per slot of the nodes that may take it,
    in their order: equal parts on a farm that does not know its speeds yet, parts
    weighted by speed (and by the frames' learned costs) on one that knows them all
    (_part_bounds). A node that does not know its speed measures it from the part's
    first frames while it renders and shares it at once (machine/worker.py), and a part
    longer than the farm needs gives its tail back (split_keep). Probes and factoring's
    runs each paid a start-up: a node now pays one for its part. None when the part is
    not all pending (the job is under way: a probe or factoring), the job shares the
    farm or is limited to N nodes, or some nodes know their speed and others do not."""
    if job.max_nodes or len(_sharing(state, job)) > 1:
        return None
    able = able_renderers(state, job)
    if node_id not in able:
        return None
    speeds = [state.peers[n].speed(job.renderer) for n in able]
    measured = sum(1 for s in speeds if s is not None)
    if 0 < measured < len(able):
        return None
    before = sum(state.peers[n].slots for n in able[: able.index(node_id)])
    mine = range(before, before + state.peers[node_id].slots)
    if measured:
        records = chunk_index.segments(job.chunks).records
        if sum(1 for r in records if r.claim_origin == node_id) >= len(mine):
            return None  # this node's parts were claimed (the bounds walk every frame)
        bounds = _part_bounds(state, job, able)
    else:
        total = sum(state.peers[n].slots for n in able)
        size = -(-job.chunk_total // max(1, total))
        bounds = [min(job.chunk_total, k * size) for k in range(total + 1)]
    for part in mine:
        start, count = bounds[part], bounds[part + 1] - bounds[part]
        if count > 0 and any(
            first <= start and start + count <= first + length for first, length in gaps
        ):
            return Pick(job.id, start, count)
    return None


def _part_bounds(state: State, job: Job, able: list[str]) -> list[int]:
    """Where each slot's part of the job starts (and the job's end last), on a farm
    whose nodes all know their speed: each part the work its slot renders, after its
    start-up, by the moment the farm should be done with the job (so each node pays its
    start-up once and all end about together); frame-units by the job's costs when
    known. A slot too slow to render a frame by then gets an empty part."""
    rates: list[tuple[float, float]] = []  # per slot: (start-up s, s per frame-unit)
    for n in able:
        frame_ms, startup_ms = state.peers[n].speed(job.renderer) or (1000, 0)
        rates += [(startup_ms / 1000.0, max(frame_ms, 1) / 1000.0)] * state.peers[n].slots
    costs = job_costs(state, job)
    work = run_work(job, costs, 0, job.chunk_total)

    def rendered_by(t: float) -> float:
        return sum(max(0.0, t - startup) / per for startup, per in rates)

    lo, hi = 0.0, max(s for s, _ in rates) + work * max(p for _, p in rates)
    for _ in range(50):  # the least t by which the farm renders the whole job
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if rendered_by(mid) < work else (lo, mid)
    bounds, done, at, cum = [0], 0.0, 0, 0.0
    for startup, per in rates:
        done += max(0.0, hi - startup) / per
        if not costs:  # every frame alike: no walk over a job of 1,000,000 frames
            bounds.append(min(job.chunk_total, max(at, round(done / job.chunk_size))))
            at = bounds[-1]
            continue
        # Up to the frame nearest to where this part's work ends.
        while at < job.chunk_total:
            step = run_work(job, costs, at, 1)
            if cum + step / 2 > done:
                break
            cum, at = cum + step, at + 1
        bounds.append(at)
    bounds[-1] = job.chunk_total
    return bounds


def _spread_run(
    state: State,
    job: Job,
    node_id: str,
    me: Peer,
    costs: tuple[float, ...],
    gaps: list[tuple[int, int]],
    want: float,
    measured: Measured,
) -> Pick | None:
    """For frames faster than a claim costs the farm (CLAIM_SECONDS): every node
    claims again within moments of the others, before their claims arrive, and all
    would take the same first gap (each collision a run rendered twice). Each node
    takes its runs from its own part of the job on (its rank's share of the chunk
    range, as fixed chunks are looked at), then, once its part is claimed, from the
    end side of the longest gap left (_stolen_run). None for slower frames: the first
    gap a run fits in."""
    mine = me.speed(job.renderer)
    seconds = measured.frame_seconds.get(job.id, mine[0] / 1000.0 if mine else 0.0)
    if not 0 < seconds < CLAIM_SECONDS or not gaps:
        return None
    rank, renderers = _rank(state, node_id)
    start = rank * job.chunk_total // max(renderers, 1)
    stop = (rank + 1) * job.chunk_total // max(renderers, 1)
    own = [
        (max(first, start), first + length)
        for first, length in gaps
        if first + length > start and first < stop
    ]
    if not own:
        return _stolen_run(job, costs, gaps, want, rank, max(renderers, 1))
    at, end = own[0]
    return Pick(job.id, at, _run_fitting(job, costs, at, end - at, want))


def _stolen_run(
    job: Job,
    costs: tuple[float, ...],
    gaps: list[tuple[int, int]],
    want: float,
    rank: int,
    renderers: int,
) -> Pick:
    """A run for a node whose own part is claimed, from the longest gap left. The node
    whose part the gap starts in takes its runs from the gap's front; the others (who
    finish their parts at about once, and do not see each other's claims at once
    either) take theirs from its end, one run each, stacked in rank order after the
    owner's: they meet only once the gap is used up (work stealing). Taking from the
    front, each such run collided with the owner's next one, and the nodes stealing
    with each other. A gap too short for every node's run: its end."""
    first, length = max(gaps, key=lambda gap: (gap[1], -gap[0]))
    owner = min(renderers - 1, first * renderers // max(job.chunk_total, 1))
    thief = max(1, (rank - owner) % renderers)  # 1 .. renderers - 1
    # (Sized as _run_fitting sizes runs, from the gap's first chunk: these are frames
    # faster than a claim, where the costs of neighbouring frames hardly differ.)
    count = _run_fitting(job, costs, first, length, want)
    end = first + length - (thief - 1) * count
    if end - count < first:
        end = first + length
    return Pick(job.id, end - count, count)


def claimable_gaps(
    state: State, job: Job, node_id: str, busy: Collection[tuple[str, int]]
) -> list[tuple[int, int]]:
    """The gaps of chunks this node may claim, in order: (first, length). Only chunks
    that ever left "pending" are stored (and only they can be busy or have failed), so
    the gaps are what lies between the stored chunks that are not claimable: a job of
    many chunks costs a walk over its stored records, not over every index."""
    # Blocked stretches (first, end): stored chunks not pending, pending ones this node
    # may not take (a record at a time: the chunk index's segments), and busy ones.
    seg = chunk_index.segments(job.chunks)
    blocked = [
        (start, end)
        for start, end, record in zip(seg.starts, seg.ends, seg.records, strict=True)
        if record.state != PENDING
        or (node_id in record.failed_on and able_renderers(state, job, record.failed_on))
    ]
    total, job_id = job.chunk_total, job.id
    mine = [(i, i + 1) for j, i in busy if j == job_id and i < total]
    if mine:
        blocked = sorted(blocked + mine)
    gaps: list[tuple[int, int]] = []
    start = 0
    for first, end in blocked:
        if first > start:
            gaps.append((start, first - start))
        start = max(start, end)
    if total > start:
        gaps.append((start, total - start))
    return gaps


def _start_offset(
    state: State, job: Job, node_id: str, unclaimed: float, costs: tuple[float, ...]
) -> int:
    """Chunks the first runs of the nodes ranked before this one should take, from
    their measured speeds (factoring's first part of each one's share)."""
    able = able_renderers(state, job)
    rates = {n: 1.0 / s[0] for n in able if (s := state.peers[n].speed(job.renderer))}
    if node_id not in rates or len(rates) < len(able):
        return 0  # someone still probes: the probes' own spacing applies
    # The farm's rate as run_length has it: each node's rate split among the jobs it
    # may take, the N fastest for a job limited to N nodes.
    sharing = _sharing(state, job)
    parts = sorted(
        (
            state.peers[n].slots * r / max(1, sum(1 for j in sharing if _asks_for(state, j, n)))
            for n, r in rates.items()
        ),
        reverse=True,
    )
    farm_rate = sum(parts[: job.max_nodes] if job.max_nodes else parts)
    work = sum(
        state.peers[n].slots * _whole(unclaimed * r / farm_rate * FIRST_PART, costs)
        for n, r in rates.items()
        if n < node_id
    )
    return _run_fitting(job, costs, 0, job.chunk_total, work) if work > 0 else 0


def run_length(
    state: State, job: Job, node_id: str, me: Peer, unclaimed: float, measured: Measured
) -> float:
    """How much of the ``unclaimed`` work (frame-units: frames, or their learned costs)
    this node should claim."""
    mine = job_speed(state, job, node_id)
    if mine is None:
        return probe_frames(state, job)  # measure first: a short run tells our speed and start-up
    my_rate = 1.0 / mine[0]
    # The farm's rate, per slot: every node that may take this job, at its measured
    # speed; one not measured yet counts as fast as the fastest (smaller runs, never
    # a run that would end long after everyone else's).
    rates = {
        n: 1.0 / s[0]
        for n in able_renderers(state, job)
        if (s := job_speed(state, job, n)) is not None
    }
    fastest = max(rates.values(), default=my_rate)
    # Each node's rate goes to the jobs it may take (requirements: a job only some nodes
    # may take gets only their rate), and a job limited to N nodes gets the N fastest.
    sharing = _sharing(state, job)
    parts = sorted(
        (
            state.peers[n].slots
            * rates.get(n, fastest)
            / max(1, sum(1 for j in sharing if _asks_for(state, j, n)))
            for n in able_renderers(state, job)
        ),
        reverse=True,
    )
    farm_rate = sum(parts[: job.max_nodes] if job.max_nodes else parts)
    share = unclaimed * my_rate / max(farm_rate, my_rate)  # this slot's share of what is left
    costs = job_costs(state, job)
    work = _whole(share * FIRST_PART, costs)  # factoring: part now, the rest in smaller runs
    # Long enough that loading the scene and the claim are paid rarely: seconds per
    # frame-unit of this job measured here (the start-up is the same for every job of a
    # renderer). When that part would be too short, the whole share: the last round is
    # one run per node.
    seconds = measured.frame_seconds.get(job.id, mine[0] / 1000.0) * job.chunk_size
    if seconds > 0 and work * seconds < shortest_run_seconds(mine[1] / 1000.0):
        # The last round: enough to work until the farm should be done, counting the
        # work other nodes still have in flight, so every node ends about together.
        startup = mine[1] / 1000.0
        slots = last_round_slots(state, job, node_id, seconds, measured)
        if slots is None:
            in_flight = frames_in_flight(state, job, node_id, measured)
            share = (unclaimed + in_flight) * my_rate / max(farm_rate, my_rate)
        elif _busy_slots_end_it(slots, unclaimed, seconds, startup):
            return 0.0  # the others end the job before this node's first frame would end
        else:
            share = last_round_work(slots, unclaimed, seconds, startup)
        work = _whole(share, costs)
    work = min(work, _whole(share, costs))
    return max(1.0 if not costs else 1e-9, work, least_run(seconds, unclaimed, costs))


def last_round_slots(
    state: State, job: Job, node_id: str, unit: float, measured: Measured
) -> list[Slot] | None:
    """The other nodes' slots the last round counts on (_free_slots, a run past its
    estimate as ending now), for this node at ``unit`` seconds per frame-unit; None when
    the rule does not apply: jobs sharing the farm, a node limit, or a node not
    measured yet."""
    if unit <= 0 or job.max_nodes or len(_sharing(state, job)) > 1:
        return None
    able = able_renderers(state, job)
    if any(state.peers[n].speed(job.renderer) is None for n in able):
        return None
    mine = job_speed(state, job, node_id)
    if mine is None:
        return None
    return _free_slots(state, job, node_id, unit / (mine[0] / 1000.0), measured, late_done=True)


def last_round_work(slots: list[Slot], unclaimed: float, unit: float, startup: float) -> float:
    """This node's part of the last round (frame-units): the work it renders, after its
    start-up, by the moment the farm should be done with the ``unclaimed`` work, the
    other nodes' ``slots`` taking the rest as their runs end (each run's estimate from
    its holder's speed and when this node saw the claim), each paying its start-up. A
    node whose run should end after that moment takes none of it: sized as a share of
    the unclaimed work plus the work in flight, such a node counted as taking less than
    none, and the others' last runs fell short of the job's end."""
    hi = _farm_end(unit, slots, unclaimed, startup + unclaimed * unit, startup)
    # (Rounded: the bisection's last bit must not round a whole run up a frame.)
    return round(max(0.0, hi - startup) / unit, 6)


def _busy_slots_end_it(slots: list[Slot], unclaimed: float, unit: float, startup: float) -> bool:
    """Whether the ``slots`` now rendering runs that should end in the future render all
    ``unclaimed`` work, in whole frames each after its start-up, before this node
    (``unit`` seconds per frame-unit, after its ``startup``) would end a frame of it:
    then this node takes none. Every run was at least a frame, so a slow node free
    first took one of the last round's frames and ended the job up to a slow frame
    after the fast nodes. Idle slots and runs past their estimate are not counted: a
    node counted on another that would never take the frame (it had failed there) and
    the job never ended. A counted run's DONE changes the state, and this node looks
    again then."""
    my_end = startup + unit
    busy = [slot for slot in slots if slot.free > 0]
    rendered = sum(
        math.floor(max(0.0, my_end - slot.free - slot.startup) / slot.per + 1e-9) for slot in busy
    )
    return bool(busy) and rendered >= unclaimed


def shortest_run_seconds(startup: float) -> float:
    """How long a run should render at least (when there is that much left): long
    enough that the renderer's ``startup`` (seconds), and the farm's own cost of a claim
    and its DONE, are each paid rarely."""
    return STARTUPS_PER_RUN * max(startup, CLAIM_SECONDS)


def least_run(seconds: float, unclaimed: float, costs: tuple[float, ...]) -> float:
    """The least work a run takes when its frames render so fast (``seconds`` per
    frame-unit) that claims, not renders, would bound the farm: runs that render for
    STARTUPS_PER_RUN claims' cost even past this node's share (the farm ends at most
    that much later), or what is left. One frame for frames of 0.4 s and more: their
    share decides."""
    if seconds <= 0:
        return 0.0
    return min(_whole(STARTUPS_PER_RUN * CLAIM_SECONDS / seconds, costs), unclaimed)


def _whole(work: float, costs: tuple[float, ...]) -> float:
    # Without costs a run is whole frames: round up, as runs always were.
    return float(math.ceil(work)) if not costs else work


def frames_in_flight(state: State, job: Job, node_id: str, measured: Measured) -> float:
    """Work (frame-units) of ``job`` other nodes' claimed runs should still have to
    render now, from their measured speeds and when this node saw each claim (half a
    run if unseen)."""
    me = job_speed(state, job, node_id)
    job_seconds = measured.frame_seconds.get(job.id)
    scale = job_seconds * 1000.0 / me[0] if me is not None and job_seconds else 1.0
    left = 0.0
    costs = job_costs(state, job)
    for first, count, holder, seq in claimed_runs(job):
        if holder == node_id:
            continue
        frames = run_work(job, costs, first, count)
        estimate = run_estimate(state, job, holder, first, count, scale, seq)
        seen = measured.seen.get((job.id, first, seq))
        if estimate is None or seen is None or estimate <= 0:
            left += frames / 2
            continue
        left += frames * min(max(1.0 - (measured.now - seen) / estimate, 0.0), 1.0)
    return left


# A backup is worth starting only if it should end this much sooner than the original.
BACKUP_GAIN = 0.1  # of the original's remaining time
OVERDUE_FACTOR = 2.0  # a run this many times past its estimate counts as hung
OVERDUE_LEFT = 0.5  # a run past its estimate: still this part of its time so far to go
# A run's DONE takes time to reach us besides the render: signed, fsynced, sent and
# folded, on nodes that may be starved of CPU for a second or two (docs/performance.md
# "Dispatch"). A run estimated at less than this is judged overdue or hung against this
# instead: runs of milliseconds whose DONE was merely late were copied, each copy a run
# rendered twice. Runs of real frames (estimates of seconds and more) are not affected.
DONE_DELAY_SECONDS = 3.0


class Backup(NamedTuple):
    job_id: str
    chunk: int  # the run's first chunk
    count: int
    claim_seq: int  # the claim it copies
    holder: str


class InFlight(NamedTuple):
    """A claimed run of another node, with when this node first saw the claim."""

    job_id: str
    chunk: int
    count: int
    claim_seq: int
    holder: str
    seen: float


def claimed_runs(job: Job) -> list[tuple[int, int, str, int]]:
    """The job's claimed runs: (first chunk, count, holder, claim seq), in chunk order."""
    return chunk_index.claimed_runs(job.chunks)


def run_estimate(
    state: State,
    job: Job,
    holder: str,
    first: int,
    count: int,
    scale: float,
    seq: int | None = None,
) -> float | None:
    """Seconds ``holder`` should need for ``count`` chunks of ``job``, from its measured
    speed (start-up included); ``scale`` turns its renderer-wide seconds per frame into
    this job's (frames of one scene cost more or less than the renderer's average).
    With ``seq`` (the claim holding the run), the rest of a run that already told
    finished chunks (``run_started``) pays no start-up: its renderer is running."""
    measured = job_speed(state, job, holder)
    if measured is None:
        return None
    startup = measured[1] / 1000.0
    if seq is not None and run_started(job, first, holder, seq):
        startup = 0.0
    costs = job_costs(state, job)
    if job.tiles == 1:  # the run's frames, at once (a run of thousands of frames)
        work = run_work(job, costs, first, count)
    else:
        work = sum(run_work(job, costs, i, 1) for i in range(first, first + count))
    return startup + work * scale * measured[0] / 1000.0


def run_started(job: Job, first: int, holder: str, seq: int) -> bool:
    """Whether the claimed run from ``first`` is the rest of a run whose first chunks
    its holder has already told done (a DONE every FINISHED_TOLD_EVERY of rendering):
    the holder's renderer has started, and the rest is seen from that DONE on. Counted
    with a start-up, the rest of every long run looked a start-up longer than it was
    (28 s on a farm with a 28 s start-up): the others sized their last runs by it."""
    if first == 0:
        return False
    before = job.chunks.get(first - 1)
    return (
        before is not None
        and before.state == CHUNK_DONE
        and before.claim_origin == holder
        and before.claim_seq == seq
        and before.done_by == holder
    )


def expected_left(elapsed: float, estimate: float) -> float:
    """Seconds a run should still need after ``elapsed`` of its ``estimate``: the rest
    of the estimate, or once past it (its frames cost more than measured; nobody sees
    its progress) half as long again as it has run."""
    if elapsed < estimate:
        return estimate - elapsed
    return OVERDUE_LEFT * elapsed


def frame_left(elapsed: float, estimate: float) -> float:
    """Seconds a frame being rendered should still need after ``elapsed`` of its
    ``estimate``: the rest of it; none while it runs less than OVERDUE_FACTOR times
    past it (render times vary: a frame a little late ends any moment); once past
    that (a heavy frame whose cost was guessed, a hung renderer), as expected_left."""
    if elapsed < estimate:
        return estimate - elapsed
    if elapsed < OVERDUE_FACTOR * estimate:
        return 0.0
    return expected_left(elapsed, estimate)


def overdue_estimate(estimate: float) -> float:
    """The time a run of this estimate may take before it counts as overdue (a copy may
    be worth it) or hung: its estimate, and never less than its DONE could take to
    arrive (DONE_DELAY_SECONDS)."""
    return max(estimate, DONE_DELAY_SECONDS)


def backup_left(elapsed: float, estimate: float) -> float:
    """Seconds a backup should count on the original run still needing: as
    expected_left, except that a run past a short estimate but not past
    overdue_estimate is taken to be done and its DONE on its way (none left)."""
    if estimate <= elapsed < overdue_estimate(estimate):
        return 0.0
    return expected_left(elapsed, estimate)


def pick_backup(
    state: State,
    node_id: str,
    now: float,
    seen: Mapping[tuple[str, int, int], float],
    busy: Container[tuple[str, int]] = (),
    measured: Measured | None = None,
) -> Backup | None:
    """An in-flight run of another node that this idle node should render a copy of, or
    None. Only when no job has unclaimed work for us (pick_run found none): the run
    expected to finish last, if our copy should end sooner and its holder would not
    give its tail back itself (_gives_tail_back), or a run far past its estimate (a
    hung renderer on a live node). ``seen``: (job, first chunk, claim seq)
    -> when this node first saw that claim; ``now`` is this node's clock."""
    me = state.peers.get(node_id)
    if me is None or me.state != UP:
        return None
    measured = measured or Measured()
    worth: list[tuple[float, Backup]] = []  # (how late it should end, the copy)
    for job in job_order(state):
        if not may_take(state, job, node_id):
            continue
        my_speed = job_speed(state, job, node_id)
        if my_speed is None:
            continue  # not measured yet: no telling whether a copy would be faster
        job_seconds = measured.frame_seconds.get(job.id)
        scale = job_seconds * 1000.0 / my_speed[0] if job_seconds else 1.0
        slots: list[Slot] | None = None
        for first, count, holder, seq in chunk_index.claimed_runs(job.chunks, uncopied=True):
            if holder == node_id:
                continue
            if any((job.id, i) in busy for i in range(first, first + count)):
                continue
            if any(node_id in job.chunk(i).failed_on for i in range(first, first + count)):
                continue
            theirs = run_estimate(state, job, holder, first, count, scale, seq)
            ours = run_estimate(state, job, node_id, first, count, scale)
            if ours is None:
                continue
            started = seen.get((job.id, first, seq), now)
            if theirs is None:
                theirs = ours  # a holder not measured yet: as fast as us
            hung = now - started >= OVERDUE_FACTOR * overdue_estimate(theirs)
            if not hung and _gives_tail_back(state, job, holder, count, theirs):
                continue  # its holder gives its tail back to the farm: copied, it could not
            left = backup_left(now - started, theirs)
            if not hung and ours >= (1.0 - BACKUP_GAIN) * left:
                continue  # the original should end first
            if not hung:
                if slots is None:  # (the same for each run of the job: looked up once)
                    slots = _free_slots(state, job, node_id, scale, measured, late_done=True)
                work = run_work(job, job_costs(state, job), first, count)
                if _copied_sooner_elsewhere(slots, work, ours):
                    continue  # a faster node free soon should end a copy sooner
            end = now + left
            key = math.inf if hung else end
            if hung:
                count = _hung_piece(state, job, node_id, first, count, measured)
            worth.append((key, Backup(job.id, first, count, seq, holder)))
        if worth:
            return _spread_backup(state, node_id, worth)  # the most urgent job's runs first
    return None


def _hung_piece(
    state: State, job: Job, node_id: str, first: int, count: int, measured: Measured
) -> int:
    """How many chunks of a hung run (``count`` from ``first``) this idle node copies:
    a run sized as if they were unclaimed (run_length), from its head, where the holder
    is stuck; the rest is a run of its own, as hung, for the next idle node. A live
    holder gives the rest of a run stuck on a frame back itself (machine/worker.py,
    once it or the farm has measured a speed); this is for a holder that does not (a
    node of an earlier version, a farm that measured nothing yet). Copied whole, a
    fresh farm's part that hung before its first frame was rendered by one node, the
    others idle (400 frames, four nodes: 1.8 times the bound)."""
    me = state.peers.get(node_id)
    if me is None or not job.adaptive or job.tiles != 1 or count <= 2:
        return count
    costs = job_costs(state, job)
    want = run_length(state, job, node_id, me, run_work(job, costs, first, count), measured)
    return min(count, _run_fitting(job, costs, first, count, max(want, 1e-9)))


SPLIT_STARTUPS = 1  # a run's tail is given back only if it is worth this many start-ups
SPLIT_LOOK_EVERY = 1.0  # a run looks whether to give its tail back at most this often
# Runs of frames faster than this are never split: they are sized by what a claim costs
# (least_run), and each look at a run walks its chunks.
SPLIT_FRAME_SECONDS = STARTUPS_PER_RUN * CLAIM_SECONDS


def _copied_sooner_elsewhere(slots: list[Slot], work: float, ours: float) -> bool:
    """Whether another node's slot (_free_slots), busy now with a run that should end in
    the future, should end a copy of ``work`` frame-units sooner than this idle node
    would (``ours`` seconds)."""
    return any(
        slot.free > 0 and slot.free + slot.startup + work * slot.per < ours for slot in slots
    )


def _gives_tail_back(state: State, job: Job, holder: str, count: int, theirs: float) -> bool:
    """Whether the holder of a run of ``count`` chunks (``theirs``: its estimate of them)
    should give the frames after the one it renders back to the farm itself (split_keep
    looks at every frame's end), rather than have an idle node copy the run: a copied
    run is never split, so its rest is rendered by two nodes, not shared out. A fresh
    farm's equal parts of 1,500 frames: a 1 s node idle first copied a 7 s node's rest
    of 136 frames, another 7 s node copied the other's rest, and the job ended with
    that run, six nodes idle for 7,000 s (ratio 4.9)."""
    speed = job_speed(state, job, holder)
    if speed is None or not job.adaptive or job.tiles != 1 or count < 3:
        return False
    startup = speed[1] / 1000.0
    per_frame = max(0.0, theirs - startup) / count
    tail = per_frame * (count - 1)
    return per_frame >= SPLIT_FRAME_SECONDS and tail >= SPLIT_STARTUPS * max(startup, CLAIM_SECONDS)


def split_keep(
    state: State,
    node_id: str,
    job: Job,
    first: int,
    count: int,
    finished_at: Sequence[float],
    measured: Measured,
    frame_began: float | None = None,
) -> int:
    """How many chunks of this node's run (``count`` from ``first``) it should go on
    rendering: fewer than ``count`` when the rest should go back to the farm (released)
    so idle nodes render it. ``finished_at``: when each frame of the run finished so far;
    ``frame_began``: when the frame it renders now began (None: now, a look at the end
    of a frame). A look while a frame renders counts what that frame has taken: one
    running past its estimate (a heavy frame whose cost was guessed, a hung renderer)
    keeps the rest of the run waiting behind it.

    A run sized over frames nobody had rendered yet can take far longer than sized, and
    a copy of it (a backup) starts again from its first frame. Once the job has no
    unclaimed frame, the holder, which alone sees its run's progress, keeps what it
    should render by the time the farm could be done with the rest: its remaining
    frames shared with the other nodes as they should become free (each paying its
    start-up), from its own pace in this run. The frame being rendered is kept."""
    done = len(finished_at)
    if job.state != ACTIVE or not job.adaptive or job.tiles != 1 or done + 1 >= count:
        return count
    mine = job_speed(state, job, node_id)
    # Cheap first (this runs at every frame of a run): what could be given back should
    # take this node a few start-ups at its pace so far (frames of milliseconds never).
    # A node not measured yet (its first run measures it) goes by its frames so far; at
    # its first frame it knows nothing, and may still give its run back to another job.
    per_frame = None
    if done >= 3 or (done == 2 and mine is None):
        per_frame = (finished_at[-1] - finished_at[0]) / (done - 1)
    elif job.id in measured.frame_seconds or mine is not None:
        per_frame = measured.frame_seconds.get(job.id, mine[0] / 1000.0 if mine else 0.0)
        per_frame *= job.chunk_size
    if per_frame is not None:
        if per_frame < SPLIT_FRAME_SECONDS:
            return count  # frames claimed by the thousand: a look at each frame costs more
        startup = mine[1] / 1000.0 if mine is not None else 0.0
        if (count - done - 1) * per_frame < SPLIT_STARTUPS * max(startup, CLAIM_SECONDS):
            return count
    if _higher_waits(state, job, node_id):
        # A job of higher priority has frames nobody renders: this run ends with the
        # frame it renders and gives the rest back, so the slot takes the urgent job
        # (a fresh farm's parts, whole shares of the job, kept it waiting for minutes).
        return done + 1
    if _evens_out(state, job, node_id, job.chunk(first).claim_seq):
        # Jobs of equal priority share the farm by speed, re-balanced at every claim; a
        # node's run of one job is also given back when the other waits with less speed
        # on it: two jobs submitted at once, three of four nodes took parts of the first
        # before they heard of the second, and it ended 25% later.
        return done + 1
    if mine is None or any(job.chunk(i).backup_origin for i in range(first, first + count)):
        return count
    costs = job_costs(state, job)
    pending = _pending_work(job, costs) if _unclaimed(job) else 0.0
    # This run's own pace (seconds per frame-unit): its frames may cost more than the
    # farm's estimate of them, and its neighbours (the tail) likely as much.
    unit = measured.frame_seconds.get(job.id, mine[0] / 1000.0) * job.chunk_size
    if done >= 3:
        rendered = run_work(job, costs, first + 1, done - 1)
        if rendered > 0:
            unit = (finished_at[-1] - finished_at[0]) / rendered
    if unit <= 0:
        return count
    scale = unit / (mine[0] / 1000.0)
    left = [run_work(job, costs, first + i, 1) for i in range(done, count)]
    # The frame being rendered is kept; the rest waits for it to end.
    began = measured.now if frame_began is None else frame_began
    current = frame_left(max(0.0, measured.now - began), left[0] * unit)
    rest = left[1:]
    alone = current + sum(rest) * unit  # seconds this node needs for the rest by itself
    slots = _free_slots(state, job, node_id, scale, measured)
    if not slots:
        return count
    if min(slot.free for slot in slots) > max(current, unit * max(rest)) + SPLIT_LOOK_EVERY:
        # No slot frees up before this run's next frame ends (when it looks again):
        # given back now, the tail would wait, sized by guesses the next frames refine.
        return count

    # The farm's pending frames are rendered too, by the same slots: counted as ours to
    # share out, or the nodes giving back at once each counted on every idle slot. So
    # are the tails the job's other runs give back (tails=True): each slow node giving
    # back at once counted on the idle nodes for its own tail alone, kept too little,
    # was done long before the farm and took more, a start-up each. The others take
    # whole frames, as heavy as this tail's on the mean.
    need = sum(rest) + pending
    frame = sum(left) / len(left)
    most = alone + pending * unit
    hi = min(_farm_end(unit, slots, need, most, current, frame=frame, tails=True), alone)
    # Worth it only if the farm ends sooner by a tenth of what this run has left (the
    # takers' start-ups are counted in hi; asked for one of ours more, a run of heavy
    # frames whose costs were guessed was kept, and it ended the farm).
    if alone - hi < BACKUP_GAIN * alone:
        return count
    keep, work = 1, 0.0  # (the frame being rendered, and what fits after it)
    while keep < len(left) and work < (hi - current) / unit - 1e-9:
        work += left[keep]
        keep += 1
    return max(done + 1, min(count, done + keep))


def _farm_end(
    unit: float,
    slots: list[Slot],
    need: float,
    most: float,
    startup: float = 0.0,
    frame: float = 1.0,
    tails: bool = False,
) -> float:
    """Seconds from now by which this node (``unit`` seconds per frame-unit, after its
    ``startup``) and ``slots`` (_free_slots) render ``need`` frame-units, searched up to
    ``most``. The slots render whole frames (``frame`` frame-units each): a slot that
    would render part of one by then takes none. Counted as a fluid, nine idle slots
    each took a ninth of a frame, and the farm's end looked a start-up sooner than any
    taker could make it. With ``tails``, the slots' runs of this job that should end
    past that moment give back their tails too (_run_rendered): their work is the
    farm's."""

    def whole(work: float) -> float:  # (frames learned to cost nothing: a fluid)
        return math.floor(work / frame + 1e-9) * frame if frame > 0 else work

    def rendered_by(t: float) -> float:  # frame-units the farm renders from now to now + t
        return max(0.0, t - startup) / unit + sum(
            whole(max(0.0, t - slot.free - slot.startup) / slot.per)
            + (_run_rendered(t, slot) if tails and slot.on_job else 0.0)
            for slot in slots
        )

    if tails:  # (what those runs have left: rendered by them or given back)
        need += sum(slot.free / slot.per for slot in slots if slot.on_job)
    lo, hi = 0.0, most
    for _ in range(40):  # the least t by which the farm renders the work
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if rendered_by(mid) < need else (lo, mid)
    return hi


def _run_rendered(t: float, slot: Slot) -> float:
    """Frame-units of its own run (``slot.free`` seconds to go) that a slot renders in
    the next ``t`` seconds: until then, when the rest would be worth giving back
    (split_keep's own test: a start-up and a tenth of the run); else all of it."""
    if slot.free - t > max(slot.startup, BACKUP_GAIN * slot.free):
        return t / slot.per
    return slot.free / slot.per


def _higher_waits(state: State, job: Job, node_id: str) -> bool:
    """Whether a job of higher priority than ``job`` has unclaimed frames this node may
    render (asked at every look of a run: no sort of the farm's jobs)."""
    return any(
        other.state == ACTIVE
        and not other.paused
        and other.priority > job.priority
        and _unclaimed(other)
        and may_take(state, other, node_id)
        for other in state.jobs.values()
    )


# A node moves from one job to another of equal priority when that narrows the
# difference of their running speeds (by its speed on both: a difference of more than
# half that narrows) by at least a tenth of its speed on both: every move narrows it,
# so nodes never move back and forth. (Only moves that would not turn the difference
# around, as first written, left a farm of speeds 1, 1, 2, 3 at 2 against 0.83.)
EVEN = 0.55


def _evens_out(state: State, job: Job, node_id: str, seq: int) -> bool:
    """Whether this node, rendering ``job``, should move to another job of the same
    priority with unclaimed frames it may render: moving it narrows the difference of
    the two jobs' running speeds (running_rate) by a tenth of its speed on both at
    least (EVEN; 3 nodes against 1: 2 and 2). Every holder works out the same movers
    from the same state: the job's runs by holder id and claim (``seq``: this node's
    run), each moving while the difference left calls for it (a node that gave back
    its tail holds the job until the frame it renders is done, so it stays among the
    movers and nobody else joins them; a node with two slots moves one run, not both).
    Every move narrows the difference, so nodes never move back and forth."""
    runs: list[tuple[str, int]] = []
    rate = None
    for other in state.jobs.values():
        if (
            other.id == job.id
            or other.state != ACTIVE
            or other.paused
            or other.priority != job.priority
            or not _unclaimed(other)
        ):
            continue
        if rate is None:  # (only with another job to move to: this runs at every look)
            rate = running_rate(state, job)
            runs = sorted({(holder, s) for _, _, holder, s in claimed_runs(job)})
        gap = rate - running_rate(state, other)
        for holder, claim in runs:
            if gap <= 0:
                break
            if not may_take(state, other, holder):
                continue
            step = _move_step(state, job, other, holder)
            if gap < step * EVEN:
                continue
            if (holder, claim) == (node_id, seq):
                return True
            gap -= step
    return False


def _move_step(state: State, job: Job, other: Job, node_id: str) -> float:
    """How much ``node_id`` moving from ``job`` to ``other`` narrows the difference of
    their running speeds (running_rate): its speed on both."""
    mine = _rate_speed(state, job.renderer, node_id)
    theirs = _rate_speed(state, other.renderer, node_id)
    return 1.0 / mine + 1.0 / theirs


def _pending_work(job: Job, costs: tuple[float, ...]) -> float:
    """Work (frame-units) of the job's pending chunks: the stretches between its stored
    chunks that are not pending (a walk over the stored runs, not over every chunk)."""
    seg = chunk_index.segments(job.chunks)
    work, start = 0.0, 0
    for first, end, record in zip(seg.starts, seg.ends, seg.records, strict=True):
        if record.state == PENDING:
            continue
        if first > start:
            work += run_work(job, costs, start, first - start)
        start = max(start, end)
    if job.chunk_total > start:
        work += run_work(job, costs, start, job.chunk_total - start)
    return work


def _free_slots(
    state: State,
    job: Job,
    node_id: str,
    scale: float,
    measured: Measured,
    late_done: bool = False,
) -> list[Slot]:
    """Other nodes' slots that may render ``job``, a slot free at the estimated end of
    the run it renders (its estimate less how long ago this node saw the claim). A slot
    on another job's work counts as free at its run's end when that job has nothing
    left to claim (its nodes come to the jobs still rendering: a slow node's tail of one
    of two jobs sharing the farm was kept, counted on no help, and its job ended 11%
    after the other), else as never free; a slot on a copy, never."""
    now = measured.now
    busy: dict[str, list[tuple[float, bool]]] = {}
    for other in state.jobs.values():
        if other.state != ACTIVE:
            continue
        ending = other.id == job.id or not _unclaimed(other)
        for first, count, holder, seq in claimed_runs(other):
            copier = other.chunk(first).backup_origin
            if copier:
                busy.setdefault(copier, []).append((math.inf, False))
            if not ending:
                busy.setdefault(holder, []).append((math.inf, False))
                continue
            # (Another job's run at the renderer's average frame: this node's pace on
            # it is not known here.)
            estimate = run_estimate(
                state, other, holder, first, count, scale if other.id == job.id else 1.0, seq
            )
            seen = measured.seen.get((other.id, first, seq))
            if estimate is None or seen is None:
                busy.setdefault(holder, []).append((math.inf, False))
                continue
            left = (
                max(0.0, estimate - (now - seen))
                if late_done
                else expected_left(now - seen, estimate)
            )
            busy.setdefault(holder, []).append((left, other.id == job.id and not copier))
    slots: list[Slot] = []
    for n in able_renderers(state, job):
        if n == node_id or not has_room(job, n):
            continue
        speed = job_speed(state, job, n)
        if speed is None:
            continue
        ends = sorted(busy.get(n, []))
        ends = [(0.0, False)] * max(0, state.peers[n].slots - len(ends)) + ends
        for end, on_job in ends[: state.peers[n].slots]:
            if end < math.inf:
                slots.append(Slot(end, speed[1] / 1000.0, speed[0] / 1000.0 * scale, on_job))
    return slots


def _spread_backup(state: State, node_id: str, worth: list[tuple[float, Backup]]) -> Backup:
    """Which of the runs worth copying this node copies: the one expected to finish
    last, or hung, for the first node by rank, the next one for the next node, and so
    on. Idle nodes look at once when the job's end nears; all taking the same run, one
    BACKUP_CHUNK won and the others rendered a copy for nothing until they heard of it
    (docs/performance.md "Dispatch")."""
    ranked = sorted(worth, key=lambda item: (-item[0], item[1].chunk))
    rank, _ = _rank(state, node_id)
    return ranked[rank % len(ranked)][1]


def overdue_at(
    state: State,
    node_id: str,
    seen: Mapping[tuple[str, int, int], float],
    measured: Measured | None = None,
) -> float:
    """When an idle node should look again for a backup (math.inf: never): the next
    moment some other node's run is worth copying as it runs past its estimate (a
    copy from here would end sooner, and its holder would not give its tail back
    itself: _gives_tail_back), or counts as hung."""
    me = state.peers.get(node_id)
    if me is None:
        return math.inf
    measured = measured or Measured()
    now = measured.now
    soonest = math.inf
    for job in job_order(state):
        my_speed = job_speed(state, job, node_id)
        if my_speed is None or not may_take(state, job, node_id):
            continue
        job_seconds = measured.frame_seconds.get(job.id)
        scale = job_seconds * 1000.0 / my_speed[0] if job_seconds else 1.0
        for first, count, holder, seq in chunk_index.claimed_runs(job.chunks, uncopied=True):
            if holder == node_id:
                continue
            started = seen.get((job.id, first, seq))
            theirs = run_estimate(state, job, holder, first, count, scale, seq)
            ours = run_estimate(state, job, node_id, first, count, scale)
            if started is None or ours is None:
                continue
            if theirs is None:
                # A holder not measured yet counts as fast as us, as pick_backup counts
                # it: a fresh farm's part whose renderer hung before its first frame
                # was never looked at again, and the job never ended.
                theirs = ours
            # Past its estimate, the time left grows with the time run: a copy is worth
            # it once OVERDUE_LEFT * elapsed * (1 - gain) exceeds ours.
            overdue = overdue_estimate(theirs)
            at = started + OVERDUE_FACTOR * overdue  # hung
            if not _gives_tail_back(state, job, holder, count, theirs):
                worth = started + max(overdue, ours / (OVERDUE_LEFT * (1.0 - BACKUP_GAIN)))
                at = min(worth, at)
            if at > now:
                soonest = min(soonest, at)
    return soonest
