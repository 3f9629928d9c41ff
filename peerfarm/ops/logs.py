"""Logging of the commands: a level, and plain text or JSON lines on standard error,
and in a log file if asked.

Standard error, because a service manager keeps it (the systemd journal, launchd's
StandardErrorPath); JSON lines for log collectors (one object per line: time,
level, logger, message, and the traceback if any). A log file (``--log-file``, and
always for the desktop app, which has no terminal) rotates: LOG_FILE_BYTES each,
LOG_FILE_BACKUPS old ones kept, in the platform's log folder by default
(peerfarm/ops/places.py: user_log_dir).
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
from datetime import UTC, datetime
from pathlib import Path

from peerfarm.ops.places import user_log_dir

LEVELS = ("debug", "info", "warning", "error")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_FILE_BYTES = 10 * 2**20
LOG_FILE_BACKUPS = 3  # app.log, app.log.1 ... app.log.3: at most 40 MB
APP_LOG_NAME = "app.log"  # the desktop app's, in user_log_dir()


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
    parser.add_argument(
        "--log-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="also log to this file, rotated at 10 MB with 3 old ones kept (e.g. "
        f"{user_log_dir() / 'node.log'}; default: standard error only)",
    )


def setup_logging(
    level: str | None = None,
    json_lines: bool = False,
    verbose: bool = False,
    log_file: Path | None = None,
) -> None:
    """Configure the root logger once per process (a second call replaces the first).
    A log file that cannot be opened is said on standard error; logging goes on there."""
    name = level or ("debug" if verbose else "info")
    formatter = JsonLines() if json_lines else logging.Formatter(TEXT_FORMAT)
    handlers: list[logging.Handler] = []
    if sys.stderr is not None:  # a windowed app on Windows has none
        handlers.append(logging.StreamHandler(sys.stderr))
    if log_file is not None:
        try:
            handlers.append(rotating_file(log_file))
        except OSError as exc:
            print(f"peerfarm: cannot log to {log_file}: {exc}", file=sys.stderr or sys.stdout)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(getattr(logging, name.upper()))


def rotating_file(path: Path) -> logging.Handler:
    """A handler writing `path` in UTF-8, rotated at LOG_FILE_BYTES (folders made)."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    return logging.handlers.RotatingFileHandler(
        path, maxBytes=LOG_FILE_BYTES, backupCount=LOG_FILE_BACKUPS, encoding="utf-8"
    )
