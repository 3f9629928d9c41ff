"""A state digest: SHA-256 of a canonical encoding, so anyone can check that nodes agree."""

from __future__ import annotations

import hashlib
import weakref
from typing import Any

import msgpack
from immutables import Map

from peerfarm.core import chunk_index
from peerfarm.core.costs import SceneTimes
from peerfarm.core.state import Chunk, Job, State


def canonical(state: State) -> list[Any]:
    """The state as plain lists in a fixed order (maps sorted by key)."""
    jobs = [_job_entry(job_id, state.jobs[job_id]) for job_id in sorted(state.jobs)]
    peers = [[node_id, list(state.peers[node_id])] for node_id in sorted(state.peers)]
    scenes = [_scene_entry(content, times) for content, times in sorted(state.scenes.items())]
    return [jobs, peers, list(state.features), scenes]


def _scene_entry(content: str, times: SceneTimes) -> list[Any]:
    return [content, sorted(times.frames.items()), times.used]


def state_digest(state: State) -> str:
    return hashlib.sha256(encoding(state)).hexdigest()


def _job_entry(job_id: str, job: Job) -> list[Any]:
    fields = [
        sorted(v.items()) if isinstance(v, Map) else v
        for k, v in zip(job._fields, job, strict=True)
        if k != "chunks"
    ]
    if not job.done_runs:
        # Left out while empty (it is the last field): a job that is not summarised
        # encodes as before job_summaries, so builds without it agree on the digest.
        del fields[-1]
    chunks = [[i, list(job.chunks[i])] for i in sorted(job.chunks)]
    return [job_id, fields, chunks]


# Job id -> (the job record, its encoded entry): a job that did not change since (the
# same immutable record) is not encoded again. A finished job of 50,000 chunks costs
# a second to encode; without this every state change would pay it again.
_encoded_jobs: dict[str, tuple[Job, bytes]] = {}
MAX_ENCODED_JOBS = 4096


def _job_bytes(job_id: str, job: Job) -> bytes:
    cached = _encoded_jobs.get(job_id)
    if cached is not None and cached[0] is job:
        return cached[1]
    # msgpack.packb(_job_entry(job_id, job)), its chunks from blocks encoded before.
    packer = msgpack.Packer(use_bin_type=True)
    _, fields, _ = _job_entry(job_id, job._replace(chunks=Map()))
    data = b"".join(
        (
            packer.pack_array_header(3),
            packer.pack(job_id),
            packer.pack(fields),
            _chunks_bytes(job_id, job.chunks),
        )
    )
    if len(_encoded_jobs) >= MAX_ENCODED_JOBS:
        _encoded_jobs.clear()
    _encoded_jobs[job_id] = (job, data)
    return data


# (job id, first index) -> (the records of chunks first .. first + CHUNK_BLOCK - 1, their
# entries encoded): a job whose chunks change a run at a time (claims, DONEs) has only
# the blocks holding that run encoded again, not its every chunk.
CHUNK_BLOCK = 512
_encoded_blocks: dict[tuple[str, int], tuple[tuple[Chunk | None, ...], bytes]] = {}
MAX_ENCODED_BLOCKS = 50_000


# Job id -> (the chunk map last encoded, weakly; its blocks' encodings, in order): the
# reducers' notes (core/chunk_index.py) tell which blocks changed since, so the others
# are not even read again (reading a block is 512 lookups). Each call keeps its own
# list (a snapshot encodes a state in a thread while the node's loop encodes another).
_last_encoded: dict[str, tuple[weakref.ref[Map], list[bytes]]] = {}


def _chunks_bytes(job_id: str, chunks: Map) -> bytes:
    """``msgpack.packb([[i, list(chunk)] for i in sorted(chunks)])``, block by block."""
    packer = msgpack.Packer(use_bin_type=True)
    parts = [packer.pack_array_header(len(chunks))]
    if not chunks:
        return parts[0]
    top = chunk_index.top(chunks)
    last = _last_encoded.get(job_id)
    last_map = last[0]() if last is not None else None
    changed = chunk_index.changed_since(chunks, last_map) if last_map is not None else None
    dirty: set[int] = set()
    if changed is not None:
        dirty = {
            block
            for first, end in changed
            for block in range(first - first % CHUNK_BLOCK, end, CHUNK_BLOCK)
        }
    before = last[1] if changed is not None and last is not None else []
    blocks: list[bytes] = []
    get = chunks.get
    for first in range(0, top + 1, CHUNK_BLOCK):
        at = first // CHUNK_BLOCK
        if at < len(before) and first not in dirty:
            # Unchanged since the map last encoded (which had this block: its top was
            # past it).
            blocks.append(before[at])
            continue
        records = tuple(get(i) for i in range(first, first + CHUNK_BLOCK))
        cached = _encoded_blocks.get((job_id, first))
        # Equal records, not only the same ones: the simulator runs many nodes in one
        # process, each with its own records of the same chunks, and with identity
        # alone they re-encoded each other's blocks at every digest (a tuple compares
        # identical items without calling their __eq__, so a node's own are cheap).
        if cached is None or cached[0] != records:
            encoded = b"".join(
                packer.pack([i, list(c)]) for i, c in enumerate(records, first) if c is not None
            )
            if len(_encoded_blocks) >= MAX_ENCODED_BLOCKS:
                _encoded_blocks.clear()
            cached = _encoded_blocks[(job_id, first)] = (records, encoded)
        blocks.append(cached[1])
    if len(_last_encoded) >= MAX_ENCODED_JOBS:
        _last_encoded.clear()
    _last_encoded[job_id] = (weakref.ref(chunks), blocks)
    parts.extend(blocks)
    return b"".join(parts)


def remember(job_id: str, job: Job, encoded: bytes) -> None:
    """A job's encoded entry known already (read from a snapshot's state bytes)."""
    if len(_encoded_jobs) >= MAX_ENCODED_JOBS:
        _encoded_jobs.clear()
    _encoded_jobs[job_id] = (job, encoded)


def encoding(state: State) -> bytes:
    """``msgpack.packb(canonical(state))``, built from each job's encoding (an array's
    encoding is its header and its items' encodings, one after the other), so the
    same bytes come out whichever jobs were encoded before."""
    packer = msgpack.Packer(use_bin_type=True)
    parts = [packer.pack_array_header(4), packer.pack_array_header(len(state.jobs))]
    parts.extend(_job_bytes(job_id, state.jobs[job_id]) for job_id in sorted(state.jobs))
    _, peers, features, _ = canonical(state._replace(jobs=Map(), scenes=Map()))
    parts.extend((packer.pack(peers), packer.pack(features)))
    parts.append(packer.pack_array_header(len(state.scenes)))
    parts.extend(_scene_bytes(content, state.scenes[content]) for content in sorted(state.scenes))
    return b"".join(parts)


# Content -> (its frame times, their encoded entry): a scene's table of up to 20,000
# learned frame times was sorted and encoded again at every digest. Kept while equal,
# not only the same: the simulator's nodes, in one process, each hold their own.
_encoded_scenes: dict[str, tuple[SceneTimes, bytes]] = {}


def _scene_bytes(content: str, times: SceneTimes) -> bytes:
    cached = _encoded_scenes.get(content)
    if cached is not None and (cached[0] is times or cached[0] == times):
        return cached[1]
    encoded = msgpack.packb(_scene_entry(content, times), use_bin_type=True)
    if len(_encoded_scenes) >= MAX_ENCODED_JOBS:
        _encoded_scenes.clear()
    _encoded_scenes[content] = (times, encoded)
    return encoded
