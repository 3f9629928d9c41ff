"""Replay one simulated run, or sweep many: ``python -m peerfarm.sim --seed N``.

Prints the schedule, the full trace and a summary; exits 1 if an invariant broke.
"""

from __future__ import annotations

import argparse
import random
import sys
import time

from peerfarm.sim.farm import Farm, SimulationFailure, run_seed
from peerfarm.sim.schedule import random_schedule


def _seed_range(text: str) -> range:
    start, _, end = text.partition(":")
    if not start.isdigit() or not end.isdigit() or int(end) <= int(start):
        raise argparse.ArgumentTypeError(f"expected START:END, e.g. 0:2000, got {text!r}")
    return range(int(start), int(end))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m peerfarm.sim", description=__doc__)
    parser.add_argument("--seed", type=int, default=0, help="replay this seed (default 0)")
    parser.add_argument("--seeds", type=_seed_range, help="sweep START:END, print failing seeds")
    parser.add_argument("--quiet", action="store_true", help="print the summary only")
    parser.add_argument(
        "--log-damage",
        action="store_true",
        help="about half the crashes also cut off the end of the node's log file",
    )
    parser.add_argument(
        "--equivocation",
        action="store_true",
        help="a node that submits nothing signs two versions of one action, once",
    )
    parser.add_argument(
        "--compaction-crashes",
        action="store_true",
        help="about half the other crashes happen in the middle of the node's next log "
        "compaction (snapshot written, log file not yet rewritten)",
    )
    args = parser.parse_args(argv)
    faults = (args.log_damage, args.equivocation, args.compaction_crashes)
    if args.seeds is not None:
        return _sweep(args.seeds, *faults)
    rng = random.Random(args.seed)
    schedule = random_schedule(
        rng,
        log_damage=args.log_damage,
        equivocation=args.equivocation,
        compaction_crashes=args.compaction_crashes,
    )
    farm = Farm(schedule, rng, args.seed)
    if not args.quiet:
        print("\n".join(schedule.describe()))
    try:
        result = farm.run()
    except SimulationFailure as exc:
        if not args.quiet:
            print("\n".join(farm.trace_lines))  # the failure itself carries only the tail
        print(f"seed {args.seed}: {exc.problem}")
        return 1
    if not args.quiet:
        print("\n".join(result.trace))
    print(result.summary())
    print(f"trace digest {result.trace_digest}")
    return 0


def _sweep(seeds: range, log_damage: bool, equivocation: bool, compaction_crashes: bool) -> int:
    started = time.perf_counter()
    failing = []
    summarised = 0
    for seed in seeds:
        try:
            summarised += run_seed(seed, log_damage, equivocation, compaction_crashes).summarised
        except SimulationFailure as exc:
            failing.append(seed)
            print(f"seed {seed}: {exc.problem}", flush=True)
    took = time.perf_counter() - started
    print(
        f"{len(seeds)} seeds in {took:.1f} s; failing: {failing or 'none'} "
        f"({summarised} finished jobs summarised)"
    )
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
