"""The `peerfarm` command line: init, node, gui, bootstrap, submit, status, job control
(cancel, pause, resume, retry, priority), logs, gc, demo, doctor, config.

Every command but init, demo and config reads its settings from the config file
under its options (peerfarm/ops/config.py); `peerfarm doctor` reads the node's."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path

import trio

from peerfarm import __version__
from peerfarm.cli.commands import (
    JOB_CONTROLS,
    collect_garbage,
    control_job,
    init_farm,
    show_logs,
    status,
    submit,
)
from peerfarm.cli.errors import CliError
from peerfarm.core.chunk_order import ORDERS
from peerfarm.core.refused import Refused, argument_type
from peerfarm.core.requirements import parse_max_nodes, parse_memory, parse_tag, parse_tags
from peerfarm.core.retention import Policy as RetentionPolicy
from peerfarm.core.user_text import parse_bytes, parse_duration
from peerfarm.ops import config
from peerfarm.ops.logs import setup_logging
from peerfarm.ops.serving import (
    add_service_options,
    parse_service_args,
    serve_node,
    show_config,
)
from peerfarm.programs import PROGRAMS, set_locations
from peerfarm.runtime.client import ClientError
from peerfarm.runtime.node import (
    COMPACT_AFTER,
    DEFAULT_MIN_FREE_BYTES,
    DEFAULT_RETENTION_INTERVAL,
    Node,
    NodeConfig,
)
from peerfarm.runtime.serve import (
    START_ERRORS,
    add_farm_key_option,
    add_listen_options,
    address_arg,
    listen_address,
)
from peerfarm.security.farm_key import FarmKeyError, resolve_key

log = logging.getLogger("peerfarm")

# Commands that start another face of peerfarm. The CLI does not import those faces
# (faces stay independent of each other; docs/architecture.md): this table, in this
# one place, names the module whose main(argv) runs each one.
OTHER_FACES = {
    "gui": "ui.launch",  # the desktop app (needs PySide6: pip install 'peerfarm[gui]')
    "bootstrap": "bootstrap_server.server",
    "bench": "peerfarm.cli.bench",  # benchmarks that print JSON
}


def _priority(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not -1000 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"{text}: give a whole number from -1000 to 1000")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="peerfarm",
        description="A peer-to-peer render farm: every machine renders and submits.",
    )
    parser.add_argument("--version", action="version", version=f"peerfarm {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    key = argparse.ArgumentParser(add_help=False)
    add_farm_key_option(key)

    p = sub.add_parser(
        "init", parents=[key], help="create a farm: write a new farm key and say how to join"
    )

    p = sub.add_parser("node", parents=[key], help="run a node (worker and manager)")
    add_node_options(p)
    add_service_options(p)

    p = sub.add_parser(
        "doctor",
        parents=[key],
        help="check this machine for running a node (and the app) and say what to fix",
        description="Check this machine for `peerfarm node` with these options (over the "
        "config file's [node] settings, as `peerfarm node` reads them) and for the desktop "
        "app: renderers, farm key, ports, bootstrap servers, LAN discovery, clock, disk, Qt.",
    )
    add_node_options(p)
    add_service_options(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--offline",
        action="store_true",
        help="skip the checks that use the network (bootstrap servers, LAN discovery)",
    )

    for command, what in (
        (
            "gui",
            "the desktop app: a node (worker and manager) with a window; "
            "options given here override its saved settings (see `peerfarm gui --help`)",
        ),
        (
            "bootstrap",
            "run a bootstrap server, a peer that never renders (see `peerfarm bootstrap --help`)",
        ),
        ("bench", "measure the farm; each bench prints JSON (see `peerfarm bench --help`)"),
    ):
        sub.add_parser(command, help=what, add_help=False)  # main() hands it over first

    p = sub.add_parser(
        "submit", parents=[key], help="submit a job; prints the job id on the first line"
    )
    p.add_argument(
        "scene",
        metavar="SCENE",
        help="a scene file, or builtin:NAME for a shipped scene (builtin:demo)",
    )
    p.add_argument("--node", required=True, metavar="HOST:PORT", help="the node to submit to")
    p.add_argument("--frames", metavar="A-B", help="frame range (default: the scene's own)")
    p.add_argument(
        "--chunk",
        type=int,
        default=None,
        metavar="N",
        help="frames per chunk, fixed (default: each node claims runs of frames sized to its "
        "measured speed, big early and small at the end; docs/scheduling.md)",
    )
    p.add_argument(
        "--tiles",
        type=int,
        default=1,
        metavar="N",
        help="cut each frame into N tiles rendered by different nodes and stitched by the "
        "submitter; each chunk is then one tile (default 1: whole frames)",
    )
    p.add_argument(
        "--size",
        metavar="WxH",
        help="image size (default: the scene's own; 320x240 for built-in scenes)",
    )
    p.add_argument(
        "--format",
        default=None,
        metavar="FMT",
        help="image format of the frames, also their file extension (default: the .blend's "
        "own for Blender, else png); builtin: png jpg tiff bmp; povray: png jpg tga bmp ppm "
        "exr hdr; blender: png jpg tiff bmp tga exr hdr",
    )
    p.add_argument("--renderer", default=None, metavar="NAME", help="renderer (default: builtin)")
    p.add_argument(
        "--renderer-option",
        action="append",
        default=[],
        metavar="OPT",
        help="an option for the renderer, e.g. +A0.3 for POV-Ray, engine=CYCLES for Blender "
        "(allow-listed; repeatable)",
    )
    p.add_argument(
        "--renderer-version",
        default="",
        metavar="VERSION",
        help="only nodes whose renderer version starts with this take the job (e.g. 3.7)",
    )
    p.add_argument(
        "--output",
        type=Path,
        metavar="DIR",
        help="output folder on the node's machine (default ./peerfarm-output/NAME)",
    )
    p.add_argument("--name", default=None, help="job name (default: the scene's name)")
    p.add_argument(
        "--padding",
        type=int,
        default=4,
        metavar="N",
        help="digits of the frame number in file names (default 4: name_0001.png)",
    )
    p.add_argument("--priority", type=int, default=0, help="higher renders first (default 0)")
    p.add_argument(
        "--video",
        action="store_true",
        help="also make NAME.mp4 (H.264) of the frames; needs ffmpeg on the node you submit to",
    )
    p.add_argument(
        "--fps",
        type=int,
        default=24,
        metavar="N",
        help="frames per second of the video and the GIF (default 24)",
    )
    p.add_argument(
        "--wait",
        action="store_true",
        help="show progress and return once every frame is in the output folder",
    )
    p.add_argument(
        "--order",
        choices=ORDERS,
        default=None,
        help="which frames render first: in-order (default) or spread (first, last, middle, "
        "quarters...: the whole shot early; the default with --watch)",
    )
    p.add_argument(
        "--require",
        type=argument_type(parse_tag),
        action="append",
        default=[],
        metavar="TAG",
        help="render only on nodes started with --tag TAG (repeat: nodes with every tag)",
    )
    p.add_argument(
        "--require-memory",
        type=argument_type(parse_memory),
        default=0,
        metavar="SIZE",
        help="render only on nodes with at least this much memory (e.g. 16G, 512M)",
    )
    p.add_argument(
        "--max-nodes",
        type=argument_type(parse_max_nodes),
        default=0,
        metavar="N",
        help="at most N nodes render this job at once (default: no limit)",
    )
    p.add_argument(
        "--preview",
        action="store_true",
        help="first a quick pass: the frames at quarter size with the renderer's quick "
        "settings, spread over the shot, in OUTPUT/preview (a job of its own, rendered "
        "before the full one)",
    )
    p.add_argument(
        "--watch",
        action="store_true",
        help="re-render when the scene's files change: each save submits a new revision "
        "(only changed files are sent) that replaces the last one; Ctrl+C stops watching",
    )

    p = sub.add_parser("status", parents=[key], help="show the farm as one node sees it")
    p.add_argument("--node", required=True, metavar="HOST:PORT")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--watch",
        action="store_true",
        help="a live view in the terminal, redrawn every --interval seconds (Ctrl+C to quit)",
    )
    p.add_argument(
        "--interval",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="seconds between redraws with --watch (default 2)",
    )
    p.add_argument(
        "--count",
        type=int,
        default=0,
        metavar="N",
        help="with --watch: stop after N views (default: until Ctrl+C)",
    )

    for command, what in (
        ("cancel", "cancel a job on every node"),
        ("pause", "pause a job on every node (chunks in flight finish)"),
        ("resume", "resume a paused job"),
        ("retry", "render a job's failed frames again"),
    ):
        p = sub.add_parser(command, parents=[key], help=what)
        p.add_argument("job_id", metavar="JOB")
        p.add_argument("--node", required=True, metavar="HOST:PORT")

    p = sub.add_parser(
        "priority", parents=[key], help="change a job's priority (higher renders first)"
    )
    p.add_argument("job_id", metavar="JOB")
    p.add_argument("priority", type=_priority, metavar="PRIORITY", help="-1000 to 1000")
    p.add_argument("--node", required=True, metavar="HOST:PORT")

    p = sub.add_parser("logs", parents=[key], help="show the renderer output of a job's chunks")
    p.add_argument("job_id", metavar="JOB")
    p.add_argument(
        "--frame",
        type=int,
        default=None,
        metavar="N",
        help="the chunk holding this frame (default: chunks that failed)",
    )
    p.add_argument("--node", required=True, metavar="HOST:PORT")

    p = sub.add_parser(
        "gc",
        parents=[key],
        help="run a node's retention now: delete what its policy lets go from its data "
        "folder (never what a live job needs) and say what was freed",
    )
    p.add_argument("--node", required=True, metavar="HOST:PORT")
    p.add_argument(
        "--dry-run", action="store_true", help="delete nothing: say what would be deleted"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("demo", help="start a small farm on this machine and render builtin:demo")
    p.add_argument("--nodes", type=int, default=3, metavar="N", help="worker nodes (default 3)")
    p.add_argument("--frames", type=int, default=24, metavar="N", help="frames (default 24)")
    p.add_argument("--chunk", type=int, default=2, metavar="N", help="frames per chunk (default 2)")
    p.add_argument("--size", default="320x240", metavar="WxH")
    p.add_argument("--output", type=Path, default=Path("peerfarm-demo-output"), metavar="DIR")

    p = sub.add_parser(
        "config",
        help="the config file: `peerfarm config show [node|bootstrap] [OPTIONS]` prints the "
        "effective settings and where each came from",
    )
    actions = p.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    show = actions.add_parser(
        "show",
        help="print the effective settings of `peerfarm node` (or bootstrap) with these "
        "options, and where each came from",
    )
    show.add_argument("--json", action="store_true", help="JSON instead of TOML")
    show.add_argument(
        "target",
        nargs="?",
        default="node",
        choices=SHOWN,
        metavar="COMMAND",
        help="node or bootstrap",
    )
    show.add_argument("options", nargs=argparse.REMAINDER, help="options of that command")

    for command, p in sub.choices.items():  # the client commands read their [COMMAND] too
        if command not in (*UNCONFIGURED, *OTHER_FACES, "node", "doctor"):
            config.add_config_options(p, show=False)
    return parser


# Commands that read no config file: init writes the key where it is told, the demo
# farm is a throwaway of its own, config shows the others.
UNCONFIGURED = ("init", "demo", "config")
SHOWN = ("node", "bootstrap")  # commands `peerfarm config show` prints the settings of


def add_node_options(p: argparse.ArgumentParser) -> None:
    """`peerfarm node`'s own options (`peerfarm doctor` takes them too)."""
    add_listen_options(p, 7100)
    p.add_argument(
        "--bootstrap",
        type=address_arg,
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="a bootstrap server; give several for redundancy",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="where the node keeps its identity, log and rendered frames (default: "
        f"{config.default_data_dir('node')[0]}; as a system service, its own)",
    )
    p.add_argument(
        "--slots",
        type=int,
        default=os.cpu_count() or 1,
        metavar="N",
        help="renderer processes at once (default: number of cores)",
    )
    p.add_argument("--name", default="", help="a name shown to the farm (default: host name)")
    p.add_argument(
        "--tag",
        type=argument_type(parse_tag),
        action="append",
        default=[],
        metavar="TAG",
        help="a tag this node advertises, e.g. gpu or lab2 (repeat for several): jobs "
        "submitted with --require TAG render only on nodes that have it",
    )
    p.add_argument(
        "--peer-timeout",
        type=float,
        default=3.0,
        metavar="SECONDS",
        help="a peer that stops answering probes is declared down about this long after "
        "and its chunks rendered elsewhere (default 3; longer in farms over 10 nodes; a "
        "lost link that does not come back within 0.5 s counts at once)",
    )
    p.add_argument(
        "--compact-after",
        type=int,
        default=COMPACT_AFTER,
        metavar="N",
        help="fold the log's history every member holds into a snapshot once it holds N "
        f"such actions (default {COMPACT_AFTER}; 0: never; docs/architecture.md)",
    )
    p.add_argument(
        "--hung-limit",
        type=float,
        default=10.0,
        metavar="N",
        help="a render running N times longer than this node's estimate for it (from its "
        "frame times of the same job; at least 10 s) without finishing a frame is stopped "
        "and counted a failure; a job's first frame on a node counts as 24 min (default "
        "10: four hours; 0: never)",
    )
    p.add_argument(
        "--min-free-space",
        type=argument_type(parse_bytes),
        default=DEFAULT_MIN_FREE_BYTES,
        metavar="SIZE",
        help="take no new chunks while the data folder's disk has less free space than "
        f"this (default {DEFAULT_MIN_FREE_BYTES // 2**20}M; e.g. 500M, 2G)",
    )
    p.add_argument(
        "--remote-outputs",
        type=Path,
        default=None,
        metavar="DIR",
        help="jobs submitted from other machines write their frames only inside this "
        "folder (default: DATA_DIR/outputs)",
    )
    for program in PROGRAMS:  # peerfarm/programs.py: where each is looked for
        p.add_argument(
            f"--{program}",
            type=Path,
            default=None,
            metavar="PATH",
            help=f"the {program} program to run (default: found on the PATH, then in its "
            "usual install places)",
        )
    add_retention_options(p)


def add_retention_options(p: argparse.ArgumentParser) -> None:
    """What a node deletes from its data folder (core/retention.py; `peerfarm gc`)."""
    policy = RetentionPolicy()
    group = p.add_argument_group("retention (docs/admin-guide.md#retention)")
    group.add_argument(
        "--retention-grace",
        type=argument_type(parse_duration),
        default=policy.grace,
        metavar="DURATION",
        help="delete the frames this node rendered this long after their submitter holds "
        "them all (default 1h; e.g. 30m, 12h, 7d)",
    )
    group.add_argument(
        "--retention-max-age",
        type=argument_type(parse_duration),
        default=policy.max_age,
        metavar="DURATION",
        help="delete work folders and renderer logs of finished jobs, and scene files no "
        "live job uses, once unused this long (default 7d)",
    )
    group.add_argument(
        "--retention-budget",
        type=argument_type(parse_bytes),
        default=None,
        metavar="SIZE",
        help="keep the data folder's frames, work folders, logs and scene files under this "
        "size, deleting what may go oldest first (e.g. 50G; default: no limit)",
    )
    group.add_argument(
        "--retention-interval",
        type=argument_type(parse_duration),
        default=DEFAULT_RETENTION_INTERVAL,
        metavar="DURATION",
        help="how often the node applies retention by itself (default 1h; 0: only on "
        "`peerfarm gc`)",
    )


def _subcommand(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[str, int]:
    """The command word of argv and its index ("" when there is none: argparse says so)."""
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for i, word in enumerate(argv):
        if word in ("-v", "--verbose"):
            continue
        return (word, i) if word in commands else ("", i)
    return "", len(argv)


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[command]


def parse_command_line(argv: list[str]) -> tuple[argparse.Namespace, config.Effective | None]:
    """Parse argv; a command that reads the config file gets its settings from there too
    (doctor: the node's). Raises config.ConfigError."""
    parser = build_parser()
    command, index = _subcommand(parser, argv)
    verbose = any(a in ("-v", "--verbose") for a in argv[:index])
    if command == "config" and argv[index + 1 : index + 2] == ["show"]:
        # `config show [--json] [COMMAND] OPTIONS...`: the options are the command's own.
        options = argv[index + 2 :]
        if not options or options[0] not in ("-h", "--help"):
            fmt = "--json" in options
            options = [o for o in options if o != "--json"]
            target = options.pop(0) if options and options[0] in SHOWN else "node"
            shown = argparse.Namespace(
                command="config", config_command="show", json=fmt, target=target, options=options
            )
            shown.verbose = verbose
            return shown, None
    if not command or command in UNCONFIGURED:
        return parser.parse_args(argv), None
    sub = _subparser(parser, command)
    rest = argv[index + 1 :]
    if command in ("node", "doctor"):
        effective = parse_service_args(sub, rest, "node")
    else:
        effective = config.parse(sub, rest, command)
    args = effective.args
    args.command, args.verbose = command, verbose
    args.setting_sources = {key: s.source for key, s in effective.settings.items()}
    if command in ("node", "doctor") and args.log_level is None and verbose:
        setup_logging("debug", args.log_json, log_file=args.log_file)
    return args, effective


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # `peerfarm [-v] gui|bootstrap ARGS`: the other face parses ARGS itself.
    verbose = [a for a in argv[:1] if a in ("-v", "--verbose")]
    rest = argv[len(verbose) :]
    if rest and rest[0] in OTHER_FACES:
        return _run_other_face(rest[0], verbose + rest[1:])
    try:
        args, effective = parse_command_line(argv)
    except config.ConfigError as exc:
        print(f"peerfarm: error: {exc}", file=sys.stderr)
        return 1
    if args.command not in ("node", "doctor"):  # those two set their logging up already
        setup_logging(verbose=args.verbose)
    try:
        if args.command == "init":
            return init_farm(args.farm_key_file)
        if args.command == "config":
            return show_settings(args)
        if effective is not None and show_config(effective):
            return 0
        if args.command in ("node", "doctor"):
            set_locations({program: getattr(args, program) for program in PROGRAMS})
        if args.command == "doctor":  # reports an unreadable key rather than stopping at it
            from peerfarm.cli.doctor import run_doctor

            return run_doctor(args)
        if hasattr(args, "farm_key_file"):
            args.farm_key = resolve_key(args.farm_key_file)
        if args.command == "node":
            node_config = NodeConfig(
                listen=listen_address(args.listen, args.farm_key, 7100, "node"),
                data_dir=args.data_dir,
                bootstraps=args.bootstrap,
                slots=max(args.slots, 0),
                name=args.name,
                advertise=args.advertise,
                peer_timeout=max(args.peer_timeout, 0.3),
                hung_limit=max(args.hung_limit, 0.0),
                compact_after=max(args.compact_after, 0),
                tags=parse_tags(args.tag),
                min_free_bytes=args.min_free_space,
                remote_outputs=args.remote_outputs,
                retention=RetentionPolicy(
                    grace=args.retention_grace,
                    max_age=args.retention_max_age,
                    budget=args.retention_budget,
                ),
                retention_interval=args.retention_interval,
                zeroconf=not args.no_zeroconf,
                farm_key=args.farm_key,
            )
            return trio.run(serve_node, Node(node_config), args.metrics)
        if args.command == "submit":
            return trio.run(submit, args)
        if args.command == "status":
            if args.watch:
                from peerfarm.cli.watch import watch_status

                return trio.run(watch_status, args)
            return trio.run(status, args)
        if args.command in JOB_CONTROLS:
            return trio.run(control_job, args)
        if args.command == "logs":
            return trio.run(show_logs, args)
        if args.command == "gc":
            return trio.run(collect_garbage, args)
        if args.command == "demo":
            from peerfarm.cli.demo import run_demo

            return run_demo(args)
    except (CliError, ClientError, Refused, FarmKeyError, *START_ERRORS) as exc:
        print(f"peerfarm: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 2


def show_settings(args: argparse.Namespace) -> int:
    """`peerfarm config show [node|bootstrap] [OPTIONS]`: the command itself prints them
    (--show-config), so what is shown is what it would run with."""
    fmt = "json" if args.json else "toml"
    options = [*args.options, "--show-config", fmt]
    if args.target in OTHER_FACES:
        return _run_other_face(args.target, options)
    return main([args.target, *options])


def _run_other_face(command: str, face_args: list[str]) -> int:
    try:
        face = importlib.import_module(OTHER_FACES[command])
    except ImportError as exc:
        print(f"peerfarm: error: `peerfarm {command}` cannot start: {exc}", file=sys.stderr)
        return 1
    return face.main(face_args)
