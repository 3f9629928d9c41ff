"""Scene packages: turning what a user submits (file, folder, zip, tar) into checked scene files.

See docs/scene-packages.md for the rules users see.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from peerfarm.scenes.detect import BUILTIN_FORMAT, RENDERERS
    from peerfarm.scenes.package import (
        DEFAULT_LIMITS,
        Limits,
        PackageError,
        ScenePackage,
        load_package,
        unpack_to,
    )

__all__ = [
    "BUILTIN_FORMAT",
    "DEFAULT_LIMITS",
    "RENDERERS",
    "Limits",
    "PackageError",
    "ScenePackage",
    "load_package",
    "unpack_to",
]

_DETECT = ("BUILTIN_FORMAT", "RENDERERS")


def __getattr__(name: str) -> Any:
    # Imported when asked for: a renderer wrapper, started once per chunk, reads scene
    # texts with `detect` and needs none of the archive code of `package`.
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name in _DETECT:
        from peerfarm.scenes import detect as module
    else:
        from peerfarm.scenes import package as module
    return getattr(module, name)
