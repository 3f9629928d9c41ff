"""One TCP connection to a peer (or a client): framing, handshake, batched sending."""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

import trio

from peerfarm.wire.framing import FrameDecoder, ProtocolError, encode
from peerfarm.wire.messages import MAX_BATCH, PROTOCOL_VERSION, MessageError, message, parse_message

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 10.0
READ_SIZE = 256 * 1024


class HandshakeError(Exception):
    """The other side is not a peer we can talk to; the message says why and what to do."""


class Link:
    """A connection after (or during) the HELLO handshake.

    Outgoing actions are queued and written in batches by ``run_sender`` (one
    ACTIONS message per up to MAX_BATCH actions) rather than one by one.
    """

    def __init__(self, stream: trio.abc.Stream, *, outbound: bool, remote: str) -> None:
        self.stream = stream
        self.outbound = outbound
        self.remote = remote  # the socket address, for log messages
        self.peer_id = ""
        self.peer_name = ""
        self.peer_role = ""
        self.peer_address = ""  # where the peer listens
        self.closed = trio.Event()
        self.last_heard = trio.current_time()  # when anything last arrived from the peer
        self._decoder = FrameDecoder()
        self._inbox: deque[dict[str, Any]] = deque()
        self._send_lock = trio.Lock()
        self._outbox: list[dict[str, Any]] = []
        self._outbox_ready = trio.Event()

    def describe(self) -> str:
        who = f"{self.peer_name} ({self.peer_id[:8]})" if self.peer_id else "unknown peer"
        return f"{who} at {self.remote}"

    async def send(self, msg: dict[str, Any]) -> None:
        data = encode(msg)
        async with self._send_lock:
            await self.stream.send_all(data)

    async def receive(self) -> dict[str, Any] | None:
        """The next valid message, or None when the peer closed the connection.

        Raises ProtocolError or MessageError on bad input: the caller closes.
        """
        while not self._inbox:
            data = await self.stream.receive_some(READ_SIZE)
            if not data:
                return None
            self._inbox.extend(self._decoder.feed(data))
            self.last_heard = trio.current_time()
        return parse_message(self._inbox.popleft())

    def queue_actions(self, wire_actions: list[dict[str, Any]]) -> None:
        if wire_actions and not self.closed.is_set():
            self._outbox.extend(wire_actions)
            self._outbox_ready.set()

    def outbox_empty(self) -> bool:
        return not self._outbox

    async def run_sender(self) -> None:
        """Write queued actions in batches until the link breaks (the reader notices too)."""
        try:
            while True:
                await self._outbox_ready.wait()
                self._outbox_ready = trio.Event()
                batch, self._outbox = self._outbox, []
                for i in range(0, len(batch), MAX_BATCH):
                    await self.send(message("ACTIONS", actions=batch[i : i + MAX_BATCH]))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            log.debug("sending to %s failed: %s", self.describe(), exc)

    async def close(self) -> None:
        self.closed.set()
        with trio.move_on_after(1) as scope:
            scope.shield = True
            await self.stream.aclose()

    async def handshake(self, hello: dict[str, Any]) -> None:
        """Exchange HELLOs; the dialer speaks first. Raises HandshakeError with a clear reason."""
        try:
            with trio.fail_after(HANDSHAKE_TIMEOUT):
                if self.outbound:
                    await self.send(hello)
                reply = await self.receive()
                if reply is None:
                    raise HandshakeError(
                        f"{self.remote} closed the connection during the handshake"
                    )
                if reply["type"] == "ERROR":
                    raise HandshakeError(f"{self.remote} refused us: {reply['message']}")
                if reply["type"] != "HELLO":
                    raise HandshakeError(f"{self.remote} sent {reply['type']} before HELLO")
                if reply["protocol"] != PROTOCOL_VERSION:
                    why = (
                        f"protocol version mismatch: this node speaks peerfarm protocol "
                        f"{PROTOCOL_VERSION}, {self.remote} speaks {reply['protocol']}; "
                        f"install the same peerfarm version on every machine of the farm"
                    )
                    await self.send(message("ERROR", code="protocol_version", message=why))
                    raise HandshakeError(why)
                if not self.outbound:
                    await self.send(hello)
        except trio.TooSlowError:
            raise HandshakeError(f"{self.remote} did not complete the handshake in time") from None
        except (ProtocolError, MessageError) as exc:
            raise HandshakeError(f"{self.remote} sent a bad handshake: {exc}") from None
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise HandshakeError(
                f"{self.remote}: connection lost during handshake ({exc})"
            ) from None
        self.peer_id = reply["node_id"]
        self.peer_name = reply["name"]
        self.peer_role = reply["role"]
        self.peer_address = reply["address"]
