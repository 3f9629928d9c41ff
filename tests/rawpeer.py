"""Talking to a node by hand over real TCP: as a proper peer (TLS + handshake) that
then sends whatever the test wants, or as a misbehaving client."""

from __future__ import annotations

from typing import Any

import trio

from peerfarm.core.features import SPOKEN
from peerfarm.core.feeds import GENESIS, action_hash
from peerfarm.runtime.addresses import parse_address
from peerfarm.runtime.link import Link, dial
from peerfarm.runtime.tls import connect_tls
from peerfarm.security.farm_key import FarmKey
from peerfarm.security.identity import Identity, new_identity
from peerfarm.wire.framing import FrameDecoder, encode
from peerfarm.wire.messages import PROTOCOL_VERSION, message, parse_message


def on_feed(identity: Identity, actions: list[dict], prev: bytes = GENESIS) -> list[dict]:
    """Wire actions of ``identity`` (in seq order, starting after ``prev``) as a member
    sends them: chained, each signed, the certificate on its first (core/feeds.py)."""
    out = []
    for raw in actions:
        digest = action_hash(
            raw["type"], raw["payload"], raw["origin"], raw["seq"], raw["lamport"], prev
        )
        signed = {**raw, "prev": prev, "sig": identity.sign(digest)}
        if raw["seq"] == 1:
            signed["cert"] = identity.cert_der
        out.append(signed)
        prev = digest
    return out


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
        "features": sorted(SPOKEN),  # a peer of this release (refused without them)
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


async def record_handshake(address: str, farm_key: FarmKey) -> tuple[dict, dict, dict, dict]:
    """A member's real handshake as a client, recorded message by message:
    (our HELLO, the node's HELLO, our PROOF, the node's answer)."""
    import os

    from peerfarm.security.proof import make_proof, transcript

    member = new_identity()
    stream, listener_cert = await tls_connect(address)
    nonce = os.urandom(32)
    mine = hello(member, role="client", cert=member.cert_der, nonce=nonce, key_id=farm_key.key_id)
    await send(stream, mine)
    (theirs,) = await read_messages(stream, 1)
    data = transcript("dialer", member.cert_der, listener_cert, nonce, theirs["nonce"])
    proof = message("PROOF", **make_proof(member, farm_key, data))
    await send(stream, proof)
    (answer,) = await read_messages(stream, 1)
    await stream.aclose()
    return mine, theirs, proof, answer


async def replay_handshake(address: str, mine: dict, proof: dict) -> tuple[dict, list[dict]]:
    """Send a recorded HELLO and PROOF on a new connection (no key needed):
    (the node's new HELLO, what it answered the replayed PROOF with)."""
    stream, _ = await tls_connect(address)
    await send(stream, mine)
    (theirs,) = await read_messages(stream, 1)
    await send(stream, proof)
    replies = await read_messages(stream, 2)
    await stream.aclose()
    return theirs, replies
