"""Scene packages: what a user submits (a file, a folder, a zip or a tar) as checked files.

Everything a user submits is read and checked before anything is written, so a
hostile or broken archive is refused as a whole: no half-unpacked scene, no file
outside the scene folder. A file's contents are bytes in memory, or, when the
caller gives a spool folder, a path to a file holding them: big files then
stay on disk (a folder's own files where they are, an archive's entries
extracted into the spool). The rules (docs/scene-packages.md):

- every name is a plain relative path that is valid on Windows, macOS and Linux;
- no two names may collide on a case-insensitive file system;
- links inside archives become copies of the file they point to, and only if
  that file is in the package; links pointing out of the package are refused;
- sizes, counts and compression ratios are bounded (`Limits`), checked on the
  sizes an archive declares before reading and on the bytes actually read.
"""

from __future__ import annotations

import io
import lzma
import os
import re
import secrets
import shutil
import stat
import tarfile
import tempfile
import unicodedata
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from peerfarm.disk import long_path
from peerfarm.scenes.detect import (
    RENDERERS,
    DetectError,
    choose_main,
    decode_text,
    ini_input_file,
    pov_includes,
    pov_resources,
)

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

REPACK = "repack the scene with relative paths inside one folder"
# Archive libraries raise many kinds of errors on damaged input; each becomes a
# PackageError naming the archive (and the entry, when one was being read).
_ARCHIVE_ERRORS = (
    OSError,
    EOFError,
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    tarfile.TarError,
    zlib.error,
    lzma.LZMAError,
    NotImplementedError,  # a zip compression method Python cannot read
    RuntimeError,  # zipfile: an encrypted entry
    ValueError,
    UnicodeError,
    TypeError,  # tarfile: a gzip header cut short (found by tests/test_fuzz.py)
)
_DRIVE = re.compile(r"[A-Za-z]:")
# Characters Windows refuses in file names; control characters also garble messages.
_BAD_CHARS = set('<>:"|?*') | {chr(c) for c in range(32)}
_RESERVED = {"con", "prn", "aux", "nul", "conin$", "conout$"} | {
    f"{dev}{n}" for dev in ("com", "lpt") for n in range(1, 10)
}
# Operating systems drop these into folders; they would only confuse the main file choice
# (desktop.ini is an .ini, and macOS's ._name copies look like scene files).
_JUNK = {"thumbs.db", "desktop.ini"}
_CHUNK = MiB
# With a spool folder: a file bigger than this, or one that would take the
# contents held in memory over the budget, stays on disk.
SMALL_FILE_BYTES = MiB
MEMORY_BUDGET = 64 * MiB

#: A file's contents: the bytes, or a file holding exactly them.
FileData = bytes | Path


class PackageError(ValueError):
    """A submitted scene cannot be used; the message names the entry and what to do."""


@dataclass(frozen=True)
class Limits:
    """Bounds on what one scene package may hold; small values make fast tests."""

    max_total_bytes: int = 2 * GiB
    max_files: int = 10_000
    max_file_bytes: int = 1 * GiB
    max_path_chars: int = 200  # leaves room for the folder it lands in (Windows: 260 in all)
    max_ratio: float = 200.0  # deflate tops out near 1032:1; real scene data stays far below 200
    ratio_min_bytes: int = 1 * MiB  # small text files may compress very well; they cannot hurt


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class ScenePackage:
    """A checked scene: relative POSIX paths ("textures/wood.png") to contents
    (bytes, or the path of a file holding them)."""

    files: dict[str, FileData]
    main: str
    renderer: str
    # What the user should know about what was taken (e.g. a .blend's files from
    # outside its folder); shown at submit, not sent.
    notes: tuple[str, ...] = ()


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB"):
        if n < 1024:
            return f"{n:g} {unit}" if unit == "bytes" else f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} GiB"


def _inside(root: Path, path: Path) -> bool:
    """Whether resolved `path` is `root` or under it (case-insensitively where the OS is)."""
    root_s, path_s = os.path.normcase(str(root)), os.path.normcase(str(path))
    try:
        return os.path.commonpath([root_s, path_s]) == root_s
    except ValueError:  # different drives on Windows
        return False


def data_size(data: FileData) -> int:
    return len(data) if isinstance(data, bytes) else data.stat().st_size


def _same_contents(a: FileData, b: FileData) -> bool:
    """Whether two contents are equal, reading files in blocks (never whole)."""
    if isinstance(a, bytes) and isinstance(b, bytes):
        return a == b
    if data_size(a) != data_size(b):
        return False
    with open_data(a) as first, open_data(b) as second:
        while block := first.read(_CHUNK):
            if block != second.read(len(block)):
                return False
    return True


def open_data(data: FileData) -> BinaryIO:
    """A file's contents to read from (bytes, or the file holding them)."""
    return io.BytesIO(data) if isinstance(data, bytes) else open(data, "rb")  # noqa: SIM115


def text_of(data: FileData) -> str:
    """A small text file's contents (an INI)."""
    return decode_text(data if isinstance(data, bytes) else data.read_bytes())


def includes_of(data: FileData) -> list[str]:
    """The `#include` names of a POV-Ray file, reading a big one line by line."""
    if isinstance(data, bytes):
        return pov_includes(decode_text(data))
    with open(data, "rb") as stream:
        return [name for line in stream for name in pov_includes(decode_text(line))]


def resources_of(data: FileData) -> list[str]:
    """The other files a POV-Ray file names (image maps, fonts, ...), by `pov_resources`;
    a big one read line by line (a comment over several lines is read as text there)."""
    if isinstance(data, bytes):
        return pov_resources(decode_text(data))
    with open(data, "rb") as stream:
        return [name for line in stream for name in pov_resources(decode_text(line))]


def _skipped(name: str) -> bool:
    """Hidden files and folders, macOS's __MACOSX copies and OS thumbnail/desktop files."""
    parts = name.split("/")
    return (
        any(part.startswith(".") or part == "__MACOSX" for part in parts)
        or parts[-1].lower() in _JUNK
    )


class _Builder:
    """Collects one package's files, enforcing names, collisions and limits as they arrive."""

    def __init__(
        self, source: str, limits: Limits, noun: str = "entry", spool: Path | None = None
    ) -> None:
        self.source = source
        self.limits = limits
        self.noun = noun
        self.spool = spool
        self.files: dict[str, FileData] = {}
        self.notes: list[str] = []
        self._in_memory = 0  # bytes of contents held in memory
        self._spooled = 0  # files written to the spool folder
        # link name -> (name as written, target as written, target as a package name)
        self._links: dict[str, tuple[str, str, str]] = {}
        # case- and accent-folded path -> (spelling, "file" | "folder"); files and their folders
        self._seen: dict[str, tuple[str, str]] = {}
        self._entries = 0
        self._file_count = 0
        self._declared = 0
        self._read = 0

    def where(self, raw: str) -> str:
        return f"{self.source}: {self.noun} {raw!r}"

    def fail(self, raw: str, problem: str) -> PackageError:
        return PackageError(f"{self.where(raw)} {problem}")

    # -- names -------------------------------------------------------------

    def clean(self, raw: str, *, folder: bool = False) -> str:
        """The safe relative name for `raw` ("" only for a folder entry naming the root)."""
        try:
            raw.encode("utf-8")
        except UnicodeEncodeError:
            raise self.fail(
                raw, "is not valid UTF-8 text; rename it with ordinary characters"
            ) from None
        if raw.startswith(("/", "\\")):
            raise self.fail(raw, f"is an absolute or network path; {REPACK}")
        if _DRIVE.match(raw):
            raise self.fail(raw, f"starts with a drive letter; {REPACK}")
        if "\\" in raw:
            raise self.fail(raw, f"contains a backslash ('/' separates folders); {REPACK}")
        pieces = [part for part in raw.split("/") if part not in ("", ".")]
        if ".." in pieces:
            depth = 0
            for part in pieces:
                depth += -1 if part == ".." else 1
                if depth < 0:
                    raise self.fail(raw, f"points outside the scene folder; {REPACK}")
            raise self.fail(raw, f"uses '..' in its path; {REPACK}")
        for part in pieces:
            self._check_part(raw, part)
        parts = pieces
        name = "/".join(parts)
        if not name and not folder:
            raise self.fail(raw, f"has an empty name; {REPACK}")
        if len(name) > self.limits.max_path_chars:
            raise self.fail(
                raw,
                f"is longer than {self.limits.max_path_chars} characters; "
                "use shorter folder and file names",
            )
        return name

    def _check_part(self, raw: str, part: str) -> None:
        bad = sorted(set(part) & _BAD_CHARS)
        if bad:
            raise self.fail(
                raw,
                f"has a character ({bad[0]!r}) that Windows does not allow in file names; "
                "rename it",
            )
        if part.split(".", 1)[0].rstrip(" ").lower() in _RESERVED:
            raise self.fail(raw, f"uses {part!r}, a name Windows keeps for devices; rename it")
        if part.endswith((" ", ".")):
            raise self.fail(
                raw, "has a name ending in a space or dot, which Windows drops; rename it"
            )
        if len(part.encode("utf-8")) > 255:
            raise self.fail(raw, "has a file or folder name longer than 255 bytes; shorten it")

    def register(self, name: str, raw: str, kind: str) -> None:
        """Claim `name` (and its folders); refuse case collisions and file/folder clashes."""
        parts = name.split("/")
        for i in range(1, len(parts) + 1):
            path = "/".join(parts[:i])
            path_kind = kind if i == len(parts) else "folder"
            # NFC + casefold: what Windows and macOS would treat as one name (macOS also
            # merges composed and decomposed accents).
            key = unicodedata.normalize("NFC", path).casefold()
            seen = self._seen.setdefault(key, (path, path_kind))
            if seen[0] != path:
                raise self.fail(
                    raw,
                    f"collides with {seen[0]!r}: {path!r} and {seen[0]!r} differ only in "
                    "upper/lower case or accent encoding, so they would overwrite each other "
                    "on Windows and macOS; rename one of them",
                )
            if seen[1] != path_kind:
                raise self.fail(raw, f"makes {path!r} both a file and a folder; rename one of them")

    # -- sizes ---------------------------------------------------------------

    def count_entry(self, raw: str) -> None:
        """Every entry an archive lists (folders and skipped ones too) costs time to read."""
        self._entries += 1
        if self._entries > 2 * self.limits.max_files:
            raise PackageError(
                f"{self.source}: lists more than {2 * self.limits.max_files} entries "
                f"(stopped at {raw!r}); leave out files the render does not need"
            )

    def declare(self, raw: str, size: int, compressed: int | None = None) -> None:
        """Check a file's declared size (and compressed size) before reading it."""
        limits = self.limits
        self._file_count += 1
        if self._file_count > limits.max_files:
            raise PackageError(
                f"{self.source}: holds more than {limits.max_files} files (stopped at {raw!r}); "
                "leave out files the render does not need"
            )
        if size > limits.max_file_bytes:
            raise self.fail(
                raw,
                f"is {_size(size)}, more than the {_size(limits.max_file_bytes)} allowed for one "
                "file; make it smaller or leave it out",
            )
        if (
            compressed is not None
            and size > limits.ratio_min_bytes
            and size > compressed * limits.max_ratio
        ):
            ratio = size / max(compressed, 1)
            raise self.fail(
                raw,
                f"expands {ratio:.0f}:1 ({_size(compressed)} to {_size(size)}), more than the "
                f"{limits.max_ratio:g}:1 allowed, so it looks like a zip bomb; "
                "if the file is real, store it uncompressed or in a compressed format such as PNG",
            )
        self._declared += size
        if self._declared > limits.max_total_bytes:
            raise self.fail(
                raw,
                f"takes the scene over {_size(limits.max_total_bytes)} unpacked; "
                "leave out files the render does not need",
            )

    def in_memory(self, size: int) -> bool:
        """Whether a file of `size` bytes is to be held in memory (else on disk)."""
        return self.spool is None or (
            size <= SMALL_FILE_BYTES and self._in_memory + size <= MEMORY_BUDGET
        )

    def read(self, raw: str, stream: BinaryIO, declared: int, *, memory: bool = False) -> FileData:
        """Read one declared file, trusting the declared size only as an upper bound.

        Into memory, or (`in_memory` says no, and `memory` does not insist) into
        a file of the spool folder, whose path is returned.
        """
        spooled = not memory and not self.in_memory(declared)
        chunks = []
        got = 0
        out = None
        if spooled:
            assert self.spool is not None
            self._spooled += 1
            out = open(self.spool / f"{self._spooled}.data", "wb")  # noqa: SIM115
        try:
            while True:
                chunk = stream.read(min(_CHUNK, declared + 1 - got))
                if not chunk:
                    break
                got += len(chunk)
                if got > declared:
                    raise self.fail(
                        raw,
                        f"holds more than the {declared} bytes it declared; the archive is "
                        "damaged or the file changed while being read; pack it again",
                    )
                if out is not None:
                    out.write(chunk)
                else:
                    chunks.append(chunk)
        finally:
            if out is not None:
                out.close()
        self._read += got
        if out is not None:
            return Path(out.name)
        self._in_memory += got
        return b"".join(chunks)

    # -- contents ------------------------------------------------------------

    def add(self, name: str, raw: str, data: FileData) -> None:
        if name in self._links:
            raise self.fail(raw, "appears twice (once as a link); keep one copy and pack again")
        old = self.files.setdefault(name, data)
        if old is not data and not _same_contents(old, data):
            raise self.fail(raw, "appears twice with different contents; keep one and pack again")

    def add_link(self, name: str, raw: str, target_raw: str, base: str) -> None:
        """A link, resolved lexically from folder `base`; copied from its target at `finish`."""
        outside = PackageError(
            f"{self.where(raw)} is a link to {target_raw!r}, outside the scene folder; "
            "replace the link with a copy of the file"
        )
        if not target_raw or target_raw.startswith(("/", "\\")) or _DRIVE.match(target_raw):
            raise outside
        if "\\" in target_raw:
            raise self.fail(
                raw,
                f"is a link to {target_raw!r}, which contains a backslash; "
                "replace the link with a copy of the file",
            )
        stack = base.split("/") if base else []
        for part in target_raw.split("/"):
            if part == "..":
                if not stack:
                    raise outside
                stack.pop()
            elif part not in ("", "."):
                stack.append(part)
        if name in self.files or name in self._links:
            raise self.fail(raw, "appears twice (once as a link); keep one copy and pack again")
        self._links[name] = (raw, target_raw, "/".join(stack))

    def finish(self) -> dict[str, FileData]:
        """Turn links into copies of their targets and return the files, sorted by name."""
        copies = {}
        for name, (raw, target_raw, target) in self._links.items():
            hops = 0
            while target in self._links and hops <= len(self._links):
                target = self._links[target][2]
                hops += 1
            data = self.files.get(target)
            if data is None:
                raise self.fail(
                    raw,
                    f"is a link to {target_raw!r}, which is not a file in the scene; "
                    "replace the link with a copy of the file",
                )
            self._read += data_size(data)
            if self._read > self.limits.max_total_bytes:
                raise self.fail(
                    raw,
                    f"takes the scene over {_size(self.limits.max_total_bytes)} unpacked; "
                    "leave out files the render does not need",
                )
            copies[name] = data
        self.files.update(copies)
        return dict(sorted(self.files.items()))

    def check_ratio(self, raw: str, expanded: int, archive_bytes: int) -> None:
        """The whole archive's ratio: many small bombs add up to one big one."""
        limits = self.limits
        if expanded > limits.ratio_min_bytes and expanded > archive_bytes * limits.max_ratio:
            raise PackageError(
                f"{self.source}: expands more than {limits.max_ratio:g}:1 "
                f"(to {_size(expanded)} at entry {raw!r}), so it looks like a compression bomb; "
                "if the files are real, store them uncompressed"
            )


# -- readers ---------------------------------------------------------------------


def _read_zip(path: Path, b: _Builder) -> None:
    try:
        archive = zipfile.ZipFile(path)
    except _ARCHIVE_ERRORS as exc:
        raise PackageError(
            f"{b.source} is not a readable zip archive ({exc}); check that it was copied completely"
        ) from None
    with archive:
        infos = archive.infolist()
        archive_bytes = path.stat().st_size
        plan: list[tuple[zipfile.ZipInfo, str, bool]] = []
        compressed_total = expanded_total = 0
        # Pass 1: names, kinds and declared sizes of every entry, before any data is read.
        for info in infos:
            raw = info.orig_filename  # before zipfile rewrites separators (OS-dependent)
            b.count_entry(raw)
            mode = (info.external_attr >> 16) if info.create_system == 3 else 0
            kind = stat.S_IFMT(mode)
            is_folder = raw.endswith("/") or kind == stat.S_IFDIR
            name = b.clean(raw, folder=is_folder)
            if not name or _skipped(name):
                continue
            if is_folder:
                b.register(name, raw, "folder")
                continue
            if kind not in (0, stat.S_IFREG, stat.S_IFLNK):
                raise b.fail(
                    raw, "is a device file or pipe; a scene may hold only files and folders"
                )
            if info.flag_bits & 0x1:
                raise b.fail(raw, "is encrypted; pack the scene again without a password")
            b.register(name, raw, "file")
            b.declare(raw, info.file_size, info.compress_size)
            compressed_total += info.compress_size
            expanded_total += info.file_size
            b.check_ratio(raw, expanded_total, archive_bytes)
            plan.append((info, name, kind == stat.S_IFLNK))
        # Entries whose compressed data overlap can expand far beyond any one ratio.
        if compressed_total > archive_bytes:
            raise PackageError(
                f"{b.source}: its entries claim more compressed data than the file holds "
                "(overlapping entries); the archive is damaged or hostile, pack it again"
            )
        # Pass 2: the data, counted as it arrives.
        for info, name, is_link in plan:
            raw = info.orig_filename
            try:
                with archive.open(info) as stream:
                    # A link's target is read as text: always into memory.
                    data = b.read(raw, stream, info.file_size, memory=is_link)
            except PackageError:
                raise
            except _ARCHIVE_ERRORS as exc:
                raise b.fail(
                    raw, f"cannot be read ({exc}); the archive is damaged, pack it again"
                ) from None
            if is_link:
                b.add_link(name, raw, decode_text(data), name.rpartition("/")[0])
            else:
                b.add(name, raw, data)


def _read_tar(path: Path, b: _Builder) -> None:
    archive_bytes = path.stat().st_size
    raw = ""
    try:
        # Stream mode ("r|*"): one pass, every member's data read right after its header.
        with tarfile.open(path, mode="r|*") as archive:
            expanded = 0
            for member in archive:
                raw = member.name
                b.count_entry(raw)
                expanded += member.size
                b.check_ratio(raw, expanded, archive_bytes)
                name = b.clean(raw, folder=member.isdir())
                if not name or _skipped(name):
                    continue
                if member.isdir():
                    b.register(name, raw, "folder")
                elif member.issym() or member.islnk():
                    b.register(name, raw, "file")
                    b.declare(raw, 0)
                    # A symlink's target is relative to its folder, a hard link's to the root.
                    base = name.rpartition("/")[0] if member.issym() else ""
                    b.add_link(name, raw, member.linkname, base)
                elif member.isreg():
                    b.register(name, raw, "file")
                    b.declare(raw, member.size)
                    stream = archive.extractfile(member)
                    assert stream is not None  # a regular member always has data
                    b.add(name, raw, b.read(raw, stream, member.size))
                else:
                    raise b.fail(
                        raw, "is a device file or pipe; a scene may hold only files and folders"
                    )
    except PackageError:
        raise
    except _ARCHIVE_ERRORS as exc:
        at = f" at entry {raw!r}" if raw else ""
        raise PackageError(
            f"{b.source} is not a readable tar archive ({exc}){at}; "
            "check that it was copied completely, or pack it again"
        ) from None


def _stat_file(b: _Builder, raw: str, path: Path, root: Path) -> os.stat_result:
    """Stat a file of a folder, refusing links out of `root` and anything not a regular file."""
    try:
        if path.is_symlink():
            target = path.resolve()
            if not _inside(root, target):
                raise b.fail(
                    raw,
                    f"is a link to {str(target)!r}, outside the scene folder; "
                    "copy the file into the folder instead",
                )
            if target.is_dir():
                raise b.fail(
                    raw,
                    "is a link to a folder, which peerfarm does not follow; "
                    "replace it with the folder itself",
                )
        st = path.stat()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
        problem = getattr(exc, "strerror", None) or "a link loop"
        raise b.fail(
            raw, f"cannot be read ({problem}); check that it exists and is readable"
        ) from None
    if not stat.S_ISREG(st.st_mode):
        raise b.fail(raw, "is not a regular file (a device, pipe or socket); remove it")
    return st


def _read_files(b: _Builder, plan: Iterable[tuple[str, str, Path, int]]) -> None:
    for name, raw, path, size in plan:
        if not b.in_memory(size):
            b.add(name, raw, path)  # a file on disk already: read when it is used
            continue
        try:
            with open(path, "rb") as stream:
                data = b.read(raw, stream, size)
        except OSError as exc:
            raise b.fail(
                raw, f"cannot be read ({exc.strerror}); check that it is readable"
            ) from None
        b.add(name, raw, data)


def _read_folder(root: Path, b: _Builder) -> None:
    real_root = root.resolve()
    plan: list[tuple[str, str, Path, int]] = []
    visited = {os.path.normcase(str(real_root))}
    pending: list[tuple[Path, list[str]]] = [(root, [])]
    # Pass 1: walk and stat everything (links, kinds, declared sizes) before reading.
    while pending:
        folder, parts = pending.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            shown = "/".join(parts) or "."
            raise PackageError(
                f"{b.source}: cannot list folder {shown!r} ({exc.strerror}); check its permissions"
            ) from None
        for entry in entries:
            if _skipped(entry.name):
                continue
            raw = "/".join([*parts, entry.name])
            name = b.clean(raw)
            path = Path(entry.path)
            if not entry.is_symlink() and entry.is_dir():
                # Resolving catches Windows junctions, which are not reported as symlinks.
                try:
                    real = path.resolve()
                except (OSError, RuntimeError):
                    raise b.fail(raw, "cannot be read (a link loop); remove the link") from None
                if not _inside(real_root, real):
                    raise b.fail(
                        raw,
                        f"leads to {str(real)!r}, outside the scene folder; "
                        "copy its files into the folder instead",
                    )
                if os.path.normcase(str(real)) in visited:
                    raise b.fail(raw, "leads back to a folder already read; remove the link")
                visited.add(os.path.normcase(str(real)))
                b.register(name, raw, "folder")
                pending.append((path, [*parts, entry.name]))
                continue
            st = _stat_file(b, raw, path, real_root)
            b.register(name, raw, "file")
            b.declare(raw, st.st_size)
            plan.append((name, raw, path, st.st_size))
    _read_files(b, plan)


def _read_blend(path: Path, main: str, b: _Builder) -> None:
    """A .blend and every file it uses, its paths rewritten where files moved
    (peerfarm.scenes.blend_files, docs/blender.md)."""
    from peerfarm.scenes.blend_files import BlendFilesError, collect

    with tempfile.TemporaryDirectory(prefix="peerfarm-blend-") as work:
        try:
            found = collect(path, main, Path(work), b.limits.max_files)
        except BlendFilesError as exc:
            raise PackageError(str(exc)) from None
        for name, disk in [(main, found.main), *found.files]:
            if name != main:
                name = b.clean(name)
                b.register(name, name, "file")
            try:
                size = disk.stat().st_size
            except OSError as exc:
                raise b.fail(
                    name, f"cannot be read ({exc.strerror}); check that it is readable"
                ) from None
            b.declare(name, size)
            if Path(work) in disk.parents:  # a rewritten copy: read it before it goes
                with open(disk, "rb") as stream:
                    b.add(name, name, b.read(name, stream, size))
            else:
                _read_files(b, [(name, name, disk, size)])
        b.notes.extend(found.notes)


def _read_single(path: Path, b: _Builder) -> str:
    """One scene file, plus the .pov an .ini names and the #include files beside it,
    or the files a .blend uses."""
    folder = path.parent
    real_folder = folder.resolve()
    main = b.clean(path.name)
    b.register(main, path.name, "file")
    if main.lower().endswith(".blend"):
        _read_blend(path, main, b)
        return main
    st = path.stat()
    b.declare(path.name, st.st_size)
    _read_files(b, [(main, path.name, path, st.st_size)])

    def companion(rel: str) -> str | None:
        """Add file `rel` from beside the main file if it is there; its name, or None."""
        try:
            name = b.clean(rel)
        except PackageError:
            return None
        if name in b.files:
            return name
        candidate = folder.joinpath(*name.split("/"))
        if not candidate.is_file():
            return None
        # Resolve the whole path: a linked folder on the way could lead out, too.
        if not _inside(real_folder, candidate.resolve()):
            raise b.fail(
                rel,
                "is reached through a link that leads outside the scene's folder; "
                "copy the file into the folder instead",
            )
        cst = _stat_file(b, rel, candidate, real_folder)
        b.register(name, rel, "file")
        b.declare(rel, cst.st_size)
        _read_files(b, [(name, rel, candidate, cst.st_size)])
        return name

    def refuse_outside(include: str, by: str, verb: str = "includes") -> None:
        """An include (or image map, font, ...) that is a file on this machine but
        outside the scene's folder (`../common/look.inc`, `/home/me/lib.inc`) is not
        sent: POV-Ray would fail on every node with "Cannot open include file", three
        times, and fail the job."""
        target = Path(include)
        if not target.is_absolute():
            target = folder / target
        try:
            real = target.resolve()
            if not real.is_file() or _inside(real_folder, real):
                return
            common = Path(os.path.commonpath([real_folder, real]))
        except (OSError, ValueError):  # unreadable, or another drive: no folder holds both
            common = None
        both = f"a folder that holds both ({common})" if common else "one folder holding both"
        raise PackageError(
            f"{path.name}: {by} {verb} {include!r}, which is outside the scene's folder "
            f"({real_folder}), so the nodes would not get it; submit {both} instead of the "
            "file, or copy it into the scene's folder and include it by a name there"
        )

    queue = [main]
    if main.lower().endswith(".ini"):
        named = ini_input_file(text_of(b.files[main]))
        if named is None:
            raise b.fail(
                path.name,
                "names no Input_File_Name; add one naming the .pov scene, or submit the .pov",
            )
        found = companion(named)
        if found is None:
            raise b.fail(
                path.name,
                f"names Input_File_Name {named!r}, which is not a file beside it; use a "
                "relative path to a file in the same folder, or submit the whole folder",
            )
        queue = [found]
    # Follow #include chains, and take the image maps, fonts, ... the files name;
    # those not found beside the scene are POV-Ray's own library files (colors.inc,
    # timrom.ttf, ...), which every POV-Ray install has, unless they are files of this
    # machine outside the scene's folder.
    done: set[str] = set()
    while queue:
        name = queue.pop()
        if name in done:
            continue
        done.add(name)
        if name.lower().endswith((".pov", ".inc", ".mcr")):
            data = b.files[name]
            named = [(n, "includes") for n in includes_of(data)]
            named += [(n, "uses") for n in resources_of(data)]
            for other, verb in named:
                found = companion(other)
                if found is not None:
                    queue.append(found)
                else:
                    refuse_outside(other, name, verb)
    return main


def _kind_of(path: Path) -> str:
    lower = path.name.lower()
    if lower.endswith(".zip"):
        return "zip"
    if lower.endswith((".tar", ".tar.gz", ".tgz")):
        return "tar"
    return "file"


def load_package(
    path: Path,
    *,
    renderer: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
    spool: Path | None = None,
) -> ScenePackage:
    """Read a scene file, folder, .zip or .tar(.gz) into a checked `ScenePackage`.

    Without `spool`, every file's contents are bytes in memory. With `spool` (an
    empty folder the caller keeps while it uses the package), files over
    SMALL_FILE_BYTES, and any beyond MEMORY_BUDGET in all, are paths instead:
    a folder's or single file's own path, or a copy of an archive entry in
    `spool`. Raises PackageError, whose message names the file or entry and what to do.
    """
    path = Path(path)
    if renderer is not None and renderer not in RENDERERS:
        raise PackageError(f"unknown renderer {renderer!r}; choose one of: {', '.join(RENDERERS)}")
    source = path.name or path.resolve().name or str(path)
    main = None
    try:
        if path.is_dir():
            b = _Builder(source + "/", limits, noun="file", spool=spool)
            _read_folder(path, b)
        elif path.is_file():
            kind = _kind_of(path)
            b = _Builder(source, limits, noun="entry" if kind != "file" else "file", spool=spool)
            if kind == "zip":
                _read_zip(path, b)
            elif kind == "tar":
                _read_tar(path, b)
            else:
                main = _read_single(path, b)
        elif path.exists():
            raise PackageError(f"{path} is not a file or a folder; submit a scene file or folder")
        else:
            raise PackageError(f"{path} does not exist; check the path")
    except OSError as exc:  # the path itself vanished or is unreadable
        raise PackageError(
            f"cannot read {path} ({exc.strerror}); check that it is readable"
        ) from None
    files = b.finish()
    try:
        renderer, main = choose_main(files, renderer, b.source, main)
    except DetectError as exc:
        raise PackageError(str(exc)) from None
    return ScenePackage(files=files, main=main, renderer=renderer, notes=tuple(b.notes))


def unpack_to(package: ScenePackage, dest: Path, *, limits: Limits = DEFAULT_LIMITS) -> None:
    """Write the package's files under `dest`, which must not exist or be an empty folder.

    All names are checked again first (a package may be built by hand, or come from
    a peer); files are written into a fresh folder beside `dest` that is renamed to
    `dest` at the end, so on any error nothing is left behind. Raises PackageError.
    """
    dest = Path(dest)
    b = _Builder(f"scene for {dest}", limits)
    for raw in package.files:
        name = b.clean(raw)
        if name != raw:
            raise b.fail(raw, f"is not in clean relative form (would be {name!r}); {REPACK}")
        b.register(name, raw, "file")
        try:
            b.declare(raw, data_size(package.files[raw]))
        except OSError as exc:
            raise b.fail(raw, f"cannot be read ({exc.strerror or exc})") from None
    if package.main not in package.files:
        raise PackageError(
            f"scene for {dest}: the main file {package.main!r} is not in the package"
        )
    # The renderer is not checked here: unpacking is the same for every renderer,
    # third-party plugins included (workers unpack packages of any renderer).
    try:
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise PackageError(f"{dest} already exists and is not empty; choose a new folder")
        dest.parent.mkdir(parents=True, exist_ok=True)
        # Windows: the \\?\ form, so a scene's paths (up to 200 characters) fit under a
        # data folder of any length (MAX_PATH is 260 for the whole path).
        staging = Path(long_path(dest.parent / f".{dest.name}.{secrets.token_hex(4)}.partial"))
        staging.mkdir()
    except OSError as exc:
        raise PackageError(
            f"cannot create {dest} ({exc.strerror}); check permissions or choose another folder"
        ) from None
    try:
        real_staging = staging.resolve()
        for name, data in package.files.items():
            target = staging.joinpath(*name.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            # Belt and braces: names were checked, but never write where a resolved path escapes.
            if not _inside(real_staging, target.parent.resolve()):
                raise b.fail(name, "would be written outside the scene folder; not unpacked")
            with open(target, "xb") as stream:  # "x": never overwrite, even on a name clash
                if isinstance(data, bytes):
                    stream.write(data)
                else:
                    with open(data, "rb") as source:  # in blocks: files may be big
                        shutil.copyfileobj(source, stream, _CHUNK)
        if dest.exists():
            dest.rmdir()  # empty (checked above); fails, safely, if something appeared since
        staging.rename(long_path(dest))
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise PackageError(
            f"cannot unpack the scene into {dest} ({exc.strerror or exc}); "
            "check free space and permissions, or choose another folder"
        ) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
