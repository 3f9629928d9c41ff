"""The renderer process the worker spawns, one per chunk (so cancelling is killing it).

    python -m peerfarm.renderers.builtin --scene-file PATH --frames A-B --size WxH \
        --output-pattern /out/name_{frame:04d}.png [--format png] [--tile I/N]

With --tile, only tile I of N (peerfarm.core.tiles) of each frame is traced; the
file is still the whole frame's size, black outside the tile, as the farm's
stitching expects.

stdout carries one line per event, in UTF-8, flushed at once: `START <n>` before
frame n and `FRAME <n> <path>` once frame n is durably on disk. Exit status: 0 done,
2 bad scene or arguments, 1 anything else (130 when interrupted).
"""

from __future__ import annotations

import argparse
import re
import string
import sys
import traceback
from pathlib import Path

import numpy as np

from peerfarm.core.tiles import TileError, tile_box
from peerfarm.renderers.base import frame_range_arg, tile_arg
from peerfarm.renderers.wrapper import use_utf8_stdio

from .scene import (
    MAX_SCENE_BYTES,
    Scene,
    SceneError,
    builtin_scene_text,
    load_scene_text,
    scene_frame_range,
)
from .tracer import IMAGE_FORMATS, MAX_IMAGE_SIDE, render_frame, save_image

PROG = "peerfarm-builtin"
EXIT_FAILED = 1
EXIT_USAGE = 2  # what argparse uses for bad arguments, too
EXIT_INTERRUPTED = 130


class OutputError(Exception):
    """A frame was rendered but could not be saved; another node may well succeed."""


class UsageError(Exception):
    """Bad arguments or a bad scene: the user must change the job, a retry will not help."""


def _size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d{1,6})[xX](\d{1,6})", text, re.ASCII)
    if not match:
        raise argparse.ArgumentTypeError(f"expected WxH (e.g. 320x240), got {text!r}")
    width, height = int(match[1]), int(match[2])
    if not (1 <= width <= MAX_IMAGE_SIDE and 1 <= height <= MAX_IMAGE_SIDE):
        raise argparse.ArgumentTypeError(
            f"width and height must be 1..{MAX_IMAGE_SIDE}, got {text}"
        )
    return width, height


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Render frames of a peerfarm scene (peerfarm's built-in ray tracer).",
    )
    parser.add_argument(
        "--scene-file", required=True, help="scene JSON file, or builtin:NAME (e.g. builtin:demo)"
    )
    parser.add_argument("--frames", required=True, type=frame_range_arg, help="A-B inclusive, or N")
    parser.add_argument("--size", required=True, type=_size, help="WxH in pixels, e.g. 320x240")
    parser.add_argument(
        "--output-pattern",
        required=True,
        help="output path with a {frame} field, e.g. /tmp/out/demo_{frame:04d}.png",
    )
    parser.add_argument(
        "--format",
        default="png",
        choices=sorted(IMAGE_FORMATS),
        help="image format of the frames (default png)",
    )
    parser.add_argument(
        "--tile", type=tile_arg, metavar="I/N", help="render only tile I (0-based) of N"
    )
    return parser


def _read_scene(source: str) -> Scene:
    try:
        if source.startswith("builtin:"):
            return load_scene_text(builtin_scene_text(source.removeprefix("builtin:")))
        return load_scene_text(_read_text(source))
    except SceneError as exc:
        raise UsageError(f"{source}: {exc}") from None


def _read_text(path: str) -> str:
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_SCENE_BYTES + 1)  # never read a huge file whole
    except OSError as exc:
        raise UsageError(f"cannot read the scene file {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_SCENE_BYTES:
        raise UsageError(f"{path}: the scene is larger than {MAX_SCENE_BYTES // 1024} KiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _check_pattern(pattern: str, first: int, last: int) -> None:
    try:
        fields = [
            field for _, field, _, _ in string.Formatter().parse(pattern) if field is not None
        ]
        bad = [field for field in fields if field != "frame"]
        if bad:
            raise UsageError(
                f"--output-pattern: only the field {{frame}} is allowed, got {{{bad[0]}}}"
            )
        names = {pattern.format(frame=first), pattern.format(frame=last)}
    except (ValueError, IndexError, KeyError) as exc:
        raise UsageError(f"--output-pattern: not a valid pattern {pattern!r}: {exc}") from None
    if first != last and len(names) == 1:
        raise UsageError("--output-pattern: needs a {frame} field (e.g. {frame:04d}) for a range")


def _run(args: argparse.Namespace) -> None:
    scene = _read_scene(args.scene_file)
    first, last = args.frames
    lo, hi = scene_frame_range(scene)
    if first < lo or last > hi:
        raise UsageError(f"--frames {first}-{last}: the scene's frame range is {lo}-{hi}")
    _check_pattern(args.output_pattern, first, last)
    width, height = args.size
    region = None
    if args.tile is not None:
        try:
            region = tile_box(width, height, args.tile[1], args.tile[0])
        except TileError as exc:
            raise UsageError(f"--tile {args.tile[0]}/{args.tile[1]}: {exc}") from None
    for frame in range(first, last + 1):
        print(f"START {frame}", flush=True)
        path = Path(args.output_pattern.format(frame=frame))
        try:
            pixels = render_frame(scene, frame, width, height, region)
        except SceneError as exc:  # an expression that breaks only at this frame's clock
            raise UsageError(f"{args.scene_file}: {exc}") from None
        if region is not None:
            whole = np.zeros((height, width, 3), dtype=np.uint8)
            whole[region.top : region.bottom, region.left : region.right] = pixels
            pixels = whole
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_image(pixels, path, args.format)
        except OSError as exc:  # disk full, permission denied: the node's problem, not the job's
            raise OutputError(
                f"cannot write frame {frame} to {path}: {exc.strerror or exc}"
            ) from None
        print(f"FRAME {frame} {path}", flush=True)


def main(argv: list[str] | None = None) -> int:
    use_utf8_stdio()  # FRAME lines carry paths; the worker reads them as UTF-8
    args = _parser().parse_args(argv)  # bad arguments: usage + "peerfarm-builtin: error: ...", 2
    try:
        _run(args)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except OutputError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:  # a bug: keep the traceback for the report
        traceback.print_exc()
        print(f"{PROG}: error: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
