"""A node's renderer processes: started off the terminal at low priority, stopped as a
whole tree, never outliving the node, and killed by the node's next start if they
somehow did.

    processes = RendererProcesses(data_dir)
    killed = processes.kill_leftovers()  # at start, before the first render (blocking)
    ...
    proc = await nursery.start(partial(processes.run, command, cwd=..., env=...,
                                       stdout=subprocess.PIPE, stderr=log_file))

`run` is `trio.run_process(command, check=False, ...)` with these differences:

- POSIX: the renderer runs under a guard (peerfarm.runtime.renderer_guard) in a session
  of its own: Ctrl+C in the node's terminal does not reach it (only the node decides
  when it stops), what renders runs at niceness 10, and it dies with the node process
  even on SIGKILL. The Process handed to task_status is the guard's: its stdout is the
  renderer's, its exit status the renderer's (SIGKILL when the renderer died by a
  signal). Stopping it (cancelling) sends SIGTERM to the whole process group, and
  SIGKILL after STOP_GRACE seconds.
- Windows: the renderer runs in a process group of its own (Ctrl+C does not reach it),
  with no console window, at BELOW_NORMAL priority, in a job object that kills its
  whole tree when the node process ends or the renderer is stopped.
- Every renderer started is recorded (pid and start time) in DATA_DIR/renderer-
  processes.json until it has ended. `kill_leftovers` kills those of an earlier run
  that are still running: only a process whose start time is the recorded one, so a
  process that got a recorded pid since is never touched.
"""

from __future__ import annotations

import ctypes
import functools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, cast

import trio

from peerfarm.child_processes import (
    PROCESS_QUERY_LIMITED_INFORMATION,
    PROCESS_TERMINATE,
    RENDERER_NICENESS,
    KillOnCloseJob,
    close_handle,
    kernel32,
    open_process,
    renderer_options,
)
from peerfarm.runtime.renderer_guard import (
    factory_command,
    forks_wrappers,
    guarded_command,
    send_command,
    wrapper_module,
)

log = logging.getLogger(__name__)

RECORD_FILE = "renderer-processes.json"
# Seconds a stopped renderer gets to end on SIGTERM before SIGKILL. A stopped render's
# frames are never used (job cancelled or replaced by a new revision, claim lost,
# emergency stop), so there is nothing to save: POV-Ray takes 0.4-1.4 s to act on
# SIGTERM, and a stale chunk must stop within a second (benchmarks/bench_rerender.py).
STOP_GRACE = 0.5
FACTORY_ANSWER_S = 10.0  # a spare factory that has not forked by then is stuck
FACTORY_WORD_S = 2.0  # how long a spare killed without telling waits for its factory's word

Output = int | IO[Any] | None


class RendererProcesses:
    """The renderer processes of one node (one data folder)."""

    def __init__(self, data_dir: Path) -> None:
        self.record_path = Path(data_dir) / RECORD_FILE
        self._running: dict[int, str] = {}  # pid (POSIX: the guard's) -> its start time
        self._jobs: dict[int, KillOnCloseJob] = {}  # Windows: pid -> the renderer's job
        self._lock = threading.Lock()
        # POSIX: guards started ahead, waiting for their chunk's command (see "spare
        # guards" below): [(the guard, our end of its stdin socket)]. Any wrapper's chunk
        # can take any of them; they import the wrapper modules in `_preload` ahead.
        self._spares: list[tuple[SpareProcess, socket.socket]] = []
        self._factory: _SpareFactory | None = None
        self._preload: list[str] = []  # the wrappers offered (start_spares) or run so far
        self._spares_wanted = 0  # spares kept waiting even with nothing rendering
        self._running_wrappers = 0  # renders of wrappers running
        self._topping_up = False
        self._closed = False

    def kill_leftovers(self) -> list[int]:
        """Kill the renderers an earlier run of this node started and left running (POSIX:
        only possible if their guard was stopped or killed too; Windows: if one was not
        in its job object); the pids killed. Call it at start, before the first `run`;
        it blocks (use a thread).

        A recorded pid counts only if its process started when the recorded one did:
        a pid taken by another process since is left alone. POSIX kills the recorded
        guard's whole process group (the renderer and everything it started).
        """
        with self._lock:
            records = self._read()
            killed = [pid for pid, started in records.items() if _kill_if_same(pid, started)]
            self._running.clear()
            self._write()
        return killed

    async def run(
        self,
        command: Sequence[str],
        *,
        cwd: str | os.PathLike[str],
        env: Mapping[str, str],
        stdout: Output = None,
        stderr: Output = None,
        task_status: trio.TaskStatus[trio.Process] = trio.TASK_STATUS_IGNORED,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run one renderer to its end, as `trio.run_process(command, check=False)`
        would (stdin is /dev/null). With `nursery.start`, task_status gets the
        trio.Process: read its stdout while it runs. Cancelling stops the renderer's
        whole process tree (see the module's doc).
        """
        if task_status is trio.TASK_STATUS_IGNORED and subprocess.PIPE in (stdout, stderr):
            raise ValueError("a renderer's output pipe is only readable with nursery.start")
        module = None if sys.platform == "win32" else wrapper_module(command)
        if module is not None and stdout == subprocess.PIPE and _fileno(stderr) is not None:
            if module not in self._preload:
                self._preload.append(module)
            self._running_wrappers += 1
            try:
                taken = self._take_spare(command, cwd, env, stderr)
                # Behind this render, off its way: a spare for the next chunk.
                trio.lowlevel.spawn_system_task(self._top_up, dict(env))
                if taken is not None:
                    return await self._run_spare(*taken, command, task_status)
                return await self._run(command, cwd, env, stdout, stderr, task_status)
            finally:
                self._running_wrappers -= 1
        return await self._run(command, cwd, env, stdout, stderr, task_status)

    async def _run(
        self,
        command: Sequence[str],
        cwd: str | os.PathLike[str],
        env: Mapping[str, str],
        stdout: Output,
        stderr: Output,
        task_status: trio.TaskStatus[trio.Process],
    ) -> subprocess.CompletedProcess[bytes]:
        options: dict[str, Any] = renderer_options()
        if sys.platform == "win32":
            spawn = list(command)
        else:
            watch_fd = node_end_fd()
            spawn = guarded_command(command, watch_fd, RENDERER_NICENESS)
            options["pass_fds"] = (watch_fd,)
        result: subprocess.CompletedProcess[bytes] | None = None

        async def run_process(task_status: trio.TaskStatus[trio.Process]) -> None:
            nonlocal result
            result = await trio.run_process(
                spawn,
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                check=False,
                deliver_cancel=self._stop,
                task_status=cast(
                    "trio.TaskStatus[trio.Process]", _Started(self._put_in_job, task_status)
                ),
                **options,
            )

        process: trio.Process | None = None
        try:
            async with trio.open_nursery() as nursery:
                process = await nursery.start(run_process)
                await trio.to_thread.run_sync(self._record, process.pid)
                task_status.started(process)
        finally:
            if process is not None:
                self._ended(process.pid)
        assert result is not None
        return result

    # --- spare guards (POSIX) ------------------------------------------------------------
    #
    # Starting a guard and its Python wrapper costs a chunk about 0.1 s of CPU before
    # povray or blender even starts: an interpreter, the wrapper's imports (several
    # times that in wall time on a busy machine). So spare guards wait, the wrappers'
    # modules imported: one per slot from the node's start (`start_spares`), and one
    # behind each running render of a wrapper; the next chunk hands one its command,
    # folder, environment and stderr over a Unix socket and starts at once. Spares are
    # forked by one spare factory per node (renderer_guard.py), which has imported it
    # all once: a spare costs a fork, not an interpreter. A spare is a guard like any
    # other: in its own session (what it renders at low priority), recorded until it
    # ends, dying with the node (its stdin reaches end of file too, and it exits).

    def start_spares(self, modules: Sequence[str], count: int, env: Mapping[str, str]) -> None:
        """From now on keep at least `count` spare guards waiting, the wrapper `modules`
        imported ahead (a node's offered renderers, one per slot): the first chunks
        start no Python either. Started in the background; nothing on
        Windows or in a frozen build (no wrapper runs in a fork there)."""
        if not forks_wrappers():
            return
        for module in modules:
            if module not in self._preload:
                self._preload.append(module)
        self._spares_wanted = max(0, count)
        trio.lowlevel.spawn_system_task(self._top_up, dict(env))

    def _take_spare(
        self,
        command: Sequence[str],
        cwd: str | os.PathLike[str],
        env: Mapping[str, str],
        stderr: Output,
    ) -> tuple[SpareProcess, socket.socket] | None:
        """A waiting spare guard, told what to run, and our end of its socket (it tells
        its exit status there); None: none could be."""
        spares = self._spares
        while spares:
            process, sock = spares.pop(0)
            try:
                if process.returncode is None:
                    stderr_fd = _fileno(stderr)
                    assert stderr_fd is not None
                    send_command(sock, command, os.fspath(cwd), dict(env), stderr_fd)
                    sock.setblocking(False)
                    return process, sock
            except OSError as exc:
                log.info("spare renderer guard %d could not be used: %s", process.pid, exc)
            sock.close()
            self._forget(process)
        return None

    async def _top_up(self, env: dict[str, str]) -> None:
        """Start spares until there are `start_spares`' count, and one per render of a
        wrapper running (a system task: it must not raise)."""
        if self._topping_up:
            return  # another top-up is at it
        self._topping_up = True
        try:
            with trio.CancelScope(shield=True):  # a started spare is always kept track of
                while not self._closed and len(self._spares) < max(
                    self._spares_wanted, self._running_wrappers
                ):
                    spare, sock = await self._start_spare(env)
                    if self._closed:  # closed while it started: it will never run
                        sock.close()
                        self._forget(spare)
                        break
                    self._spares.append((spare, sock))
        except Exception as exc:  # no spare: chunks start the slower way, and work
            log.warning("cannot start a spare renderer guard: %s", exc)
        finally:
            self._topping_up = False

    async def _start_spare(self, env: Mapping[str, str]) -> tuple[SpareProcess, socket.socket]:
        if sys.platform == "win32":  # never asked for: `run` takes no spares on Windows
            raise RuntimeError("spare renderer guards are POSIX only")
        if self._factory is None or self._factory.gone:
            self._factory = await _SpareFactory.start(self._preload, env, self._ended)
            await trio.to_thread.run_sync(self._record, self._factory.process.pid)
        spare, ours = await self._factory.fork()
        await trio.to_thread.run_sync(self._record, spare.pid)
        return spare, ours

    async def _run_spare(
        self,
        process: SpareProcess,
        sock: socket.socket,
        command: Sequence[str],
        task_status: trio.TaskStatus[trio.Process],
    ) -> subprocess.CompletedProcess[bytes]:
        """`_run` for a spare guard told its command: wait for it (its exit status as
        it tells it on `sock`, or as the factory tells it: killed, it cannot; killed and
        the factory silent, `_hear_status` counts it as killed), stop its tree when
        cancelled (as trio.run_process's deliver_cancel does)."""
        try:
            task_status.started(cast("trio.Process", process))  # as much of one as is used
            # Not in a nursery: a Cancelled must reach the `except` below as itself.
            trio.lowlevel.spawn_system_task(_hear_status, sock, process)
            try:
                returncode = await process.wait()
            except trio.Cancelled:
                with trio.CancelScope(shield=True):
                    await self._stop(process)
                    await process.wait()
                raise
        finally:
            trio.lowlevel.notify_closing(sock)
            sock.close()
            self._ended(process.pid)
        return subprocess.CompletedProcess(list(command), returncode)

    def _forget(self, process: SpareProcess) -> None:
        """A spare that will not run: end it and its record."""
        if sys.platform != "win32" and process.returncode is None:
            _signal_group(process, signal.SIGKILL)
        self._ended(process.pid)

    async def close_spares(self) -> None:
        """End the waiting spares (they see end of file on their stdin and exit)."""
        self._closed = True
        spares, self._spares = self._spares, []
        for _, sock in spares:
            sock.close()
        for process, _ in spares:
            with trio.move_on_after(STOP_GRACE):
                await process.wait()
            self._forget(process)
        if self._factory is not None:
            await self._factory.close()
            self._ended(self._factory.process.pid)

    def _put_in_job(self, process: trio.Process) -> None:
        """Windows: into a job object at once, before the renderer starts much."""
        if sys.platform != "win32":
            return
        try:
            job = KillOnCloseJob()
            job.assign(process.pid)
        except OSError as exc:
            log.warning("renderer %d is in no job object (it may outlive us): %s", process.pid, exc)
        else:
            self._jobs[process.pid] = job

    def _record(self, pid: int) -> None:
        """Note a renderer just started in the record file (blocking: macOS runs ps)."""
        started = process_start_time(pid)
        if started is None:
            return  # already gone
        with self._lock:
            self._running[pid] = started
            self._write()

    def _ended(self, pid: int) -> None:
        job = self._jobs.pop(pid, None)
        if job is not None:
            job.close()  # kills what the renderer left running
        with self._lock:
            if self._running.pop(pid, None) is not None:
                self._write()

    async def _stop(self, process: trio.Process | SpareProcess) -> None:
        """trio.run_process's deliver_cancel: stop the renderer's whole tree."""
        if sys.platform == "win32":
            job = self._jobs.get(process.pid)
            try:
                if job is None:
                    raise OSError("no job object")
                job.terminate()
            except OSError:
                if isinstance(process, trio.Process):  # (spares are POSIX only)
                    process.kill()
            return
        _signal_group(process, signal.SIGTERM)
        with trio.move_on_after(STOP_GRACE):
            await process.wait()
            return
        log.info("renderer %d did not stop within %.1f s: killing it", process.pid, STOP_GRACE)
        _signal_group(process, signal.SIGKILL)

    def _read(self) -> dict[int, str]:
        try:
            data = json.loads(self.record_path.read_text("utf-8"))
            return {int(item["pid"]): str(item["started"]) for item in data["renderers"]}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.warning("ignoring %s: %s", self.record_path, exc)
            return {}

    def _write(self) -> None:
        # No fsync: the file matters after a crash of the node, not of the machine (a
        # power cut ends the renderers too). Small: written in the event loop.
        try:
            if not self._running:
                self.record_path.unlink(missing_ok=True)
                return
            items = [{"pid": pid, "started": started} for pid, started in self._running.items()]
            partial = self.record_path.with_name(self.record_path.name + ".partial")
            partial.write_text(json.dumps({"renderers": items}), "utf-8")
            os.replace(partial, self.record_path)
        except OSError as exc:
            log.warning("cannot record the running renderers in %s: %s", self.record_path, exc)


class SpareProcess:
    """A spare guard, forked by the node's spare factory: what of a trio.Process the
    worker uses (pid, stdout, returncode, wait). Its exit status comes from the
    factory, which reaped it."""

    def __init__(self, pid: int, stdout: trio.abc.ReceiveStream) -> None:
        self.pid = pid
        self.stdout = stdout
        self.returncode: int | None = None
        self._ended = trio.Event()

    def ended(self, returncode: int) -> None:
        if self.returncode is None:
            self.returncode = returncode
            self._ended.set()

    async def wait(self) -> int:
        await self._ended.wait()
        assert self.returncode is not None
        return self.returncode


async def _hear_status(sock: socket.socket, process: SpareProcess) -> None:
    """The exit status a spare guard tells before it exits (renderer_guard.py); a
    system task, until end of file or until `_run_spare` closes the socket."""
    data = b""
    try:
        while True:
            await trio.lowlevel.wait_readable(sock)
            try:
                part = sock.recv(16)
            except BlockingIOError:
                continue
            if not part:
                break
            data += part
    except (OSError, trio.ClosedResourceError):
        return  # closed: the chunk ended otherwise
    if data.isdigit():
        process.ended(int(data))
        return
    # End of file without a status: the spare and its wrapper are gone (only they hold
    # the socket's other end), killed. Their factory reaps them and tells the status;
    # one that cannot (stopped with SIGSTOP, stuck) must not keep the slot taken.
    with trio.move_on_after(FACTORY_WORD_S):
        await process.wait()
        return
    log.warning(
        "renderer %d ended without an exit status and its spare factory did not tell it "
        "within %.0f s: counted as killed",
        process.pid,
        FACTORY_WORD_S,
    )
    if sys.platform != "win32":  # (spares are POSIX only)
        process.ended(-signal.SIGKILL)


class _SpareFactory:
    """The node's spare factory (renderer_guard.py `--spares`): a guard process with
    the wrappers imported, forking spare guards on request and telling their ends."""

    def __init__(
        self, process: trio.Process, control: socket.socket, ended: Callable[[int], None]
    ) -> None:
        self.process = process
        self.control = control  # non-blocking; only this object reads and writes it
        self._ended = ended  # told the pid of each spare that ended
        self._spares: dict[int, SpareProcess] = {}
        self._forked: list[trio.MemorySendChannel[int]] = []  # waiting for "P pid", in order
        self._buffer = b""
        self.gone = False

    @classmethod
    async def start(
        cls, modules: Sequence[str], env: Mapping[str, str], ended: Callable[[int], None]
    ) -> _SpareFactory:
        if sys.platform == "win32":
            raise RuntimeError("spare renderer guards are POSIX only")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            watch_fd = node_end_fd()
            process = await trio.lowlevel.open_process(
                factory_command(modules, watch_fd, RENDERER_NICENESS),
                cwd=tempfile.gettempdir(),
                # As a renderer's: a spare's HOME and TMPDIR are set per chunk (send_command).
                env=dict(env),
                stdin=theirs.fileno(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                pass_fds=(watch_fd,),
                **renderer_options(),
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        factory = cls(process, ours, ended)
        trio.lowlevel.spawn_system_task(factory._listen)
        return factory

    async def fork(self) -> tuple[SpareProcess, socket.socket]:
        """A new spare guard, and our end of its stdin socket."""
        if sys.platform == "win32":
            raise RuntimeError("spare renderer guards are POSIX only")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        read_end, write_end = os.pipe()
        send, receive = trio.open_memory_channel[int](1)
        try:
            self._forked.append(send)
            await trio.lowlevel.wait_writable(self.control)
            socket.send_fds(self.control, [b"S"], [theirs.fileno(), write_end])
            with trio.fail_after(FACTORY_ANSWER_S):
                pid = await receive.receive()
        except BaseException:
            ours.close()
            os.close(read_end)
            raise
        finally:
            theirs.close()
            os.close(write_end)
        spare = SpareProcess(pid, trio.lowlevel.FdStream(read_end))
        self._spares[pid] = spare
        return spare, ours

    async def _listen(self) -> None:
        """Read the factory's answers (a system task: it must not raise)."""
        try:
            while True:
                await trio.lowlevel.wait_readable(self.control)
                try:
                    data = self.control.recv(4096)
                except BlockingIOError:
                    continue
                if not data:
                    break
                self._buffer += data
                *lines, self._buffer = self._buffer.split(b"\n")
                for line in lines:
                    self._heard(line.split())
        except trio.ClosedResourceError:
            pass  # the node closed it, stopping (said at every stop, it told nothing)
        except (OSError, ValueError) as exc:
            log.info("spare factory %d: %s", self.process.pid, exc)
        finally:
            self._gone()
            with trio.CancelScope(shield=True), trio.move_on_after(STOP_GRACE):
                await self.process.wait()  # reaped, so its record can go
                self._ended(self.process.pid)

    def _heard(self, words: list[bytes]) -> None:
        if words[:1] == [b"P"] and self._forked:
            self._forked.pop(0).send_nowait(int(words[1]))
        elif words[:1] == [b"E"]:
            spare = self._spares.pop(int(words[1]), None)
            if spare is not None:
                spare.ended(int(words[2]))
                self._ended(spare.pid)

    def _gone(self) -> None:
        """The factory ended (closed, or killed): its spares' ends can no longer be
        told, so none may go on; a chunk in one fails and is rendered again."""
        self.gone = True
        if sys.platform == "win32":
            return  # never started there
        for send in self._forked:
            send.close()
        self._forked.clear()
        for spare in self._spares.values():
            if spare.returncode is None:
                _signal_group(spare, signal.SIGKILL)
                spare.ended(-signal.SIGKILL)
            self._ended(spare.pid)
        self._spares.clear()

    async def close(self) -> None:
        """End it (it exits at end of file on its stdin); its spares are ended first."""
        trio.lowlevel.notify_closing(self.control)
        self.control.close()
        with trio.move_on_after(STOP_GRACE):
            await self.process.wait()
        if sys.platform != "win32" and self.process.returncode is None:
            _signal_group(self.process, signal.SIGKILL)


class _Started:
    """A task_status that calls `first(process)`, then passes the process on."""

    def __init__(self, first: Any, then: trio.TaskStatus[trio.Process]) -> None:
        self._first = first
        self._then = then

    def started(self, process: trio.Process) -> None:
        self._first(process)
        self._then.started(process)


def _fileno(output: Output) -> int | None:
    """The file descriptor of a stderr given as a file (or a descriptor), else None."""
    if isinstance(output, int):
        return output if output >= 0 else None
    try:
        return output.fileno() if output is not None else None
    except (AttributeError, OSError, ValueError):
        return None


def _signal_group(process: trio.Process | SpareProcess, signum: int) -> None:
    """Signal the guard's process group: the renderer and all it started (POSIX)."""
    if sys.platform == "win32" or process.returncode is not None:
        return  # reaped: its pid, the group's id, may belong to someone else by now
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


@functools.cache
def node_end_fd() -> int:
    """The read end of a pipe whose write end only this process holds (both are closed
    in every program it starts, but for pass_fds): end of file on it means this process
    has ended. Renderer guards watch it."""
    read_end, write_end = os.pipe()  # not inheritable: closed on exec
    _NODE_END_PIPE.extend((read_end, write_end))  # open until this process ends
    return read_end


_NODE_END_PIPE: list[int] = []


# --- knowing a process again -----------------------------------------------------------------


def process_start_time(pid: int) -> str | None:
    """When process `pid` started, as an opaque text that differs for any other
    process that has or will have this pid; None when there is no such process."""
    if sys.platform == "win32":
        return _windows_creation_time(pid)
    if sys.platform.startswith("linux"):
        return _linux_start_time(pid)
    return _ps_start_time(pid)


@functools.cache
def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "?"


def _linux_start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the command name (which may hold spaces and parentheses): state is
    # field 3, starttime (clock ticks after boot) field 22.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None  # dead; only not reaped yet
    return f"{_boot_id()}:{fields[19]}"


def _ps_start_time(pid: int) -> str | None:
    """macOS and other POSIX systems: ps's start date, to the second."""
    try:
        result = subprocess.run(
            ["ps", "-o", "lstart=", "-p", str(pid)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=10,
            env={**os.environ, "LC_ALL": "C"},
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def _windows_creation_time(pid: int) -> str | None:
    try:
        handle = open_process(pid, PROCESS_QUERY_LIMITED_INFORMATION)
    except OSError:
        return None
    try:
        return _creation_time(handle)
    finally:
        close_handle(handle)


def _creation_time(handle: int) -> str | None:
    """GetProcessTimes' creation time (FILETIME, 100 ns units) as text."""
    times = [ctypes.c_uint64() for _ in range(4)]  # creation, exit, kernel, user
    if not kernel32().GetProcessTimes(handle, *(ctypes.byref(t) for t in times)):
        return None
    return str(times[0].value)


def _kill_if_same(pid: int, started: str) -> bool:
    """Kill the process `pid` (POSIX: its process group) if it started at `started`."""
    if pid <= 1 or pid == os.getpid():
        return False
    if sys.platform == "win32":
        try:
            handle = open_process(pid, PROCESS_QUERY_LIMITED_INFORMATION | PROCESS_TERMINATE)
        except OSError:
            return False
        try:  # while we hold the handle, the pid stays this process's
            if _creation_time(handle) != started:
                return False
            return bool(kernel32().TerminateProcess(handle, 1))
        finally:
            close_handle(handle)
    if process_start_time(pid) != started:
        return False
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)  # a guard: it leads its renderer's group
        else:
            os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return False
    log.warning("killed renderer process %d, left running by an earlier run of this node", pid)
    return True
