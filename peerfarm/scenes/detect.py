"""Which renderer a scene package is for, and which of its files is the main scene.

Pure functions on names and bytes, so they are tested with plain values (a
file's contents may also be given as the path of a file holding them). They
raise `DetectError` with the whole user-facing message; `package.py` turns it
into a `PackageError` (this module imports nothing from there, to stay a leaf).
The rules are explained to users in docs/scene-packages.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

RENDERERS = ("builtin", "povray", "blender")
# Same value as peerfarm.renderers.builtin.scene.FORMAT (a test checks it); not
# imported, because importing the builtin renderer pulls in NumPy.
BUILTIN_FORMAT = "peerfarm-scene/1"
# Builtin scenes are at most 256 KiB; a bigger JSON file is some other data, and
# parsing it only to find out would cost time and memory.
MAX_SNIFF_BYTES = 1024 * 1024

_HOW_TO_CHOOSE = "pass --renderer builtin, povray or blender"
_KINDS = (
    "a .pov or .ini file (POV-Ray), a .blend file (Blender), "
    f'or a .json file with "format": "{BUILTIN_FORMAT}" (builtin)'
)


class DetectError(ValueError):
    """No main scene file could be chosen; the message says what to do."""


def _suffix(name: str) -> str:
    base = name.rsplit("/", 1)[-1]
    return base.rsplit(".", 1)[-1].lower() if "." in base else ""


def _is_builtin_scene(data: bytes | Path) -> bool:
    if isinstance(data, Path):
        try:
            if data.stat().st_size > MAX_SNIFF_BYTES:
                return False
            data = data.read_bytes()
        except OSError:
            return False
    if len(data) > MAX_SNIFF_BYTES:
        return False
    try:
        parsed = json.loads(data)
    except (ValueError, RecursionError):  # not JSON, bad UTF-8, or absurdly nested
        return False
    return isinstance(parsed, dict) and parsed.get("format") == BUILTIN_FORMAT


def renderer_of(name: str, data: bytes | Path) -> str | None:
    """The renderer a single file is a main scene for, or None."""
    suffix = _suffix(name)
    if suffix == "blend":
        return "blender"
    if suffix in ("pov", "ini"):
        return "povray"
    if suffix == "json" and _is_builtin_scene(data):
        return "builtin"
    return None


def _candidates(renderer: str, files: Mapping[str, bytes | Path]) -> list[str]:
    return sorted(name for name, data in files.items() if renderer_of(name, data) == renderer)


def _listing(names: list[str], most: int = 10) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def _pick(renderer: str, names: list[str], source: str) -> str:
    """The shallowest candidate; for POV-Ray an .ini beats a .pov at the same level."""
    top = min(name.count("/") for name in names)
    level = [name for name in names if name.count("/") == top]
    if renderer == "povray":
        inis = [name for name in level if _suffix(name) == "ini"]
        level = inis or level
    if len(level) == 1:
        return level[0]
    if renderer == "povray":
        hint = (
            "submit the main .pov or .ini file on its own, or keep one .ini "
            "(naming the scene with Input_File_Name) at the top of the folder"
        )
    else:
        hint = "submit the main file on its own, or keep just one at the top of the folder"
    raise DetectError(
        f"{source}: several files could be the main {renderer} scene: {_listing(level)}; {hint}"
    )


def choose_main(
    files: Mapping[str, bytes | Path],
    renderer: str | None,
    source: str,
    main: str | None = None,
) -> tuple[str, str]:
    """(renderer, main file) for a package; `main` is given when the user named one file."""
    if renderer is not None and renderer not in RENDERERS:
        raise DetectError(f"unknown renderer {renderer!r}; choose one of: {', '.join(RENDERERS)}")
    if main is not None:
        found = renderer or renderer_of(main, files[main])
        if found is None:
            raise DetectError(
                f"{source}: not a scene file peerfarm recognises; submit {_KINDS}, "
                f"or {_HOW_TO_CHOOSE}"
            )
        return found, main
    if renderer is None:
        found_kinds = {r: names for r in RENDERERS if (names := _candidates(r, files))}
        if not found_kinds:
            raise DetectError(
                f"{source}: no scene file found among {_listing(sorted(files)) or 'no files'}; "
                f"a scene needs {_KINDS}"
            )
        if len(found_kinds) > 1:
            mixed = "; ".join(f"{r}: {_listing(names, 3)}" for r, names in found_kinds.items())
            raise DetectError(
                f"{source}: holds scenes for several renderers ({mixed}); {_HOW_TO_CHOOSE}"
            )
        ((renderer, names),) = found_kinds.items()
        return renderer, _pick(renderer, names, source)
    names = _candidates(renderer, files)
    if not names and renderer == "builtin":
        # Told it is a builtin scene: a JSON file without the "format" tag still counts.
        names = sorted(name for name in files if _suffix(name) == "json")
    if names:
        return renderer, _pick(renderer, names, source)
    if len(files) == 1:  # the user said which renderer; the only file must be its scene
        return renderer, next(iter(files))
    raise DetectError(
        f"{source}: no {renderer} scene file found among {_listing(sorted(files)) or 'no files'}; "
        f"a scene needs {_KINDS}"
    )


_INI_INPUT = re.compile(
    r'^[ \t]*input_file_name[ \t]*=[ \t]*(?:"([^"\n]*)"|([^;\n]*?))[ \t]*(?:;.*)?$',
    re.IGNORECASE | re.MULTILINE,
)
_POV_INCLUDE = re.compile(r'#[ \t]*include[ \t]+"([^"\n]+)"')
# Quoted names with the extension of a file POV-Ray reads besides its includes: image
# and height-field maps, fonts, density files, files of #declare'd include names.
_POV_RESOURCE = re.compile(
    r'"([^"\n]{1,255}\.(?:png|jpe?g|tga|tiff?|exr|hdr|ppm|pgm|gif|bmp|iff|ttf|otf|df3'
    r'|inc|pov|mcr))"',
    re.IGNORECASE,
)
_POV_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.DOTALL)


def decode_text(data: bytes) -> str:
    """Scene text as str: UTF-8 if it is, else Latin-1 (never fails; names stay ASCII-exact)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def ini_input_file(text: str) -> str | None:
    """The scene a POV-Ray .ini names (the last one wins, as in POV-Ray): with
    Input_File_Name, +I or a lone `scene.pov`, read as POV-Ray reads it."""
    # Imported here: the POV-Ray plugin imports this module.
    from peerfarm.renderers.povray.ini_syntax import IniError, read_ini

    try:
        named = [s.value for s in read_ini(text, "ini").settings if s.key == "Input_File_Name"]
        return named[-1] if named and named[-1] else None
    except IniError:
        pass  # the submit's check reports the INI's error; find the scene all the same
    found = None
    for match in _INI_INPUT.finditer(text):
        value = match.group(1) if match.group(1) is not None else match.group(2)
        if value:
            found = value
    return found


def pov_includes(text: str) -> list[str]:
    """File names in `#include "..."` lines (string expressions are not evaluated)."""
    return _POV_INCLUDE.findall(text)


def pov_resources(text: str) -> list[str]:
    """Quoted file names outside comments that look like files a POV-Ray scene reads
    (`image_map { png "tex/wood.png" }`, `ttf "logo.ttf"`, `df3 "smoke.df3"`), by
    their extension; includes among them too."""
    return _POV_RESOURCE.findall(_POV_COMMENT.sub("", text))
