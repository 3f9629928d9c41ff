"""The worker's rules: which chunks this node claims, renders, stops and gives back.

A node claims a chunk by emitting CLAIM_CHUNK and renders only while the
folded state says its claim holds: if a concurrent claim that sorts earlier
arrives, the render is stopped and the node takes other work. The renders
themselves are processes (or, in the simulator, timers) a driver runs on the
StartRender / StopRender effects.
"""

from __future__ import annotations

import logging
import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from peerfarm.core import actions as act
from peerfarm.core import chunk_index
from peerfarm.core.costs import MAX_FRAMES, node_scales, work_of
from peerfarm.core.scheduler import (
    OVERDUE_LEFT,
    PROBE_FRAMES,
    SPLIT_LOOK_EVERY,
    Measured,
    job_costs,
    job_speed,
    overdue_at,
    pick_backup,
    pick_run,
    split_keep,
)
from peerfarm.core.state import ACTIVE, CHUNK_DONE, CLAIMED, JOB_DONE, JOB_FAILED, PENDING, UP, Job
from peerfarm.machine import effects as fx
from peerfarm.machine.shared import Shared
from peerfarm.machine.timing import FINISHED_TOLD_EVERY

# A re-fold longer than this has every chunk looked over (cheaper than naming them).
ADOPTION_LOOKS_AT_MOST = 1_000
CHUNK_ACTIONS = frozenset(
    (
        act.CLAIM_CHUNK,
        act.DONE,
        act.RELEASE_CHUNK,
        act.CHUNK_FAILED,
        act.CHUNK_LOST,
        act.BACKUP_CHUNK,
    )
)
# Actions that change no claim (a re-fold of them alone needs no look over the chunks;
# a node's speeds arrive often while frames take milliseconds).
NO_CLAIM_CHANGES = frozenset((act.NODE_SPEED, act.JOB_COLLECTED))
# Actions after which another job may wait for this node's slots (worker.observe).
OTHER_JOB_MAY_WAIT = frozenset((act.NEW_JOB, act.RESUME_JOB, act.SET_PRIORITY, act.RETRY_JOB))

# Renders stopped for these reasons give their chunk back (RELEASE_CHUNK) so another
# node takes it at once; other stops (job over, claim lost) have nothing to give back.
RELEASE_REASON_STOPPING = "node stopping"
RELEASE_REASON_PAUSED = "this machine's worker paused"
RELEASE_REASON_NO_SPACE = "this node's disk is full"
RELEASE_REASONS = (RELEASE_REASON_STOPPING, RELEASE_REASON_PAUSED, RELEASE_REASON_NO_SPACE)
RELEASE_REASON_HUNG = "the renderer ran far past its estimate (hung)"
# The rest of the run went back to the farm (core/scheduler.py split_keep): the render
# stops once the frames kept are done, and their DONE counts.
STOP_REASON_SPLIT = "its frames kept are done; the rest of the run went back to the farm"
HUNG_MIN_SECONDS = 10.0  # no render counts as hung sooner than this
# A job's first render on a node has no frame time of the job to go by: until its first
# frame is finished, it counts as needing this long, so --hung-limit 10 gives it four
# hours. Without, a scene on which the renderer never ends (a parse loop that never
# counts up) rendered forever on every node, "0/1 frames" with no word of why. Not
# less: frames of hours exist, and an hour stopped a farm whose scenes load for an hour
# (`peerfarm bench schedule --startup 3600`: 4.0 of the bound, 1.05 before).
FIRST_FRAME_SECONDS = 1440.0
# A frame running this many times past its estimate, and past the job's mean frame's,
# is stuck (frames of one film differ up to 8x: twice that), and its run looks whether
# to give the rest back while it runs (_split_overdue).
STUCK_FRAME_FACTOR = 16.0
SEEN_KEPT = 10_000  # claims remembered (when first seen) before those of ended jobs go

# A measured speed is shared again (NODE_SPEED) once it is this far off what the farm has.
SPEED_CHANGE_SHARED = 0.2
# A speed put on the farm's scale once a job is done (_speed_from_job) is shared when
# this far off: the next job's parts are weighted by it, and a speed left up to 20% off
# sized a part up to 20% wrong (two nodes of one speed stood at 7.4 and 9.8 s after the
# default scenario with a 30 s start-up, whose second job took 1.162 of the bound).
SPEED_FROM_JOB_SHARED = 0.03
MEASURE_WEIGHT = 0.5  # weight of the newest render in the running averages
MEASURABLE_FRAME_MS = 10  # a run whose median frame is faster reports no frame times


@dataclass
class Render:
    job_id: str
    chunk: int  # the first chunk of the run
    claim_seq: int
    frames: range
    tile: int | None  # the tile of frames.start this chunk renders; None: whole frames
    count: int = 1  # chunks in the run, from ``chunk`` on
    renderer: str = ""
    started: float = 0.0  # when StartRender went out (the machine's clock)
    first_frame_at: float | None = None  # when the first frame was finished
    last_frame_at: float | None = None
    frames_finished: int = 0
    frame_at: list[float] = field(default_factory=list)  # when each frame was finished
    stop_reason: str = ""  # set once StopRender went out; the slot stays taken until it ends
    backup: bool = False  # a copy of another node's claim (claim_seq is theirs)
    hung_at: float = math.inf  # past this, the render counts as hung
    unestimated: bool = False  # no frame time of its job to go by (FIRST_FRAME_SECONDS)
    frames_per_chunk: int = 1  # whole frames: a run's chunk k is frames [k*n, (k+1)*n)
    told: int = 0  # chunks of the run (from the first) a DONE was emitted for already
    told_at: float = 0.0  # when the last of those DONEs went out (or the render started)
    stop_soon: bool = False  # the node is stopping: stop once the next chunk is finished
    # Its tail went back to the farm: the renderer still renders it, and is stopped once
    # ``frames`` (the frames kept) are done.
    split: bool = False
    split_looked_at: float = -math.inf  # when _split last looked whether to give its tail
    # When _split looks while a frame renders: once the frame is stuck (_stuck_at),
    # then ever less often while it runs on (_split_overdue, from tick).
    split_look_at: float = math.inf
    # (job's chunk map, job state, count) when _stop_lost_claims last found it needed: it
    # looks again only once one of them changed, not at every frame of a long run.
    needed_as_of: tuple[object, str, int] | None = None
    measured: int = 0  # frames of the run (from the first) whose times were counted

    @property
    def chunks(self) -> range:
        return range(self.chunk, self.chunk + self.count)

    def claim_ref(self) -> dict[str, Any]:
        ref = {"job_id": self.job_id, "chunk": self.chunk, "claim_seq": self.claim_seq}
        if self.count > 1:
            ref["count"] = self.count
        return ref

    def done_ref(self, upto: int | None = None) -> dict[str, Any]:
        """The DONE payload for the run's chunks no DONE was emitted for yet, up to chunk
        ``upto`` of the run (default: its end): the claim, and each of their frames'
        render times when every one reported (the run's first frame's is 0: it also
        paid the start-up)."""
        first, last = self.told, self.count if upto is None else upto
        ref: dict[str, Any] = {
            "job_id": self.job_id,
            "chunk": self.chunk + first,
            "claim_seq": self.claim_seq,
        }
        if last - first > 1:
            ref["count"] = last - first
        lo = first * self.frames_per_chunk
        hi = min(last * self.frames_per_chunk, len(self.frames))
        # Runs longer than a scene's cost table holds send none (the action stays small);
        # the run's first frame alone tells nothing (it also paid the start-up). A split
        # run's renderer may have finished frames past the ones it kept: hi stops at those.
        least = 2 if lo == 0 else 1
        if self.tile is None and MAX_FRAMES >= hi - lo >= least and len(self.frame_at) >= hi:
            at = self.frame_at
            ms = [0 if i == 0 else max(0, round((at[i] - at[i - 1]) * 1000)) for i in range(lo, hi)]
            # Frames of a few milliseconds tell nothing of a scene's costs (the node's own
            # work between two frames decides their times, and a stall of the node makes
            # some longer): none sent, so the farm's table of costs is not solved again
            # for thousands of them (docs/performance.md).
            if statistics.median_high(ms) >= MEASURABLE_FRAME_MS:
                ref["frame_ms"] = ms
        return ref


class Worker:
    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self.renders: dict[tuple[str, int], Render] = {}
        self._busy: frozenset[tuple[str, int]] | None = None  # busy(), until renders change
        self.paused = False  # this machine's user paused it (or is at the keyboard)
        self.disk_problem = ""  # why this node cannot write its data folder now
        # Orphaned claims can only appear at start (the log from disk) and when a late
        # action re-folds the log: only then is every chunk looked over (see react).
        self._late_inserts = -1
        # What this node measured of its own renders (core/scheduler.py reads it):
        # seconds per frame per job, and per renderer, with the renderer's start-up.
        self.job_frame_seconds: dict[str, float] = {}
        self.speeds: dict[str, tuple[float, float]] = {}  # renderer -> (s/frame, start-up s)
        self._measured_jobs: set[str] = set()  # active jobs this node measured frames of
        # When this node first saw each claim, (job, first chunk, claim seq) -> time:
        # how far along another node's run should be (backups).
        self.claims_seen: dict[tuple[str, int, int], float] = {}
        self._look_again_at = math.inf  # an idle node looks for a backup again then
        # (state, chunks our renders work on) in which the last look found nothing to
        # claim and nothing to copy: not looked at again until one of them changes (or a
        # backup is due), though every frame finished and every probe runs the rules.
        self._nothing_in: tuple[Any, frozenset[tuple[str, int]]] | None = None

    @property
    def slots(self) -> int:
        return self.shared.config.slots

    def status(self) -> dict[str, Any]:
        return {
            "slots": self.slots,
            "paused": self.paused,
            "disk_problem": self.disk_problem,
            "rendering": [
                {
                    "job_id": r.job_id,
                    "chunk": r.chunk,
                    "frames": [r.frames.start, r.frames.stop - 1],
                    "tile": r.tile,
                    "frames_finished": r.frames_finished,
                }
                for r in self.renders.values()
            ],
            "speeds": {
                name: {"frame_seconds": round(f, 3), "startup_seconds": round(s, 3)}
                for name, (f, s) in sorted(self.speeds.items())
            },
        }

    def _may_start(self) -> bool:
        return not self.paused and not self.shared.stopping and not self.disk_problem

    # -- what happens on every change -------------------------------------------------

    def observe(self, applied: list[Any]) -> None:
        """Note when claims were first seen (the machine hands over what it applied)."""
        now = self.shared.now
        jobs = self.shared.state.jobs
        for action in applied:
            if action.type == act.CLAIM_CHUNK:
                key = (action.payload["job_id"], action.payload["chunk"], action.seq)
                self.claims_seen.setdefault(key, now)
            elif action.type == act.DONE:
                # A DONE of the first part of a run (a long run tells its finished
                # chunks as it goes): what the claim still holds is a run seen now,
                # or it would never look overdue to anyone.
                self._note_rest_seen(action.payload, now)
            elif action.type == act.BACKUP_CHUNK:
                # A copy of the head of a run: the rest is a run of its own to copy
                # (chunk_index.claimed_runs, uncopied), as old as the one the copy took,
                # or a hung holder's rest would look freshly claimed at every look.
                p = action.payload
                self._note_rest_seen(
                    p, self.claims_seen.get((p["job_id"], p["chunk"], p["claim_seq"]), now)
                )
        if any(a.type == act.NODE_SPEED for a in applied):
            self._time_unmeasured_frames()
        if any(a.type in OTHER_JOB_MAY_WAIT for a in applied):
            # Another job may now wait for our slots (a job arrived, resumed, or moved
            # up): our runs look at once whether to give their tails back, not at their
            # next frame's end (two jobs submitted together, each node rendered a frame
            # more of the first than it had to: its head start, kept to the end).
            for key in sorted(self.renders):
                job = jobs.get(key[0])
                if job is not None and job.state == ACTIVE:
                    self._split(self.renders[key], job)
        for job_id in [
            j for j in self._measured_jobs if jobs.get(j) is None or jobs[j].state != ACTIVE
        ]:
            self._measured_jobs.discard(job_id)
            job = jobs.get(job_id)
            if job is not None and job.state == JOB_DONE:
                self._speed_from_job(job)
        if len(self.claims_seen) > SEEN_KEPT:
            jobs = self.shared.state.jobs
            self.claims_seen = {
                k: v
                for k, v in self.claims_seen.items()
                if (job := jobs.get(k[0])) is not None and job.state == ACTIVE
            }

    def _time_unmeasured_frames(self) -> None:
        """A speed arrived: renders that could not tell when their frame is stuck (this
        node had measured nothing, nor had the farm: a fresh farm's parts) go by the
        slowest node measured now (_stuck_at)."""
        for key in sorted(self.renders):
            render = self.renders[key]
            job = self.shared.state.jobs.get(render.job_id)
            if render.split_look_at == math.inf and not render.stop_reason and job is not None:
                render.split_look_at = self._stuck_at(render, job)

    def _note_rest_seen(self, payload: dict[str, Any], seen: float) -> None:
        """The chunks a claim still holds after the ones ``payload`` (a DONE or a
        BACKUP_CHUNK) names: a run of their own, seen at ``seen``."""
        job = self.shared.state.jobs.get(payload["job_id"])
        after = payload["chunk"] + payload.get("count", 1)
        if job is not None and after < job.chunk_total:
            chunk = job.chunk(after)
            if chunk.state == CLAIMED and chunk.claim_seq == payload["claim_seq"]:
                self.claims_seen.setdefault((job.id, after, payload["claim_seq"]), seen)

    def next_deadline(self) -> float:
        hung = min(
            (min(r.hung_at, r.split_look_at) for r in self.renders.values() if not r.stop_reason),
            default=math.inf,
        )
        return min(hung, self._look_again_at)

    def tick(self) -> None:
        """Stop renders past their hung limit; look for backups again when one is due."""
        now = self.shared.now
        for key in sorted(self.renders):
            render = self.renders[key]
            if render.stop_reason:
                continue
            if now >= render.split_look_at:
                self._split_overdue(render)
            if now < render.hung_at:
                continue
            self.shared.note(
                logging.WARNING,
                f"chunk {render.chunk} of job {render.job_id}: {self._hung_why(render)}; "
                "stopping it",
            )
            self._stop(render, RELEASE_REASON_HUNG)
        if now >= self._look_again_at:
            self._look_again_at = math.inf
            self._nothing_in = None
            self.shared.touch()

    def react(self) -> None:
        self._stop_lost_claims()
        log = self.shared.log
        late = log.late_inserts
        if late != self._late_inserts:
            look_over_all = self._late_inserts == -1  # at start, or after a stop
            self._late_inserts = late
            refolded = log.take_refolded(ADOPTION_LOOKS_AT_MOST)
            self._adopt_orphan_claims(None if look_over_all else _runs_named(refolded))
        self._fill_slots()

    def _holds(self, job: Job, index: int, claim_seq: int, count: int = 1) -> bool:
        """Our claim ``claim_seq`` holds every chunk of the run, in an active job."""
        return job.state == ACTIVE and self._claimed_by_me(job, index, claim_seq, count)

    def _claimed_by_me(self, job: Job, index: int, claim_seq: int, count: int = 1) -> bool:
        me = self.shared.node_id
        return all(
            (chunk := job.chunk(i)).state == CLAIMED
            and chunk.claim_origin == me
            and chunk.claim_seq == claim_seq
            for i in range(index, index + count)
        )

    def busy(self) -> frozenset[tuple[str, int]]:
        """Every chunk our renders work on. (Kept until a render starts or ends: runs
        of hundreds of chunks were listed again at every frame's progress.)"""
        if self._busy is None:
            self._busy = frozenset((r.job_id, i) for r in self.renders.values() for i in r.chunks)
        return self._busy

    def _stop_lost_claims(self) -> None:
        """Stop renders nobody needs from us: the job ended, the chunk is done, or
        another node holds it (it won a claim race, or took the chunk over after we
        were declared down). A chunk released from us and not yet taken keeps
        rendering: its DONE still counts."""
        me = self.shared.node_id
        for key in sorted(self.renders):
            render = self.renders[key]
            if render.stop_reason:
                continue
            job = self.shared.state.jobs.get(render.job_id)
            if job is None:
                # Its NEW_JOB was dropped with a faulty member's fork (core/feeds.py).
                reason = "the job is gone (its submitter was proven faulty)"
                self.shared.note(
                    logging.INFO, f"stopping chunk {render.chunk} of job {render.job_id}: {reason}"
                )
                self._stop(render, reason)
                continue
            as_of = (job.chunks, job.state, render.count)
            was = render.needed_as_of
            if was is not None and was[0] is job.chunks and was[1:] == as_of[1:]:
                continue
            chunks = [job.chunk(i) for i in render.chunks]
            if render.backup:
                reason = self._backup_unneeded(job, render, chunks)
                if reason:
                    self.shared.note(
                        logging.INFO,
                        f"stopping our copy of chunk {render.chunk} of job {render.job_id}: "
                        f"{reason}",
                    )
                    self._stop(render, reason)
                else:
                    render.needed_as_of = as_of
                continue
            taken = [c for c in chunks if c.state == CLAIMED and c.claim_origin != me]
            if job.state != ACTIVE:
                reason = f"job {job.state}"
            elif taken:
                reason = f"claim lost to {taken[0].claim_origin[:8]}"
            elif all(c.state == CHUNK_DONE for c in chunks):
                reason = "chunk done" if render.count == 1 else "chunks done"
            elif odd := [c for c in chunks if c.state not in (CLAIMED, CHUNK_DONE, PENDING)]:
                reason = f"chunk {odd[0].state}"
            else:
                render.needed_as_of = as_of
                continue  # ours, or released and still free, or partly done elsewhere
            self.shared.note(
                logging.INFO,
                f"stopping chunk {render.chunk} of job {render.job_id}: {reason}; "
                "taking other work",
            )
            self._stop(render, reason)

    def _backup_unneeded(self, job: Job, render: Render, chunks: list[Any]) -> str:
        """Why our copy of another node's run should stop, or "" to go on."""
        if job.state != ACTIVE:
            return f"job {job.state}"
        if all(c.state == CHUNK_DONE for c in chunks):
            return "done" if any(c.done_by != self.shared.node_id for c in chunks) else ""
        for c in chunks:
            if c.state == CHUNK_DONE:
                continue
            if c.state != CLAIMED or c.claim_seq != render.claim_seq:
                return "the claim it copies no longer holds"
            if c.backup_origin != self.shared.node_id:
                return "another node copies it"
        return ""

    def _stop(self, render: Render, reason: str) -> None:
        if reason in RELEASE_REASONS:
            # Its chunks go back to the farm: the finished ones are told first, so the
            # frames already rendered (on disk) are not rendered again.
            self._tell_finished(render, now=True)
        render.stop_reason = reason
        self.shared.out(fx.StopRender(render.job_id, render.chunk, reason))

    def _adopt_orphan_claims(self, only: dict[str, list[tuple[int, int]]] | None = None) -> None:
        """Chunks the state says this node holds but no renderer of ours works on:
        render them if a slot is free, else give them back.

        They come from a restart (the renderers died with the process) and from
        claim outcomes that flip when late actions re-fold the log: a claim we
        lost (and stopped rendering) can win again when the claim that beat it
        turns out void. Nobody else would ever render such a chunk.
        """
        shared = self.shared
        me = shared.node_id
        jobs = shared.state.jobs
        busy = self.busy()
        # ``only``: the runs the re-folded actions name, by job (a flipped claim is
        # among them); None: every chunk (at start; or a re-fold that was long, or held
        # actions other than a chunk's, such as a PEER_DOWN or a job's end).
        if only is None:
            # (Active jobs only: a finished job's many chunks hold no claim to adopt.)
            # (Our claimed runs from the chunk index, not a walk over every chunk.)
            places = sorted(
                (j, i)
                for j in jobs
                if jobs[j].state == ACTIVE
                for first, count, holder, _ in chunk_index.claimed_runs(jobs[j].chunks)
                if holder == me
                for i in range(first, first + count)
            )
        else:
            # Our claimed runs where the named runs overlap them, not rendered: a re-fold
            # names thousands of chunks, and ours are a few runs (the chunk index).
            found: set[tuple[str, int]] = set()
            for j, named in only.items():
                job = jobs.get(j)
                if job is None:
                    continue
                for first, count, holder, _ in chunk_index.claimed_runs(job.chunks):
                    if holder != me:
                        continue
                    for start, end in named:
                        lo, hi = max(start, first), min(end, first + count)
                        found.update((j, i) for i in range(lo, hi) if (j, i) not in busy)
            places = sorted(found)
        # Our claimed chunks, as the runs our claims took (consecutive, one claim seq).
        runs: list[tuple[str, list[int]]] = []
        for job_id, index in places:
            job = jobs[job_id]
            if job.state != ACTIVE:
                continue
            chunk = job.chunks[index]
            if chunk.state != CLAIMED or chunk.claim_origin != me:
                continue
            if (job_id, index) in busy:
                continue
            last = runs[-1] if runs else None
            if (
                last is not None
                and last[0] == job_id
                and last[1][-1] == index - 1
                and job.chunks[last[1][0]].claim_seq == chunk.claim_seq
            ):
                last[1].append(index)
            else:
                runs.append((job_id, [index]))
        for job_id, run in runs:
            job = jobs[job_id]
            index, count = run[0], len(run)
            claim_seq = job.chunks[index].claim_seq
            if self._may_start() and not job.paused and len(self.renders) < self.slots:
                shared.note(
                    logging.INFO,
                    f"rendering chunk {index} of job {job_id}: we hold its claim #{claim_seq}",
                )
                self._start(job, index, claim_seq, count)
            else:
                shared.note(
                    logging.INFO, f"giving back chunk {index} of job {job_id}: not rendering it"
                )
                payload = {"job_id": job_id, "chunk": index, "claim_seq": claim_seq}
                if count > 1:
                    payload["count"] = count
                shared.emit(act.RELEASE_CHUNK, payload)

    def _fill_slots(self) -> None:
        shared = self.shared
        while self._may_start() and len(self.renders) < self.slots:
            busy = self.busy()
            nothing = self._nothing_in
            if nothing is not None and nothing[0] is shared.state and nothing[1] == busy:
                return
            measured = Measured(self.job_frame_seconds, shared.now, self.claims_seen)
            pick = pick_run(shared.state, shared.node_id, busy=busy, measured=measured)
            if pick is None:
                if shared.config.backups:
                    self._back_up(measured)
                if len(self.renders) < self.slots:
                    self._nothing_in = (shared.state, self.busy())
                return
            payload: dict[str, Any] = {"job_id": pick.job_id, "chunk": pick.chunk}
            if pick.count > 1:
                payload["count"] = pick.count
            claim = shared.emit(act.CLAIM_CHUNK, payload)
            job = shared.state.jobs[pick.job_id]
            if not self._holds(job, pick.chunk, claim.seq, pick.count):
                # The scheduler picked a chunk our own claim cannot take: a bug.
                shared.note(
                    logging.CRITICAL,
                    f"internal error: our own claim on chunk {pick.chunk} of job {job.id} "
                    "does not hold; not rendering it",
                )
                return
            self._start(job, pick.chunk, claim.seq, pick.count)

    def _back_up(self, measured: Measured) -> None:
        """No unclaimed work for us: render copies of the runs expected to finish last."""
        shared = self.shared
        self._look_again_at = math.inf
        while self._may_start() and len(self.renders) < self.slots:
            state = shared.state
            backup = pick_backup(
                state, shared.node_id, shared.now, self.claims_seen, self.busy(), measured
            )
            if backup is None:
                # A run in flight may still become overdue (a hung renderer): look then.
                wake = overdue_at(state, shared.node_id, self.claims_seen, measured)
                # (measured.now is this node's clock: overdue_at returns a future time)
                self._look_again_at = wake if wake > shared.now else math.inf
                return
            payload: dict[str, Any] = {
                "job_id": backup.job_id,
                "chunk": backup.chunk,
                "claim_seq": backup.claim_seq,
            }
            if backup.count > 1:
                payload["count"] = backup.count
            shared.emit(act.BACKUP_CHUNK, payload)
            job = shared.state.jobs[backup.job_id]
            if job.chunk(backup.chunk).backup_origin != shared.node_id:
                shared.note(
                    logging.CRITICAL,
                    f"internal error: our backup of chunk {backup.chunk} of job {job.id} "
                    "does not hold; not rendering it",
                )
                return
            shared.note(
                logging.INFO,
                f"copying chunk {backup.chunk} (+{backup.count - 1}) of job {job.id} from "
                f"{backup.holder[:8]}: it should finish sooner here",
            )
            self._start(job, backup.chunk, backup.claim_seq, backup.count, backup=True)

    def _hung_why(self, render: Render) -> str:
        took = self.shared.now - render.started
        limit = self.shared.config.hung_limit
        if render.unestimated:
            allowed = limit * FIRST_FRAME_SECONDS
            allows = (
                f"{allowed:.0f} s"
                if allowed < 120
                else f"{allowed / 60:.0f} min"
                if allowed < 7200
                else f"{allowed / 3600:.1f} h"
            )
            return (
                f"the renderer ran {took:.0f} s without finishing a frame of this job "
                f"(--hung-limit {limit:g} allows {allows} for a job's first frame on a node)"
            )
        return f"the renderer ran {took:.0f} s, more than {limit:g} times this node's estimate"

    def _estimate(
        self, job_id: str, renderer: str, work: float, startup: bool = True
    ) -> float | None:
        """Seconds this node should need to render ``work`` frame-units of a job (with
        the renderer's start-up, unless not asked), from its own renders of this very
        job; None before one has ended. Not from the renderer's speed on other scenes:
        a scene a hundred times heavier than the last one is no hang (it was stopped as
        one after ten of the last scene's frame times, three times, and the job failed)."""
        per_frame = self.job_frame_seconds.get(job_id)
        if per_frame is None:
            return None
        speed = self.speeds.get(renderer)
        return (speed[1] if speed is not None and startup else 0.0) + work * per_frame

    def _start(
        self, job: Job, index: int, claim_seq: int, count: int = 1, backup: bool = False
    ) -> None:
        frames = job.run_frames(index, count)
        now = self.shared.now
        limit = self.shared.config.hung_limit
        estimate = self._estimate(job.id, job.renderer, work_of(job.costs, job.frame_start, frames))
        hung_at = math.inf
        if limit > 0:
            seconds = FIRST_FRAME_SECONDS if estimate is None else estimate
            hung_at = now + max(limit * seconds, HUNG_MIN_SECONDS)
        render = Render(
            job.id,
            index,
            claim_seq,
            frames,
            job.tile_of(index),
            count=count,
            renderer=job.renderer,
            started=now,
            backup=backup,
            hung_at=hung_at,
            unestimated=estimate is None,
            frames_per_chunk=job.chunk_size,
            told_at=now,
        )
        render.split_look_at = self._stuck_at(render, job)
        self.renders[(job.id, index)] = render
        self._busy = None
        self.shared.out(
            fx.StartRender(job, index, claim_seq, frames, render.tile, self._sources(job))
        )

    def _sources(self, job: Job) -> tuple[str, ...]:
        """Where to fetch the job's scene files: its submitter, then every other node up."""
        me = self.shared.node_id
        others = sorted(
            n
            for n, p in self.shared.state.peers.items()
            if p.state == UP and n not in (me, job.submitter)
        )
        return tuple(([job.submitter] if job.submitter != me else []) + others)

    # -- events ----------------------------------------------------------------------

    def progress(self, job_id: str, chunk: int) -> None:
        render = self.renders.get((job_id, chunk))
        if render is not None:
            render.frames_finished += 1
            now = self.shared.now
            if render.first_frame_at is None:
                render.first_frame_at = now
            render.last_frame_at = now
            render.frame_at.append(now)
            # A renderer that keeps finishing frames is slow, not hung: it gets the limit
            # again for the next frame.
            job = self.shared.state.jobs.get(job_id)
            # The next frame's work (its cost, when known; a tile is a whole frame's).
            done = render.frames_finished
            nxt = render.frames[done : done + 1] if job is not None and job.tiles == 1 else None
            costs = job_costs(self.shared.state, job) if nxt else ()
            work = work_of(costs, job.frame_start, nxt) if nxt else 1.0
            per_frame = self._estimate(render.job_id, render.renderer, work, startup=False)
            limit = self.shared.config.hung_limit
            if limit > 0:
                if per_frame is None:
                    # This job's first render here: its frames so far tell, and the whole
                    # run gets the limit _start gives a run it can estimate.
                    per_frame = work * (now - render.started) / render.frames_finished
                    whole = (now - render.started) * len(render.frames) / render.frames_finished
                    if render.unestimated:  # (its first frame: no longer FIRST_FRAME_SECONDS)
                        render.unestimated = False
                        render.hung_at = render.started + max(limit * whole, HUNG_MIN_SECONDS)
                hung_at = now + max(limit * per_frame, HUNG_MIN_SECONDS)
                render.hung_at = max(render.hung_at, hung_at)
            if job is not None:
                render.split_look_at = self._stuck_at(render, job, work)
            if render.stop_soon and not render.stop_reason:
                finished = render.frames_finished // render.frames_per_chunk
                if render.told < finished < render.count:  # (all finished: it ends anyway)
                    self._stop(render, RELEASE_REASON_STOPPING)  # tells the finished ones
            self._measure_early(render)
            if job is not None:
                self._split(render, job)
            self._tell_finished(render)
            self.shared.changes += 1

    def _tell_finished(self, render: Render, now: bool = False) -> None:
        """A run that has rendered for FINISHED_TOLD_EVERY since it last told the farm
        emits a DONE of the chunks it has finished since (a DONE counts for any chunks
        not done yet: every version folds it alike). Without it a run of hundreds of
        frames showed nothing until its end, its frames could not be collected, others
        sized their work by a run they could not see progress, and a node dying near
        the end of one lost all of it. The run's last chunk is left to the DONE that
        ends the run."""
        if render.tile is not None or render.stop_reason:
            return
        if not now and self.shared.now - render.told_at < FINISHED_TOLD_EVERY:
            return
        finished = min(render.frames_finished // render.frames_per_chunk, render.count - 1)
        if finished <= render.told:
            return
        self.shared.emit(act.DONE, render.done_ref(finished))
        render.told, render.told_at = finished, self.shared.now

    def _stuck_at(self, render: Render, job: Job, work: float | None = None) -> float:
        """When the frame the render is on counts as stuck: STUCK_FRAME_FACTOR times
        what any frame of ``job`` should take here after it began (its estimate, or the
        job's mean frame's if more: a frame's cost guessed from its neighbours was a
        fourteenth of the truth on a first submission). Not measured yet, a run goes by
        its first frame's time (start-up included: more than any frame's), and before
        that by the slowest node the farm has measured; math.inf when nobody has, with
        no frame left, or for a render that never gives its tail back (_split: a copy,
        a tile, a job of fixed chunks). ``work``: the frame's cost, when the caller has
        it (a run's every frame asks)."""
        done = render.frames_finished
        frame = render.frames[done : done + 1]
        if not frame or render.backup or render.tile is not None:
            return math.inf
        if not job.adaptive or job.tiles != 1:
            return math.inf
        speed = self.speeds.get(job.renderer)
        per = self.job_frame_seconds.get(job.id, speed[0] if speed is not None else None)
        startup = speed[1] if speed is not None else 0.0
        if per is None and render.frame_at:
            per = render.frame_at[0] - render.started
        if per is None:
            slowest = self._slowest_in_farm(job.renderer)
            if slowest is None:
                return math.inf
            per, startup = slowest
        if work is None:
            work = work_of(job_costs(self.shared.state, job), job.frame_start, frame)
        work = max(1.0, work)
        if done:
            return render.frame_at[-1] + max(STUCK_FRAME_FACTOR * work * per, SPLIT_LOOK_EVERY)
        took = startup + work * per
        return render.started + max(STUCK_FRAME_FACTOR * took, SPLIT_LOOK_EVERY)

    def _slowest_in_farm(self, renderer: str) -> tuple[float, float] | None:
        """(s per frame, start-up s) of the slowest node that measured ``renderer``, for
        a node that has not measured itself yet; None when nobody has."""
        known = [
            speed
            for peer in self.shared.state.peers.values()
            if (speed := peer.speed(renderer)) is not None
        ]
        if not known:
            return None
        return max(f for f, _ in known) / 1000.0, max(s for _, s in known) / 1000.0

    def _frame_began(self, render: Render) -> float:
        """When the frame the render is on began: its last frame's end, or the run's
        start after the renderer's start-up."""
        if render.frame_at:
            return render.frame_at[-1]
        return render.started + self.speeds.get(render.renderer, (0.0, 0.0))[1]

    def _split_overdue(self, render: Render) -> None:
        """The frame a render is on is stuck (_stuck_at: a hung renderer): look now
        whether the rest of the run should go back to the farm, not at the frame's end,
        which may never come; then again once it has run half as long again. Idle nodes
        leave such a run alone (its holder gives its tail back: core/scheduler.py
        pick_backup), and waited until the whole run was twice past its estimate, then
        one of them copied all of it (a 400-frame job ended 2.3 times later than the
        working nodes could have ended it: docs/scheduling.md, "Hung renderers")."""
        now = self.shared.now
        render.split_look_at = now + max(
            OVERDUE_LEFT * (now - self._frame_began(render)), SPLIT_LOOK_EVERY
        )
        job = self.shared.state.jobs.get(render.job_id)
        if job is None or job.state != ACTIVE:
            return
        if job_speed(self.shared.state, job, self.shared.node_id) is not None:
            self._split(render, job)
        else:
            # Not measured yet (a fresh farm's part stuck before its first frames were
            # timed): split_keep cannot weigh the run, and the farm, whose slowest node
            # renders a frame in a sixteenth of the time this one has run, renders the
            # rest sooner. The frame it is on is kept. (Copies, tiles and fixed chunks
            # are never looked at: _stuck_at.)
            self._give_back(render, job, render.frames_finished // render.frames_per_chunk + 1)

    def _split(self, render: Render, job: Job) -> None:
        """Give the frames of our run the farm should render sooner than we would back
        (RELEASE_CHUNK of the run's tail), and stop the renderer once the frames kept
        are done (core/scheduler.py split_keep)."""
        if render.stop_reason or render.backup or render.tile is not None:
            return
        shared = self.shared
        if render.frames_finished >= len(render.frames):
            if render.split:
                self._stop(render, STOP_REASON_SPLIT)
            return
        # Looked at most once a SPLIT_LOOK_EVERY: the look walks the run's frames, and a
        # run of 100,000 frames of milliseconds looked at every frame kept its node from
        # answering anything (docs/performance.md).
        if shared.now - render.split_looked_at < SPLIT_LOOK_EVERY:
            return
        render.split_looked_at = shared.now
        measured = Measured(self.job_frame_seconds, shared.now, self.claims_seen)
        keep = split_keep(
            shared.state,
            shared.node_id,
            job,
            render.chunk,
            render.count,
            render.frame_at,
            measured,
            self._frame_began(render),
        )
        self._give_back(render, job, keep)

    def _give_back(self, render: Render, job: Job, keep: int) -> None:
        """Release the chunks of our run after its first ``keep`` to the farm, and stop
        the renderer once those are done."""
        shared = self.shared
        # Still ours: its first chunk not told yet and its last (a claim is won whole and
        # taken away whole; its first chunks may be done: told as it went).
        if keep >= render.count or not (
            self._holds(job, render.chunk + render.told, render.claim_seq)
            and self._holds(job, render.chunk + render.count - 1, render.claim_seq)
        ):
            return
        tail = {
            "job_id": job.id,
            "chunk": render.chunk + keep,
            "claim_seq": render.claim_seq,
        }
        if render.count - keep > 1:
            tail["count"] = render.count - keep
        shared.note(
            logging.INFO,
            f"giving back chunks {render.chunk + keep}-{render.chunk + render.count - 1} of "
            f"job {job.id}: the farm should render them sooner than this node, or another "
            "job waits for it",
        )
        render.count = keep
        render.frames = job.run_frames(render.chunk, keep)
        render.split = True
        self._busy = None  # the tail is no longer ours to render
        shared.emit(act.RELEASE_CHUNK, tail)

    def _measure_early(self, render: Render) -> None:
        """A node's first run of a job (its part of it: core/scheduler.py _first_part)
        measures the node's speed from its first PROBE_FRAMES frames and shares it at
        once when it is off, so the farm sizes its work and the run can give back what
        the farm should render sooner. Not only when the node's speed is not known: a
        node whose speed the farm knows may have become slower (a workstation an artist
        now works on; its part of a farm's second job, sized by its old speed, took it
        28.9 s of a job the others had done in 19) or meet a heavier scene."""
        if render.backup or render.tile is not None or render.frames_finished != PROBE_FRAMES:
            return
        if render.job_id in self.job_frame_seconds or len(render.frames) <= PROBE_FRAMES:
            return
        job = self.shared.state.jobs.get(render.job_id)
        if job is None or not job.adaptive:
            return  # fixed chunks: measured when they end, as they always were
        self._measure(render, PROBE_FRAMES)

    def _measure(self, render: Render, upto: int = 0) -> None:
        """Learn this node's speed from a render that finished (or its first ``upto``
        frames): seconds per frame from the frames after the first (the first also paid
        the start-up), the start-up from the first; share the renderer's speed when the
        farm's record is off."""
        n = upto or len(render.frames)
        first = render.first_frame_at
        last = render.frame_at[n - 1] if len(render.frame_at) >= n else render.last_frame_at
        if first is None or last is None or render.frames_finished < n or n <= render.measured:
            return
        known = self.speeds.get(render.renderer)
        # Seconds per frame-unit: a frame of a job whose costs are known counts as its
        # cost (so speeds measured on heavy and light frames compare).
        job = self.shared.state.jobs.get(render.job_id)
        # (Only costs learned before the job: this job's own frames learned so far are
        # put on one scale by the nodes' speeds, which this measures.)
        costs, start = (job.costs, job.frame_start) if job is not None else ((), 0)
        frames = render.frames[:n]
        first_work = work_of(costs, start, frames[:1]) or 1.0
        at = render.frame_at[:n]
        old_job = self.job_frame_seconds.get(render.job_id)
        if n >= 2 and len(at) == n:
            # The median frame after the first, each by its cost: one heavy frame (an
            # explosion the costs do not know yet) does not make the node look slow.
            per_frame = statistics.median(
                [
                    (at[i] - at[i - 1]) / (work_of(costs, start, frames[i : i + 1]) or 1.0)
                    for i in range(1, n)
                ]
            )
            startup = max(0.0, first - render.started - per_frame * first_work)
        elif n >= 2:
            per_frame = (last - first) / (work_of(costs, start, frames[1:]) or (n - 1))
            startup = max(0.0, first - render.started - per_frame * first_work)
        elif known is not None and old_job is not None:
            # One frame: start-up and frame together, and the job's frames are known: the
            # run tells nothing a start-up's noise would not drown (a start-up measured a
            # second longer made the frame free, and the node 1,000 times as fast).
            render.measured = n
            return
        elif known is not None:
            startup = known[1]
            # (The frame counts as at least half the run: a start-up measured longer on
            # other scenes does not make it free.)
            run = first - render.started
            per_frame = max(run - startup, run / 2, 1e-3) / first_work
        elif render.split:
            # A first run cut to its first frame (another job waited for the slot): its
            # start-up and frame together would be shared as the speed; the next run
            # measures it (a one-frame chunk, --chunk 1, has no other measure).
            render.measured = n
            return
        else:
            per_frame, startup = max(first - render.started, 1e-3) / first_work, 0.0
        per_frame = max(per_frame, 1e-3)
        # A run of few frames weighs less (the median of one or two frames is any heavy
        # frame among them: a 4 s node measured at 31 s from a run of two).
        w = MEASURE_WEIGHT * min(1.0, (n - 1) / (PROBE_FRAMES - 1)) if n >= 2 else MEASURE_WEIGHT
        self.job_frame_seconds[render.job_id] = (
            per_frame if old_job is None else (1 - w) * old_job + w * per_frame
        )
        if known is not None:
            per_frame = (1 - w) * known[0] + w * per_frame
            startup = (
                (1 - MEASURE_WEIGHT) * known[1] + MEASURE_WEIGHT * startup if n >= 2 else known[1]
            )
        render.measured = n
        self._measured_jobs.add(render.job_id)
        self._share_speed(render.renderer, per_frame, startup)

    def _share_speed(
        self, renderer: str, per_frame: float, startup: float, off: float = SPEED_CHANGE_SHARED
    ) -> None:
        """Keep the renderer's speed; share it (NODE_SPEED) when the farm's is ``off``
        by more than that part of it."""
        self.speeds[renderer] = (per_frame, startup)
        shared = self.shared
        me = shared.state.peers.get(shared.node_id)
        told = me.speed(renderer) if me is not None else None
        frame_ms, startup_ms = max(1, round(per_frame * 1000)), round(startup * 1000)
        if (
            told is None
            or abs(frame_ms - told[0]) > off * told[0]
            or abs(startup_ms - told[1]) > max(SPEED_CHANGE_SHARED * told[1], 500)
        ):
            shared.emit(
                act.NODE_SPEED,
                {"renderer": renderer, "frame_ms": frame_ms, "startup_ms": startup_ms},
            )

    def _speed_from_job(self, job: Job) -> None:
        """A job this node rendered frames of is done: its speed for the renderer, from
        the job's frame times as the farm has them, every node's put on one scale where
        their runs meet (core/costs.py node_scales): seconds for the job's median frame
        (as a run's median frame measures it).
        Measured as it rendered, a speed is the cost of the frames rendered: a node that
        rendered the heavy end of a shot looked 8 times slower than it is, and the next
        job's parts (core/scheduler.py _part_bounds) were weighted by that."""
        times = self.shared.state.scenes.get(job.content) if job.content else None
        me = self.shared.node_id
        if times is None or not any(node == me for node, _ in times.frames.values()):
            return
        prior = {
            n: float(s[0])
            for n, p in self.shared.state.peers.items()
            if (s := p.speed(job.renderer)) is not None
        }
        scale = node_scales(times.frames, prior)
        if scale.get(me, 0) <= 0:
            return
        typical = statistics.median(ms / scale[node] for node, ms in times.frames.values())
        per_frame = scale[me] * typical / 1000.0
        startup = self.speeds.get(job.renderer, (0.0, 0.0))[1]
        self._share_speed(job.renderer, per_frame, startup, SPEED_FROM_JOB_SHARED)

    def ended(self, job_id: str, chunk: int, ok: bool, error: str, no_space: bool) -> None:
        render = self.renders.pop((job_id, chunk), None)
        self._busy = None
        if render is None:
            return
        if not ok and no_space:  # not the scene's fault: give the chunk back, claim no more
            render.stop_reason = render.stop_reason or RELEASE_REASON_NO_SPACE
            self.disk_trouble(f"a render failed for want of disk space: {error}")
        shared = self.shared
        shared.touch()  # a slot is free
        if render.backup:
            # A copy of another node's claim: its DONE counts if it is first; a failure
            # or a stop is the copy's own business (the original still holds the claim).
            if ok:
                shared.emit(act.DONE, render.done_ref())
                if not render.stop_reason:
                    self._measure(render)
            elif not render.stop_reason:
                shared.note(
                    logging.WARNING, f"our copy of chunk {chunk} of job {job_id} failed: {error}"
                )
            return
        if ok:
            # Even if we had asked it to stop: it finished first, and a DONE counts
            # while the chunk is not done yet (no rendered frame is wasted).
            shared.emit(act.DONE, render.done_ref())
            if not render.stop_reason:
                self._measure(render)
        elif render.stop_reason == STOP_REASON_SPLIT and render.frames_finished >= len(
            render.frames
        ):
            # Stopped past the frames it kept: they are rendered, and count.
            shared.emit(act.DONE, render.done_ref())
            self._measure(render)
        elif render.stop_reason == RELEASE_REASON_HUNG:
            job = shared.state.jobs.get(job_id)
            if job is not None and any(
                self._holds(job, i, render.claim_seq) for i in render.chunks
            ):
                error = f"{self._hung_why(render)}: stopped as hung"
                if render.unestimated:
                    error += (
                        "; if a frame of this scene takes longer, start the nodes with a "
                        "higher --hung-limit (0: never)"
                    )
                shared.note(logging.WARNING, f"chunk {chunk} of job {job_id} failed: {error}")
                shared.emit(act.CHUNK_FAILED, {**render.claim_ref(), "error": error})
        elif render.stop_reason:
            # While it was dying, its claim may have won again (a re-fold): look over
            # our claims once more, or nobody would render that chunk.
            self._late_inserts = -1
            job = shared.state.jobs.get(job_id)
            seq = render.claim_seq
            if job is not None and (
                (
                    render.stop_reason in RELEASE_REASONS
                    and any(self._holds(job, i, seq) for i in render.chunks)
                )
                # Stopped because the job failed: a retry resets failed chunks, not ones
                # claimed by a live node, so a claim kept here would hold the job forever.
                or (
                    job.state == JOB_FAILED
                    and any(self._claimed_by_me(job, i, seq) for i in render.chunks)
                )
            ):
                shared.emit(act.RELEASE_CHUNK, render.claim_ref())
        else:
            shared.note(logging.WARNING, f"chunk {chunk} of job {job_id} failed: {error}")
            shared.emit(act.CHUNK_FAILED, {**render.claim_ref(), "error": error})

    def disk_trouble(self, problem: str) -> None:
        """The data folder cannot be written (problem), or can again (""): claim nothing
        while it cannot; what runs finishes or fails on its own."""
        if problem != self.disk_problem:
            self.disk_problem = problem
            if problem:
                self.shared.note(logging.ERROR, f"not taking new chunks: {problem}")
            else:
                self.shared.note(logging.INFO, "the disk has room again: taking chunks again")
            self.shared.touch()

    def pause(self) -> None:
        """This machine stops rendering now: renders in flight stop and their chunks go
        back to the farm (the user wants the machine back, not in a minute)."""
        self.paused = True
        for key in sorted(self.renders):
            render = self.renders[key]
            if not render.stop_reason:
                self._stop(render, RELEASE_REASON_PAUSED)
        self.shared.touch()

    def resume(self) -> None:
        self.paused = False
        self.shared.touch()

    def finish_soon(self) -> None:
        """A graceful stop: a run of several chunks stops once its next chunk is
        finished (the finished ones told, the rest given back) instead of rendering to
        its end, which can be an hour away; a single chunk renders to its end."""
        for render in self.renders.values():
            if render.count > 1 and render.tile is None and not render.stop_reason:
                render.stop_soon = True

    def abort(self) -> None:
        """Emergency stop: kill the renderers and give their chunks back to the pool."""
        for key in sorted(self.renders):
            render = self.renders[key]
            if not render.stop_reason:
                self._stop(render, RELEASE_REASON_STOPPING)


def _runs_named(actions: list[act.Action] | None) -> dict[str, list[tuple[int, int]]] | None:
    """The runs of chunks these actions name, by job: (first, end); None when one of
    them is not about a run of chunks."""
    if actions is None:
        return None
    named: dict[str, list[tuple[int, int]]] = {}
    for action in actions:
        if action.type in NO_CLAIM_CHANGES:
            continue
        if action.type not in CHUNK_ACTIONS:
            return None
        first = action.payload["chunk"]
        count = action.payload.get("count", 1)
        named.setdefault(action.payload["job_id"], []).append((first, first + count))
    return named
