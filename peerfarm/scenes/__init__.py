"""Scene packages: turning what a user submits (file, folder, zip, tar) into checked scene files.

See docs/scene-packages.md for the rules users see.
"""

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
