"""The order a node looks at a job's chunks in when it picks one to claim.

In order (the default): from the node's own share of the range on (its rank among
rendering nodes), so idle nodes rarely reach for the same chunk.

Spread (a job's ``order: spread``): first, last, middle, then the quarters, the
eighths... so the first frames to come back cover the whole shot (an artist
watching a re-render sees every part of it early). Each node starts ``rank`` steps
into that sequence, so two nodes still pick different chunks first.

Pure functions, lazy: a 100,000-chunk job costs only the steps looked at.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from itertools import islice

IN_ORDER = "in-order"
SPREAD = "spread"
ORDERS = (IN_ORDER, SPREAD)


def spread(total: int) -> Iterator[int]:
    """0 .. total-1, each once: both ends, then the middle of each gap, breadth first."""
    if total <= 0:
        return
    yield 0
    if total == 1:
        return
    yield total - 1
    gaps = deque([(0, total - 1)])
    while gaps:
        a, b = gaps.popleft()
        if b - a < 2:
            continue
        m = (a + b) // 2
        yield m
        gaps.append((a, m))
        gaps.append((m, b))


def chunk_order(total: int, order: str, rank: int, renderers: int) -> Iterator[int]:
    """Every chunk index of a job of ``total`` chunks once, in the order this node
    (``rank`` of ``renderers`` rendering nodes) looks at them."""
    if order == SPREAD:
        skip = rank % total if total else 0
        yield from islice(spread(total), skip, None)
        yield from islice(spread(total), skip)
        return
    start = (rank * total) // max(renderers, 1)
    for step in range(total):
        yield (start + step) % total
