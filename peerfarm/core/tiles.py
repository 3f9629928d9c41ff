"""Tile geometry: how a frame is cut into N rectangular tiles. Pure arithmetic.

A tiled frame is a grid of ``columns x rows`` tiles (``columns * rows`` = N),
numbered row by row from the top left. The grid is the one whose tiles are
closest to square. Tile edges fall on multiples of ``align`` pixels (a
renderer's block size: POV-Ray 3.7 antialiases in 32-pixel blocks that start
at the edge of the region it renders, so only block-aligned tiles give the
same pixels as a whole-frame render), except at the right and bottom edge of
the image. Every node computes the same boxes from the same numbers: the
worker to render a tile, the submitter to stitch the frame.
"""

from __future__ import annotations

from typing import NamedTuple

MAX_TILES = 256


class TileError(ValueError):
    """A frame cannot be cut into that many tiles; the message says what to change."""


class Box(NamedTuple):
    """A tile's pixels: columns ``left <= x < right``, rows ``top <= y < bottom``."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top


def _blocks(size: int, align: int) -> int:
    return -(-size // align)


def tile_grid(width: int, height: int, tiles: int, align: int = 1) -> tuple[int, int]:
    """(columns, rows) of the grid ``tiles`` tiles make on a ``width x height`` image.

    Raises TileError when the image has fewer ``align``-pixel blocks than that.
    """
    if not 1 <= tiles <= MAX_TILES:
        raise TileError(f"tiles must be 1..{MAX_TILES}, got {tiles}")
    if width < 1 or height < 1 or align < 1:
        raise TileError(f"cannot tile a {width}x{height} image in {align}-pixel blocks")
    across, down = _blocks(width, align), _blocks(height, align)
    best: tuple[float, int, int] | None = None
    for columns in range(1, tiles + 1):
        if tiles % columns:
            continue
        rows = tiles // columns
        if columns > across or rows > down:
            continue
        tile_w, tile_h = width / columns, height / rows
        squareness = max(tile_w, tile_h) / min(tile_w, tile_h)
        if best is None or squareness < best[0]:  # ties: fewer columns (the first found)
            best = (squareness, columns, rows)
    if best is None:
        most = max_tiles(width, height, align)
        unit = "pixels" if align == 1 else f"{align}-pixel blocks"
        raise TileError(
            f"a {width}x{height} image cannot be cut into {tiles} tiles (tile edges fall "
            f"on {unit}, and {tiles} has no grid that fits); use at most {most} tiles, "
            "or a number with more divisors"
        )
    return best[1], best[2]


def max_tiles(width: int, height: int, align: int = 1) -> int:
    """The most tiles (up to MAX_TILES) a ``width x height`` image has room for."""
    return min(MAX_TILES, _blocks(width, align) * _blocks(height, align))


def _cuts(size: int, parts: int, align: int) -> list[int]:
    """``parts + 1`` edges from 0 to ``size``, on multiples of ``align``, none repeated."""
    blocks = _blocks(size, align)
    return [min(size, align * (blocks * i // parts)) for i in range(parts + 1)]


def tile_box(width: int, height: int, tiles: int, index: int, align: int = 1) -> Box:
    """The pixels tile ``index`` (0-based, row by row) covers."""
    if not 0 <= index < tiles:
        raise TileError(f"tile {index} does not exist: there are {tiles} tiles (0..{tiles - 1})")
    columns, rows = tile_grid(width, height, tiles, align)
    xs = _cuts(width, columns, align)
    ys = _cuts(height, rows, align)
    column, row = index % columns, index // columns
    return Box(xs[column], ys[row], xs[column + 1], ys[row + 1])


def tile_boxes(width: int, height: int, tiles: int, align: int = 1) -> list[Box]:
    return [tile_box(width, height, tiles, i, align) for i in range(tiles)]
