"""What a user may ask of a job, farm-wide: each is checked here and, if it makes
sense against this node's view of the state, becomes a replicated action
(CANCEL_JOB, PAUSE_JOB, RESUME_JOB, RETRY_JOB, SET_PRIORITY; see core/reducers.py).

Each function returns the action to emit as (type, payload), or raises Refused
with a message a user can act on.
"""

from __future__ import annotations

from typing import Any

from peerfarm.core import actions as act
from peerfarm.core.refused import Refused
from peerfarm.core.state import ACTIVE, CHUNK_FAILED, JOB_FAILED, Job, State

Request = tuple[str, dict[str, Any]]


def _job(state: State, job_id: str) -> Job:
    job = state.jobs.get(job_id)
    if job is None:
        raise Refused(f"no job {job_id!r} on this farm; `peerfarm status` lists the jobs")
    return job


def cancel(state: State, job_id: str) -> Request:
    job = _job(state, job_id)
    if job.state != ACTIVE:
        raise Refused(f"job {job_id} is already {job.state}")
    return act.CANCEL_JOB, {"job_id": job_id}


def pause(state: State, job_id: str) -> Request:
    """No node starts new chunks of the job; chunks in flight finish."""
    job = _job(state, job_id)
    if job.state != ACTIVE:
        raise Refused(f"job {job_id} is {job.state}; only active jobs can be paused")
    if job.paused:
        raise Refused(f"job {job_id} is already paused")
    return act.PAUSE_JOB, {"job_id": job_id}


def resume(state: State, job_id: str) -> Request:
    job = _job(state, job_id)
    if not job.paused:
        raise Refused(f"job {job_id} is not paused")
    return act.RESUME_JOB, {"job_id": job_id}


def failed_chunks(job: Job) -> list[int]:
    return [i for i, c in job.chunks.items() if c.state == CHUNK_FAILED or c.failed_on]


def retry(state: State, job_id: str) -> Request:
    """Render the job's failed frames again."""
    job = _job(state, job_id)
    if job.state not in (ACTIVE, JOB_FAILED):
        raise Refused(f"job {job_id} is {job.state}: there is nothing to retry")
    if not failed_chunks(job) and not job.failures:
        raise Refused(f"job {job_id} has no failed frames to retry")
    return act.RETRY_JOB, {"job_id": job_id}


def frames_to_retry(state: State, job_id: str) -> int:
    """How many frames a retry of the job renders again."""
    job = _job(state, job_id)
    return sum(len(job.frames_of(i)) for i in failed_chunks(job))


def set_priority(state: State, job_id: str, priority: int) -> Request:
    _job(state, job_id)
    if type(priority) is not int or not -1000 <= priority <= 1000:
        raise Refused(f"priority {priority!r}: give a whole number from -1000 to 1000")
    return act.SET_PRIORITY, {"job_id": job_id, "priority": priority}
