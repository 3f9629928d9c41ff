"""Image formats of frames: what peerfarm itself can do with each one.

A job's format name is also its frames' file extension (``NAME_0001.jpg``).
Renderer plugins list the formats they write (``Renderer.formats``); this table
says what the farm can do with frames in a format once they are rendered:
Pillow reads them (thumbnails, the GIF), Pillow writes them losslessly
(stitching tiles), ffmpeg turns them into a video.
"""

from __future__ import annotations

from typing import NamedTuple

DEFAULT_FORMAT = "png"


class ImageFormat(NamedTuple):
    pillow: str | None  # Pillow's name for it, None when Pillow cannot read it
    lossless: bool
    video: bool  # ffmpeg reads it as an 8-bit picture fit for an H.264 video


FORMATS: dict[str, ImageFormat] = {
    "png": ImageFormat("PNG", lossless=True, video=True),
    "jpg": ImageFormat("JPEG", lossless=False, video=True),
    "tga": ImageFormat("TGA", lossless=True, video=True),
    "bmp": ImageFormat("BMP", lossless=True, video=True),
    "ppm": ImageFormat("PPM", lossless=True, video=True),
    "tiff": ImageFormat("TIFF", lossless=True, video=True),
    # High dynamic range: linear floating-point light, not pictures to show as is.
    "exr": ImageFormat(None, lossless=True, video=False),
    "hdr": ImageFormat(None, lossless=True, video=False),
}
ALIASES = {"jpeg": "jpg", "tif": "tiff", "targa": "tga"}


def format_name(text: str) -> str:
    """The farm's name of a format a user typed: "JPEG" -> "jpg"."""
    name = text.strip().lower().removeprefix(".")
    return ALIASES.get(name, name)


def pillow_reads(name: str) -> bool:
    known = FORMATS.get(name)
    return known is not None and known.pillow is not None


def pillow_format(name: str) -> str:
    """Pillow's format name; only for formats ``pillow_reads`` accepts."""
    known = FORMATS[name]
    assert known.pillow is not None
    return known.pillow


def why_not_stitched(name: str) -> str | None:
    """Why tiles in this format cannot be stitched into a frame identical to a whole
    render, or None when they can."""
    known = FORMATS.get(name)
    if known is None or known.pillow is None:
        return f"peerfarm stitches tiles with Pillow, which cannot read {name} images"
    if not known.lossless:
        return (
            f"{name} is lossy: tiles would be compressed twice and the frame would not be "
            "the frame rendered whole"
        )
    return None


def why_no_video(name: str) -> str | None:
    """Why frames in this format make no video, or None when they do."""
    known = FORMATS.get(name)
    if known is None:
        return f"peerfarm does not know how to turn {name} frames into a video"
    if not known.video:
        return f"{name} frames hold linear high-dynamic-range light, not pictures for a video"
    return None
