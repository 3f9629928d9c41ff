"""`peerfarm bench ...`: benchmarks anyone can rerun, each printing one JSON object.

Targets are checked here, as numbers, never as timed assertions in tests: the
machines are shared and noisy (docs/performance.md says how to read them).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from peerfarm.cli.bench.mixed import add_mixed_parser
from peerfarm.cli.bench.schedule import add_schedule_parser, run_schedule
from peerfarm.cli.errors import CliError
from peerfarm.core.refused import Refused
from peerfarm.core.user_text import parse_size
from peerfarm.runtime.client import ClientError


def _size(text: str) -> tuple[int, int]:
    try:
        return parse_size(text)
    except Refused as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="peerfarm bench", description="Measure the farm; each bench prints JSON."
    )
    sub = parser.add_subparsers(dest="bench", required=True, metavar="BENCH")
    add_schedule_parser(sub)
    add_mixed_parser(sub)
    p = sub.add_parser(
        "scale",
        help="N node processes started at once on loopback: deaths, mesh time, idle CPU, a job",
    )
    p.add_argument("--nodes", type=int, default=32, help="node processes (default 32)")
    p.add_argument("--idle", type=float, default=15.0, help="seconds of idle measured (15)")
    p.add_argument("--frames", type=int, default=0, help="frames of the job (default 2 per node)")
    p.add_argument(
        "--mesh-timeout",
        type=float,
        default=60.0,
        help="give up this long after the last node listens (60 s)",
    )
    p.add_argument("--logs", type=Path, help="keep the processes' logs in this folder")
    p.add_argument("--json", action="store_true", help="only the JSON object, no progress")
    p = sub.add_parser(
        "dispatch",
        help="frames a second the farm hands out: one-frame chunks of a renderer doing no work",
    )
    p.add_argument("--nodes", type=int, default=4, help="node processes (default 4)")
    p.add_argument("--frames", type=int, default=20_000, help="one-frame chunks (20000)")
    p.add_argument("--slots", type=int, default=4, help="slots per node (4)")
    p.add_argument(
        "--fixed",
        action="store_true",
        help="submit with --chunk 1: one claim and one DONE per frame (default: no --chunk, "
        "nodes claim runs of one-frame chunks sized to their speed)",
    )
    p.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="run the farm in DIR (new or empty) and keep it: node logs, action logs, frames",
    )
    p.add_argument("--timeout", type=float, default=1200.0, help="give up after (1200 s)")
    p.add_argument("--json", action="store_true", help="only the JSON object, no progress")
    p = sub.add_parser(
        "join",
        help="a node joins a farm whose history holds many actions: seconds to an equal digest",
    )
    p.add_argument("--actions", type=int, default=100_000, help="actions of history (100000)")
    p.add_argument("--jobs", type=int, default=1, help="finished jobs the history holds (1)")
    p.add_argument(
        "--compact-after",
        type=int,
        default=20_000,
        metavar="N",
        help="the farm's processes compact their logs from N actions on (20000; 0: never)",
    )
    p.add_argument("--timeout", type=float, default=300.0, help="give up after (300 s)")
    p.add_argument("--logs", type=Path, help="keep the processes' logs in this folder")
    p.add_argument("--json", action="store_true", help="only the JSON object, no progress")
    p = sub.add_parser(
        "overhead",
        help="a real POV-Ray animation on a one-node farm against povray run directly",
    )
    p.add_argument(
        "--scene",
        type=Path,
        help="a POV-Ray animation's INI (default: camera2.ini of POV-Ray's examples)",
    )
    p.add_argument("--frames", type=int, default=24, help="frames 1..N (24)")
    p.add_argument("--size", type=_size, default=(320, 240), help="WxH (320x240)")
    p.add_argument("--slots", type=int, default=2, help="slots, and povray commands at a time (2)")
    p.add_argument("--chunk", type=int, default=2, help="frames per chunk (2)")
    p.add_argument("--runs", type=int, default=3, help="pairs of alternating runs (3)")
    p.add_argument("--timeout", type=float, default=600.0, help="give up a run after (600 s)")
    p.add_argument("--json", action="store_true", help="only the JSON object, no progress")
    p = sub.add_parser(
        "memory",
        help="resident memory of a headless node holding a 10,000-frame job; a 1,000,000-frame job",
    )
    p.add_argument("--frames", type=int, default=10_000, help="frames of the job (10000)")
    p.add_argument("--chunk", type=int, default=1, help="frames per chunk (1)")
    p.add_argument("--slots", type=int, default=4, help="slots of the node (4)")
    p.add_argument(
        "--million-seconds",
        type=float,
        default=20.0,
        help="seconds the 1,000,000-frame job renders before it is cancelled (20; 0: skip it)",
    )
    p.add_argument("--timeout", type=float, default=1200.0, help="give up after (1200 s)")
    p.add_argument("--json", action="store_true", help="only the JSON object, no progress")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    say = (lambda _text: None) if args.json else (lambda text: print(text, file=sys.stderr))
    try:
        if args.bench == "schedule":  # prints its own table or JSON
            return run_schedule(args)
        # Each bench lives in its own module, imported only when run (they start farms).
        module = importlib.import_module(f"peerfarm.cli.bench.{args.bench}")
        result = getattr(module, f"run_{args.bench}")(args, say)
    except (CliError, ClientError) as exc:
        print(f"peerfarm bench: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    print(json.dumps(result, indent=None if args.json else 2))
    return 0
