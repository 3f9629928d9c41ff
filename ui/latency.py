"""A probe of the window's responsiveness: how late Qt's event loop runs a timer.

A timer asks to run every ``interval_ms``; each run records how much later
than asked it came. A late timer means the event loop was busy (a blocking
call on the GUI thread, a long trio step) or starved of CPU: the delay a user
feels between a click and the window answering.
"""

from __future__ import annotations

import time

from PySide6.QtCore import QObject, Qt, QTimer


class LatencyProbe(QObject):
    def __init__(self, interval_ms: int = 10) -> None:
        super().__init__()
        self.interval = interval_ms / 1000.0
        self.delays: list[float] = []
        self._timer = QTimer(self)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._tick)
        self._last = 0.0

    def start(self) -> None:
        self._last = time.perf_counter()
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()

    def _tick(self) -> None:
        now = time.perf_counter()
        self.delays.append(max(0.0, now - self._last - self.interval))
        self._last = now

    def stats(self) -> dict[str, float | int]:
        """Delays in milliseconds: worst, 99th and 50th percentile, and the sample count."""
        if not self.delays:
            return {"samples": 0, "worst_ms": 0.0, "p99_ms": 0.0, "p50_ms": 0.0}
        ordered = sorted(self.delays)

        def pct(q: float) -> float:
            return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)

        return {
            "samples": len(ordered),
            "worst_ms": round(ordered[-1] * 1000, 1),
            "p99_ms": pct(0.99),
            "p50_ms": pct(0.50),
        }
