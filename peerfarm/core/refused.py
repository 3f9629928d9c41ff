"""The error of a user's request that cannot be carried out."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class Refused(ValueError):
    """A request (submit, cancel, pause, ...) refused; the message says why and what to do.

    Nothing changed. Faces show the message as it is (the CLI prints it, the node
    answers REFUSED, the app shows it in the window).
    """


def argument_type(parse: Callable[[str], T]) -> Callable[[str], T]:
    """A command-line option's `type=` from a parser that raises Refused: argparse
    shows the same words (`peerfarm node --tag`, `peerfarm gui --tag`, ...)."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except Refused as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__  # what argparse names in other errors
    return convert
