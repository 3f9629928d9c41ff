"""`peerfarm doctor`: the checks of peerfarm/ops/doctor.py for the settings `peerfarm node`
would run with (its options over the config file), printed with what to fix."""

from __future__ import annotations

import argparse
import json

import trio

from peerfarm.ops.doctor import FAIL, Subject, as_json, diagnose, report


def subject_of(args: argparse.Namespace) -> Subject:
    listen = args.listen
    if listen is None:  # as listen_address picks it, without saying so on stderr
        from peerfarm.security.farm_key import FarmKeyError, resolve_key

        try:
            key = resolve_key(args.farm_key_file)
        except FarmKeyError:
            key = None
        listen = ("0.0.0.0" if key is not None else "127.0.0.1", 7100)
    return Subject(
        listen=listen,
        data_dir=args.data_dir,
        farm_key_file=args.farm_key_file,
        farm_key_source=getattr(args, "setting_sources", {}).get("farm-key-file", "farm-key-file"),
        bootstraps=tuple(args.bootstrap),
        advertise=args.advertise,
        zeroconf=not args.no_zeroconf,
        metrics=args.metrics,
        offline=args.offline,
    )


def run_doctor(args: argparse.Namespace) -> int:
    subject = subject_of(args)
    findings = trio.run(diagnose, subject)
    if args.json:
        print(json.dumps(as_json(findings), indent=2))
    else:
        print(
            f"peerfarm doctor: this machine, for `peerfarm node` with data dir {subject.data_dir}"
        )
        print("(the settings: `peerfarm config show`)\n")
        print(report(findings))
    return 1 if any(f.status == FAIL for f in findings) else 0
