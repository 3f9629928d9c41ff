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
from peerfarm.core.scheduler import pick_chunk
from peerfarm.core.state import ACTIVE, CLAIMED, JOB_FAILED, PENDING, UP, Job
from peerfarm.machine import effects as fx
from peerfarm.machine.shared import Shared

# Renders stopped for these reasons give their chunk back (RELEASE_CHUNK) so another
# node takes it at once; other stops (job over, claim lost) have nothing to give back.
# A re-fold longer than this has every chunk looked over (cheaper than naming them).
ADOPTION_LOOKS_AT_MOST = 1_000
CHUNK_ACTIONS = frozenset(
    (act.CLAIM_CHUNK, act.DONE, act.RELEASE_CHUNK, act.CHUNK_FAILED, act.CHUNK_LOST)
)

RELEASE_REASON_STOPPING = "node stopping"
RELEASE_REASON_PAUSED = "this machine's worker paused"
RELEASE_REASON_NO_SPACE = "this node's disk is full"
RELEASE_REASONS = (RELEASE_REASON_STOPPING, RELEASE_REASON_PAUSED, RELEASE_REASON_NO_SPACE)


@dataclass
class Render:
    job_id: str
    chunk: int
    claim_seq: int
    frames: range
    tile: int | None  # the tile of frames.start this chunk renders; None: whole frames
    frames_finished: int = 0
    stop_reason: str = ""  # set once StopRender went out; the slot stays taken until it ends

    def claim_ref(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "chunk": self.chunk, "claim_seq": self.claim_seq}


class Worker:
    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self.renders: dict[tuple[str, int], Render] = {}
        self.paused = False  # this machine's user paused it (or is at the keyboard)
        self.disk_problem = ""  # why this node cannot write its data folder now
        # Orphaned claims can only appear at start (the log from disk) and when a late
        # action re-folds the log: only then is every chunk looked over (see react).
        self._late_inserts = -1

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
        }

    def _may_start(self) -> bool:
        return not self.paused and not self.shared.stopping and not self.disk_problem

    # -- what happens on every change -------------------------------------------------

    def react(self) -> None:
        self._stop_lost_claims()
        log = self.shared.log
        late = log.late_inserts
        if late != self._late_inserts:
            look_over_all = self._late_inserts == -1  # at start, or after a stop
            self._late_inserts = late
            refolded = log.take_refolded(ADOPTION_LOOKS_AT_MOST)
            self._adopt_orphan_claims(None if look_over_all else _chunks_named(refolded))
        self._fill_slots()

    def _holds(self, job: Job, index: int, claim_seq: int) -> bool:
        return job.state == ACTIVE and self._claimed_by_me(job, index, claim_seq)

    def _claimed_by_me(self, job: Job, index: int, claim_seq: int) -> bool:
        chunk = job.chunk(index)
        return (
            chunk.state == CLAIMED
            and chunk.claim_origin == self.shared.node_id
            and chunk.claim_seq == claim_seq
        )

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
            chunk = job.chunk(render.chunk)
            if job.state != ACTIVE:
                reason = f"job {job.state}"
            elif chunk.state == CLAIMED and chunk.claim_origin != me:
                reason = f"claim lost to {chunk.claim_origin[:8]}"
            elif chunk.state in (CLAIMED, PENDING):
                continue  # ours, or released and still free
            else:
                reason = f"chunk {chunk.state}"
            self.shared.note(
                logging.INFO,
                f"stopping chunk {render.chunk} of job {render.job_id}: {reason}; "
                "taking other work",
            )
            self._stop(render, reason)

    def _stop(self, render: Render, reason: str) -> None:
        render.stop_reason = reason
        self.shared.out(fx.StopRender(render.job_id, render.chunk, reason))

    def _adopt_orphan_claims(self, only: set[tuple[str, int]] | None = None) -> None:
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
        # ``only``: the chunks the re-folded actions name (a flipped claim is among
        # them); None: every chunk (at start; or a re-fold that was long, or held
        # actions other than a chunk's, such as a PEER_DOWN or a job's end).
        if only is None:
            places = [(j, i) for j in sorted(jobs) for i in sorted(jobs[j].chunks)]
        else:
            places = sorted((j, i) for j, i in only if j in jobs and i in jobs[j].chunks)
        for job_id, index in places:
            job = jobs[job_id]
            if job.state != ACTIVE:
                continue
            chunk = job.chunks[index]
            if chunk.state != CLAIMED or chunk.claim_origin != me:
                continue
            if (job_id, index) in self.renders:
                continue
            if self._may_start() and not job.paused and len(self.renders) < self.slots:
                shared.note(
                    logging.INFO,
                    f"rendering chunk {index} of job {job_id}: we hold its claim "
                    f"#{chunk.claim_seq}",
                )
                self._start(job, index, chunk.claim_seq)
            else:
                shared.note(
                    logging.INFO, f"giving back chunk {index} of job {job_id}: not rendering it"
                )
                payload = {"job_id": job_id, "chunk": index, "claim_seq": chunk.claim_seq}
                shared.emit(act.RELEASE_CHUNK, payload)

    def _fill_slots(self) -> None:
        shared = self.shared
        while self._may_start() and len(self.renders) < self.slots:
            pick = pick_chunk(shared.state, shared.node_id, busy=self.renders)
            if pick is None:
                return
            job_id, index = pick
            claim = shared.emit(act.CLAIM_CHUNK, {"job_id": job_id, "chunk": index})
            job = shared.state.jobs[job_id]
            if not self._holds(job, index, claim.seq):
                # The scheduler picked a chunk our own claim cannot take: a bug.
                shared.note(
                    logging.CRITICAL,
                    f"internal error: our own claim on chunk {index} of job {job_id} "
                    "does not hold; not rendering it",
                )
                return
            self._start(job, index, claim.seq)

    def _start(self, job: Job, index: int, claim_seq: int) -> None:
        render = Render(job.id, index, claim_seq, job.frames_of(index), job.tile_of(index))
        self.renders[(job.id, index)] = render
        self.shared.out(
            fx.StartRender(job, index, claim_seq, render.frames, render.tile, self._sources(job))
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
            self.shared.changes += 1

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
        elif render.stop_reason:
            # While it was dying, its claim may have won again (a re-fold): look over
            # our claims once more, or nobody would render that chunk.
            self._late_inserts = -1
            job = shared.state.jobs.get(job_id)
            if job is not None and (
                (
                    render.stop_reason in RELEASE_REASONS
                    and self._holds(job, chunk, render.claim_seq)
                )
                # Stopped because the job failed: a retry resets failed chunks, not ones
                # claimed by a live node, so a claim kept here would hold the job forever.
                or (job.state == JOB_FAILED and self._claimed_by_me(job, chunk, render.claim_seq))
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


def _chunks_named(actions: list[act.Action] | None) -> set[tuple[str, int]] | None:
    """The chunks these actions name; None when one of them is not about one chunk."""
    if actions is None:
        return None
    named = set()
    for action in actions:
        if action.type not in CHUNK_ACTIONS:
            return None
        named.add((action.payload["job_id"], action.payload["chunk"]))
    return named
