"""peerfarm.child_processes where it can be checked on any platform: the options for
each platform, and the Win32 structure layout against Microsoft's documented sizes."""

from __future__ import annotations

import ctypes
import sys

import pytest

from peerfarm import child_processes
from peerfarm.child_processes import (
    BELOW_NORMAL_PRIORITY_CLASS,
    CREATE_NEW_PROCESS_GROUP,
    CREATE_NO_WINDOW,
    no_window_options,
    renderer_options,
)


def test_windows_programs_get_no_console_window_and_renderers_their_own_group(monkeypatch):
    monkeypatch.setattr(sys, "platform", "win32")
    assert no_window_options() == {"creationflags": CREATE_NO_WINDOW}
    flags = renderer_options()["creationflags"]
    assert flags == CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW | BELOW_NORMAL_PRIORITY_CLASS
    # The values of WinBase.h, where subprocess has them (on Windows only).
    import subprocess

    for name in ("CREATE_NO_WINDOW", "CREATE_NEW_PROCESS_GROUP", "BELOW_NORMAL_PRIORITY_CLASS"):
        if hasattr(subprocess, name):
            assert getattr(subprocess, name) == getattr(child_processes, name)


@pytest.mark.parametrize("platform", ["linux", "darwin"])
def test_posix_renderers_get_a_session_of_their_own(monkeypatch, platform):
    monkeypatch.setattr(sys, "platform", platform)
    assert no_window_options() == {}
    assert renderer_options() == {"start_new_session": True}


@pytest.mark.skipif(ctypes.sizeof(ctypes.c_void_p) != 8, reason="64-bit layout")
def test_job_object_limit_structure_has_the_documented_64_bit_layout():
    info = child_processes._ExtendedLimitInformation
    basic = child_processes._BasicLimitInformation
    assert ctypes.sizeof(basic) == 64
    assert basic.LimitFlags.offset == 16
    assert ctypes.sizeof(child_processes._IoCounters) == 48
    assert ctypes.sizeof(info) == 144  # sizeof(JOBOBJECT_EXTENDED_LIMIT_INFORMATION), x64
    assert info.ProcessMemoryLimit.offset == 112


def test_die_with_parent_is_only_linux(monkeypatch):
    def then() -> None:
        pass

    monkeypatch.setattr(sys, "platform", "darwin")
    assert child_processes.die_with_parent(then) is then
    assert child_processes.die_with_parent() is None
