"""How long the user has left this machine alone (no keyboard or mouse), per platform.

Used by "render only when I'm away". Qt-free; the calls may block briefly, so
the app calls ``IdleClock.seconds`` from a worker thread.

- Windows: GetLastInputInfo (user32) — the whole session.
- macOS: CGEventSourceSecondsSinceLastEventType (CoreGraphics) — the whole session.
- Linux/BSD on X11: the MIT-SCREEN-SAVER extension (libXss) — the whole X display.
- Linux on Wayland with GNOME: Mutter's IdleMonitor over D-Bus (gdbus).
- Anything else (other Wayland desktops, no display): no system-wide idle time;
  the app then counts only input to its own windows and says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable

GDBUS_TIMEOUT = 2.0


def _windows() -> Callable[[], float | None] | None:
    if sys.platform != "win32":
        return None

    class LastInputInfo(ctypes.Structure):
        _fields_ = [("cbSize", ctypes.c_uint), ("dwTime", ctypes.c_uint)]

    user32 = ctypes.windll.user32  # type: ignore[attr-defined]
    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]

    def seconds() -> float | None:
        info = LastInputInfo()
        info.cbSize = ctypes.sizeof(info)
        if not user32.GetLastInputInfo(ctypes.byref(info)):
            return None
        # Both are 32-bit millisecond tick counts: wrap-around safe subtraction.
        return ((kernel32.GetTickCount() - info.dwTime) & 0xFFFFFFFF) / 1000.0

    return seconds


def _macos() -> Callable[[], float | None] | None:
    if sys.platform != "darwin":
        return None
    try:
        cg = ctypes.CDLL(
            "/System/Library/Frameworks/ApplicationServices.framework/ApplicationServices"
        )
    except OSError:
        return None
    fn = cg.CGEventSourceSecondsSinceLastEventType
    fn.restype = ctypes.c_double
    fn.argtypes = [ctypes.c_int32, ctypes.c_uint32]
    hid_system_state, any_input_event = 1, 0xFFFFFFFF

    def seconds() -> float | None:
        return float(fn(hid_system_state, any_input_event))

    return seconds


class _XScreenSaverInfo(ctypes.Structure):
    _fields_ = [
        ("window", ctypes.c_ulong),
        ("state", ctypes.c_int),
        ("kind", ctypes.c_int),
        ("til_or_since", ctypes.c_ulong),
        ("idle", ctypes.c_ulong),
        ("eventMask", ctypes.c_ulong),
    ]


def _x11() -> Callable[[], float | None] | None:
    if sys.platform in ("win32", "darwin") or not os.environ.get("DISPLAY"):
        return None
    x11_name, xss_name = ctypes.util.find_library("X11"), ctypes.util.find_library("Xss")
    if not x11_name or not xss_name:
        return None
    try:
        x11, xss = ctypes.CDLL(x11_name), ctypes.CDLL(xss_name)
    except OSError:
        return None
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XDefaultRootWindow.restype = ctypes.c_ulong
    x11.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
    xss.XScreenSaverQueryExtension.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_int),
        ctypes.POINTER(ctypes.c_int),
    ]
    xss.XScreenSaverAllocInfo.restype = ctypes.POINTER(_XScreenSaverInfo)
    xss.XScreenSaverQueryInfo.argtypes = [
        ctypes.c_void_p,
        ctypes.c_ulong,
        ctypes.POINTER(_XScreenSaverInfo),
    ]
    display = x11.XOpenDisplay(None)
    if not display:
        return None
    event, error = ctypes.c_int(), ctypes.c_int()
    if not xss.XScreenSaverQueryExtension(display, ctypes.byref(event), ctypes.byref(error)):
        return None
    info = xss.XScreenSaverAllocInfo()
    root = x11.XDefaultRootWindow(display)
    lock = threading.Lock()  # one Xlib call on this display at a time

    def seconds() -> float | None:
        with lock:
            if not xss.XScreenSaverQueryInfo(display, root, info):
                return None
            return info.contents.idle / 1000.0

    return seconds


def _gnome_wayland() -> Callable[[], float | None] | None:
    if not os.environ.get("WAYLAND_DISPLAY") or not shutil.which("gdbus"):
        return None
    command = [
        "gdbus",
        "call",
        "--session",
        "--dest",
        "org.gnome.Mutter.IdleMonitor",
        "--object-path",
        "/org/gnome/Mutter/IdleMonitor/Core",
        "--method",
        "org.gnome.Mutter.IdleMonitor.GetIdletime",
    ]

    def seconds() -> float | None:
        try:
            out = subprocess.run(
                command, capture_output=True, text=True, timeout=GDBUS_TIMEOUT, check=False
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        m = re.search(r"(\d+)", out)  # "(uint64 12345,)"
        return int(m.group(1)) / 1000.0 if m else None

    if seconds() is None:
        return None  # not GNOME, or the monitor is not reachable
    return seconds


# Tried in this order; the first that works on this machine is used.
_METHODS = (
    ("Windows input time", _windows),
    ("macOS input time", _macos),
    ("GNOME idle monitor", _gnome_wayland),  # before X11: under Wayland, X11 sees only X apps
    ("X11 screen saver extension", _x11),
)


class IdleClock:
    """Seconds since the last keyboard or mouse input on this machine, if the platform
    tells; ``method`` names the source ("" when there is none)."""

    def __init__(self) -> None:
        self.method = ""
        self._seconds: Callable[[], float | None] | None = None
        for name, make in _METHODS:
            try:
                fn = make()
            except (OSError, AttributeError, ValueError):
                fn = None
            if fn is not None and fn() is not None:
                self.method, self._seconds = name, fn
                break

    @property
    def system_wide(self) -> bool:
        return self._seconds is not None

    def seconds(self) -> float | None:
        """Blocking (briefly): call from a worker thread."""
        if self._seconds is None:
            return None
        try:
            return self._seconds()
        except (OSError, ValueError):
            return None


def pause_reason(
    paused_by_user: bool, only_when_away: bool, idle_seconds: float | None, away_minutes: int
) -> str:
    """Why this machine's worker should be paused now ("" = let it render)."""
    if paused_by_user:
        return "paused on this computer"
    if not only_when_away:
        return ""
    if idle_seconds is None or idle_seconds < away_minutes * 60:
        return f"waits until you are away ({away_minutes} min without input)"
    return ""
