"""What comes out of the node machine: the I/O a driver must carry out.

A driver performs the effects of one ``handle`` call in the order given, with
one rule of its own: actions in a ``Persist`` are on disk before any later
``Broadcast`` or ``SendActions`` leaves the node (so a crash can never make a
node reuse a seq a peer has already seen).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peerfarm.core.state import Job


@dataclass(frozen=True, slots=True)
class Persist:
    """Append these actions (wire form) to the log file, fsynced."""

    actions: tuple[dict[str, Any], ...]


@dataclass(frozen=True, slots=True)
class Compacted:
    """The log folded ``count`` more actions into its base: once what earlier Persists
    hold is on disk, write the base as the snapshot file (fsynced), then replace the
    log file with the actions after it (``log.actions()`` when carried out)."""

    count: int


@dataclass(frozen=True, slots=True)
class SendSnapshot:
    """Send our last written snapshot to a peer that lacks actions folded into it (it
    joins, or comes back after them); the tail follows as actions."""

    peer: str


@dataclass(frozen=True, slots=True)
class Broadcast:
    """Send these of our own actions to every linked peer (after they are persisted)."""

    actions: tuple[dict[str, Any], ...]


@dataclass(frozen=True, slots=True)
class SendActions:
    """Send these actions to one peer (an anti-entropy answer), in batches."""

    peer: str
    actions: tuple[dict[str, Any], ...]


@dataclass(frozen=True, slots=True)
class Send:
    """Send one message (peerfarm.wire.messages) to one linked peer."""

    peer: str
    message: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Dial:
    """Keep a link to this peer from now on: dial it, and redial when the link drops.

    ``peer`` is "" for a bootstrap server known only by its address; otherwise the
    address to dial is the peer's current known-worker-list entry (``address_of``).
    """

    peer: str
    address: str


@dataclass(frozen=True, slots=True)
class SaveKnownPeers:
    """The known-worker list changed: keep it on disk (peer id -> address and name)."""

    kwl: dict[str, dict[str, str]]


@dataclass(frozen=True, slots=True)
class StartRender:
    """Render chunk ``chunk`` of ``job`` (``frames``; one tile of it if ``tile`` is set).

    ``sources`` are the peers to fetch the job's scene files from, best first.
    Report RenderProgress per frame and RenderEnded when the process is gone.
    """

    job: Job
    chunk: int
    claim_seq: int
    frames: range
    tile: int | None
    sources: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StopRender:
    """Kill the renderer of a chunk; report RenderEnded when it is gone."""

    job_id: str
    chunk: int
    reason: str


@dataclass(frozen=True, slots=True)
class ScanOutputs:
    """Find which frames of one of our jobs its output folder already holds (and, for a
    tiled job, which tiles of the frames not yet stitched are in our frames folder);
    report OutputsScanned."""

    job: Job


@dataclass(frozen=True, slots=True)
class FetchFrame:
    """Get a frame (or one tile of it) of one of our jobs from its holder and keep it:
    a frame goes to the output folder, a tile to our frames folder. The holder may be
    this node. Report FrameFetched."""

    job: Job
    frame: int
    tile: int | None
    holder: str


@dataclass(frozen=True, slots=True)
class Stitch:
    """Every tile of the frame is here: put them together into the output folder;
    report Stitched."""

    job: Job
    frame: int


@dataclass(frozen=True, slots=True)
class FinishOutputs:
    """Every frame is in: write the GIF (if the format allows) and the video (if
    asked); report OutputsFinished."""

    job: Job


@dataclass(frozen=True, slots=True)
class Note:
    """A line for the node's log (logging levels: 20 info, 30 warning, 40 error, 50 an
    internal error: a bug of the machine, which the simulator counts as a failure)."""

    level: int
    text: str


@dataclass(frozen=True, slots=True)
class Left:
    """This node announced that it leaves: hand the last actions to the links, then exit."""


Effect = (
    Persist
    | Broadcast
    | SendActions
    | Send
    | Dial
    | SaveKnownPeers
    | StartRender
    | StopRender
    | ScanOutputs
    | FetchFrame
    | Stitch
    | FinishOutputs
    | Note
    | Left
)
