"""Preview first (`peerfarm submit --preview`): a quick pass of a job before the full one.

The preview is a job of its own, submitted just before the full job: the same scene
and frames at quarter size (a quarter of the width and of the height, as Blender's
25 %; the scene's own size where the renderer plugin cannot tell it, e.g. a .blend
on a machine without Blender), with the
renderer's quick settings, one frame per chunk, taken in spread order (first, last,
middle...), one priority step above the full job, into the ``preview`` folder inside
the full job's output folder. Nodes take the preview's chunks first, so every part
of the shot shows early, small; the desktop app shows the preview frames in the full
job's grid until the full frames replace them.

What "quick settings" means per renderer (docs/povray.md, docs/blender.md):
- POV-Ray: ``Quality=3`` (no shadows, reflections or textures beyond colour) and
  ``Antialias=off``, in place of the job's own quality options;
- Blender: ``samples=PREVIEW_SAMPLES`` in place of the job's samples;
- the built-in renderer: only smaller.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePath

from peerfarm.core.chunk_order import SPREAD
from peerfarm.job_request import JobRequest
from peerfarm.jobspec import DEFAULT_SIZE
from peerfarm.renderers.base import Renderer

PREVIEW_FOLDER = "preview"
PREVIEW_SCALE = 4  # width and height divided by this: quarter size
PREVIEW_SAMPLES = 8
MAX_PRIORITY = 1000


def preview_output(output: str) -> str:
    """The preview's output folder: ``preview`` inside the full job's."""
    return str(PurePath(output) / PREVIEW_FOLDER) if output else ""


def _quick_options(renderer: str, options: list[str]) -> list[str]:
    if renderer == "povray":
        # The job's own quality and antialiasing options give way to the quick ones.
        kept = [o for o in options if not _povray_quality(o)]
        return [*kept, "Quality=3", "Antialias=off"]
    if renderer == "blender":
        kept = [o for o in options if o.partition("=")[0].strip().lower() != "samples"]
        return [*kept, f"samples={PREVIEW_SAMPLES}"]
    return list(options)


def _povray_quality(option: str) -> bool:
    text = option.strip()
    if text[:1] in "+-":  # +Q9, +A0.3, -A, +AM2, +R3, +J...
        return text[1:2].upper() in ("Q", "A", "R", "J")
    key = text.partition("=")[0].strip().lower()
    return key == "quality" or key.startswith("antialias") or key.startswith("jitter")


def preview_request(request: JobRequest, plugins: Mapping[str, Renderer]) -> JobRequest:
    """The preview job of ``request`` (blocking: the plugin may read the scene's size)."""
    renderer = request.renderer or "builtin"
    if request.width and request.height:
        size: tuple[int, int] | None = (request.width, request.height)
    elif renderer == "builtin":
        size = DEFAULT_SIZE
    else:
        plugin = plugins.get(renderer)
        size = plugin.scene_size(request) if plugin is not None else None
    width, height = size if size else (None, None)  # unknown: the scene's own
    return request.replace(
        options=_quick_options(renderer, list(request.options)),
        width=max(1, width // PREVIEW_SCALE) if width else None,
        height=max(1, height // PREVIEW_SCALE) if height else None,
        chunk_size=1,
        tiles=1,
        video=False,
        order=SPREAD,
        output=preview_output(request.output),
        priority=min(request.priority + 1, MAX_PRIORITY),
        supersedes="",
    )
