"""Logging of the commands: a level, and plain text or JSON lines on standard error.

Standard error, because a service manager keeps it (the systemd journal, launchd's
StandardErrorPath); JSON lines for log collectors (one object per line: time,
level, logger, message, and the traceback if any).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

LEVELS = ("debug", "info", "warning", "error")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonLines(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def add_log_options(parser) -> None:  # noqa: ANN001 - an argparse parser or group
    parser.add_argument(
        "--log-level",
        choices=LEVELS,
        default=None,
        help="how much to log on standard error (default: info; debug with -v)",
    )
    parser.add_argument(
        "--log-json",
        action="store_true",
        help="log JSON lines (time, level, logger, message) instead of text",
    )


def setup_logging(
    level: str | None = None, json_lines: bool = False, verbose: bool = False
) -> None:
    """Configure the root logger once per process (a second call replaces the first)."""
    name = level or ("debug" if verbose else "info")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines() if json_lines else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, name.upper()))
