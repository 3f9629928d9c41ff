"""Only members of the farm get in: farm keys, node identities, TLS and the
handshake proof, and the bounds on inbound connections. Real TCP on loopback,
nodes in this process (the multi-process attacks are in test_security_farm.py)."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import sys

import pytest
import trio
import trio.testing
from rawpeer import (
    hello,
    read_messages,
    record_handshake,
    replay_handshake,
    send,
    tcp_connect,
    tls_connect,
)

from peerfarm.runtime import link as link_module
from peerfarm.runtime import mesh as mesh_module
from peerfarm.runtime.client import ClientError, NodeClient
from peerfarm.runtime.link import HandshakeError, Link
from peerfarm.runtime.node import Node, NodeConfig, SetupError
from peerfarm.runtime.tls import accept_tls, connect_tls, server_context
from peerfarm.security.farm_key import (
    FarmKeyError,
    key_id_of,
    load_key,
    new_key,
    resolve_key,
    write_key,
)
from peerfarm.security.identity import (
    IdentityError,
    load_or_create_identity,
    new_identity,
    node_id_of,
)
from peerfarm.security.proof import make_proof, transcript
from peerfarm.wire.framing import FrameDecoder, encode
from peerfarm.wire.messages import message, parse_message

KEY = new_key()


def make_node(tmp_path, name="n1", farm_key=KEY, **kw) -> Node:
    kw.setdefault("zeroconf", False)
    kw.setdefault("slots", 0)
    config = NodeConfig(
        listen=("127.0.0.1", 0), data_dir=tmp_path / name, name=name, farm_key=farm_key, **kw
    )
    return Node(config)


def run_with_node(tmp_path, body, **kw):
    """Start a node, run ``body(node, address)``, stop the node; return what body returns."""

    async def main():
        node = make_node(tmp_path, **kw)
        async with trio.open_nursery() as nursery:
            address = await nursery.start(node.run)
            try:
                with trio.fail_after(60):
                    return await body(node, address)
            finally:
                node.request_stop()
                node.request_stop()

    return trio.run(main)


async def status_with(address, key):
    async with NodeClient(address, key) as client:
        return await client.status()


# -- the farm key file ---------------------------------------------------------------


def test_a_key_file_is_private_never_overwritten_and_reads_back(tmp_path):
    path = tmp_path / "keys" / "farm.key"
    key = new_key()
    write_key(key, path)
    if sys.platform != "win32":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert key.secret.hex() not in repr(key)  # never printed by accident
    loaded = load_key(path)
    assert loaded.secret == key.secret and loaded.key_id == key.key_id
    with pytest.raises(FarmKeyError, match="never overwritten"):
        write_key(new_key(), path)
    assert load_key(path).secret == key.secret


@pytest.mark.parametrize(
    "content", ["", "hello\n", "pfk1:short\n", "pfk1:" + "A" * 40 + "\n", "pfk1:!!!!\n"]
)
def test_a_malformed_key_file_is_refused_clearly(tmp_path, content):
    path = tmp_path / "farm.key"
    path.write_text(content)
    with pytest.raises(FarmKeyError, match="not a peerfarm farm key file"):
        load_key(path)


def test_a_missing_key_file_says_how_to_get_one(tmp_path):
    with pytest.raises(FarmKeyError, match="peerfarm init"):
        load_key(tmp_path / "nope.key")


def test_the_key_comes_from_option_then_environment_then_default(tmp_path, monkeypatch):
    a, b, c = (tmp_path / f"{n}.key" for n in "abc")
    for path in (a, b):
        write_key(new_key(), path)
    assert not c.exists()
    monkeypatch.setenv("PEERFARM_FARM_KEY_FILE", str(b))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("APPDATA", str(tmp_path / "appdata"))
    assert resolve_key(a).secret == load_key(a).secret
    assert resolve_key(None).secret == load_key(b).secret
    monkeypatch.delenv("PEERFARM_FARM_KEY_FILE")
    assert resolve_key(None) is None  # no default file yet: no key, loopback only
    from peerfarm.security.farm_key import default_key_path

    write_key(new_key(), default_key_path())
    assert resolve_key(None).secret == load_key(default_key_path()).secret


# -- node identity -------------------------------------------------------------------


def test_identity_persists_and_the_node_id_is_the_certificate_hash(tmp_path):
    first = load_or_create_identity(tmp_path)
    again = load_or_create_identity(tmp_path)
    assert first.node_id == again.node_id == hashlib.sha256(first.cert_der).hexdigest()
    assert node_id_of(first.cert_der) == first.node_id
    if sys.platform != "win32":
        assert stat.S_IMODE((tmp_path / "node.key").stat().st_mode) == 0o600
    other = tmp_path / "other"
    load_or_create_identity(other)
    (tmp_path / "node.key").write_bytes((other / "node.key").read_bytes())
    with pytest.raises(IdentityError, match="does not belong"):
        load_or_create_identity(tmp_path)


def test_a_node_keeps_its_certificate_id_across_restarts(tmp_path):
    async def body(node, address):
        return node.node_id

    first = run_with_node(tmp_path, body)
    second = run_with_node(tmp_path, body)
    assert first == second == load_or_create_identity(tmp_path / "n1").node_id


# -- who gets in ---------------------------------------------------------------------


def test_only_holders_of_the_farm_key_get_in(tmp_path, caplog):
    other_farm = new_key()

    async def body(node, address):
        results = {"right": await status_with(address, KEY)}
        for label, key in (("wrong", other_farm), ("none", None)):
            try:
                await status_with(address, key)
            except ClientError as exc:
                results[label] = str(exc)
        results["after"] = await status_with(address, KEY)
        return results

    with caplog.at_level(logging.WARNING):
        results = run_with_node(tmp_path, body)
    assert results["right"]["farm_key_id"] == KEY.key_id
    assert "belongs to another farm" in results["wrong"]
    assert f"key id {KEY.key_id}" in results["wrong"]
    assert "needs a farm key" in results["none"] and "--farm-key-file" in results["none"]
    assert results["after"]["state_digest"] == results["right"]["state_digest"]
    assert "refused 127.0.0.1" in caplog.text and "another farm's key" in caplog.text


def test_a_keyed_client_is_told_a_keyless_node_is_not_its_farm(tmp_path):
    async def body(node, address):
        with pytest.raises(ClientError, match="has no farm key"):
            await status_with(address, KEY)
        return await status_with(address, None)

    st = run_with_node(tmp_path, body, farm_key=None)
    assert st["farm_key_id"] == "none"


def test_without_a_key_a_node_refuses_to_listen_beyond_loopback(tmp_path):
    node = Node(NodeConfig(listen=("0.0.0.0", 0), data_dir=tmp_path / "n", zeroconf=False, slots=0))
    with pytest.raises(SetupError, match="peerfarm init"):
        trio.run(node.run)
    assert not (tmp_path / "n").exists()  # refused before touching anything


def test_a_plaintext_client_is_told_to_speak_tls(tmp_path):
    async def body(node, address):
        stream = await tcp_connect(address)
        ident = new_identity()
        await send(stream, hello(ident, cert=ident.cert_der, nonce=b"n" * 32, key_id="none"))
        replies = await read_messages(stream, 2)
        return replies, await status_with(address, KEY)

    replies, st = run_with_node(tmp_path, body)
    assert [r["type"] for r in replies] == ["ERROR"]  # then the node closed
    assert replies[0]["code"] == "tls_required"
    assert st["peers"] == []


def test_a_replayed_handshake_is_refused(tmp_path):
    """Someone who recorded a member's handshake (a relay, say) replays it on a new
    connection: the node's fresh nonce makes the recorded proof worthless."""

    async def record_and_replay(node, address):
        mine, first_hello, proof, accepted = await record_handshake(address, KEY)
        second_hello, replies = await replay_handshake(address, mine, proof)
        return accepted, second_hello, first_hello, replies

    accepted, second_hello, first_hello, replies = run_with_node(tmp_path, record_and_replay)
    assert accepted["type"] == "PROOF"  # the original handshake was good
    assert second_hello["nonce"] != first_hello["nonce"]
    assert [r["type"] for r in replies] == ["ERROR"]
    assert replies[0]["code"] == "farm_key" and "proof is wrong" in replies[0]["message"]


def test_a_stolen_node_id_cannot_be_claimed(tmp_path):
    """A member that shows another node's certificate (and id) cannot sign for it."""

    async def body(node, address):
        victim, thief = new_identity(), new_identity()
        stream, listener_cert = await tls_connect(address)
        nonce = os.urandom(32)
        await send(
            stream,
            hello(victim, cert=victim.cert_der, nonce=nonce, key_id=KEY.key_id),
        )
        (their_hello,) = await read_messages(stream, 1)
        data = transcript("dialer", victim.cert_der, listener_cert, nonce, their_hello["nonce"])
        await send(stream, message("PROOF", **make_proof(thief, KEY, data)))
        return await read_messages(stream, 2)

    replies = run_with_node(tmp_path, body)
    assert [r["type"] for r in replies] == ["ERROR"]
    assert "signature does not match its certificate" in replies[0]["message"]


def test_an_unfinished_handshake_expires(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(link_module, "HANDSHAKE_TIMEOUT", 1.0)

    async def body(node, address):
        stream, _ = await tls_connect(address)  # TLS done, then silence
        started = trio.current_time()
        closed = await read_messages(stream, 1, timeout=10)
        return closed, trio.current_time() - started, await status_with(address, KEY)

    with caplog.at_level(logging.WARNING):
        closed, waited, st = run_with_node(tmp_path, body)
    assert closed == [] and waited < 9
    assert "did not complete the handshake in time" in caplog.text
    assert st["farm_key_id"] == KEY.key_id


def test_idle_connections_from_one_address_cannot_fill_every_handshake_slot(tmp_path, monkeypatch):
    monkeypatch.setattr(mesh_module, "MAX_PENDING_PER_ADDRESS", 4)

    async def body(node, address):
        idle = [await tcp_connect(address) for _ in range(12)]
        await trio.sleep(0.3)
        pending = node.mesh.pending_handshakes()
        # Connections beyond the limit were closed at once.
        closed = 0
        for stream in idle:
            with trio.move_on_after(0.2):
                try:
                    if await stream.receive_some(10) == b"":
                        closed += 1
                except trio.BrokenResourceError:
                    closed += 1
        for stream in idle:
            await stream.aclose()
        return pending, closed

    pending, closed = run_with_node(tmp_path, body)
    assert pending == 4
    assert closed == 8


# -- a relay in the middle -------------------------------------------------------------


def test_a_relay_between_two_members_learns_nothing_and_cannot_join(tmp_path, caplog):
    """Member B dials what it thinks is a peer; it is a relay to member A. The naive
    relay forwards A's HELLO (B sees a certificate that differs from TLS's); the
    clever one rewrites it to its own certificate (A then sees B's proof name the
    relay's certificate). Both are refused and no farm data crosses the relay."""
    relay_dir = tmp_path / "relay"
    relay_identity = load_or_create_identity(relay_dir)

    async def run_relay(target: str, rewrite: bool, seen: list[str], task_status):
        ctx = server_context(relay_identity)

        async def handle(stream):
            try:
                inner = await accept_tls(stream, ctx)
                host, port = target.rsplit(":", 1)
                outer, _ = await connect_tls(await trio.open_tcp_stream(host, int(port)))
            except (OSError, trio.BrokenResourceError):
                return

            async def pump(src, dst, from_listener: bool):
                dec = FrameDecoder()
                try:
                    while data := await src.receive_some(65536):
                        for raw in dec.feed(data):
                            msg = parse_message(raw)
                            seen.append(msg["type"])
                            if rewrite and from_listener and msg["type"] == "HELLO":
                                msg = {
                                    **msg,
                                    "cert": relay_identity.cert_der,
                                    "node_id": relay_identity.node_id,
                                }
                            await dst.send_all(encode(msg))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
                with trio.move_on_after(1):
                    await trio.aclose_forcefully(dst)

            async with trio.open_nursery() as pumps:
                pumps.start_soon(pump, inner, outer, False)
                pumps.start_soon(pump, outer, inner, True)

        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, handle, listeners)
            task_status.started(f"127.0.0.1:{port}")
            await trio.sleep_forever()

    async def main(rewrite: bool):
        seen: list[str] = []
        a = make_node(tmp_path, f"a{rewrite}")
        async with trio.open_nursery() as nursery:
            a_address = await nursery.start(a.run)
            relay_address = await nursery.start(run_relay, a_address, rewrite, seen)
            host, port = relay_address.rsplit(":", 1)
            b = make_node(tmp_path, f"b{rewrite}", bootstraps=[(host, int(port))])
            await nursery.start(b.run)
            await trio.sleep(2.5)  # several dial attempts through the relay
            linked = (a.link_to(b.node_id), b.link_to(a.node_id))
            a.request_stop()
            b.request_stop()
            a.request_stop()
            b.request_stop()
            await a._stopped.wait()
            await b._stopped.wait()
            nursery.cancel_scope.cancel()
        return seen, linked

    with caplog.at_level(logging.WARNING):
        naive_seen, naive_linked = trio.run(main, False)
        clever_seen, clever_linked = trio.run(main, True)
    assert naive_linked == (None, None) and clever_linked == (None, None)
    for seen in (naive_seen, clever_seen):
        assert seen, "the relay was never dialed"
        # Only handshake messages ever crossed: no actions, no state, no frames.
        assert set(seen) <= {"HELLO", "PROOF", "ERROR"}, seen
    assert "not the one it showed in TLS" in caplog.text  # B caught the naive relay
    assert "proof is wrong" in caplog.text  # A caught the clever one


def test_link_handshake_errors_are_handshake_errors():
    """A peer that closes mid-handshake is a HandshakeError, not a crash."""

    async def main():
        a, b = trio.testing.memory_stream_pair()
        link = Link(a, outbound=True, remote="memory")
        await b.aclose()
        with pytest.raises(HandshakeError, match="connection lost|closed the connection"):
            await link.handshake({"type": "HELLO"}, new_identity(), KEY, b"")

    trio.run(main)


def test_key_ids_name_the_farm_not_the_key():
    key = new_key()
    assert key_id_of(None) == "none"
    assert len(key.key_id) == 16 and key.key_id not in key.secret.hex()
    assert key_id_of(key) == key.key_id != new_key().key_id


def test_lan_discovery_links_only_nodes_of_the_same_farm(tmp_path, caplog):
    """Three nodes announce themselves on the LAN (zeroconf, loopback): the two of
    one farm link up; the third, of another farm, is never even dialed."""

    async def main():
        other = new_key()
        nodes = [
            make_node(tmp_path, "a", zeroconf=True),
            make_node(tmp_path, "b", zeroconf=True),
            make_node(tmp_path, "stranger", zeroconf=True, farm_key=other),
        ]
        async with trio.open_nursery() as nursery:
            for node in nodes:
                await nursery.start(node.run)
            a, b, stranger = nodes
            with trio.fail_after(30):
                while a.link_to(b.node_id) is None:
                    await a.wait_for_change(0.2)
            await trio.sleep(2)
            result = (
                set(a.known_peers()),
                set(b.known_peers()),
                set(stranger.known_peers()),
                stranger.linked_peers(),
            )
            for node in nodes:
                node.request_stop()
                node.request_stop()
        return nodes, result

    with caplog.at_level(logging.WARNING):
        nodes, (a_kwl, b_kwl, stranger_kwl, stranger_links) = trio.run(main)
    a, b, stranger = nodes
    assert b.node_id in a_kwl and a.node_id in b_kwl
    assert stranger.node_id not in a_kwl | b_kwl
    assert not stranger_kwl and not stranger_links
    assert "refused" not in caplog.text  # nobody knocked on a foreign farm's door
