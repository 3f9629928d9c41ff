"""A snapshot: the log's base (the folded prefix of the total order) as plain data.

What a compacted log keeps instead of the actions it dropped (core/log.py): the state
they fold to, and per origin how many there were, the last one (its Lamport time and
hash go on: the origin's next action must fit and chain to it) and the certificate of
its first (its key checks the origin's later signatures). Plus the nodes proven
faulty, so nothing more of them is taken.

Encoded deterministically (records as lists in field order, maps sorted by key), so
two nodes with the same base write the same bytes; ``digest`` is the state's digest
(core/digest.py), checked when a snapshot is read. Loading a snapshot and adding the
actions after it gives exactly the state (and digest) of folding everything.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgpack
from immutables import Map

from peerfarm.core.actions import Action
from peerfarm.core.digest import state_digest
from peerfarm.core.log import ActionLog
from peerfarm.core.state import Chunk, Job, Peer, State

FORMAT = 1
MAX_SNAPSHOT_BYTES = 512 * 1024 * 1024  # a farm's state, however big, stays far below


class SnapshotError(ValueError):
    """Bytes that are not a snapshot this build can read (the message says why)."""


def _tuples(value: Any) -> Any:
    """Records hold tuples, never lists: msgpack gives lists back."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list | tuple) else value


def _job_to_plain(job: Job) -> list[Any]:
    out: list[Any] = []
    for name, value in zip(job._fields, job, strict=True):
        if name == "chunks":
            out.append([[i, list(value[i])] for i in sorted(value)])
        elif name == "failures":
            out.append([[k, value[k]] for k in sorted(value)])
        else:
            out.append(value)
    return out


def _job_from_plain(fields: list[Any]) -> Job:
    values = []
    for name, value in zip(Job._fields, fields, strict=True):
        if name == "chunks":
            value = Map({i: Chunk(*_tuples(c)) for i, c in value})
        elif name == "failures":
            value = Map({k: n for k, n in value})
        else:
            value = _tuples(value)
        values.append(value)
    return Job(*values)


def state_to_plain(state: State) -> list[Any]:
    jobs = [[job_id, _job_to_plain(state.jobs[job_id])] for job_id in sorted(state.jobs)]
    peers = [[node_id, list(state.peers[node_id])] for node_id in sorted(state.peers)]
    return [jobs, peers, list(state.features)]


def state_from_plain(plain: list[Any]) -> State:
    jobs, peers, features = plain
    return State(
        jobs=Map({job_id: _job_from_plain(fields) for job_id, fields in jobs}),
        peers=Map({node_id: Peer(*_tuples(fields)) for node_id, fields in peers}),
        features=tuple(features),
    )


class Base(NamedTuple):
    """A log's base, taken at one moment: immutable parts only, so it can be turned into
    bytes in another thread while the log goes on (``base_of``, then ``to_plain``)."""

    state: State
    origins: dict[str, tuple[int, Action, bytes]]
    base_key: tuple[int, str, int] | None
    count: int
    forked: dict[str, int]
    vouched: dict[str, tuple[int, bytes]]


def base_of(log: ActionLog) -> Base:
    """The log's base now (cheap: the state is shared, not copied)."""
    return Base(
        log.base_state,
        log.base_origins(),
        log.base_key,
        log.base_count,
        log.forked(),
        log.vouched(),
    )


def to_plain(base: Base) -> dict[str, Any]:
    """A base as plain data (msgpack-ready)."""
    return {
        "format": FORMAT,
        "state": state_to_plain(base.state),
        "digest": state_digest(base.state),
        "base_key": list(base.base_key) if base.base_key is not None else None,
        "count": base.count,
        "origins": [
            [origin, n, last.to_wire(), cert]
            for origin, (n, last, cert) in sorted(base.origins.items())
        ],
        "forked": sorted(base.forked.items()),
        "vouched": sorted([o, s, h] for o, (s, h) in base.vouched.items()),
    }


def snapshot_of(log: ActionLog) -> dict[str, Any]:
    """The log's base as plain data (msgpack-ready)."""
    return to_plain(base_of(log))


def encode(snapshot: dict[str, Any]) -> bytes:
    return msgpack.packb(snapshot, use_bin_type=True)


def decode(data: bytes) -> dict[str, Any]:
    """Bytes -> a snapshot's plain data; SnapshotError if they are not one."""
    if len(data) > MAX_SNAPSHOT_BYTES:
        raise SnapshotError(f"a snapshot of {len(data)} bytes is more than this build takes")
    try:
        snapshot = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise SnapshotError(f"not a snapshot ({exc})") from None
    if type(snapshot) is not dict or snapshot.get("format") != FORMAT:
        raise SnapshotError("not a snapshot of a format this build reads")
    return snapshot


def log_from_snapshot(snapshot: dict[str, Any], authenticate: bool = False) -> ActionLog:
    """A log whose base is the snapshot's; add the actions after it to go on.

    Raises SnapshotError when the data does not hold together (its state does not have
    the digest it says)."""
    try:
        state = state_from_plain(snapshot["state"])
        origins = {
            origin: (n, Action(**last), bytes(cert))
            for origin, n, last, cert in snapshot["origins"]
        }
        base_key = tuple(snapshot["base_key"]) if snapshot["base_key"] is not None else None
        forked = {origin: seq for origin, seq in snapshot["forked"]}
        vouched = {origin: (seq, bytes(h)) for origin, seq, h in snapshot["vouched"]}
        count = int(snapshot["count"])
    except (KeyError, TypeError, ValueError) as exc:
        raise SnapshotError(f"a damaged snapshot ({exc!r})") from None
    if state_digest(state) != snapshot["digest"]:
        raise SnapshotError("a snapshot whose state does not match its digest")
    return ActionLog.from_base(
        state, origins, base_key, count, forked, vouched, authenticate=authenticate
    )
