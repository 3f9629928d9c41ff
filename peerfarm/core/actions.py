"""Actions: the only way the farm's replicated state changes.

An action is plain data ``{type, payload, origin, seq, lamport}``:
- ``origin`` is the node that emitted it and ``seq`` counts up from 1 without
  gaps per origin, so ``(origin, seq)`` is the action's identity (duplicates are
  dropped, gaps are noticed);
- ``lamport`` is a Lamport clock; ``(lamport, origin, seq)`` is the total order
  every node folds the log in.

Every action is validated against the schema of its type before it is applied
or forwarded (``validate_action``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from peerfarm.core import schema as s
from peerfarm.core.chunk_order import ORDERS
from peerfarm.core.features import MAX_FEATURE_NAME, MAX_FEATURES, PEER_VERSIONS, SPOKEN
from peerfarm.core.feeds import GENESIS, HASH_BYTES, MAX_CHAIN, action_hash, check_fork_proof
from peerfarm.core.names import is_safe_name
from peerfarm.core.tiles import MAX_TILES
from peerfarm.formats import FORMATS

MAX_FRAME = 10_000_000
MAX_CHUNKS = 100_000
MAX_SCENE_BYTES = 256 * 1024
MAX_SEQ = 2**62
# Lamport times: far below MAX_SEQ, and an origin's next action may move its clock
# forward by at most MAX_LAMPORT_STEP (its first by at most MAX_FIRST_LAMPORT): one
# action from a faulty member cannot use up the farm's clock (ActionLog checks it).
MAX_LAMPORT = 2**53
MAX_LAMPORT_STEP = 2**32
MAX_FIRST_LAMPORT = 2**40
MAX_SIGNATURE_BYTES = 128  # an ECDSA P-256 signature is at most 72
MAX_CERT_BYTES = 4096  # as peerfarm.security.identity's
MAX_FPS = 240
# Requirements and limits (core/requirements.py imports state; these bounds live here).
MAX_NODE_TAGS = 32  # tags one node advertises
MAX_JOB_TAGS = 16  # tags one job requires
MAX_MEMORY = 2**50  # bytes: a PiB, far above any machine
MAX_CORES = 65_536
MAX_NODES_LIMIT = 100_000

PEER_JOINED = "PEER_JOINED"
PEER_LEFT = "PEER_LEFT"
PEER_DOWN = "PEER_DOWN"
NEW_JOB = "NEW_JOB"
CLAIM_CHUNK = "CLAIM_CHUNK"
DONE = "DONE"
RELEASE_CHUNK = "RELEASE_CHUNK"
CHUNK_FAILED = "CHUNK_FAILED"
CANCEL_JOB = "CANCEL_JOB"
CHUNK_LOST = "CHUNK_LOST"
PAUSE_JOB = "PAUSE_JOB"
RESUME_JOB = "RESUME_JOB"
RETRY_JOB = "RETRY_JOB"
SET_PRIORITY = "SET_PRIORITY"
EQUIVOCATION = "EQUIVOCATION"
JOB_COLLECTED = "JOB_COLLECTED"
ENABLE_FEATURE = "ENABLE_FEATURE"

_feature = s.text(MAX_FEATURE_NAME, allow_empty=False)
NODE_SPEED = "NODE_SPEED"
BACKUP_CHUNK = "BACKUP_CHUNK"

_chunk_ref = {"job_id": s.job_id, "chunk": s.integer(0, MAX_CHUNKS - 1)}
_claim_ref = {**_chunk_ref, "claim_seq": s.integer(1, MAX_SEQ)}
# A run of consecutive chunks from "chunk" on, claimed (rendered, given back, failed) as
# one: an adaptive job's chunks are single frames and a node claims as many as suit its
# speed (core/scheduler.py). Absent means 1, so logs written before it still load.
_run = {"count": s.integer(1, MAX_CHUNKS)}
MAX_MS = 2**40  # a measured time in milliseconds

# The payload schema of every action type.
PAYLOADS: dict[str, s.Check] = {
    # A node announces itself (on first start and whenever its name/address/slots change).
    PEER_JOINED: s.record(
        {
            "name": s.text(64, allow_empty=False),
            "address": s.address,
            "slots": s.integer(0, 1024),
            "renders": s.boolean,
            # renderer name -> installed version, as probed by the node
            "renderers": s.map_of(s.renderer_name, s.text(64), 32),
        },
        {
            # the protocol features the node speaks (core/features.py)
            "features": s.list_of(_feature, MAX_FEATURES),
            # feature peer_versions: the node's peerfarm version. A build that does not
            # speak it refuses the field, as it would any field it does not know.
            **({"version": s.text(32)} if PEER_VERSIONS in SPOKEN else {}),
            # Protocol 5 (docs/scheduling.md): tags its owner gave it, and its total
            # memory in bytes and logical cores as detected (absent or 0: unknown).
            "tags": s.list_of(s.tag, MAX_NODE_TAGS),
            "memory": s.integer(0, MAX_MEMORY),
            "cores": s.integer(0, MAX_CORES),
        },
    ),
    # A node leaves the farm gracefully: its claims go back to the pool.
    PEER_LEFT: s.record({}),
    # Any node that finds a peer dead (link lost and no reconnect, or silent past the
    # timeout) declares it down; the incarnation (seq of the peer's PEER_JOINED) fences
    # the declaration, so it never touches the peer once it has rejoined.
    PEER_DOWN: s.record({"node_id": s.node_id, "incarnation": s.integer(1, MAX_SEQ)}),
    NEW_JOB: s.record(
        {
            "job_id": s.job_id,
            # a file name stem on every node (core/names.py): checked as it arrives
            "name": lambda v: None if is_safe_name(v) else "not a safe job name",
            "renderer": s.renderer_name,
            "renderer_version": s.text(32),  # "" = any; else a version prefix, e.g. "3.7"
            # The built-in renderer's scene travels inline; other renderers' scene
            # files travel as content-addressed blobs: path -> {sha, size}.
            "scene": s.text(MAX_SCENE_BYTES),
            "files": s.map_of(
                s.text(200, allow_empty=False),
                s.record({"sha": s.sha256_hex, "size": s.integer(0, 2**40)}),
                10_000,
            ),
            "main": s.text(200),  # the main scene file among `files`
            "frame_start": s.integer(-MAX_FRAME, MAX_FRAME),
            "frame_end": s.integer(-MAX_FRAME, MAX_FRAME),
            "chunk_size": s.integer(1, 10_000),
            "padding": s.integer(1, 9),  # digits of the frame number in file names
            "width": s.integer(0, 16384),  # 0: the scene's own size
            "height": s.integer(0, 16384),
            # renderer options the submitter passed; the plugin checks an allow-list
            "options": s.list_of(s.text(200), 64),
            "output": s.text(4096, allow_empty=False),
            "priority": s.integer(-1000, 1000),
        },
        {
            # Optional, so logs written before the field existed still load.
            # tiles > 1: each frame is cut into that many tiles, one chunk per tile
            # (chunk_size is then 1); absent means 1, whole frames.
            "tiles": s.integer(1, MAX_TILES),
            # the frames' image format, also their file extension; absent means png
            "format": s.one_of(*FORMATS),
            # the submitter encodes an MP4 of the frames (absent: false), at fps (absent:
            # 24; also the GIF's frame rate)
            "video": s.boolean,
            "fps": s.integer(1, MAX_FPS),
            # which chunks nodes take first (core/chunk_order.py); absent: in order
            "order": s.one_of(*ORDERS),
            # a new revision of this job (re-render on save): it is cancelled as this
            # job arrives (core/reducers.py); absent: none
            "supersedes": s.job_id,
            # true: chunk_size is the smallest run, and nodes claim runs of chunks sized
            # to their speed (absent: false, every claim is one chunk, as --chunk asks)
            "adaptive": s.boolean,
            # Protocol 5 (docs/scheduling.md): only nodes with every one of these tags
            # and at least this much memory (bytes) take the job, and at most max_nodes
            # nodes render it at once; absent: no requirement, no limit.
            "require": s.list_of(s.tag, MAX_JOB_TAGS),
            "require_memory": s.integer(1, MAX_MEMORY),
            "max_nodes": s.integer(1, MAX_NODES_LIMIT),
        },
    ),
    CLAIM_CHUNK: s.record(_chunk_ref, _run),
    # frame_ms (protocol 5): each frame's render time in the run, in frame order, as the
    # node measured it (0: not measured); the farm learns which frames of a scene are
    # heavy (core/costs.py). Absent: not reported.
    DONE: s.record(_claim_ref, {**_run, "frame_ms": s.list_of(s.integer(0, MAX_MS), MAX_CHUNKS)}),
    RELEASE_CHUNK: s.record(_claim_ref, _run),
    CHUNK_FAILED: s.record({**_claim_ref, "error": s.text(4000)}, _run),
    CANCEL_JOB: s.record({"job_id": s.job_id}),
    # The submitter found the only copy of a done chunk's frames gone (its holder
    # died or lost them) before collecting them: the chunk is rendered again.
    CHUNK_LOST: s.record({**_chunk_ref, "holder": s.node_id}),
    # Job control by a user, farm-wide. A paused job gets no new claims (chunks in
    # flight finish); RESUME_JOB undoes it.
    PAUSE_JOB: s.record({"job_id": s.job_id}),
    RESUME_JOB: s.record({"job_id": s.job_id}),
    # Render the failed frames again: failed chunks go back to the pool with a clean
    # slate (attempts, failing nodes, blocklist), and a failed job is active again.
    RETRY_JOB: s.record({"job_id": s.job_id}),
    SET_PRIORITY: s.record({"job_id": s.job_id, "priority": s.integer(-1000, 1000)}),
    # The submitter holds every frame of its done job in the output folder: the nodes
    # that rendered them may delete their copies (retention, docs/admin-guide.md).
    JOB_COLLECTED: s.record({"job_id": s.job_id}),
    # The farm uses a protocol feature from here on, if every member that is up
    # advertises it at this place in the order (core/features.py).
    ENABLE_FEATURE: s.record({"feature": _feature}),
    # An idle node renders a copy of a claimed run expected to finish last (or far past
    # its estimate): the first DONE of the two counts (docs/scheduling.md).
    BACKUP_CHUNK: s.record(_claim_ref, _run),
    # A node's measured speed with one renderer (docs/scheduling.md): seconds per frame
    # (recent renders) and the renderer's start-up per chunk, in milliseconds. Measured
    # by the node from its own renders; reducers never read clocks.
    NODE_SPEED: s.record(
        {
            "renderer": s.renderer_name,
            "frame_ms": s.integer(1, MAX_MS),
            "startup_ms": s.integer(0, MAX_MS),
        }
    ),
    # Proof that a node signed two different actions at one seq (core/feeds.py): two
    # runs of its actions from that seq, each ending with one it signed. Every node
    # that applies it drops the node's actions from that seq on and counts it faulty.
    EQUIVOCATION: s.record(
        {
            "node_id": s.node_id,
            "seq": s.integer(1, MAX_SEQ),
            "cert": s.binary(MAX_CERT_BYTES),
            "ours": s.list_of(lambda v: _nested_action(v), MAX_CHAIN),
            "theirs": s.list_of(lambda v: _nested_action(v), MAX_CHAIN),
        }
    ),
}

ACTION_TYPES = frozenset(PAYLOADS)


class Action(NamedTuple):
    type: str
    payload: dict[str, Any]
    origin: str
    seq: int
    lamport: int
    # The origin's feed (core/feeds.py): the hash of its previous action, its signature
    # over this action's hash (at least on the last action of each batch it emits), and
    # on its first action its certificate.
    prev: bytes = GENESIS
    sig: bytes = b""
    cert: bytes = b""

    @property
    def key(self) -> tuple[int, str, int]:
        """Position in the total order every node folds the log in."""
        return (self.lamport, self.origin, self.seq)

    @property
    def hash(self) -> bytes:
        return action_hash(self.type, self.payload, self.origin, self.seq, self.lamport, self.prev)

    def same_as(self, other: Action) -> bool:
        """The same action (signatures aside): what one (origin, seq) may only ever be."""
        return self[:6] == other[:6]

    def to_wire(self) -> dict[str, Any]:
        wire = {
            "type": self.type,
            "payload": self.payload,
            "origin": self.origin,
            "seq": self.seq,
            "lamport": self.lamport,
            "prev": self.prev,
        }
        if self.sig:
            wire["sig"] = self.sig
        if self.cert:
            wire["cert"] = self.cert
        return wire


class InvalidAction(ValueError):
    """An action that does not match its schema; it is dropped, never applied or forwarded."""


_envelope = s.record(
    {
        "type": s.one_of(*sorted(ACTION_TYPES)),
        "payload": lambda v: None if type(v) is dict else "expected a map",
        "origin": s.node_id,
        "seq": s.integer(1, MAX_SEQ),
        "lamport": s.integer(1, MAX_LAMPORT),
    },
    # Feeds (core/feeds.py); a node's log requires them (ActionLog(authenticate=True)).
    {
        "prev": s.binary(HASH_BYTES),
        "sig": s.binary(MAX_SIGNATURE_BYTES),
        "cert": s.binary(MAX_CERT_BYTES),
    },
)


def _nested_action(v: Any) -> str | None:
    # One level only: a proof inside a proof would let one action cost a node any
    # number of signature checks.
    if type(v) is dict and v.get("type") == EQUIVOCATION:
        return "a proof does not nest another proof"
    try:
        validate_action(v)
    except InvalidAction as exc:
        return str(exc)
    return None


def validate_action(data: Any) -> Action:
    """Check plain data against the action schema and return it as an Action."""
    why = _envelope(data)
    if why is None:
        why = PAYLOADS[data["type"]](data["payload"])
        if why is not None:
            why = f"{data['type']} payload: {why}"
    if why is None and len(data.get("prev", GENESIS)) != HASH_BYTES:
        why = f"prev: expected {HASH_BYTES} bytes"
    if why is None and data["type"] == EQUIVOCATION:
        why = check_fork_proof(data["payload"])
        if why is not None:
            why = f"EQUIVOCATION payload: {why}"
    if why is None and data["type"] == NEW_JOB:
        p = data["payload"]
        if p["frame_end"] < p["frame_start"]:
            why = "NEW_JOB payload: frame_end is before frame_start"
        elif p.get("tiles", 1) > 1 and p["chunk_size"] != 1:
            why = "NEW_JOB payload: a tiled job renders one tile per chunk (chunk_size 1)"
        elif (
            chunk_count(p["frame_start"], p["frame_end"], p["chunk_size"], p.get("tiles", 1))
            > MAX_CHUNKS
        ):
            why = f"NEW_JOB payload: more than {MAX_CHUNKS} chunks; use a bigger chunk size"
    if why is not None:
        raise InvalidAction(why)
    return Action(
        data["type"],
        data["payload"],
        data["origin"],
        data["seq"],
        data["lamport"],
        data.get("prev", GENESIS),
        data.get("sig", b""),
        data.get("cert", b""),
    )


def chunk_count(frame_start: int, frame_end: int, chunk_size: int, tiles: int = 1) -> int:
    """Chunks of a job: runs of ``chunk_size`` frames, or one per tile of each frame."""
    return ((frame_end - frame_start) // chunk_size + 1) * tiles


def chunk_frames(frame_start: int, frame_end: int, chunk_size: int, chunk: int) -> range:
    """The frames of one chunk: consecutive, so a renderer loads the scene once per chunk."""
    first = frame_start + chunk * chunk_size
    return range(first, min(first + chunk_size - 1, frame_end) + 1)
