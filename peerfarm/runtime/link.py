"""One connection to a peer (or a client): TLS, handshake, framing, batched sending."""

from __future__ import annotations

import logging
import secrets
import ssl
from collections import deque
from typing import Any

import trio

from peerfarm.runtime.addresses import parse_address
from peerfarm.runtime.tls import PlaintextPeer, accept_tls, connect_tls
from peerfarm.security.farm_key import NO_KEY_ID, FarmKey, key_id_of
from peerfarm.security.identity import Identity, node_id_of
from peerfarm.security.proof import NONCE_BYTES, check_proof, make_proof, transcript
from peerfarm.wire.framing import (
    HANDSHAKE_MESSAGE_BYTES,
    MAX_MESSAGE_BYTES,
    FrameDecoder,
    ProtocolError,
    encode,
)
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
        self.peer_features: list[str] = []  # protocol features it speaks (core/features.py)
        self.closed = trio.Event()
        self.last_heard = trio.current_time()  # when anything last arrived from the peer
        # Small until the peer has proved it holds the farm key (see handshake).
        self._decoder = FrameDecoder(limit=HANDSHAKE_MESSAGE_BYTES)
        self._inbox: deque[dict[str, Any]] = deque()
        self._send_lock = trio.Lock()
        self._outbox: list[dict[str, Any]] = []
        self._messages: deque[dict[str, Any]] = deque()
        self._outbox_ready = trio.Event()
        self.bytes_sent = 0  # message bytes moved, for metrics (runtime/counters.py)
        self.bytes_received = 0

    def describe(self) -> str:
        who = f"{self.peer_name} ({self.peer_id[:8]})" if self.peer_id else "unknown peer"
        return f"{who} at {self.remote}"

    async def send(self, msg: dict[str, Any]) -> None:
        data = encode(msg)
        async with self._send_lock:
            await self.stream.send_all(data)
            self.bytes_sent += len(data)

    async def receive(self) -> dict[str, Any] | None:
        """The next valid message, or None when the peer closed the connection.

        Raises ProtocolError or MessageError on bad input: the caller closes.
        """
        while not self._inbox:
            data = await self.stream.receive_some(READ_SIZE)
            if not data:
                return None
            self.bytes_received += len(data)
            self._inbox.extend(self._decoder.feed(data))
            self.last_heard = trio.current_time()
        return parse_message(self._inbox.popleft())

    def queue_actions(
        self, wire_actions: list[dict[str, Any]] | tuple[dict[str, Any], ...]
    ) -> None:
        if wire_actions and not self.closed.is_set():
            self._outbox.extend(wire_actions)
            self._outbox_ready.set()

    def queue_message(self, msg: dict[str, Any]) -> None:
        """Send a message soon, in order with the other queued messages, without waiting."""
        if not self.closed.is_set():
            self._messages.append(msg)
            self._outbox_ready.set()

    def outbox_empty(self) -> bool:
        return not self._outbox and not self._messages

    async def run_sender(self) -> None:
        """Write queued messages, then queued actions in batches, until the link breaks
        (the reader notices too)."""
        try:
            while True:
                await self._outbox_ready.wait()
                self._outbox_ready = trio.Event()
                while self._messages:
                    await self.send(self._messages.popleft())
                batch, self._outbox = self._outbox, []
                for i in range(0, len(batch), MAX_BATCH):
                    await self.send(message("ACTIONS", actions=batch[i : i + MAX_BATCH]))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            log.debug("sending to %s failed: %s", self.describe(), exc)

    async def close(self) -> None:
        """Close the connection; never raises (a link may be closed from both ends of
        the node at once: the task serving it, and a newer link to the same peer)."""
        if self.closed.is_set():
            return
        self.closed.set()
        with trio.move_on_after(1) as scope:
            scope.shield = True
            try:
                await self.stream.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                log.debug("closing the link to %s: %s", self.describe(), exc)

    async def handshake(
        self,
        hello: dict[str, Any],
        identity: Identity,
        farm_key: FarmKey | None,
        listener_cert: bytes = b"",
    ) -> None:
        """HELLO both ways (the dialer speaks first), then PROOF both ways.

        ``listener_cert`` is the certificate the listener showed in TLS (dialer
        side only): its HELLO must name the same one. Raises HandshakeError with
        a clear reason; a refused peer gets an ERROR saying why first.
        """
        nonce = secrets.token_bytes(NONCE_BYTES)
        mine = {**hello, "cert": identity.cert_der, "nonce": nonce, "key_id": key_id_of(farm_key)}
        try:
            with trio.fail_after(HANDSHAKE_TIMEOUT):
                if self.outbound:
                    await self.send(mine)
                theirs = await self._expect("HELLO")
                await self._check_hello(theirs, farm_key, listener_cert)
                if not self.outbound:
                    await self.send(mine)
                if self.outbound:
                    dialer, listener = mine, theirs
                else:
                    dialer, listener = theirs, mine
                certs_and_nonces = (dialer["cert"], listener["cert"], dialer["nonce"])
                certs_and_nonces += (listener["nonce"],)
                my_role, their_role = (
                    ("dialer", "listener") if self.outbound else ("listener", "dialer")
                )
                my_proof = make_proof(identity, farm_key, transcript(my_role, *certs_and_nonces))
                if self.outbound:
                    await self.send(message("PROOF", **my_proof))
                proof = await self._expect("PROOF")
                why = check_proof(
                    farm_key,
                    theirs["cert"],
                    transcript(their_role, *certs_and_nonces),
                    proof["mac"],
                    proof["signature"],
                )
                if why:
                    await self._refuse("farm_key", why, f"this node refused you: {why}")
                if not self.outbound:
                    await self.send(message("PROOF", **my_proof))
        except trio.TooSlowError:
            raise HandshakeError(f"{self.remote} did not complete the handshake in time") from None
        except (ProtocolError, MessageError) as exc:
            raise HandshakeError(f"{self.remote} sent a bad handshake: {exc}") from None
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise HandshakeError(
                f"{self.remote}: connection lost during handshake ({exc})"
            ) from None
        self._decoder.limit = MAX_MESSAGE_BYTES  # a member now: frames may come
        self.peer_id = theirs["node_id"]
        self.peer_name = theirs["name"]
        self.peer_role = theirs["role"]
        self.peer_address = theirs["address"]
        self.peer_features = list(theirs.get("features", []))

    async def _expect(self, kind: str) -> dict[str, Any]:
        reply = await self.receive()
        if reply is None:
            raise HandshakeError(f"{self.remote} closed the connection during the handshake")
        if reply["type"] == "ERROR":
            raise HandshakeError(f"{self.remote} refused us: {reply['message']}")
        if reply["type"] != kind:
            raise HandshakeError(f"{self.remote} sent {reply['type']} instead of {kind}")
        return reply

    async def _check_hello(
        self, hello: dict[str, Any], farm_key: FarmKey | None, listener_cert: bytes
    ) -> None:
        if hello["protocol"] != PROTOCOL_VERSION:
            why = (
                f"protocol version mismatch: this node speaks peerfarm protocol "
                f"{PROTOCOL_VERSION}, {self.remote} speaks {hello['protocol']}; "
                f"install the same peerfarm version on every machine of the farm"
            )
            await self._refuse("protocol_version", why, why)
        ours, theirs = key_id_of(farm_key), hello["key_id"]
        if theirs != ours:
            if ours == NO_KEY_ID:
                why = (
                    f"it belongs to a farm (key id {theirs}) and this node has no farm key; "
                    f"start this node with that farm's key (--farm-key-file)"
                )
                told = (
                    "this node has no farm key (it serves only this machine); start it with "
                    "your farm's key (--farm-key-file) to let it join"
                )
            elif theirs == NO_KEY_ID:
                why = "it has no farm key; give it this farm's key file (--farm-key-file)"
                told = (
                    f"this farm needs a farm key (key id {ours}): copy the farm's key file "
                    f"to this machine and pass --farm-key-file PATH "
                    f"(or set PEERFARM_FARM_KEY_FILE)"
                )
            else:
                why = f"it holds another farm's key (key id {theirs}, ours {ours})"
                told = (
                    f"this node belongs to another farm (key id {ours}, yours {theirs}); "
                    f"use the key file of the farm you want to join"
                )
            await self._refuse("farm_key", why, told)
        if node_id_of(hello["cert"]) != hello["node_id"]:
            why = "its node id is not the hash of its certificate"
            await self._refuse("identity", why, f"this node refused you: {why}")
        if self.outbound and hello["cert"] != listener_cert:
            why = (
                "the certificate in its HELLO is not the one it showed in TLS "
                "(something in between is relaying the connection)"
            )
            await self._refuse("identity", why, f"this node refused you: {why}")

    async def _refuse(self, code: str, why: str, told: str) -> None:
        """Tell the peer why (best effort), then fail the handshake with our reason."""
        with trio.move_on_after(1):
            try:
                await self.send(message("ERROR", code=code, message=told[:4000]))
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
        raise HandshakeError(f"refused {self.remote}: {why}")


async def dial(
    address: str, hello: dict[str, Any], identity: Identity, farm_key: FarmKey | None
) -> Link:
    """Connect to a node: TCP, TLS, handshake. Raises OSError/ValueError when it cannot
    be reached, HandshakeError when it can but the handshake fails."""
    host, port = parse_address(address)
    stream = await trio.open_tcp_stream(host, port)
    try:
        with trio.fail_after(HANDSHAKE_TIMEOUT):
            tls, listener_cert = await connect_tls(stream)
    except trio.TooSlowError:
        await trio.aclose_forcefully(stream)
        raise HandshakeError(f"{address} did not complete the TLS handshake in time") from None
    except (ssl.SSLError, trio.BrokenResourceError) as exc:
        await trio.aclose_forcefully(stream)
        why = str(exc) or "it closed the connection"
        raise HandshakeError(
            f"TLS with {address} failed ({why}); is it a peerfarm node of the same version? "
            f"(a node also closes connections at once while it refuses a flood of them)"
        ) from None
    link = Link(tls, outbound=True, remote=address)
    try:
        await link.handshake(hello, identity, farm_key, listener_cert)
    except HandshakeError:
        await link.close()
        raise
    return link


async def accept(
    stream: trio.abc.Stream,
    remote: str,
    hello: dict[str, Any],
    identity: Identity,
    farm_key: FarmKey | None,
    ctx: ssl.SSLContext,
) -> Link:
    """Serve the handshake of an inbound connection. Raises HandshakeError (the
    connection is closed) when the peer does not speak TLS or fails the handshake."""
    try:
        with trio.fail_after(HANDSHAKE_TIMEOUT):
            tls = await accept_tls(stream, ctx)
    except PlaintextPeer:
        why = (
            "this node speaks TLS (peerfarm protocol 2 or later) and you sent plaintext; "
            "install the same peerfarm version on every machine of the farm"
        )
        with trio.move_on_after(1):
            try:
                await stream.send_all(encode(message("ERROR", code="tls_required", message=why)))
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
        await trio.aclose_forcefully(stream)
        raise HandshakeError(f"refused {remote}: it does not speak TLS") from None
    except trio.TooSlowError:
        await trio.aclose_forcefully(stream)
        raise HandshakeError(f"refused {remote}: no TLS handshake in time") from None
    except (ssl.SSLError, trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        await trio.aclose_forcefully(stream)
        raise HandshakeError(f"refused {remote}: TLS handshake failed ({exc})") from None
    link = Link(tls, outbound=False, remote=remote)
    try:
        await link.handshake(hello, identity, farm_key)
    except HandshakeError:
        await link.close()
        raise
    return link
