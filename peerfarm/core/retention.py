"""Retention: what a node may delete from its data folder, and why. Pure: the
runtime lists the files (runtime/retention.py) and deletes what this decides.

What a node keeps in its data folder (runtime/data_dir.py), by kind:

- ``frames``: ``frames/JOB/``, the frames (and tiles) it rendered, or pulled to stitch;
- ``work``: ``work/JOB/``, the job's scene, unpacked, where its renderer runs;
- ``logs``: ``logs/JOB/``, its renderers' output;
- ``blobs``: ``blobs/``, scene files by SHA-256 (complete, partial downloads, temp files).

The rules, in order:

1. Nothing a live job may still need is deleted, whatever its age and the budget.
   A job is *live* while it is active (rendering, queued or paused), failed (it
   may be retried), or done but not yet collected (its submitter still pulls the
   frames, and a lost chunk is rendered again). Its frames, work folder, logs and
   blobs (those its files name) are kept.
2. A job is *finished* once its submitter holds every frame (JOB_COLLECTED) or it
   was cancelled. Frames of a collected job are deleted ``grace`` seconds after
   this node first saw it collected; never before. The rest of a finished job
   (work folder, logs; a cancelled job's frames) and blobs no live job names
   expire once unused for ``max_age`` seconds.
3. With a ``budget``, what may expire (rule 2's, however young) is deleted oldest
   first until the four kinds together take at most the budget. Frames still
   in their grace are never taken for the budget.
4. Nothing changed in the last ``min_age`` seconds is deleted by age or for the
   budget: an upload waits for its SUBMIT, a NEW_JOB may be on its way, a stopped
   renderer may still be writing. (Collected frames have their grace instead.)

Output folders (where the submitter writes collected frames) are the user's and
are never looked at here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from peerfarm.core.state import ACTIVE, CANCELLED, JOB_DONE, JOB_FAILED, Job, State

FRAMES, WORK, LOGS, BLOBS = "frames", "work", "logs", "blobs"
KINDS = (FRAMES, WORK, LOGS, BLOBS)
JOB_KINDS = (FRAMES, WORK, LOGS)  # one folder per job, named after it

HOUR = 3600.0
DAY = 24 * HOUR


@dataclass(frozen=True)
class Policy:
    grace: float = HOUR  # frames kept this long after their job was collected
    max_age: float = 7 * DAY  # what a finished job left (and unnamed blobs) unused this long
    budget: int | None = None  # bytes the four kinds may take together (None: no limit)
    min_age: float = 600.0  # nothing changed more recently is deleted (but collected frames)


class Item(NamedTuple):
    """One thing in the data folder, deleted whole: a job's folder of one kind, or one
    blob file (``name``: the job id, or the path under ``blobs/``, e.g. ``ab/abcd...``,
    ``partial/abcd...``, ``tmp/x.tmp``)."""

    kind: str
    name: str
    size: int  # bytes, every file inside counted
    mtime: float  # the newest modification inside, in seconds since the epoch


class Deletion(NamedTuple):
    item: Item
    reason: str


@dataclass(frozen=True)
class Plan:
    delete: tuple[Deletion, ...]
    total: int  # bytes of every item listed
    needed: int  # bytes kept because a live job needs them
    in_grace: int  # bytes of collected jobs' frames still in their grace
    over_budget: int  # bytes above the budget that nothing may free (0: budget held)

    def freed(self) -> int:
        return sum(d.item.size for d in self.delete)


def is_live(job: Job) -> bool:
    """Whether a job may still need what nodes hold of it (rule 1)."""
    if job.state in (ACTIVE, JOB_FAILED):
        return True
    return job.state == JOB_DONE and not job.collected


def needed_blobs(state: State) -> frozenset[str]:
    """The blobs (SHA-256) live jobs' files name."""
    return frozenset(sha for job in state.jobs.values() if is_live(job) for _, sha, _ in job.files)


def blob_sha(name: str) -> str:
    """The SHA-256 a blob item is (or is becoming), or "" for a temp file."""
    folder, _, base = name.rpartition("/")
    return "" if folder == "tmp" else base


def _ago(seconds: float) -> str:
    if seconds >= 2 * DAY:
        return f"{seconds / DAY:.0f} days"
    if seconds >= 2 * HOUR:
        return f"{seconds / HOUR:.0f} hours"
    if seconds >= 120:
        return f"{seconds / 60:.0f} minutes"
    return f"{max(seconds, 0):.0f} seconds"


def plan(
    state: State,
    items: Iterable[Item],
    policy: Policy,
    now: float,
    collected_since: Mapping[str, float],
) -> Plan:
    """What to delete now, and why (see the module's doc).

    ``collected_since``: job id -> when this node first saw the job collected (a job
    missing here counts as collected ``now``: its grace starts now).
    """
    items = sorted(items, key=lambda i: (i.mtime, i.kind, i.name))  # oldest first
    needed_shas = needed_blobs(state)
    delete: list[Deletion] = []
    may_go: list[Item] = []  # may be deleted for the budget
    total = needed = in_grace = 0
    for item in items:
        total += item.size
        age = now - item.mtime
        expired = age >= policy.max_age
        unused = f"unused for {_ago(age)}"
        if item.kind == BLOBS:
            sha = blob_sha(item.name)
            if sha in needed_shas:
                needed += item.size
            elif age < policy.min_age:
                pass  # an upload before its SUBMIT, a NEW_JOB on its way
            elif not sha:
                delete.append(Deletion(item, "left by an interrupted write"))
            elif expired:
                delete.append(Deletion(item, f"no live job uses it; {unused}"))
            else:
                may_go.append(item)
            continue
        job = state.jobs.get(item.name)
        recent = age < policy.min_age
        if job is None:
            if recent:
                continue
            if expired:
                delete.append(Deletion(item, f"of a job this farm does not know; {unused}"))
            else:
                may_go.append(item)
        elif is_live(job):
            needed += item.size
        elif item.kind == FRAMES and job.collected:
            since = now - collected_since.get(job.id, now)
            if since >= policy.grace:
                why = f"its submitter holds them (collected {_ago(since)} ago)"
                delete.append(Deletion(item, why))
            else:
                in_grace += item.size
        elif recent:
            continue
        elif expired:
            what = "cancelled" if job.state == CANCELLED else "finished"
            delete.append(Deletion(item, f"its job is {what}; {unused}"))
        else:
            may_go.append(item)
    kept = total - sum(d.item.size for d in delete)
    over = 0
    if policy.budget is not None:
        for item in may_go:  # oldest first
            if kept <= policy.budget:
                break
            delete.append(Deletion(item, f"over the budget of {size_text(policy.budget)}"))
            kept -= item.size
        over = max(kept - policy.budget, 0)
    return Plan(tuple(delete), total, needed, in_grace, over)


def size_text(n: int) -> str:
    """1536 -> "1.5 KiB"."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"
