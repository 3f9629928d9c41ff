"""Preview first (`peerfarm submit --preview`): a quick pass of a job before the full one.

The preview is a job of its own, submitted just before the full job: the same scene
and frames at a quarter of the size (half the width and half the height), with the
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

from pathlib import PurePath

from peerfarm.core.chunk_order import SPREAD
from peerfarm.job_request import JobRequest

PREVIEW_FOLDER = "preview"
PREVIEW_SCALE = 2  # width and height divided by this: a quarter of the pixels
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


def preview_request(request: JobRequest, size: tuple[int, int]) -> JobRequest:
    """The preview job of ``request``, whose frames are ``size`` (width, height) big."""
    width, height = size
    return request.replace(
        options=_quick_options(request.renderer or "builtin", list(request.options)),
        width=max(1, width // PREVIEW_SCALE),
        height=max(1, height // PREVIEW_SCALE),
        chunk_size=1,
        tiles=1,
        video=False,
        order=SPREAD,
        output=preview_output(request.output),
        priority=min(request.priority + 1, MAX_PRIORITY),
        supersedes="",
    )
