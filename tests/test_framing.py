"""Framing and message parsing: malformed, oversized and truncated input is refused."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peerfarm.wire.framing import FrameDecoder, ProtocolError, encode
from peerfarm.wire.messages import MessageError, message, parse_message

HELLO = message(
    "HELLO",
    protocol=2,
    node_id="a" * 64,
    name="n",
    role="node",
    address="h:1",
    cert=b"c" * 300,
    nonce=b"n" * 32,
    key_id="0123456789abcdef",
)


def test_messages_split_anywhere_reassemble():
    data = encode(HELLO) + encode(message("STATUS")) + encode(HELLO)
    for cut in range(len(data) + 1):
        dec = FrameDecoder()
        out = dec.feed(data[:cut]) + dec.feed(data[cut:])
        assert [parse_message(m)["type"] for m in out] == ["HELLO", "STATUS", "HELLO"]


def test_truncated_input_yields_nothing_yet():
    dec = FrameDecoder()
    assert dec.feed(encode(HELLO)[:-3]) == []


def test_oversized_message_is_refused():
    dec = FrameDecoder(max_message_bytes=1024)
    with pytest.raises(ProtocolError, match="larger than the limit"):
        dec.feed(encode(message("FRAME", job_id="j", frame=1, data=b"x" * 5000)))


def test_malformed_bytes_are_refused():
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(b"\xc1" * 10)  # 0xc1 is never valid msgpack


def test_non_string_map_keys_are_refused():
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(msgpack.packb({1: 2}))
    # bytes keys decode, but no schema accepts them
    (obj,) = FrameDecoder().feed(msgpack.packb({b"type": "STATUS"}, use_bin_type=True))
    with pytest.raises(MessageError):
        parse_message(obj)


@pytest.mark.parametrize(
    "msg, reason",
    [
        ([1, 2], "message map"),
        ({"type": "NOPE"}, "unknown message type"),
        ({"type": 5}, "unknown message type"),
        ({"type": "HELLO"}, "missing field"),
        ({**HELLO, "role": "king"}, "role"),
        ({**HELLO, "extra": 1}, "unexpected field"),
        ({"type": "VV", "vv": {"zz": 1}, "digest": ""}, "node id"),
        ({"type": "ACTIONS", "actions": "x"}, "expected a list"),
    ],
)
def test_bad_messages_name_the_problem(msg, reason):
    with pytest.raises(MessageError, match=reason):
        parse_message(msg)


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_crash_the_decoder(data):
    dec = FrameDecoder(max_message_bytes=4096)
    try:
        objs = dec.feed(data)
    except ProtocolError:
        return
    for obj in objs:
        try:
            parse_message(obj)
        except MessageError:
            pass
