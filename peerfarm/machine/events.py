"""What goes into the node machine: everything that can happen to a node.

Each event is plain data. A driver (the trio runtime or the simulator) turns
what it sees (bytes on a link, a process that exited, a timer, a click) into
one of these and hands it to ``NodeMachine.handle`` together with the time.
Events about a peer carry its node id in ``peer``: hearing anything from a
peer is what keeps it "up" in this node's eyes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# -- life and time ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Started:
    """The node listens now: dial the peers it knows, start its clocks."""


@dataclass(frozen=True, slots=True)
class Tick:
    """Time has passed: probes, anti-entropy, failure detection, timeouts."""


# -- the mesh ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinkUp:
    """A link to a peer finished its handshake (and is the one link kept for the pair)."""

    peer: str
    role: str  # "node" or "bootstrap"
    name: str
    address: str  # where the peer listens ("" if it did not say)


@dataclass(frozen=True, slots=True)
class LinkDown:
    """The link to a peer closed (the peer's process died, or the network reset it)."""

    peer: str


@dataclass(frozen=True, slots=True)
class Heard:
    """Something arrived from a peer that nothing but the failure detector cares about
    (part of a long message), at ``at`` (None: now)."""

    peer: str
    at: float | None = None


@dataclass(frozen=True, slots=True)
class ProbeReceived:
    """A PING, ACK or PING_REQ message of the failure detector (machine/probing.py), as
    checked against its schema."""

    peer: str
    message: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ActionsReceived:
    """An ACTIONS message: actions as they came off the wire, not yet validated."""

    peer: str
    actions: list[Any]


@dataclass(frozen=True, slots=True)
class VersionVectorReceived:
    """A VV message: what the peer holds; it wants what it lacks. ``heads``: the hash
    (8 bytes) of its last action of each origin (core/log.py ActionLog.heads)."""

    peer: str
    vv: dict[str, int]
    heads: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SnapshotReceived:
    """A SNAPSHOT message, decoded (core/snapshot.py ``decode``): a peer's log base, sent
    because our version vector lacks actions folded into it."""

    peer: str
    snapshot: dict[str, Any]


@dataclass(frozen=True, slots=True)
class JoinAsked:
    """A JOIN message: a node asks a bootstrap server whom to dial."""

    peer: str


@dataclass(frozen=True, slots=True)
class JoinAnswered:
    """A JOIN_REPLY: the known-worker list and how far the farm's log reaches."""

    peer: str
    kwl: list[dict[str, str]]
    vv: dict[str, int]


@dataclass(frozen=True, slots=True)
class PeersFound:
    """Known-worker-list entries found by other means (LAN discovery)."""

    entries: list[dict[str, str]]


# -- renders ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RenderProgress:
    """The renderer of a chunk finished one more frame."""

    job_id: str
    chunk: int


@dataclass(frozen=True, slots=True)
class RenderEnded:
    """The renderer process of a chunk is gone: it exited, or was stopped (StopRender).

    ``ok`` means it wrote every frame of the chunk; otherwise ``error`` says why not.
    For a stopped render ``ok`` and ``error`` do not matter.
    """

    job_id: str
    chunk: int
    ok: bool
    error: str = ""
    no_space: bool = False  # it failed because the disk is full: not the scene's fault


# -- collecting the outputs of our own jobs ---------------------------------------------


@dataclass(frozen=True, slots=True)
class OutputsScanned:
    """What a job's output folder (and, for tiles, our frames folder) already holds;
    ``error``: the folder cannot be used, and why."""

    job_id: str
    frames: frozenset[int]
    tiles: dict[int, frozenset[int]] = field(default_factory=dict)  # frame -> tiles here
    error: str = ""


@dataclass(frozen=True, slots=True)
class DiskTrouble:
    """This node cannot write its data folder (full, or failing): ``problem`` says what;
    "" means it can again."""

    problem: str


# Outcomes of a FetchFrame.
STORED = "stored"  # the frame is in the output folder (a tile: in our frames folder)
MISSING = "missing"  # the holder answered that it does not hold it
UNREACHABLE = "unreachable"  # no answer (not linked, link dropped, timed out): try later
WRITE_FAILED = "write failed"  # we could not write it: ``error`` says why
NO_SPACE = "no space"  # the disk is full: try again once there is room


@dataclass(frozen=True, slots=True)
class FrameFetched:
    job_id: str
    frame: int
    tile: int | None
    holder: str
    outcome: str
    error: str = ""


@dataclass(frozen=True, slots=True)
class Stitched:
    """A tiled frame was put together and written ("" error) or could not be."""

    job_id: str
    frame: int
    error: str = ""


@dataclass(frozen=True, slots=True)
class OutputsFinished:
    """The job's GIF and video were written (``gif``: a GIF was made) or failed."""

    job_id: str
    gif: bool
    error: str = ""


# -- what a user asks of this node -----------------------------------------------------
# Farm-wide requests (submit and job control) are refused with Refused when they
# cannot be carried out; nothing changes then.


@dataclass(frozen=True, slots=True)
class SubmitJob:
    payload: dict[str, Any]  # a checked NEW_JOB payload (peerfarm.jobspec.build_new_job)


@dataclass(frozen=True, slots=True)
class CancelJob:
    job_id: str


@dataclass(frozen=True, slots=True)
class PauseJob:
    job_id: str


@dataclass(frozen=True, slots=True)
class ResumeJob:
    job_id: str


@dataclass(frozen=True, slots=True)
class RetryJob:
    job_id: str


@dataclass(frozen=True, slots=True)
class SetPriority:
    job_id: str
    priority: int


@dataclass(frozen=True, slots=True)
class PauseWorker:
    """This machine's user wants it back: stop rendering now, give the chunks back."""


@dataclass(frozen=True, slots=True)
class ResumeWorker:
    pass


@dataclass(frozen=True, slots=True)
class SetSlots:
    slots: int


@dataclass(frozen=True, slots=True)
class Stop:
    """First: claim nothing more, finish the renders in flight, leave. ``at_once`` (or a
    second Stop): stop the renderers, give their chunks back, leave."""

    at_once: bool = False
