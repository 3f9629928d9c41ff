"""Requests to peers and their answers: send a request on a link, wait for the answer
with the same key (or a timeout, or the link's end).

Keys name what was asked: ("frame", job id, frame, tile or -1), ("log", job id,
chunk) or ("blob", sha, offset); the peer's id is added, so two peers' answers
never mix.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from peerfarm.runtime.link import Link

Key = tuple[Any, ...]


class Requests:
    def __init__(self, link_to: Callable[[str], Link | None]) -> None:
        self._link_to = link_to
        self._waiters: dict[Key, tuple[trio.Event, list[dict[str, Any]]]] = {}

    async def ask(
        self, peer: str, request: dict[str, Any], key: Key, timeout: float
    ) -> dict[str, Any] | None:
        """Send ``request`` to a peer and wait for the answer with ``key`` (None if the
        peer is not linked, the link drops, or no answer comes in time)."""
        link = self._link_to(peer)
        if link is None:
            return None
        full_key = (peer, *key)
        waiter = self._waiters.setdefault(full_key, (trio.Event(), []))
        try:
            with trio.move_on_after(timeout):
                await link.send(request)
                async with trio.open_nursery() as nursery:

                    async def watch_link() -> None:
                        await link.closed.wait()
                        nursery.cancel_scope.cancel()

                    nursery.start_soon(watch_link)
                    await waiter[0].wait()
                    nursery.cancel_scope.cancel()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return None
        finally:
            if self._waiters.get(full_key) is waiter:
                del self._waiters[full_key]
        return waiter[1][0] if waiter[1] else None

    def answer(self, peer: str, key: Key, msg: dict[str, Any]) -> None:
        """An answer arrived; it goes to whoever asked (an answer nobody waits for is dropped)."""
        waiter = self._waiters.get((peer, *key))
        if waiter is not None and not waiter[0].is_set():
            waiter[1].append(msg)
            waiter[0].set()
