"""Starting the desktop app: `peerfarm gui` and `peerfarm-gui` (Qt-free until it runs).

Its options are `peerfarm node`'s (ui/options.py); they parse without PySide6, so
`--help` works on a machine without it, and a missing PySide6 is one clear line.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from peerfarm.ops import qt_platform
from peerfarm.ops.logs import APP_LOG_NAME, setup_logging
from peerfarm.ops.places import user_log_dir
from ui.options import add_gui_options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="peerfarm gui", description="The peerfarm desktop app.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    add_gui_options(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The `peerfarm-gui` entry point (and what `peerfarm gui` runs)."""
    args = build_parser().parse_args(argv)
    # The app has no terminal when started from a menu or the Finder: it always logs to
    # a file in the platform's log folder too (docs/install.md says where).
    setup_logging(verbose=args.verbose, log_file=Path(user_log_dir()) / APP_LOG_NAME)
    try:
        from ui.app import run_gui
    except ImportError as exc:
        print(
            f"peerfarm: error: the desktop app needs PySide6 ({exc}); install it with "
            "pip install 'peerfarm[gui]'",
            file=sys.stderr,
        )
        return 1
    problem = window_problem()
    if problem:
        print(f"peerfarm: error: {problem} (`peerfarm doctor` checks the rest)", file=sys.stderr)
        return 1
    return run_gui(args)


def window_problem() -> str:
    """Why Qt could not open a window here, said before Qt says it by ending the process
    ("could not load the Qt platform plugin"); "" when nothing is known to be missing."""
    if not qt_platform.linux() or not qt_platform.has_display(os.environ):
        return ""  # elsewhere Qt brings its own plugin; without a display run_gui says so
    check = qt_platform.check_platform_plugin(os.environ)
    # Only libraries known to be missing stop the start: a plugin not found where we look
    # (a frozen app, a qt.conf elsewhere) is left for Qt itself to find.
    return check.problem if check.missing else ""
