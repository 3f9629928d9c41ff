"""msgpack framing with strict limits.

msgpack objects are self-delimiting, so a stream of them needs no length
prefix. One ``Unpacker`` per connection; its ``max_buffer_size`` bounds the
memory a peer can make us hold. Any decode error means the peer is broken or
hostile: the caller drops the connection.
"""

from __future__ import annotations

from typing import Any

import msgpack

MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # a rendered frame travels in one message
# Until a connection has shown the farm key, it may not make us hold more than this:
# a handshake message (a certificate, a nonce, a proof) is a few KiB.
HANDSHAKE_MESSAGE_BYTES = 64 * 1024


class ProtocolError(Exception):
    """The peer sent something we cannot accept; the connection must be closed."""


def encode(message: dict[str, Any]) -> bytes:
    return msgpack.packb(message, use_bin_type=True)


class FrameDecoder:
    """Feed bytes in, get decoded top-level objects out.

    ``limit`` bounds the bytes held for a message not yet complete; it can be raised
    later (a connection starts at the handshake's limit and gets the full one once the
    peer has proved it holds the farm key).
    """

    def __init__(
        self, max_message_bytes: int = MAX_MESSAGE_BYTES, limit: int | None = None
    ) -> None:
        self.max_message_bytes = max_message_bytes
        self.limit = max_message_bytes if limit is None else limit
        self._fed = 0
        self._unpacker = msgpack.Unpacker(
            raw=False,
            strict_map_key=True,  # map keys must be str (or bytes, which the schemas refuse)
            max_buffer_size=max_message_bytes,
            use_list=True,
        )

    def feed(self, data: bytes) -> list[Any]:
        self._fed += len(data)
        try:
            self._unpacker.feed(data)
        except msgpack.BufferFull:
            raise ProtocolError(
                f"message larger than the limit of {self.max_message_bytes} bytes"
            ) from None
        out = []
        try:
            for obj in self._unpacker:
                out.append(obj)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise ProtocolError(f"malformed msgpack data: {exc}") from None
        if self._fed - self._unpacker.tell() > self.limit:
            raise ProtocolError(f"message larger than the limit of {self.limit} bytes")
        return out
