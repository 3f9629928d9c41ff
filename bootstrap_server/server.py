"""The bootstrap server: a node that never renders and answers JOIN.

`peerfarm bootstrap ...` (or `python -m bootstrap_server ...`) runs it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import trio

from peerfarm.ops.config import ConfigError, default_data_dir
from peerfarm.ops.serving import add_service_options, parse_service_args, serve_node, show_config
from peerfarm.runtime.node import COMPACT_AFTER, Node, NodeConfig
from peerfarm.runtime.serve import (
    START_ERRORS,
    add_farm_key_option,
    add_listen_options,
    listen_address,
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
        default=None,
        metavar="DIR",
        help="where it keeps its identity, known-worker list and log (default: "
        f"{default_data_dir('bootstrap')[0]}; as a system service, its own)",
    )
    parser.add_argument(
        "--compact-after",
        type=int,
        default=COMPACT_AFTER,
        metavar="N",
        help="fold the log's history every member holds into a snapshot once it holds N "
        f"such actions (default {COMPACT_AFTER}; 0: never)",
    )
    add_service_options(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """`peerfarm bootstrap ARGS`: ARGS over the config file's [bootstrap] settings."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        effective = parse_service_args(build_parser(), argv, "bootstrap")
        if show_config(effective):
            return 0
        args = effective.args
        key = resolve_key(args.farm_key_file)
        listen = listen_address(args.listen, key, PORT, "bootstrap server")
        node = bootstrap_node(listen, args.data_dir, farm_key=key)
        node.config.advertise = args.advertise
        node.config.zeroconf = not args.no_zeroconf
        node.config.compact_after = max(args.compact_after, 0)
        return trio.run(serve_node, node, args.metrics)
    except (ConfigError, FarmKeyError, *START_ERRORS) as exc:
        print(f"peerfarm: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
