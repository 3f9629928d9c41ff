"""Serving a headless node as a service: the options `peerfarm node` and
`peerfarm bootstrap` share beyond runtime/serve.py's (config file, logging,
metrics), parsing them over the config file, and running the node with its
metrics endpoint beside it."""

from __future__ import annotations

import argparse
import errno
import os
from collections.abc import Sequence
from pathlib import Path

import trio

from peerfarm.ops import config
from peerfarm.ops.logs import add_log_options, setup_logging
from peerfarm.ops.metrics import metrics_address, serve_metrics
from peerfarm.runtime.node import Node, SetupError
from peerfarm.runtime.serve import START_ERRORS, leaves, serve
from peerfarm.security.farm_key import ENV_VAR, default_key_path


def add_service_options(parser: argparse.ArgumentParser) -> None:
    """--config/--no-config/--show-config, --log-level, --log-json, --metrics."""
    config.add_config_options(parser)
    group = parser.add_argument_group("logging and metrics (docs/admin-guide.md)")
    add_log_options(group)
    group.add_argument(
        "--metrics",
        type=metrics_address,
        default=None,
        metavar="[HOST:]PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (a port alone: on "
        "127.0.0.1; default: off)",
    )


def parse_service_args(
    parser: argparse.ArgumentParser, argv: Sequence[str], command: str
) -> config.Effective:
    """A served command's options over its config file, its data folder defaulted, and
    logging set up. Raises config.ConfigError."""
    effective = config.parse(
        parser,
        argv,
        command,
        computed={
            "data_dir": lambda: config.default_data_dir(command),
            "farm_key_file": default_farm_key_file,
        },
    )
    args = effective.args
    setup_logging(args.log_level, args.log_json, getattr(args, "verbose", False), args.log_file)
    return effective


def default_farm_key_file() -> tuple[Path | None, str]:
    """The key file a node uses without farm-key-file (as resolve_key picks it), so
    `config show` and `doctor` name it."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]), f"default (${ENV_VAR})"
    if default_key_path().exists():
        return default_key_path(), "default (the file `peerfarm init` writes)"
    return None, "default: none, so this machine's loopback only"


def show_config(effective: config.Effective) -> bool:
    """Print the effective settings if --show-config asked for them; True if it did."""
    fmt = getattr(effective.args, "show_config", None)
    if not fmt:
        return False
    print(effective.show(fmt))
    return True


def data_dir_of(args: argparse.Namespace) -> Path:
    assert args.data_dir is not None  # parse_service_args defaults it
    return Path(args.data_dir)


async def serve_node(node: Node, metrics: tuple[str, int] | None = None) -> int:
    """Serve a node until a signal (runtime/serve.py), with its metrics endpoint if asked.
    A port in use or a folder that cannot be written raises SetupError, not a traceback."""
    try:
        async with trio.open_nursery() as nursery:
            if metrics is not None:
                await nursery.start(serve_metrics, node, metrics)
            code = await serve(node)
            nursery.cancel_scope.cancel()
        return code
    except BaseExceptionGroup as group:
        expected = leaves(group)
        if not expected or not all(isinstance(e, START_ERRORS) for e in expected):
            raise
        first = expected[0]
        if isinstance(first, OSError):
            raise _setup_error(node, first, metrics) from None
        raise first from None
    except OSError as exc:
        raise _setup_error(node, exc, metrics) from None


def _setup_error(node: Node, exc: OSError, metrics: tuple[str, int] | None) -> SetupError:
    if exc.errno == errno.EADDRINUSE:
        return SetupError(
            f"cannot listen: {exc.strerror} (node on {node.config.listen[0]}:"
            f"{node.config.listen[1]}"
            + (f", metrics on {metrics[0]}:{metrics[1]}" if metrics else "")
            + "). Another program, or another peerfarm node, uses that port: stop it, or "
            "choose another port with --listen / --metrics; `peerfarm doctor` shows which"
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        where = f" ({exc.filename})" if exc.filename else ""
        return SetupError(
            f"permission denied{where}: {exc.strerror}. Give the user running the node "
            f"write access to its data folder {node.data_dir.root}, or choose another with "
            f"--data-dir (ports below 1024 need privileges too)"
        )
    return SetupError(f"cannot start: {exc}")
