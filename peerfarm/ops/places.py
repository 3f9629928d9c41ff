"""The per-user folders peerfarm keeps things in, per platform.

Each takes the platform, the environment and the home folder as parameters, so every
platform's answer is tested on any machine (tests/test_platforms.py).

- Data (node identity, log, scene files, frames): a folder that stays on this machine.
  On Windows that is ``%LOCALAPPDATA%``, never the roaming ``%APPDATA%``: a roaming
  profile copies the folder to the server at every logoff and back at every logon (all
  the frames and scene files), and two PCs of the same user would share one node
  identity.
- Logs (the desktop app's log file): Windows ``%LOCALAPPDATA%\\peerfarm\\Logs``, macOS
  ``~/Library/Logs/peerfarm`` (where Console.app looks), elsewhere
  ``$XDG_STATE_HOME/peerfarm/log`` (``~/.local/state/peerfarm/log``).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath

APP = "peerfarm"

log = logging.getLogger(__name__)


def _home(platform: str, env: Mapping[str, str], home: PurePath | None) -> PurePath:
    if home is not None:
        return home
    if platform == sys.platform:
        return Path.home()
    if platform == "win32":
        return PureWindowsPath(env.get("USERPROFILE") or "C:/Users/user")
    return PurePosixPath(env.get("HOME") or "/")


def user_data_root(
    platform: str = sys.platform,
    env: Mapping[str, str] = os.environ,
    home: PurePath | None = None,
) -> PurePath:
    """This user's peerfarm data folder on this machine (not roaming)."""
    home = _home(platform, env, home)
    if platform == "win32":
        local = env.get("LOCALAPPDATA")
        base = PureWindowsPath(local) if local else PureWindowsPath(home) / "AppData" / "Local"
        return base / APP
    if platform == "darwin":
        return home / "Library" / "Application Support" / APP
    xdg = env.get("XDG_DATA_HOME", "")
    return (PurePosixPath(xdg) if xdg.startswith("/") else home / ".local" / "share") / APP


def roaming_data_root(
    platform: str = sys.platform,
    env: Mapping[str, str] = os.environ,
    home: PurePath | None = None,
) -> PurePath | None:
    """Windows: where the desktop app kept its data before it moved out of the roaming
    profile (Qt's AppDataLocation); None elsewhere (nothing moved)."""
    if platform != "win32":
        return None
    roaming = env.get("APPDATA")
    base = PureWindowsPath(roaming) if roaming else PureWindowsPath(_home(platform, env, home))
    if not roaming:
        base = base / "AppData" / "Roaming"
    return base / APP


def user_log_dir(
    platform: str = sys.platform,
    env: Mapping[str, str] = os.environ,
    home: PurePath | None = None,
) -> PurePath:
    """Where this user's peerfarm log files go."""
    home = _home(platform, env, home)
    if platform == "win32":
        return user_data_root(platform, env, home) / "Logs"
    if platform == "darwin":
        return home / "Library" / "Logs" / APP
    xdg = env.get("XDG_STATE_HOME", "")
    return (PurePosixPath(xdg) if xdg.startswith("/") else home / ".local" / "state") / APP / "log"


def move_out_of_roaming(old: Path, new: Path) -> Path:
    """The data folder to use: `new`, after moving `old` (an earlier version's folder in
    the roaming profile) there when only `old` exists. One rename on one volume; if it
    cannot be done (a file in use, another volume), `old` stays in use and a warning says
    so, so nothing is lost and the node keeps its identity."""
    if new.exists() or not old.exists():
        return new
    try:
        new.parent.mkdir(parents=True, exist_ok=True)
        os.replace(old, new)
    except OSError as exc:
        log.warning(
            "the data folder %s is in the roaming profile and could not be moved to %s "
            "(%s): still using it; quit peerfarm and move it by hand",
            old,
            new,
            exc,
        )
        return old
    log.warning("moved the data folder out of the roaming profile: %s -> %s", old, new)
    return new
