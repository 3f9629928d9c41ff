"""A tiny schema checker for plain data (msgpack-decoded maps).

Every message and every action is checked field by field before it is used, so
the rest of the code may trust types and ranges. A check returns None when the
value is fine and a short reason when it is not.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

Check = Callable[[Any], str | None]

_HEX_ID = re.compile(r"[0-9a-f]{16,64}")
_JOB_ID = re.compile(r"[0-9a-z][0-9a-z-]{0,63}")


class SchemaError(ValueError):
    """Raised when plain data does not match its schema; the message names the field."""


def integer(lo: int, hi: int) -> Check:
    def check(v: Any) -> str | None:
        if type(v) is not int:
            return f"expected an integer, got {type(v).__name__}"
        if not lo <= v <= hi:
            return f"expected {lo}..{hi}, got {v}"
        return None

    return check


def number(lo: float, hi: float) -> Check:
    def check(v: Any) -> str | None:
        if type(v) not in (int, float):
            return f"expected a number, got {type(v).__name__}"
        if not math.isfinite(v) or not lo <= v <= hi:
            return f"expected {lo}..{hi}, got {v}"
        return None

    return check


def text(max_len: int, *, allow_empty: bool = True) -> Check:
    def check(v: Any) -> str | None:
        if type(v) is not str:
            return f"expected a string, got {type(v).__name__}"
        if len(v) > max_len:
            return f"longer than {max_len} characters"
        if not allow_empty and not v:
            return "must not be empty"
        return None

    return check


def binary(max_len: int) -> Check:
    def check(v: Any) -> str | None:
        if type(v) is not bytes:
            return f"expected bytes, got {type(v).__name__}"
        if len(v) > max_len:
            return f"longer than {max_len} bytes"
        return None

    return check


def boolean(v: Any) -> str | None:
    return None if type(v) is bool else f"expected true/false, got {type(v).__name__}"


def one_of(*choices: str) -> Check:
    def check(v: Any) -> str | None:
        return None if v in choices and type(v) is str else f"expected one of {choices}, got {v!r}"

    return check


def node_id(v: Any) -> str | None:
    if type(v) is not str or not _HEX_ID.fullmatch(v):
        return "expected a node id (16-64 lowercase hex digits)"
    return None


def job_id(v: Any) -> str | None:
    if type(v) is not str or not _JOB_ID.fullmatch(v):
        return "expected a job id (1-64 of a-z, 0-9, '-')"
    return None


_SHA256 = re.compile(r"[0-9a-f]{64}")


def sha256_hex(v: Any) -> str | None:
    # Exactly 64 lowercase hex digits: a blob id may become a file name, so no
    # other spelling (capitals, separators, dots) is ever let through.
    if type(v) is not str or not _SHA256.fullmatch(v):
        return "expected a SHA-256 (64 lowercase hex digits)"
    return None


_EXTENSION = re.compile(r"[a-z0-9]{1,8}")


def file_extension(v: Any) -> str | None:
    # An image format's name is its frames' file extension: nothing that could
    # change the folder or the rest of a file name.
    if type(v) is not str or not _EXTENSION.fullmatch(v):
        return "expected a format name (1-8 of a-z, 0-9), e.g. png"
    return None


_RENDERER = re.compile(r"[a-z][a-z0-9_-]{0,31}")


def renderer_name(v: Any) -> str | None:
    if type(v) is not str or not _RENDERER.fullmatch(v):
        return "expected a renderer name (a-z, 0-9, '_', '-'; at most 32)"
    return None


# A node's tag (`peerfarm node --tag gpu`), also what a job requires (`--require gpu`):
# lowercase, so "GPU" and "gpu" are one tag (core/requirements.py lowercases input).
_TAG = re.compile(r"[a-z0-9][a-z0-9_.-]{0,31}")


def tag(v: Any) -> str | None:
    if type(v) is not str or not _TAG.fullmatch(v):
        return "expected a tag (1-32 of a-z, 0-9, '_', '.', '-'; starting with a letter or digit)"
    return None


def address(v: Any) -> str | None:
    if type(v) is not str or len(v) > 300:
        return "expected an address HOST:PORT"
    host, sep, port = v.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return f"expected an address HOST:PORT, got {v!r}"
    return None


def list_of(item: Check, max_len: int) -> Check:
    def check(v: Any) -> str | None:
        if type(v) is not list:
            return f"expected a list, got {type(v).__name__}"
        if len(v) > max_len:
            return f"more than {max_len} items"
        for i, x in enumerate(v):
            why = item(x)
            if why:
                return f"[{i}]: {why}"
        return None

    return check


def map_of(key: Check, value: Check, max_len: int) -> Check:
    def check(v: Any) -> str | None:
        if type(v) is not dict:
            return f"expected a map, got {type(v).__name__}"
        if len(v) > max_len:
            return f"more than {max_len} entries"
        for k, x in v.items():
            why = key(k) or value(x)
            if why:
                return f"[{k!r}]: {why}"
        return None

    return check


def record(fields: Mapping[str, Check], optional: Mapping[str, Check] | None = None) -> Check:
    """A map with exactly these string keys (plus optional ones), each checked."""
    optional = optional or {}

    def check(v: Any) -> str | None:
        if type(v) is not dict:
            return f"expected a map, got {type(v).__name__}"
        for k in v:
            if k not in fields and k not in optional:
                return f"unexpected field {k!r}"
        for k, c in fields.items():
            if k not in v:
                return f"missing field {k!r}"
            why = c(v[k])
            if why:
                return f"{k}: {why}"
        for k, c in optional.items():
            if k in v:
                why = c(v[k])
                if why:
                    return f"{k}: {why}"
        return None

    return check
