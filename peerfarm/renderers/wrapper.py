"""What every renderer wrapper process (`python -m peerfarm.renderers.NAME.run`) shares:
its error kinds (they decide the exit status the worker sees), stopping on a
signal, stopping its renderer, the --size argument, and UTF-8 output."""

from __future__ import annotations

import argparse
import io
import re
import signal
import subprocess
import sys
import traceback
from collections.abc import Callable
from types import FrameType

EXIT_FAILED = 1
EXIT_USAGE = 2  # what argparse uses for bad arguments, too


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


def stop_renderer(process: subprocess.Popen[bytes]) -> None:
    """Stop the renderer program: ask, then insist. Further signals must not interrupt this."""
    for name in ("SIGTERM", "SIGINT", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_wrapper(
    prog: str,
    renderer: str,
    run: Callable[[], int],
    failures: tuple[type[Exception], ...] = (RunError,),
) -> int:
    """Run a wrapper's work, stopped by SIGTERM/SIGHUP/Ctrl-Break, and turn how it ended
    into the message and exit status the worker reads: 2 the job must change (usage),
    1 this node failed (`failures`), 128+N stopped by signal N."""
    for name in ("SIGTERM", "SIGHUP", "SIGBREAK"):  # SIGBREAK: Ctrl-Break on Windows
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), on_signal)
    try:
        return run()
    except UsageError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except failures as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except Stopped as stop:
        print(f"{prog}: stopped by signal {stop.signum}; {renderer} was stopped", file=sys.stderr)
        return 128 + stop.signum
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except Exception as exc:  # a bug: keep the traceback for the report
        traceback.print_exc()
        print(f"{prog}: error: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
