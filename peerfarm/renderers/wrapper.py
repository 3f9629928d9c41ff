"""What every renderer wrapper process (`python -m peerfarm.renderers.NAME.run`) shares:
its error kinds (they decide the exit status the worker sees), stopping on a
signal, the --size argument, and UTF-8 output."""

from __future__ import annotations

import argparse
import io
import re
import sys
from collections.abc import Callable
from types import FrameType


class UsageError(Exception):
    """Bad arguments or a bad scene: the job must change, a retry will not help."""


class RunError(Exception):
    """This node could not render the chunk; another node may well succeed."""


class Stopped(BaseException):
    """A signal asked us to stop (BaseException, like KeyboardInterrupt)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def on_signal(signum: int, _frame: FrameType | None) -> None:
    raise Stopped(signum)


def use_utf8_stdio() -> None:
    """Write stdout (the `START`/`FRAME` lines the worker reads as UTF-8) and stderr (the
    chunk's log) in UTF-8, whatever the locale or Windows code page says: a frame path
    outside the code page (C:\\Users\\Michał\\...) must not fail the render. On POSIX,
    characters that stand for undecodable bytes of a file name go out as those bytes.
    Lines end in "\\n" alone, on Windows too. Call it first, before any output."""
    for stream, errors in ((sys.stdout, "surrogateescape"), (sys.stderr, "backslashreplace")):
        if isinstance(stream, io.TextIOWrapper):  # not None (no console), not replaced
            stream.reconfigure(encoding="utf-8", errors=errors, newline="\n")


def size_arg(max_side: int) -> Callable[[str], tuple[int, int]]:
    """argparse type for --size WxH, each side 1..max_side."""

    def parse(text: str) -> tuple[int, int]:
        match = re.fullmatch(r"(\d{1,6})[xX](\d{1,6})", text, re.ASCII)
        if not match or not all(1 <= int(side) <= max_side for side in match.groups()):
            raise argparse.ArgumentTypeError(f"expected WxH, each 1..{max_side}, got {text!r}")
        return int(match[1]), int(match[2])

    return parse
