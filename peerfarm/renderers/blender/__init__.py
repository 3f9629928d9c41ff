"""The Blender renderer plugin (docs/blender.md).

`program` runs the `blender` program (version, clean environment, command
lines, reading a scene's settings), `scene_script` is the script peerfarm runs
inside Blender, `options` the allow-listed job options, `run` the per-chunk
process the worker starts, and `plugin` ties them to the renderer interface.
"""

from peerfarm.renderers.blender.plugin import BlenderRenderer

__all__ = ["BlenderRenderer"]
