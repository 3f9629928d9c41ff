"""The farm's replicated state: plain immutable records in persistent maps.

Reducers return new states that share everything they did not change
(``immutables.Map`` is a hash array mapped trie), so a state is cheap to keep as
a checkpoint and no action copies the whole state.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import NamedTuple

from immutables import Map

from peerfarm.core.actions import chunk_count, chunk_frames

# Chunk states.
PENDING = "pending"
CLAIMED = "claimed"
CHUNK_DONE = "done"
CHUNK_FAILED = "failed"

# Job states as stored; "queued" and "rendering" are derived views of ACTIVE.
ACTIVE = "active"
JOB_DONE = "done"
JOB_FAILED = "failed"
CANCELLED = "cancelled"

# Peer states.
UP = "up"
LEFT = "left"
DOWN = "down"
FAULTY = "faulty"  # proven to have signed two different actions at one seq: out for good

MAX_ATTEMPTS = 3  # failed renders of a chunk before it fails, when no other node can try
MAX_FAILING_NODES = 3  # a chunk that failed on this many different nodes fails the job
MAX_JOB_FAILURES_PER_NODE = 3  # a node that failed this many chunks of a job stops taking it


class Chunk(NamedTuple):
    state: str = PENDING
    claim_origin: str = ""
    claim_seq: int = 0  # seq of the winning CLAIM_CHUNK; DONE/RELEASE quote it
    epoch: int = 0  # claims this chunk has won so far: the fencing token
    done_by: str = ""  # node that holds the rendered frames
    attempts: int = 0  # failed renders
    error: str = ""  # the last failure's renderer output
    failed_on: tuple[str, ...] = ()  # nodes it failed on, in order
    # A node rendering a copy of this claim (BACKUP_CHUNK): the first DONE of either
    # counts. Cleared when a new claim wins the chunk.
    backup_origin: str = ""


PENDING_CHUNK = Chunk()


class Job(NamedTuple):
    id: str
    name: str
    renderer: str
    renderer_version: str
    scene: str
    files: tuple[tuple[str, str, int], ...]  # (path, sha256, size), sorted by path
    main: str
    options: tuple[str, ...]  # renderer options, allow-listed by the plugin
    frame_start: int
    frame_end: int
    chunk_size: int
    padding: int
    width: int
    height: int
    output: str
    priority: int
    submitter: str
    submitted_lamport: int
    # > 1: every frame is cut into this many tiles (peerfarm.core.tiles) and each chunk
    # is one tile of one frame: chunk i is tile i % tiles of frame frame_start + i // tiles.
    tiles: int = 1
    format: str = "png"  # image format of the frames = their file extension
    video: bool = False  # the submitter encodes an MP4 of the frames
    fps: int = 24  # frames per second of the video and the GIF
    # Which chunks nodes take first (core/chunk_order.py): "in-order", or "spread" (first,
    # last, middle...: the whole shot early).
    order: str = "in-order"
    # The job this one is a new revision of (a re-render on save): that job was cancelled
    # when this one arrived, and its frames in the output folder are not this job's.
    supersedes: str = ""
    state: str = ACTIVE
    # Only chunks that ever left "pending" are stored: absent means PENDING_CHUNK.
    chunks: Map = Map()
    chunks_done: int = 0
    frames_done: int = 0  # frames whose every chunk (or tile) is done
    frame_renders: int = 0  # frame renders (tile renders, if tiled) started, duplicates included
    error: str = ""
    failures: Map = Map()  # node id -> chunks of this job it failed
    paused: bool = False  # no new claims while paused (PAUSE_JOB / RESUME_JOB)
    # The submitter holds every frame (JOB_COLLECTED): other copies may be deleted.
    collected: bool = False
    # Claims take runs of chunks sized to each node's speed (core/scheduler.py); false:
    # one chunk per claim, the size the user fixed with --chunk.
    adaptive: bool = False
    # Requirements and limits (docs/scheduling.md, core/requirements.py): only a node
    # with every one of these tags and at least this much memory (bytes; 0: any) takes
    # the job, and at most max_nodes nodes render it at once (0: no limit).
    require: tuple[str, ...] = ()
    require_memory: int = 0
    max_nodes: int = 0
    # Kept for a job with max_nodes only (core/reducers.py): node id -> chunks it
    # renders now (claimed, or copies of claims), so a claim checks the limit at once.
    holders: Map = Map()
    # What makes two jobs "the same scene" (core/costs.py): earlier renders of that
    # content tell each frame's relative cost.
    content: str = ""
    # Each frame's relative cost (mean 1), frame_start first, learned from earlier
    # renders of the same content when the job arrived; (): not known, all alike.
    costs: tuple[float, ...] = ()
    # A finished job summarised (core/summary.py): runs of chunks done by one node,
    # (first chunk, chunks, node), covering every chunk; ``chunks`` then holds only the
    # records of chunks that failed on the way. Last field: the digest leaves it out
    # while empty (core/digest.py), so a job reads as it did before the field existed.
    done_runs: tuple[tuple[int, int, str], ...] = ()

    @property
    def chunk_total(self) -> int:
        return chunk_count(self.frame_start, self.frame_end, self.chunk_size, self.tiles)

    @property
    def frames_total(self) -> int:
        return self.frame_end - self.frame_start + 1

    def frame_file_name(self, frame: int) -> str:
        """``<name>_0001.png``: the name a frame has everywhere (job names are file-safe)."""
        return f"{self.name}_{frame:0{self.padding}d}.{self.format}"

    def chunk(self, index: int) -> Chunk:
        chunk = self.chunks.get(index)
        if chunk is not None:
            return chunk
        if self.done_runs:  # summarised: every chunk is done, by its run's node
            at = bisect_right(self.done_runs, index, key=_first_chunk) - 1
            return Chunk(state=CHUNK_DONE, done_by=self.done_runs[at][2] if at >= 0 else "")
        return PENDING_CHUNK

    def run_frames(self, index: int, count: int) -> range:
        """The frames of the run of ``count`` chunks from ``index`` (one tile: count 1)."""
        if count == 1:
            return self.frames_of(index)
        return range(self.frames_of(index).start, self.frames_of(index + count - 1).stop)

    def tile_file_name(self, frame: int, tile: int) -> str:
        """``<name>_0001.tile3.png``: one tile of a frame, on the node that rendered it
        and on the submitter until the frame is stitched."""
        return f"{self.name}_{frame:0{self.padding}d}.tile{tile}.{self.format}"

    def frames_of(self, index: int) -> range:
        if self.tiles > 1:
            frame = self.frame_start + index // self.tiles
            return range(frame, frame + 1)
        return chunk_frames(self.frame_start, self.frame_end, self.chunk_size, index)

    def tile_of(self, index: int) -> int | None:
        """The tile chunk ``index`` renders, or None when the job renders whole frames."""
        return index % self.tiles if self.tiles > 1 else None

    def chunk_of_frame(self, frame: int) -> int:
        """The chunk that renders ``frame`` (its first tile, if tiled)."""
        return self.chunks_of_frame(frame).start

    def chunks_of_frame(self, frame: int) -> range:
        """Every chunk that renders a part of ``frame``: one, or one per tile."""
        if self.tiles > 1:
            first = (frame - self.frame_start) * self.tiles
            return range(first, first + self.tiles)
        index = (frame - self.frame_start) // self.chunk_size
        return range(index, index + 1)

    def frame_complete(self, frame: int) -> bool:
        """Whether every chunk of ``frame`` is done."""
        return all(self.chunk(i).state == CHUNK_DONE for i in self.chunks_of_frame(frame))

    def takes(self, node_id: str) -> bool:
        """False once the node failed too many chunks of this job (it is blocklisted)."""
        return self.failures.get(node_id, 0) < MAX_JOB_FAILURES_PER_NODE

    @property
    def display_state(self) -> str:
        """What users see: queued / rendering / paused / done / failed / cancelled."""
        if self.state != ACTIVE:
            return self.state
        if self.paused:
            return "paused"
        return "rendering" if self.chunks else "queued"


def _first_chunk(run: tuple[int, int, str]) -> int:
    return run[0]


class Peer(NamedTuple):
    name: str
    address: str
    slots: int
    renders: bool
    state: str = UP
    incarnation: int = 0  # seq of the PEER_JOINED that made it up: fences PEER_DOWN
    renderers: tuple[tuple[str, str], ...] = ()  # (name, version), sorted
    features: tuple[str, ...] = ()  # protocol features it speaks, sorted (core/features.py)
    version: str = ""  # its peerfarm version (feature peer_versions; "" if not said)
    # Measured by the node (NODE_SPEED): (renderer, ms per frame, start-up ms), sorted.
    speeds: tuple[tuple[str, int, int], ...] = ()
    # What the node advertises of itself: tags its owner gave it (`--tag gpu`), sorted,
    # and its total memory (bytes) and logical cores as detected (0: unknown).
    tags: tuple[str, ...] = ()
    memory: int = 0
    cores: int = 0

    def speed(self, renderer: str) -> tuple[int, int] | None:
        """(ms per frame, start-up ms) this peer measured with ``renderer``, if any."""
        return next(((f, s) for name, f, s in self.speeds if name == renderer), None)

    def can_render(self, job: Job) -> bool:
        """Whether this peer has the job's renderer, in the version the job requires."""
        return any(
            name == job.renderer and version.startswith(job.renderer_version)
            for name, version in self.renderers
        )

    def meets(self, job: Job) -> bool:
        """Whether this peer has every tag the job requires and at least the memory it
        requires (a peer whose memory is unknown meets no memory requirement)."""
        if job.require_memory and self.memory < job.require_memory:
            return False
        return all(tag in self.tags for tag in job.require)


class State(NamedTuple):
    jobs: Map = Map()  # job id -> Job
    peers: Map = Map()  # node id -> Peer
    features: tuple[str, ...] = ()  # protocol features the farm enabled, sorted
    # Scene content -> frame render times reported in DONE (core/costs.py), bounded.
    scenes: Map = Map()


EMPTY_STATE = State()


def able_renderers(state: State, job: Job, exclude: tuple[str, ...] = ()) -> list[str]:
    """Rendering peers that are up and may take chunks of this job (its renderer, its
    requirements, not blocklisted)."""
    return sorted(
        n
        for n, p in state.peers.items()
        if p.renders
        and p.state == UP
        and n not in exclude
        and job.takes(n)
        and p.can_render(job)
        and p.meets(job)
    )
