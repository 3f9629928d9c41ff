"""What the app's views show, derived from the node's state (Qt-free, tested with plain values).

The views never read the core's state directly: they get rows from here.
Jobs are immutable records, so a job's per-node counts are computed once per
version of the job and reused while it does not change.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from peerfarm.core import summary
from peerfarm.core.requirements import requirement_text, why_waiting
from peerfarm.core.state import (
    ACTIVE,
    CHUNK_DONE,
    CHUNK_FAILED,
    CLAIMED,
    Job,
    State,
)
from ui.rates import RateMeter

# Frame cell states of the job view's frame grid.
WAITING = "waiting"
RENDERING = "rendering"
DONE = "done"
FAILED = "failed"


@dataclass
class JobRow:
    id: str
    name: str
    renderer: str
    submitter: str  # the submitting node's name
    mine: bool  # submitted from this machine
    state: str  # queued / rendering / paused / done / failed / cancelled
    frames_done: int
    frames_total: int
    fps: float | None
    eta: float | None  # seconds
    priority: int
    error: str
    output: str
    frames_collected: int | None  # for jobs of this machine: frames in the output folder
    complete: bool  # every frame in the output folder (and the GIF written)
    # Its requirements and limit in a few words ("" for none), and why no node up may
    # take it ("" when some may): core/requirements.py.
    needs: str = ""
    waiting: str = ""
    # This machine's jobs: why their frames do not come in (the output disk is full).
    output_waiting: str = ""


@dataclass
class PeerRow:
    id: str
    name: str
    address: str
    health: str  # up / suspect / down / left (this node's view)
    renders: bool
    renderers: list[tuple[str, str]]
    slots: int
    rendering: list[str]  # "job frames A-B" per chunk (or run of chunks) it holds now
    frames_rendered: int
    fps: float | None
    me: bool
    worker_note: str = ""  # this machine only: paused, waiting until you are away
    not_offered: dict[str, str] = field(default_factory=dict)  # this machine: name -> why
    # Its measured speed per renderer (NODE_SPEED): (renderer, ms per frame, start-up ms)
    speeds: list[tuple[str, int, int]] = field(default_factory=list)
    # What it advertises (jobs may require them): its tags, memory (bytes) and cores (0: unknown)
    tags: tuple[str, ...] = ()
    memory: int = 0
    cores: int = 0


@dataclass
class _JobCounts:
    job: Job
    frames_by_node: dict[str, int] = field(default_factory=dict)
    claims_by_node: dict[str, list[int]] = field(default_factory=dict)


class FarmSummary:
    """Turns successive node states into view rows, measuring speeds between them."""

    def __init__(self) -> None:
        self._counts: dict[str, _JobCounts] = {}
        self._job_meters: dict[str, RateMeter] = {}
        self._peer_meters: dict[str, RateMeter] = {}

    def _job_counts(self, job: Job) -> _JobCounts:
        cached = self._counts.get(job.id)
        if cached is not None and cached.job is job:
            return cached
        counts = _JobCounts(job)
        counts.frames_by_node = summary.frames_by_node(job)  # also of a summarised job
        if job.state == ACTIVE:
            for index, chunk in job.chunks.items():
                if chunk.state == CLAIMED:
                    counts.claims_by_node.setdefault(chunk.claim_origin, []).append(index)
        self._counts[job.id] = counts
        return counts

    def jobs(self, state: State, me: str, now: float, progress: dict[str, dict]) -> list[JobRow]:
        """Every job, oldest first. ``progress``: collector progress of this machine's jobs."""
        rows = []
        ordered = sorted(state.jobs.values(), key=lambda j: (j.submitted_lamport, j.id))
        for job in ordered:
            meter = self._job_meters.setdefault(job.id, RateMeter())
            meter.add(now, job.frames_done)
            fps = meter.rate(now) if job.state == ACTIVE else None
            remaining = job.frames_total - job.frames_done
            eta = remaining / fps if fps else None
            submitter = state.peers.get(job.submitter)
            collected = progress.get(job.id)
            rows.append(
                JobRow(
                    id=job.id,
                    name=job.name,
                    renderer=job.renderer,
                    submitter=submitter.name if submitter else job.submitter[:8],
                    mine=job.submitter == me,
                    state=job.display_state,
                    frames_done=job.frames_done,
                    frames_total=job.frames_total,
                    fps=fps,
                    eta=eta,
                    priority=job.priority,
                    error=job.error,
                    output=job.output,
                    frames_collected=collected["frames_collected"] if collected else None,
                    complete=bool(collected and collected["complete"]),
                    needs=requirement_text(job),
                    waiting=why_waiting(state, job),
                    output_waiting=collected.get("output_waiting", "") if collected else "",
                )
            )
        return rows

    def peers(
        self, state: State, me: str, now: float, health: dict[str, str], addresses: dict[str, str]
    ) -> list[PeerRow]:
        """Every node the farm knows, this machine first. ``health``: this node's view
        of each peer (up/suspect/down/left); ``addresses``: where we reach them."""
        frames: dict[str, int] = {}
        claims: dict[str, list[str]] = {}
        for job in state.jobs.values():
            counts = self._job_counts(job)
            for node, n in counts.frames_by_node.items():
                frames[node] = frames.get(node, 0) + n
            for node, indexes in counts.claims_by_node.items():
                # A run of chunks claimed at once (an adaptive job) is one entry.
                runs: list[list[int]] = []
                for index in sorted(indexes):
                    if (
                        runs
                        and runs[-1][-1] == index - 1
                        and (job.chunk(index).claim_seq == job.chunk(runs[-1][0]).claim_seq)
                    ):
                        runs[-1].append(index)
                    else:
                        runs.append([index])
                for run in runs:
                    span = frames_text(job.run_frames(run[0], len(run)))
                    claims.setdefault(node, []).append(f"{job.name} {span}")
        rows = []
        for node_id in sorted(state.peers, key=lambda n: (n != me, state.peers[n].name, n)):
            peer = state.peers[node_id]
            meter = self._peer_meters.setdefault(node_id, RateMeter())
            meter.add(now, frames.get(node_id, 0))
            rows.append(
                PeerRow(
                    id=node_id,
                    name=peer.name,
                    address=addresses.get(node_id) or peer.address,
                    health="up" if node_id == me else health.get(node_id, peer.state),
                    renders=peer.renders,
                    renderers=list(peer.renderers),
                    slots=peer.slots,
                    rendering=claims.get(node_id, []),
                    frames_rendered=frames.get(node_id, 0),
                    fps=meter.rate(now),
                    me=node_id == me,
                    speeds=list(peer.speeds),
                    tags=peer.tags,
                    memory=peer.memory,
                    cores=peer.cores,
                )
            )
        return rows


MAX_FRAME_CELLS = 10_000  # bigger jobs get one cell per chunk in the frame grid


def frame_cells(job: Job) -> list[tuple[int, int, str]]:
    """(first frame, chunk index, cell state) per cell of the frame grid, in frame order:
    one cell per frame, or per chunk for jobs of more than MAX_FRAME_CELLS frames."""
    per_frame = job.frames_total <= MAX_FRAME_CELLS
    cells = []
    for index in range(job.chunk_total):
        state = cell_state(job, index)
        frames = job.frames_of(index)
        if per_frame:
            cells.extend((frame, index, state) for frame in frames)
        else:
            cells.append((frames.start, index, state))
    return cells


def cell_state(job: Job, index: int) -> str:
    chunk = job.chunk(index)
    if chunk.state == CHUNK_DONE:
        return DONE
    if chunk.state == CHUNK_FAILED:
        return FAILED
    if chunk.state == CLAIMED and job.state == ACTIVE:
        return RENDERING
    return WAITING


def cell_text(job: Job, index: int, peer_names: dict[str, str]) -> str:
    """What hovering a cell says: where its frames are rendering, who rendered them, why
    they failed."""
    chunk = job.chunk(index)
    frames = job.frames_of(index)
    span = frames_text(frames)
    state = cell_state(job, index)
    if state == DONE:
        return f"{span}: done, rendered by {_name(peer_names, chunk.done_by)}"
    if state == FAILED:
        return f"{span}: failed: {_first_line(chunk.error)}"
    if state == RENDERING:
        return f"{span}: rendering on {_name(peer_names, chunk.claim_origin)}"
    if chunk.failed_on:
        nodes = ", ".join(_name(peer_names, n) for n in chunk.failed_on)
        return f"{span}: waiting; failed before on {nodes}: {_first_line(chunk.error)}"
    return f"{span}: waiting for a free node"


def frames_text(frames: range) -> str:
    """'frame 5' or 'frames 5-8'."""
    if len(frames) == 1:
        return f"frame {frames.start}"
    return f"frames {frames.start}-{frames.stop - 1}"


def _name(peer_names: dict[str, str], node_id: str) -> str:
    return peer_names.get(node_id) or node_id[:8]


def _first_line(text: str) -> str:
    """The last non-empty line of a renderer's error: usually the one that says why."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "no details")[:200]


def peer_names(state: State) -> dict[str, str]:
    return {node_id: peer.name for node_id, peer in state.peers.items()}
