"""Learned per-frame costs: which frames of a scene are heavy, from earlier renders of
the same scene content (docs/scheduling.md, "Learned frame costs").

Nodes report each frame's render time in DONE (``frame_ms``, measured by the node:
reducers never read a clock). The state keeps, per scene content, a bounded table
frame -> (node, ms). When a job of the same content arrives (a re-submitted scene),
its NEW_JOB is folded with each frame's relative cost (mean 1 over the job's
frames), so the scheduler sizes runs by work, not by frames.

Times from different nodes are put on one scale by each node's speed, estimated from
the table itself: where one node's run ends and another's starts, neighbouring
frames cost about the same, so the two nodes' times there tell their speed ratio
(medians of a few frames on each side, so a single heavy frame does not count).
Only basic float arithmetic (no log or exp): every node folds the same numbers on
every platform.
"""

from __future__ import annotations

import bisect
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from immutables import Map

MAX_SCENES = 16  # scene contents remembered; the least recently used goes first
MAX_FRAMES = 20_000  # frames remembered per scene content (and the longest job costed)
KNOWN_AT_LEAST = 0.5  # of a job's frames measured before, or it gets no costs
EDGE_FRAMES = 3  # frames on each side of a run boundary that compare two nodes
EDGE_AT_LEAST = 3  # frames on each side of a boundary that make it trustworthy
NEAR = 3  # frames apart (a run's first frame is not measured) still count as neighbours
SOLVE_ROUNDS = 60
COST_DIGITS = 3
WINDOW = 10  # frames each side of the nearest measured one whose mean a gap's frame costs


class SceneTimes(NamedTuple):
    frames: Map = Map()  # frame -> (node id, ms): the last render of it that counted
    used: int = 0  # Lamport time of the last action that used or fed it (eviction)


def scene_content(renderer: str, scene: str, main: str, files: Iterable[tuple]) -> str:
    """What makes two jobs "the same scene": the renderer, the inline scene and the
    scene files by content (path, sha256). Not the frame range, size or options."""
    blob = json.dumps([renderer, scene, main, sorted((f[0], f[1]) for f in files)])
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def record(
    scenes: Map, content: str, node: str, frames: range, frame_ms: list[int], lamport: int
) -> Map:
    """The table with one run's frame times added (0: not measured, e.g. the run's first
    frame, which also paid the start-up). Bounded: at most MAX_FRAMES frames per scene
    (new frames past it are not kept), MAX_SCENES scenes (the least recently used goes)."""
    known = scenes.get(content, SceneTimes())
    table = known.frames
    for frame, ms in zip(frames, frame_ms, strict=False):
        if ms > 0 and (frame in table or len(table) < MAX_FRAMES):
            table = table.set(frame, (node, ms))
    return touch(scenes, content, known._replace(frames=table), lamport)


def touch(scenes: Map, content: str, times: SceneTimes, lamport: int) -> Map:
    scenes = scenes.set(content, times._replace(used=max(times.used, lamport)))
    while len(scenes) > MAX_SCENES:
        oldest = min(scenes, key=lambda c: (scenes[c].used, c))
        scenes = scenes.delete(oldest)
    return scenes


def frame_costs(
    times: SceneTimes | None,
    frame_start: int,
    frame_end: int,
    at_least: float = KNOWN_AT_LEAST,
    reach: int | None = None,
    prior: Mapping[str, float] | None = None,
    unknown_as_mean: bool = False,
    scales: Mapping[str, float] | None = None,
) -> tuple[float, ...]:
    """Each frame's relative cost (mean 1), frame_start first, or () when fewer than
    ``at_least`` of the frames were measured. A frame never measured costs as its
    measured neighbours. ``prior``: each node's measured speed (ms per frame), which
    puts on one scale the nodes no boundary links (node_scales). ``unknown_as_mean``: a
    frame beyond ``reach`` costs the mean known frame, not the median (what a run there
    should cost on average: a shot with a heavy frame in ten has a cheap median).
    ``scales``: node_scales(table, prior), when the caller has it already."""
    total = frame_end - frame_start + 1
    if times is None or total > MAX_FRAMES or total < 1:
        return ()
    table = times.frames
    inside = sum(1 for f in range(frame_start, frame_end + 1) if f in table)
    if inside < at_least * total or inside < 2:
        return ()
    speed = scales if scales is not None else node_scales(table, prior)
    known = {f: ms / speed[node] for f, (node, ms) in table.items()}
    costs = _fill(known, frame_start, frame_end, reach, unknown_as_mean)
    mean = sum(costs) / total
    if mean <= 0:
        return ()
    return tuple(round(c / mean, COST_DIGITS) for c in costs)


def node_scales(table: Map, prior: Mapping[str, float] | None = None) -> dict[str, float]:
    """Each node's time for a frame relative to the others' (1 for the first), from the
    boundaries where one node's frames meet another's.

    Nodes whose frames never meet (a farm's first short runs, scattered along the job)
    fall into groups the boundaries cannot compare. With ``prior`` (each node's measured
    ms per frame) each group is put on the prior's scale: its nodes' scales times the
    median of prior ÷ scale over them; a node no boundary links takes its prior; a
    group without a prior takes the median group's factor.
    Without, every group starts at 1 (a node 7x slower than the rest, alone between
    gaps, would make its frames look 7x as costly)."""
    # Segments: consecutive frames (up to NEAR apart) rendered by one node:
    # (node, first frame, last frame, ms of its frames in order).
    segments: list[tuple[str, int, int, list[int]]] = []
    for f in sorted(table):
        node, ms = table[f]
        if segments and segments[-1][0] == node and f - segments[-1][2] <= NEAR:
            seg = segments[-1]
            seg[3].append(ms)
            segments[-1] = (node, seg[1], f, seg[3])
        else:
            segments.append((node, f, f, [ms]))
    # Where two nodes' segments touch: node a's time over node b's there, and how many
    # frames on the shorter side tell it. One list per pair of nodes.
    boundaries: dict[tuple[str, str], list[tuple[float, int]]] = {}
    for (a, _, end_a, ms_a), (b, start_b, _, ms_b) in zip(segments, segments[1:], strict=False):
        if a == b or start_b - end_a > NEAR:
            continue
        side_a, side_b = ms_a[-EDGE_FRAMES:], ms_b[:EDGE_FRAMES]
        ratio = _median(side_a) / _median(side_b)
        frames = min(len(side_a), len(side_b))
        boundaries.setdefault((a, b), []).append((ratio, frames))
        boundaries.setdefault((b, a), []).append((1.0 / ratio, frames))
    # Each pair's ratio: the median over its boundaries with a few frames on each side
    # when it has any (one frame may be a spike). Its strength: how many such
    # boundaries, then how many frames they have. Each boundary is also a vote for the
    # median rounds below; a node counts its strong ones when it has any.
    links: dict[str, dict[str, tuple[float, tuple[int, int]]]] = {}
    votes: dict[str, list[tuple[str, float]]] = {}
    strong_votes: dict[str, list[tuple[str, float]]] = {}
    for (a, b), found in sorted(boundaries.items()):
        every = [r for r, _ in found]
        strong = [r for r, frames in found if frames >= EDGE_AT_LEAST]
        strength = (len(strong), sum(frames for _, frames in found))
        links.setdefault(a, {})[b] = (_median(strong or every), strength)
        votes.setdefault(a, []).extend((b, r) for r in every)
        strong_votes.setdefault(a, []).extend((b, r) for r in strong)
    votes = {n: strong_votes[n] or every_vote for n, every_vote in votes.items()}
    nodes = sorted({node for node, _ in table.values()})
    scale = _spanning_scales(nodes, links)
    # Then each node takes the median its boundaries tell (one where the costs jump is
    # outvoted; the others only tell a node that has no strong boundary).
    for _ in range(SOLVE_ROUNDS):
        for n in nodes:
            if n in votes:
                scale[n] = _median([scale[other] * r for other, r in votes[n]])
    first = scale[nodes[0]]  # the solution holds up to a factor: the first keeps 1
    scale = {n: s / first for n, s in scale.items()}
    if prior:
        scale = _on_prior(scale, links, prior)
    return scale


def _spanning_scales(
    nodes: list[str], links: Mapping[str, Mapping[str, tuple[float, tuple[int, int]]]]
) -> dict[str, float]:
    """Each node's scale along the strongest pairs from the first node of its group
    (a spanning tree grown by the strongest link to a node already placed); a group no
    pair reaches starts at 1.
    Started all at 1 and solved by medians alone, two nodes whose one pair to the rest
    was outvoted at both its ends (each end's other pairs agreed among themselves)
    kept 1: the farm took a fast and a slow node for 3.7 times faster than they are."""
    scale: dict[str, float] = {}
    for start in nodes:
        if start in scale:
            continue
        scale[start] = 1.0
        while True:
            best: tuple[tuple[int, int], str, str] | None = None
            for n in nodes:
                if n in scale:
                    continue
                for other, (_, strength) in sorted(links.get(n, {}).items()):
                    if other in scale and (best is None or strength > best[0]):
                        best = (strength, n, other)
            if best is None:
                break
            _, n, other = best
            scale[n] = scale[other] * links[n][other][0]
    return scale


def _on_prior(
    scale: dict[str, float],
    links: Mapping[str, Mapping[str, object]],
    prior: Mapping[str, float],
) -> dict[str, float]:
    # Groups of nodes linked by boundaries, each moved to the prior's scale as a whole.
    group = {n: n for n in scale}

    def root(n: str) -> str:
        while group[n] != n:
            n = group[n]
        return n

    for n, eqs in links.items():
        for other in eqs:
            a, b = root(n), root(other)
            if a != b:
                group[max(a, b)] = min(a, b)
    members: dict[str, list[str]] = {}
    for n in sorted(scale):
        members.setdefault(root(n), []).append(n)
    factors: dict[str, float] = {}
    for key, nodes in members.items():
        told = [prior[n] / scale[n] for n in nodes if prior.get(n, 0) > 0 and scale[n] > 0]
        if told:
            factors[key] = _median(told)
    if not factors:
        return dict(scale)
    # A group no prior tells (its nodes rendered frames but have not shared their speed
    # yet) counts as a typical one. Left at its own scale (about 1) beside groups in ms
    # per frame, its frames looked thousands of times as costly as the rest, whose costs
    # rounded to 0: a run of them looked done, was never given back nor copied, and a
    # 32-node farm waited minutes for its one slow node.
    typical = _median(list(factors.values()))
    return {
        n: scale[n] * factors.get(key, typical) for key, nodes in members.items() for n in nodes
    }


def _median(values: list[float] | list[int]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[mid])
    return (ordered[mid - 1] + ordered[mid]) / 2.0


def _fill(
    known: dict[int, float],
    frame_start: int,
    frame_end: int,
    reach: int | None = None,
    unknown_as_mean: bool = False,
) -> list[float]:
    """The known cost of each frame; a frame not measured (a run's first frame) costs the
    median of its measured neighbours up to two frames away, or else, if the nearest
    measured frame (the earlier on a tie) is at most ``reach`` frames away, the mean of
    the measured frames up to WINDOW frames either side of that one (``reach`` None:
    any distance, as much as that frame), or else the median (or mean) of every known
    cost."""
    values = list(known.values())
    typical = sum(values) / len(values) if unknown_as_mean else _median(values)
    # The measured frames in order and their running sums (for the means around a
    # frame), only where they are used: a job's costs on arrival (reach None) never.
    order = sorted(known) if reach is not None else []
    sums = [0.0]
    for g in order:
        sums.append(sums[-1] + known[g])
    frames = range(frame_start, frame_end + 1)
    nxt: tuple[int, float] | None = None
    after: list[tuple[int, float] | None] = [None] * len(frames)
    for f in reversed(frames):
        if f in known:
            nxt = (f, known[f])
        after[f - frame_start] = nxt
    out: list[float] = []
    before: tuple[int, float] | None = None
    for f in frames:
        if f in known:
            before = (f, known[f])
            out.append(known[f])
            continue
        near = [known[g] for g in (f - 1, f + 1, f - 2, f + 2) if g in known]
        if near:
            out.append(_median(near))
            continue
        later = after[f - frame_start]
        if before is not None and (later is None or f - before[0] <= later[0] - f):
            nearest = before
        else:
            nearest = later
        if nearest is None or (reach is not None and abs(nearest[0] - f) > reach):
            out.append(typical)
        elif reach is not None:
            # The mean of the measured frames around the nearest one, not that frame
            # alone: a gap next to a shot with a heavy frame in ten looked as cheap as
            # its cheap frames (half its work), and runs sized over it ran twice as
            # long. (The costs a job arrives with, reach None, keep the nearest frame's:
            # most of their frames are measured.)
            lo = bisect.bisect_left(order, nearest[0] - WINDOW)
            hi = bisect.bisect_right(order, nearest[0] + WINDOW)
            out.append((sums[hi] - sums[lo]) / (hi - lo))
        else:
            out.append(nearest[1])
    return out


def work_of(costs: tuple[float, ...], frame_start: int, frames: range) -> float:
    """The work of ``frames`` in frame-units: their summed relative costs (each 1 when
    the costs are not known)."""
    if not costs:
        return float(len(frames))
    return sum(costs[f - frame_start] for f in frames if 0 <= f - frame_start < len(costs))
