"""The POV-Ray 3.7 renderer plugin (docs/povray.md).

`ini` reads scene INIs and does POV-Ray's animation maths, `sandbox` keeps
povray inside the job's folder, `run` is the per-chunk process the worker
starts, and `plugin` ties them to the renderer interface.
"""

from peerfarm.renderers.povray.plugin import PovrayRenderer

__all__ = ["PovrayRenderer"]
