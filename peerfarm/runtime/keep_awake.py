"""Keeping the machine from going to sleep while this node renders: best effort.

A workstation left alone goes to sleep after a while, and a sleeping node renders
nothing and answers no probes (the farm gives its chunks to others). While at
least one renderer runs, the node asks the system to stay awake; when the last one
ends, it stops asking. The screen may still turn off: only sleep is held off.

- Windows: SetThreadExecutionState(ES_CONTINUOUS | ES_SYSTEM_REQUIRED) from the node's
  event-loop thread, undone with ES_CONTINUOUS (Windows undoes it too when the thread
  ends).
- macOS: ``caffeinate -i -w NODE_PID`` (in /usr/bin on every macOS) runs while renderers
  do, and ends by itself if the node dies.
- Linux: ``systemd-inhibit --what=sleep:idle ... tail --pid=NODE_PID -f /dev/null`` when
  systemd-inhibit is there (logind may refuse, e.g. a service without the polkit right:
  said once in the log); elsewhere nothing.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from peerfarm.child_processes import no_window_options

log = logging.getLogger(__name__)

ES_CONTINUOUS = 0x80000000
ES_SYSTEM_REQUIRED = 0x00000001


def holder_command(
    platform: str, pid: int, which: Callable[[str], str | None] = shutil.which
) -> list[str] | None:
    """The program that holds sleep off while it runs and ends when process `pid` does,
    on `platform`; None where there is none (Windows needs none: a system call does it)."""
    if platform == "darwin":
        return ["/usr/bin/caffeinate", "-i", "-w", str(pid)]  # -i: no idle sleep
    if platform.startswith("linux"):
        inhibit, tail = which("systemd-inhibit"), which("tail")
        if inhibit and tail:
            return [
                inhibit,
                "--what=sleep:idle",
                "--who=peerfarm",
                "--why=rendering",
                "--mode=block",
                tail,
                f"--pid={pid}",
                "-f",
                os.devnull,
            ]
    return None


class KeepAwake:
    """Counts the renders in progress; the machine is held awake while there are any.
    Use `while_rendering()` from the node's event-loop thread only."""

    def __init__(self, platform: str = sys.platform) -> None:
        self.platform = platform
        self.rendering = 0
        self.holder: subprocess.Popen[bytes] | None = None
        self.holder_program = ""
        self._said = False  # that it does not work here: said once

    @contextmanager
    def while_rendering(self) -> Iterator[None]:
        self.rendering += 1
        if self.rendering == 1:
            self._hold()
        try:
            yield
        finally:
            self.rendering -= 1
            if self.rendering == 0:
                self._release()

    def _hold(self) -> None:
        if self._said:
            return  # it did not work here before: not tried at every chunk
        if self.platform == "win32":
            self._set_execution_state(ES_CONTINUOUS | ES_SYSTEM_REQUIRED)
            return
        command = holder_command(self.platform, os.getpid())
        if command is None:
            return
        self.holder_program = command[0]
        try:
            self.holder = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                **no_window_options(),
            )
        except OSError as exc:
            self._cannot(f"{command[0]} did not start: {exc}")

    def _release(self) -> None:
        if self.platform == "win32":
            self._set_execution_state(ES_CONTINUOUS)
            return
        holder, self.holder = self.holder, None
        if holder is None:
            return
        if holder.poll() is None:
            holder.terminate()
            try:
                _, err = holder.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                holder.kill()
                holder.communicate()
                return
            # Ended by us; or it failed on its own a moment before (logind refused while
            # the render was a short one): then say so, as when it ended long before.
            if holder.returncode in (0, -signal.SIGTERM):
                return
        else:
            _, err = holder.communicate()
        said = err.decode("utf-8", "replace").strip().splitlines()
        program = os.path.basename(self.holder_program)
        self._cannot(f"{program} ended with status {holder.returncode}: {' '.join(said[-1:])}")

    def _set_execution_state(self, flags: int) -> None:
        if sys.platform != "win32":
            return  # only reached on Windows: the platform is Windows' there
        try:
            kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
            kernel32.SetThreadExecutionState.argtypes = [ctypes.c_uint32]
            kernel32.SetThreadExecutionState.restype = ctypes.c_uint32
            if not kernel32.SetThreadExecutionState(flags):
                raise ctypes.WinError(ctypes.get_last_error())
        except OSError as exc:
            self._cannot(f"SetThreadExecutionState failed: {exc}")

    def _cannot(self, why: str) -> None:
        if not self._said:
            self._said = True
            log.info("cannot keep this machine awake while rendering (%s); it may sleep", why)
