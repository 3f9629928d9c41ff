"""`peerfarm bench schedule`: the scheduler measured in the simulator, against the
baseline (fixed 5-frame chunks taken first come first served). See docs/scheduling.md."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from peerfarm.cli.errors import CliError
from peerfarm.sim.scheduling_bench import (
    CURVES,
    DEFAULT_COMPLEXITY,
    DEFAULT_FRAMES,
    DEFAULT_SPEEDS,
    DEFAULT_STARTUP,
    Scenario,
    compare,
    compare_resubmitted,
    complexity_curve,
    random_scenario,
)


def add_schedule_parser(benches: argparse._SubParsersAction) -> None:
    s = benches.add_parser(
        "schedule",
        help="one job on a simulated mixed farm: makespan of peerfarm's scheduler and of "
        "the baseline (fixed 5-frame chunks, first come first served) against the lower bound",
    )
    s.add_argument(
        "--speeds",
        default=",".join(f"{v:g}" for v in DEFAULT_SPEEDS),
        metavar="S,S,...",
        help="each node's seconds per frame-unit, one node each "
        f"(default {','.join(f'{v:g}' for v in DEFAULT_SPEEDS)})",
    )
    s.add_argument("--frames", type=int, default=DEFAULT_FRAMES, metavar="N")
    s.add_argument(
        "--complexity",
        default=DEFAULT_COMPLEXITY,
        metavar="NAME|FILE",
        help=f"the frames' relative costs: {', '.join(CURVES)} (default {DEFAULT_COMPLEXITY}: "
        "1 to 8), or a file with one cost per line",
    )
    s.add_argument(
        "--startup",
        type=float,
        default=DEFAULT_STARTUP,
        metavar="SECONDS",
        help=f"renderer start-up per chunk (default {DEFAULT_STARTUP:g})",
    )
    s.add_argument("--seed", type=int, default=0, metavar="N", help="the simulator's seed")
    s.add_argument(
        "--random",
        action="store_true",
        help="draw the whole scenario (speeds, frames, costs, start-up) from --seed",
    )
    s.add_argument(
        "--resubmit",
        action="store_true",
        help="render the job once (the farm learns each frame's cost), submit the same "
        "scene again and measure both; also the same frames as another scene (costs not "
        "known) for comparison",
    )
    s.add_argument("--json", action="store_true", help="one JSON object")


def _speeds(text: str) -> tuple[float, ...]:
    try:
        speeds = tuple(float(v) for v in text.split(","))
    except ValueError:
        speeds = ()
    if not speeds or any(not 0 < v < 1e6 for v in speeds):
        raise CliError(f"--speeds {text}: give positive seconds per frame-unit, e.g. 1,2,7")
    return speeds


def _costs(spec: str, frames: int) -> list[float]:
    if spec in CURVES:
        return complexity_curve(spec, frames)
    path = Path(spec)
    if not path.is_file():
        raise CliError(f"--complexity {spec}: not a curve ({', '.join(CURVES)}) nor a file")
    try:
        costs = [float(line) for line in path.read_text().split() if line]
    except ValueError as exc:
        raise CliError(f"--complexity {spec}: one number per line expected ({exc})") from None
    if not costs or any(not 0 < c < 1e6 for c in costs):
        raise CliError(f"--complexity {spec}: give at least one positive cost")
    return costs


def run_schedule(args: argparse.Namespace) -> int:
    if args.random:
        scenario = random_scenario(args.seed)
    else:
        if not 1 <= args.frames <= 100_000:
            raise CliError(f"--frames {args.frames}: give 1 to 100000 frames")
        if not 0 <= args.startup <= 3600:
            raise CliError(f"--startup {args.startup:g}: give 0 to 3600 seconds")
        costs = _costs(args.complexity, args.frames)
        name = args.complexity if args.complexity in CURVES else Path(args.complexity).name
        scenario = Scenario(_speeds(args.speeds), tuple(costs), args.startup, args.seed, name)
    if args.resubmit:
        return _print_resubmitted(compare_resubmitted(scenario), args.json)
    result = compare(scenario)
    if args.json:
        print(json.dumps(result))
        return 0
    print(_describe(result["scenario"]))
    for policy in ("peerfarm", "baseline"):
        r = result[policy]
        print(
            f"  {policy:<9} makespan {r['makespan']:9.1f} s   lower bound "
            f"{r['lower_bound']:9.1f} s   ratio {r['ratio']:.3f}"
        )
    print(f"  peerfarm is {result['shorter_than_baseline']:.1%} shorter than the baseline")
    return 0


def _describe(sc: dict) -> str:
    return (
        f"{len(sc['speeds'])} nodes (s per frame-unit {sc['speeds']}), {sc['frames']} frames "
        f"({sc['complexity']}, costs {sc['cost_spread']}x apart), start-up {sc['startup']} s"
    )


def _print_resubmitted(result: dict, as_json: bool) -> int:
    if as_json:
        print(json.dumps(result))
        return 0
    print(_describe(result["scenario"]))
    for key, what in (
        ("first", "first submission"),
        ("resubmitted", "same scene again (costs learned)"),
        ("other_scene", "other scene (costs not known)"),
    ):
        r = result[key]
        print(
            f"  {what:<33} makespan {r['makespan']:9.1f} s   lower bound "
            f"{r['lower_bound']:9.1f} s   ratio {r['ratio']:.3f}"
        )
    print(f"  the re-submitted scene is {result['resubmitted_shorter_than_first']:.1%} shorter")
    return 0
