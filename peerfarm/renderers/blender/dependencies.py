"""The files a .blend uses, found and re-pointed with Blender Asset Tracer (BAT).

BAT reads .blend files without Blender. `trace` follows the main file and,
recursively, the libraries it links (only the datablocks actually linked),
and lists every external file a datablock uses: images (also sequences,
movies and UDIM tiles), libraries, fonts, sounds, movie clips, cache files
(Alembic/USD), volumes (OpenVDB), IES lights, sequencer strips, and the caches
of modifiers (mesh cache, ocean, fluid, smoke, cloth, dynamic paint, particles).
Packed files are part of the .blend and are not listed.

`rewrite` writes copies of .blend files whose paths point somewhere else, as
BAT's own packer does: each path field is overwritten in place (paths are
fixed-size character arrays in the file), the rest of the file is untouched.
This module knows Blender's files; where the files go in a scene package, and
what is refused, is peerfarm.scenes.blend_files.

BAT 1.x is used (2.x is a different program that runs inside Blender); it
keeps opened files in a process-wide cache, so traces are serialised by a lock.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import shutil
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path

from blender_asset_tracer import blendfile
from blender_asset_tracer.trace import (
    asset_holding_blocks,
    blocks2assets,
    file2blocks,
    file_sequence,
)

# BAT logs a warning for every missing file; peerfarm reports them itself, better worded.
logging.getLogger("blender_asset_tracer").setLevel(logging.ERROR)

_LOCK = threading.Lock()

# Datablock name prefixes (Blender's ID codes) in the words of Blender's interface.
_KINDS = {
    b"IM": "image",
    b"LI": "library",
    b"VF": "font",
    b"SO": "sound",
    b"MC": "movie clip",
    b"CF": "cache file",
    b"VO": "volume",
    b"ME": "mesh",
    b"OB": "object",
    b"LA": "light",
    b"SC": "scene",
}
_MODIFIER = re.compile(r"^(.*)\.modifiers\[(\d+)\]$")
# BAT parses files that may be broken or from a Blender it does not know, and then
# raises many kinds of errors (its own, struct.error, KeyError, AssertionError,
# OSError when zstandard is missing...): any of them means "BAT cannot read this".
_BAT_ERRORS = (Exception,)


class DependencyError(ValueError):
    """A file the .blend uses cannot be taken; the message says which and why."""


class UnreadableBlend(Exception):
    """BAT cannot read a .blend (the main file or a library); str() says why."""


@dataclass(frozen=True)
class Use:
    """One datablock's use of a file."""

    blend: Path  # the .blend holding the datablock (absolute, as Blender resolves it)
    datablock: str  # e.g. "image 'wood.png'", "library 'props.blend'"
    written: str  # the path as the .blend stores it ("//textures/wood.png", "/abs/x.png")
    # Where the path is stored, for `rewrite`: the block's address in the file, and the
    # field holding the whole path (or, for sequencer strips, the folder).
    address: int = field(repr=False, default=0)
    field_name: bytes = field(repr=False, default=b"")
    field_size: int = field(repr=False, default=0)
    folder_only: bool = field(repr=False, default=False)  # the field holds the folder
    rewritable: bool = field(repr=False, default=True)
    # A simulation's cache (point caches, fluid, ocean, geometry nodes bakes): Blender
    # simulates while rendering when it is not there, and writes it.
    cache: bool = False


@dataclass
class Dependency:
    """A file (or sequence, or folder of cache files) that a .blend uses."""

    path: Path  # absolute: a file, a sequence's first file or pattern (* or <UDIM>), a folder
    sequence: bool  # several files: frames, UDIM tiles, cache files
    files: list[Path]  # the files there now (empty: missing)
    uses: list[Use]
    folder: bool = False  # `path` is a folder whose files (in all subfolders) are used
    too_many: bool = False  # the sequence or folder holds more files than were listed

    @property
    def cache(self) -> bool:
        return all(use.cache for use in self.uses)


@dataclass
class Trace:
    main: Path  # the main .blend, absolute
    dependencies: list[Dependency]  # sorted by path
    blends: list[Path]  # every .blend read: the main one, then the libraries


def describe(block_name: bytes, blend: Path) -> str:
    """ "image 'wood.png' in shot.blend" from BAT's block name b"IMwood.png"."""
    code, name = block_name[:2], block_name[2:].decode("utf-8", "replace")
    kind = _KINDS.get(code)
    if kind is None or block_name == b"-unnamed-":
        what = "a datablock"
    elif kind == "object" and (match := _MODIFIER.match(name)):
        what = f"modifier {int(match.group(2)) + 1} of object {match.group(1)!r}"
    else:
        what = f"{kind} {name!r}"
    return f"{what} in {blend.name}"


class _Blocks(file2blocks.BlockIterator):
    """BAT's block iterator, refusing to open what is not a regular file (a pipe
    named as a library would block forever) and recording the files it reads."""

    def __init__(self) -> None:
        super().__init__()
        self.opened: list[Path] = []

    def open_blendfile(self, bfilepath: Path) -> blendfile.BlendFile:
        try:
            mode = os.stat(bfilepath).st_mode
        except OSError as exc:
            raise UnreadableBlend(f"{bfilepath}: {exc.strerror}") from None
        if not stat.S_ISREG(mode):
            raise DependencyError(
                f"{bfilepath} is used as a library but is not a regular file (a device, "
                "pipe or socket); point the library to a .blend file"
            )
        try:
            opened = super().open_blendfile(bfilepath)
        except _BAT_ERRORS as exc:
            if not self.opened:  # the main file
                raise UnreadableBlend(f"{bfilepath.name}: {exc}") from None
            raise DependencyError(
                f"the library {bfilepath} cannot be read as a .blend file ({exc}), so Blender "
                "cannot link from it either: point the library to a good file (Relocate in "
                "the Outliner's Blender File view), or make its datablocks local"
            ) from None
        self.opened.append(Path(bfilepath))
        return opened


def _files(dep_path: Path, sequence: bool, limit: int) -> tuple[list[Path], bool]:
    """The files at a dependency's path now: (up to `limit` files, whether there were more)."""
    if not sequence:
        return ([dep_path] if dep_path.exists() else []), False
    found: list[Path] = []
    try:
        for path in file_sequence.expand_sequence(dep_path):
            if len(found) >= limit:
                return found, True
            found.append(path)
    except file_sequence.DoesNotExist:
        return [], False
    except OSError:  # an unreadable folder on the way
        return found, False
    return found, False


def _use(usage, blend: Path) -> Use:
    written = bytes(usage.asset_path).decode("utf-8", "replace")
    if usage.path_full_field is not None:
        target, folder_only = usage.path_full_field, False
    else:
        target, folder_only = usage.path_dir_field, True
    name = target.name.name_only
    # A disk point cache is reported with the path Blender derives from the cache's
    # *name* field: that field holds no path, and must never be overwritten with one.
    try:
        stored = usage.block.get(name)
    except _BAT_ERRORS:
        stored = None
    if folder_only:
        rewritable = isinstance(stored, bytes)
    else:
        rewritable = isinstance(stored, bytes) and stored == bytes(usage.asset_path)
    return Use(
        blend=blend,
        datablock=describe(usage.block_name, blend),
        written=written,
        address=usage.block.addr_old,
        field_name=name,
        field_size=target.name.array_size,
        folder_only=folder_only,
        rewritable=rewritable,
        # Modifiers' sequences are caches (a Mesh Cache modifier's one file is an input).
        cache=usage.is_sequence and bytes(usage.block_name).startswith(b"OB"),
    )


def trace(main: Path, max_files: int = 10_000) -> Trace:
    """Every file `main` uses, through its libraries, grouped by the path used.

    `max_files` bounds how many files of one sequence or folder are listed.
    Raises UnreadableBlend when BAT cannot read the main file, and DependencyError
    for a library that is not a regular .blend file.
    """
    main = Path(os.path.abspath(main))
    with _LOCK:
        try:
            return _trace(main, max_files)
        except (UnreadableBlend, DependencyError):
            raise
        except _BAT_ERRORS as exc:
            raise UnreadableBlend(f"{main.name}: {type(exc).__name__}: {exc}") from None
        finally:
            blendfile.close_all_cached()


def _trace(main: Path, max_files: int) -> Trace:
    blocks = _Blocks()
    bfile = blocks.open_blendfile(main)
    found: dict[Path, Dependency] = {}
    seen: set[int] = set()
    for block in asset_holding_blocks(blocks.iter_blocks(bfile)):
        for usage in blocks2assets.iter_assets(block):
            key = hash(usage)
            if key in seen:
                continue
            seen.add(key)
            path = Path(usage.abspath)
            dep = found.get(path)
            if dep is None:
                files, more = _files(path, usage.is_sequence, max_files)
                is_folder = usage.is_sequence and path.is_dir()
                dep = found[path] = Dependency(path, usage.is_sequence, files, [], is_folder, more)
            dep.uses.append(_use(usage, Path(os.path.abspath(usage.block.bfile.filepath))))
    blends = [Path(os.path.abspath(p)) for p in blocks.opened]
    return Trace(main, sorted(found.values(), key=lambda d: str(d.path)), blends)


def relative_path(asset: str, blend: str) -> str:
    """Blender's relative path ("//../tex/a.png") from package name `blend` to `asset`."""
    folder = posixpath.dirname(blend) or "."
    return "//" + posixpath.relpath(asset, folder)


def rewrite(
    traced: Trace,
    blend_names: dict[Path, str],
    new_names: dict[Path, str],
    folder: Path,
) -> dict[Path, Path]:
    """Copies of the .blend files whose stored paths must change, in `folder`.

    `blend_names` gives each traced .blend's name in the package, `new_names`
    each dependency's (its `path`: the file, the sequence's first file or
    pattern, or the folder); dependencies without one keep their paths. Every
    other use is pointed, relative to its .blend, at its new name. Returns
    {.blend read: its rewritten copy}; .blend files whose paths all stay as they
    are are not copied.
    """
    changes: dict[Path, list[tuple[Use, str]]] = {}
    for dep in traced.dependencies:
        if dep.path not in new_names:
            continue  # stays as it is (a cache that is not there yet)
        target = new_names[dep.path]
        for use in dep.uses:
            if use.blend not in blend_names:
                continue  # a .blend that is not sent (cannot happen for traced ones)
            new = relative_path(target, blend_names[use.blend])
            if use.folder_only:
                new = relative_path(posixpath.dirname(target) or ".", blend_names[use.blend])
                old = posixpath.dirname(use.written.rstrip("/")) if use.written else ""
                if new.rstrip("/") == old.rstrip("/"):
                    continue
            elif new == use.written:
                continue
            if not use.rewritable:
                raise DependencyError(
                    f"{use.datablock}: {use.written!r} would have to move to {new!r} in the "
                    "scene, and Blender keeps that path in a way peerfarm cannot change; keep "
                    "the file in the same place relative to the .blend that uses it"
                )
            if len(new.encode("utf-8")) >= use.field_size:
                raise DependencyError(
                    f"{use.datablock}: the path {new!r} is too long for Blender "
                    f"(at most {use.field_size - 1} bytes); use shorter folder and file names"
                )
            changes.setdefault(use.blend, []).append((use, new))
    copies: dict[Path, Path] = {}
    with _LOCK:
        for n, (blend, uses) in enumerate(sorted(changes.items())):
            copy = folder / f"{n}-{blend.name}"
            shutil.copyfile(blend, copy)
            try:
                bfile = blendfile.BlendFile(copy, mode="rb+")
            except _BAT_ERRORS as exc:
                raise DependencyError(f"{blend.name}: cannot be rewritten ({exc})") from None
            try:
                for use, new in uses:
                    block = bfile.dereference_pointer(use.address)
                    block.set(use.field_name, new.encode("utf-8"))
            except _BAT_ERRORS as exc:
                raise DependencyError(
                    f"{use.datablock}: its path cannot be rewritten ({type(exc).__name__}: "
                    f"{exc}); keep the file in the same place relative to the .blend"
                ) from None
            finally:
                bfile.close()  # writes the changes (compressed files: recompressed)
            copies[blend] = copy
    return copies
