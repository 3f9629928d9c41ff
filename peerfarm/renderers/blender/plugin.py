"""Blender as a renderer plugin.

A Blender job is a scene package whose main file is a .blend, the submitter's
options (engine, samples, denoise=off) and an optional size. At submit, the
node runs Blender on the file to read the scene's frame range and refuse what
cannot render (Cycles denoising without OpenImageDenoise, no camera, ...).
Each chunk is one `python -m peerfarm.renderers.blender.run` process, which
runs one Blender for all the chunk's frames (docs/blender.md).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peerfarm.renderers.base import (
    Renderer,
    RendererError,
    check_main_file,
    image_size,
    job_field,
    wrapper_command,
)
from peerfarm.renderers.blender.options import (
    FILE_FORMATS,
    OptionError,
    farm_format,
    parse_options,
)
from peerfarm.renderers.blender.program import (
    MAX_FRAME,
    OLDEST,
    BlenderError,
    blender_version,
    find_blender,
    read_scene_info,
    supported,
)
from peerfarm.renderers.blender.scene_script import scene_problems

if TYPE_CHECKING:
    from peerfarm.job_request import JobRequest

log = logging.getLogger(__name__)


def _frames(frames: Any) -> tuple[int, int] | None:
    if frames is None:
        return None
    if not (
        isinstance(frames, list | tuple)
        and len(frames) == 2
        and all(type(frame) is int for frame in frames)
    ):
        raise RendererError("frames must be [first, last], two whole numbers")
    first, last = frames
    if first < 0 or last > MAX_FRAME:
        raise RendererError(
            f"frames {first}-{last}: Blender renders frames 0 to {MAX_FRAME}; choose --frames there"
        )
    return first, last


def _write_main(folder: Path, main: str, data: Any) -> Path:
    """The main .blend as a file Blender can open (a path, or bytes written out)."""
    if isinstance(data, os.PathLike):
        return Path(data)
    if not isinstance(data, bytes):
        raise RendererError(f"the main scene file {main!r} has no contents")
    path = folder / main.rsplit("/", 1)[-1]
    path.write_bytes(data)
    return path


def _digest(data: Any) -> str:
    h = hashlib.sha256()
    if isinstance(data, os.PathLike):
        with open(data, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    elif isinstance(data, bytes):
        h.update(data)
    return h.hexdigest()


class BlenderRenderer(Renderer):
    name = "blender"
    wrapper_module = "peerfarm.renderers.blender.run"
    formats = tuple(FILE_FORMATS)  # png jpg tiff bmp tga exr hdr

    def __init__(self) -> None:
        # What Blender said about recent .blend files (by content): a submit asks for
        # the scene's format and then checks it, and each costs a Blender start.
        self._infos: dict[str, dict[str, Any]] = {}
        self._infos_lock = threading.Lock()

    def _scene_info(self, main: str, data: Any, blender: str) -> dict[str, Any]:
        key = _digest(data)
        with self._infos_lock:
            if key in self._infos:
                return self._infos[key]
        with tempfile.TemporaryDirectory(prefix="peerfarm-blender-check-") as folder:
            path = _write_main(Path(folder), main, data)
            try:
                info = read_scene_info(path, blender)
            except BlenderError as exc:
                raise RendererError(f"{main}: {exc}") from None
        with self._infos_lock:
            if len(self._infos) >= 8:
                self._infos.pop(next(iter(self._infos)))
            self._infos[key] = info
        return info

    def scene_size(self, request: JobRequest) -> tuple[int, int] | None:
        """The .blend's resolution at its resolution percentage (None without Blender)."""
        files, main = request.files, request.main
        blender = find_blender()
        if blender is None or not isinstance(files, Mapping) or main not in files:
            return None
        try:
            info = self._scene_info(main, files[main], blender)
        except RendererError:
            return None
        percent = info["percentage"]  # as Blender sizes its own frames
        return max(1, info["width"] * percent // 100), max(1, info["height"] * percent // 100)

    def scene_format(self, request: JobRequest) -> str | None:
        """The .blend's own output format (png where the farm cannot use it)."""
        files, main = request.files, request.main
        blender = find_blender()
        if blender is None or not isinstance(files, Mapping) or main not in files:
            return None  # check_job says what is wrong
        return farm_format(self._scene_info(main, files[main], blender)["file_format"])

    def probe(self) -> str | None:
        version = blender_version()
        if version is None:
            return None
        if not supported(version):
            log.warning(
                "Blender %s is installed, but peerfarm needs Blender %d.%d or later; "
                "Blender jobs are not rendered on this node",
                version,
                *OLDEST,
            )
            return None
        return version

    def check_job(self, request: JobRequest) -> tuple[int, int]:
        """Check a Blender job before it is submitted; the scene's own frame range.

        Reads the request's files (package path -> bytes, or a path to a file holding
        them), main (the .blend), options, width/height (override the scene's) and
        frames (None: the scene's). Runs Blender (blocking, seconds).
        """
        files = request.files
        main = request.main
        if not isinstance(files, Mapping) or not files:
            raise RendererError("the job has no scene files; submit a .blend file")
        if not isinstance(main, str) or main not in files:
            raise RendererError(f"the main scene file {main!r} is not in the scene package")
        if not main.lower().endswith(".blend"):
            raise RendererError(f"{main}: a Blender scene is a .blend file")
        try:
            settings = parse_options(request.options)
        except OptionError as exc:
            raise RendererError(str(exc)) from None
        image_size(request.width, request.height)
        frames = _frames(request.frames)
        blender = find_blender()
        if blender is None:
            if frames is None:
                raise RendererError(
                    f"{main}: Blender is not installed on the node you submitted to, so it "
                    "cannot read the scene's frame range: pass --frames A-B, or submit to a "
                    "node that has Blender"
                )
            # Checked by each worker's Blender instead (run.py refuses the same things).
            return frames
        info = self._scene_info(main, files[main], blender)
        problems = scene_problems(info, settings)
        if problems:
            raise RendererError(f"{main}: " + "; ".join(problems))
        return _frames([info["frame_start"], info["frame_end"]]) or (0, 0)

    def prepare(self, job: Any, work_dir: Path) -> None:
        # The worker has unpacked the scene package into work_dir; the run process
        # gives Blender everything else on its command line.
        check_main_file(job, work_dir)

    def chunk_command(
        self, job: Any, frames: range, work_dir: Path, output_pattern: str
    ) -> list[str]:
        command = wrapper_command(
            self.wrapper_module, job, frames, work_dir, output_pattern, ".blend"
        )
        # "--option=VALUE": a value starting with "-" must not look like a flag.
        command += [f"--option={option}" for option in job_field(job, "options") or ()]
        return command

    def frame_finished(self, line: str) -> bool:
        return line.startswith("Saved: '")
