"""Renders: what the node machine's StartRender and StopRender mean on a
real machine.

Each chunk is one renderer process (so it uses its own core, and a cancel or a
lost claim can kill it), run in the job's work folder after the job's scene
files are fetched (blobs) and unpacked there, once per job and node. Its
stdout tells frame progress; its stderr goes to the chunk's log file. What
happened is reported back to the machine as RenderProgress and RenderEnded.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import subprocess
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

import trio

from peerfarm.core.state import Job
from peerfarm.machine import effects as fx
from peerfarm.machine import events as ev
from peerfarm.renderers.base import Renderer, output_pattern, renderer_environment
from peerfarm.runtime.blobs import BlobError, BlobStore
from peerfarm.runtime.counters import RuntimeCounters
from peerfarm.runtime.data_dir import DataDir
from peerfarm.runtime.keep_awake import KeepAwake
from peerfarm.runtime.renderer_processes import RendererProcesses
from peerfarm.scenes import PackageError, ScenePackage, unpack_to

log = logging.getLogger(__name__)

ERROR_TAIL_CHARS = 2000
# A line of a renderer's output that names its error: POV-Ray's "Parse Error: Cannot
# open include file", Blender's "Error: Cannot read file", a wrapper's "error: ...".
_ERROR_LINE = re.compile(r"^.*\berror\b", re.IGNORECASE | re.MULTILINE)

Report = Callable[[object], None]
FetchBlob = Callable[[str, int, list[str]], Awaitable[None]]  # sha, size, sources


class Renders:
    def __init__(
        self,
        data_dir: DataDir,
        plugins: dict[str, Renderer],
        blobs: BlobStore,
        fetch_blob: FetchBlob,
        report: Report,
        disk_is_full: Callable[[], bool],
        counters: RuntimeCounters | None = None,
    ) -> None:
        self.counters = counters or RuntimeCounters()  # renderer seconds, for metrics
        self.data_dir = data_dir
        self.plugins = plugins
        self.blobs = blobs
        self.fetch_blob = fetch_blob
        self.report = report
        self.disk_is_full = disk_is_full
        self._scopes: dict[tuple[str, int], trio.CancelScope] = {}
        self.processes = RendererProcesses(data_dir.root)
        self.keep_awake = KeepAwake()
        self._job_locks: dict[str, trio.Lock] = {}  # one scene download per job at a time
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        # Renderers that outlived an earlier run of this node (it cannot be told how
        # they would end): gone before this node renders anything.
        killed = await trio.to_thread.run_sync(self.processes.kill_leftovers)
        if killed:
            log.warning("stopped %d renderer process(es) left from before: %s", len(killed), killed)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await self.processes.close_spares()

    def start_spares(self, offered: Iterable[str], slots: int) -> None:
        """Keep a spare renderer process per slot, the wrappers of the `offered`
        renderers imported, so that no chunk waits for a Python to start
        (RendererProcesses.start_spares)."""
        modules = [
            module
            for name in offered
            if name in self.plugins and (module := self.plugins[name].wrapper_module)
        ]
        if modules:
            # Its HOME and TMPDIR until a chunk gives it the chunk's: a folder only this
            # node writes (Python reads nothing from there: PYTHONNOUSERSITE).
            env = renderer_environment(self.data_dir.root)
            self.processes.start_spares(modules, slots, env)

    def start(self, effect: fx.StartRender) -> None:
        assert self._nursery is not None
        scope = trio.CancelScope()
        self._scopes[(effect.job.id, effect.chunk)] = scope
        self._nursery.start_soon(self._render, effect, scope)

    def stop(self, effect: fx.StopRender) -> None:
        scope = self._scopes.get((effect.job_id, effect.chunk))
        if scope is not None:
            scope.cancel()

    async def _render(self, effect: fx.StartRender, scope: trio.CancelScope) -> None:
        job, chunk = effect.job, effect.chunk
        ok, error = False, "stopped"
        try:
            with scope:
                ok, error = await self._run_renderer(effect)
        except Exception as exc:  # the renderer could not even run: a failure, not a crash
            log.exception("chunk %d of job %s: renderer did not run", chunk, job.id)
            ok, error = False, f"could not run the renderer: {exc!r}"
        finally:
            del self._scopes[(job.id, chunk)]
            if scope.cancelled_caught:
                ok = False
            # A renderer that failed on a full disk is not the scene's fault.
            no_space = not ok and not scope.cancelled_caught and self.disk_is_full()
            self.report(ev.RenderEnded(job.id, chunk, ok, error, no_space))

    async def _materialize(self, job: Job, sources: tuple[str, ...]) -> None:
        """Fetch the job's scene files (blobs) this node lacks and unpack them into
        the job's work folder, once per job and node. Paths came over the network:
        unpack_to applies every rule of peerfarm.scenes before writing anything."""
        if not job.files:
            return
        work_dir = self.data_dir.work_dir(job.id)
        async with self._job_locks.setdefault(job.id, trio.Lock()):
            if work_dir.exists():
                return  # unpack_to renames a complete folder into place: it is whole
            for _, sha, size in job.files:
                if not await trio.to_thread.run_sync(self.blobs.has, sha):
                    await self.fetch_blob(sha, size, list(sources))
            # The blobs' files, not their bytes: unpack_to copies them in blocks.
            files = {path: self.blobs.path(sha) for path, sha, _ in job.files}
            package = ScenePackage(files=files, main=job.main, renderer=job.renderer)
            await trio.to_thread.run_sync(unpack_to, package, work_dir)

    async def _run_renderer(self, effect: fx.StartRender) -> tuple[bool, str]:
        """Run one renderer process for the whole chunk; (ok, error text)."""
        job, chunk, frames, tile = effect.job, effect.chunk, effect.frames, effect.tile
        plugin = self.plugins[job.renderer]
        data_dir = self.data_dir
        work_dir = data_dir.work_dir(job.id)
        log_file = data_dir.chunk_log_path(job.id, chunk)
        out_dir = data_dir.frames_dir(job.id)
        try:
            await self._materialize(job, effect.sources)
        except (BlobError, PackageError) as exc:
            return False, f"could not get the scene files: {exc}"
        await trio.to_thread.run_sync(_prepare, plugin, job, work_dir, log_file, out_dir)
        if tile is None:
            pattern = output_pattern(out_dir, job.name, job.padding, job.format)
            if getattr(plugin, "in_process", False):  # the bench's null renderer: no process
                # In a thread, as a renderer process would write beside the node (the
                # files' opens wait on the disk); each frame told as it is written, as a
                # renderer's output tells it: the node measures its speed from them.
                token = trio.lowlevel.current_trio_token()
                progress = ev.RenderProgress(job.id, chunk)

                def tell() -> None:  # in the node's loop, not in a task: nothing may escape
                    try:
                        self.report(progress)
                    except Exception:
                        log.exception("chunk %d of job %s: progress not handled", chunk, job.id)

                def written(frame: int) -> None:  # the thread goes on at once
                    token.run_sync_soon(tell)

                await trio.to_thread.run_sync(
                    plugin.render_in_process,  # type: ignore[attr-defined]
                    frames,
                    pattern,
                    written,
                )
                return True, ""
            cmd = plugin.chunk_command(job, frames, work_dir, pattern)
        else:
            # name_0001.tile3.png, as Job.tile_file_name has it
            ext = f"tile{tile}.{job.format}"
            pattern = output_pattern(out_dir, job.name, job.padding, ext)
            cmd = plugin.chunk_command(job, frames, work_dir, pattern, tile=(tile, job.tiles))
        temp_dir = work_dir / ".home"
        temp_dir.mkdir(exist_ok=True)
        with (
            open(log_file, "ab") as stderr,
            self.counters.renderer_running(job.renderer),
            self.keep_awake.while_rendering(),  # best effort: no sleep while rendering
        ):
            async with trio.open_nursery() as nursery:
                # The log keeps every earlier try of the chunk too.
                written_before = os.fstat(stderr.fileno()).st_size
                proc = await nursery.start(
                    functools.partial(
                        self.processes.run,
                        cmd,
                        cwd=work_dir,  # the renderer works in the job's own folder
                        env=renderer_environment(temp_dir),
                        stdout=subprocess.PIPE,
                        stderr=stderr,
                    )
                )
                buffered = b""
                async for data in proc.stdout:
                    buffered += data
                    *lines, buffered = buffered.split(b"\n")
                    for line in lines:
                        if plugin.frame_finished(line.decode("utf-8", errors="replace")):
                            self.report(ev.RenderProgress(job.id, chunk))
            code = proc.returncode
            this_run = os.fstat(stderr.fileno()).st_size - written_before
        if code == 0:
            missing = [f for f in frames if not data_dir.frame_path(job, f, tile).exists()]
            if not missing:
                return True, ""
            return False, f"the renderer exited without writing frames {missing}"
        said = await trio.to_thread.run_sync(_what_it_said, log_file, this_run)
        return False, f"renderer exited with code {code}: {said}"


def _prepare(plugin: Renderer, job: Job, work_dir: Path, log_file: Path, out_dir: Path) -> None:
    work_dir.mkdir(parents=True, exist_ok=True)
    plugin.prepare(job, work_dir)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)


def _what_it_said(path: Path, length: int) -> str:
    """What a failed render's error tells (ERROR_TAIL_CHARS at most): its output from
    the first line naming an error when that fits, else the output's end. The job's
    error began with POV-Ray's banner ("McElhiney  Douglas Muir ...") and showed its
    "Parse Error" only at the end; the whole output stays in the chunk's log."""
    try:
        with open(path, "rb") as log_file:
            log_file.seek(max(0, log_file.seek(0, 2) - max(length, 0)))
            text = log_file.read().decode("utf-8", errors="replace").strip()
    except OSError:
        text = ""
    first = _ERROR_LINE.search(text)
    if first is not None and len(text) - first.start() <= ERROR_TAIL_CHARS:
        text = text[first.start() :]
    else:
        text = text[-ERROR_TAIL_CHARS:]
    return text or f"(no renderer output in {path}: is its disk full?)"
