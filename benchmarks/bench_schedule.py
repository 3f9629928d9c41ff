"""The scheduling benchmark over many scenarios: the table in docs/scheduling.md.

Runs what `peerfarm bench schedule` runs (the simulator with the real node machine,
our policy and the baseline of fixed 5-frame chunks first come first served) on the
default scenario, on each named cost curve, and on random scenarios (--random
--seed N for N in 0..RANDOM-1). Prints one JSON object per line, then a summary
line, or with --markdown the table.

    python benchmarks/bench_schedule.py [--random 10] [--seeds 3] [--wide] [--markdown]
    python benchmarks/bench_schedule.py --resubmit [--markdown]

With --resubmit each row is the farm's second job: the row's job rendered once (the
farm learns its nodes' speeds and the frames' costs), then the same frames submitted
again, as the same scene (costs known) and as another scene (speeds known, costs
not): what a farm that has rendered before does (`peerfarm bench schedule
--resubmit` on one row). Against the baseline's first submission (it uses neither).

With --wide the table also has a farm of 32 nodes (seconds per frame-unit 1 to 7, in
turn) on 1000 frames: about 31 frames a node, where every start-up counts (slow to
simulate: 32 nodes' messages, a minute or two a row).

With --seeds K each row is run with K simulator seeds (the row's seed, + 1000, + 2000,
...: other render-time noise and message delays) and its ratios are their means: one
run of a row moves by a few hundredths with any change in the messages' timing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics

from peerfarm.sim.scheduling_bench import (
    DEFAULT_FRAMES,
    DEFAULT_SPEEDS,
    DEFAULT_STARTUP,
    RANDOM_CURVES,
    Scenario,
    compare,
    compare_resubmitted,
    complexity_curve,
    measure,
    random_scenario,
)

WIDE_SPEEDS = tuple(float(1 + i % 7) for i in range(32))
WIDE_FRAMES = 1000


def wide_scenarios() -> list[tuple[str, Scenario]]:
    """A farm of 32 nodes: the default cost curve, and spikes with a 30 s start-up."""
    return [
        (
            f"32 nodes, {curve}, start-up {startup:g} s",
            Scenario(WIDE_SPEEDS, tuple(complexity_curve(curve, WIDE_FRAMES)), startup, 0, curve),
        )
        for curve, startup in (("wave", DEFAULT_STARTUP), ("spikes", 30.0))
    ]


def scenarios(randoms: int, wide: bool = False) -> list[tuple[str, Scenario]]:
    named = [(f"default ({curve})" if curve == "wave" else curve, curve) for curve in ("wave",)] + [
        (curve, curve) for curve in RANDOM_CURVES if curve != "wave"
    ]
    out = [
        (
            label,
            Scenario(
                DEFAULT_SPEEDS,
                tuple(complexity_curve(curve, DEFAULT_FRAMES)),
                DEFAULT_STARTUP,
                0,
                curve,
            ),
        )
        for label, curve in named
    ]
    out.append(
        (
            "default, start-up 30 s",
            Scenario(DEFAULT_SPEEDS, tuple(complexity_curve("wave", DEFAULT_FRAMES)), 30.0),
        )
    )
    out += [(f"random --seed {seed}", random_scenario(seed)) for seed in range(randoms)]
    return out + wide_scenarios() if wide else out


def _mean_of_seeds(scenario: Scenario, seeds: int) -> dict:
    """compare() of the scenario under ``seeds`` simulator seeds: the first run's
    fields, its ratios replaced by the means (and each seed's under "ratios")."""
    runs = [
        compare(dataclasses.replace(scenario, seed=scenario.seed + 1000 * k)) for k in range(seeds)
    ]
    result = runs[0]
    if seeds > 1:
        for policy in ("peerfarm", "baseline"):
            ratios = [r[policy]["ratio"] for r in runs]
            result[policy] = {**result[policy], "ratio": round(statistics.mean(ratios), 4)}
            result[policy]["ratios"] = ratios
        result["shorter_than_baseline"] = round(
            statistics.mean(r["shorter_than_baseline"] for r in runs), 4
        )
    return result


def _resubmitted(scenario: Scenario) -> dict:
    """compare_resubmitted() of the scenario, with the baseline's first submission."""
    result = compare_resubmitted(scenario)
    base = measure(scenario, "baseline")
    result["baseline"] = base
    for key in ("resubmitted", "other_scene"):
        result[f"{key}_shorter_than_baseline"] = round(
            1.0 - result[key]["makespan"] / base["makespan"], 4
        )
    return result


def _resubmitted_table(randoms: int, markdown: bool, wide: bool) -> None:
    rows = []
    for label, scenario in scenarios(randoms, wide):
        result = _resubmitted(scenario)
        result["label"] = label
        rows.append(result)
        if not markdown:
            print(json.dumps(result), flush=True)
    summary = {"scenarios": len(rows)}
    for key in ("first", "resubmitted", "other_scene"):
        ratios = [r[key]["ratio"] for r in rows]
        summary[key] = {
            "ratio_mean": round(statistics.mean(ratios), 3),
            "ratio_max": max(ratios),
            "at_most_1.05": sum(r <= 1.05 for r in ratios),
        }
    for key in ("resubmitted", "other_scene"):
        gains = [r[f"{key}_shorter_than_baseline"] for r in rows]
        summary[key]["shorter_by_25pct"] = sum(g >= 0.25 for g in gains)
    if not markdown:
        print(json.dumps({"summary": summary}))
        return
    print(
        "| scenario | first ÷ bound | same scene again ÷ bound | other scene ÷ bound "
        "| baseline ÷ bound | same scene again: shorter than baseline |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['label']} | {r['first']['ratio']:.3f} | {r['resubmitted']['ratio']:.3f} "
            f"| {r['other_scene']['ratio']:.3f} | {r['baseline']['ratio']:.3f} "
            f"| {r['resubmitted_shorter_than_baseline']:.0%} |"
        )
    print(f"\n{json.dumps(summary)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--random", type=int, default=10, metavar="N")
    parser.add_argument("--seeds", type=int, default=1, metavar="K")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--resubmit", action="store_true")
    parser.add_argument("--wide", action="store_true", help="also a farm of 32 nodes")
    args = parser.parse_args()
    if args.resubmit:
        _resubmitted_table(args.random, args.markdown, args.wide)
        return
    rows = []
    for label, scenario in scenarios(args.random, args.wide):
        result = _mean_of_seeds(scenario, max(1, args.seeds))
        result["label"] = label
        rows.append(result)
        if not args.markdown:
            print(json.dumps(result), flush=True)
    ratios = [r["peerfarm"]["ratio"] for r in rows]
    gains = [r["shorter_than_baseline"] for r in rows]
    summary = {
        "scenarios": len(rows),
        "ratio_mean": round(statistics.mean(ratios), 3),
        "ratio_max": max(ratios),
        "at_most_1.05": sum(r <= 1.05 for r in ratios),
        "shorter_than_baseline_mean": round(statistics.mean(gains), 3),
        "shorter_by_25pct": sum(g >= 0.25 for g in gains),
    }
    if not args.markdown:
        print(json.dumps({"summary": summary}))
        return
    print(
        "| scenario | nodes (s per frame-unit) | frames | costs | start-up | peerfarm ÷ bound "
        "| baseline ÷ bound | shorter than baseline |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        sc = r["scenario"]
        speeds = ", ".join(f"{s:g}" for s in sc["speeds"])
        print(
            f"| {r['label']} | {speeds} | {sc['frames']} | {sc['complexity']} "
            f"({sc['cost_spread']:g}×) | {sc['startup']:g} s | {r['peerfarm']['ratio']:.3f} "
            f"| {r['baseline']['ratio']:.3f} | {r['shorter_than_baseline']:.0%} |"
        )
    print(f"\n{json.dumps(summary)}")


if __name__ == "__main__":
    main()
