"""A job's chunk records as segments: runs of consecutive stored chunks with equal
records, kept in step with the reducers instead of walked again.

Derived state, outside the replicated record: nothing here is hashed, encoded or
sent, so the digest and snapshots do not change. The scheduler, the worker and
``status`` ask questions of a job's chunks (its claimed runs, its gaps, how many
chunks left "pending", who rendered what) at every state change; over a job of
20,000 one-frame chunks, a walk over the chunk map for each answer cost more than
folding the actions. A job's chunks change a run at a time (a claim, a DONE, a
backup): the reducer notes which run it changed (``note_run``), and the segments of
the new map are the old map's with that run's spliced in, O(run + segments).
A map without a note (other reducers, a snapshot) is walked once.

Keyed by the map's identity (immutable, so a map's segments never change) and held
by weak references: an entry whose map is gone is never answered from (its id may be
reused), and the cache keeps no map alive. (Holding a few hundred versions of a big
job's map alive made every garbage collection walk them: folds ran 2-3 times slower.)
"""

from __future__ import annotations

import weakref
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from typing import NamedTuple

from immutables import Map

from peerfarm.core.state import CLAIMED, PENDING, Chunk


class Segments(NamedTuple):
    """Maximal runs of consecutive stored chunks whose records are equal, in order:
    chunks ``starts[k] .. ends[k] - 1`` all hold ``records[k]``. Absent chunks (never
    left "pending") are in no segment."""

    starts: list[int]
    ends: list[int]
    records: list[Chunk]


# id(map) -> (the map, weakly; its segments): the maps indexed lately, oldest first.
_INDEXED: OrderedDict[int, tuple[weakref.ref[Map], Segments]] = OrderedDict()
INDEXED_KEPT = 64
# id(new map) -> (new map, old map, both weakly; first, end): the reducer made ``new``
# from ``old`` by changing chunks first .. end - 1 only.
_NOTES: OrderedDict[int, tuple[weakref.ref[Map], weakref.ref[Map], int, int]] = OrderedDict()
NOTES_KEPT = 256
# Notes followed back from a map before walking it whole instead.
MAX_CHAIN = 64


def note_run(old: Map, new: Map, first: int, count: int) -> None:
    """The reducer made ``new`` from ``old`` changing chunks ``first .. first + count -
    1`` only (any of them may be unchanged)."""
    if new is old:
        return
    _NOTES[id(new)] = (weakref.ref(new), weakref.ref(old), first, first + count)
    _trim(_NOTES, NOTES_KEPT)


def segments(chunks: Map) -> Segments:
    """The segments of a job's chunk map (see Segments)."""
    cached = _INDEXED.get(id(chunks))
    if cached is not None and cached[0]() is chunks:
        return cached[1]
    # Follow the reducers' notes back to a map whose segments are known.
    chain: list[tuple[Map, int, int]] = []
    at = chunks
    base: Segments | None = None
    while len(chain) < MAX_CHAIN:
        note = _NOTES.get(id(at))
        if note is None or note[0]() is not at:
            break
        older = note[1]()
        if older is None:
            break
        chain.append((at, note[2], note[3]))
        at = older
        known = _INDEXED.get(id(at))
        if known is not None and known[0]() is at:
            base = known[1]
            break
    if base is None:
        result = _walk(chunks)
    else:
        result = base
        for new, first, end in reversed(chain):
            result = _splice(result, new, first, end)
    _remember(chunks, result)
    return result


def _remember(chunks: Map, result: Segments) -> None:
    _INDEXED[id(chunks)] = (weakref.ref(chunks), result)
    _trim(_INDEXED, INDEXED_KEPT)


def _trim(cache: OrderedDict, kept: int) -> None:
    """The oldest entries out. (A snapshot is encoded in a thread beside the node's
    loop: both may trim at once, and an entry gone already is no error.)"""
    while len(cache) > kept:
        try:
            cache.popitem(last=False)
        except KeyError:
            return


def _walk(chunks: Map) -> Segments:
    starts: list[int] = []
    ends: list[int] = []
    records: list[Chunk] = []
    for index in sorted(chunks):
        record = chunks[index]
        if ends and ends[-1] == index and (records[-1] is record or records[-1] == record):
            ends[-1] = index + 1
        else:
            starts.append(index)
            ends.append(index + 1)
            records.append(record)
    return Segments(starts, ends, records)


def _splice(old: Segments, chunks: Map, first: int, end: int) -> Segments:
    """``old`` with chunks first .. end - 1 read again from ``chunks``."""
    starts, ends, records = list(old.starts), list(old.ends), list(old.records)
    lo = bisect_right(ends, first)  # the first segment ending past ``first``
    hi = bisect_left(starts, end)  # the first segment starting at ``end`` or later
    new_starts: list[int] = []
    new_ends: list[int] = []
    new_records: list[Chunk] = []
    if lo < hi and starts[lo] < first:  # the part of a segment before the run
        new_starts.append(starts[lo])
        new_ends.append(first)
        new_records.append(records[lo])
    get = chunks.get
    for index in range(first, end):
        record = get(index)
        if record is None:
            continue
        if (
            new_ends
            and new_ends[-1] == index
            and (new_records[-1] is record or new_records[-1] == record)
        ):
            new_ends[-1] = index + 1
        else:
            new_starts.append(index)
            new_ends.append(index + 1)
            new_records.append(record)
    if lo < hi and ends[hi - 1] > end:  # the part of a segment after the run
        record = records[hi - 1]
        if new_ends and new_ends[-1] == end and new_records[-1] == record:
            new_ends[-1] = ends[hi - 1]
        else:
            new_starts.append(end)
            new_ends.append(ends[hi - 1])
            new_records.append(record)
    starts[lo:hi] = new_starts
    ends[lo:hi] = new_ends
    records[lo:hi] = new_records
    # Merge across the splice's two borders (segments stay maximal).
    for at in (lo + len(new_starts), lo):
        if 0 < at < len(starts) and ends[at - 1] == starts[at] and records[at - 1] == records[at]:
            ends[at - 1] = ends[at]
            del starts[at], ends[at], records[at]
    return Segments(starts, ends, records)


def claimed_runs(chunks: Map, uncopied: bool = False) -> list[tuple[int, int, str, int]]:
    """The claimed runs: (first chunk, count, holder, claim seq), in chunk order; a run
    is consecutive claimed chunks of one claim. ``uncopied``: only chunks no node copies
    (no backup): a run part of which another node copies counts as its parts without
    one (two idle nodes that heard of different DONEs of a run copy different tails of
    it, and the reducer refuses a backup over a chunk that has one)."""
    seg = segments(chunks)
    runs: list[tuple[int, int, str, int]] = []
    for start, end, record in zip(seg.starts, seg.ends, seg.records, strict=True):
        if record.state != CLAIMED or (uncopied and record.backup_origin):
            continue
        if runs:
            first, count, holder, seq = runs[-1]
            if first + count == start and (holder, seq) == (record.claim_origin, record.claim_seq):
                runs[-1] = (first, count + end - start, holder, seq)
                continue
        runs.append((start, end - start, record.claim_origin, record.claim_seq))
    return runs


def left_pending(chunks: Map) -> int:
    """How many chunks are stored in a state other than "pending"."""
    seg = segments(chunks)
    return sum(
        end - start
        for start, end, record in zip(seg.starts, seg.ends, seg.records, strict=True)
        if record.state != PENDING
    )


def any_pending_stored(chunks: Map) -> bool:
    """Whether a stored chunk is "pending" (given back after a claim)."""
    return any(record.state == PENDING for record in segments(chunks).records)


def changed_since(new: Map, old: Map) -> list[tuple[int, int]] | None:
    """The runs (first, end) the reducers changed to make ``new`` from ``old``, by their
    notes; None when the notes do not lead back from ``new`` to ``old``."""
    ranges: list[tuple[int, int]] = []
    at: Map | None = new
    for _ in range(NOTES_KEPT):
        if at is old:
            return ranges
        note = _NOTES.get(id(at))
        if note is None or note[0]() is not at:
            return None
        ranges.append((note[2], note[3]))
        at = note[1]()
        if at is None:
            return None
    return ranges if at is old else None


def top(chunks: Map) -> int:
    """The highest index stored (the map is not empty)."""
    return segments(chunks).ends[-1] - 1
