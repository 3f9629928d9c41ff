"""The built-in renderer: a small NumPy ray tracer the farm ships as its default renderer.

Scenes are JSON (docs/builtin-renderer.md); the worker runs one
`python -m peerfarm.renderers.builtin` process per chunk.
"""

from .scene import (
    Scene,
    SceneError,
    builtin_scene_text,
    frame_clock,
    load_scene_text,
    scene_frame_range,
)
from .tracer import render_frame, save_png

__all__ = [
    "Scene",
    "SceneError",
    "builtin_scene_text",
    "frame_clock",
    "load_scene_text",
    "render_frame",
    "save_png",
    "scene_frame_range",
]
