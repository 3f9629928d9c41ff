"""How peerfarm starts the programs it runs: no console window, and children that die
with the process that started them.

Three needs, each with what the platform offers (docs/renderer-processes.md says why):

- **No console window** (Windows): a packaged app has no console, so every program
  it starts would get a window of its own that flashes up. `no_window_options()`
  gives the keyword arguments (CREATE_NO_WINDOW) for `subprocess.run`, `Popen` and
  `trio.run_process`; elsewhere it is empty.
- **A child that dies with this process**, even when this process is killed
  outright (SIGKILL, TerminateProcess), so a renderer wrapper's povray or blender
  never outlives the wrapper: `start_tied_child`. Linux: PR_SET_PDEATHSIG in the
  child. Windows: the child goes into a job object that kills its processes when
  its last handle closes, and only this process holds that handle. macOS has
  neither: there the renderer guard (peerfarm.runtime.renderer_guard), which runs
  every renderer in a process group of its own, ends the group when the renderer
  ends by a signal or when the node goes away.
- **Renderers off the terminal, at low priority**: `renderer_options()`.

Everything here imports on every platform; the Win32 parts are only called on Windows.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

# Renderers run at a lower CPU priority than everything else on the machine: a node is
# often someone's workstation (or the desktop app itself), and its window and its user
# come first; on a dedicated render node nothing else wants the CPU, so nothing is lost.
RENDERER_NICENESS = 10

# Process creation flags (WinBase.h); subprocess defines them on Windows only.
CREATE_NEW_PROCESS_GROUP = 0x00000200
BELOW_NORMAL_PRIORITY_CLASS = 0x00004000
CREATE_NO_WINDOW = 0x08000000

_PR_SET_PDEATHSIG = 1


def no_window_options() -> dict[str, Any]:
    """Keyword arguments for `subprocess.run`/`Popen`/`trio.run_process` that keep a
    console window from flashing up on Windows (a packaged app has no console for the
    program to share); empty elsewhere."""
    if sys.platform == "win32":
        return {"creationflags": CREATE_NO_WINDOW}
    return {}


def renderer_options() -> dict[str, Any]:
    """Keyword arguments for starting a renderer (POSIX: the renderer guard): out of the
    terminal's reach, so Ctrl+C stops the node only and the node decides when its
    renderers stop (its graceful stop lets them finish), and below normal priority.

    POSIX: a session of its own (start_new_session: no Ctrl+C, Ctrl+Z or hang-up from
    the terminal; its process group is one unit to signal). The niceness is the
    guard's to set, before it starts the renderer. Windows: a process group of its
    own (CTRL_C_EVENT does not reach it), no console window, BELOW_NORMAL priority
    (which its children inherit).
    """
    if sys.platform == "win32":
        flags = CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW | BELOW_NORMAL_PRIORITY_CLASS
        return {"creationflags": flags}
    return {"start_new_session": True}


def lower_priority(niceness: int = RENDERER_NICENESS) -> None:
    """POSIX: lower this process's CPU priority (its children inherit it). Best effort."""
    if sys.platform != "win32" and hasattr(os, "setpriority"):
        try:
            os.setpriority(os.PRIO_PROCESS, 0, niceness)
        except OSError:
            pass  # not allowed: it renders at normal priority


def die_with_parent(then: Callable[[], None] | None = None) -> Callable[[], None] | None:
    """A `preexec_fn` that makes the child die (SIGKILL) when this process dies, on
    Linux; then runs `then` (e.g. a sandbox's own preexec). Elsewhere: `then` alone.

    Linux sends the signal when the *thread* that forked the child ends, not the
    process: only call Popen with this from a thread that lives as long as the process
    (a wrapper's main thread). Never from trio.run_process, which forks in a worker
    thread that exits after 10 s idle and would kill the child with it.
    """
    if not sys.platform.startswith("linux"):
        return then
    parent = os.getpid()
    libc = ctypes.CDLL(None, use_errno=True)
    prctl = libc.prctl  # looked up here: the child only calls it

    def apply() -> None:
        # Between fork and exec: system calls only, and exit on failure.
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # we died before the line above took effect
            os._exit(1)
        if then is not None:
            then()

    return apply


def start_tied_child(
    command: Sequence[str],
    *,
    preexec: Callable[[], None] | None = None,
    niceness: int | None = None,
    **options: Any,
) -> subprocess.Popen[bytes]:
    """`subprocess.Popen(command, **options)` for a child that dies with this process,
    however this process ends (a renderer wrapper's povray or blender).

    Linux: PR_SET_PDEATHSIG (`die_with_parent`; call this from the main thread), then
    `preexec`. Windows: no console window, and the child goes into a job object that
    kills it and everything it starts once this process ends (`KillOnCloseJob`; a
    process started since Windows 8 can be in nested jobs). macOS: nothing here can
    do it; the renderer guard ends the renderer's process group instead.

    POSIX: with `niceness`, the child takes that niceness before it executes the
    program, so the program never runs a moment at this process's priority (a
    renderer wrapper at the node's priority starts povray at RENDERER_NICENESS).
    Windows ignores it: there the whole renderer tree is below normal priority.
    """
    if niceness is not None and sys.platform != "win32":
        preexec = _lowered_first(niceness, preexec)
    if sys.platform == "win32":
        flags = options.pop("creationflags", 0) | CREATE_NO_WINDOW
        process = subprocess.Popen(command, creationflags=flags, **options)
        job = None
        try:
            job = KillOnCloseJob()
            job.assign(process.pid)
        except OSError as exc:
            if job is not None:
                job.close()  # Windows 7 has no nested jobs; the node's job holds it anyway
            print(
                f"peerfarm: note: process {process.pid} is in no job of ours: {exc}",
                file=sys.stderr,
            )
        else:
            _TIED_JOBS.append(job)  # open until this process ends, then the job kills
        return process
    return subprocess.Popen(command, preexec_fn=die_with_parent(preexec), **options)


def _lowered_first(niceness: int, then: Callable[[], None] | None) -> Callable[[], None]:
    """A `preexec_fn` that sets the niceness, then runs `then` (system calls only)."""

    def apply() -> None:
        lower_priority(niceness)
        if then is not None:
            then()

    return apply


# --- Windows job objects (winnt.h, jobapi2.h, processthreadsapi.h) -------------------------

JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE = 0x00002000
JOB_OBJECT_EXTENDED_LIMIT_INFORMATION_CLASS = 9  # JobObjectExtendedLimitInformation
PROCESS_TERMINATE = 0x0001
PROCESS_SET_QUOTA = 0x0100
PROCESS_QUERY_LIMITED_INFORMATION = 0x1000


class _BasicLimitInformation(ctypes.Structure):  # JOBOBJECT_BASIC_LIMIT_INFORMATION
    _fields_ = [
        ("PerProcessUserTimeLimit", ctypes.c_int64),  # LARGE_INTEGER
        ("PerJobUserTimeLimit", ctypes.c_int64),
        ("LimitFlags", ctypes.c_uint32),  # DWORD
        ("MinimumWorkingSetSize", ctypes.c_size_t),
        ("MaximumWorkingSetSize", ctypes.c_size_t),
        ("ActiveProcessLimit", ctypes.c_uint32),
        ("Affinity", ctypes.c_size_t),  # ULONG_PTR
        ("PriorityClass", ctypes.c_uint32),
        ("SchedulingClass", ctypes.c_uint32),
    ]


class _IoCounters(ctypes.Structure):  # IO_COUNTERS
    _fields_ = [
        (name, ctypes.c_uint64)
        for name in (
            "ReadOperationCount",
            "WriteOperationCount",
            "OtherOperationCount",
            "ReadTransferCount",
            "WriteTransferCount",
            "OtherTransferCount",
        )
    ]


class _ExtendedLimitInformation(ctypes.Structure):  # JOBOBJECT_EXTENDED_LIMIT_INFORMATION
    _fields_ = [
        ("BasicLimitInformation", _BasicLimitInformation),
        ("IoInfo", _IoCounters),
        ("ProcessMemoryLimit", ctypes.c_size_t),
        ("JobMemoryLimit", ctypes.c_size_t),
        ("PeakProcessMemoryUsed", ctypes.c_size_t),
        ("PeakJobMemoryUsed", ctypes.c_size_t),
    ]


def kernel32() -> Any:
    """kernel32 with the signatures peerfarm calls (Windows only)."""
    global _kernel32
    if _kernel32 is None:
        k = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
        handle, dword, boolean = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int
        k.CreateJobObjectW.argtypes = [ctypes.c_void_p, ctypes.c_wchar_p]
        k.CreateJobObjectW.restype = handle
        k.SetInformationJobObject.argtypes = [handle, ctypes.c_int, ctypes.c_void_p, dword]
        k.SetInformationJobObject.restype = boolean
        k.AssignProcessToJobObject.argtypes = [handle, handle]
        k.AssignProcessToJobObject.restype = boolean
        k.TerminateJobObject.argtypes = [handle, ctypes.c_uint]
        k.TerminateJobObject.restype = boolean
        k.OpenProcess.argtypes = [dword, boolean, dword]
        k.OpenProcess.restype = handle
        k.TerminateProcess.argtypes = [handle, ctypes.c_uint]
        k.TerminateProcess.restype = boolean
        filetime = ctypes.POINTER(ctypes.c_uint64)  # FILETIME: two DWORDs, low first
        k.GetProcessTimes.argtypes = [handle, filetime, filetime, filetime, filetime]
        k.GetProcessTimes.restype = boolean
        k.CloseHandle.argtypes = [handle]
        k.CloseHandle.restype = boolean
        _kernel32 = k
    return _kernel32


_kernel32: Any = None


def _last_error() -> OSError:
    return ctypes.WinError(ctypes.get_last_error())  # type: ignore[attr-defined]


def open_process(pid: int, access: int) -> int:
    """A handle to process `pid` (Windows); OSError when it is gone or not ours."""
    handle = kernel32().OpenProcess(access, False, pid)
    if not handle:
        raise _last_error()
    return int(handle)


def close_handle(handle: int) -> None:
    kernel32().CloseHandle(handle)


class KillOnCloseJob:
    """A Windows job object whose processes are killed when its last handle closes
    (JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE). The handle is not inheritable, so only this
    process holds it: when this process ends, however it ends, the job's processes
    end too. A process in the job puts everything it starts in the job as well.
    """

    def __init__(self) -> None:
        k = kernel32()
        handle = k.CreateJobObjectW(None, None)
        if not handle:
            raise _last_error()
        self.handle: int | None = int(handle)
        info = _ExtendedLimitInformation()
        info.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
        if not k.SetInformationJobObject(
            self.handle,
            JOB_OBJECT_EXTENDED_LIMIT_INFORMATION_CLASS,
            ctypes.byref(info),
            ctypes.sizeof(info),
        ):
            error = _last_error()
            self.close()
            raise error

    def assign(self, pid: int) -> None:
        """Put process `pid` (a child we have not waited for yet, so the pid is still
        its own) into the job. What it started before this call stays outside."""
        process = open_process(pid, PROCESS_SET_QUOTA | PROCESS_TERMINATE)
        try:
            if not kernel32().AssignProcessToJobObject(self.handle, process):
                raise _last_error()
        finally:
            close_handle(process)

    def terminate(self, exit_code: int = 1) -> None:
        """Kill every process in the job now."""
        if self.handle is not None and not kernel32().TerminateJobObject(self.handle, exit_code):
            raise _last_error()

    def close(self) -> None:
        """Close our handle: if it was the last one, the job's processes are killed."""
        if self.handle is not None:
            close_handle(self.handle)
            self.handle = None


_TIED_JOBS: list[KillOnCloseJob] = []  # start_tied_child's jobs: open while this process runs
