"""How big a job may be: at most MAX_CHUNKS chunks, which keeps what every node holds
of a job bounded (docs/performance.md, `peerfarm bench memory`). A job over the limit
is refused at submit with the way out; a 1,000,000-frame job without --chunk is
accepted as runs of frames within the limit."""

from __future__ import annotations

import pytest

from peerfarm.core.actions import MAX_CHUNKS, chunk_count
from peerfarm.job_request import JobRequest, SubmitError
from peerfarm.jobspec import build_new_job
from peerfarm.renderers.null import NullRenderer


def build(frames: tuple[int, int], chunk_size: int | None) -> dict:
    """A job of the null renderer (any frame range) checked as a node checks a submit."""
    request = JobRequest(
        renderer="null",
        scene="null",
        name="big",
        frames=frames,
        chunk_size=chunk_size,
        output="out",
    )
    return build_new_job(request, "job1", {"null": NullRenderer()}, {"null"})


def test_a_million_one_frame_chunks_are_refused_with_the_way_out():
    with pytest.raises(SubmitError) as refused:
        build(frames=(1, 1_000_000), chunk_size=1)
    assert str(refused.value) == (
        "a job may have at most 100,000 chunks; 1,000,000 frames in chunks of 1 make "
        "1,000,000: use --chunk 10 or more, leave --chunk out (nodes then claim runs of "
        "frames), or split the frames into several jobs"
    )


def test_a_million_frames_without_chunk_fit_the_limit_as_runs():
    payload = build(frames=(1, 1_000_000), chunk_size=None)
    chunks = chunk_count(payload["frame_start"], payload["frame_end"], payload["chunk_size"])
    assert payload["adaptive"] is True
    assert (payload["chunk_size"], chunks) == (10, MAX_CHUNKS)


def test_the_limit_itself_is_accepted_and_one_more_chunk_refused():
    payload = build(frames=(1, MAX_CHUNKS), chunk_size=1)
    assert chunk_count(payload["frame_start"], payload["frame_end"], 1) == MAX_CHUNKS
    with pytest.raises(SubmitError, match="at most 100,000 chunks; 100,001 frames"):
        build(frames=(0, MAX_CHUNKS), chunk_size=1)
