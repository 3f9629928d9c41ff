"""The POV-Ray 3.7 renderer plugin (docs/povray.md).

`ini` reads scene INIs and does POV-Ray's animation maths, `sandbox` keeps
povray inside the job's folder, `run` is the per-chunk process the worker
starts, and `plugin` ties them to the renderer interface.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from peerfarm.renderers.povray.plugin import PovrayRenderer

__all__ = ["PovrayRenderer"]


def __getattr__(name: str) -> Any:
    # Imported when asked for: `run`, started once per chunk, needs none of the
    # plugin's imports (its start-up is part of every chunk, docs/performance.md).
    if name == "PovrayRenderer":
        from peerfarm.renderers.povray.plugin import PovrayRenderer

        return PovrayRenderer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
