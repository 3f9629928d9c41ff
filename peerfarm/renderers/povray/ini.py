"""POV-Ray INI settings as peerfarm reads them, and POV-Ray 3.7's animation maths.

Pure functions on text and numbers, tested with plain values.

peerfarm never hands a submitted INI to POV-Ray. An INI can run programs
(Pre_Frame_Command and friends), write files anywhere (Output_File_Name, the
console files, Create_Ini), widen the include search (Library_Path) or pull in
other INI files. So the scene's INI and the submitter's options are parsed here,
checked against allow-lists, and POV-Ray gets an INI peerfarm writes itself
(`PovrayScene.chunk_ini`).

The syntax follows POV-Ray 3.7 (source/frontend/processoptions.cpp): `Key=Value`
lines with case-insensitive keys, `+X`/`-X` switches (several on a line), `;` and
`#` comments, and only the part before the first `[section]` counts, as when
POV-Ray is given an INI without a section name.

The clock maths copies POV-Ray 3.7 (source/frontend/animationprocessing.cpp and
vfe/vfe.cpp), single-precision floats included, so a frame's clock here is bit
for bit the `clock` the scene sees.
"""

from __future__ import annotations

import posixpath
import re
import struct
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass

# POV-Ray turns frame numbers into single-precision floats; beyond 2**24 they would round.
MAX_FRAME = 2**24
MAX_SIDE = 16_384
# What POV-Ray renders when nothing sets a size; we write it out so that no
# node's own povray.ini can change it.
DEFAULT_SIZE = (160, 120)
STEM = "frame"  # file name stem POV-Ray writes a chunk's frames under


class IniError(ValueError):
    """A scene INI or an option peerfarm will not pass to POV-Ray; the message says what to do."""


@dataclass(frozen=True)
class Setting:
    key: str  # canonical spelling, e.g. "Antialias_Threshold"
    value: str  # checked text, safe to write into an INI line
    origin: str  # for messages: "scene.ini line 4", "option '+A0.3'"


# --- value checks: each returns the value as peerfarm writes it, or raises ValueError ---

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TRUE = {"on", "true", "yes", "1"}
_FALSE = {"off", "false", "no", "0"}
# Far below float32's limit, so no clock overflows when POV-Ray narrows it.
_MAX_FLOAT = 1e30


def _whole(lo: int, hi: int) -> Callable[[str], str]:
    def check(text: str) -> str:
        if not re.fullmatch(r"[+-]?\d{1,9}", text) or not lo <= int(text) <= hi:
            raise ValueError(f"expected a whole number from {lo} to {hi}")
        return str(int(text))

    return check


def _number(lo: float = -_MAX_FLOAT, hi: float = _MAX_FLOAT) -> Callable[[str], str]:
    def check(text: str) -> str:
        if not _NUMBER.fullmatch(text) or not lo <= float(text) <= hi:
            raise ValueError(f"expected a number from {lo:g} to {hi:g}")
        return text  # written back as given: POV-Ray then reads exactly the same value

    return check


def _switch(text: str) -> str:
    lowered = text.lower()
    if lowered in _TRUE:
        return "on"
    if lowered in _FALSE:
        return "off"
    raise ValueError("expected on or off")


def _scene_path(text: str) -> str:
    if not text or any(c in text for c in "\"'") or any(ord(c) < 32 for c in text):
        raise ValueError("expected a file name without quotes or control characters")
    return text


# The job's format (peerfarm.formats) -> POV-Ray's Output_File_Type; POV-Ray names its
# files with the format's name as extension. C is compressed TGA.
OUTPUT_TYPES = {"png": "N", "jpg": "J", "tga": "T", "bmp": "B", "ppm": "P", "exr": "E", "hdr": "H"}
_TYPE_FORMATS = {**{letter: fmt for fmt, letter in OUTPUT_TYPES.items()}, "C": "tga"}


def _output_type(text: str) -> str:
    match = re.fullmatch(r"([A-Za-z])(\d{1,2})?", text)
    letter = match[1].upper() if match else ""
    if letter not in _TYPE_FORMATS or (
        match[2] and (letter not in "NP" or not 5 <= int(match[2]) <= 16)
    ):
        raise ValueError(
            "expected N (PNG, or N8/N16 for the bits per colour), J (JPEG), T or C (TGA, C "
            "compressed), B (BMP), P (PPM), E (OpenEXR) or H (Radiance HDR)"
        )
    return text.upper()


def output_format(output_type: str) -> str:
    """The job format an Output_File_Type value writes: "N16" -> "png"."""
    return _TYPE_FORMATS[output_type[0]]


def _gamma(text: str) -> str:
    if text.lower() == "srgb":
        return "sRGB"
    if _NUMBER.fullmatch(text) and 0 < float(text) <= 10:
        return text
    raise ValueError("expected sRGB or a number above 0 (e.g. 2.2)")


def _declare(text: str) -> str:
    name, _, value = text.partition("=")
    if not _IDENT.fullmatch(name.strip()) or not _NUMBER.fullmatch(value.strip()):
        raise ValueError("expected NAME=NUMBER, e.g. Declare=Speed=2.5")
    return f"{name.strip()}={value.strip()}"


def _anything(text: str) -> str:
    return text


@dataclass(frozen=True)
class _Key:
    name: str
    check: Callable[[str], str]
    # "scene": only in the scene's INI; "render": also as a submitter's option;
    # "ignored": accepted in an INI, without effect (peerfarm sets its own value).
    group: str
    quoted: bool = False


_KEY_LIST = [
    _Key("Input_File_Name", _scene_path, "scene", quoted=True),
    _Key("Width", _whole(1, MAX_SIDE), "scene"),
    _Key("Height", _whole(1, MAX_SIDE), "scene"),
    _Key("Initial_Frame", _whole(0, MAX_FRAME), "scene"),
    _Key("Final_Frame", _whole(0, MAX_FRAME), "scene"),
    _Key("Initial_Clock", _number(), "scene"),
    _Key("Final_Clock", _number(), "scene"),
    _Key("Subset_Start_Frame", _number(0, MAX_FRAME), "scene"),
    _Key("Subset_End_Frame", _number(0, MAX_FRAME), "scene"),
    _Key("Cyclic_Animation", _switch, "scene"),
    _Key("Clock", _number(), "scene"),
    _Key("Version", _number(1, 10), "scene"),
    _Key("File_Gamma", _gamma, "scene"),
    _Key("Display_Gamma", _gamma, "scene"),
    _Key("Declare", _declare, "scene"),
    _Key("Quality", _whole(0, 11), "render"),
    _Key("Antialias", _switch, "render"),
    _Key("Antialias_Threshold", _number(0, 3), "render"),
    _Key("Antialias_Depth", _whole(1, 9), "render"),
    _Key("Antialias_Gamma", _number(0.01, 10), "render"),
    _Key("Sampling_Method", _whole(1, 3), "render"),
    _Key("Jitter", _switch, "render"),
    _Key("Jitter_Amount", _number(0, 1), "render"),
    _Key("Output_File_Type", _output_type, "render"),
    _Key("Bits_Per_Color", _whole(5, 16), "render"),
    _Key("Output_Alpha", _switch, "render"),
    _Key("Work_Threads", _whole(1, 512), "render"),
    _Key("Bounding", _switch, "render"),
    _Key("Bounding_Threshold", _whole(0, 1_000_000), "render"),
    _Key("Display", _switch, "ignored"),  # as an option: only "off" (see parse_options)
    _Key("Output_To_File", _switch, "ignored"),  # "off" is refused in _setting
    _Key("Verbose", _anything, "ignored"),
    _Key("Pause_When_Done", _anything, "ignored"),
    _Key("Test_Abort", _anything, "ignored"),
    _Key("Test_Abort_Count", _anything, "ignored"),
    _Key("Preview_Start_Size", _anything, "ignored"),
    _Key("Preview_End_Size", _anything, "ignored"),
    _Key("Draw_Vistas", _anything, "ignored"),
    *(
        _Key(f"{stream}_Console", _anything, "ignored")
        for stream in ("All", "Debug", "Fatal", "Render", "Statistic", "Warning")
    ),
]
_KEYS = {key.name.lower(): key for key in _KEY_LIST}

_SHELLOUT = "shell-out commands would run programs on the render nodes"
_FILES = "POV-Ray's messages already go to the chunk's log on the node; remove it"
_FORBIDDEN = {
    "output_file_name": "peerfarm names the frames itself (see docs/povray.md); remove it",
    "library_path": "a scene may include only its own files and POV-Ray's standard include "
    "files; put the files you include into the scene folder",
    "include_ini": "peerfarm reads only the main INI; merge the other INI into it",
    "create_ini": "it writes a file outside peerfarm's control; remove it",
    "frame_step": "peerfarm renders every frame; to render fewer, change Initial_Frame and "
    "Final_Frame (and the clocks)",
    "continue_trace": "peerfarm always renders whole frames; remove it",
    "field_render": "POV-Ray 3.7 does not support field rendering; remove it",
    "odd_field": "POV-Ray 3.7 does not support field rendering; remove it",
    **{
        f"{when}_{what}_{kind}": _SHELLOUT
        for when, what in (("pre", "scene"), ("pre", "frame"), ("post", "scene"), ("post", "frame"))
        for kind in ("command", "return")
    },
    **{
        f"{event}_{kind}": _SHELLOUT
        for event in ("user_abort", "fatal_error")
        for kind in ("command", "return")
    },
    **{
        f"{stream}_file": _FILES
        for stream in ("all", "debug", "fatal", "render", "statistic", "warning")
    },
    **{
        f"histogram_{what}": "histograms are not supported; remove it"
        for what in ("name", "type", "grid_size")
    },
    **{
        f"{edge}_{what}": "peerfarm chooses the part of the frame each node renders; to "
        "split a frame across nodes, submit with --tiles N"
        for edge in ("start", "end")
        for what in ("row", "column")
    },
}

# Why a submitter's option may not set a scene key; the rest say "put it in the INI".
_OPTION_REASONS = {
    "Width": "set the image size with the job's size (--size)",
    "Height": "set the image size with the job's size (--size)",
    "Input_File_Name": "the scene's main file comes from the scene package",
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
        )
    },
}

# Switch letters -> key. Longest first, so +KFI is Initial_Frame, not +KF (Final_Clock)
# followed by "I". The third field: None for a switch that takes a value (+W640);
# otherwise the switch's sign turns the key on or off, and the field says what a value
# after it means: "flag" none allowed, "any" ignored, else the key it sets (+A0.3:
# antialias on, threshold 0.3).
_SWITCHES: list[tuple[str, str, str | None]] = [
    ("KFI", "Initial_Frame", None),
    ("KFF", "Final_Frame", None),
    ("KI", "Initial_Clock", None),
    ("KF", "Final_Clock", None),
    ("KC", "Cyclic_Animation", "flag"),
    ("K", "Clock", None),
    ("SF", "Subset_Start_Frame", None),
    ("EF", "Subset_End_Frame", None),
    ("SR", "Start_Row", None),
    ("ER", "End_Row", None),
    ("SC", "Start_Column", None),
    ("EC", "End_Column", None),
    ("AM", "Sampling_Method", None),
    ("AG", "Antialias_Gamma", None),
    ("A", "Antialias", "Antialias_Threshold"),
    ("R", "Antialias_Depth", None),
    ("J", "Jitter", "Jitter_Amount"),
    ("Q", "Quality", None),
    ("WT", "Work_Threads", None),
    ("W", "Width", None),
    ("HT", "Histogram_Type", None),
    ("HN", "Histogram_Name", None),
    ("HS", "Histogram_Grid_Size", None),
    ("H", "Height", None),
    ("I", "Input_File_Name", None),
    ("O", "Output_File_Name", None),
    ("L", "Library_Path", None),
    ("GI", "Create_Ini", None),
    ("GA", "All_File", None),
    ("GD", "Debug_File", None),
    ("GF", "Fatal_File", None),
    ("GR", "Render_File", None),
    ("GS", "Statistic_File", None),
    ("GW", "Warning_File", None),
    ("UA", "Output_Alpha", "flag"),
    ("F", "Output_To_File", "Output_File_Type"),
    ("D", "Display", "any"),  # +D can name a display type: no display on a node anyway
    ("V", "Verbose", "flag"),
    ("P", "Pause_When_Done", "flag"),
    ("X", "Test_Abort", "Test_Abort_Count"),
    ("C", "Continue_Trace", "flag"),
    ("MV", "Version", None),
    ("MB", "Bounding", "Bounding_Threshold"),
]


def _setting(name: str, value: str, origin: str) -> Setting:
    """A checked setting; raises IniError for a forbidden, unknown or invalid one."""
    key = _KEYS.get(name.lower())
    if key is None:
        reason = _FORBIDDEN.get(name.lower())
        if reason is not None:
            raise IniError(f"{origin}: {name} is not allowed: {reason}")
        raise IniError(
            f"{origin}: {name} is not a setting peerfarm passes to POV-Ray; remove it "
            "(docs/povray.md lists the settings it honours)"
        )
    try:
        checked = key.check(value.strip())
    except ValueError as exc:
        raise IniError(f"{origin}: {key.name}={value.strip()}: {exc}") from None
    if key.name == "Output_To_File" and checked == "off":
        raise IniError(f"{origin}: Output_To_File=off: peerfarm needs the frames as files")
    return Setting(key.name, checked, origin)


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def _unknown_switch(where: str, token: str) -> IniError:
    return IniError(
        f"{where}: {token} is not a switch peerfarm passes to POV-Ray; remove it "
        "(docs/povray.md lists the settings it honours)"
    )


def _switch_settings(token: str, where: str) -> list[Setting]:
    """`+A0.3` -> [Antialias=on, Antialias_Threshold=0.3]."""
    sign, body = token[0], token[1:]
    for letters, key, extra in _SWITCHES:
        if not body.upper().startswith(letters):
            continue
        param = _unquote(body[len(letters) :])
        if extra is None:  # a switch that takes a value: +W640
            if not param:
                raise IniError(f"{where}: {token} needs a value, e.g. {sign}{letters}1")
            try:
                return [_setting(key, param, where)]
            except IniError:
                if param[:1].isalpha():  # +WL0 is not Width=L0 but a switch we do not know
                    raise _unknown_switch(where, token) from None
                raise
        settings = [_setting(key, "on" if sign == "+" else "off", where)]
        if param and extra == "flag":
            raise _unknown_switch(where, token)
        if param and extra != "any":
            settings.append(_setting(extra, param, where))
        return settings
    raise _unknown_switch(where, token)


def _line_settings(line: str, origin: str) -> list[Setting]:
    """The settings one INI line (or one option) sets: `Key=Value` or switches."""
    if line[0] in "+-":
        settings: list[Setting] = []
        i = 0
        while i < len(line):
            if line[i].isspace():
                i += 1
                continue
            if line[i] in ";#":  # the rest of the line is a comment
                break
            if line[i] not in "+-":
                raise IniError(f"{origin}: expected a +/- switch at {line[i:]!r}")
            j = i + 1
            while j < len(line) and not line[j].isspace() and line[j] not in ";#":
                if line[j] in "\"'":
                    close = line.find(line[j], j + 1)
                    if close < 0:
                        raise IniError(f"{origin}: a quote is not closed in {line[i:]!r}")
                    j = close
                j += 1
            token = line[i:j]
            # Messages name the switch as written, unless the origin (an option) already does.
            where = origin if token == line and token in origin else f"{origin} ({token})"
            settings += _switch_settings(token, where)
            i = j
        return settings
    match = re.match(r"([A-Za-z0-9_]+)[ \t]*=[ \t]*(.*)$", line)
    if match is None:
        raise IniError(
            f"{origin}: {line!r} is neither Key=Value nor a +/- switch; POV-Ray would read "
            "it as the name of another INI file, which peerfarm does not follow: merge "
            "that file's settings into this one"
        )
    name, rest = match[1], match[2]
    if rest[:1] in ("'", '"'):
        close = rest.find(rest[0], 1)
        if close < 0:
            raise IniError(f"{origin}: the quote after {name}= is not closed")
        value, several = rest[1:close], rest[close + 1 :].strip().startswith(",")
    else:
        # Like POV-Ray: an unquoted value ends at a comment; a comma starts another value.
        cut = min((i for i in (rest.find(";"), rest.find("#")) if i >= 0), default=len(rest))
        value = rest[:cut].strip()
        several = "," in value
    if several:
        raise IniError(f"{origin}: {name} has several values; give one value per line")
    return [_setting(name, value, origin)]


def parse_ini(text: str, source: str) -> list[Setting]:
    """The settings of an INI file, in order; raises IniError naming the line."""
    settings: list[Setting] = []
    for number, raw in enumerate(text.lstrip("\ufeff").splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in ";#":
            continue
        if line[0] == "[":
            break  # POV-Ray ignores named sections when the INI is given without one
        settings += _line_settings(line, f"{source} line {number}")
    return settings


def parse_options(options: Iterable[object]) -> list[Setting]:
    """A submitter's options (["+A0.3", "Antialias_Depth=3"]), checked against the allow-list."""
    settings: list[Setting] = []
    for option in options:
        if not isinstance(option, str) or not option.strip() or "\n" in option:
            raise IniError(f"option {option!r}: expected one setting like +A0.3 or Quality=9")
        origin = f"option {option.strip()!r}"
        for setting in _line_settings(option.strip(), origin):
            group = _KEYS[setting.key.lower()].group
            if (setting.key, setting.value) in (("Display", "off"), ("Output_To_File", "on")):
                continue  # what peerfarm does anyway: no display, frames as files
            if group != "render":
                if setting.key == "Display":
                    reason = "render nodes have no display"
                elif group == "ignored":
                    reason = "it has no effect on a render node"
                else:
                    reason = _OPTION_REASONS.get(setting.key, "put it into the scene's INI")
                raise IniError(f"{origin}: {setting.key} is not allowed as an option: {reason}")
            settings.append(setting)
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


@dataclass(frozen=True)
class PovrayScene:
    main: str  # the .ini or .pov the job names (a package path)
    input_file: str  # the .pov POV-Ray parses (a package path)
    settings: tuple[Setting, ...]  # one per key (Declare: one per name), in _KEY_LIST order
    animation: Animation | None  # None: a still image
    format: str = "png"  # the job's image format (a key of OUTPUT_TYPES)

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
        """Bits per colour channel of the output: Bits_Per_Color, or +FN16's 16, else 8."""
        bits = self.value("Bits_Per_Color")
        if bits is None:
            bits = (self.value("Output_File_Type") or "")[1:]
        return int(bits) if bits else 8

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
        only that part of the frame, in `block_size` blocks (a tile, see tiling.py)."""
        if any(c in output_file for c in '"\n\r'):
            raise ValueError(f"cannot name an output file {output_file!r} in an INI")
        lines = [
            "; Written by peerfarm: the scene's settings that passed its checks,",
            "; then the frames of this chunk and peerfarm's own output settings.",
        ]
        for setting in self.settings:
            if setting.key in ("Subset_Start_Frame", "Subset_End_Frame"):
                continue  # the chunk's frames replace the INI's subset
            value = f'"{setting.value}"' if _KEYS[setting.key.lower()].quoted else setting.value
            lines.append(f"{setting.key}={value}")
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
                f"Render_Block_Size={block_size}",
            ]
        if self.value("Output_File_Type") is None:
            lines.append(f"Output_File_Type={OUTPUT_TYPES[self.format]}")
        lines += [
            f'Output_File_Name="{output_file}"',
            "Output_To_File=on",
            "Display=off",
            "Pause_When_Done=off",
        ]
        return "\n".join(lines) + "\n"


def _input_file(setting: Setting, folder: str, files: Collection[str]) -> tuple[str, str]:
    """The file Input_File_Name names, relative to the main file's `folder` (where POV-Ray
    runs): (its package path, its name from `folder`). POV-Ray also tries adding .pov."""
    name = posixpath.normpath(setting.value.replace("\\", "/"))
    path = posixpath.normpath(posixpath.join(folder, name))
    if name.startswith("/") or re.match(r"[A-Za-z]:", name) or path.split("/")[0] == "..":
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
    """One setting per key, the last one winning (as in POV-Ray); Declares per name."""
    values: dict[str, Setting] = {}
    for setting in settings:
        if _KEYS[setting.key.lower()].group == "ignored":
            continue
        slot = setting.key
        if setting.key == "Declare":
            slot = "Declare:" + setting.value.partition("=")[0]
        values.pop(slot, None)  # re-insert: a later setting keeps its own place in order
        values[slot] = setting
    return values


def load_scene(
    main: str,
    main_text: str,
    files: Collection[str],
    options: Sequence[object] = (),
    size: tuple[int, int] | None = None,
    fmt: str = "png",
) -> PovrayScene:
    """Check a POV-Ray scene: its main file (.ini or .pov), the submitter's options, the
    job's size (which overrides the INI's) and image format (which an Output_File_Type
    of the INI or the options must agree with). `files` are the package's file names.

    Raises IniError with a message the user can act on.
    """
    suffix = main.rsplit(".", 1)[-1].lower() if "." in main else ""
    if suffix == "ini":
        settings = parse_ini(main_text, main)
    elif suffix == "pov":
        settings = [_setting("Input_File_Name", main, f"the main file {main}")]
    else:
        raise IniError(f"the main scene file must be a .pov or .ini file, not {main!r}")
    settings += parse_options(options)
    values = _collapse(settings)
    if "Input_File_Name" not in values:
        raise IniError(
            f"{main} names no Input_File_Name; add a line such as Input_File_Name=scene.pov"
        )
    if suffix == "pov":  # named from its own folder, like any Input_File_Name
        values["Input_File_Name"] = Setting("Input_File_Name", posixpath.basename(main), main)
    input_file, name = _input_file(values["Input_File_Name"], posixpath.dirname(main), files)
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
    animation = animation_of(values)
    order = {key.name: i for i, key in enumerate(_KEY_LIST)}
    ordered = sorted(values.values(), key=lambda s: order[s.key])  # stable: Declares keep order
    if fmt not in OUTPUT_TYPES:
        raise IniError(f"POV-Ray does not write {fmt} frames; it writes {', '.join(OUTPUT_TYPES)}")
    if "Output_File_Type" in values:
        setting = values["Output_File_Type"]
        wants = output_format(setting.value)
        if wants != fmt:
            raise IniError(
                f"{setting.origin}: Output_File_Type={setting.value} writes {wants} frames, "
                f"but the job's format is {fmt}: submit with --format {wants}, or remove it"
            )
    return PovrayScene(main, input_file, tuple(ordered), animation, fmt)
