"""The desktop app's command-line options (Qt-free, shared by `peerfarm gui` and `peerfarm-gui`).

They are `peerfarm node`'s options; given on the command line they override the
saved settings for this run (they are not saved).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from peerfarm.core.refused import argument_type
from peerfarm.core.requirements import parse_tag
from peerfarm.runtime.addresses import format_address, parse_address


def _address(text: str) -> str:
    try:
        return format_address(*parse_address(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_gui_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--listen", type=_address, metavar="HOST:PORT", help="where the app's node listens"
    )
    p.add_argument(
        "--bootstrap",
        type=_address,
        action="append",
        metavar="HOST:PORT",
        help="a bootstrap server; give several for redundancy",
    )
    p.add_argument(
        "--data-dir", type=Path, metavar="DIR", help="the node's identity, log and frames"
    )
    p.add_argument("--slots", type=int, metavar="N", help="renderer processes at once")
    p.add_argument(
        "--advertise",
        type=_address,
        metavar="HOST:PORT",
        help="the address peers should dial (default: chosen from the interfaces)",
    )
    p.add_argument("--name", help="the name shown to the farm (default: host name)")
    p.add_argument(
        "--tag",
        type=argument_type(parse_tag),
        action="append",
        metavar="TAG",
        help="a tag this node advertises, e.g. gpu (repeat for several; replaces the saved ones)",
    )
    p.add_argument(
        "--no-zeroconf",
        action="store_true",
        help="do not announce or look for nodes on the LAN (zeroconf/mDNS)",
    )
    p.add_argument(
        "--farm-key-file",
        type=Path,
        metavar="FILE",
        help="the farm's key file (used once this peerfarm version supports farm keys)",
    )
    p.add_argument(
        "--settings",
        type=Path,
        metavar="FILE",
        help="settings file to use instead of the per-user one (e.g. two apps on one machine)",
    )


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the command line overrides for this run."""
    out: dict[str, Any] = {}
    if args.listen is not None:
        out["listen"] = args.listen
    if args.bootstrap:
        out["bootstraps"] = tuple(args.bootstrap)
    if args.data_dir is not None:
        out["data_dir"] = str(args.data_dir.resolve())
    if args.slots is not None:
        out["slots"] = max(args.slots, 0)
    if args.name is not None:
        out["name"] = args.name
    if args.advertise is not None:
        out["advertise"] = args.advertise
    if args.tag:
        out["tags"] = tuple(args.tag)
    if args.no_zeroconf:
        out["lan_discovery"] = False
    if args.farm_key_file is not None:
        out["farm_key_file"] = str(args.farm_key_file.resolve())
    if out.get("bootstraps") or out.get("data_dir"):
        out["setup_done"] = True  # told where to go: no first-start guide needed
    return out
