"""Renderer logs: kept on the node that ran the renderer, gathered on demand.

`peerfarm logs JOB [--frame N]` asks one node; that node asks every node that
rendered, holds or failed the chunks in question (GET_LOG / LOG, as the
research design's GET_LOG) and answers with their log tails.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import trio

from peerfarm.core import summary
from peerfarm.core.chunk_index import claimed_runs
from peerfarm.core.refused import Refused
from peerfarm.core.state import CLAIMED, Job, State
from peerfarm.runtime.data_dir import DataDir
from peerfarm.wire.messages import MAX_LOG_CHARS, message


class LogPeers(Protocol):
    """What gathering logs needs from the node: the state, its files, asking peers."""

    node_id: str
    data_dir: DataDir

    @property
    def state(self) -> State: ...

    async def ask(
        self, peer: str, request: dict[str, Any], key: tuple[Any, ...], timeout: float
    ) -> dict[str, Any] | None: ...


LOG_TIMEOUT = 5.0
MAX_CHUNKS_LISTED = 20


def read_log_tail(path: Path) -> str:
    try:
        return path.read_text("utf-8", errors="replace")[-MAX_LOG_CHARS:]
    except OSError:
        return ""


def chunks_of_interest(job: Job, frame: int | None) -> list[int]:
    """The chunk of a frame; else the chunks that failed somewhere; else those done;
    else the runs rendering now (their first chunks), whose output so far shows where a
    renderer stuck on the scene is (it said "no renderer logs" until one failed)."""
    if frame is not None:
        if not job.frame_start <= frame <= job.frame_end:
            raise Refused(
                f"frame {frame} is not in job {job.id} (frames {job.frame_start}-{job.frame_end})"
            )
        return list(job.chunks_of_frame(frame))
    failed = sorted(i for i, c in job.chunks.items() if c.failed_on)
    if failed:
        return failed[:MAX_CHUNKS_LISTED]
    done = summary.done_chunks(job)[:MAX_CHUNKS_LISTED]
    return done or [run[0] for run in claimed_runs(job.chunks)][:MAX_CHUNKS_LISTED]


async def collect_logs(node: LogPeers, job_id: str, frame: int | None) -> list[dict[str, Any]]:
    job = node.state.jobs.get(job_id)
    if job is None:
        raise Refused(f"no job {job_id!r} on this farm; `peerfarm status` lists the jobs")
    out: list[dict[str, Any]] = []
    for index in chunks_of_interest(job, frame):
        chunk = job.chunk(index)
        holders = list(chunk.failed_on)
        for extra in (chunk.done_by, chunk.claim_origin if chunk.state == CLAIMED else ""):
            if extra and extra not in holders:
                holders.append(extra)
        frames = job.frames_of(index)
        for holder in holders:
            if holder == node.node_id:
                text = await trio.to_thread.run_sync(
                    read_log_tail, node.data_dir.chunk_log_path(job_id, index)
                )
            else:
                request = message("GET_LOG", job_id=job_id, chunk=index)
                reply = await node.ask(holder, request, ("log", job_id, index), LOG_TIMEOUT)
                peer = node.state.peers.get(holder)
                name = peer.name if peer else holder[:8]
                text = (
                    reply["text"]
                    if reply is not None
                    else (f"(node {name} is not reachable now; its log stays on that node)")
                )
            peer = node.state.peers.get(holder)
            out.append(
                {
                    "node_id": holder,
                    "node_name": peer.name if peer else "",
                    "chunk": index,
                    "frames": [frames.start, frames.stop - 1],
                    "tile": job.tile_of(index),
                    "state": chunk.state,
                    "failed_here": holder in chunk.failed_on,
                    "text": text,
                }
            )
    return out
