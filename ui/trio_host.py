"""Trio inside Qt's event loop (trio guest mode).

Trio's guest mode lets trio run on top of another event loop: trio asks us
to call its callbacks "soon" on the GUI thread, from any thread, and we do it
by posting a Qt event to a QObject that lives on the GUI thread. So trio
tasks (the node's networking, its renderer processes) and Qt widgets share one
thread, never block each other, and a trio task may touch widgets directly.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import outcome
import trio
from PySide6.QtCore import QCoreApplication, QEvent, QObject, Signal

_CALL = QEvent.Type(QEvent.registerEventType())


class _CallEvent(QEvent):
    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(_CALL)
        self.fn = fn


class TrioHost(QObject):
    """Runs one trio run in guest mode; ``finished`` carries its outcome."""

    finished = Signal(object)  # outcome.Value or outcome.Error

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.running = False
        self.result: outcome.Outcome | None = None
        self.longest_step = 0.0  # seconds
        self.longest_step_cpu = 0.0

    def event(self, ev: QEvent) -> bool:
        if isinstance(ev, _CallEvent):  # cheaper than comparing ev.type() (an enum)
            started, cpu = time.perf_counter(), time.thread_time()
            ev.fn()
            # How long trio held the GUI thread in one go (wall clock, and CPU time of
            # this thread: the difference is time the OS gave other processes).
            self.longest_step = max(self.longest_step, time.perf_counter() - started)
            self.longest_step_cpu = max(self.longest_step_cpu, time.thread_time() - cpu)
            return True
        return super().event(ev)

    def _call_soon(self, fn: Callable[[], Any]) -> None:
        # Thread-safe: Qt queues the event for this object's (the GUI) thread.
        QCoreApplication.postEvent(self, _CallEvent(fn))

    def start(self, async_fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        if self.running:
            raise RuntimeError("this TrioHost already runs a trio run")
        self.running = True
        self.result = None
        trio.lowlevel.start_guest_run(
            async_fn,
            *args,
            run_sync_soon_threadsafe=self._call_soon,
            done_callback=self._done,
            # Ctrl+C is handled by the app (a graceful stop), not as KeyboardInterrupt.
            restrict_keyboard_interrupt_to_checkpoints=True,
        )

    def _done(self, result: outcome.Outcome) -> None:
        self.running = False
        self.result = result
        self.finished.emit(result)
