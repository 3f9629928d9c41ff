"""A submitted .blend and the files it uses, as files of its scene package.

The .blend's folder is the package's top: the .blend keeps its name there, and
every file it uses (found by peerfarm.renderers.blender.dependencies, through
its libraries) inside that folder keeps its place below it. Files from outside
that folder go under `_outside/`, keeping their folders below the nearest
folder they share, so files that refer to each other stay where they expect
each other. Every path that then points somewhere else is rewritten in copies
of the .blend files, relative to the .blend (`//_outside/textures/wood.png`),
so a worker reads only the job's own folder.

Refused, with the datablock that uses the file and what to do
(docs/blender.md): missing files (a missing texture renders a wrong picture),
what is not a regular file (devices, pipes, sockets), and files outside the
.blend's folder that are hidden or in a hidden folder (`~/.ssh/...`) or in a
system folder (`/etc`, `/proc`, ...): those are settings and secrets, never
scene files, and a .blend from somewhere else must not carry them to the farm.
Files taken from outside the folder are listed in a note for the user.

Raises BlendFilesError with the whole message, less the source's name;
package.py adds it and applies the names, sizes and counts rules.
"""

from __future__ import annotations

import os
import posixpath
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePath

OUTSIDE = "_outside"
CACHES = "_caches"  # where simulation caches that are not there are written on the nodes
# Folders of a POSIX system that hold its settings and state, never a scene's files.
SYSTEM_FOLDERS = ("/etc", "/proc", "/sys", "/dev", "/run", "/boot")
_SHOWN = 8  # files named in one message; the rest are counted
_FIX_MISSING = (
    "put each file where the .blend expects it, or open the .blend in Blender and use "
    "File > External Data > Find Missing Files (for a library: Relocate in the Outliner's "
    "Blender File view), or pack the files into the .blend with File > External Data > "
    "Pack Resources; if the .blend does not need a datablock, delete it (File > Clean Up); "
    "then save and submit again"
)


class BlendFilesError(ValueError):
    """The .blend's files cannot be sent; the message says which and what to do."""


@dataclass
class BlendFiles:
    """What goes into the package for one .blend."""

    main: Path  # the file to read for the main .blend: the original or a rewritten copy
    files: list[tuple[str, Path]] = field(default_factory=list)  # (package name, file to read)
    notes: list[str] = field(default_factory=list)


def _within(root: Path, path: Path) -> bool:
    root_s, path_s = os.path.normcase(str(root)), os.path.normcase(str(path))
    try:
        return os.path.commonpath([root_s, path_s]) == root_s
    except ValueError:  # different drives on Windows
        return False


def _listing(items: list[str]) -> str:
    shown = "; ".join(items[:_SHOWN])
    return shown + (f"; and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def _users(dep) -> str:
    """The datablocks that use a dependency, for messages."""
    names = sorted({use.datablock for use in dep.uses})
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _shown(dep) -> str:
    """A dependency as the user knows it: its path, and what the .blend writes if different."""
    written = sorted({use.written for use in dep.uses})
    path = str(dep.path)
    also = [w for w in written if w != path]
    return path + (f" (written {', '.join(repr(w) for w in also)})" if also else "")


def _sensitive(real: Path, real_root: Path) -> str | None:
    """Why a file outside the .blend's folder is not sent, or None. Hidden folders the
    .blend's folder is in too do not count (a project kept under ~/.local is no secret)."""
    try:
        shared = Path(os.path.commonpath([real, real_root]))
    except ValueError:  # another drive
        shared = Path(real.anchor)
    hidden = [part for part in real.relative_to(shared).parts if part.startswith(".")]
    if hidden:
        return f"in a hidden folder or hidden itself ({hidden[0]!r})"
    if sys.platform != "win32":
        text = real.as_posix()
        for folder in SYSTEM_FOLDERS:
            if text == folder or text.startswith(folder + "/"):
                return f"in the system folder {folder}"
    return None


def _anchor_name(anchor: str) -> str:
    """A drive or network share as a folder name: "C:\\" -> "C"."""
    cleaned = "".join(c if c.isalnum() else "_" for c in anchor).strip("_")
    return cleaned or "root"


def _outside_names(folders: list[Path]) -> dict[Path, str]:
    """Names under _outside/ for folders outside the .blend's folder: their paths below
    the parent of the folder they all share, so relative paths among them still hold."""
    names: dict[Path, str] = {}
    by_anchor: dict[str, list[Path]] = {}
    for folder in folders:
        by_anchor.setdefault(folder.anchor, []).append(folder)
    for anchor, group in by_anchor.items():
        common = Path(os.path.commonpath([str(f) for f in group]))
        top = common.parent if common != Path(common.anchor) else common
        prefix = OUTSIDE if len(by_anchor) == 1 else f"{OUTSIDE}/{_anchor_name(anchor)}"
        for folder in group:
            rel = PurePath(os.path.relpath(folder, top)).as_posix()
            names[folder] = posixpath.normpath(posixpath.join(prefix, rel))
    return names


def _unbaked(
    caches: list, blend_names: dict[Path, str], new_names: dict[Path, str], main_name: str
) -> list[str]:
    """Simulation caches that are not there: Blender simulates while rendering and
    writes them. One that would land outside the job's folder on the nodes (an absolute
    path, or one climbing out) is pointed at `_caches/` in it instead (`new_names`)."""
    notes = []
    taken: set[str] = set()
    for dep in caches:
        outside = False
        for use in dep.uses:
            if not use.written.startswith("//") or use.blend not in blend_names:
                outside = True
                continue
            folder = posixpath.dirname(blend_names[use.blend])
            landing = posixpath.normpath(posixpath.join(folder, use.written[2:]))
            outside = outside or landing == ".." or landing.startswith("../")
        where = "in the job's folder"
        if outside:
            name = dep.path.name
            if "*" in name or "<UDIM>" in name:  # a pattern: keep the folder it is in
                name = f"{dep.path.parent.name}/{name}"
            base, n = f"{CACHES}/{name}", 1
            while base.casefold() in taken:
                n += 1
                base = f"{CACHES}/{n}-{name}"
            taken.add(base.casefold())
            new_names[dep.path] = base
            where = f"in the job's folder ({base}) instead of {dep.path}"
        notes.append(
            f"{main_name}: the cache of {_users(dep)} is not there (not baked?); each node "
            f"simulates it while rendering and writes it {where}, which can be slow and, for "
            "simulations that depend on earlier frames, differ between chunks: bake it and "
            "keep the cache beside the .blend for a faithful render"
        )
    return notes


def collect(main: Path, main_name: str, work: Path, max_files: int) -> BlendFiles:
    """The files for the package of `main` (named `main_name` at the package's top).

    Rewritten .blend copies are written into `work`, which the caller keeps
    until it has read them. `max_files` bounds the files of one sequence or folder.
    """
    from peerfarm.renderers.blender.dependencies import (
        DependencyError,
        UnreadableBlend,
        rewrite,
        trace,
    )

    main = Path(os.path.abspath(main))
    try:
        traced = trace(main, max_files=max_files)
    except UnreadableBlend as exc:
        # Not worse than sending the file alone, which is what happens: the node's
        # Blender reads it (and says so if it is no .blend at all).
        return BlendFiles(
            main,
            notes=[
                f"{main_name}: peerfarm could not read which files it uses ({exc}), so it is "
                "sent alone; if it uses textures or other files, pack them into it (File > "
                "External Data > Pack Resources) or submit its folder"
            ],
        )
    except DependencyError as exc:
        raise BlendFilesError(f"{main_name}: {exc}") from None

    missing = [dep for dep in traced.dependencies if not dep.files and not dep.cache]
    if missing:
        listed = [f"{_shown(dep)}, used by {_users(dep)}" for dep in missing]
        count = "a file" if len(missing) == 1 else f"{len(missing)} files"
        raise BlendFilesError(
            f"{main_name} uses {count} that {'is' if len(missing) == 1 else 'are'} missing, "
            f"so the farm would render it wrong (nothing was sent): {_listing(listed)}. "
            f"To fix it: {_FIX_MISSING}"
        )

    root = main.parent
    real_root = root.resolve()
    real_main = main.resolve()
    # Simulation caches that are not there (not baked): Blender simulates while rendering.
    unbaked = [dep for dep in traced.dependencies if not dep.files]
    present = [dep for dep in traced.dependencies if dep.files]
    # Each dependency's folder: the folder it names, or the one its file(s) are in.
    bases = {dep.path: (dep.path if dep.folder else dep.path.parent) for dep in present}
    real_bases = {path: base.resolve() for path, base in bases.items()}
    outside_folders = sorted({b for b in real_bases.values() if not _within(real_root, b)})
    folder_names = _outside_names(outside_folders)
    for real in real_bases.values():
        if real not in folder_names:
            folder_names[real] = PurePath(os.path.relpath(real, real_root)).as_posix()

    def name_in(path: Path, base: Path, real_base: Path) -> str:
        rel = PurePath(os.path.relpath(path, base)).as_posix()
        return posixpath.normpath(posixpath.join(folder_names[real_base], rel))

    found = BlendFiles(main)
    new_names: dict[Path, str] = {}
    taken_from_outside: list[str] = []
    listed: set[tuple[str, Path]] = set()
    for dep in present:
        base, real_base = bases[dep.path], real_bases[dep.path]
        if dep.too_many:
            raise BlendFilesError(
                f"{main_name}: {_shown(dep)}, used by {_users(dep)}, holds more than "
                f"{max_files} files; leave out files the render does not need"
            )
        new_names[dep.path] = name_in(dep.path, base, real_base)
        for path in dep.files:
            try:
                mode = os.stat(path).st_mode
                real = path.resolve()
            except (OSError, RuntimeError) as exc:
                problem = getattr(exc, "strerror", None) or "a link loop"
                raise BlendFilesError(
                    f"{main_name}: {path}, used by {_users(dep)}, cannot be read ({problem}); "
                    "check that it exists and is readable"
                ) from None
            if stat.S_ISDIR(mode) and not dep.sequence:
                raise BlendFilesError(
                    f"{main_name}: {path}, used by {_users(dep)}, is a folder, not a file; "
                    "point the datablock to the file it needs"
                )
            if stat.S_ISDIR(mode):
                continue  # a sequence's pattern matched a folder: its files are listed too
            if not stat.S_ISREG(mode):
                raise BlendFilesError(
                    f"{main_name}: {path}, used by {_users(dep)}, is not a regular file "
                    "(a device, pipe or socket); a scene may hold only files"
                )
            if real == real_main:
                name = main_name  # a library that links back to the main file
            else:
                name = name_in(path, base, real_base)
            if not _within(real_root, real):
                why = _sensitive(real, real_root)
                if why is not None:
                    raise BlendFilesError(
                        f"{main_name}: {_users(dep)} uses {real}, which is outside the .blend's "
                        f"folder and {why}; peerfarm does not send such files (settings and "
                        "secrets, not scene files) to the farm. If the render really needs it, "
                        "copy it next to the .blend and point the .blend to the copy"
                    )
            if (name, path) in listed:
                continue  # also in another sequence or folder
            listed.add((name, path))
            if not _within(real_root, real):
                taken_from_outside.append(f"{real} as {name}")
            found.files.append((name, path))

    # Every .blend read is sent: the main one at the top, libraries where they landed.
    blend_names = {main: main_name}
    for dep in present:
        if dep.path in traced.blends and dep.path != main:
            blend_names[dep.path] = new_names[dep.path]
    found.notes += _unbaked(unbaked, blend_names, new_names, main_name)
    try:
        copies = rewrite(traced, blend_names, new_names, work)
    except DependencyError as exc:
        raise BlendFilesError(f"{main_name}: {exc}") from None
    found.main = copies.get(main, main)
    found.files = [
        (name, copies.get(path, path)) for name, path in found.files if name != main_name
    ]
    if taken_from_outside:
        found.notes.append(
            f"{main_name} uses {len(taken_from_outside)} file(s) from outside its folder; "
            f"they are sent with it: {_listing(taken_from_outside)}"
        )
    return found
