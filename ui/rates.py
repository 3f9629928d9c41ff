"""Speeds measured by watching counters over time (frames per second, per job and per node).

The replicated state has no clock, so speeds are measured where they are shown:
the app samples counters (frames done) as they change and divides by the time
that passed, over a sliding window so a speed follows the farm as it changes.
"""

from __future__ import annotations

from collections import deque

WINDOW = 30.0  # seconds of history a speed is measured over


class RateMeter:
    """Counts per second of one counter, from samples (time, count)."""

    def __init__(self, window: float = WINDOW) -> None:
        self.window = window
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, now: float, count: int) -> None:
        if self._samples and count < self._samples[-1][1]:
            self._samples.clear()  # frames were lost and re-rendered: start over
        if not self._samples or count != self._samples[-1][1]:
            self._samples.append((now, count))
        # Keep one sample older than the window so the window is always covered.
        while len(self._samples) > 2 and self._samples[1][0] < now - self.window:
            self._samples.popleft()

    def rate(self, now: float) -> float | None:
        """Counts per second over the window; None until there is something to measure."""
        if len(self._samples) < 2:
            return None
        t0, c0 = self._samples[0]
        t1, c1 = self._samples[-1]
        # Time since the last change counts too, so a stalled counter slows down.
        elapsed = max(now, t1) - t0
        if elapsed <= 0:
            return None
        return (c1 - c0) / elapsed


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
