"""The process the worker runs for one chunk of a Blender job.

    python -m peerfarm.renderers.blender.run --work-dir DIR --main scene.blend \\
        --frames 3-5 [--size 640x480] [--option=engine=CYCLES ...] \\
        --output-pattern /data/frames/JOB/name_{frame:04d}.png

It runs one Blender for the whole chunk (`blender -b --disable-autoexec
scene.blend --python scene_script.py -s 3 -e 5 -a`) in the job's folder, with a
clean environment and a private HOME and temporary folder. Blender writes each
frame straight to its farm name (the pattern, with #### for the number).

Blender's messages go to stderr (the worker keeps them in the chunk's log);
Blender's `Saved: '<path>'` line for each finished frame is also copied to
stdout, where the worker counts frames. Exit status: 0 done; 2 bad arguments or
a scene that cannot be rendered (the reason is the last line of stderr);
Blender's own status when it fails; 1 anything else; 128+N when stopped by
signal N. Stopping this process stops Blender; so does killing it (see
peerfarm.child_processes.start_tied_child).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import string
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from peerfarm.child_processes import RENDERER_NICENESS, start_tied_child
from peerfarm.programs import where_from
from peerfarm.renderers.base import frame_range_arg
from peerfarm.renderers.blender.options import FILE_FORMATS, OptionError, parse_options
from peerfarm.renderers.blender.program import (
    MAX_FRAME,
    blender_errors,
    clean_environment,
    find_blender,
    render_command,
)
from peerfarm.renderers.blender.scene_script import EXIT_REFUSED
from peerfarm.renderers.wrapper import (
    RunError,
    UsageError,
    run_wrapper,
    size_arg,
    stop_renderer,
    use_utf8_stdio,
)

PROG = "peerfarm-blender"
# The renderer guard keeps this wrapper at the node's priority (its part between two
# renders waits on no one else's work) and leaves the low priority to the program
# that renders: start_tied_child(niceness=...) below (renderer_guard.py).
LOWERS_RENDERER_PRIORITY = True
MAX_SIDE = 16384
SAVED = b"Saved: '"  # Blender's line for a rendered frame (File Output nodes print no quote)
_KEPT_ERRORS = 20


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Render one chunk of a Blender job.")
    parser.add_argument("--work-dir", required=True, help="the job's folder (the scene files)")
    parser.add_argument("--main", required=True, help="the .blend file, relative to --work-dir")
    parser.add_argument("--frames", required=True, type=frame_range_arg, help="A-B inclusive, or N")
    parser.add_argument(
        "--size", type=size_arg(MAX_SIDE), help="WxH; overrides the scene's resolution"
    )
    parser.add_argument(
        "--option", action="append", default=[], help="a job option, e.g. engine=CYCLES"
    )
    parser.add_argument(
        "--output-pattern",
        required=True,
        help="output path with a {frame} field, e.g. /out/name_{frame:04d}.png",
    )
    return parser


def blender_output_path(pattern: str) -> str:
    """The farm's output pattern in Blender's notation: `/out/name_{frame:04d}.png`
    -> `/out/name_####.png` (Blender fills #### with the zero-padded frame number)."""
    try:
        parts = list(string.Formatter().parse(pattern))
    except ValueError as exc:
        raise UsageError(f"--output-pattern: not a valid pattern {pattern!r}: {exc}") from None
    fields = [(spec, conversion) for _, field, spec, conversion in parts if field is not None]
    names = [field for _, field, _, _ in parts if field is not None]
    if names != ["frame"] or fields[0][1] is not None:
        raise UsageError(f"--output-pattern: needs exactly one {{frame}} field: {pattern!r}")
    spec = fields[0][0] or "d"
    width = re.fullmatch(r"(?:0(\d))?d", spec)
    if width is None:
        raise UsageError(f"--output-pattern: the frame must be {{frame:0Nd}} or {{frame}}: {spec}")
    path = ""
    for literal, field, _, _ in parts:
        path += literal
        if field is not None:
            path += "#" * int(width[1] or 1)
    folder, name = os.path.split(path)
    if name.count("#") != int(width[1] or 1):
        raise UsageError(f"--output-pattern: a file name with # is not allowed: {name!r}")
    # Absolute, and never "//...", which Blender reads as relative to the .blend.
    return str(Path(folder or ".").resolve() / name)


def _blend_file(work_dir: Path, main: str) -> Path:
    parts = main.replace("\\", "/").split("/")
    if Path(main).is_absolute() or ".." in parts or not main:
        raise UsageError(f"--main {main!r}: expected a file name relative to the job folder")
    if not main.lower().endswith(".blend"):
        raise UsageError(f"--main {main!r}: a Blender scene is a .blend file")
    path = work_dir / main
    if not path.is_file():
        raise UsageError(f"the scene file {main} is not in the job folder {work_dir}")
    return path


def _render(command: list[str], env: dict[str, str], work_dir: Path) -> tuple[int, list[str]]:
    """Run Blender, relaying its output; (exit status, the lines that say what went wrong)."""
    # Blender dies with this process, even when it is killed (Linux: PR_SET_PDEATHSIG;
    # Windows: a kill-on-close job object; macOS: the renderer guard ends the group).
    process = start_tied_child(
        command,
        niceness=RENDERER_NICENESS,  # the program renders at low priority, not this wrapper
        cwd=work_dir,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # one stream: messages stay in order in the log
    )
    errors: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            sys.stderr.buffer.write(line)
            sys.stderr.flush()
            if line.startswith(SAVED):
                sys.stdout.buffer.write(line.rstrip(b"\r\n") + b"\n")
                sys.stdout.flush()
            errors = (errors + blender_errors(line.decode("utf-8", "replace")))[-_KEPT_ERRORS:]
        status = process.wait()
    except BaseException:
        stop_renderer(process)
        raise
    return (128 - status if status < 0 else status), errors


def _run(args: argparse.Namespace) -> int:
    work_dir = Path(args.work_dir).resolve()
    if not work_dir.is_dir():
        raise UsageError(f"--work-dir {args.work_dir}: not a folder")
    blend = _blend_file(work_dir, args.main)
    first, last = args.frames
    if first < 0 or last > MAX_FRAME:
        raise UsageError(f"frames {first}-{last}: Blender renders frames 0..{MAX_FRAME}")
    try:
        settings: dict[str, Any] = parse_options(args.option)
    except OptionError as exc:
        raise UsageError(str(exc)) from None
    if args.size:
        settings["width"], settings["height"] = args.size
    settings["filepath"] = blender_output_path(args.output_pattern)
    extension = args.output_pattern.rpartition(".")[2].lower()
    if extension not in FILE_FORMATS:
        raise UsageError(
            f"--output-pattern: Blender frames can be {', '.join(FILE_FORMATS)}, not {extension!r}"
        )
    settings["file_format"] = FILE_FORMATS[extension]
    blender = find_blender()
    if blender is None:
        raise RunError(
            f"Blender is not installed on this node (looked at: {where_from('blender')})"
        )
    Path(settings["filepath"]).parent.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="peerfarm-blender-"))
    try:
        command = render_command(blender, blend, first, last, settings)
        print(f"{PROG}: {subprocess.list2cmdline(command)}", file=sys.stderr, flush=True)
        status, errors = _render(command, clean_environment(home), work_dir)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    said = "; ".join(errors) or "no error message (see the lines above)"
    if status == EXIT_REFUSED:
        raise UsageError(f"the scene cannot be rendered here: {said}")
    if status != 0:
        print(f"{PROG}: error: Blender failed with exit status {status}: {said}", file=sys.stderr)
        return status
    frame_path = args.output_pattern.format
    missing = [f for f in range(first, last + 1) if not Path(frame_path(frame=f)).is_file()]
    if missing:
        raise RunError(
            f"Blender finished but did not write frames {missing} "
            f"(expected {frame_path(frame=missing[0])})"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    use_utf8_stdio()  # Saved: lines carry paths; the worker reads them as UTF-8
    args = _parser().parse_args(argv)  # bad arguments: usage + "peerfarm-blender: error: ...", 2
    return run_wrapper(PROG, "Blender", lambda: _run(args), (RunError,))


if __name__ == "__main__":
    sys.exit(main())
