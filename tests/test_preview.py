"""The preview job of a request (peerfarm/preview.py): quarter size, quick settings."""

from __future__ import annotations

import shutil

import pytest
from factories import builtin_request
from rerender_scene import FAST_GREEN, scene_files

from peerfarm.job_request import JobRequest
from peerfarm.jobspec import build_new_job
from peerfarm.preview import preview_request
from peerfarm.renderers.registry import renderer_plugins

PLUGINS = renderer_plugins()


def test_a_builtin_preview_is_smaller_first_and_spread():
    request = builtin_request(width=640, height=480, chunk_size=4, priority=5, video=True)
    quick = preview_request(request, PLUGINS)
    assert (quick.width, quick.height, quick.chunk_size) == (160, 120, 1)
    assert (quick.priority, quick.order, quick.video) == (6, "spread", False)
    assert quick.output == "/tmp/peerfarm-test-out/preview"
    # Without a size, the built-in renderer's default (320x240) at quarter size.
    assert preview_request(builtin_request(width=None, height=None), PLUGINS).width == 80
    build_new_job(quick, "p1", PLUGINS, {"builtin"})  # a job the farm takes


def test_a_povray_preview_takes_the_ini_size_and_quick_settings():
    request = JobRequest(
        renderer="povray",
        files=scene_files(FAST_GREEN),
        main="scene.ini",
        name="ball",
        options=["+A0.1", "Antialias_Depth=4", "Quality=11"],
        output="/tmp/x",
    )
    quick = preview_request(request, PLUGINS)
    assert (quick.width, quick.height) == (12, 9)  # the INI's 48x36, quartered
    assert quick.options == ["Quality=3", "Antialias=off"]
    if shutil.which("povray"):
        build_new_job(quick, "p2", PLUGINS, {"povray"})  # the plugin accepts them


def test_a_blender_preview_has_few_samples():
    request = JobRequest(
        renderer="blender",
        files={"shot.blend": b"not read: the size is given"},
        main="shot.blend",
        options=["engine=CYCLES", "samples=512"],
        width=1920,
        height=1080,
        output="/tmp/x",
    )
    quick = preview_request(request, PLUGINS)
    assert quick.options == ["engine=CYCLES", "samples=8"]
    assert (quick.width, quick.height) == (480, 270)


@pytest.mark.parametrize("option", ["+Q9", "-A", "+AM2", "+R3", "Jitter=off", "antialias=on"])
def test_every_povray_quality_option_gives_way(option):
    request = JobRequest(renderer="povray", options=[option, "+UA"], width=8, height=8)
    assert preview_request(request, PLUGINS).options == ["+UA", "Quality=3", "Antialias=off"]
