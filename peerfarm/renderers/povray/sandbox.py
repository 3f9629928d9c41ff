"""Keeping a POV-Ray process to the job's own folder.

A scene is a program: `#fopen` reads and writes files, `#include` reads them, and
an INI can run commands. POV-Ray 3.7 for Unix documents I/O restrictions in
povray.conf, but its parser never applies the [File I/O Security] level
(vfe/unix/unixoptions.cpp compares with `!=` where it means `==`, so the level
stays "unset"), so file access is not restricted at all: a scene can read
/etc/passwd and overwrite ~/.bashrc. Only the [Shellout Security] setting works.

So peerfarm confines POV-Ray with the operating system: on Linux with Landlock
(kernel 5.13 and later), the renderer process may read the system's program and
POV-Ray files, read and write its job folder, and nothing else. The povray.conf
it gets still forbids shell-outs and lists the same folders, for any POV-Ray
build whose own restrictions do work. Where Landlock is missing, the plugin does
not offer POV-Ray at all (`unavailable_reason`), rather than run scenes from
other people with the node user's full rights.
"""

from __future__ import annotations

import ctypes
import os
import re
import stat
import struct
import sys
from collections.abc import Iterable
from pathlib import Path

# Landlock's system calls have the same numbers on every architecture that has them.
_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_PDEATHSIG, _PR_SET_NO_NEW_PRIVS = 1, 38

# Filesystem access rights (linux/landlock.h), by the ABI version that added them.
EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR = 1 << 4, 1 << 5, 1 << 6, 1 << 7
MAKE_REG, MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK, MAKE_SYM = 1 << 8, 1 << 9, 1 << 10, 1 << 11, 1 << 12
REFER, TRUNCATE, IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_ABI_RIGHTS = {1: (1 << 13) - 1, 2: REFER, 3: TRUNCATE, 5: IOCTL_DEV}
_FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV
READ = READ_FILE | READ_DIR
WRITE = WRITE_FILE | REMOVE_DIR | REMOVE_FILE | MAKE_DIR | MAKE_REG | REFER | TRUNCATE

# What any dynamically linked program needs to start, besides its own files.
_SYSTEM_DIRS = ("/usr", "/lib", "/lib32", "/lib64", "/libx32", "/sys/devices/system/cpu")
_SYSTEM_FILES = ("/etc/ld.so.cache", "/proc/sys/vm/overcommit_memory", "/etc/localtime")

#: POV-Ray versions whose per-user settings folder ($HOME/.povray/X.Y) we prepare.
VERSION_FOLDERS = ("3.7", "3.8")


class SandboxError(OSError):
    """The renderer cannot be confined here; the message says why."""


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def landlock_abi() -> int:
    """The Landlock ABI version of this kernel, or 0 when there is none."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        version = _libc().syscall(
            _CREATE_RULESET, None, ctypes.c_size_t(0), _CREATE_RULESET_VERSION
        )
    except (OSError, AttributeError):
        return 0
    return max(int(version), 0)


def unavailable_reason() -> str | None:
    """Why POV-Ray cannot be confined on this machine, or None when it can."""
    if not sys.platform.startswith("linux"):
        return (
            f"peerfarm confines POV-Ray with Linux's Landlock, and this is {sys.platform}; "
            "POV-Ray's own file restrictions do not work, so scenes from other people "
            "are not rendered here"
        )
    if landlock_abi() < 1:
        return (
            "this Linux kernel does not offer Landlock (it needs 5.13 or later with "
            "Landlock enabled, e.g. lsm=landlock,...), which peerfarm uses to keep POV-Ray "
            "inside the job's folder; POV-Ray's own file restrictions do not work"
        )
    return None


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class Confinement:
    """A Landlock ruleset built in the parent and applied in the renderer child.

    Building it opens every allowed path in the parent, where errors can be
    reported; the child only calls `apply` (in `subprocess.Popen`'s
    `preexec_fn`) between fork and exec, so the rules hold from POV-Ray's first
    instruction and for anything it might start.
    """

    def __init__(self) -> None:
        abi = landlock_abi()
        if abi < 1:
            raise SandboxError(unavailable_reason() or "Landlock is not available")
        self.handled = 0
        for version, rights in _ABI_RIGHTS.items():
            if abi >= version:
                self.handled |= rights
        self._libc = _libc()
        attr = ctypes.c_uint64(self.handled)
        fd = self._libc.syscall(_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(8), 0)
        if fd < 0:
            raise SandboxError(
                f"cannot create a Landlock ruleset: {os.strerror(ctypes.get_errno())}"
            )
        self.fd = int(fd)
        self._parent = os.getpid()

    def allow(self, path: Path | str, rights: int) -> bool:
        """Allow `rights` on `path` (and below, for a folder); False when it does not exist."""
        try:
            target = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            if not stat.S_ISDIR(os.fstat(target).st_mode):
                rights &= _FILE_RIGHTS  # Landlock refuses folder rights on a file
            rule = _PathBeneath(rights & self.handled, target)
            if self._libc.syscall(_ADD_RULE, self.fd, _RULE_PATH_BENEATH, ctypes.byref(rule), 0):
                error = os.strerror(ctypes.get_errno())
                raise SandboxError(f"cannot allow access to {path}: {error}")
        finally:
            os.close(target)
        return True

    def apply(self) -> None:
        """In the child, between fork and exec: restrict this process for good.

        Runs in a forked copy of the parent, so it only makes system calls and, on
        failure, reports and exits: an exception here would be hard to read.
        """
        libc = self._libc
        # Die with the wrapper even when it is killed with SIGKILL.
        libc.prctl(_PR_SET_PDEATHSIG, 9, 0, 0, 0)
        if os.getppid() != self._parent:
            os._exit(1)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) or libc.syscall(_RESTRICT_SELF, self.fd, 0):
            os.write(2, b"peerfarm-povray: error: cannot confine povray with Landlock\n")
            os._exit(126)

    def close(self) -> None:
        os.close(self.fd)


def elf_interpreter(program: Path) -> str | None:
    """The dynamic loader a Linux program names (its PT_INTERP), or None."""
    try:
        with open(program, "rb") as f:
            head = f.read(64)
            if len(head) < 52 or head[:4] != b"\x7fELF" or head[4] not in (1, 2):
                return None
            wide, order = head[4] == 2, "<" if head[5] == 1 else ">"
            if wide:
                (phoff,) = struct.unpack_from(order + "Q", head, 32)
                phentsize, phnum = struct.unpack_from(order + "HH", head, 54)
            else:
                (phoff,) = struct.unpack_from(order + "I", head, 28)
                phentsize, phnum = struct.unpack_from(order + "HH", head, 42)
            for index in range(min(phnum, 256)):
                f.seek(phoff + index * phentsize)
                header = f.read(phentsize)
                if wide:
                    p_type, _, p_offset, _, _, p_size = struct.unpack_from(order + "IIQQQQ", header)
                else:
                    p_type, p_offset, _, _, p_size = struct.unpack_from(order + "IIIII", header)
                if p_type == 3:  # PT_INTERP
                    f.seek(p_offset)
                    name = f.read(min(p_size, 4096)).split(b"\0", 1)[0]
                    return name.decode("utf-8", "replace") or None
    except (OSError, struct.error):
        return None
    return None


def povray_library_paths(povray: Path) -> list[Path]:
    """Where this POV-Ray installation keeps its standard include files.

    Read from the installation's own povray.ini (the one POV-Ray would read when
    nothing else is given), falling back to PREFIX/share/povray-X.Y/include.
    """
    prefix = povray.resolve().parent.parent
    found: list[Path] = []
    for version in VERSION_FOLDERS:
        for etc in (prefix / "etc", Path("/etc"), Path("/usr/local/etc")):
            ini = etc / "povray" / version / "povray.ini"
            try:
                text = ini.read_text("utf-8", errors="replace")
            except OSError:
                continue
            for match in re.finditer(r'(?im)^\s*library_path\s*=\s*"?([^";\r\n]+)', text):
                path = Path(match[1].strip())
                if path.is_absolute() and path.is_dir() and path not in found:
                    found.append(path)
        include = prefix / "share" / f"povray-{version}" / "include"
        if include.is_dir() and include not in found:
            found.append(include)
    return found


def povray_conf(work_dir: Path, library_paths: Iterable[Path], settings_home: Path) -> str:
    """A user-level povray.conf: no shell-outs; files only in the job folder, the
    includes and peerfarm's settings (the INI it writes)."""
    lines = [
        "; Written by peerfarm. POV-Ray 3.7 for Unix ignores the [File I/O Security]",
        "; level (a parsing bug), so peerfarm also confines POV-Ray with Landlock.",
        "[File I/O Security]",
        "restricted",
        "[Shellout Security]",
        "forbidden",
        "[Permitted Paths]",
        *(f'read* = "{path}"' for path in (*library_paths, settings_home)),
        f'read+write* = "{work_dir}"',
    ]
    return "\n".join(lines) + "\n"


def write_settings_home(home: Path, conf: str, base_ini: str) -> Path:
    """Fill a private HOME with POV-Ray's per-user settings; the path of the base INI.

    HOME is a folder of its own, outside the job folder, so that a scene (which may
    write files in its folder) cannot rewrite the settings of later renders.
    """
    for version in VERSION_FOLDERS:
        folder = home / ".povray" / version
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "povray.conf").write_text(conf, encoding="utf-8")
    base = home / "base.ini"
    base.write_text(base_ini, encoding="utf-8")
    return base


def clean_environment(home: Path, temp: Path, base_ini: Path) -> dict[str, str]:
    """The only environment POV-Ray gets: nothing of the node's secrets or settings.

    POVINI names peerfarm's base INI, which also keeps POV-Ray from reading a
    povray.ini the scene folder might contain.
    """
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(home),
        "TMPDIR": str(temp),
        "TMP": str(temp),
        "TEMP": str(temp),
        "POV_TEMP_DIR": str(temp),
        "LANG": "C.UTF-8",
        "POVINI": str(base_ini),
    }
    if sys.platform == "win32" and "SYSTEMROOT" in os.environ:
        env["SystemRoot"] = os.environ["SYSTEMROOT"]
    return env


def confine_povray(
    povray: Path, work_dir: Path, settings_home: Path, library_paths: Iterable[Path]
) -> Confinement:
    """The rules for one POV-Ray run: read the system and POV-Ray, write only `work_dir`."""
    confinement = Confinement()
    try:
        for folder in (*_SYSTEM_DIRS, *library_paths, povray.resolve().parent.parent):
            confinement.allow(folder, READ)
        for folder in VERSION_FOLDERS:
            confinement.allow(Path("/etc/povray") / folder, READ)
        for file in _SYSTEM_FILES:
            confinement.allow(file, READ_FILE)
        confinement.allow("/dev/null", READ_FILE | WRITE_FILE)
        confinement.allow(settings_home, READ)
        # Execute only POV-Ray itself (and its loader): a shell-out has nothing to run.
        confinement.allow(povray.resolve(), READ_FILE | EXECUTE)
        interpreter = elf_interpreter(povray.resolve())
        if interpreter is None or not confinement.allow(interpreter, READ_FILE | EXECUTE):
            for folder in _SYSTEM_DIRS:  # not ELF (a script?): let it run what it needs
                confinement.allow(folder, READ | EXECUTE)
        confinement.allow(work_dir, READ | WRITE)
    except BaseException:
        confinement.close()
        raise
    return confinement
