"""The worker's rules: which chunks this node claims, renders, stops and gives back.

A node claims a chunk by emitting CLAIM_CHUNK and renders only while the
folded state says its claim holds: if a concurrent claim that sorts earlier
arrives, the render is stopped and the node takes other work. The renders
themselves are processes (or, in the simulator, timers) a driver runs on the
StartRender / StopRender effects.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from peerfarm.core import actions as act
from peerfarm.core.scheduler import Measured, pick_run
from peerfarm.core.state import ACTIVE, CHUNK_DONE, CLAIMED, PENDING, UP, Job
from peerfarm.machine import effects as fx
from peerfarm.machine.shared import Shared

# Renders stopped for these reasons give their chunk back (RELEASE_CHUNK) so another
# node takes it at once; other stops (job over, claim lost) have nothing to give back.
RELEASE_REASON_STOPPING = "node stopping"
RELEASE_REASON_PAUSED = "this machine's worker paused"
RELEASE_REASON_NO_SPACE = "this node's disk is full"
RELEASE_REASONS = (RELEASE_REASON_STOPPING, RELEASE_REASON_PAUSED, RELEASE_REASON_NO_SPACE)


# A measured speed is shared again (NODE_SPEED) once it is this far off what the farm has.
SPEED_CHANGE_SHARED = 0.2
MEASURE_WEIGHT = 0.5  # weight of the newest render in the running averages


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
    stop_reason: str = ""  # set once StopRender went out; the slot stays taken until it ends

    @property
    def chunks(self) -> range:
        return range(self.chunk, self.chunk + self.count)

    def claim_ref(self) -> dict[str, Any]:
        ref = {"job_id": self.job_id, "chunk": self.chunk, "claim_seq": self.claim_seq}
        if self.count > 1:
            ref["count"] = self.count
        return ref


class Worker:
    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self.renders: dict[tuple[str, int], Render] = {}
        self.paused = False  # this machine's user paused it (or is at the keyboard)
        self.disk_problem = ""  # why this node cannot write its data folder now
        # Orphaned claims can only appear at start (the log from disk) and when a late
        # action re-folds the log: only then is every chunk looked over (see react).
        self._late_inserts = -1
        # What this node measured of its own renders (core/scheduler.py reads it):
        # seconds per frame per job, and per renderer, with the renderer's start-up.
        self.job_frame_seconds: dict[str, float] = {}
        self.speeds: dict[str, tuple[float, float]] = {}  # renderer -> (s/frame, start-up s)

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

    def react(self) -> None:
        self._stop_lost_claims()
        late = self.shared.log.late_inserts
        if late != self._late_inserts:
            self._late_inserts = late
            self._adopt_orphan_claims()
        self._fill_slots()

    def _holds(self, job: Job, index: int, claim_seq: int, count: int = 1) -> bool:
        """Our claim ``claim_seq`` holds every chunk of the run."""
        me = self.shared.node_id
        return job.state == ACTIVE and all(
            (chunk := job.chunk(i)).state == CLAIMED
            and chunk.claim_origin == me
            and chunk.claim_seq == claim_seq
            for i in range(index, index + count)
        )

    def busy(self) -> set[tuple[str, int]]:
        """Every chunk our renders work on."""
        return {(r.job_id, i) for r in self.renders.values() for i in r.chunks}

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
            chunks = [job.chunk(i) for i in render.chunks]
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
                continue  # ours, or released and still free, or partly done elsewhere
            self.shared.note(
                logging.INFO,
                f"stopping chunk {render.chunk} of job {render.job_id}: {reason}; "
                "taking other work",
            )
            self._stop(render, reason)

    def _stop(self, render: Render, reason: str) -> None:
        render.stop_reason = reason
        self.shared.out(fx.StopRender(render.job_id, render.chunk, reason))

    def _adopt_orphan_claims(self) -> None:
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
        for job_id in sorted(jobs):
            job = jobs[job_id]
            if job.state != ACTIVE:
                continue
            # Our claimed chunks, as the runs our claims took (consecutive, one claim seq).
            runs: list[list[int]] = []
            for index in sorted(job.chunks):
                chunk = job.chunks[index]
                if chunk.state != CLAIMED or chunk.claim_origin != me:
                    continue
                if (job_id, index) in busy:
                    continue
                last = runs[-1] if runs else None
                if (
                    last is not None
                    and last[-1] == index - 1
                    and job.chunks[last[0]].claim_seq == chunk.claim_seq
                ):
                    last.append(index)
                else:
                    runs.append([index])
            for run in runs:
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
            measured = Measured(self.job_frame_seconds)
            pick = pick_run(shared.state, shared.node_id, busy=self.busy(), measured=measured)
            if pick is None:
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

    def _start(self, job: Job, index: int, claim_seq: int, count: int = 1) -> None:
        frames = job.run_frames(index, count)
        render = Render(
            job.id,
            index,
            claim_seq,
            frames,
            job.tile_of(index),
            count=count,
            renderer=job.renderer,
            started=self.shared.now,
        )
        self.renders[(job.id, index)] = render
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
            if render.first_frame_at is None:
                render.first_frame_at = self.shared.now
            render.last_frame_at = self.shared.now
            self.shared.changes += 1

    def _measure(self, render: Render) -> None:
        """Learn this node's speed from a render that finished: seconds per frame from
        the frames after the first (the first also paid the start-up), the start-up
        from the first; share the renderer's speed when the farm's record is off."""
        n = len(render.frames)
        first, last = render.first_frame_at, render.last_frame_at
        if first is None or last is None or render.frames_finished < n:
            return
        known = self.speeds.get(render.renderer)
        if n >= 2:
            per_frame = (last - first) / (n - 1)
            startup = max(0.0, first - render.started - per_frame)
        elif known is not None:
            startup = known[1]
            per_frame = max(first - render.started - startup, 1e-3)
        else:
            per_frame, startup = max(first - render.started, 1e-3), 0.0
        per_frame = max(per_frame, 1e-3)
        w = MEASURE_WEIGHT
        old_job = self.job_frame_seconds.get(render.job_id)
        self.job_frame_seconds[render.job_id] = (
            per_frame if old_job is None else (1 - w) * old_job + w * per_frame
        )
        if known is not None:
            per_frame = (1 - w) * known[0] + w * per_frame
            startup = (1 - w) * known[1] + w * startup if n >= 2 else known[1]
        self.speeds[render.renderer] = (per_frame, startup)
        shared = self.shared
        me = shared.state.peers.get(shared.node_id)
        told = me.speed(render.renderer) if me is not None else None
        frame_ms, startup_ms = max(1, round(per_frame * 1000)), round(startup * 1000)
        if (
            told is None
            or abs(frame_ms - told[0]) > SPEED_CHANGE_SHARED * told[0]
            or abs(startup_ms - told[1]) > max(SPEED_CHANGE_SHARED * told[1], 500)
        ):
            shared.emit(
                act.NODE_SPEED,
                {"renderer": render.renderer, "frame_ms": frame_ms, "startup_ms": startup_ms},
            )

    def ended(self, job_id: str, chunk: int, ok: bool, error: str, no_space: bool) -> None:
        render = self.renders.pop((job_id, chunk), None)
        if render is None:
            return
        if not ok and no_space:  # not the scene's fault: give the chunk back, claim no more
            render.stop_reason = render.stop_reason or RELEASE_REASON_NO_SPACE
            self.disk_trouble(f"a render failed for want of disk space: {error}")
        shared = self.shared
        shared.touch()  # a slot is free
        if ok:
            # Even if we had asked it to stop: it finished first, and a DONE counts
            # while the chunk is not done yet (no rendered frame is wasted).
            shared.emit(act.DONE, render.claim_ref())
            if not render.stop_reason:
                self._measure(render)
        elif render.stop_reason:
            # While it was dying, its claim may have won again (a re-fold): look over
            # our claims once more, or nobody would render that chunk.
            self._late_inserts = -1
            job = shared.state.jobs.get(job_id)
            if (
                job is not None
                and render.stop_reason in RELEASE_REASONS
                and any(self._holds(job, i, render.claim_seq) for i in render.chunks)
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

    def abort(self) -> None:
        """Emergency stop: kill the renderers and give their chunks back to the pool."""
        for key in sorted(self.renders):
            render = self.renders[key]
            if not render.stop_reason:
                self._stop(render, RELEASE_REASON_STOPPING)
