"""POV-Ray 3.7 as a renderer plugin.

A POV-Ray job is a scene package (its files and a main .ini or .pov), the
submitter's options and a size. The worker unpacks the package into the job's
folder; each chunk is one `python -m peerfarm.renderers.povray.run` process,
which checks the scene again, runs a confined povray for all the chunk's frames
and moves each finished frame to the name the worker expects (docs/povray.md).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peerfarm.child_processes import no_window_options
from peerfarm.programs import find_program
from peerfarm.renderers.base import (
    JobCheck,
    Renderer,
    RendererError,
    check_main_file,
    image_size,
    job_field,
    wrapper_command,
)
from peerfarm.renderers.povray.ini import (
    OUTPUT_TYPES,
    IniError,
    load_scene,
    output_format,
    scene_output_type,
)
from peerfarm.renderers.povray.sandbox import unavailable_reason
from peerfarm.renderers.povray.tiling import BLOCK_SIZE, tiling_problem
from peerfarm.scenes.detect import decode_text

if TYPE_CHECKING:
    from peerfarm.job_request import JobRequest

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 10.0
_VERSION = re.compile(r"POV-Ray\s+(?:Version\s+)?(\d+\.\d+(?:\.\d+)*)")
SUPPORTED = ("3.7", "3.8")  # the animation maths and options of ini.py are those of 3.7
MAX_INI_BYTES = 1024 * 1024  # as run.py, which reads the INI again on each worker


def povray_version() -> str | None:
    """`povray --version`'s version ("3.7.0.10"), or None when povray does not run."""
    povray = find_program("povray")
    if povray is None:
        return None
    try:
        result = subprocess.run(
            [povray, "--version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=PROBE_TIMEOUT,
            check=False,
            **no_window_options(),
        )
    except (OSError, subprocess.SubprocessError):  # missing, not executable, hung
        return None
    # POV-Ray prints its banner on stderr; the exit status of --version varies by build.
    text = (result.stderr + result.stdout).decode("utf-8", errors="replace")
    match = _VERSION.search(text)
    return match[1] if match else None


def _head(path: Path, limit: int) -> bytes:
    """The first `limit` bytes of a file (a .pov main file's text is not needed whole)."""
    try:
        with open(path, "rb") as file:
            return file.read(limit)
    except OSError as exc:
        raise RendererError(f"cannot read the scene file: {exc.strerror or exc}") from None


def _main_file(request: JobRequest) -> tuple[Mapping[str, Any], str, str]:
    """The job's files, its main file's name and that file's text (a .pov's: its head)."""
    files = request.files
    main = request.main
    if not isinstance(files, Mapping) or not files:
        raise RendererError(
            "the job has no scene files; submit a .pov or .ini file, or the scene's folder"
        )
    if not isinstance(main, str) or main not in files:
        raise RendererError(f"the main scene file {main!r} is not in the scene package")
    data = files[main]
    if isinstance(data, os.PathLike):  # an uploaded file, where the node keeps it
        data = _head(Path(data), MAX_INI_BYTES + 1)
        if main.lower().endswith(".ini") and len(data) > MAX_INI_BYTES:
            raise RendererError(f"{main}: an INI file larger than 1 MiB is not a scene INI")
    if not isinstance(data, bytes):
        raise RendererError(f"the main scene file {main!r} has no contents")
    return files, main, decode_text(data)


class PovrayRenderer(Renderer):
    name = "povray"
    wrapper_module = "peerfarm.renderers.povray.run"
    supports_tiles = True  # on POV-Ray's 32-pixel block grid, for scenes tiling.py accepts
    tile_align = BLOCK_SIZE
    formats = tuple(OUTPUT_TYPES)  # POV-Ray's +F types: png jpg tga bmp ppm exr hdr

    def probe(self) -> str | None:
        version = povray_version()
        if version is None:
            return None
        if not version.startswith(SUPPORTED):
            log.warning(
                "POV-Ray %s is installed, but peerfarm supports POV-Ray %s only; "
                "POV-Ray jobs are not rendered on this node",
                version,
                " and ".join(SUPPORTED),
            )
            return None
        reason = unavailable_reason()
        if reason is not None:
            log.warning("POV-Ray %s is installed but not offered: %s", version, reason)
            return None
        return version

    def not_offered(self) -> str | None:
        version = povray_version()
        if version is None:
            return None  # not installed (or not running): nothing to explain
        if not version.startswith(SUPPORTED):
            return f"POV-Ray {version} is installed; peerfarm supports {' and '.join(SUPPORTED)}"
        reason = unavailable_reason()
        return None if reason is None else f"POV-Ray {version} is installed, but {reason}"

    def check_job(self, request: JobRequest) -> tuple[int, int]:
        """Check a POV-Ray job before it is submitted; the scene's own frame range."""
        return self.check_job_with_notes(request).frame_range

    def check_job_with_notes(self, request: JobRequest) -> JobCheck:
        """Check a POV-Ray job before it is submitted: the scene's own frame range, and a
        note for each setting of the INI peerfarm overrides (Output_File_Name, ...).

        Reads the request's files (package path -> bytes, or the path of a file
        holding them), main (the .ini or .pov), options, width/height (override the
        INI's), frames (None: the INI's), tiles and format (None: png).
        """
        files, main, text = _main_file(request)
        options = request.options
        if not isinstance(options, list):
            raise RendererError("the POV-Ray options must be a list like ['+A0.3', '+Q9']")
        size = image_size(request.width, request.height)
        try:
            fmt = request.format or "png"
            scene = load_scene(main, text, files.keys(), options, size, fmt)
            frames = request.frames
            if frames is not None:
                if not (
                    isinstance(frames, list | tuple)
                    and len(frames) == 2
                    and all(type(frame) is int for frame in frames)
                ):
                    raise RendererError("frames must be [first, last], two whole numbers")
                scene.check_frames(frames[0], frames[1])
        except IniError as exc:
            raise RendererError(str(exc)) from None
        tiles = request.tiles or 1
        if tiles > 1:
            width, height = scene.size
            problem = scene.tile_problem(BLOCK_SIZE) or tiling_problem(
                files, width, height, tiles, scene.bits_per_color, scene.format, scene.alpha
            )
            if problem is not None:
                raise RendererError(f"--tiles {tiles}: {problem}")
        return JobCheck(scene.frame_range, scene.notes)

    def scene_format(self, request: JobRequest) -> str | None:
        """The format the INI's Output_File_Type (or an option's +F) asks for, so a job
        submitted without --format writes what `povray scene.ini` writes."""
        files, main, text = _main_file(request)
        try:
            output_type = scene_output_type(main, text, request.options)
        except IniError:
            return None  # check_job says what is wrong, with the whole scene in view
        return output_format(output_type) if output_type else None

    def scene_size(self, request: JobRequest) -> tuple[int, int] | None:
        """The INI's Width and Height (POV-Ray's 320x240 where it sets none)."""
        try:
            files, main, text = _main_file(request)
            return load_scene(main, text, files.keys(), request.options, None, "png").size
        except (RendererError, IniError):
            return None  # check_job says what is wrong

    def prepare(self, job: Any, work_dir: Path) -> None:
        # The worker has unpacked the scene package into work_dir. Everything
        # POV-Ray reads besides the scene (its INI, its settings) is written per
        # chunk by the run process, outside work_dir, where no scene can change it.
        check_main_file(job, work_dir)

    def chunk_command(
        self,
        job: Any,
        frames: range,
        work_dir: Path,
        output_pattern: str,
        tile: tuple[int, int] | None = None,
    ) -> list[str]:
        command = wrapper_command(
            self.wrapper_module, job, frames, work_dir, output_pattern, ".ini or .pov"
        )
        fmt = job_field(job, "format") or "png"
        if fmt != "png":  # the run process's default
            command += ["--format", fmt]
        if tile is not None:
            command += ["--tile", f"{tile[0]}/{tile[1]}"]
        # "--option=VALUE": an option such as "-D" would otherwise look like a flag.
        command += [f"--option={option}" for option in job_field(job, "options") or ()]
        return command

    def frame_finished(self, line: str) -> bool:
        return line.startswith("FRAME ")
