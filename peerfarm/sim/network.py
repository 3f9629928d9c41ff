"""The simulated clock and network: one event queue, one seeded random source.

Nothing here reads the real clock or touches a socket. Time moves only when
the next event is popped, and events are ordered by (simulated time, sequence
number), so two events at the same instant run in the order they were
scheduled and a run is a pure function of its seed.

Messages travel on links. A link between two nodes exists from its handshake
(``connect``, which needs both processes running and able to reach each other)
until a process dies; a partition does not close it (TCP does not notice) but
drops what is sent on it. The network is deliberately worse than TCP: every
message has its own random delay (so messages overtake each other) and may be
lost. Anti-entropy is what must make up for it.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

Message = dict[str, Any]  # a message of the wire protocol (peerfarm.wire.messages), unencoded


class EventLoop:
    """A priority queue of callbacks keyed by (time, sequence number)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.events_run = 0
        self._queue: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = 0

    def call_at(self, when: float, fn: Callable[..., None], *args: Any) -> None:
        # The sequence number breaks ties, so callbacks are never compared and
        # same-time events keep their scheduling order.
        heapq.heappush(self._queue, (max(when, self.now), self._seq, fn, args))
        self._seq += 1

    def call_later(self, delay: float, fn: Callable[..., None], *args: Any) -> None:
        self.call_at(self.now + delay, fn, *args)

    def run_until(self, deadline: float, stop: Callable[[], bool] | None = None) -> bool:
        """Run events up to ``deadline``; True if ``stop()`` became true (checked after
        each event) before that."""
        queue = self._queue
        while queue and queue[0][0] <= deadline:
            when, _, fn, args = heapq.heappop(queue)
            self.now = when
            self.events_run += 1
            fn(*args)
            if stop is not None and stop():
                return True
        self.now = max(self.now, deadline)
        return False


class Endpoint(Protocol):
    """What the network needs from a simulated node."""

    node_id: str
    running: bool
    frozen: bool
    life: int  # bumped on every crash and restart: messages to an old life are lost

    def deliver(self, src: str, msg: Message, life: int) -> None: ...

    def link_reset(self, peer: str, life: int) -> None: ...

    def link_up(self, peer: str, life: int) -> None: ...


@dataclass
class NetworkConditions:
    loss: float = 0.0  # probability that a message is lost
    min_delay: float = 0.0005
    max_delay: float = 0.005
    slow_chance: float = 0.0  # probability that a message takes an extra 0..slow_delay
    slow_delay: float = 0.5


class Network:
    def __init__(self, loop: EventLoop, rng: random.Random, conditions: NetworkConditions) -> None:
        self.loop = loop
        self.rng = rng
        self.conditions = conditions
        self.endpoints: dict[str, Endpoint] = {}
        # (a, b) with a < b -> how many active partitions separate them; partitions
        # may overlap, and the pair heals only when the last one ends.
        self._cuts: dict[tuple[str, str], int] = {}
        self._links: dict[tuple[str, str], int] = {}  # pair -> its link's number
        self._link_count = 0
        self.sent = 0
        self.lost = 0

    def attach(self, endpoint: Endpoint) -> None:
        self.endpoints[endpoint.node_id] = endpoint

    def detach(self, node_id: str) -> None:
        """A retired id: nothing reaches it any more."""
        self.endpoints.pop(node_id, None)

    @staticmethod
    def _pair(a: str, b: str) -> tuple[str, str]:
        return (a, b) if a < b else (b, a)

    def reachable(self, a: str, b: str) -> bool:
        return self._pair(a, b) not in self._cuts

    def cut(self, group: list[str], others: list[str]) -> None:
        for a in group:
            for b in others:
                pair = self._pair(a, b)
                self._cuts[pair] = self._cuts.get(pair, 0) + 1

    def mend(self, group: list[str], others: list[str]) -> None:
        for a in group:
            for b in others:
                pair = self._pair(a, b)
                left = self._cuts.get(pair, 0) - 1
                if left > 0:
                    self._cuts[pair] = left
                else:
                    self._cuts.pop(pair, None)

    def heal(self) -> None:
        """End every partition, stop losing messages and stop holding some back."""
        self._cuts.clear()
        self.conditions.loss = 0.0
        self.conditions.slow_chance = 0.0

    # -- links ------------------------------------------------------------------------

    def linked(self, a: str, b: str) -> bool:
        return self._pair(a, b) in self._links

    def connect(self, src: str, dst: str) -> bool:
        """``src`` dials ``dst``: True if a link exists or is being made. The handshake
        needs ``dst`` running and not frozen, and the network between them."""
        pair = self._pair(src, dst)
        if pair in self._links:
            return True
        target = self.endpoints.get(dst)
        if target is None or not target.running or target.frozen or not self.reachable(src, dst):
            return False
        self._link_count += 1
        self._links[pair] = self._link_count
        # The handshake takes a round trip or two.
        delay = 3 * self.rng.uniform(self.conditions.min_delay, self.conditions.max_delay)
        self.loop.call_later(delay, self._linked, pair, self._link_count)
        return True

    def _linked(self, pair: tuple[str, str], number: int) -> None:
        if self._links.get(pair) != number:
            return  # a process died during the handshake
        for a, b in (pair, pair[::-1]):
            endpoint = self.endpoints.get(a)
            if endpoint is not None:
                endpoint.link_up(b, endpoint.life)

    def close_links(self, node: str) -> list[str]:
        """``node``'s process died: its links are gone. Returns the peers it had links to."""
        peers = []
        for pair in list(self._links):
            if node in pair:
                del self._links[pair]
                peers.append(pair[1] if pair[0] == node else pair[0])
        return sorted(peers)

    # -- messages ---------------------------------------------------------------------

    def send(self, src: str, dst: str, msg: Message) -> None:
        self.sent += 1
        target = self.endpoints.get(dst)
        c = self.conditions
        number = self._links.get(self._pair(src, dst))
        if number is None and self.reachable(src, dst):
            # The sender still counts on a link whose other end died while they could
            # not reach each other: TCP answers its next segment with a reset.
            sender = self.endpoints.get(src)
            if sender is not None:
                delay = self.rng.uniform(c.min_delay, c.max_delay)
                self.loop.call_later(delay, sender.link_reset, dst, sender.life)
        if (
            number is None
            or target is None
            or not target.running
            or not self.reachable(src, dst)
            or self.rng.random() < c.loss
        ):
            self.lost += 1
            return
        delay = self.rng.uniform(c.min_delay, c.max_delay)
        if c.slow_chance and self.rng.random() < c.slow_chance:
            delay += self.rng.uniform(0.0, c.slow_delay)
        self.loop.call_later(delay, self._arrive, src, dst, msg, target.life, number)

    def _arrive(self, src: str, dst: str, msg: Message, life: int, number: int) -> None:
        # A partition that started while the message was on its way drops it too, and
        # so does the end of the link it travelled on.
        target = self.endpoints.get(dst)
        if (
            target is None
            or not self.reachable(src, dst)
            or self._links.get(self._pair(src, dst)) != number
        ):
            self.lost += 1
            return
        target.deliver(src, msg, life)
