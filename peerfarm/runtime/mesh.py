"""The mesh: a link to every peer, dialed and redialed, and the gate for inbound
connections.

- One link per pair of nodes: if both dial at once, the link dialed by the node
  with the smaller id survives, decided alike on both ends.
- A dial loop per peer (and per bootstrap address) keeps its link: it dials,
  serves the link until it closes, and redials with jittered exponential
  backoff. The address comes from the known-worker list each time, so a peer
  that moved is found where it listens now.
- Inbound connections are bounded before they cost much: handshakes in progress
  per address and in all, live connections per address. A flood from one
  address leaves room for everyone else; refusals are logged with the address,
  at most once per window.

What a link carries is the node's business: the mesh calls ``serve(link)`` for
every link that finished its handshake and returns the peer's id when it closes.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from peerfarm.machine.timing import MAX_BACKOFF, MIN_BACKOFF
from peerfarm.runtime.addresses import format_address
from peerfarm.runtime.link import HandshakeError, Link, accept, dial
from peerfarm.security.farm_key import FarmKey
from peerfarm.security.identity import Identity

log = logging.getLogger(__name__)

# A handshake slot is held at most HANDSHAKE_TIMEOUT (runtime/link.py); one address
# can hold a few, so a flood from it leaves room for everyone else.
MAX_PENDING_HANDSHAKES = 128
# Of those, this many only for this machine's own clients (the CLI, the app on
# 127.0.0.1 / ::1) and hosts of known members: a flood from many addresses takes
# the rest, never the farm's own way in.
RESERVED_HANDSHAKES = 32
MAX_PENDING_PER_ADDRESS = 16
MAX_CONNECTIONS_PER_ADDRESS = 64
REFUSAL_LOG_WINDOW = 10.0  # log the first refusal per address per window, count the rest

Serve = Callable[[Link], Awaitable[str | None]]


class Mesh:
    def __init__(
        self,
        *,
        node_id: str,
        identity: Identity,
        farm_key: FarmKey | None,
        tls_context: Any,
        hello: Callable[[], dict[str, Any]],
        address_of: Callable[[str], str | None],
        member_hosts: Callable[[], set[str]],
        serve: Serve,
    ) -> None:
        self.node_id = node_id
        self.identity = identity
        self.farm_key = farm_key
        self.tls_context = tls_context
        self.hello = hello
        self.address_of = address_of
        self.member_hosts = member_hosts
        self.serve = serve
        self.links: dict[str, Link] = {}  # mesh peers by node id (clients are not here)
        self._nursery: trio.Nursery | None = None
        self._dialing: set[str] = set()  # node ids / bootstrap addresses with a dial loop
        self._pending_handshakes: Counter[str] = Counter()  # handshakes in progress per host
        self._connections: Counter[str] = Counter()  # live inbound connections per host
        self._refusals: dict[str, tuple[float, int]] = {}  # host -> (window start, count)

    def start(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery

    def link_to(self, peer_id: str) -> Link | None:
        link = self.links.get(peer_id)
        return link if link is not None and not link.closed.is_set() else None

    def pending_handshakes(self) -> int:
        return self._pending_handshakes.total()

    # -- one link per pair ---------------------------------------------------------------

    def register(self, link: Link) -> bool:
        """Keep one link per peer. When both dialed each other at once, keep the link
        dialed by the node with the smaller id; both ends apply the same rule."""
        other = self.link_to(link.peer_id)
        if other is not None and other.outbound != link.outbound:
            preferred_dialer = min(self.node_id, link.peer_id)
            other_dialer = self.node_id if other.outbound else link.peer_id
            if other_dialer == preferred_dialer:
                return False
        if other is not None:
            assert self._nursery is not None
            self._nursery.start_soon(other.close)
        self.links[link.peer_id] = link
        return True

    def unregister(self, link: Link) -> bool:
        """Forget a closed link; True if it was the peer's registered link."""
        if self.links.get(link.peer_id) is link:
            del self.links[link.peer_id]
            return True
        return False

    # -- dialing ---------------------------------------------------------------------

    def dial(self, peer_id: str, address: str) -> None:
        """Keep a link to a peer (``peer_id``) or to a bootstrap server (``address``)."""
        key = peer_id or address
        if key == self.node_id or key in self._dialing or self._nursery is None:
            return
        self._dialing.add(key)
        self._nursery.start_soon(self._dial_loop, peer_id or None, None if peer_id else address)

    async def _dial_loop(self, peer_id: str | None, fixed_address: str | None) -> None:
        """Dial, serve the link until it closes, redial with backoff."""
        backoff = MIN_BACKOFF
        try:
            while True:
                if peer_id is not None:
                    link = self.link_to(peer_id)
                    if link is not None:  # it dialed us: wait for that link to end
                        await link.closed.wait()
                        backoff = MIN_BACKOFF
                        if peer_id < self.node_id:
                            # Both ends notice a drop at once; if both redialed, one of
                            # the two new links would be closed again (see register).
                            # The end whose link survives a tie redials first.
                            await trio.sleep(backoff * (0.75 + random.random() / 2))
                        continue
                address = fixed_address or (self.address_of(peer_id) if peer_id else None)
                if address is None:
                    return  # no longer on the known-worker list
                try:
                    link = await dial(address, self.hello(), self.identity, self.farm_key)
                except (OSError, ValueError) as exc:
                    log.debug("cannot reach %s: %s", address, exc)
                except HandshakeError as exc:
                    log.warning("%s", exc)
                else:
                    connected_to = await self.serve(link)
                    if connected_to == self.node_id:
                        return  # a bootstrap address that turned out to be ourselves
                    if connected_to is not None:
                        backoff = MIN_BACKOFF
                        if fixed_address is not None and peer_id is None:
                            # A bootstrap address: now we know whom it reaches. One
                            # loop per peer, or both would redial it after every drop.
                            if connected_to in self._dialing:
                                return
                            peer_id = connected_to
                            self._dialing.add(peer_id)
                        if connected_to > self.node_id:
                            continue  # our link dropped and we are the end that redials first
                await trio.sleep(backoff * (0.75 + random.random() / 2))
                backoff = min(backoff * 2, MAX_BACKOFF)
        finally:
            self._dialing.discard(fixed_address or "")
            self._dialing.discard(peer_id or "")

    # -- the gate for inbound connections ----------------------------------------------

    async def handle_inbound(self, stream: trio.SocketStream) -> None:
        try:
            peer = stream.socket.getpeername()
            host, remote = str(peer[0]), format_address(str(peer[0]), int(peer[1]))
        except OSError:
            host = remote = "?"
        pending = self._pending_handshakes.total()
        trusted = host in ("127.0.0.1", "::1") or host in self.member_hosts()
        limit = MAX_PENDING_HANDSHAKES if trusted else MAX_PENDING_HANDSHAKES - RESERVED_HANDSHAKES
        if pending >= limit or self._pending_handshakes[host] >= MAX_PENDING_PER_ADDRESS:
            self._log_refusal(host, f"refused {remote}: too many handshakes in progress")
            await trio.aclose_forcefully(stream)
            return
        if self._connections[host] >= MAX_CONNECTIONS_PER_ADDRESS:
            self._log_refusal(host, f"refused {remote}: too many connections from {host}")
            await trio.aclose_forcefully(stream)
            return
        self._connections[host] += 1
        try:
            self._pending_handshakes[host] += 1
            try:
                link = await accept(
                    stream, remote, self.hello(), self.identity, self.farm_key, self.tls_context
                )
            except HandshakeError as exc:
                self._log_refusal(host, str(exc))
                return
            finally:
                self._pending_handshakes[host] -= 1
                if not self._pending_handshakes[host]:
                    del self._pending_handshakes[host]
            await self.serve(link)
        finally:
            self._connections[host] -= 1
            if not self._connections[host]:
                del self._connections[host]

    def _log_refusal(self, host: str, text: str) -> None:
        """Log a refused connection with its address, without letting a flood flood the log."""
        now = trio.current_time()
        start, count = self._refusals.get(host, (-REFUSAL_LOG_WINDOW, 0))
        if now - start >= REFUSAL_LOG_WINDOW:
            if len(self._refusals) > 1000:  # many addresses: forget the quiet ones
                for old, (began, _) in list(self._refusals.items()):
                    if now - began >= REFUSAL_LOG_WINDOW:
                        del self._refusals[old]
            if count > 1:
                log.warning("... and %d more refused connections from %s", count - 1, host)
            log.warning("%s", text)
            self._refusals[host] = (now, 1)
        else:
            self._refusals[host] = (start, count + 1)
