"""The worker: claims chunks and renders them in ``slots`` parallel renderer processes.

A renderer run is a separate process (so it uses its own core, and a cancel
or a lost claim can kill it). The worker claims a chunk by emitting
CLAIM_CHUNK and renders only while the folded state says its claim holds: if a
concurrent claim that sorts earlier arrives, the render is stopped and the
worker takes other work.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from peerfarm.core import actions as act
from peerfarm.core.scheduler import pick_chunk
from peerfarm.core.state import ACTIVE, CLAIMED, PENDING, UP, Job
from peerfarm.renderers.base import Renderer, output_pattern, renderer_environment
from peerfarm.runtime.blobs import BlobError, fetch_blob
from peerfarm.scenes import PackageError, ScenePackage, unpack_to

if TYPE_CHECKING:
    from peerfarm.runtime.node import Node

log = logging.getLogger(__name__)

ERROR_TAIL_CHARS = 2000
# Renders stopped for these reasons give their chunk back (RELEASE_CHUNK) so another
# node takes it at once; other stops (job over, claim lost) have nothing to give back.
RELEASE_REASON_STOPPING = "node stopping"
RELEASE_REASON_PAUSED = "this machine's worker paused"
RELEASE_REASONS = (RELEASE_REASON_STOPPING, RELEASE_REASON_PAUSED)


@dataclass
class Render:
    job_id: str
    chunk: int
    claim_seq: int
    frames: range
    tile: int | None  # the tile of frames.start this chunk renders; None: whole frames
    cancel_scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    frames_finished: int = 0
    stop_reason: str = ""


class Worker:
    def __init__(self, node: Node, slots: int) -> None:
        self.node = node
        self.slots = slots
        self.renders: dict[tuple[str, int], Render] = {}
        self._claiming = True
        self.paused = False  # this machine's user paused it (or is at the keyboard)
        self._job_locks: dict[str, trio.Lock] = {}  # one scene download per job at a time

    def status(self) -> dict[str, Any]:
        return {
            "slots": self.slots,
            "paused": self.paused,
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

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                self._stop_lost_claims()
                self._adopt_orphan_claims(nursery)
                self._fill_slots(nursery)
                await self.node.wait_for_change()

    def _adopt_orphan_claims(self, nursery: trio.Nursery) -> None:
        """Chunks the state says this node holds but no renderer of ours works on:
        render them if a slot is free, else give them back.

        They come from a restart (the renderers died with the process) and from
        claim outcomes that flip when late actions re-fold the log: a claim we
        lost (and stopped rendering) can win again when the claim that beat it
        turns out void. Nobody else would ever render such a chunk.
        """
        me = self.node.node_id
        for job in list(self.node.state.jobs.values()):
            if job.state != ACTIVE:
                continue
            for index, chunk in list(job.chunks.items()):
                if chunk.state != CLAIMED or chunk.claim_origin != me:
                    continue
                if (job.id, index) in self.renders:
                    continue
                if self._may_start() and not job.paused and len(self.renders) < self.slots:
                    log.info("rendering chunk %d of job %s: we hold its claim", index, job.id)
                    self._start(nursery, job, index, chunk.claim_seq)
                else:
                    log.info("giving back chunk %d of job %s: not rendering it", index, job.id)
                    payload = {"job_id": job.id, "chunk": index, "claim_seq": chunk.claim_seq}
                    self.node.emit(act.RELEASE_CHUNK, payload)

    def pause(self) -> None:
        """This machine stops rendering now: renders in flight stop and their chunks go
        back to the farm (the user wants the machine back, not in a minute)."""
        self.paused = True
        for render in self.renders.values():
            if not render.cancel_scope.cancel_called:
                render.stop_reason = RELEASE_REASON_PAUSED
                render.cancel_scope.cancel()
        self.node._notify_change()

    def resume(self) -> None:
        self.paused = False
        self.node._notify_change()  # wake the loop: fill the slots

    def _may_start(self) -> bool:
        return self._claiming and not self.paused and not self.node.stopping

    async def finish_in_flight(self) -> None:
        """Graceful stop: claim nothing more and wait for the renders in flight."""
        self._claiming = False
        while self.renders:
            await self.node.wait_for_change(0.1)

    async def abort(self) -> None:
        """Emergency stop: kill the renderers and give their chunks back to the pool."""
        self._claiming = False
        for render in list(self.renders.values()):
            render.stop_reason = RELEASE_REASON_STOPPING
            render.cancel_scope.cancel()
        with trio.move_on_after(2):
            while self.renders:
                await self.node.wait_for_change(0.05)

    def _fill_slots(self, nursery: trio.Nursery) -> None:
        while self._may_start() and len(self.renders) < self.slots:
            pick = pick_chunk(self.node.state, self.node.node_id, busy=self.renders)
            if pick is None:
                return
            job_id, index = pick
            claim = self.node.emit(act.CLAIM_CHUNK, {"job_id": job_id, "chunk": index})
            job = self.node.state.jobs[job_id]
            if not self._holds(job, index, claim.seq):
                continue  # cannot happen locally, but never render without the claim
            self._start(nursery, job, index, claim.seq)

    def _start(self, nursery: trio.Nursery, job: Job, index: int, claim_seq: int) -> None:
        render = Render(job.id, index, claim_seq, job.frames_of(index), job.tile_of(index))
        self.renders[(job.id, index)] = render
        nursery.start_soon(self._render, render)

    def _holds(self, job: Job, index: int, claim_seq: int) -> bool:
        chunk = job.chunk(index)
        return (
            job.state == ACTIVE
            and chunk.state == CLAIMED
            and chunk.claim_origin == self.node.node_id
            and chunk.claim_seq == claim_seq
        )

    def _stop_lost_claims(self) -> None:
        """Stop renders nobody needs from us: the job ended, the chunk is done, or
        another node holds it (it won a claim race, or took the chunk over after we
        were declared down). A chunk released from us and not yet taken keeps
        rendering: its DONE still counts."""
        for render in self.renders.values():
            if render.cancel_scope.cancel_called:
                continue
            job = self.node.state.jobs[render.job_id]
            chunk = job.chunk(render.chunk)
            if job.state != ACTIVE:
                render.stop_reason = f"job {job.state}"
            elif chunk.state == CLAIMED and chunk.claim_origin != self.node.node_id:
                render.stop_reason = f"claim lost to {chunk.claim_origin[:8]}"
            elif chunk.state in (CLAIMED, PENDING):
                continue  # ours, or released and still free
            else:
                render.stop_reason = f"chunk {chunk.state}"
            log.info(
                "stopping chunk %d of job %s: %s; taking other work",
                render.chunk,
                render.job_id,
                render.stop_reason,
            )
            render.cancel_scope.cancel()

    async def _render(self, render: Render) -> None:
        node = self.node
        job = node.state.jobs[render.job_id]
        try:
            try:
                with render.cancel_scope:
                    ok, error = await self._run_renderer(job, render)
            except Exception as exc:  # the renderer could not even run: a failure, not a crash
                log.exception("chunk %d of job %s: renderer did not run", render.chunk, job.id)
                ok, error = False, f"could not run the renderer: {exc!r}"
            if render.cancel_scope.cancelled_caught:
                if render.stop_reason in RELEASE_REASONS and self._holds(
                    node.state.jobs[job.id], render.chunk, render.claim_seq
                ):
                    node.emit(act.RELEASE_CHUNK, self._claim_ref(render))
                return
            if ok:
                node.emit(act.DONE, self._claim_ref(render))
            else:
                log.warning("chunk %d of job %s failed: %s", render.chunk, job.id, error)
                node.emit(act.CHUNK_FAILED, {**self._claim_ref(render), "error": error})
        finally:
            del self.renders[(render.job_id, render.chunk)]
            node._notify_change()  # a slot is free

    async def _materialize(self, job: Job, work_dir: Path) -> None:
        """Fetch the job's scene files (blobs) this node lacks and unpack them into
        the job's work folder, once per job and node. Paths came over the network:
        unpack_to applies every rule of peerfarm.scenes before writing anything."""
        if not job.files:
            return
        async with self._job_locks.setdefault(job.id, trio.Lock()):
            if work_dir.exists():
                return  # unpack_to renames a complete folder into place: it is whole
            node = self.node
            me = node.node_id
            others = sorted(
                n
                for n, p in node.state.peers.items()
                if p.state == UP and n not in (me, job.submitter)
            )
            sources = ([job.submitter] if job.submitter != me else []) + others
            for _, sha, size in job.files:
                if not await trio.to_thread.run_sync(node.blobs.has, sha):
                    await fetch_blob(node, sha, size, sources)
            # The blobs' files, not their bytes: unpack_to copies them in blocks.
            files = {path: node.blobs.path(sha) for path, sha, _ in job.files}
            package = ScenePackage(files=files, main=job.main, renderer=job.renderer)
            await trio.to_thread.run_sync(unpack_to, package, work_dir)

    def _claim_ref(self, render: Render) -> dict[str, Any]:
        return {"job_id": render.job_id, "chunk": render.chunk, "claim_seq": render.claim_seq}

    async def _run_renderer(self, job: Job, render: Render) -> tuple[bool, str]:
        """Run one renderer process for the whole chunk; (ok, error text)."""
        node = self.node
        plugin = node.plugins[job.renderer]
        work_dir = node.data_dir / "work" / job.id
        log_file = node.chunk_log_path(job.id, render.chunk)
        out_dir = node.data_dir / "frames" / job.id
        try:
            await self._materialize(job, work_dir)
        except (BlobError, PackageError) as exc:
            return False, f"could not get the scene files: {exc}"
        await trio.to_thread.run_sync(_prepare, plugin, job, work_dir, log_file, out_dir)
        frames = render.frames
        if render.tile is None:
            pattern = output_pattern(out_dir, job.name, job.padding, job.format)
            cmd = plugin.chunk_command(job, frames, work_dir, pattern)
        else:
            # name_0001.tile3.png, as Job.tile_file_name has it
            ext = f"tile{render.tile}.{job.format}"
            pattern = output_pattern(out_dir, job.name, job.padding, ext)
            tile = (render.tile, job.tiles)
            cmd = plugin.chunk_command(job, frames, work_dir, pattern, tile=tile)
        temp_dir = work_dir / ".home"
        temp_dir.mkdir(exist_ok=True)
        with open(log_file, "ab") as stderr:
            async with trio.open_nursery() as nursery:
                proc = await nursery.start(
                    lambda task_status: trio.run_process(
                        cmd,
                        cwd=work_dir,  # the renderer works in the job's own folder
                        env=renderer_environment(temp_dir),
                        stdout=subprocess.PIPE,
                        stderr=stderr,
                        check=False,
                        task_status=task_status,
                        **_LOW_PRIORITY,
                    )
                )
                _lower_priority(proc.pid)
                buffered = b""
                async for data in proc.stdout:
                    buffered += data
                    *lines, buffered = buffered.split(b"\n")
                    for line in lines:
                        if plugin.frame_finished(line.decode("utf-8", errors="replace")):
                            render.frames_finished += 1
                            node._notify_change()
            code = proc.returncode
        if code == 0:
            missing = [f for f in frames if not node.frame_path(job, f, render.tile).exists()]
            if not missing:
                return True, ""
            return False, f"the renderer exited without writing frames {missing}"
        tail = await trio.to_thread.run_sync(_tail, log_file)
        return False, f"renderer exited with code {code}: {tail}"


# Renderers run at a lower CPU priority than everything else on the machine: a node is
# often someone's workstation (or the desktop app itself), and its window and its user
# come first; on a dedicated render node nothing else wants the CPU, so nothing is lost.
RENDERER_NICENESS = 10
_LOW_PRIORITY = (
    {"creationflags": subprocess.BELOW_NORMAL_PRIORITY_CLASS} if sys.platform == "win32" else {}
)


def _lower_priority(pid: int) -> None:
    """POSIX: renice the renderer just started (Windows: set at creation, above)."""
    if hasattr(os, "setpriority"):
        try:
            os.setpriority(os.PRIO_PROCESS, pid, RENDERER_NICENESS)
        except OSError:
            pass  # already exited, or not allowed: it renders at normal priority


def _prepare(plugin: Renderer, job: Job, work_dir: Path, log_file: Path, out_dir: Path) -> None:
    work_dir.mkdir(parents=True, exist_ok=True)
    plugin.prepare(job, work_dir)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)


def _tail(path: Path) -> str:
    try:
        return path.read_text("utf-8", errors="replace")[-ERROR_TAIL_CHARS:].strip()
    except OSError:
        return "(no renderer output)"
