"""What peerfarm does with each POV-Ray INI setting, and POV-Ray 3.7's animation maths.

Pure functions on text and numbers, tested with plain values.

peerfarm never hands a submitted INI to POV-Ray. An INI can run programs
(Pre_Frame_Command and friends), write files (Output_File_Name, the message files,
Create_Ini), widen the include search (Library_Path) or pull in other INI files. So
the scene's INI and the submitter's options are read here exactly as POV-Ray reads
them (ini_syntax.py), every setting is judged, and POV-Ray gets an INI peerfarm
writes itself (`PovrayScene.chunk_ini`). Each setting is:

- passed on, when it is part of the picture or of how POV-Ray renders it;
- ignored, when a render node decides it for itself (display, pauses, messages to
  the console) or POV-Ray 3.7 ignores it too (histograms, field rendering);
- overridden, when it says where or how output goes (Output_File_Name, the message
  files, Create_Ini, ...): the farm decides that, as farm managers do with Blender's
  output path. The scene still renders; each override becomes a note for the user;
- refused, only when it is unsafe (programs, files outside the scene folder, other
  INI files peerfarm does not check) or when the farm could not give the picture a
  direct `povray scene.ini` run gives. The error names the file, line and danger.

The clock maths copies POV-Ray 3.7 (source/frontend/animationprocessing.cpp and
vfe/vfe.cpp), single-precision floats included, so a frame's clock here is bit
for bit the `clock` the scene sees.
"""

from __future__ import annotations

import posixpath
import re
import struct
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field

from peerfarm.renderers.povray.ini_syntax import (
    SHELL_COMMANDS,
    IniError,
    IniReading,
    Setting,
    read_ini,
)

__all__ = [
    "DEFAULT_SIZE",
    "MAX_FRAME",
    "MAX_SIDE",
    "OUTPUT_TYPES",
    "STEM",
    "Animation",
    "IniError",
    "PovrayScene",
    "Setting",
    "animation_of",
    "f32",
    "load_scene",
    "output_format",
    "parse_ini",
    "parse_options",
    "scene_output_type",
]

# POV-Ray turns frame numbers into single-precision floats; beyond 2**24 they would round.
MAX_FRAME = 2**24
MAX_SIDE = 16_384
# What POV-Ray renders when nothing sets a size; we write it out so that no
# node's own povray.ini can change it.
DEFAULT_SIZE = (160, 120)
STEM = "frame"  # file name stem POV-Ray writes a chunk's frames under

# The job's format (peerfarm.formats) -> POV-Ray's Output_File_Type; POV-Ray names its
# files with the format's name as extension. C is compressed TGA.
OUTPUT_TYPES = {"png": "N", "jpg": "J", "tga": "T", "bmp": "B", "ppm": "P", "exr": "E", "hdr": "H"}
_TYPE_FORMATS = {**{letter: fmt for fmt, letter in OUTPUT_TYPES.items()}, "C": "tga"}


def output_format(output_type: str) -> str:
    """The job format an Output_File_Type value writes: "N" -> "png", "C" -> "tga"."""
    return _TYPE_FORMATS[output_type[0].upper()]


# --- peerfarm's own bounds on values it passes on (ValueError says what is expected) ---

# Far below float32's limit, so no clock overflows when POV-Ray narrows it.
_MAX_FLOAT = 1e30


def _whole(lo: int, hi: int) -> Callable[[str], str]:
    def check(text: str) -> str:
        if not lo <= int(text) <= hi:
            raise ValueError(f"expected a whole number from {lo} to {hi}")
        return text

    return check


def _number(lo: float = -_MAX_FLOAT, hi: float = _MAX_FLOAT) -> Callable[[str], str]:
    def check(text: str) -> str:
        if not lo <= float(text) <= hi:
            raise ValueError(f"expected a number from {lo:g} to {hi:g}")
        return text

    return check


def _text(text: str) -> str:
    # peerfarm writes it back between quotes, on one line.
    if ('"' in text and "'" in text) or any(ord(c) < 32 for c in text):
        raise ValueError("expected a name without both kinds of quotes or control characters")
    return text


def _any(text: str) -> str:
    return text


# --- what peerfarm does with each setting ---

SCENE = "scene"  # passed on; only from the scene's INI
RENDER = "render"  # passed on; also allowed as a submitter's --option
IGNORED = "ignored"  # dropped without a word: the node decides, or POV-Ray 3.7 ignores it
OVERRIDDEN = "overridden"  # dropped (peerfarm decides), with a note for the user
REFUSED = "refused"  # the job is refused, naming the danger


def _always(value: str) -> bool:
    return True


@dataclass(frozen=True)
class _Rule:
    group: str
    check: Callable[[str], str] = _any
    # OVERRIDDEN: what peerfarm does instead; REFUSED: the danger, and what to do.
    why: str = ""
    # OVERRIDDEN/REFUSED only for these values; other values do nothing and are dropped
    # (an empty shell-out command runs nothing, Continue_Trace=off continues nothing).
    active: Callable[[str], bool] = _always
    quoted: bool = False  # a file name: written back between quotes


def _on(value: str) -> bool:
    return value == "on"


def _off(value: str) -> bool:
    return value == "off"


_PATH = dict(check=_text, quoted=True)
_MESSAGES = (
    "POV-Ray's messages go to the chunk's log on the render node instead "
    "(`peerfarm logs JOB` shows them)"
)
_SHELLOUT = (
    "shell-out commands would run programs on the render nodes, which a farm rendering "
    "other people's scenes must not allow; remove it (render nodes cannot run them anyway)"
)

# Every POV-Ray 3.7 setting (ini_syntax.KEYWORDS, Bits_Per_Colour as Bits_Per_Color),
# in the order peerfarm writes them. Library_Path, Include_Header, Radiosity_File_Name,
# region, Frame_Step and Output_File_Type get further checks in load_scene.
_RULES: dict[str, _Rule] = {
    "Input_File_Name": _Rule(SCENE, **_PATH),
    "Width": _Rule(SCENE, _whole(1, MAX_SIDE)),
    "Height": _Rule(SCENE, _whole(1, MAX_SIDE)),
    "Initial_Frame": _Rule(SCENE, _whole(0, MAX_FRAME)),
    "Final_Frame": _Rule(SCENE, _whole(0, MAX_FRAME)),
    "Initial_Clock": _Rule(SCENE, _number()),
    "Final_Clock": _Rule(SCENE, _number()),
    "Subset_Start_Frame": _Rule(SCENE, _number(0, MAX_FRAME)),
    "Subset_End_Frame": _Rule(SCENE, _number(0, MAX_FRAME)),
    "Cyclic_Animation": _Rule(SCENE),
    "Clock": _Rule(SCENE, _number()),
    "Clockless_Animation": _Rule(SCENE),
    "Version": _Rule(SCENE, _number(1, 10)),
    "File_Gamma": _Rule(SCENE),
    "Display_Gamma": _Rule(SCENE),
    "Declare": _Rule(SCENE),
    "Library_Path": _Rule(SCENE, **_PATH),
    "Include_Header": _Rule(SCENE, **_PATH),
    "Start_Column": _Rule(SCENE, _number()),
    "End_Column": _Rule(SCENE, _number()),
    "Start_Row": _Rule(SCENE, _number()),
    "End_Row": _Rule(SCENE, _number()),
    "Radiosity_From_File": _Rule(SCENE),
    "Radiosity_File_Name": _Rule(SCENE, **_PATH),
    "Radiosity_Vain_Pretrace": _Rule(SCENE),
    "Grayscale_Output": _Rule(SCENE),
    "Dither": _Rule(SCENE),
    "Dither_Method": _Rule(SCENE),
    "Compression": _Rule(SCENE, _whole(0, 255)),
    "High_Reproducibility": _Rule(SCENE),
    "Render_Block_Size": _Rule(SCENE, _whole(4, MAX_SIDE)),
    "Render_Block_Step": _Rule(SCENE, _whole(0, 2**31 - 1)),
    "Render_Pattern": _Rule(SCENE, _whole(0, 5)),
    "Max_Image_Buffer_Memory": _Rule(SCENE, _whole(0, 2**31 - 1)),
    "Bounding_Method": _Rule(SCENE, _whole(0, 2)),
    "BSP_BaseAccessCost": _Rule(SCENE),
    "BSP_ChildAccessCost": _Rule(SCENE),
    "BSP_ISectCost": _Rule(SCENE),
    "BSP_MaxDepth": _Rule(SCENE),
    "BSP_MissChance": _Rule(SCENE),
    "Remove_Bounds": _Rule(SCENE),
    "Split_Unions": _Rule(SCENE),
    "Warning_Level": _Rule(SCENE),
    "Quality": _Rule(RENDER, _whole(0, 11)),
    "Antialias": _Rule(RENDER),
    "Antialias_Threshold": _Rule(RENDER, _number(0, 3)),
    "Antialias_Depth": _Rule(RENDER, _whole(1, 9)),
    "Antialias_Gamma": _Rule(RENDER, _number(0.01, 10)),
    "Sampling_Method": _Rule(RENDER, _whole(1, 3)),
    "Jitter": _Rule(RENDER),
    "Jitter_Amount": _Rule(RENDER, _number(0, 1)),
    "Output_File_Type": _Rule(RENDER),
    "Bits_Per_Color": _Rule(RENDER, _whole(5, 16)),
    "Output_Alpha": _Rule(RENDER),
    "Work_Threads": _Rule(RENDER, _whole(1, 512)),
    "Bounding": _Rule(RENDER),
    "Bounding_Threshold": _Rule(RENDER, _whole(0, 1_000_000)),
    # A render node has no display, nobody to press a key, and logs POV-Ray's messages.
    **{
        key: _Rule(IGNORED)
        for key in (
            "Display",
            "Video_Mode",
            "Palette",
            "Verbose",
            "Pause_When_Done",
            "Test_Abort",
            "Test_Abort_Count",
            "Preview_Start_Size",
            "Preview_End_Size",
            "Append_File",
            *(f"{stream}_Console" for stream in ("All", "Debug", "Fatal", "Render")),
            "Statistic_Console",
            "Warning_Console",
        )
    },
    # POV-Ray 3.7 reads these but does nothing with them (its source says "currently not
    # supported by code"), or warns that they are no longer used.
    **{
        key: _Rule(IGNORED)
        for key in (
            "Draw_Vistas",
            "Light_Buffer",
            "Vista_Buffer",
            "Field_Render",
            "Odd_Field",
            "Buffer_Output",
            "Buffer_Size",
            "Create_Histogram",
            "Histogram_Name",
            "Histogram_Grid_Size",
            "Histogram_Type",
        )
    },
    # What POV-Ray does with a shell-out command's exit status: nothing without a command.
    **{key.replace("_Command", "_Return"): _Rule(IGNORED) for key in SHELL_COMMANDS},
    "Output_File_Name": _Rule(
        OVERRIDDEN,
        why="peerfarm names the frames itself (NAME_0001.png, ... in the job's output folder)",
    ),
    "Output_To_File": _Rule(
        OVERRIDDEN, why="a farm delivers frames as files, so POV-Ray writes them", active=_off
    ),
    **{
        f"{stream}_File": _Rule(OVERRIDDEN, why=_MESSAGES)
        for stream in ("All", "Debug", "Fatal", "Render", "Statistic", "Warning")
    },
    "Create_Ini": _Rule(
        OVERRIDDEN, why="peerfarm writes POV-Ray's INI itself and keeps no copy of it as a file"
    ),
    "Continue_Trace": _Rule(
        OVERRIDDEN,
        why="each chunk renders its frames from the start into a fresh folder, so there is no "
        "partial image to continue",
        active=_on,
    ),
    "Radiosity_To_File": _Rule(
        OVERRIDDEN,
        why="the radiosity cache would be saved on a render node, where nobody collects it; "
        "POV-Ray computes radiosity as usual",
        active=_on,
    ),
    "Real_Time_Raytracing": _Rule(
        OVERRIDDEN,
        why="real-time raytracing shows the scene on a display over and over and writes no "
        "frames; render nodes render each frame once, to a file",
        active=_on,
    ),
    "Frame_Step": _Rule(
        OVERRIDDEN,
        why="peerfarm renders every frame of the job's range, the ones in between included "
        "(choose fewer frames with --frames)",
        active=lambda value: int(value) > 1,
    ),
    **{key: _Rule(REFUSED, why=_SHELLOUT, active=str.strip) for key in SHELL_COMMANDS},
    "Include_Ini": _Rule(
        REFUSED,
        why="POV-Ray would read that INI file too, and peerfarm reads and checks only the "
        "main INI (another could run programs or write files); merge its settings into this "
        "one. A word alone, or a setting without '=', is read as such a file name",
    ),
}

# Why a submitter's option may not set a scene setting; the rest say "put it in the INI".
_OPTION_REASONS = {
    "Width": "set the image size with the job's size (--size)",
    "Height": "set the image size with the job's size (--size)",
    "Input_File_Name": "the scene's main file comes from the scene package",
    "Library_Path": "a scene may include only its own files and POV-Ray's standard include "
    "files, which every node has",
    **{
        key: "frames and clock come from the scene's INI; choose frames with --frames"
        for key in (
            "Initial_Frame",
            "Final_Frame",
            "Initial_Clock",
            "Final_Clock",
            "Subset_Start_Frame",
            "Subset_End_Frame",
            "Cyclic_Animation",
            "Clock",
            "Frame_Step",
        )
    },
}


def _judged(setting: Setting) -> Setting | None:
    """The setting as peerfarm passes it on; None when it is dropped (ignored or
    overridden: load_scene writes the notes). Raises IniError for a refused one."""
    rule = _RULES[setting.key]
    if rule.group == REFUSED and rule.active(setting.value):
        raise IniError(
            f"{setting.origin}: {setting.key}={setting.value.strip()} is not allowed: {rule.why}"
        )
    if rule.group in (IGNORED, REFUSED):
        return None
    try:
        checked = rule.check(setting.value)
    except ValueError as exc:
        raise IniError(f"{setting.origin}: {setting.key}={setting.value}: {exc}") from None
    return Setting(setting.key, checked, setting.origin)


def parse_ini(text: str, source: str) -> list[Setting]:
    """The settings of an INI file as POV-Ray reads them, in order; raises IniError
    naming the line where POV-Ray itself would stop."""
    return read_ini(text, source).settings


def parse_options(options: Iterable[object]) -> list[Setting]:
    """A submitter's options (["+A0.3", "Antialias_Depth=3"]): rendering quality only."""
    settings: list[Setting] = []
    for option in options:
        if not isinstance(option, str) or not option.strip() or "\n" in option:
            raise IniError(f"option {option!r}: expected one setting like +A0.3 or Quality=9")
        origin = f"option {option.strip()!r}"
        reading = read_ini(option.strip(), origin, lines=False)
        if reading.notes:
            raise IniError(f"{origin}: give one setting per option, e.g. --option=+A0.3")
        for setting in reading.settings:
            setting = Setting(setting.key, setting.value, origin)
            if (setting.key, setting.value) in (("Display", "off"), ("Output_To_File", "on")):
                continue  # what peerfarm does anyway: no display, frames as files
            group = _RULES[setting.key].group
            if group != RENDER:
                if setting.key == "Display":
                    reason = "render nodes have no display"
                elif group == IGNORED:
                    reason = "it has no effect on a render node"
                elif group in (OVERRIDDEN, REFUSED):
                    reason = _RULES[setting.key].why
                else:
                    reason = _OPTION_REASONS.get(setting.key, "put it into the scene's INI")
                raise IniError(f"{origin}: {setting.key} is not allowed as an option: {reason}")
            judged = _judged(setting)
            if judged is not None:
                settings.append(judged)
    return settings


# --- POV-Ray's animation maths ---


def f32(value: float) -> float:
    """`value` rounded to single precision, as POV-Ray stores its option floats.

    Rounding a double result to single gives the correctly rounded single result
    for + - * / (a double has more than 2*24+2 bits), so these Python doubles
    reproduce POV-Ray's float arithmetic exactly.
    """
    return struct.unpack("f", struct.pack("f", value))[0]


def _subset_frame(value: str, initial: int, final: int) -> int:
    """Subset_Start/End_Frame: a frame number, or a fraction of the frames when below 1."""
    part = f32(max(float(value), 0.0))
    if part == 0.0 or part >= 1.0:
        return int(part)
    return int(f32((final - initial + 1) * part))


@dataclass(frozen=True)
class Animation:
    """An animation's numbers as POV-Ray 3.7 uses them."""

    initial_frame: int  # never below 0 (POV-Ray clamps)
    final_frame: int  # one more than the INI says for a cyclic animation, as in POV-Ray
    initial_clock: float  # single precision, as POV-Ray keeps them
    final_clock: float
    cyclic: bool
    first_frame: int  # the frames a direct run of the INI renders (its subset, if any)
    last_frame: int

    def clock(self, frame: int) -> float:
        """The `clock` POV-Ray gives the scene for `frame`."""
        delta = f32(self.final_clock - self.initial_clock) / float(
            self.final_frame - self.initial_frame
        )
        return f32(delta * float(frame - self.initial_frame) + self.initial_clock)

    @property
    def digits(self) -> int:
        """POV-Ray pads frame numbers in file names to the digits of the final frame."""
        return len(str(self.final_frame))

    def file_name(self, frame: int, stem: str = STEM, ext: str = "png") -> str:
        return f"{stem}{frame:0{self.digits}d}.{ext}"


def animation_of(values: dict[str, Setting]) -> Animation | None:
    """The animation an INI's settings describe, or None for a still image."""

    def whole(key: str, default: int) -> int:
        return int(values[key].value) if key in values else default

    def where(key: str) -> str:
        return values[key].origin if key in values else "the INI"

    # vfe.cpp: a render is a still when the frame options are absent, 0-0 or 1-1.
    if (whole("Initial_Frame", 0), whole("Final_Frame", 0)) in ((0, 0), (1, 1)):
        return None
    cyclic = "Cyclic_Animation" in values and values["Cyclic_Animation"].value == "on"
    initial = whole("Initial_Frame", 1)
    final = whole("Final_Frame", 1)
    if final < initial:
        raise IniError(
            f"{where('Final_Frame')}: Final_Frame {final} is before Initial_Frame {initial}; "
            "swap them"
        )
    if cyclic:
        final += 1
    if final == initial:
        raise IniError(
            f"{where('Final_Frame')}: Initial_Frame and Final_Frame are both {initial}, which "
            "gives POV-Ray no clock step (clock would be NaN); for a still image leave both "
            "out, for an animation make the range longer"
        )
    first = initial
    if "Subset_Start_Frame" in values:
        first = max(_subset_frame(values["Subset_Start_Frame"].value, initial, final), initial)
    last = final - 1 if cyclic else final
    if "Subset_End_Frame" in values:
        last = _subset_frame(values["Subset_End_Frame"].value, initial, final)
        if last < first:
            raise IniError(
                f"{where('Subset_End_Frame')}: the subset ends at frame {last}, before it "
                f"starts at frame {first}; fix Subset_Start_Frame / Subset_End_Frame"
            )
    return Animation(
        initial_frame=initial,
        final_frame=final,
        initial_clock=f32(float(values["Initial_Clock"].value) if "Initial_Clock" in values else 0),
        final_clock=f32(float(values["Final_Clock"].value) if "Final_Clock" in values else 1),
        cyclic=cyclic,
        first_frame=first,
        last_frame=last,
    )


# --- a whole scene: main file, options, size ---

_REGION = ("Start_Column", "End_Column", "Start_Row", "End_Row")
# File names besides Input_File_Name that POV-Ray reads relative to where it runs.
_PATHS = ("Library_Path", "Include_Header", "Radiosity_File_Name")


@dataclass(frozen=True)
class PovrayScene:
    main: str  # the .ini or .pov the job names (a package path)
    input_file: str  # the .pov POV-Ray parses (a package path)
    settings: tuple[Setting, ...]  # one per key (Declare, Library_Path: per value), in order
    animation: Animation | None  # None: a still image
    format: str = "png"  # the job's image format (a key of OUTPUT_TYPES)
    # What peerfarm overrides or reads differently from how it looks, one line each,
    # naming file and line: shown at submit and written into every chunk's log.
    notes: tuple[str, ...] = field(default=())

    @property
    def folder(self) -> str:
        """The main file's folder ("" at the top): POV-Ray runs there, as when a user types
        `povray scene.ini` beside the INI, so the scene's relative file names work."""
        return posixpath.dirname(self.main)

    def value(self, key: str) -> str | None:
        found = [s.value for s in self.settings if s.key == key]
        return found[-1] if found else None

    @property
    def size(self) -> tuple[int, int]:
        """The image's width and height (load_scene always sets both)."""
        return int(self.value("Width") or DEFAULT_SIZE[0]), int(
            self.value("Height") or DEFAULT_SIZE[1]
        )

    @property
    def alpha(self) -> bool:
        return self.value("Output_Alpha") == "on"

    @property
    def bits_per_color(self) -> int:
        """Bits per colour channel of the output: Bits_Per_Color, else 8."""
        return int(self.value("Bits_Per_Color") or 8)

    @property
    def frame_range(self) -> tuple[int, int]:
        """The frames a direct run renders; a still image is frame 1."""
        if self.animation is None:
            return 1, 1
        return self.animation.first_frame, self.animation.last_frame

    def clock(self, frame: int) -> float:
        if self.animation is None:
            return f32(float(self.value("Clock") or 0))
        return self.animation.clock(frame)

    def check_frames(self, first: int, last: int) -> None:
        """Raise IniError unless POV-Ray can render frames first..last of this scene."""
        if last < first:
            raise IniError(f"frames {first}-{last}: the last frame is before the first")
        if self.animation is None:
            if (first, last) != (1, 1):
                raise IniError(
                    f"{self.main} is a still image (no Initial_Frame/Final_Frame animation), "
                    f"so it has only frame 1, not {first}-{last}; to animate it, set "
                    "Initial_Frame and Final_Frame in an INI"
                )
            return
        if first < self.animation.initial_frame:
            raise IniError(
                f"frames {first}-{last}: frame {first} is before the animation's first "
                f"frame (Initial_Frame {self.animation.initial_frame})"
            )
        if last > MAX_FRAME:
            raise IniError(f"frames {first}-{last}: POV-Ray numbers frames up to {MAX_FRAME}")

    def tile_problem(self, block_size: int) -> str | None:
        """Why this scene's settings cannot be rendered in tiles on a `block_size` grid (the
        whole frame's pixels would differ), or None. tiling.py checks the scene files."""
        partial = [s for s in self.settings if s.key in _REGION]
        if partial:
            return (
                f"{partial[0].origin}: the INI renders only part of the frame "
                f"({', '.join(f'{s.key}={s.value}' for s in partial)}), and tiles split the "
                "whole frame; submit without --tiles"
            )
        block = self.value("Render_Block_Size")
        if block is not None and block_size % int(block):
            return (
                f"Render_Block_Size={block}: POV-Ray's antialiasing looks only within a "
                f"block, and tiles start every {block_size} pixels, which is not a multiple "
                f"of {block}; so tiles would differ from the whole frame at their edges. "
                f"Submit without --tiles (or use a block size dividing {block_size})"
            )
        if self.value("Dither") == "on" and (self.value("Dither_Method") or "FS")[0] != "B":
            return (
                "Dither=on with error diffusion (Dither_Method D1, D2 or FS, the default) "
                "spreads each pixel's rounding error to its neighbours, so tiles would differ "
                "from the whole frame at their edges; submit without --tiles (or use "
                "Dither_Method=B2, B3 or B4)"
            )
        return None

    def output_name(self, frame: int) -> str:
        """The file POV-Ray writes `frame` to, given Output_File_Name=STEM.<format>."""
        if self.animation is None:
            return f"{STEM}.{self.format}"
        return self.animation.file_name(frame, STEM, self.format)

    def chunk_ini(
        self,
        frames: range,
        output_file: str,
        region: tuple[int, int, int, int] | None = None,
        block_size: int = 32,
    ) -> str:
        """The INI peerfarm gives POV-Ray to render `frames` into `output_file`
        (STEM.<format>).

        `region` (left, top, right, bottom; pixels, right and bottom exclusive) renders
        only that part of the frame, in `block_size` blocks (a tile, see tiling.py) unless
        the scene sets its own Render_Block_Size (tile_problem checked that it fits)."""
        if any(c in output_file for c in '"\n\r'):
            raise ValueError(f"cannot name an output file {output_file!r} in an INI")
        lines = [
            "; Written by peerfarm: the scene's settings that passed its checks,",
            "; then the frames of this chunk and peerfarm's own output settings.",
        ]
        for setting in self.settings:
            if setting.key in ("Subset_Start_Frame", "Subset_End_Frame"):
                continue  # the chunk's frames replace the INI's subset
            if region is not None and setting.key in _REGION:
                continue  # the tile's box replaces the INI's (tile_problem: whole frame)
            lines.append(f"{setting.key}={_ini_value(setting)}")
        if self.animation is not None:
            lines += [
                f"Subset_Start_Frame={frames.start}",
                f"Subset_End_Frame={frames.stop - 1}",
            ]
        if region is not None:
            left, top, right, bottom = region
            # POV-Ray counts pixels from 1, ends inclusive. A value of 1 or less would be
            # a fraction of the image for an end; a tile's ends are at least one block.
            lines += [
                f"Start_Column={left + 1}",
                f"End_Column={right}",
                f"Start_Row={top + 1}",
                f"End_Row={bottom}",
            ]
            if self.value("Render_Block_Size") is None:
                lines.append(f"Render_Block_Size={block_size}")
        if self.value("Output_File_Type") is None:
            lines.append(f"Output_File_Type={OUTPUT_TYPES[self.format]}")
        lines += [
            f'Output_File_Name="{output_file}"',
            "Output_To_File=on",
            "Display=off",
            "Pause_When_Done=off",
        ]
        return "\n".join(lines) + "\n"


def _ini_value(setting: Setting) -> str:
    """A setting's value as an INI line writes it, so POV-Ray reads back the same value."""
    if setting.key == "Declare" and '"' in setting.value:
        return f"'{setting.value}'"  # Declare='Name="text"': a string
    if _RULES[setting.key].quoted:
        quote = "'" if '"' in setting.value else '"'
        return f"{quote}{setting.value}{quote}"
    return setting.value


def _inside(name: str, folder: str) -> str | None:
    """`name` (relative to the main file's `folder`, where POV-Ray runs) as a package
    path, or None when it points outside the scene package."""
    name = name.replace("\\", "/")
    path = posixpath.normpath(posixpath.join(folder, name))
    if name.startswith("/") or re.match(r"[A-Za-z]:", name) or path.split("/")[0] == "..":
        return None
    return path


def _input_file(setting: Setting, folder: str, files: Collection[str]) -> tuple[str, str]:
    """The file Input_File_Name names, relative to the main file's `folder` (where POV-Ray
    runs): (its package path, its name from `folder`). POV-Ray also tries adding .pov."""
    name = posixpath.normpath(setting.value.replace("\\", "/"))
    path = _inside(name, folder)
    if path is None:
        raise IniError(
            f"{setting.origin}: Input_File_Name {setting.value!r} points outside the scene "
            "folder; name a file inside it with a relative path"
        )
    for suffix in ("", ".pov"):
        if path + suffix in files:
            return path + suffix, name + suffix
    near = [f for f in files if f.lower() in (path.lower(), path.lower() + ".pov")]
    hint = f"; did you mean {near[0]!r}? (names are case-sensitive)" if near else ""
    raise IniError(
        f"{setting.origin}: Input_File_Name {setting.value!r} is not in the scene package"
        f"{hint or '; add the file to the scene folder or fix the name'}"
    )


def _collapse(settings: Iterable[Setting]) -> dict[str, Setting]:
    """One setting per key, the last one winning (as in POV-Ray); Declares per name and
    Library_Path per folder, which POV-Ray collects (keeping the first of equal folders,
    so the search order stays as written)."""
    values: dict[str, Setting] = {}
    for setting in settings:
        slot = setting.key
        if setting.key == "Declare":
            slot = "Declare:" + setting.value.partition("=")[0]
        elif setting.key == "Library_Path":
            values.setdefault("Library_Path:" + setting.value, setting)
            continue
        values.pop(slot, None)  # re-insert: a later setting keeps its own place in order
        values[slot] = setting
    return values


def _region_box(values: dict[str, Setting], width: int, height: int) -> tuple[int, ...]:
    """The pixels Start_/End_Column/Row select, as POV-Ray 3.7 computes them
    (backend/scene/view.cpp): values from 0 to 1 are fractions of the image (below 1 for
    a start), others pixel numbers counted from 1. (left, top, right, bottom), exclusive."""

    def side(key: str, default: float, size: int, end: bool) -> int:
        value = float(values[key].value) if key in values else default
        if 0.0 <= value < 1.0 or (end and value == 1.0):
            return int(size * value) - (1 if end else 0)
        return int(value - 1)

    left = side("Start_Column", 1.0, width, end=False)
    top = side("Start_Row", 1.0, height, end=False)
    right = side("End_Column", float(width), width, end=True)
    bottom = side("End_Row", float(height), height, end=True)
    return left, top, right + 1, bottom + 1


def _overrides(values: dict[str, Setting], fmt: str, folder: str) -> list[str]:
    """Drop from `values` what peerfarm decides itself; one note per override. Raises
    IniError for combinations the farm cannot render as POV-Ray would."""
    load, save = values.get("Radiosity_From_File"), values.get("Radiosity_To_File")
    if load is not None and save is not None and load.value == save.value == "on":
        raise IniError(
            f"{load.origin}: Radiosity_From_File=on with Radiosity_To_File=on makes each "
            "frame start from the radiosity cache the frames before it saved, which frames "
            "rendered on different nodes cannot do, so the pictures would differ from a "
            "direct run; remove one of the two"
        )
    if load is None or load.value != "on":
        values.pop("Radiosity_File_Name", None)  # names a cache nobody reads
    notes = []
    for slot, setting in list(values.items()):
        rule = _RULES[setting.key]
        if rule.group == OVERRIDDEN:
            del values[slot]
            if rule.active(setting.value):
                shown = setting.value or '""'  # All_File= still makes POV-Ray write a file
                notes.append(f"{setting.origin}: {setting.key}={shown} is overridden: {rule.why}")
    if "Output_File_Type" in values:
        setting = values["Output_File_Type"]
        wants = output_format(setting.value)
        if wants != fmt:
            del values["Output_File_Type"]
            notes.append(
                f"{setting.origin}: Output_File_Type={setting.value} is overridden: the job's "
                f"format is {fmt}, so POV-Ray writes {fmt} frames (submit with --format "
                f"{wants} to keep the scene's)"
            )
    if values.get("Grayscale_Output", Setting("", "off", "")).value == "on" and fmt not in (
        "png",
        "ppm",
    ):
        raise IniError(
            f"{values['Grayscale_Output'].origin}: Grayscale_Output=on: POV-Ray writes grey "
            f"frames only as PNG or PPM, and the job's format is {fmt}; submit with "
            "--format png"
        )
    for slot, setting in list(values.items()):
        if setting.key in _PATHS and not setting.value:
            del values[slot]  # Include_Header= includes nothing: as if not there
        elif setting.key in _PATHS and _inside(setting.value, folder) is None:
            raise IniError(
                f"{setting.origin}: {setting.key}={setting.value} is not allowed: it reaches "
                "outside the scene folder, and a scene may read only its own files and "
                "POV-Ray's standard include files (which every node has); put the files "
                "into the scene folder and name them relative to it"
            )
    return notes


def scene_output_type(main: str, main_text: str, options: Sequence[object] = ()) -> str | None:
    """The Output_File_Type an INI or the options ask for ("N", "J", ...), or None."""
    settings = []
    if main.lower().endswith(".ini"):
        settings = read_ini(main_text, main).settings
    settings += parse_options(options)
    types = [s.value for s in settings if s.key == "Output_File_Type"]
    return types[-1] if types else None


def load_scene(
    main: str,
    main_text: str,
    files: Collection[str],
    options: Sequence[object] = (),
    size: tuple[int, int] | None = None,
    fmt: str = "png",
) -> PovrayScene:
    """Check a POV-Ray scene: its main file (.ini or .pov), the submitter's options, the
    job's size (which overrides the INI's) and image format (which overrides the INI's
    Output_File_Type; an option's must agree). `files` are the package's file names.

    Raises IniError with a message the user can act on; what is overridden is in the
    scene's notes.
    """
    suffix = main.rsplit(".", 1)[-1].lower() if "." in main else ""
    if suffix == "ini":
        reading = read_ini(main_text, main)
    elif suffix == "pov":
        reading = IniReading([Setting("Input_File_Name", main, f"the main file {main}")], [])
    else:
        raise IniError(f"the main scene file must be a .pov or .ini file, not {main!r}")
    if fmt not in OUTPUT_TYPES:
        raise IniError(f"POV-Ray does not write {fmt} frames; it writes {', '.join(OUTPUT_TYPES)}")
    option_settings = parse_options(options)
    for setting in option_settings:
        if setting.key == "Output_File_Type" and output_format(setting.value) != fmt:
            wants = output_format(setting.value)
            raise IniError(
                f"{setting.origin}: Output_File_Type={setting.value} writes {wants} frames, "
                f"but the job's format is {fmt}: submit with --format {wants}, or remove it"
            )
    judged = [_judged(s) for s in reading.settings]
    values = _collapse([s for s in judged if s is not None] + option_settings)
    folder = posixpath.dirname(main)
    notes = list(reading.notes) + _overrides(values, fmt, folder)
    if "Input_File_Name" not in values:
        sections = [note for note in notes if "starts a named section" in note]
        raise IniError(
            f"{main} names no Input_File_Name; add a line such as Input_File_Name=scene.pov"
            + (f" before the first section ({sections[0].split(': ')[0]})" if sections else "")
        )
    if suffix == "pov":  # named from its own folder, like any Input_File_Name
        values["Input_File_Name"] = Setting("Input_File_Name", posixpath.basename(main), main)
    input_file, name = _input_file(values["Input_File_Name"], folder, files)
    values["Input_File_Name"] = Setting("Input_File_Name", name, values["Input_File_Name"].origin)
    width, height = size or (
        int(values["Width"].value) if "Width" in values else DEFAULT_SIZE[0],
        int(values["Height"].value) if "Height" in values else DEFAULT_SIZE[1],
    )
    for key, side in (("Width", width), ("Height", height)):
        if not 1 <= side <= MAX_SIDE:
            raise IniError(f"the image size {width}x{height} is outside 1..{MAX_SIDE}")
        origin = "the job's size" if size else values.get(key, Setting(key, "", "default")).origin
        values[key] = Setting(key, str(side), origin)
    if any(key in values for key in _REGION):
        left, top, right, bottom = _region_box(values, width, height)
        where = next(values[key].origin for key in _REGION if key in values)
        if not (0 <= left < right <= width and 0 <= top < bottom <= height):
            raise IniError(
                f"{where}: Start_Column/End_Column/Start_Row/End_Row select no part of the "
                f"{width}x{height} image (POV-Ray would stop with 'Invalid start column or "
                "row'); fix them"
            )
        if (left, top, right, bottom) == (0, 0, width, height):
            for key in _REGION:  # the whole frame, as without them
                values.pop(key, None)
    animation = animation_of(values)
    order = {key: i for i, key in enumerate(_RULES)}
    ordered = sorted(values.values(), key=lambda s: order[s.key])  # stable: Declares keep order
    return PovrayScene(main, input_file, tuple(ordered), animation, fmt, tuple(notes))
