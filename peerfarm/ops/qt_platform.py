"""Can the desktop app open a window here? Qt's platform plugin and its system libraries.

On a minimal Linux install the app's Qt (from the PySide6 wheel) finds its
platform plugin (libqxcb.so) but not the X client libraries it links
(libxcb-cursor0, libxcb-icccm4, libxcb-keysyms1, ...), and Qt ends the process
with "could not load the Qt platform plugin "xcb"" and no word of what to install.
This module finds out without loading Qt: ``ldd`` on the plugin lists the
libraries the dynamic loader cannot find, and a table names the Debian and
Fedora packages that hold them. ``peerfarm gui`` checks before it starts Qt,
``peerfarm doctor`` also tries loading the plugin in a child process
(QT_DEBUG_PLUGINS=1) when there is a display to try it on.

The plugin folder is found the way Qt finds it: $QT_QPA_PLATFORM_PLUGIN_PATH,
else PySide6's own ``Qt/plugins/platforms`` (located without importing PySide6).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from peerfarm.child_processes import no_window_options

# A system library the Qt platform plugins link -> (Debian/Ubuntu package, Fedora
# package). Debian names as `dpkg -S` reports them on Debian 12; Fedora names from
# Fedora's package lists (not checked on a Fedora machine here).
PACKAGES: dict[str, tuple[str, str]] = {
    "libxcb-cursor.so.0": ("libxcb-cursor0", "xcb-util-cursor"),
    "libxcb-icccm.so.4": ("libxcb-icccm4", "xcb-util-wm"),
    "libxcb-image.so.0": ("libxcb-image0", "xcb-util-image"),
    "libxcb-keysyms.so.1": ("libxcb-keysyms1", "xcb-util-keysyms"),
    "libxcb-render-util.so.0": ("libxcb-render-util0", "xcb-util-renderutil"),
    "libxcb-util.so.1": ("libxcb-util1", "xcb-util"),
    "libxcb-randr.so.0": ("libxcb-randr0", "libxcb"),
    "libxcb-shape.so.0": ("libxcb-shape0", "libxcb"),
    "libxcb-shm.so.0": ("libxcb-shm0", "libxcb"),
    "libxcb-sync.so.1": ("libxcb-sync1", "libxcb"),
    "libxcb-xfixes.so.0": ("libxcb-xfixes0", "libxcb"),
    "libxcb-render.so.0": ("libxcb-render0", "libxcb"),
    "libxcb-xkb.so.1": ("libxcb-xkb1", "libxcb"),
    "libxcb-xinerama.so.0": ("libxcb-xinerama0", "libxcb"),
    "libxcb-xinput.so.0": ("libxcb-xinput0", "libxcb"),
    "libxcb-glx.so.0": ("libxcb-glx0", "libxcb"),
    "libxcb.so.1": ("libxcb1", "libxcb"),
    "libxkbcommon-x11.so.0": ("libxkbcommon-x11-0", "libxkbcommon-x11"),
    "libxkbcommon.so.0": ("libxkbcommon0", "libxkbcommon"),
    "libX11-xcb.so.1": ("libx11-xcb1", "libX11-xcb"),
    "libX11.so.6": ("libx11-6", "libX11"),
    "libXext.so.6": ("libxext6", "libXext"),
    "libSM.so.6": ("libsm6", "libSM"),
    "libICE.so.6": ("libice6", "libICE"),
    "libGL.so.1": ("libgl1", "libglvnd-glx"),
    "libGLX.so.0": ("libglx0", "libglvnd-glx"),
    "libOpenGL.so.0": ("libopengl0", "libglvnd-opengl"),
    "libEGL.so.1": ("libegl1", "libglvnd-egl"),
    "libfontconfig.so.1": ("libfontconfig1", "fontconfig"),
    "libfreetype.so.6": ("libfreetype6", "freetype"),
    "libdbus-1.so.3": ("libdbus-1-3", "dbus-libs"),
    "libglib-2.0.so.0": ("libglib2.0-0", "glib2"),
    "libgthread-2.0.so.0": ("libglib2.0-0", "glib2"),
    "libwayland-client.so.0": ("libwayland-client0", "libwayland-client"),
    "libwayland-cursor.so.0": ("libwayland-cursor0", "libwayland-cursor"),
    "libwayland-egl.so.1": ("libwayland-egl1", "libwayland-egl"),
}

PROBE_TIMEOUT = 30.0
_NOT_FOUND = re.compile(r"^\s*(\S+)\s+=>\s+not found", re.MULTILINE)
_CANNOT_OPEN = re.compile(r"(\S+\.so[.\d]*): cannot open shared object file")
# Platforms that need no system libraries beyond Qt's own (tests, headless runs).
_SELF_CONTAINED = ("offscreen", "minimal", "vnc", "linuxfb")
_PROBE = (
    "import sys\n"
    "from PySide6.QtGui import QGuiApplication\n"
    "app = QGuiApplication(sys.argv[:1])\n"
    "print('platform', app.platformName())\n"
)


@dataclass
class QtPlatformCheck:
    ok: bool
    platform: str = ""
    plugin: Path | None = None
    missing: list[str] = field(default_factory=list)
    problem: str = ""  # what is wrong and what to do ("" when ok)
    detail: str = ""  # what was found when it is ok


def linux() -> bool:
    return sys.platform.startswith(("linux", "freebsd", "openbsd", "netbsd"))


def platforms_dir(env: Mapping[str, str] | None = None) -> Path | None:
    """Where Qt looks for platform plugins: $QT_QPA_PLATFORM_PLUGIN_PATH, else PySide6's."""
    env = os.environ if env is None else env
    if env.get("QT_QPA_PLATFORM_PLUGIN_PATH"):
        return Path(env["QT_QPA_PLATFORM_PLUGIN_PATH"])
    try:
        spec = importlib.util.find_spec("PySide6")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "Qt" / "plugins" / "platforms"


def wanted_platforms(env: Mapping[str, str] | None = None) -> list[str]:
    """The platform plugins Qt would try here, in order."""
    env = os.environ if env is None else env
    chosen = env.get("QT_QPA_PLATFORM", "")
    if chosen:
        return [p.split(":")[0] for p in chosen.split(";") if p]
    if env.get("WAYLAND_DISPLAY") and env.get("XDG_SESSION_TYPE") == "wayland":
        return ["wayland", "xcb"]  # Qt 6 prefers Wayland in a Wayland session
    return ["xcb"]


def plugin_file(directory: Path, platform: str) -> Path | None:
    exact = directory / f"libq{platform}.so"
    if exact.exists():
        return exact
    return next(iter(sorted(directory.glob(f"libq{platform}*.so"))), None)


def missing_libraries(plugin: Path, env: Mapping[str, str] | None = None) -> list[str] | None:
    """Libraries the dynamic loader cannot find for ``plugin`` (with its dependencies,
    as ``ldd`` resolves them under ``env``'s LD_LIBRARY_PATH); None without ldd."""
    ldd = shutil.which("ldd")
    if ldd is None:
        return None
    try:
        done = subprocess.run(
            [ldd, str(plugin)],
            capture_output=True,
            text=True,
            timeout=30,
            env=dict(os.environ if env is None else env),
            **no_window_options(),
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return list(dict.fromkeys(_NOT_FOUND.findall(done.stdout)))


def install_hint(missing: list[str]) -> str:
    """Which packages to install for the missing libraries, on Debian and on Fedora."""
    known = [PACKAGES[m] for m in missing if m in PACKAGES]
    unknown = [m for m in missing if m not in PACKAGES]
    parts = []
    if known:
        debian = " ".join(dict.fromkeys(d for d, _ in known))
        fedora = " ".join(dict.fromkeys(f for _, f in known))
        parts.append(
            f"install them: on Debian/Ubuntu `sudo apt install {debian}`; on Fedora "
            f"`sudo dnf install {fedora}`"
        )
    for name in unknown:
        parts.append(
            f"find the package holding {name} with `apt-file search {name}` or "
            f"`dnf provides '*/{name}'`"
        )
    return "; ".join(parts)


def describe(missing: list[str], platform: str) -> str:
    return (
        f"the desktop app cannot open a window: Qt's {platform!r} platform plugin needs "
        f"system libraries that are not installed ({', '.join(missing)}); "
        f"{install_hint(missing)}. Or run a node without a window: `peerfarm node`"
    )


def check_platform_plugin(env: Mapping[str, str] | None = None) -> QtPlatformCheck:
    """Whether Qt's platform plugin for this session has all its libraries (no Qt loaded)."""
    env = os.environ if env is None else env
    if not linux():
        return QtPlatformCheck(True, detail="Qt brings its own platform plugin on this system")
    directory = platforms_dir(env)
    if directory is None:
        return QtPlatformCheck(
            False,
            problem="the desktop app is not installed (no PySide6): pip install 'peerfarm[gui]'",
        )
    candidates = wanted_platforms(env)
    problems = []
    for platform in candidates:
        if platform in _SELF_CONTAINED:
            return QtPlatformCheck(True, platform, detail=f"platform {platform!r} needs no display")
        plugin = plugin_file(directory, platform)
        if plugin is None:
            problems.append(
                QtPlatformCheck(
                    False,
                    platform,
                    problem=f"Qt's {platform!r} platform plugin is not in {directory}; "
                    f"reinstall PySide6 (pip install --force-reinstall PySide6-Essentials)",
                )
            )
            continue
        missing = missing_libraries(plugin, env)
        if missing is None:
            return QtPlatformCheck(
                True, platform, plugin, detail=f"{plugin.name} found (ldd missing: not checked)"
            )
        if not missing:
            return QtPlatformCheck(
                True, platform, plugin, detail=f"{plugin.name}: every library it needs is here"
            )
        problems.append(
            QtPlatformCheck(False, platform, plugin, missing, describe(missing, platform))
        )
    return problems[0] if problems else QtPlatformCheck(False, problem="no platform plugin")


def has_display(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))


def try_loading(platform: str, env: Mapping[str, str] | None = None) -> QtPlatformCheck:
    """Start a QGuiApplication on ``platform`` in a child process, with Qt's plugin
    debugging on; a failure names the library the loader could not open."""
    child_env = dict(os.environ if env is None else env)
    child_env.update(QT_DEBUG_PLUGINS="1", QT_QPA_PLATFORM=platform)
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT,
            env=child_env,
            **no_window_options(),
        )
    except subprocess.TimeoutExpired:
        return QtPlatformCheck(False, platform, problem=f"Qt did not start within {PROBE_TIMEOUT}s")
    if done.returncode == 0:
        return QtPlatformCheck(True, platform, detail=f"Qt opened the {platform!r} platform")
    missing = list(dict.fromkeys(_CANNOT_OPEN.findall(done.stderr)))
    if missing:
        return QtPlatformCheck(False, platform, None, missing, describe(missing, platform))
    last = [line for line in done.stderr.splitlines() if line.strip()][-3:]
    return QtPlatformCheck(
        False,
        platform,
        problem=f"Qt could not start the {platform!r} platform: {' / '.join(last)}",
    )
