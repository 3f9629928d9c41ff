"""The built-in ray tracer as a renderer plugin."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peerfarm import __version__
from peerfarm.disk import write_atomically

if TYPE_CHECKING:
    from peerfarm.job_request import JobRequest
from peerfarm.renderers.base import Renderer, RendererError


class BuiltinRenderer(Renderer):
    name = "builtin"
    wrapper_module = "peerfarm.renderers.builtin"
    supports_tiles = True  # every pixel depends on its own position only
    formats = ("png", "jpg", "tiff", "bmp")  # written with Pillow (tracer.IMAGE_FORMATS)

    def probe(self) -> str | None:
        return __version__  # ships with peerfarm: always there, same version

    def check_job(self, request: JobRequest) -> tuple[int, int]:
        from peerfarm.renderers.builtin import SceneError, load_scene_text, scene_frame_range

        scene_text = request.scene
        if not isinstance(scene_text, str) or not scene_text:
            raise RendererError("the job has no scene")
        try:
            first, last = scene_frame_range(load_scene_text(scene_text))
        except SceneError as exc:
            raise RendererError(f"the scene is not valid: {exc}") from None
        frames = request.frames
        # The renderer refuses frames outside the scene's animation: refuse them now,
        # not chunk by chunk on every node.
        if isinstance(frames, list | tuple) and len(frames) == 2:
            a, b = frames
            if type(a) is int and type(b) is int and (a < first or b > last):
                raise RendererError(
                    f"frames {a}-{b} are outside the scene's animation (frames {first}-{last}); "
                    f"choose frames within it or change the scene's animation range"
                )
        return first, last

    def prepare(self, job: Any, work_dir: Path) -> None:
        scene_file = work_dir / "scene.json"
        if not scene_file.exists():
            write_atomically(scene_file, job.scene.encode("utf-8"))

    def chunk_command(
        self,
        job: Any,
        frames: range,
        work_dir: Path,
        output_pattern: str,
        tile: tuple[int, int] | None = None,
    ) -> list[str]:
        extra = [] if tile is None else ["--tile", f"{tile[0]}/{tile[1]}"]
        fmt = getattr(job, "format", "png")
        if fmt != "png":  # the process's default
            extra += ["--format", fmt]
        return [
            sys.executable,
            "-m",
            self.wrapper_module,
            "--scene-file",
            str(work_dir / "scene.json"),
            # "=" form: a range of negative frames ("-3--1") must not look like a flag
            f"--frames={frames.start}-{frames.stop - 1}",
            "--size",
            f"{job.width}x{job.height}",
            "--output-pattern",
            output_pattern,
            *extra,
        ]

    def frame_finished(self, line: str) -> bool:
        return line.startswith("FRAME ")
