"""The collector's rules: bringing the frames of this node's own jobs home.

The node that submitted a job pulls each finished frame from the node that
rendered it into the job's output folder, and writes the GIF (and video) when
the last one is in. Pull, not push: a submitter that was away collects when it
comes back. When the only copy of a chunk's frames is gone before it was
collected (its holder left or died, or lost its disk), the collector emits
CHUNK_LOST and the chunk is rendered again.

Tiled jobs: each tile is pulled into this node's frames folder (tiles it
rendered itself are there already); when a frame's tiles are all here, the
driver stitches them into the output folder.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from peerfarm.core import actions as act
from peerfarm.core.actions import Action
from peerfarm.core.state import CANCELLED, CHUNK_DONE, DOWN, FAULTY, JOB_DONE, LEFT, Job
from peerfarm.machine import effects as fx
from peerfarm.machine import events as ev
from peerfarm.machine.membership import Membership
from peerfarm.machine.shared import Shared
from peerfarm.machine.timing import COLLECT_INTERVAL, MAX_FETCHES

FetchKey = tuple[str, int, int]  # job id, frame, tile (-1: the whole frame)

RESCAN_INTERVAL = 60.0  # look over each unfinished job whole, whatever happened
NO_SPACE_NOTE_INTERVAL = 60.0  # how often a full output disk is said again
LOOK_BUDGET = 256  # chunks looked at per job per pass (waiting ones go to the end)
_DROP, _KEEP, _FULL = object(), object(), object()


class Collector:
    def __init__(self, shared: Shared, membership: Membership) -> None:
        self.shared = shared
        self.membership = membership
        self.collected: dict[str, set[int]] = {}  # job -> frames in its output folder
        # Tiled jobs: job -> frame -> tiles in our frames folder, for frames not stitched yet.
        self.tiles: dict[str, dict[int, set[int]]] = {}
        self._scanning: set[str] = set()
        self._fetching: dict[FetchKey, Job] = {}  # -> the job as it was when the fetch began
        self._retry_at: dict[FetchKey, float] = {}  # no answer: ask again after this
        self._stitching: set[tuple[str, int]] = set()
        self._finishing: set[str] = set()
        self.complete: set[str] = set()  # jobs whose outputs are all written
        self.gif: set[str] = set()  # jobs whose GIF is written
        self.errors: dict[str, str] = {}
        self._reported_lost: set[tuple[str, int, int, str]] = set()
        self._next_pass = math.inf
        # What to look at, so a pass costs what is left to do, not the job's size:
        # chunks to look at per job (in order), and jobs to look over whole again.
        self._todo: dict[str, dict[int, None]] = {}
        self._rescan: set[str] = set()
        self._late_inserts = 0
        self._next_rescan = math.inf
        self._told_no_space = -math.inf
        # job -> why its frames wait (the output disk is full): shown by status and the app
        # until a frame of the job is stored again, so a waiting submitter knows why
        self.no_room: dict[str, str] = {}

    def progress(self, job: Job) -> dict[str, Any]:
        collected = self.collected.get(job.id, set())
        waiting = self.tiles.get(job.id, {})
        return {
            "frames_collected": len(collected),
            # tiles of stitched frames count as collected
            "tiles_collected": len(collected) * job.tiles
            + sum(len(tiles) for frame, tiles in waiting.items() if frame not in collected),
            "complete": job.id in self.complete,
            "gif": job.id in self.gif,
            "output_error": self.errors.get(job.id, ""),
            "output_waiting": self.no_room.get(job.id, ""),
        }

    def next_deadline(self) -> float:
        """Ticks only while one of our jobs still waits for frames: an idle node sleeps."""
        for job in self.shared.state.jobs.values():
            if (
                self.shared.is_me(job.submitter)
                and job.state != CANCELLED
                and job.id not in self.complete
                and job.id not in self.errors
            ):
                return min(self._next_pass, self._next_rescan)
        return math.inf

    def start(self) -> None:
        self._next_pass = self.shared.now + COLLECT_INTERVAL
        self._next_rescan = self.shared.now + RESCAN_INTERVAL

    def tick(self) -> None:
        """Every COLLECT_INTERVAL: look again (fetches that got no answer are retried);
        every RESCAN_INTERVAL, over each job whole (a safety net: see observe)."""
        now = self.shared.now
        if now >= self._next_rescan:
            self._next_rescan = now + RESCAN_INTERVAL
            self._rescan_all()
        if now >= self._next_pass:
            self._next_pass = now + COLLECT_INTERVAL
            self.react()

    def _rescan_all(self) -> None:
        jobs = self.shared.state.jobs.values()
        self._rescan.update(j.id for j in jobs if self.shared.is_me(j.submitter))

    def observe(self, applied: list[Action]) -> None:
        """Actions just applied: which chunks to look at. A DONE of one of our jobs names
        its chunks; a peer joining, leaving, going down or proven faulty, or a re-fold of
        the log (a late action can change who holds what), sends us over our jobs whole
        again."""
        jobs = self.shared.state.jobs
        for action in applied:
            if action.type == act.DONE:
                job = jobs.get(action.payload["job_id"])
                if job is not None and self.shared.is_me(job.submitter):
                    # Every chunk of the run it names: only its first waited for the next
                    # look over the whole job (up to RESCAN_INTERVAL) before.
                    first = action.payload["chunk"]
                    todo = self._todo.setdefault(job.id, {})
                    for index in range(first, first + action.payload.get("count", 1)):
                        todo[index] = None
            elif action.type in (
                act.PEER_DOWN,
                act.PEER_LEFT,
                act.PEER_JOINED,
                act.EQUIVOCATION,
            ):
                self._rescan_all()
        if self.shared.log.late_inserts != self._late_inserts:
            self._late_inserts = self.shared.log.late_inserts
            self._rescan_all()

    def relinked(self) -> None:
        """A link came up: frames whose holder could not be asked can be asked now."""
        self._rescan_all()

    # -- what happens on every change -------------------------------------------------

    def react(self) -> None:
        jobs = self.shared.state.jobs
        for job_id in sorted(jobs):
            job = jobs[job_id]
            if self.shared.is_me(job.submitter) and job.state != CANCELLED:
                self._collect(job)

    def _holder_gone(self, holder: str) -> bool:
        """Gone by the farm's account, and we cannot hear it either (after a partition
        the state may call it down before its rejoin arrives)."""
        peer = self.shared.state.peers.get(holder)
        return (
            holder != self.shared.node_id
            and (peer is None or peer.state in (DOWN, LEFT, FAULTY))
            and not self.membership.linked(holder)
        )

    def _may_fetch(self, key: FetchKey, holder: str) -> bool | None:
        """True: fetch now; False: not now; None: the fetch limit is reached."""
        if key in self._fetching or self._retry_at.get(key, -math.inf) > self.shared.now:
            return False
        if holder != self.shared.node_id and not self.membership.linked(holder):
            return False  # no link to the holder: a later pass tries again
        if len(self._fetching) >= MAX_FETCHES:
            return None
        return True

    def _fetch(self, key: FetchKey, job: Job, frame: int, tile: int | None, holder: str) -> None:
        self._fetching[key] = job
        self.shared.out(fx.FetchFrame(job, frame, tile, holder))

    def _collect(self, job: Job) -> None:
        if job.id in self.complete or job.id in self.errors:
            return
        if job.collected:
            # Collected before (JOB_COLLECTED): its frames are the user's now, and the
            # copies on the nodes that rendered them may be gone (retention).
            self.complete.add(job.id)
            self.shared.touch()
            return
        collected = self.collected.get(job.id)
        if collected is None:
            if job.id not in self._scanning:
                self._scanning.add(job.id)
                self.shared.out(fx.ScanOutputs(job))
            return
        todo = self._todo.setdefault(job.id, {})
        if job.id in self._rescan:
            self._rescan.discard(job.id)
            for index in sorted(job.chunks):
                if job.chunks[index].state == CHUNK_DONE:
                    todo[index] = None
        looked = 0
        for index in list(todo):
            if looked >= LOOK_BUDGET:
                break
            looked += 1
            verdict = self._look_at(job, collected, index)
            if verdict is _FULL:
                break
            del todo[index]
            if verdict is _KEEP:
                todo[index] = None  # to the end: a waiting chunk does not block the others
        if len(collected) == job.frames_total and job.id not in self._finishing:
            self._finishing.add(job.id)
            self.shared.out(fx.FinishOutputs(job))

    def _look_at(self, job: Job, collected: set[int], index: int) -> object:
        """Fetch what a done chunk's frames (or tile) still need. _DROP: nothing more to
        do for it now; _KEEP: look again later (its holder cannot be asked now); _FULL:
        the fetch limit is reached."""
        chunk = job.chunk(index)
        if chunk.state != CHUNK_DONE:
            return _DROP  # a DONE will name it again when it is done
        if job.tiles > 1:
            frame, tile = job.frames_of(index).start, job.tile_of(index)
            here = self.tiles.get(job.id, {}).get(frame, ())
            wanted = [] if frame in collected or tile in here else [(frame, tile)]
        else:
            wanted = [(f, None) for f in job.frames_of(index) if f not in collected]
        if not wanted:
            return _DROP
        if self._holder_gone(chunk.done_by):
            self._lost(job, index, chunk.done_by, "its holder is gone")
            return _DROP
        waiting = False
        for frame, tile in wanted:
            key = (job.id, frame, -1 if tile is None else tile)
            may = self._may_fetch(key, chunk.done_by)
            if may is None:
                return _FULL
            if may:
                self._fetch(key, job, frame, tile, chunk.done_by)
            elif key not in self._fetching:
                waiting = True
        return _KEEP if waiting else _DROP

    def _maybe_stitch(self, job_id: str, frame: int) -> None:
        job = self.shared.state.jobs.get(job_id)
        if job is None or frame in self.collected.get(job_id, ()):
            return
        if len(self.tiles.get(job_id, {}).get(frame, ())) == job.tiles:
            if (job_id, frame) not in self._stitching:
                self._stitching.add((job_id, frame))
                self.shared.out(fx.Stitch(job, frame))

    def _lost(self, job: Job, index: int, holder: str, why: str) -> None:
        """The only copy of a chunk's frames is gone before we collected them: render again."""
        # Per holder too: after a re-fold another node can hold the same epoch's frames.
        key = (job.id, index, job.chunk(index).epoch, holder)
        if key in self._reported_lost:
            return
        self._reported_lost.add(key)
        self.shared.note(
            logging.WARNING,
            f"job {job.id}: frames of chunk {index} are lost ({why}); rendering them again",
        )
        self.shared.emit(act.CHUNK_LOST, {"job_id": job.id, "chunk": index, "holder": holder})

    def _fail(self, job_id: str, error: str) -> None:
        self.errors[job_id] = error
        self.shared.note(logging.ERROR, f"job {job_id}: {error}")
        self.shared.touch()

    # -- events ----------------------------------------------------------------------

    def scanned(self, event: ev.OutputsScanned) -> None:
        self._scanning.discard(event.job_id)
        if event.error:
            self._fail(event.job_id, event.error)
            return
        self.collected[event.job_id] = set(event.frames)
        if event.tiles:
            self.tiles[event.job_id] = {f: set(t) for f, t in event.tiles.items()}
            for frame in sorted(event.tiles):
                self._maybe_stitch(event.job_id, frame)
        self._rescan.add(event.job_id)
        self.shared.touch()

    def fetched(self, event: ev.FrameFetched) -> None:
        key = (event.job_id, event.frame, -1 if event.tile is None else event.tile)
        job = self._fetching.pop(key, None)
        if job is None:
            return
        self._retry_at.pop(key, None)
        if event.outcome == ev.STORED:
            self.no_room.pop(event.job_id, None)
            if event.tile is None:
                self.collected.setdefault(event.job_id, set()).add(event.frame)
            else:
                tiles = self.tiles.setdefault(event.job_id, {})
                tiles.setdefault(event.frame, set()).add(event.tile)
                self._maybe_stitch(event.job_id, event.frame)
            self.shared.touch()
        elif event.outcome == ev.MISSING:
            if event.tile is None:
                index, what = job.chunk_of_frame(event.frame), f"frame {event.frame} is missing"
            else:
                index = job.chunks_of_frame(event.frame)[event.tile]
                what = f"tile {event.tile} of frame {event.frame} is missing"
            self._lost(job, index, event.holder, what)
            self.shared.touch()
        elif event.outcome == ev.WRITE_FAILED:
            self._fail(event.job_id, event.error)
        else:  # UNREACHABLE or NO_SPACE: the next pass after the interval asks again
            if event.outcome == ev.NO_SPACE:
                if event.job_id not in self.no_room:
                    self.shared.touch()  # status and the app say so at once
                self.no_room[event.job_id] = event.error
                if self.shared.now >= self._told_no_space:
                    self._told_no_space = self.shared.now + NO_SPACE_NOTE_INTERVAL
                    self.shared.note(logging.ERROR, f"job {event.job_id}: {event.error}")
            self._retry_at[key] = self.shared.now + COLLECT_INTERVAL
            index = job.chunk_of_frame(event.frame)
            if event.tile is not None:
                index = job.chunks_of_frame(event.frame)[event.tile]
            self._todo.setdefault(event.job_id, {})[index] = None

    def stitched(self, event: ev.Stitched) -> None:
        self._stitching.discard((event.job_id, event.frame))
        if event.error:
            self._fail(event.job_id, event.error)
            return
        self.collected.setdefault(event.job_id, set()).add(event.frame)
        self.tiles.get(event.job_id, {}).pop(event.frame, None)
        self.shared.touch()

    def finished(self, event: ev.OutputsFinished) -> None:
        self.no_room.pop(event.job_id, None)
        if event.error:
            self._fail(event.job_id, event.error)
            return
        self.complete.add(event.job_id)
        if event.gif:
            self.gif.add(event.job_id)
        job = self.shared.state.jobs.get(event.job_id)
        if (
            job is not None
            and job.state == JOB_DONE
            and not job.collected
            and self.shared.is_me(job.submitter)
        ):
            # Every frame is in the output folder: the nodes that rendered them may
            # delete their copies (retention).
            self.shared.emit(act.JOB_COLLECTED, {"job_id": job.id})
        self.shared.touch()
