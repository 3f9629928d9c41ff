"""The process the worker runs for one chunk of a POV-Ray job.

    python -m peerfarm.renderers.povray.run --work-dir DIR --main scene.ini \\
        --frames 3-5 [--size 640x480] [--option=+A0.3 ...] [--tile I/N] \\
        --output-pattern /data/frames/JOB/name_{frame:04d}.png

It checks the scene again (the job folder is writable by earlier renders, so what
`check_job` saw at submit time may have changed), writes POV-Ray's INI and
settings into a private folder, and runs one confined povray for the whole chunk
with +SF/+EF on the scene's own animation, so every frame gets the clock a
direct run of the INI gives it. povray's messages go to stderr (the worker keeps
them in the chunk's log). POV-Ray names animation frames itself, so it renders
into a folder of the chunk's own and each finished frame is moved to its name.
With --tile, povray renders only that tile's box (on its 32-pixel block grid,
see tiling.py) and the file it writes, the whole frame's size with black
outside the box, is what the farm stitches.

stdout carries one line per event, in UTF-8, flushed at once: `START <n>` when povray
starts frame n, `FRAME <n> <path>` once frame n is at its place, fsynced.
Exit status: 0 done; povray's own status when it fails; 2 bad scene or
arguments (a retry will not help); 1 anything else; 128+N when stopped by
signal N. Stopping this process stops povray; so does killing it (Linux, where
povray runs: PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import os
import re
import shutil
import string
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from peerfarm.child_processes import RENDERER_NICENESS, start_tied_child
from peerfarm.core.tiles import TileError, tile_box
from peerfarm.disk import replace_file
from peerfarm.programs import find_program, where_from
from peerfarm.renderers.base import frame_range_arg, tile_arg
from peerfarm.renderers.povray.ini import (
    MAX_SIDE,
    OUTPUT_TYPES,
    STEM,
    IniError,
    PovrayScene,
    load_scene,
)
from peerfarm.renderers.povray.sandbox import (
    SandboxError,
    clean_environment,
    confine_povray,
    povray_conf,
    povray_library_paths,
    unavailable_reason,
    write_settings_home,
)
from peerfarm.renderers.povray.tiling import BLOCK_SIZE, tiling_problem
from peerfarm.renderers.wrapper import (
    RunError,
    UsageError,
    run_wrapper,
    size_arg,
    stop_renderer,
    use_utf8_stdio,
)
from peerfarm.scenes.detect import decode_text

PROG = "peerfarm-povray"
# The renderer guard keeps this wrapper at the node's priority (its part between two
# renders waits on no one else's work) and leaves the low priority to the program
# that renders: start_tied_child(niceness=...) below (renderer_guard.py).
LOWERS_RENDERER_PRIORITY = True
MAX_INI_BYTES = 1024 * 1024
CHUNK_FOLDER_PREFIX = ".povray-chunk-"
# POV-Ray 3.7 announces each frame of an animation on its message stream.
_FRAME_STARTS = re.compile(rb"^Rendering frame (\d+) of (\d+)")
# ... and prints a frame's statistics once it has written and closed its image file;
# after the last frame it takes another 0.3-0.4 s to exit (measured, 3.7.0.10).
_FRAME_ENDS = re.compile(rb"^Render Statistics")
# The last bytes of every PNG file (its IEND chunk): written last, so a PNG ending in
# them is whole.
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


@functools.cache  # a spare builds it ahead (warm_up); parse_args leaves it as it is
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Render one chunk of a POV-Ray job, confined to its folder."
    )
    parser.add_argument("--work-dir", required=True, help="the job's folder (the scene files)")
    parser.add_argument("--main", required=True, help="the scene's .ini or .pov, relative")
    parser.add_argument("--frames", required=True, type=frame_range_arg, help="A-B inclusive, or N")
    parser.add_argument(
        "--size", type=size_arg(MAX_SIDE), help="WxH; overrides the INI's Width/Height"
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        help="a submitter's POV-Ray option; write --option=-D for ones starting with -",
    )
    parser.add_argument(
        "--output-pattern",
        required=True,
        help="output path with a {frame} field, e.g. /out/name_{frame:04d}.png",
    )
    parser.add_argument(
        "--format",
        default="png",
        choices=sorted(OUTPUT_TYPES),
        help="image format of the frames (default png)",
    )
    parser.add_argument(
        "--tile", type=tile_arg, metavar="I/N", help="render only tile I (0-based) of N"
    )
    return parser


def _check_pattern(pattern: str, first: int, last: int) -> None:
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(pattern) if f is not None]
        if any(field != "frame" for field in fields):
            raise UsageError(f"--output-pattern: only the field {{frame}} is allowed: {pattern}")
        names = {pattern.format(frame=first), pattern.format(frame=last)}
    except (ValueError, IndexError, KeyError) as exc:
        raise UsageError(f"--output-pattern: not a valid pattern {pattern!r}: {exc}") from None
    if first != last and len(names) == 1:
        raise UsageError("--output-pattern: needs a {frame} field (e.g. {frame:04d}) for a range")


def _scene_files(work_dir: Path) -> set[str]:
    """The job folder's files as package names ("textures/wood.png")."""
    names = set()
    for folder, subfolders, files in os.walk(work_dir):
        subfolders[:] = [d for d in subfolders if not d.startswith(CHUNK_FOLDER_PREFIX)]
        relative = Path(folder).relative_to(work_dir).as_posix()
        for name in files:
            names.add(name if relative == "." else f"{relative}/{name}")
    return names


def _text_files(work_dir: Path) -> dict[str, bytes]:
    """The job folder's files that the scene may read as text, for tiling_problem."""
    files = {}
    for name in _scene_files(work_dir):
        path = work_dir / name
        if path.stat().st_size <= MAX_INI_BYTES * 16:  # a scene text, not a texture
            files[name] = path.read_bytes()
    return files


def _load(
    work_dir: Path, main: str, options: list[str], size: tuple[int, int] | None, fmt: str
) -> PovrayScene:
    parts = main.replace("\\", "/").split("/")
    if Path(main).is_absolute() or ".." in parts or not main:
        raise UsageError(f"--main {main!r}: expected a file name relative to the job folder")
    text = ""
    if main.lower().endswith(".ini"):
        try:
            with open(work_dir / main, "rb") as file:
                data = file.read(MAX_INI_BYTES + 1)
        except OSError as exc:
            raise UsageError(f"cannot read the scene's INI {main}: {exc.strerror or exc}") from None
        if len(data) > MAX_INI_BYTES:
            raise UsageError(f"{main}: an INI file larger than 1 MiB is not a scene INI")
        text = decode_text(data)
    try:
        return load_scene(main, text, _scene_files(work_dir), options, size, fmt)
    except IniError as exc:
        raise UsageError(str(exc)) from None


def _base_ini(library_paths: list[Path]) -> str:
    lines = ["; Written by peerfarm: this node's POV-Ray include folders."]
    lines += [f'Library_Path="{path}"' for path in library_paths if '"' not in str(path)]
    return "\n".join(lines) + "\n"


def _fsync(path: Path) -> None:
    with open(path, "rb") as file:
        os.fsync(file.fileno())


def _deliver(scene: PovrayScene, chunk_dir: Path, frame: int, pattern: str) -> bool:
    """Move a finished frame to its pattern name; False if POV-Ray did not write it."""
    source = chunk_dir / scene.output_name(frame)
    if not source.is_file():
        return False
    target = Path(pattern.format(frame=frame))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _fsync(source)  # on disk before the rename makes it visible
        try:
            replace_file(source, target)  # Windows: retried while a viewer holds it
        except OSError:  # another file system: copy beside the target, then rename
            partial = target.with_name(f"{target.name}.{os.getpid()}.tmp")
            shutil.copyfile(source, partial)
            _fsync(partial)
            replace_file(partial, target)
    except OSError as exc:
        raise RunError(f"cannot move frame {frame} to {target}: {exc.strerror or exc}") from None
    print(f"FRAME {frame} {target}", flush=True)
    return True


def png_is_whole(path: Path) -> bool:
    """Whether the PNG file at `path` is written to its end (its IEND chunk)."""
    try:
        with open(path, "rb") as file:
            file.seek(0, os.SEEK_END)
            if file.tell() < len(_PNG_END):
                return False
            file.seek(-len(_PNG_END), os.SEEK_END)
            return file.read() == _PNG_END
    except OSError:
        return False


def _written(scene: PovrayScene, chunk_dir: Path, frame: int) -> bool:
    """Whether POV-Ray's file of `frame` is whole already, while povray still runs:
    a PNG that ends in its IEND chunk. Other formats are moved once povray has moved
    on to the next frame or ended."""
    return scene.format == "png" and png_is_whole(chunk_dir / scene.output_name(frame))


def _render(
    scene: PovrayScene,
    command: list[str],
    env: dict[str, str],
    work_dir: Path,
    preexec: Callable[[], None],
    chunk_dir: Path,
    frames: range,
    pattern: str,
) -> int:
    """Run povray, relaying its messages and moving frames as they finish; its exit status."""
    # povray dies with this process, even on SIGKILL (and is confined by `preexec`).
    process = start_tied_child(
        command,
        niceness=RENDERER_NICENESS,  # the program renders at low priority, not this wrapper
        preexec=preexec,
        cwd=work_dir / scene.folder,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # one stream: messages stay in order in the log
    )
    delivered: set[int] = set()
    try:
        assert process.stdout is not None
        running = 0
        if scene.animation is None:
            print(f"START {frames.start}", flush=True)
        for line in process.stdout:
            sys.stderr.buffer.write(line)
            sys.stderr.flush()
            match = _FRAME_STARTS.match(line)
            if match and int(match[1]) > running:
                running = int(match[1])
                now = frames.start + running - 1
                # POV-Ray writes a frame's image before it announces the next frame.
                for frame in range(frames.start, now):
                    if frame not in delivered and _deliver(scene, chunk_dir, frame, pattern):
                        delivered.add(frame)
                print(f"START {now}", flush=True)
            elif _FRAME_ENDS.match(line):
                # The frame's image is written: on its way at once, not after the next
                # frame's start or, for a chunk's last frame, povray's exit.
                now = frames.start + max(running, 1) - 1
                if now not in delivered and _written(scene, chunk_dir, now):
                    if _deliver(scene, chunk_dir, now, pattern):
                        delivered.add(now)
        status = process.wait()
    except BaseException:
        stop_renderer(process)
        raise
    if status != 0:
        return 128 - status if status < 0 else status
    missing = [
        f for f in frames if f not in delivered and not _deliver(scene, chunk_dir, f, pattern)
    ]
    if missing:
        raise RunError(
            f"povray finished but did not write frames {missing} "
            f"(expected {scene.output_name(missing[0])} in {chunk_dir})"
        )
    return 0


def _ascii_input(scene: PovrayScene, work_dir: Path) -> PovrayScene:
    """The scene, with an ASCII name for the file POV-Ray parses. POV-Ray 3.7 reads a
    file name in an INI only up to its first non-ASCII character ("Scène finale.pov"
    became "Sc ", and every chunk failed): a copy under an ASCII name is made where
    POV-Ray runs, so relative includes resolve alike."""
    name = scene.value("Input_File_Name")
    if name is None or name.isascii():
        return scene
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:12]
    alias = f"peerfarm-input-{digest}.pov"
    target = work_dir / scene.folder / alias
    if not target.is_file():  # the job's other chunks share the work folder
        temporary = target.with_name(f"{alias}.{os.getpid()}.tmp")
        shutil.copyfile(work_dir / scene.input_file, temporary)
        replace_file(temporary, target)
    settings = tuple(
        dataclasses.replace(s, value=alias) if s.key == "Input_File_Name" else s
        for s in scene.settings
    )
    return dataclasses.replace(scene, settings=settings)


def _run(args: argparse.Namespace) -> int:
    work_dir = Path(args.work_dir).resolve()
    if not work_dir.is_dir():
        raise UsageError(f"--work-dir {args.work_dir}: not a folder")
    first, last = args.frames
    _check_pattern(args.output_pattern, first, last)
    scene = _load(work_dir, args.main, args.option, args.size, args.format)
    try:
        scene.check_frames(first, last)
    except IniError as exc:
        raise UsageError(str(exc)) from None
    region = None
    if args.tile is not None:
        index, count = args.tile
        width, height = scene.size
        # The scene folder may have changed since submit: check the scene again.
        files = _text_files(work_dir)
        problem = scene.tile_problem(BLOCK_SIZE) or tiling_problem(
            files, width, height, count, scene.bits_per_color, scene.format, scene.alpha
        )
        if problem is not None:
            raise UsageError(f"--tile {index}/{count}: {problem}")
        try:
            region = tuple(tile_box(width, height, count, index, BLOCK_SIZE))
        except TileError as exc:
            raise UsageError(f"--tile {index}/{count}: {exc}") from None
    found = find_program("povray")
    if found is None:
        raise RunError(f"povray is not installed on this node (looked at: {where_from('povray')})")
    reason = unavailable_reason()
    if reason is not None:
        raise RunError(reason)
    povray = Path(found).resolve()
    library = povray_library_paths(povray)
    frames = range(first, last + 1)
    settings_home = Path(tempfile.mkdtemp(prefix="peerfarm-povray-"))
    chunk_dir = Path(tempfile.mkdtemp(prefix=f"{CHUNK_FOLDER_PREFIX}{first}-{last}-", dir=work_dir))
    try:
        conf = povray_conf(work_dir, library, settings_home)
        base_ini = write_settings_home(settings_home, conf, _base_ini(library))
        chunk_ini = settings_home / "chunk.ini"
        # Relative to where POV-Ray runs: it cannot write to a path with a non-ASCII
        # character (a data folder such as /srv/rendu/données failed every chunk).
        output_file = os.path.relpath(chunk_dir / f"{STEM}.{scene.format}", work_dir / scene.folder)
        text = _ascii_input(scene, work_dir).chunk_ini(frames, output_file, region, BLOCK_SIZE)
        chunk_ini.write_text(text, encoding="utf-8")
        print(
            f"{PROG}: frames {first}-{last} of {args.main}; povray may read and write only "
            f"{work_dir} (Landlock); it gets this INI:\n{text}",
            file=sys.stderr,
            flush=True,
        )
        env = clean_environment(settings_home, chunk_dir, base_ini)
        confinement = confine_povray(povray, work_dir, settings_home, library)
        try:
            command = [str(povray), str(chunk_ini)]
            status = _render(
                scene,
                command,
                env,
                work_dir,
                confinement.apply,
                chunk_dir,
                frames,
                args.output_pattern,
            )
        finally:
            confinement.close()
    finally:
        shutil.rmtree(settings_home, ignore_errors=True)
        shutil.rmtree(chunk_dir, ignore_errors=True)
    # What of the scene's INI the farm overrode, for the chunk's log; after POV-Ray's
    # messages, so that the log's tail that `peerfarm logs` shows keeps it.
    for note in scene.notes:
        print(f"{PROG}: note: {note}", file=sys.stderr, flush=True)
    if status != 0:
        print(
            f"{PROG}: error: povray failed with exit status {status} (its messages are above)",
            file=sys.stderr,
        )
    return status


def warm_up() -> None:
    """What every chunk on this node does alike, done ahead by a spare guard while it
    waits for its chunk (peerfarm/runtime/renderer_guard.py): the argument parser and
    the modules its frame ranges import."""
    _parser()
    frame_range_arg("1")


def main(argv: list[str] | None = None) -> int:
    use_utf8_stdio()  # FRAME lines carry paths; the worker reads them as UTF-8
    args = _parser().parse_args(argv)  # bad arguments: usage + "peerfarm-povray: error: ...", 2
    return run_wrapper(PROG, "povray", lambda: _run(args), (RunError, SandboxError))


if __name__ == "__main__":
    sys.exit(main())
