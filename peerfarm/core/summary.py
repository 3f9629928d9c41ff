"""A finished job's chunk records, summarised once no one needs them.

A job that is done and whose submitter holds every frame (JOB_COLLECTED) changes no
more: no claim, DONE, release, failure, loss or retry counts on it (core/reducers.py).
So its per-chunk records (claim, epoch, who rendered it) can give way to what users
still look at: who rendered which frames, as runs of chunks done by one node. Chunks
that failed on the way keep their records (their errors and the nodes they failed on:
``peerfarm logs`` shows them).

The reducer summarises at the JOB_COLLECTED that counts (or, for jobs collected before,
at the ENABLE_FEATURE of job_summaries), so every node summarises at the same place of
the total order and their digests stay equal. Only once the farm enabled the feature:
an older build keeps the records and would fold to another digest.
"""

from __future__ import annotations

from immutables import Map

from peerfarm.core import chunk_index
from peerfarm.core.state import CHUNK_DONE, JOB_DONE, Job

# (first chunk, chunks, node that rendered them), in chunk order, covering every chunk.
Run = tuple[int, int, str]


def summarisable(job: Job) -> bool:
    """Done, collected by its submitter, and not summarised yet."""
    return job.state == JOB_DONE and job.collected and not job.done_runs


def summarise(job: Job) -> Job:
    """The job with its plain done chunks' records replaced by runs of who rendered
    them. Every chunk of a done job is done, so ``job.chunk(i)`` still says so."""
    runs: list[list] = []
    kept = {}
    for index in range(job.chunk_total):
        chunk = job.chunks.get(index)
        node = chunk.done_by if chunk is not None else ""
        if chunk is not None and (chunk.attempts or chunk.failed_on or chunk.error):
            kept[index] = chunk  # a failure on the way: its record tells of it
        if runs and runs[-1][2] == node and runs[-1][0] + runs[-1][1] == index:
            runs[-1][1] += 1
        else:
            runs.append([index, 1, node])
    return job._replace(chunks=Map(kept), done_runs=tuple((f, n, w) for f, n, w in runs))


def frames_by_node(job: Job) -> dict[str, int]:
    """Frames (tiles, if tiled) each node rendered, by the DONEs that counted."""
    counts: dict[str, int] = {}
    if job.done_runs:
        for first, count, node in job.done_runs:
            if node:
                frames = len(job.run_frames(first, count)) if job.tiles == 1 else count
                counts[node] = counts.get(node, 0) + frames
    elif job.tiles == 1 and job.chunk_size == 1:  # a frame a chunk: no need to ask which
        # (Run by run from the chunk index: `status` asks at every look.)
        seg = chunk_index.segments(job.chunks)
        for start, end, record in zip(seg.starts, seg.ends, seg.records, strict=True):
            if record.state == CHUNK_DONE and record.done_by:
                counts[record.done_by] = counts.get(record.done_by, 0) + end - start
    else:
        for index, chunk in job.chunks.items():
            if chunk.state == CHUNK_DONE and chunk.done_by:
                counts[chunk.done_by] = counts.get(chunk.done_by, 0) + len(job.frames_of(index))
    return dict(sorted(counts.items()))


def done_chunks(job: Job) -> list[int]:
    """Indexes of the job's done chunks, in order (a summarised job's: every chunk)."""
    if job.done_runs:
        return list(range(job.chunk_total))
    return sorted(i for i, c in job.chunks.items() if c.state == CHUNK_DONE)
