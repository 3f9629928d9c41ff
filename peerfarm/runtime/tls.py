"""TLS 1.3 on every link (node<->node, node<->bootstrap, CLI<->node).

Certificates are self-signed and pinned by id (the node id is the hash of the
certificate), so TLS does not check them against any authority: it encrypts,
and proves the listener holds its certificate's key. Who may join is decided
after TLS by the farm-key proof (``peerfarm.security.proof``).
"""

from __future__ import annotations

import ssl

import trio

from peerfarm.security.identity import Identity

TLS_RECORD_HANDSHAKE = 0x16  # the first byte a TLS client sends
SNIFF_TIMEOUT = 10.0


class PlaintextPeer(Exception):
    """An inbound connection that does not speak TLS (an old peerfarm, or not a peer)."""


def server_context(identity: Identity) -> ssl.SSLContext:
    if identity.cert_path is None or identity.key_path is None:
        raise ValueError("a listening node needs its identity on disk")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(str(identity.cert_path), str(identity.key_path))
    return ctx


def client_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    # Pinned by id after the handshake (see the module docstring), not by a CA.
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class _Replayed(trio.abc.Stream):
    """A stream whose first bytes were already read (to tell TLS from plaintext)."""

    def __init__(self, prefix: bytes, inner: trio.abc.Stream) -> None:
        self._prefix = prefix
        self._inner = inner

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._prefix:
            data, self._prefix = self._prefix, b""
            return data
        return await self._inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self._inner.aclose()


async def accept_tls(stream: trio.abc.Stream, ctx: ssl.SSLContext) -> trio.SSLStream:
    """Server side: check the peer starts a TLS handshake, then complete it.

    Raises PlaintextPeer (with the bytes it sent) so the caller can answer in
    plaintext why it is refused; ssl.SSLError / trio.BrokenResourceError on a
    failed handshake.
    """
    with trio.fail_after(SNIFF_TIMEOUT):
        first = await stream.receive_some(4096)
    if not first:
        raise trio.BrokenResourceError("closed before the TLS handshake")
    if first[0] != TLS_RECORD_HANDSHAKE:
        raise PlaintextPeer(bytes(first))
    tls = trio.SSLStream(_Replayed(bytes(first), stream), ctx, server_side=True)
    await tls.do_handshake()
    return tls


async def connect_tls(stream: trio.abc.Stream) -> tuple[trio.SSLStream, bytes]:
    """Client side: the TLS stream and the certificate the listener proved it holds."""
    tls = trio.SSLStream(stream, client_context(), server_hostname=None)
    await tls.do_handshake()
    cert = tls.getpeercert(binary_form=True)
    if not cert:
        raise trio.BrokenResourceError("the listener showed no certificate")
    return tls, cert
