"""POV-Ray 3.7's INI grammar: what POV-Ray reads from an INI file, setting by setting.

Pure functions on text, tested with plain values. What peerfarm then does with each
setting (pass it on, override it, refuse it) is ini.py's business; this module only
reads, as POV-Ray reads.

It follows POV-Ray 3.7.0.10 to the letter (source/base/processoptions.cpp,
ProcessOptions::ParseFile and Parse_INI_*; the option and switch tables and
ProcessUnknownString of source/frontend/processrenderoptions.cpp), because a scene's
INI must mean on the farm what it means to `povray scene.ini`:

- Tokens, not lines: `+W80 +H60 Declare=fp=0` sets three things; after a `Key=Value`
  (and its `,` continuation values) POV-Ray skips the rest of the line, so
  `Width=40 +H30` sets only the width (reported as a note).
- An unquoted value ends at `;`, `#`, `,`, a quote or the end of the line. At a blank
  POV-Ray looks ahead (its "smart mode") and, unless a comment, a comma, a switch or a
  keyword follows, takes the rest of the line, blanks included.
- Switches match POV-Ray's switch table in its order, by prefix: `+KFF20` is
  Final_Frame=20, `+KF0.5` Final_Clock=0.5, `+A0.3` antialiasing with threshold .3.
- A word that is neither (a "plain string") names the scene when it ends in `.pov`,
  a library folder when it ends in `/`, and otherwise another INI file to read.
- `[Section]`: given an INI without a section name (as peerfarm's job is), POV-Ray
  reads only what comes before the first section label and ignores everything after.
- Numbers are read like C's sscanf ("640px" is 640), on/off like POV-Ray's IsTrue
  (a value is true when it starts like on, true, yes or 1, and an empty one is true).

Values come out normalised (on/off, whole numbers, the number text POV-Ray read), so
writing `Key=value` back into an INI gives POV-Ray exactly the same setting.
"""

from __future__ import annotations

import bisect
import re
import string
from dataclasses import dataclass

# How POV-Ray reads a key's value (the third column of its option tables).
BOOL, INT, FLOAT, TEXT, SPECIAL, OBSOLETE, NONE = (
    "bool",
    "int",
    "float",
    "text",
    "special",
    "obsolete",
    "none",
)

# POV-Ray 3.7.0.10's INI keywords (RenderOptions_INI_Table), canonical spelling -> type.
# SPECIAL ones are read by their own rules (_special_value); OBSOLETE ones are still
# recognised but POV-Ray 3.7 ignores them (with a warning).
KEYWORDS: dict[str, str] = {
    "All_Console": BOOL,
    "All_File": TEXT,
    "Antialias_Depth": INT,
    "Antialias": BOOL,
    "Antialias_Threshold": FLOAT,
    "Antialias_Gamma": FLOAT,
    "Append_File": BOOL,
    "Bits_Per_Color": INT,
    "Bits_Per_Colour": INT,
    "Bounding": BOOL,
    "Bounding_Method": INT,
    "Bounding_Threshold": INT,
    "BSP_BaseAccessCost": FLOAT,
    "BSP_ChildAccessCost": FLOAT,
    "BSP_ISectCost": FLOAT,
    "BSP_MaxDepth": INT,
    "BSP_MissChance": FLOAT,
    "Buffer_Output": OBSOLETE,
    "Buffer_Size": OBSOLETE,
    "Clock": FLOAT,
    "Clockless_Animation": BOOL,
    "Compression": INT,
    "Continue_Trace": BOOL,
    "Create_Histogram": OBSOLETE,
    "Create_Ini": TEXT,
    "Cyclic_Animation": BOOL,
    "Debug_Console": BOOL,
    "Debug_File": TEXT,
    "Declare": SPECIAL,
    "Display": BOOL,
    "Display_Gamma": SPECIAL,
    "Dither": BOOL,
    "Dither_Method": SPECIAL,
    "Draw_Vistas": BOOL,
    "End_Column": FLOAT,
    "End_Row": FLOAT,
    "Fatal_Console": BOOL,
    "Fatal_Error_Command": SPECIAL,
    "Fatal_Error_Return": SPECIAL,
    "Fatal_File": TEXT,
    "Field_Render": BOOL,
    "File_Gamma": SPECIAL,
    "Final_Clock": FLOAT,
    "Final_Frame": INT,
    "Frame_Step": INT,
    "Grayscale_Output": BOOL,
    "Height": INT,
    "High_Reproducibility": BOOL,
    "Histogram_Name": OBSOLETE,
    "Histogram_Grid_Size": OBSOLETE,
    "Histogram_Type": OBSOLETE,
    "Initial_Clock": FLOAT,
    "Initial_Frame": INT,
    "Input_File_Name": TEXT,
    "Include_Header": TEXT,
    "Include_Ini": SPECIAL,
    "Jitter_Amount": FLOAT,
    "Jitter": BOOL,
    "Library_Path": SPECIAL,
    "Light_Buffer": BOOL,
    "Max_Image_Buffer_Memory": INT,
    "Odd_Field": BOOL,
    "Output_Alpha": BOOL,
    "Output_File_Name": TEXT,
    "Output_File_Type": SPECIAL,
    "Output_To_File": BOOL,
    "Palette": SPECIAL,
    "Pause_When_Done": BOOL,
    "Post_Frame_Command": SPECIAL,
    "Post_Frame_Return": SPECIAL,
    "Post_Scene_Command": SPECIAL,
    "Post_Scene_Return": SPECIAL,
    "Preview_End_Size": INT,
    "Preview_Start_Size": INT,
    "Pre_Frame_Command": SPECIAL,
    "Pre_Frame_Return": SPECIAL,
    "Pre_Scene_Command": SPECIAL,
    "Pre_Scene_Return": SPECIAL,
    "Quality": INT,
    "Radiosity_File_Name": TEXT,
    "Radiosity_From_File": BOOL,
    "Radiosity_To_File": BOOL,
    "Radiosity_Vain_Pretrace": BOOL,
    "Real_Time_Raytracing": BOOL,
    "Remove_Bounds": BOOL,
    "Render_Block_Size": INT,
    "Render_Block_Step": INT,
    "Render_Console": BOOL,
    "Render_File": TEXT,
    "Render_Pattern": INT,
    "Sampling_Method": INT,
    "Split_Unions": BOOL,
    "Start_Column": FLOAT,
    "Start_Row": FLOAT,
    "Statistic_Console": BOOL,
    "Statistic_File": TEXT,
    "Subset_End_Frame": FLOAT,
    "Subset_Start_Frame": FLOAT,
    "Test_Abort_Count": INT,
    "Test_Abort": BOOL,
    "User_Abort_Command": SPECIAL,
    "User_Abort_Return": SPECIAL,
    "Verbose": BOOL,
    "Version": FLOAT,
    "Video_Mode": SPECIAL,
    "Vista_Buffer": BOOL,
    "Warning_Console": BOOL,
    "Warning_File": TEXT,
    "Warning_Level": INT,
    "Width": INT,
    "Work_Threads": INT,
}
_BY_LOWER = {name.lower(): name for name in KEYWORDS}
# Both spellings set one setting; peerfarm writes the first.
ALIASES = {"Bits_Per_Colour": "Bits_Per_Color"}
SHELL_COMMANDS = tuple(
    f"{when}_{what}_Command"
    for when, what in (("Pre", "Scene"), ("Pre", "Frame"), ("Post", "Scene"), ("Post", "Frame"))
) + ("User_Abort_Command", "Fatal_Error_Command")

# POV-Ray 3.7.0.10's switch table (RenderOptions_Cmd_Table), in its order, which decides:
# (letters, key its parameter sets, the parameter's type, key the +/- sign turns on/off).
# NONE: the switch takes no parameter. Two rows of the same letters: with and without one.
SWITCHES: list[tuple[str, str | None, str, str | None]] = [
    ("AG", "Antialias_Gamma", FLOAT, None),
    ("AM", "Sampling_Method", INT, None),
    ("A0", "Antialias_Threshold", FLOAT, "Antialias"),
    ("A", None, NONE, "Antialias"),
    ("BM", "Bounding_Method", INT, None),
    ("BS", "Render_Block_Size", INT, None),
    ("B", None, NONE, "Bounding"),
    ("C", None, NONE, "Continue_Trace"),
    ("D", "Video_Mode", SPECIAL, "Display"),
    ("D", None, NONE, "Display"),
    ("EC", "End_Column", FLOAT, None),
    ("EF0", "Subset_End_Frame", FLOAT, None),
    ("EF", "Subset_End_Frame", INT, None),
    ("EP", "Preview_End_Size", INT, None),
    ("ER", "End_Row", FLOAT, None),
    ("F", "Output_File_Type", SPECIAL, "Output_To_File"),
    ("F", None, NONE, "Output_To_File"),
    ("GA", "All_File", TEXT, "All_Console"),
    ("GA", None, NONE, "All_Console"),
    ("GD", "Debug_File", TEXT, "Debug_Console"),
    ("GD", None, NONE, "Debug_Console"),
    ("GF", "Fatal_File", TEXT, "Fatal_Console"),
    ("GF", None, NONE, "Fatal_Console"),
    ("GI", "Create_Ini", TEXT, None),
    ("GP", None, NONE, "Append_File"),
    ("GR", "Render_File", TEXT, "Render_Console"),
    ("GR", None, NONE, "Render_Console"),
    ("GS", "Statistic_File", TEXT, "Statistic_Console"),
    ("GS", None, NONE, "Statistic_Console"),
    ("GW", "Warning_File", TEXT, "Warning_Console"),
    ("GW", None, NONE, "Warning_Console"),
    ("HI", "Include_Header", TEXT, None),
    ("HR", None, NONE, "High_Reproducibility"),
    ("H", "Height", INT, None),
    ("I", "Input_File_Name", TEXT, None),
    ("J", "Jitter_Amount", FLOAT, "Jitter"),
    ("J", None, NONE, "Jitter"),
    ("KC", None, NONE, "Cyclic_Animation"),
    ("KI", "Initial_Clock", FLOAT, None),
    ("KFF", "Final_Frame", INT, None),
    ("KFI", "Initial_Frame", INT, None),
    ("KF", "Final_Clock", FLOAT, None),
    ("KLA", None, NONE, "Clockless_Animation"),
    ("K", "Clock", FLOAT, None),
    ("L", "Library_Path", SPECIAL, None),
    ("MB", "Bounding_Threshold", INT, "Bounding"),
    ("MB", None, NONE, "Bounding"),
    ("MI", "Max_Image_Buffer_Memory", INT, None),
    ("MV", "Version", FLOAT, None),
    ("O", "Output_File_Name", TEXT, None),
    ("P", None, NONE, "Pause_When_Done"),
    ("Q", "Quality", INT, None),
    ("RFI", None, NONE, "Radiosity_From_File"),
    ("RFO", None, NONE, "Radiosity_To_File"),
    ("RF", "Radiosity_File_Name", TEXT, None),
    ("RS", "Render_Block_Step", INT, None),
    ("RP", "Render_Pattern", INT, None),
    ("RTR", None, NONE, "Real_Time_Raytracing"),
    ("RVP", None, NONE, "Radiosity_Vain_Pretrace"),
    ("R", "Antialias_Depth", INT, None),
    ("SC", "Start_Column", FLOAT, None),
    ("SF0", "Subset_Start_Frame", FLOAT, None),
    ("SF", "Subset_Start_Frame", INT, None),
    ("SP", "Preview_Start_Size", INT, None),
    ("SR", "Start_Row", FLOAT, None),
    ("STP", "Frame_Step", INT, None),
    ("SU", None, NONE, "Split_Unions"),
    ("TH", "Dither_Method", SPECIAL, "Dither"),
    ("TH", None, NONE, "Dither"),
    ("UA", None, NONE, "Output_Alpha"),
    ("UD", None, NONE, "Draw_Vistas"),
    ("UF", None, NONE, "Field_Render"),
    ("UL", None, NONE, "Light_Buffer"),
    ("UO", None, NONE, "Odd_Field"),
    ("UR", None, NONE, "Remove_Bounds"),
    ("UV", None, NONE, "Vista_Buffer"),
    ("V", None, NONE, "Verbose"),
    ("WL", "Warning_Level", INT, None),
    ("WT", "Work_Threads", INT, None),
    ("W", "Width", INT, None),
    ("X", "Test_Abort_Count", SPECIAL, "Test_Abort"),
    ("X", None, NONE, "Test_Abort"),
]

# Output_File_Type letters POV-Ray 3.7 for Unix knows (FileTypeTable, no 'S' there),
# and those that can write 16-bit greyscale (+FNG, +FPG).
FILE_TYPES = "TCNJPBEH"
_GREY_TYPES = "NP"
DITHER_METHODS = ("B2", "B3", "B4", "D1", "D2", "FS")
_END = "\x00"  # what the reader returns at the end of the text (C's EOF)


class IniError(ValueError):
    """A scene INI or an option peerfarm will not pass to POV-Ray; the message says what to do."""


@dataclass(frozen=True)
class Setting:
    key: str  # canonical spelling, e.g. "Antialias_Threshold"
    value: str  # normalised as POV-Ray reads it (on/off, whole numbers, number text)
    origin: str  # for messages: "scene.ini line 4", "scene.ini line 4 (+A0.3)"


@dataclass(frozen=True)
class IniReading:
    settings: list[Setting]  # in the order POV-Ray applies them
    notes: list[str]  # what POV-Ray reads differently from how it looks, for the user


# --- values, read the way POV-Ray's C code reads them ---

_C_INT = re.compile(r"[ \t\n\r\f\v]*([+-]?\d+)")
_C_FLOAT = re.compile(r"[ \t\n\r\f\v]*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)")


def number_rest(kind: str, text: str) -> str:
    """What follows the number in an INT or FLOAT value: POV-Ray reads the number and
    ignores that ("640px" -> "px")."""
    match = (_C_INT if kind == INT else _C_FLOAT).match(text)
    return text[match.end() :].strip() if match else ""


def c_int(text: str) -> int | None:
    """sscanf(text, "%d"): the whole number text starts with (trailing text ignored)."""
    match = _C_INT.match(text)
    return int(match[1]) if match else None


def c_float(text: str) -> str | None:
    """sscanf(text, "%lf"), as the number's text (so writing it back reads the same);
    None when text starts with no number. POV-Ray's "inf"/"nan" are not accepted."""
    match = _C_FLOAT.match(text)
    if match is None:
        return None
    number = match[1]
    return re.sub(r"^([+-]?)\.", r"\g<1>0.", number)  # ".3" -> "0.3", same value


def is_true(text: str) -> bool:
    """POV-Ray's IsTrue: the value agrees with on, true, yes or 1 as far as both go
    (so "On", "t", "yes please" and "" are true, "off" and "enabled" false)."""
    lowered = text.lower()
    return any(word[: len(lowered)] == lowered[: len(word)] for word in ("on", "true", "yes", "1"))


def _typed(key: str, kind: str, raw: str, where: str) -> str:
    """`raw` as POV-Ray reads a value of `kind`, normalised; IniError when POV-Ray
    would stop with a parse error."""
    if kind == BOOL:
        return "on" if is_true(raw) else "off"
    if kind == INT:
        number = c_int(raw)
        if number is None:
            raise IniError(
                f"{where}: {key}={raw.strip()}: expected a whole number (POV-Ray stops "
                "reading the INI here with a parse error); fix the value"
            )
        return str(number)
    if kind == FLOAT:
        text = c_float(raw)
        if text is None:
            raise IniError(
                f"{where}: {key}={raw.strip()}: expected a number (POV-Ray stops reading "
                "the INI here with a parse error); fix the value"
            )
        return text
    if kind == TEXT:
        # POV-Ray drops the blanks its look-ahead may have kept at the end of a file name.
        return raw.rstrip(" \t")
    return _special_value(key, raw, where)


def _special_value(key: str, raw: str, where: str) -> str:
    """The keys POV-Ray reads with a handler of their own (ReadSpecialOptionHandler)."""

    def refuse(expected: str) -> IniError:
        return IniError(f"{where}: {key}={raw.strip()}: {expected}; POV-Ray stops here too")

    text = raw.strip()
    if key == "Output_File_Type":  # only the first letter counts in an INI
        if not text or text[0].upper() not in FILE_TYPES:
            raise refuse(
                "expected N (PNG), J (JPEG), T or C (TGA, C compressed), B (BMP), P (PPM), "
                "E (OpenEXR) or H (Radiance HDR)"
            )
        return text[0].upper()
    if key in ("Display_Gamma", "File_Gamma"):
        number = c_float(text) or "0"
        if float(number) > 0:
            return number
        if text.upper() == "SRGB":
            return "sRGB"
        raise refuse("expected sRGB or a number above 0 (e.g. 2.2)")
    if key == "Dither_Method":
        if text.upper() not in DITHER_METHODS:
            raise refuse(f"expected one of {', '.join(DITHER_METHODS)}")
        return text.upper()
    if key == "Declare":
        return _declare(raw, where)
    if key == "Test_Abort_Count":  # the +X switch's parameter
        number = c_int(raw)
        if raw and number is None:
            raise refuse("expected a whole number")
        return str(number or 0)
    # Library_Path, Include_Ini, shell-out commands and their return actions, Palette,
    # Video_Mode: text that ini.py judges.
    return text


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _declare(raw: str, where: str) -> str:
    """Declare=NAME=NUMBER, or NAME="text" for a string; the rest as POV-Ray's handler reads
    it (a number with trailing text counts as that number, no number at all as 0)."""
    name, equals, rest = raw.lstrip("=").partition("=")
    if not rest or not _IDENT.fullmatch(name.strip()):
        raise IniError(
            f"{where}: Declare={raw.strip()}: expected NAME=NUMBER (e.g. Declare=Speed=2.5) "
            "or, quoted, 'NAME=\"text\"'"
        )
    if '"' in rest:
        text = rest.split('"')[1]
        if "'" in text or any(ord(c) < 32 for c in text):
            raise IniError(
                f"{where}: Declare={raw.strip()}: a declared string may not hold quotes or "
                "control characters"
            )
        return f'{name.strip()}="{text}"'
    return f"{name.strip()}={c_float(rest) or '0'}"


# --- the reader: ProcessOptions::ParseFile, step by step ---


class _Reader:
    def __init__(self, text: str, source: str, lines: bool) -> None:
        self.text = text
        self.pos = 0
        self.source = source
        self.lines = lines
        # Where lines break, so naming a setting's line costs a search, not a count
        # through a (possibly 1 MiB) file for each setting.
        self.breaks = [m.start() for m in re.finditer("\n", text)] if lines else []

    def where(self, pos: int) -> str:
        """For messages: "scene.ini line 4" (or just the source, for a one-line option)."""
        if not self.lines:
            return self.source
        return f"{self.source} line {bisect.bisect_left(self.breaks, pos) + 1}"

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else _END

    def get(self) -> str:
        char = self.peek()
        self.pos += 1  # past the end too, like reading EOF; get/peek keep returning _END
        return char

    def skip_blanks(self, newlines: bool) -> None:
        while self.peek() in (" \t\r\n" if newlines else " \t") and self.peek() != _END:
            self.pos += 1

    def rest_of_line(self) -> str:
        """Skip to the next line; what was skipped (without the line break)."""
        end = len(self.text)
        for mark in ("\n", "\r"):
            found = self.text.find(mark, self.pos)
            if 0 <= found < end:
                end = found
        skipped = self.text[self.pos : end]
        self.pos = end + 1
        return skipped

    def word(self) -> str:
        """Parse_INI_String(file): up to a blank, `,;#"'[]=` or the end."""
        start = self.pos
        while self.peek() not in _END + ",;#\"'[]=" and not self.peek().isspace():
            self.pos += 1
        return self.text[start : self.pos]

    def until(self, quote: str) -> str:
        """A quoted string's inside: up to the closing quote (which is skipped) or the end,
        across line breaks, as POV-Ray reads it."""
        found = self.text.find(quote, self.pos)
        end = len(self.text) if found < 0 else found
        inside = self.text[self.pos : end]
        self.pos = end + 1
        return inside

    def value(self, smart: bool) -> str:
        """Parse_INI_String(file, -2, smart): an unquoted value."""
        start = self.pos
        while True:
            char = self.peek()
            if char == _END:
                break
            if smart and char in " \t":
                if not self._value_goes_on():
                    break
                # POV-Ray takes the rest of the line ("an unquoted string with spaces").
                while self.peek() not in _END + ";#\n\r":
                    self.pos += 1
                break
            if char.isspace() or char in ",;#\"'":
                break
            self.pos += 1
        return self.text[start : self.pos]

    def _value_goes_on(self) -> bool:
        """Parse_INI_String_Smartmode at a blank inside a value, including its quirk: the
        look-ahead reads the next word without its first character, so a keyword after a
        blank is seldom recognised and the value runs on to the end of the line."""
        back = self.pos
        try:
            self.skip_blanks(newlines=False)
            char = self.get()
            if char == _END or char in ";#,":
                return False
            if char in "+-":
                if self.get() in string.ascii_letters:  # C's isalpha
                    return False  # a switch follows
                self.pos = back  # else the "word" read below starts at the blank: empty
            return self.word().lower() not in _BY_LOWER
        finally:
            self.pos = back

    def raw_value(self) -> str:
        """Parse_Raw_INI_String: a shell-out command, verbatim up to a comment outside
        quotes or the end of the line."""
        start, quote, escaped = self.pos, "", False
        while (char := self.peek()) not in _END + "\n\r":
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char in "\"'" and quote in ("", char):
                quote = "" if quote else char
            elif char in ";#" and not quote:
                break
            self.pos += 1
        return self.text[start : self.pos]


def read_ini(text: str, source: str, lines: bool = True) -> IniReading:
    """What POV-Ray 3.7 reads from an INI given without a section name, setting by
    setting. Raises IniError (naming `source` and the line) where POV-Ray would stop.
    `lines=False`: messages name only `source` (a submitter's one-line option)."""
    if "\x00" in text:  # (also the reader's end marker)
        raise IniError(f"{source} holds NUL characters: it is not a text INI file")
    reader = _Reader(text.removeprefix("\ufeff"), source, lines)
    settings: list[Setting] = []
    notes: list[str] = []
    while True:
        reader.skip_blanks(newlines=True)
        start = reader.pos
        token = reader.get()
        if token == _END:
            break
        if token == "[":
            label = reader.until("]")
            if reader.text[reader.pos :].strip(" \t\r\n"):
                notes.append(
                    f"{reader.where(start)}: [{label}] starts a named section; POV-Ray reads "
                    "only the settings before the first section of an INI given without a "
                    "section name, and so does peerfarm: the rest of the file is ignored"
                )
            break
        if token in ";#":
            reader.rest_of_line()
        elif token in "+-":
            settings += _switch(reader, token, start)
        elif (token.isascii() and token.isalnum()) or token == "_":  # C's isalnum
            reader.pos = start
            found = _option(reader, start, notes)
            if found is None:  # not Key=Value: POV-Ray reads it as a plain string
                reader.pos = start
                settings += _plain(reader, start, reader.value(smart=True), quoted=False)
            else:
                settings += found
                leftover = reader.rest_of_line().strip(" \t")
                if leftover and leftover[0] not in ";#":
                    notes.append(
                        f"{reader.where(start)}: POV-Ray reads one Key=Value per line and "
                        f"ignores the rest of it, {leftover!r}; so does peerfarm (put it on a "
                        "line of its own if it should count)"
                    )
        elif token in "\"'":
            settings += _plain(reader, start, reader.until(token), quoted=True)
        else:
            # POV-Ray has read this character already and starts the string after it.
            settings += _plain(reader, start, reader.value(smart=True), quoted=False)
    return IniReading(settings, notes)


def _option(reader: _Reader, start: int, notes: list[str]) -> list[Setting] | None:
    """Parse_INI_Option: `Key=Value[, value...]`; None where POV-Ray backtracks (an unknown
    key, no `=`), and the text is then read as a plain string."""
    where = reader.where(start)
    name = _BY_LOWER.get(reader.word().lower())
    if name is None:
        return None
    reader.skip_blanks(newlines=False)
    if reader.get() != "=":
        return None
    reader.skip_blanks(newlines=False)
    kind = KEYWORDS[name]
    key = ALIASES.get(name, name)
    values = []
    if name in SHELL_COMMANDS:
        values.append(reader.raw_value())
    else:
        quote = reader.peek()
        if quote in "\"'":
            reader.pos += 1
            values.append(reader.until(quote))
        else:
            values.append(reader.value(smart=True))
        reader.skip_blanks(newlines=False)
        while reader.peek() == ",":  # more values: Library_Path=a, b
            reader.pos += 1
            reader.skip_blanks(newlines=False)
            quote = reader.peek()
            if quote in "\"'":
                reader.pos += 1
                values.append(reader.until(quote))
            else:
                values.append(reader.value(smart=False))
            reader.skip_blanks(newlines=False)
    if kind == OBSOLETE:
        return [Setting(key, values[-1].strip(), where)]  # ini.py drops it, as POV-Ray 3.7 does
    # A value POV-Ray cannot read stops it: a bad number makes it back up, read
    # "Key=value" as a plain string and stop there because that holds a "=".
    settings = [Setting(key, _typed(key, kind, value, where), where) for value in values]
    for setting, value in zip(settings, values, strict=True):
        rest = number_rest(kind, value) if kind in (INT, FLOAT) else ""
        if rest:
            notes.append(
                f"{where}: POV-Ray reads {key}={setting.value} and ignores the rest of the "
                f"value, {rest!r}; so does peerfarm (put another setting on a line of its own)"
            )
    return settings


def _switch(reader: _Reader, sign: str, start: int) -> list[Setting]:
    """Parse_INI_Switch: one `+X`/`-X` switch, matched against POV-Ray's table in order."""
    letters = reader.word()
    quoted = None
    if reader.peek() in "\"'":
        quote = reader.get()
        quoted = reader.until(quote)
    written = sign + letters + (f'"{quoted}"' if quoted is not None else "")
    where = f"{reader.where(start)} ({written})"
    for command, key, kind, on_off in SWITCHES:
        if not letters.upper().startswith(command):
            continue
        param = letters[len(command) :]
        if quoted is not None:
            if param:
                break  # a quoted value after more letters than the switch has: unknown
            param = quoted
        if (param[:1] > " ") != (kind != NONE):
            continue  # a parameter where none is taken, or none where one is needed
        settings = []
        if on_off is not None:
            settings.append(Setting(on_off, "off" if sign == "-" else "on", where))
        if key is not None:
            settings += _switch_parameter(key, kind, param, where)
        return settings
    raise IniError(
        f"{where}: POV-Ray 3.7 has no switch {written} (it stops reading the INI here); "
        "fix or remove it (docs/povray.md lists the switches)"
    )


def _switch_parameter(key: str, kind: str, param: str, where: str) -> list[Setting]:
    if kind != SPECIAL:
        return [Setting(key, _typed(key, kind, param, where), where)]
    if key == "Output_File_Type":
        # +F<type>[<bits>|G]: the letter, then bits per colour or G for greyscale.
        letter, extra = param[0].upper(), param[1:]
        if letter not in FILE_TYPES:
            raise IniError(
                f"{where}: POV-Ray has no output file type {param[0]!r} (it stops reading "
                "the INI here); use N (PNG), J, T, C, B, P, E or H"
            )
        settings = [Setting(key, letter, where)]
        if extra.upper() == "G" and letter in _GREY_TYPES:
            settings.append(Setting("Grayscale_Output", "on", where))
        elif re.fullmatch(r"\d+", extra):
            settings.append(Setting("Bits_Per_Color", str(int(extra)), where))
        elif extra:
            raise IniError(
                f"{where}: POV-Ray does not understand {extra!r} after +F{param[0]} (it stops "
                "reading the INI here); write bits per colour (+FN16) or G for grey (+FNG)"
            )
        return settings
    if key == "Video_Mode":
        return []  # +D<mode><palette>: the display's kind; render nodes have none
    return [Setting(key, _special_value(key, param, where), where)]


def _plain(reader: _Reader, start: int, text: str, quoted: bool) -> list[Setting]:
    """ProcessUnknownString: a word on its own names the scene (.pov), a library folder
    (ending in /) or another INI file to read."""
    where = reader.where(start)
    if not quoted and "=" in text:
        key = text.partition("=")[0].strip()
        raise IniError(
            f"{where}: {key!r} is not a setting POV-Ray 3.7 knows, so it stops reading the "
            f"INI at {text.strip()!r} with a parse error; fix the name (docs/povray.md "
            "lists the settings)"
        )
    if text.lower().endswith(".pov"):
        return [Setting("Input_File_Name", text, where)]
    if text.endswith("/"):
        return [Setting("Library_Path", text, where)]
    return [Setting("Include_Ini", text, where)]
