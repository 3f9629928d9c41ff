"""Talking to a node by hand over real TCP: as a proper peer (TLS + handshake) that
then sends whatever the test wants, or as a misbehaving client."""

from __future__ import annotations

from typing import Any

import trio

from peerfarm.runtime.addresses import parse_address
from peerfarm.runtime.link import Link, dial
from peerfarm.runtime.tls import connect_tls
from peerfarm.security.farm_key import FarmKey
from peerfarm.security.identity import Identity, new_identity
from peerfarm.wire.framing import FrameDecoder, encode
from peerfarm.wire.messages import PROTOCOL_VERSION, message, parse_message


async def tcp_connect(address: str) -> trio.SocketStream:
    return await trio.open_tcp_stream(*parse_address(address))


async def tls_connect(address: str) -> tuple[trio.SSLStream, bytes]:
    """A TLS connection with no handshake on top yet; and the listener's certificate."""
    return await connect_tls(await tcp_connect(address))


def hello(identity: Identity, role: str = "node", name: str = "p", **over: Any) -> dict:
    fields = {
        "protocol": PROTOCOL_VERSION,
        "node_id": identity.node_id,
        "name": name,
        "role": role,
        "address": "",
    }
    return message("HELLO", **{**fields, **over})


async def join_as(
    address: str,
    *,
    identity: Identity | None = None,
    farm_key: FarmKey | None = None,
    role: str = "node",
    name: str = "p",
) -> Link:
    """A peer that passed the handshake (it holds ``farm_key``); send what you like."""
    identity = identity or new_identity()
    return await dial(address, hello(identity, role, name), identity, farm_key)


def identity_sorting_before(node_id: str) -> Identity:
    """An identity whose node id sorts before ``node_id`` (wins equal-time claim races)."""
    while True:
        identity = new_identity()
        if identity.node_id < node_id:
            return identity


async def send(stream: trio.abc.Stream, msg: dict) -> None:
    await stream.send_all(encode(msg))


async def read_messages(stream: trio.abc.Stream, count: int, timeout: float = 10) -> list[dict]:
    """Up to ``count`` messages (fewer if the node closes the connection)."""
    dec, out = FrameDecoder(), []
    with trio.fail_after(timeout):
        while len(out) < count:
            try:
                data = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                break
            if not data:
                break
            out.extend(parse_message(m) for m in dec.feed(data))
    return out
