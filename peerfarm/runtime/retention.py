"""Retention on a real machine: list the data folder, ask the policy what may go
(core/retention.py, pure), delete it, and say what was freed.

A node runs it every ``interval`` on its own once it has caught up with the farm
(before, its state may lack jobs that need what is here), and `peerfarm gc` runs
it on demand. A file that cannot be deleted (held open on Windows, permission
denied) is reported and tried again at the next run; the run goes on.

Between the plan and the deletion the farm may move on; every item is looked at
again with the newest state just before it goes: a job that became live (or
became known) keeps its folders, and a blob a job names now, or that was used
since it was listed (runtime/blobs.py renews it), stays.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from peerfarm.core.retention import (
    BLOBS,
    JOB_KINDS,
    KINDS,
    Deletion,
    Item,
    Plan,
    Policy,
    blob_sha,
    is_live,
    needed_blobs,
    plan,
    size_text,
)
from peerfarm.core.state import State
from peerfarm.runtime.data_dir import DataDir

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 3600.0  # how often a node runs retention by itself
# How often newly collected jobs are noted (their grace starts then). Every 10 s, a
# `peerfarm gc` less than 10 s after a job was collected could be the first to note it
# and keep its frames a whole grace more (tests/test_retention_farm.py failed so on a
# quiet machine); a look over the jobs' flags every second costs nothing.
NOTE_INTERVAL = 1.0
MAX_LISTED = 1000  # deletions a report names one by one
MAX_ERRORS = 100


# -- listing ---------------------------------------------------------------------------


def item_path(data_dir: DataDir, item: Item) -> Path:
    if item.kind == BLOBS:
        return data_dir.blobs / item.name
    return data_dir.job_dir(item.kind, item.name)


def _measure(folder: Path) -> tuple[int, float]:
    """Bytes of every file under a folder, and the newest modification in it."""
    size, newest = 0, 0.0
    try:
        newest = folder.lstat().st_mtime
    except OSError:
        return 0, 0.0
    for top, dirs, files in os.walk(folder, onerror=lambda exc: None):
        for is_file, names in ((False, dirs), (True, files)):
            for name in names:
                try:
                    st = os.lstat(os.path.join(top, name))
                except OSError:
                    continue
                newest = max(newest, st.st_mtime)
                if is_file:
                    size += st.st_size
    return size, newest


def _folders(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as entries:
            return [e for e in entries if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []  # not there yet, or not readable: nothing of it is listed


def list_items(data_dir: DataDir) -> list[Item]:
    """What retention looks at in a data folder (blocking)."""
    items = []
    for kind in JOB_KINDS:
        for entry in _folders(data_dir.root / kind):
            size, mtime = _measure(Path(entry.path))
            items.append(Item(kind, entry.name, size, mtime))
    for sub in _folders(data_dir.blobs):
        try:
            with os.scandir(sub.path) as entries:
                for e in entries:
                    if e.is_file(follow_symlinks=False):
                        st = e.stat(follow_symlinks=False)
                        items.append(Item(BLOBS, f"{sub.name}/{e.name}", st.st_size, st.st_mtime))
        except OSError:
            continue
    return items


# -- deleting --------------------------------------------------------------------------


def _remove(path: Path) -> tuple[int, list[str]]:
    """Delete a file or a folder with everything in it, as far as possible: the bytes
    freed and what could not be deleted (and why)."""
    freed, errors = 0, []

    def unlink(p: str) -> None:
        nonlocal freed
        try:
            size = os.lstat(p).st_size
            os.unlink(p)
            freed += size
        except FileNotFoundError:
            pass
        except OSError as exc:
            errors.append(f"{p}: {exc.strerror or exc}")

    def rmdir(p: str) -> None:
        try:
            os.rmdir(p)
        except FileNotFoundError:
            pass
        except OSError as exc:
            if not errors:  # a folder left because a file in it was: said once
                errors.append(f"{p}: {exc.strerror or exc}")

    if path.is_symlink() or not path.is_dir():
        unlink(str(path))
        return freed, errors
    for top, dirs, files in os.walk(path, topdown=False, onerror=lambda e: errors.append(str(e))):
        for name in files:
            unlink(os.path.join(top, name))
        for name in dirs:
            p = os.path.join(top, name)
            if os.path.islink(p):
                unlink(p)
            else:
                rmdir(p)
    rmdir(str(path))
    return freed, errors


@dataclass
class Outcome:
    freed: dict[str, list[int]] = field(default_factory=lambda: {k: [0, 0] for k in KINDS})
    deleted: list[tuple[Deletion, int]] = field(default_factory=list)  # (what, bytes freed)
    errors: list[str] = field(default_factory=list)
    skipped: int = 0  # needed again by the time they were to go


class StillUnneeded:
    """Looks at an item again with the newest state just before it goes."""

    def __init__(self, state: Callable[[], State], data_dir: DataDir) -> None:
        self._state = state
        self._data_dir = data_dir
        self._seen: State | None = None
        self._shas: frozenset[str] = frozenset()

    def __call__(self, item: Item) -> bool:
        state = self._state()
        if item.kind != BLOBS:
            job = state.jobs.get(item.name)
            return job is None or not is_live(job)
        if state is not self._seen:
            self._seen, self._shas = state, needed_blobs(state)
        if blob_sha(item.name) in self._shas:
            return False
        try:  # used (renewed) since it was listed: an upload about to be submitted
            return item_path(self._data_dir, item).stat().st_mtime <= item.mtime
        except OSError:
            return False


def delete_planned(
    data_dir: DataDir, deletions: tuple[Deletion, ...], still_unneeded: Callable[[Item], bool]
) -> Outcome:
    """Delete what the plan says (blocking)."""
    outcome = Outcome()
    for deletion in deletions:
        item = deletion.item
        if not still_unneeded(item):
            outcome.skipped += 1
            continue
        freed, errors = _remove(item_path(data_dir, item))
        counts = outcome.freed[item.kind]
        counts[1] += freed
        if errors:
            outcome.errors.extend(errors[:3])
        else:
            counts[0] += 1
        outcome.deleted.append((deletion, freed))
    return outcome


# -- the report ------------------------------------------------------------------------


def report(plan_: Plan, policy: Policy, outcome: Outcome | None) -> dict[str, Any]:
    """What a run freed (or, dry, would free): plain data for the wire and the CLI."""
    dry = outcome is None
    if outcome is None:  # a dry run: what would go, all of it
        outcome = Outcome()
        for d in plan_.delete:
            counts = outcome.freed[d.item.kind]
            counts[0] += 1
            counts[1] += d.item.size
            outcome.deleted.append((d, d.item.size))
    return {
        "dry_run": dry,
        "freed": {k: {"count": c, "bytes": b} for k, (c, b) in outcome.freed.items()},
        "freed_bytes": sum(b for _, b in outcome.freed.values()),
        "deleted": [
            {"kind": d.item.kind, "name": d.item.name, "bytes": freed, "reason": d.reason}
            for d, freed in outcome.deleted[:MAX_LISTED]
        ],
        "errors": outcome.errors[:MAX_ERRORS],
        "skipped": outcome.skipped,
        "total_bytes": plan_.total,
        "needed_bytes": plan_.needed,
        "grace_bytes": plan_.in_grace,
        "over_budget_bytes": plan_.over_budget,
        "budget": policy.budget,
        "grace": policy.grace,
        "max_age": policy.max_age,
    }


def summary(rep: dict[str, Any]) -> str:
    """One line: "freed 12.0 MiB: frames 3 (10.0 MiB), work 1 (2.0 MiB), ..."."""
    verb = "would free" if rep["dry_run"] else "freed"
    parts = [
        f"{kind} {rep['freed'][kind]['count']} ({size_text(rep['freed'][kind]['bytes'])})"
        for kind in KINDS
    ]
    return f"{verb} {size_text(rep['freed_bytes'])}: " + ", ".join(parts)


# -- the node's part -------------------------------------------------------------------


class Retention:
    """A node's retention: periodic runs and runs on demand, one at a time."""

    def __init__(
        self,
        data_dir: DataDir,
        policy: Policy,
        state: Callable[[], State],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.data_dir = data_dir
        self.policy = policy
        self._state = state
        self._clock = clock
        self.collected_since: dict[str, float] = {}  # job -> when we first saw it collected
        self._lock = trio.Lock()
        self.last_report: dict[str, Any] | None = None
        # Since the node started, for metrics: runs, and per kind [items, bytes] deleted.
        self.runs = 0
        self.errors = 0
        self.freed_total: dict[str, list[int]] = {k: [0, 0] for k in KINDS}

    def note_collected(self) -> None:
        """Start the grace of jobs collected since the last look. Kept in memory only:
        after a restart a collected job's grace starts again (frames stay longer, never
        shorter)."""
        now = self._clock()
        for job in self._state().jobs.values():
            if job.collected and job.id not in self.collected_since:
                self.collected_since[job.id] = now

    async def run(self, dry_run: bool = False) -> dict[str, Any]:
        async with self._lock:
            self.note_collected()
            items = await trio.to_thread.run_sync(list_items, self.data_dir)
            plan_ = plan(self._state(), items, self.policy, self._clock(), self.collected_since)
            outcome = None
            if not dry_run:
                check = StillUnneeded(self._state, self.data_dir)
                outcome = await trio.to_thread.run_sync(
                    delete_planned, self.data_dir, plan_.delete, check
                )
            rep = report(plan_, self.policy, outcome)
        if not dry_run:
            self.last_report = rep
            self.runs += 1
            self.errors += len(rep["errors"])
            for kind, freed in rep["freed"].items():
                self.freed_total[kind][0] += freed["count"]
                self.freed_total[kind][1] += freed["bytes"]
            if rep["freed_bytes"] or rep["errors"]:
                log.info("retention %s", summary(rep))
            for error in rep["errors"]:
                log.warning("retention could not delete %s (tried again at the next run)", error)
            if rep["over_budget_bytes"]:
                log.warning(
                    "retention: the data folder holds %s over its budget of %s, all of it "
                    "needed by live jobs or too recent to delete",
                    size_text(rep["over_budget_bytes"]),
                    size_text(self.policy.budget or 0),
                )
        return rep

    async def run_periodically(self, interval: float, ready: Callable[[], bool]) -> None:
        """Every ``interval`` seconds (0: never), once ``ready()`` (caught up, not
        stopping); collected jobs are noted more often, so their grace starts on time."""
        step = min(NOTE_INTERVAL, interval) if interval > 0 else NOTE_INTERVAL
        next_run = trio.current_time() + interval
        while True:
            await trio.sleep(step)
            if not ready():
                continue
            self.note_collected()
            if interval > 0 and trio.current_time() >= next_run:
                next_run = trio.current_time() + interval
                try:
                    await self.run()
                except OSError as exc:  # listing failed as a whole: next time
                    log.warning("retention could not look at %s: %s", self.data_dir.root, exc)
