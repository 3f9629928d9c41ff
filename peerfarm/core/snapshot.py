"""A snapshot: the log's base (the folded prefix of the total order) as plain data.

What a compacted log keeps instead of the actions it dropped (core/log.py): the state
they fold to, and per origin how many there were, the last one (its Lamport time and
hash go on: the origin's next action must fit and chain to it) and the certificate of
its first (its key checks the origin's later signatures). Plus the nodes proven
faulty, so nothing more of them is taken.

Encoded deterministically: the state as core/digest.py encodes it (records as lists in
field order, maps sorted by key), so two nodes with the same base write the same bytes
and ``digest``, the state's digest, is checked on reading by hashing those bytes.
Loading a snapshot and adding the actions after it gives exactly the state (and digest)
of folding everything.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import threading
from collections.abc import Iterator
from typing import Any, NamedTuple

import msgpack
from immutables import Map

from peerfarm.core.actions import Action
from peerfarm.core.costs import SceneTimes
from peerfarm.core.digest import encoding, remember
from peerfarm.core.log import ActionLog
from peerfarm.core.state import Chunk, Job, Peer, State

FORMAT = 1
MAX_SNAPSHOT_BYTES = 512 * 1024 * 1024  # a farm's state, however big, stays far below


class SnapshotError(ValueError):
    """Bytes that are not a snapshot this build can read (the message says why)."""


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """Building or reading a big state makes millions of small objects that hold no
    cycles: the cyclic collector would walk them again and again (seconds for a
    100,000-chunk job). Paused meanwhile, for every thread, and resumed after."""
    global _paused
    with _gc_lock:
        if _paused == 0 and gc.isenabled():
            gc.disable()
            _paused = 1
        elif _paused:
            _paused += 1
    try:
        yield
    finally:
        with _gc_lock:
            if _paused:
                _paused -= 1
                if _paused == 0:
                    gc.enable()


_gc_lock = threading.Lock()
_paused = 0  # how many are inside _no_gc with the collector paused by it


def state_bytes(state: State) -> bytes:
    """The state as the digest encodes it (core/digest.py): its SHA-256 is the digest."""
    with _no_gc():
        return encoding(state)


def state_from_bytes(data: bytes) -> State:
    """The inverse of ``state_bytes``: records hold tuples (msgpack arrays read as
    tuples) and maps, as reducers make them. Each job's bytes are remembered as its
    encoding (core/digest.py): the next digest need not encode it again."""
    make_chunk = Chunk._make
    names = [name for name in Job._fields if name != "chunks"]
    with _no_gc():
        unpacker = msgpack.Unpacker(
            raw=False, strict_map_key=False, use_list=False, max_buffer_size=len(data) + 1
        )
        unpacker.feed(data)
        if unpacker.read_array_header() != 4:
            raise ValueError("a state is [jobs, peers, features, scenes]")
        built = {}
        for _ in range(unpacker.read_array_header()):
            start = unpacker.tell()
            job_id, fields, chunks = unpacker.unpack()
            if len(fields) == len(names) - 1:  # done_runs, left out while empty
                fields = (*fields, ())
            values = dict(zip(names, fields, strict=True))
            for name in _MAP_FIELDS:
                values[name] = Map(values[name])
            values["chunks"] = Map({i: make_chunk(c) for i, c in chunks})
            job = built[job_id] = Job(**values)
            remember(job_id, job, data[start : unpacker.tell()])
        peers, features, scenes = unpacker.unpack(), unpacker.unpack(), unpacker.unpack()
        return State(
            jobs=Map(built),
            peers=Map({node_id: Peer._make(fields) for node_id, fields in peers}),
            features=features,
            scenes=Map(
                {content: SceneTimes(Map(frames), used) for content, frames, used in scenes}
            ),
        )


_MAP_FIELDS = sorted(
    name for name, default in Job._field_defaults.items() if isinstance(default, Map)
)
_MAP_FIELDS.remove("chunks")


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
    """A base as plain data (msgpack-ready). The state goes as the bytes its digest is
    the SHA-256 of: a reader checks them without building the state twice."""
    data = state_bytes(base.state)
    return {
        "format": FORMAT,
        "state": data,
        "digest": hashlib.sha256(data).hexdigest(),
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
    with _no_gc():
        return msgpack.packb(snapshot, use_bin_type=True)


def decode(data: bytes) -> dict[str, Any]:
    """Bytes -> a snapshot's plain data; SnapshotError if they are not one."""
    if len(data) > MAX_SNAPSHOT_BYTES:
        raise SnapshotError(f"a snapshot of {len(data)} bytes is more than this build takes")
    try:
        with _no_gc():
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
        data = bytes(snapshot["state"])
        if hashlib.sha256(data).hexdigest() != snapshot["digest"]:
            raise SnapshotError("a snapshot whose state does not match its digest")
        state = state_from_bytes(data)
        origins = {
            origin: (n, Action(**last), bytes(cert))
            for origin, n, last, cert in snapshot["origins"]
        }
        base_key = tuple(snapshot["base_key"]) if snapshot["base_key"] is not None else None
        forked = {origin: seq for origin, seq in snapshot["forked"]}
        vouched = {origin: (seq, bytes(h)) for origin, seq, h in snapshot["vouched"]}
        count = int(snapshot["count"])
    except SnapshotError:
        raise
    except (KeyError, TypeError, ValueError, msgpack.UnpackException, msgpack.OutOfData) as exc:
        raise SnapshotError(f"a damaged snapshot ({exc!r})") from None
    log = ActionLog.from_base(
        state, origins, base_key, count, forked, vouched, authenticate=authenticate
    )
    log.known_digest(state, snapshot["digest"])  # checked above: no need to encode it again
    return log
