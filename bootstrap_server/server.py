"""The bootstrap server: a node that never renders and answers JOIN.

`peerfarm bootstrap ...` (or `python -m bootstrap_server ...`) runs it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import trio

from peerfarm.runtime.node import Node, NodeConfig
from peerfarm.runtime.serve import (
    START_ERRORS,
    add_farm_key_option,
    add_listen_options,
    listen_address,
    serve,
)
from peerfarm.security.farm_key import FarmKey, FarmKeyError, resolve_key

PORT = 7000


def bootstrap_node(
    listen: tuple[str, int],
    data_dir: Path,
    name: str = "bootstrap",
    farm_key: FarmKey | None = None,
) -> Node:
    """A node that never renders and answers JOIN with its known-worker list and version
    vector (peerfarm/machine/membership.py); it mirrors the farm's state like any node."""
    config = NodeConfig(
        listen=listen,
        data_dir=data_dir,
        slots=0,
        name=name,
        renders=False,
        role="bootstrap",
        farm_key=farm_key,
    )
    return Node(config)


async def run_bootstrap(
    listen: tuple[str, int],
    data_dir: Path,
    *,
    farm_key: FarmKey | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    await bootstrap_node(listen, data_dir, farm_key=farm_key).run(task_status=task_status)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="peerfarm bootstrap",
        description="Run a bootstrap server: the farm's meeting point, a peer that mirrors "
        "the farm's state and never renders. When it dies, the farm goes on.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    add_farm_key_option(parser)
    add_listen_options(parser, PORT)
    parser.add_argument(
        "--data-dir",
        type=Path,
        required=True,
        metavar="DIR",
        help="where it keeps its identity, known-worker list and log",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        key = resolve_key(args.farm_key_file)
        listen = listen_address(args.listen, key, PORT, "bootstrap server")
        node = bootstrap_node(listen, args.data_dir, farm_key=key)
        node.config.advertise = args.advertise
        node.config.zeroconf = not args.no_zeroconf
        return trio.run(serve, node)
    except (FarmKeyError, *START_ERRORS) as exc:
        print(f"peerfarm: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
