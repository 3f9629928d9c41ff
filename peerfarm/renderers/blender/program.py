"""The `blender` program: finding it, its version, the environment and command
lines peerfarm runs it with, and reading a scene's settings through it.

Every run loads the .blend with --disable-autoexec (scripts stored in the file,
and Python drivers, never run) and --factory-startup (no user preferences or
add-ons), in a clean environment whose HOME and temporary folder are private.
Blender handles its arguments in order: the file, then our script, then the
frame range, and the render flag last.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from peerfarm.child_processes import no_window_options
from peerfarm.programs import find_program, where_from
from peerfarm.renderers.blender import scene_script
from peerfarm.renderers.blender.scene_script import ERROR_PREFIX, INFO_PREFIX

PROBE_TIMEOUT = 30.0
INFO_TIMEOUT = 60.0
# bpy names and the scene settings scene_script reads are those of Blender 2.80 and later.
OLDEST = (2, 80)
MAX_FRAME = 1_048_574  # Blender's MAXFRAME; frames start at 0
_VERSION = re.compile(r"^Blender (\d+)\.(\d+)(?:\.(\d+))?", re.MULTILINE)
# EEVEE and Workbench draw with OpenGL; on Linux Blender may need the X display for it.
_DISPLAY_VARIABLES = ("DISPLAY", "XAUTHORITY", "WAYLAND_DISPLAY", "XDG_RUNTIME_DIR")
SCRIPT = Path(scene_script.__file__)
# The last line of a Python traceback in our script ("AttributeError: ...").
_PYTHON_ERROR = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception): ")


class BlenderError(Exception):
    """Blender could not do what was asked; the message has Blender's own words."""


def find_blender() -> str | None:
    """Blender's path: its setting, the PATH, its usual install places (peerfarm/programs.py)."""
    return find_program("blender")


def parse_version(text: str) -> str | None:
    """ "3.4.1" from `blender --version`'s output ("Blender 3.4.1\\n..."), or None."""
    match = _VERSION.search(text)
    if match is None:
        return None
    return ".".join(part for part in match.groups() if part is not None)


def blender_version(blender: str | None = None) -> str | None:
    """The installed Blender's version, or None when there is none that runs."""
    blender = blender or find_blender()
    if blender is None:
        return None
    try:
        result = subprocess.run(
            [blender, "--version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=PROBE_TIMEOUT,
            check=False,
            env=clean_environment(Path(tempfile.gettempdir())),
            **no_window_options(),
        )
    except (OSError, subprocess.SubprocessError):  # missing, not executable, hung
        return None
    if result.returncode != 0:
        return None
    return parse_version(result.stdout.decode("utf-8", errors="replace"))


def supported(version: str) -> bool:
    major, minor = (int(part) for part in version.split(".")[:2])
    return (major, minor) >= OLDEST


def clean_environment(home: Path) -> dict[str, str]:
    """The only environment Blender gets: none of the node's secrets or settings.

    `home` (a private folder) is HOME and the temporary folder, so Blender's
    user configuration is empty and its temporary files are ours to delete.
    The display variables stay, because EEVEE and Workbench may need them.
    """
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(home),
        "USERPROFILE": str(home),
        "TMPDIR": str(home),
        "TMP": str(home),
        "TEMP": str(home),
        "LANG": "C.UTF-8",
    }
    env.update({name: os.environ[name] for name in _DISPLAY_VARIABLES if name in os.environ})
    if sys.platform == "win32":
        for name in ("SYSTEMROOT", "SYSTEMDRIVE", "WINDIR", "PATHEXT"):
            if name in os.environ:
                env[name] = os.environ[name]
    return env


def base_command(blender: str, blend_file: Path) -> list[str]:
    """Blender in the background, on a .blend whose own scripts never run."""
    return [
        blender,
        "--background",
        "--factory-startup",
        "--disable-autoexec",
        str(blend_file),
        # An exception in our script ends Blender with this status, instead of
        # rendering on with the file's own settings (its own output path, say).
        "--python-exit-code",
        str(scene_script.EXIT_REFUSED),
    ]


def info_command(blender: str, blend_file: Path) -> list[str]:
    return [*base_command(blender, blend_file), "--python", str(SCRIPT), "--", '{"mode":"info"}']


def render_command(
    blender: str, blend_file: Path, first: int, last: int, settings: dict[str, Any]
) -> list[str]:
    """One Blender run for frames first..last: load, apply `settings`, render.

    -s/-e come after the script (so they win over anything it sets) and -a last:
    Blender acts on its arguments in order.
    """
    request = json.dumps({"mode": "render", "settings": settings}, sort_keys=True)
    return [
        *base_command(blender, blend_file),
        "--python",
        str(SCRIPT),
        "-s",
        str(first),
        "-e",
        str(last),
        "-a",
        "--",
        request,
    ]


def blender_errors(output: str) -> list[str]:
    """The lines of Blender's output that say what went wrong."""
    lines = []
    for line in output.splitlines():
        if line.startswith(ERROR_PREFIX):
            lines.append(line[len(ERROR_PREFIX) :])
        elif line.startswith(("Error:", "ERROR")) or _PYTHON_ERROR.match(line):
            lines.append(line.strip())
    return lines


def read_scene_info(blend_file: Path, blender: str | None = None) -> dict[str, Any]:
    """The settings of a .blend's active scene, read by Blender itself (blocking)."""
    blender = blender or find_blender()
    if blender is None:
        raise BlenderError(f"Blender is not installed here (looked at: {where_from('blender')})")
    with tempfile.TemporaryDirectory(prefix="peerfarm-blender-") as home:
        try:
            result = subprocess.run(
                info_command(blender, blend_file.resolve()),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=INFO_TIMEOUT,
                check=False,
                cwd=home,
                env=clean_environment(Path(home)),
                **no_window_options(),
            )
        except subprocess.TimeoutExpired:
            raise BlenderError(
                f"Blender did not read the scene within {INFO_TIMEOUT:.0f} s"
            ) from None
        except OSError as exc:
            raise BlenderError(f"cannot run Blender: {exc}") from None
    output = result.stdout.decode("utf-8", errors="replace")
    for line in output.splitlines():
        if line.startswith(INFO_PREFIX):
            try:
                info = json.loads(line[len(INFO_PREFIX) :])
            except ValueError:
                break
            if isinstance(info, dict):
                return info
    said = "; ".join(blender_errors(output)) or output.strip()[-500:] or "nothing"
    raise BlenderError(f"Blender could not read it (exit status {result.returncode}): {said}")
