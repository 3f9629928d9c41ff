"""Where the programs peerfarm runs (Blender, POV-Ray, ffmpeg) are on this machine.

Looked for in this order, the first that is a file wins:

1. the program's setting: ``blender = "..."``, ``povray = "..."``, ``ffmpeg = "..."`` in
   the config file or ``--blender PATH`` and so on on the command line, which the node
   passes on to its renderer wrappers as ``PEERFARM_BLENDER``, ``PEERFARM_POVRAY`` and
   ``PEERFARM_FFMPEG`` (settable by hand too);
2. ``PATH``;
3. the places the program's installers put it on this platform (`standard_places`): the
   Windows Blender installer does not add itself to ``PATH``, macOS keeps Blender inside
   Blender.app, and an app started from the Finder sees a ``PATH`` without Homebrew's
   folders.

Every decision takes the platform and the environment as parameters, so each
platform's answer is tested on any machine (tests/test_platforms.py).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath

PROGRAMS = ("blender", "povray", "ffmpeg")

# Homebrew on Apple silicon, then on Intel Macs (and hand-built programs).
_MAC_BIN = ("/opt/homebrew/bin", "/usr/local/bin")


def env_var(program: str) -> str:
    """The environment variable that names a program's location: PEERFARM_BLENDER, ..."""
    return f"PEERFARM_{program.upper()}"


def _version_key(path: PurePath) -> tuple[int, ...]:
    """Blender 4.2 after Blender 3.6 after Blender 10.0 is wrong: compare the numbers."""
    return tuple(int(n) for n in re.findall(r"\d+", path.name))


def standard_places(
    program: str,
    platform: str = sys.platform,
    env: Mapping[str, str] = os.environ,
    glob: Callable[[PurePath, str], Iterable[PurePath]] | None = None,
) -> list[PurePath]:
    """Where `program`'s usual installers put it on `platform`, most likely first.

    `glob(folder, pattern)` lists the folders matching a pattern (several Blender
    versions can be installed side by side; the newest comes first)."""
    if glob is None:
        glob = _glob
    if platform == "win32":
        return _windows_places(program, env, glob)
    home = PurePosixPath(env.get("HOME") or "/")
    if platform == "darwin":
        if program == "blender":
            return [
                PurePosixPath("/Applications/Blender.app/Contents/MacOS/Blender"),
                home / "Applications/Blender.app/Contents/MacOS/Blender",
            ]
        return [PurePosixPath(folder) / program for folder in _MAC_BIN]
    # Linux and the other Unixes: what a desktop session's PATH may lack.
    folders = ["/usr/local/bin", "/snap/bin", str(home / ".local/bin")]
    return [PurePosixPath(folder) / program for folder in folders]


def _windows_places(
    program: str, env: Mapping[str, str], glob: Callable[[PurePath, str], Iterable[PurePath]]
) -> list[PurePath]:
    program_files = [
        PureWindowsPath(env[name])
        for name in ("ProgramFiles", "ProgramW6432", "ProgramFiles(x86)")
        if env.get(name)
    ] or [PureWindowsPath("C:/Program Files")]
    program_files = list(dict.fromkeys(program_files))
    places: list[PurePath] = []
    if program == "blender":
        # The installer: Program Files\Blender Foundation\Blender 4.2\blender.exe
        for base in program_files:
            versions = sorted(glob(base / "Blender Foundation", "Blender*"), key=_version_key)
            places += [folder / "blender.exe" for folder in reversed(versions)]
        # Steam's Blender
        for base in program_files:
            places.append(base / "Steam/steamapps/common/Blender/blender.exe")
    elif program == "povray":
        # POV-Ray for Windows (pvengine) has no command line the povray wrapper can drive:
        # only a povray.exe someone built or installed (e.g. under Cygwin/MSYS2) is used.
        for base in program_files:
            places.append(base / "POV-Ray/bin/povray.exe")
    elif program == "ffmpeg":
        local = env.get("LOCALAPPDATA")
        if local:  # winget's links
            places.append(PureWindowsPath(local) / "Microsoft/WinGet/Links/ffmpeg.exe")
        data = env.get("ProgramData") or "C:/ProgramData"
        places.append(PureWindowsPath(data) / "chocolatey/bin/ffmpeg.exe")
        profile = env.get("USERPROFILE")
        if profile:
            places.append(PureWindowsPath(profile) / "scoop/shims/ffmpeg.exe")
        places.append(PureWindowsPath("C:/ffmpeg/bin/ffmpeg.exe"))  # the usual hand install
        for base in program_files:
            places.append(base / "ffmpeg/bin/ffmpeg.exe")
    return places


def _glob(folder: PurePath, pattern: str) -> list[PurePath]:
    try:
        return [p for p in Path(folder).glob(pattern) if p.is_dir()]
    except OSError:
        return []


def _is_program(path: str | PurePath) -> bool:
    return os.path.isfile(path)


def find_program(
    program: str,
    *,
    platform: str = sys.platform,
    env: Mapping[str, str] | None = None,
    which: Callable[[str], str | None] = shutil.which,
    is_program: Callable[[str | PurePath], bool] = _is_program,
    glob: Callable[[PurePath, str], Iterable[PurePath]] | None = None,
) -> str | None:
    """The path of `program` ("blender", "povray", "ffmpeg") on this machine, or None.

    A setting (its environment variable) that names no file is not passed over: it
    gives None, so a typo is reported rather than another copy silently used."""
    env = os.environ if env is None else env
    setting = env.get(env_var(program), "").strip()
    if setting:
        path = os.path.expanduser(setting)
        return path if is_program(path) else None
    found = which(program)
    if found:
        return found
    for place in standard_places(program, platform, env, glob):
        if is_program(place):
            return str(place)
    return None


def where_from(program: str, env: Mapping[str, str] | None = None) -> str:
    """How `find_program` looked (for `peerfarm doctor` and error messages)."""
    env = os.environ if env is None else env
    setting = env.get(env_var(program), "").strip()
    if setting:
        return f"set to {setting} (the {program} setting or ${env_var(program)})"
    return f"PATH, then the usual install places; set it with --{program} PATH"


def set_locations(locations: Mapping[str, str | os.PathLike[str] | None]) -> None:
    """Make the given program locations (program -> path; None: not set) this process's
    and its children's: renderer wrappers and probes read them with `find_program`."""
    for program, path in locations.items():
        if program not in PROGRAMS:
            raise ValueError(f"unknown program {program!r}")
        if path:
            os.environ[env_var(program)] = str(Path(path).expanduser())
