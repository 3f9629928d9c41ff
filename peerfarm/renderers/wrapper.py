"""What every renderer wrapper process (`python -m peerfarm.renderers.NAME.run`) shares:
its error kinds (they decide the exit status the worker sees), stopping on a
signal, and the --size argument."""

from __future__ import annotations

import argparse
import re
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


def size_arg(max_side: int) -> Callable[[str], tuple[int, int]]:
    """argparse type for --size WxH, each side 1..max_side."""

    def parse(text: str) -> tuple[int, int]:
        match = re.fullmatch(r"(\d{1,6})[xX](\d{1,6})", text, re.ASCII)
        if not match or not all(1 <= int(side) <= max_side for side in match.groups()):
            raise argparse.ArgumentTypeError(f"expected WxH, each 1..{max_side}, got {text!r}")
        return int(match[1]), int(match[2])

    return parse
