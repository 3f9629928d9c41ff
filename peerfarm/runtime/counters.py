"""Counters of what a node's public API does not show: how long renderer processes
ran, and how many bytes its links moved. Read by the metrics endpoint
(peerfarm/ops/metrics.py); everything else it exports comes from the node's API.

One object per node (``Node.counters``), plain numbers, no locks: the node's
parts update it from trio's thread, and the metrics endpoint reads it there.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class RuntimeCounters:
    def __init__(self) -> None:
        self.renderer_seconds: defaultdict[str, float] = defaultdict(float)  # renderer -> s
        self.renders_finished = 0  # renderer processes that ran and exited (any outcome)
        self._closed_sent = 0  # bytes of links that have closed
        self._closed_received = 0
        self._open_links: dict[int, Any] = {}  # id -> Link being served

    # -- renderer processes (runtime/renders.py) -----------------------------------

    def renderer_ran(self, renderer: str, seconds: float) -> None:
        self.renderer_seconds[renderer] += max(seconds, 0.0)
        self.renders_finished += 1

    @contextmanager
    def renderer_running(self, renderer: str) -> Iterator[None]:
        """Around one renderer process: its wall-clock seconds, however it ends."""
        start = time.monotonic()
        try:
            yield
        finally:
            self.renderer_ran(renderer, time.monotonic() - start)

    # -- links (runtime/node.py wraps the mesh's serve) -----------------------------

    def link_opened(self, link: Any) -> None:
        self._open_links[id(link)] = link

    def link_closed(self, link: Any) -> None:
        if self._open_links.pop(id(link), None) is not None:
            self._closed_sent += getattr(link, "bytes_sent", 0)
            self._closed_received += getattr(link, "bytes_received", 0)

    @property
    def bytes_sent(self) -> int:
        """Bytes of messages written to peers and clients (framed msgpack, before TLS)."""
        live = sum(getattr(link, "bytes_sent", 0) for link in self._open_links.values())
        return self._closed_sent + live

    @property
    def bytes_received(self) -> int:
        live = sum(getattr(link, "bytes_received", 0) for link in self._open_links.values())
        return self._closed_received + live
