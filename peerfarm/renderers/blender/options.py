"""The job options a Blender job may have (`--renderer-option KEY=VALUE`): an allow-list.

Everything else about the render comes from the .blend; size and frames come
from the job (--size, --frames).
"""

from __future__ import annotations

import re
from typing import Any

from peerfarm.renderers.blender.scene_script import ENGINES

MAX_SAMPLES = 16_777_216  # Cycles' own limit
ALLOWED = f"engine={'|'.join(ENGINES)}, samples=N (1..{MAX_SAMPLES}, Cycles and EEVEE), denoise=off"


# The farm's frame formats (peerfarm.formats names) and Blender's file_format for each.
FILE_FORMATS = {
    "png": "PNG",
    "jpg": "JPEG",
    "tiff": "TIFF",
    "bmp": "BMP",
    "tga": "TARGA",
    "exr": "OPEN_EXR",
    "hdr": "HDR",
}
# A .blend's own format, as the farm names it; others (movies, JPEG 2000, ...) -> png.
FROM_BLENDER = {blender: farm for farm, blender in FILE_FORMATS.items()} | {
    "TARGA_RAW": "tga",
    "OPEN_EXR_MULTILAYER": "exr",
}


def farm_format(blender_file_format: str) -> str:
    """The farm format a .blend's output format maps to (png for what the farm cannot use)."""
    return FROM_BLENDER.get(blender_file_format, "png")


class OptionError(ValueError):
    """An option is not one peerfarm passes to Blender; the message names it."""


def parse_options(options: Any) -> dict[str, Any]:
    """["engine=CYCLES", "samples=16"] -> {"engine": "CYCLES", "samples": 16}."""
    if not isinstance(options, list | tuple) or not all(isinstance(o, str) for o in options):
        raise OptionError("the Blender options must be a list like ['engine=CYCLES', 'samples=16']")
    settings: dict[str, Any] = {}
    for option in options:
        key, equals, value = option.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not equals or not value:
            raise OptionError(f"Blender option {option!r}: expected KEY=VALUE; allowed: {ALLOWED}")
        if key in settings:
            raise OptionError(f"Blender option {key} is given twice")
        if key == "engine":
            engine = value.upper()
            if engine not in ENGINES:
                raise OptionError(
                    f"Blender option {option!r}: the engine must be one of {', '.join(ENGINES)}"
                )
            settings[key] = engine
        elif key == "samples":
            if not re.fullmatch(r"\d{1,9}", value) or not 1 <= int(value) <= MAX_SAMPLES:
                raise OptionError(
                    f"Blender option {option!r}: samples must be a whole number, 1..{MAX_SAMPLES}"
                )
            settings[key] = int(value)
        elif key == "denoise":
            if value.lower() != "off":
                raise OptionError(
                    f"Blender option {option!r}: only denoise=off is allowed (denoising "
                    "itself is set in the .blend)"
                )
            settings[key] = False
        else:
            raise OptionError(f"Blender option {option!r} is not allowed; allowed: {ALLOWED}")
    return settings
