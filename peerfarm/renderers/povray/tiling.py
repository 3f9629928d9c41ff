"""Which POV-Ray renders can be cut into tiles that stitch into the whole frame.

Measured with POV-Ray 3.7.0.10 (docs/povray.md, "Tiles"): a partial render
(Start_Column/End_Column/Start_Row/End_Row) writes an image of the whole
frame's size, black outside the region. POV-Ray renders in blocks of
Render_Block_Size pixels (32) that start at the region's top left corner, and
adaptive antialiasing (either sampling method, with or without jitter) compares
pixels only within a block: so tiles whose edges fall on the whole frame's
32-pixel block grid give exactly the pixels of a whole-frame render, and tiles
with other edges do not.

Some scene features draw from random numbers per render thread and block:
radiosity, focal blur (aperture), jittered area lights and media (jitter),
media sampling methods 1 and 2, subsurface scattering and crand. Their pixels
change with the thread count even for a whole frame, and tiled they change at
tile borders; a tiled job refuses scenes that use them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from peerfarm.core.tiles import TileError, tile_grid

BLOCK_SIZE = 32  # POV-Ray 3.7's default Render_Block_Size; written into every tile's INI

# keyword -> why a tiled frame would differ from the whole one
_RANDOM_FEATURES = {
    "radiosity": "radiosity samples the scene differently in each tile",
    "aperture": "focal blur (aperture) samples at random",
    "jitter": "jittered area lights and media sample at random",
    "subsurface": "subsurface scattering samples at random",
    "crand": "crand adds random noise",
}
_KEYWORD = re.compile(r"\b(" + "|".join(_RANDOM_FEATURES) + r")\b")
_MEDIA_METHOD = re.compile(r"\bmethod\s+[12]\b")


def _code(text: str) -> str:
    """`text` with comments (// and nested /* */) and string literals blanked out,
    line breaks kept, so keyword matches are real keywords and lines keep their numbers."""
    out: list[str] = []
    i, depth, n = 0, 0, len(text)
    while i < n:
        two = text[i : i + 2]
        if depth:
            if two == "/*":
                depth, i = depth + 1, i + 2
            elif two == "*/":
                depth, i = depth - 1, i + 2
            else:
                out.append("\n" if text[i] == "\n" else " ")
                i += 1
        elif two == "/*":
            depth, i = 1, i + 2
        elif two == "//":
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif text[i] == '"':
            i += 1
            while i < n and text[i] != '"' and text[i] != "\n":
                i += 2 if text[i] == "\\" else 1
            i += 1
            out.append('""')
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


MAX_SCANNED_BYTES = 16 * 1024 * 1024  # bigger files are data (meshes, images), not scene code


def _scene_text(data: bytes | Path) -> bytes | None:
    """A file's bytes if it may be scene code; None for binary or huge files. Uploaded
    files arrive as paths into the blob store (they may be big): read only what counts."""
    if isinstance(data, os.PathLike):
        data = Path(data)
        try:
            if data.stat().st_size > MAX_SCANNED_BYTES:
                return None
            with open(data, "rb") as f:
                if b"\0" in f.read(8192):
                    return None
            data = data.read_bytes()
        except OSError:
            return None
    return None if b"\0" in data[:8192] else data


def untileable_features(files: Mapping[str, bytes | Path]) -> list[str]:
    """Where scene files use features that do not tile identically: ["scene.pov line 3:
    radiosity (why)", ...]. Binary files (images, meshes' data) are skipped."""
    found = []
    for path in sorted(files):
        data = _scene_text(files[path])
        if data is None:
            continue
        code = _code(data.decode("utf-8", errors="replace"))
        for number, line in enumerate(code.splitlines(), 1):
            for match in _KEYWORD.finditer(line):
                found.append(f"{path} line {number}: {match[1]} ({_RANDOM_FEATURES[match[1]]})")
            if _MEDIA_METHOD.search(line):
                found.append(
                    f"{path} line {number}: media method 1 or 2 (it samples at random; "
                    "method 3 without jitter tiles fine)"
                )
    return found


def tiling_problem(
    files: Mapping[str, bytes | Path],
    width: int,
    height: int,
    tiles: int,
    bits: int,
    fmt: str = "png",
    alpha: bool = False,
) -> str | None:
    """Why this scene cannot be rendered in `tiles` tiles, or None when it can."""
    try:
        tile_grid(width, height, tiles, BLOCK_SIZE)
    except TileError as exc:
        return str(exc)
    if alpha and fmt == "bmp":
        return (
            "POV-Ray's BMP with alpha (Output_Alpha) is a kind Pillow reads without the "
            "alpha, so tiles could not be stitched; use --format png or tga"
        )
    if bits > 8:
        return (
            f"tiles are stitched with 8 bits per colour, and the scene asks for {bits}; "
            "remove Bits_Per_Color (or the 16 of +FN16) or submit without --tiles"
        )
    features = untileable_features(files)
    if features:
        listed = "; ".join(features[:5]) + ("; ..." if len(features) > 5 else "")
        return (
            "the scene uses features whose pixels depend on how POV-Ray splits the work, "
            f"so tiles would not match a whole-frame render: {listed}. Submit it "
            "without --tiles"
        )
    return None
