"""What a node advertises of its machine: total memory and logical cores, detected
portably (Linux, macOS, Windows), 0 when they cannot be told. Jobs that require memory
(`--require-memory 16G`) go only to nodes that said they have it (docs/scheduling.md)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def logical_cores() -> int:
    """Logical cores (hardware threads) of this machine; 0: unknown."""
    return os.cpu_count() or 0


def total_memory() -> int:
    """Total physical memory of this machine in bytes; 0: unknown (never raises)."""
    for detect in (_windows, _sysconf, _macos_sysctl, _proc_meminfo):
        try:
            memory = detect()
        except (OSError, ValueError, AttributeError, subprocess.SubprocessError) as exc:
            log.debug("memory: %s failed: %s", detect.__name__, exc)
            continue
        if memory > 0:
            return memory
    log.info("the total memory of this machine cannot be told: jobs that require memory skip it")
    return 0


def _windows() -> int:
    if sys.platform != "win32":
        return 0
    import ctypes
    from ctypes import wintypes

    class MemoryStatusEx(ctypes.Structure):
        _fields_ = [  # noqa: RUF012 (ctypes reads it from the class)
            ("dwLength", wintypes.DWORD),
            ("dwMemoryLoad", wintypes.DWORD),
            ("ullTotalPhys", ctypes.c_ulonglong),
            ("ullAvailPhys", ctypes.c_ulonglong),
            ("ullTotalPageFile", ctypes.c_ulonglong),
            ("ullAvailPageFile", ctypes.c_ulonglong),
            ("ullTotalVirtual", ctypes.c_ulonglong),
            ("ullAvailVirtual", ctypes.c_ulonglong),
            ("ullAvailExtendedVirtual", ctypes.c_ulonglong),
        ]

    status = MemoryStatusEx()
    status.dwLength = ctypes.sizeof(MemoryStatusEx)
    if not ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):
        return 0
    return int(status.ullTotalPhys)


def _sysconf() -> int:
    # Linux and most Unixes (macOS has SC_PHYS_PAGES too, not every Python build does).
    if not hasattr(os, "sysconf") or "SC_PHYS_PAGES" not in os.sysconf_names:
        return 0
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _macos_sysctl() -> int:
    if sys.platform != "darwin":
        return 0
    out = subprocess.run(
        ["sysctl", "-n", "hw.memsize"], capture_output=True, text=True, timeout=5, check=True
    )
    return int(out.stdout.strip())


def _proc_meminfo() -> int:
    for line in Path("/proc/meminfo").read_text(encoding="ascii").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024  # in kB
    return 0
