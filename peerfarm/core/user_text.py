"""What users type for frames and sizes, parsed the same way everywhere (the CLI, the
app, renderer processes)."""

from __future__ import annotations

import re

from peerfarm.core.refused import Refused

MAX_SIDE = 16_384


def parse_frames(text: str) -> tuple[int, int]:
    """'A-B' or 'N' -> (first, last)."""
    m = re.fullmatch(r"\s*(-?\d+)\s*(?:-\s*(-?\d+)\s*)?", text)
    if not m:
        raise Refused(f"--frames {text!r}: expected A-B (e.g. 1-48) or a single frame N")
    first = int(m.group(1))
    last = int(m.group(2)) if m.group(2) is not None else first
    if last < first:
        raise Refused(f"--frames {text!r}: the last frame is before the first")
    return first, last


_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_bytes(text: str) -> int:
    """'200M', '1.5G', '4096' -> bytes (K, M, G, T are powers of 1024)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise Refused(f"{text!r}: expected a size such as 500M or 2G")
    return int(float(m[1]) * _UNITS[m[2].upper()])


_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """'90', '90s', '30m', '12h', '7d', '2w' -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text, re.IGNORECASE)
    if not m:
        raise Refused(f"{text!r}: expected a duration such as 90s, 30m, 12h or 7d")
    return float(m[1]) * _SECONDS[m[2].lower()]


def parse_size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m or not (0 < int(m.group(1)) <= MAX_SIDE and 0 < int(m.group(2)) <= MAX_SIDE):
        raise Refused(f"--size {text!r}: expected WxH, e.g. 320x240 (1..16384 each)")
    return int(m.group(1)), int(m.group(2))
