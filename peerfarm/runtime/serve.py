"""Running a headless node from a command line: the options every node-running
command shares, where it listens by default, and serving until it is told to stop.

Used by `peerfarm node` (the CLI) and by the bootstrap server; each is its own
face, so what they share lives here.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

import trio

from peerfarm.runtime.addresses import parse_address
from peerfarm.runtime.node import Node, SetupError
from peerfarm.runtime.store import DataDirError
from peerfarm.security.farm_key import ENV_VAR, FarmKey, default_key_path
from peerfarm.security.identity import IdentityError

_STOP_SIGNALS = [signal.SIGINT, signal.SIGTERM] + (
    [signal.SIGBREAK] if hasattr(signal, "SIGBREAK") else []  # Windows' Ctrl+Break
)


def address_arg(text: str) -> tuple[str, int]:
    """argparse type for HOST:PORT."""
    try:
        return parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_farm_key_option(parser: argparse.ArgumentParser) -> None:
    """--farm-key-file: every command that talks to a farm takes its key (docs/security.md)."""
    parser.add_argument(
        "--farm-key-file",
        type=Path,
        default=None,
        metavar="PATH",
        help=f"the farm's key file (default: ${ENV_VAR}, else {default_key_path()} if it "
        f"exists; without a key, the farm is this machine's loopback only)",
    )


def add_listen_options(parser: argparse.ArgumentParser, port: int) -> None:
    """Where a node listens and how peers reach it."""
    parser.add_argument(
        "--listen",
        type=address_arg,
        default=None,
        metavar="HOST:PORT",
        help=f"where to listen (port 0: any free port); default 0.0.0.0:{port} with a farm "
        f"key, 127.0.0.1:{port} without",
    )
    parser.add_argument(
        "--advertise",
        default="",
        metavar="HOST:PORT",
        help="the address peers should dial, if not the listen address",
    )
    parser.add_argument(
        "--no-zeroconf",
        action="store_true",
        help="do not announce or look for nodes on the LAN (zeroconf/mDNS)",
    )


def listen_address(
    listen: tuple[str, int] | None, farm_key: FarmKey | None, port: int, what: str
) -> tuple[str, int]:
    """--listen, else all interfaces with a farm key and loopback only without one."""
    if listen is not None:
        return listen
    if farm_key is None:
        print(
            f"peerfarm: no farm key, so this {what} listens on loopback only "
            f"(127.0.0.1:{port}) and serves this machine alone. To build a farm of several "
            f"machines, run `peerfarm init` once and copy the key file it writes to each of them",
            file=sys.stderr,
        )
        return ("127.0.0.1", port)
    return ("0.0.0.0", port)


# What a node can meet at start that a user can fix: one clear line, no traceback.
START_ERRORS: tuple[type[Exception], ...] = (SetupError, IdentityError, DataDirError, OSError)


async def serve(node: Node) -> int:
    """Run a node until a signal: the first stops it gracefully (finishing the chunks
    in flight), a second at once (killing renderers, releasing their chunks).

    Raises the first of START_ERRORS the node met (not an exception group)."""
    node.check_setup()  # a clear error before anything starts
    try:
        return await _serve(node)
    except BaseExceptionGroup as group:
        expected = leaves(group)
        if expected and all(isinstance(e, START_ERRORS) for e in expected):
            raise expected[0] from None
        raise


def leaves(group: BaseExceptionGroup) -> list[BaseException]:
    """The exceptions inside a (nested) exception group, in order."""
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


async def _serve(node: Node) -> int:
    async with trio.open_nursery() as nursery:

        async def watch_signals() -> None:
            with trio.open_signal_receiver(*_STOP_SIGNALS) as signals:
                count = 0
                async for _ in signals:
                    count += 1
                    if count <= 2:
                        node.request_stop()  # 1st: finish in flight; 2nd: release and exit
                    else:
                        nursery.cancel_scope.cancel()

        nursery.start_soon(watch_signals)
        address = await nursery.start(node.run)
        # One line on stdout, so scripts (and `peerfarm demo`) learn the address.
        print(f"{node.config.role} {node.name} {node.node_id} listening on {address}", flush=True)
        await node.wait_stopped()
        nursery.cancel_scope.cancel()
    return 0
