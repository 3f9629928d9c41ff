"""Stitching a tiled frame: the tiles' boxes pasted into one image (blocking: Pillow).

Each tile file is an image of the whole frame's size in which only the tile's box
(peerfarm.core.tiles) counts, as the renderer plugins write them. The frame is
put together from those boxes and encoded losslessly in the job's format
(peerfarm.formats: only lossless formats Pillow reads are ever tiled), so its
pixels are the pixels the renderer produced.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

from peerfarm.core.tiles import TileError, tile_boxes
from peerfarm.formats import pillow_format


class StitchError(ValueError):
    """The tiles of a frame do not fit together; the message names the tile."""


def stitch_tiles(tile_files: list[Path], align: int = 1, fmt: str = "png") -> bytes:
    """The file (in format ``fmt``) of the frame whose tiles, in tile order, are
    ``tile_files``."""
    from PIL import Image, PngImagePlugin, UnidentifiedImageError

    images = []
    try:
        for index, path in enumerate(tile_files):
            try:
                image = Image.open(path)
                image.load()
            except (UnidentifiedImageError, OSError) as exc:
                raise StitchError(
                    f"tile {index} ({path.name}) is not a readable image: {exc}"
                ) from None
            images.append(image)
        first = images[0]
        for index, image in enumerate(images[1:], 1):
            if (image.size, image.mode) != (first.size, first.mode):
                raise StitchError(
                    f"tile {index} ({tile_files[index].name}) is a {image.mode} image of "
                    f"{image.size[0]}x{image.size[1]} pixels, tile 0 a {first.mode} image of "
                    f"{first.size[0]}x{first.size[1]}: the renderer wrote tiles that do not fit"
                )
        width, height = first.size
        try:
            boxes = tile_boxes(width, height, len(images), align)
        except TileError as exc:
            raise StitchError(f"cannot cut a {width}x{height} frame into tiles: {exc}") from None
        frame = Image.new(first.mode, first.size)
        for image, box in zip(images, boxes, strict=True):
            frame.paste(image.crop(box), (box.left, box.top))
        out = io.BytesIO()
        if fmt == "png":
            frame.save(out, format="PNG", pnginfo=_colour_chunks(first.info, PngImagePlugin))
        elif fmt == "tga":  # compressed if the renderer compressed its tiles
            frame.save(out, format="TGA", compression=first.info.get("compression"))
        else:
            frame.save(out, format=pillow_format(fmt))
        return out.getvalue()
    finally:
        for image in images:
            image.close()


def _colour_chunks(info: dict, png) -> object:  # noqa: ANN001 - Pillow's PngImagePlugin
    """The tiles' gamma and sRGB chunks, so the frame displays as the renderer meant."""
    chunks = png.PngInfo()
    if "gamma" in info:
        chunks.add(b"gAMA", struct.pack(">I", round(info["gamma"] * 100_000)))
    if "srgb" in info:
        chunks.add(b"sRGB", bytes([info["srgb"]]))
    return chunks
