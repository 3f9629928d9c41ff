"""The renderer plugin interface.

A renderer plugin tells the farm whether its program is installed here (and
which version), turns a job's scene into files a renderer process can read,
builds the command that renders one chunk (all its frames in one process, so
start-up is paid once per chunk), and reads progress from that process's
output. The built-in ray tracer is a plugin like any other; third parties add
theirs through the ``peerfarm.renderers`` entry-point group.

Tiles: a plugin that sets ``supports_tiles`` renders one tile of one frame when
``chunk_command`` gets ``tile=(index, count)``. The tile's pixels are
``peerfarm.core.tiles.tile_box(width, height, count, index, tile_align)``; the
renderer writes an image of the whole frame's size in which only that box
counts (what POV-Ray and Blender write for a border render). The submitter
stitches the boxes of all tiles into the frame; a frame of tiles must be pixel
for pixel the frame rendered whole, so a plugin refuses (in ``check_job``)
whatever it cannot tile that way. Plugins that leave ``supports_tiles`` False
never get a tiled job: `peerfarm submit --tiles` is refused for them.
"""

from __future__ import annotations

import os
import sys
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from peerfarm.job_request import JobRequest


class RendererError(ValueError):
    """A job's scene cannot be rendered by this renderer; the message says why."""


@dataclass(frozen=True)
class JobCheck:
    """What checking a job found: the scene's own frame range, and notes for the user.

    A note is one human-readable line about a setting of the scene the farm overrides
    (e.g. the scene's own output file name: the farm names the frames) or reads
    differently from how it looks, naming the file and line. The job still renders;
    notes are shown at submit and are not part of the job (NEW_JOB does not carry them).
    """

    frame_range: tuple[int, int]
    notes: tuple[str, ...] = ()


class Renderer(ABC):
    #: The name jobs use (`--renderer NAME`) and nodes advertise.
    name: str = ""
    #: Whether chunk_command can render one tile of a frame (see the module doc).
    supports_tiles: bool = False
    #: Tile edges fall on multiples of this many pixels (the renderer's block size).
    tile_align: int = 1
    #: The image formats it writes (names from peerfarm.formats, which are also the
    #: frames' file extensions); jobs ask for one with `--format`, png by default.
    formats: tuple[str, ...] = ("png",)
    #: The module of its chunks' wrapper process (`python -m MODULE`, chunk_command)
    #: when it has one: a node keeps spare processes with it imported, one per slot
    #: (docs/renderer-processes.md, "Spare guards").
    wrapper_module: str | None = None

    @abstractmethod
    def probe(self) -> str | None:
        """The installed version, or None when this renderer cannot run here.

        May block (it can run the program): the node calls it from a thread.
        """

    def not_offered(self) -> str | None:
        """Why this renderer, although installed here, is not offered (`peerfarm status`
        and the app say it); None when it is offered or simply not installed. May block."""
        return None

    @abstractmethod
    def check_job(self, request: JobRequest) -> tuple[int, int]:
        """Validate a submitted scene; return the scene's own frame range.

        ``request.files`` maps package paths to contents: bytes, or (for files a
        client uploaded as blobs) the path of a file holding them, which may be
        big: read what you need of it. ``request.tiles`` (when above 1) asks for
        tiled frames: a plugin that supports tiles checks that the image has room
        for them and that the scene renders the same tiled as whole. Runs in a
        thread; may block. Raises RendererError with a message the user can act on.
        """

    def check_job_with_notes(self, request: JobRequest) -> JobCheck:
        """``check_job``, plus the notes the user should see (see ``JobCheck``).

        Plugins that override scene settings override this method (and have
        ``check_job`` return its ``frame_range``); the default has no notes.
        """
        return JobCheck(self.check_job(request))

    @abstractmethod
    def prepare(self, job: Any, work_dir: Path) -> None:
        """Write what the renderer process needs into ``work_dir`` (blocking)."""

    @abstractmethod
    def chunk_command(
        self, job: Any, frames: range, work_dir: Path, output_pattern: str
    ) -> list[str]:
        """The command that renders ``frames`` into files named by ``output_pattern``
        (a Python format string with a ``frame`` field), in the image format
        ``job.format`` (one of ``formats``; the pattern ends with its extension).

        A plugin with ``supports_tiles`` also takes a keyword ``tile=(index, count)``:
        render tile ``index`` of ``count`` of the single frame in ``frames``.
        """

    def scene_format(self, request: JobRequest) -> str | None:
        """The frame format the scene itself asks for (one of ``formats``), used when the
        submitter chose none; None: png. Runs in a thread; may block."""
        return None

    def scene_size(self, request: JobRequest) -> tuple[int, int] | None:
        """The image size (width, height) the scene renders at by its own settings, for
        a job without --size; None when the plugin cannot tell (a preview then keeps it).
        Runs in a thread; may block."""
        return None

    def frame_finished(self, line: str) -> bool:
        """True when a line of the renderer's standard output reports a finished frame."""
        return False


# What a renderer process inherits from the node's environment: what programs need
# to start and find their libraries, nothing else (no tokens, and of the PEERFARM_*
# settings only the programs' locations).
_INHERITED = (
    "PATH",
    "LD_LIBRARY_PATH",
    "SYSTEMROOT",  # Windows: needed by Python and most programs
    "WINDIR",
    "COMSPEC",
    "PATHEXT",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    # Where Blender, POV-Ray and ffmpeg are, when set (peerfarm/programs.py): the
    # wrappers look there first.
    "PEERFARM_BLENDER",
    "PEERFARM_POVRAY",
    "PEERFARM_FFMPEG",
)


def renderer_environment(temp_dir: Path) -> dict[str, str]:
    """The cleaned environment a renderer process runs with: home and temp folders
    inside the job's own folder (``temp_dir``), so nothing it writes lands elsewhere."""
    env = {name: os.environ[name] for name in _INHERITED if os.environ.get(name)}
    env.setdefault("PATH", os.defpath)
    for name in ("HOME", "USERPROFILE", "TMPDIR", "TMP", "TEMP"):
        env[name] = str(temp_dir)
    # Python renderers (the wrappers, third-party plugins) write UTF-8 to their pipes
    # whatever the locale or Windows code page, as the node reads them: a frame path
    # outside the code page (C:\\Users\\Michał) must not fail the chunk. The wrappers
    # also reconfigure their streams (renderers/wrapper.py); this covers the rest.
    env["PYTHONUTF8"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    # The job's folder holds the scene's files, and an earlier chunk's povray may write
    # there: none of it may become Python code run outside the sandbox. `python -m`
    # puts its folder (the job's) first on sys.path: a "json.py" there would be
    # imported by the guard or the wrapper (Python 3.11+: not added). And HOME is in the
    # job's folder: its .local/lib/pythonX.Y/site-packages would be run at start.
    env["PYTHONSAFEPATH"] = "1"
    env["PYTHONNOUSERSITE"] = "1"
    return env


def frame_range_arg(text: str) -> tuple[int, int]:
    """argparse type for a renderer process's ``--frames A-B`` (or ``N``; negative
    frames allowed, as jobs may have them): the farm's own parsing rule."""
    import argparse

    from peerfarm.core.refused import Refused
    from peerfarm.core.user_text import parse_frames

    try:
        return parse_frames(text)
    except Refused as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def tile_arg(text: str) -> tuple[int, int]:
    """argparse type for a renderer process's ``--tile I/N``: tile I (0-based) of N."""
    import argparse
    import re

    from peerfarm.core.tiles import MAX_TILES

    match = re.fullmatch(r"(\d{1,3})/(\d{1,3})", text)
    if not match or not int(match[1]) < int(match[2]) <= MAX_TILES:
        raise argparse.ArgumentTypeError(
            f"expected I/N, tile I (0-based) of N tiles, N up to {MAX_TILES}; got {text!r}"
        )
    return int(match[1]), int(match[2])


def escape_braces(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def output_pattern(out_dir: Path, stem: str, padding: int = 4, ext: str = "png") -> str:
    """``out_dir/stem_{frame:04d}.ext`` as a format string (braces in the path escaped)."""
    return escape_braces(str(out_dir)) + os.sep + f"{stem}_{{frame:0{padding}d}}.{ext}"


# --- what the plugins that run a wrapper process (POV-Ray, Blender) share ----------------


def job_field(job: Any, name: str, default: Any = None) -> Any:
    """A job attribute or key: the worker passes records, tests may pass dicts."""
    if isinstance(job, Mapping):
        return job.get(name, default)
    return getattr(job, name, default)


def image_size(width: Any, height: Any) -> tuple[int, int] | None:
    """The job's image size, or None to keep the scene's own."""
    if not width and not height:
        return None
    if type(width) is not int or type(height) is not int or width < 1 or height < 1:
        raise RendererError(f"the image size must be two whole numbers, got {width}x{height}")
    return width, height


def check_main_file(job: Any, work_dir: Path) -> None:
    """`prepare` for a scene unpacked into work_dir: its main file must be there."""
    main = job_field(job, "main")
    if not isinstance(main, str) or not (work_dir / main).is_file():
        raise RendererError(f"the job's main scene file {main!r} is not in {work_dir}")


def wrapper_command(
    module: str, job: Any, frames: range, work_dir: Path, output_pattern: str, main_kind: str
) -> list[str]:
    """The start of a chunk's command for a wrapper process (`python -m MODULE`): the
    job folder, its main file (`main_kind` says what it should be), the frames, where
    they go and the image size; the plugin adds its own options after it."""
    main = job_field(job, "main")
    if not isinstance(main, str) or not main:
        raise RendererError(f"the job names no main scene file ({main_kind})")
    command = [
        sys.executable,
        "-m",
        module,
        "--work-dir",
        str(work_dir),
        "--main",
        main,
        # "=" form: a range of negative frames ("-3--1") must not look like a flag
        f"--frames={frames.start}-{frames.stop - 1}",
        "--output-pattern",
        output_pattern,
    ]
    size = image_size(job_field(job, "width"), job_field(job, "height"))
    if size is not None:
        command += ["--size", f"{size[0]}x{size[1]}"]
    return command
