"""A state digest: SHA-256 of a canonical encoding, so anyone can check that nodes agree."""

from __future__ import annotations

import hashlib
from typing import Any

import msgpack
from immutables import Map

from peerfarm.core.state import State


def canonical(state: State) -> list[Any]:
    """The state as plain lists in a fixed order (maps sorted by key)."""
    jobs = []
    for job_id in sorted(state.jobs):
        job = state.jobs[job_id]
        fields = [
            sorted(v.items()) if isinstance(v, Map) else v
            for k, v in zip(job._fields, job, strict=True)
            if k != "chunks"
        ]
        chunks = [[i, list(job.chunks[i])] for i in sorted(job.chunks)]
        jobs.append([job_id, fields, chunks])
    peers = [[node_id, list(state.peers[node_id])] for node_id in sorted(state.peers)]
    scenes = [
        [content, sorted(times.frames.items()), times.used]
        for content, times in sorted(state.scenes.items())
    ]
    return [jobs, peers, list(state.features), scenes]


def state_digest(state: State) -> str:
    return hashlib.sha256(msgpack.packb(canonical(state), use_bin_type=True)).hexdigest()
