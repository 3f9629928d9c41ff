"""Every message of the wire protocol and its schema (see docs/protocol.md).

A message is a msgpack map with a ``type`` field. ``parse_message`` checks it
against the schema of its type; anything else is a protocol error and the
connection is closed.
"""

from __future__ import annotations

from typing import Any

from peerfarm.core import schema as s
from peerfarm.core.actions import MAX_CHUNKS, MAX_FRAME
from peerfarm.core.features import MAX_FEATURE_NAME, MAX_FEATURES
from peerfarm.core.tiles import MAX_TILES
from peerfarm.security.identity import MAX_CERT_BYTES
from peerfarm.security.proof import NONCE_BYTES

# 2: TLS 1.3 and the farm-key proof on every connection; NEW_JOB tiles/format/video/fps;
# GET_FRAME / FRAME / FRAME_MISSING tile; 3: signed feeds; 4: JOB_COLLECTED, GC, features,
# NEW_JOB order/supersedes/adaptive, NODE_SPEED, BACKUP_CHUNK, claims of runs;
# 5: probing (PING / ACK / PING_REQ) instead of HEARTBEAT, SNAPSHOT, node tags and job
# requirements, frame times in DONE: docs/protocol.md ("Protocol 5")
PROTOCOL_VERSION = 5
MAX_BATCH = 1024  # actions per ACTIONS message
MAX_FRAME_BYTES = 60 * 1024 * 1024
MAX_SNAPSHOT_BYTES = 60 * 1024 * 1024  # a log's base (core/snapshot.py), in one message
MAX_LOG_CHARS = 64 * 1024  # the tail of a renderer log sent over the mesh
MAX_BLOB_CHUNK_BYTES = 4 * 1024 * 1024  # one GET_BLOB / BLOB piece of a blob
MAX_BLOB_OFFSET = 2**62
MAX_HAVE_BLOBS = 10_000  # blobs per HAVE_BLOBS: a scene has at most 10,000 files

ROLES = ("node", "bootstrap", "client")

# Each action is validated on its own (peerfarm.core.actions), so one bad action
# is dropped and logged without losing the rest of its batch.
_action = lambda v: None  # noqa: E731
_vv = s.map_of(s.node_id, s.integer(0, 2**62), 1_000_000)
_heads = s.map_of(s.node_id, s.binary(8), 1_000_000)
_kwl_entry = s.record({"node_id": s.node_id, "address": s.address, "name": s.text(64)})
_any_map = lambda v: None if type(v) is dict else "expected a map"  # noqa: E731
_tile = {"tile": s.integer(0, MAX_TILES - 1)}


def _exact_bytes(n: int) -> s.Check:
    def check(v: Any) -> str | None:
        if type(v) is not bytes or len(v) != n:
            return f"expected {n} bytes"
        return None

    return check


_nonce = _exact_bytes(NONCE_BYTES)
_seq = s.integer(1, 2**62)
_view_hash = _exact_bytes(8)
_gossip_update = s.record(
    {"node": s.node_id, "inc": s.integer(0, 2**62), "suspect": s.boolean}, {"by": s.node_id}
)
_gossip = {"gossip": s.list_of(_gossip_update, 64)}

SCHEMAS: dict[str, s.Check] = {
    # Handshake, first message on every connection, both ways.
    "HELLO": s.record(
        {
            "protocol": s.integer(0, 2**31),
            "node_id": s.node_id,
            "name": s.text(64),
            "role": s.one_of(*ROLES),
            "address": s.text(300),  # where the sender listens ("" for clients)
            # Who the sender is and which farm it belongs to (docs/security.md):
            "cert": s.binary(MAX_CERT_BYTES),  # its certificate; node_id is its SHA-256
            "nonce": _nonce,  # fresh per connection: makes each proof single-use
            "key_id": s.text(16),  # the farm key's fingerprint, or "none"
        },
        # the protocol features the sender speaks (core/features.py); absent: none
        {"features": s.list_of(s.text(MAX_FEATURE_NAME, allow_empty=False), MAX_FEATURES)},
    ),
    # Second handshake message, both ways: proof of holding the farm key and the
    # certificate's private key, over both certificates and both nonces.
    "PROOF": s.record({"mac": _exact_bytes(32), "signature": s.binary(200)}),
    # Sent before closing a connection on purpose.
    "ERROR": s.record({"code": s.text(64), "message": s.text(4000)}),
    # Replication.
    "ACTIONS": s.record({"actions": s.list_of(_action, MAX_BATCH)}),
    "VV": s.record({"vv": _vv, "digest": s.text(64)}, {"heads": _heads}),
    # A log's base (core/snapshot.py, encoded), to a peer whose version vector lacks
    # actions folded into it; the actions after it follow as ACTIONS.
    "SNAPSHOT": s.record({"data": s.binary(MAX_SNAPSHOT_BYTES)}),
    # Liveness: sent on every link a few times per peer timeout.
    "HEARTBEAT": s.record({}),
    # Failure detection (SWIM, machine/probing.py): each carries the sender's view hash
    # (anti-entropy on the cheap) and membership gossip piggybacked.
    "PING": s.record({"seq": _seq, "view": _view_hash}, _gossip),
    "ACK": s.record({"seq": _seq, "view": _view_hash}, _gossip),
    "PING_REQ": s.record({"seq": _seq, "target": s.node_id, "view": _view_hash}, _gossip),
    # Joining through a bootstrap server.
    "JOIN": s.record({}),
    "JOIN_REPLY": s.record(
        {
            "kwl": s.list_of(_kwl_entry, 100_000),
            "vv": _vv,
        }
    ),
    # Outputs travel over the mesh: the submitter pulls frames from their holder.
    # With `tile`, the request and its answer are about one tile of a tiled frame.
    "GET_FRAME": s.record({"job_id": s.job_id, "frame": s.integer(-MAX_FRAME, MAX_FRAME)}, _tile),
    "FRAME": s.record(
        {
            "job_id": s.job_id,
            "frame": s.integer(-MAX_FRAME, MAX_FRAME),
            "data": s.binary(MAX_FRAME_BYTES),
        },
        _tile,
    ),
    "FRAME_MISSING": s.record(
        {"job_id": s.job_id, "frame": s.integer(-MAX_FRAME, MAX_FRAME), "reason": s.text(500)},
        _tile,
    ),
    # Renderer logs stay on the node that made them and are fetched on demand.
    "GET_LOG": s.record({"job_id": s.job_id, "chunk": s.integer(0, MAX_CHUNKS)}),
    "LOG": s.record(
        {"job_id": s.job_id, "chunk": s.integer(0, MAX_CHUNKS), "text": s.text(MAX_LOG_CHARS)}
    ),
    # Content-addressed blobs (scenes, later frames) travel in pieces from any holder.
    "GET_BLOB": s.record(
        {
            "sha": s.sha256_hex,
            "offset": s.integer(0, MAX_BLOB_OFFSET),
            "length": s.integer(1, MAX_BLOB_CHUNK_BYTES),
        }
    ),
    "BLOB": s.record(
        {
            "sha": s.sha256_hex,
            "offset": s.integer(0, MAX_BLOB_OFFSET),
            "data": s.binary(MAX_BLOB_CHUNK_BYTES),
        }
    ),
    # `offset` says which GET_BLOB this answers, so a late answer never satisfies
    # a request for another piece.
    "BLOB_MISSING": s.record(
        {"sha": s.sha256_hex, "offset": s.integer(0, MAX_BLOB_OFFSET), "reason": s.text(500)}
    ),
    # Client (CLI, later the desktop app) requests to a node, and answers.
    # Scene files go up first, as blobs in pieces: which does the node hold (and how
    # much of each partial upload), then the missing pieces, then SUBMIT the manifest.
    "HAVE_BLOBS": s.record({"shas": s.list_of(s.sha256_hex, MAX_HAVE_BLOBS)}),
    "BLOBS_HELD": s.record(
        {
            "blobs": s.list_of(
                s.record({"complete": s.boolean, "held": s.integer(0, MAX_BLOB_OFFSET)}),
                MAX_HAVE_BLOBS,
            )
        }
    ),
    "PUT_BLOB": s.record(
        {
            "sha": s.sha256_hex,
            "size": s.integer(0, MAX_BLOB_OFFSET),
            "offset": s.integer(0, MAX_BLOB_OFFSET),
            "data": s.binary(MAX_BLOB_CHUNK_BYTES),
        }
    ),
    "BLOB_PUT": s.record(
        {"sha": s.sha256_hex, "held": s.integer(0, MAX_BLOB_OFFSET), "complete": s.boolean}
    ),
    "SUBMIT": s.record({"job": _any_map}),
    # notes: scene settings the farm overrides (e.g. a POV-Ray INI's Output_File_Name)
    "SUBMITTED": s.record({"job_id": s.job_id}, {"notes": s.list_of(s.text(1000), 1000)}),
    "STATUS": s.record({}),
    "STATUS_REPLY": s.record({"status": _any_map}),
    "CANCEL": s.record({"job_id": s.job_id}),
    "CANCELLED": s.record({"job_id": s.job_id}),
    # Job control, farm-wide (each becomes a replicated action).
    "PAUSE": s.record({"job_id": s.job_id}),
    "PAUSED": s.record({"job_id": s.job_id}),
    "RESUME": s.record({"job_id": s.job_id}),
    "RESUMED": s.record({"job_id": s.job_id}),
    "RETRY": s.record({"job_id": s.job_id}),
    "RETRIED": s.record({"job_id": s.job_id, "frames": s.integer(0, 2 * MAX_FRAME + 1)}),
    "PRIORITY": s.record({"job_id": s.job_id, "priority": s.integer(-1000, 1000)}),
    "PRIORITY_SET": s.record({"job_id": s.job_id, "priority": s.integer(-1000, 1000)}),
    "REFUSED": s.record({"message": s.text(4000)}),
    "LOGS": s.record({"job_id": s.job_id}, {"frame": s.integer(-MAX_FRAME, MAX_FRAME)}),
    "LOGS_REPLY": s.record({"logs": s.list_of(_any_map, 10_000)}),
    # Retention now (`peerfarm gc`): what was freed (or would be, dry_run).
    "GC": s.record({"dry_run": s.boolean}),
    "GC_REPLY": s.record({"report": _any_map}),
}


class MessageError(ValueError):
    """A message that does not match the protocol."""


def parse_message(data: Any) -> dict[str, Any]:
    """Check a decoded object against the schema of its type and return it."""
    if type(data) is not dict:
        raise MessageError(f"expected a message map, got {type(data).__name__}")
    kind = data.get("type")
    check = SCHEMAS.get(kind) if type(kind) is str else None
    if check is None:
        raise MessageError(f"unknown message type {kind!r}")
    body = {k: v for k, v in data.items() if k != "type"}
    why = check(body)
    if why:
        raise MessageError(f"{kind}: {why}")
    return data


def message(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, **fields}
