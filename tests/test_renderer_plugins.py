"""Renderer plugins: probing, and what a node advertises."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from peerfarm import __version__
from peerfarm.job_request import JobRequest
from peerfarm.renderers.base import Renderer, output_pattern
from peerfarm.renderers.registry import probe_renderers, renderer_plugins


class Broken(Renderer):
    name = "broken"

    def probe(self):
        raise OSError("cannot run")

    def check_job(self, spec):
        raise NotImplementedError

    def prepare(self, job, work_dir):
        raise NotImplementedError

    def chunk_command(self, job, frames, work_dir, output_pattern):
        raise NotImplementedError


class Missing(Broken):
    name = "missing"

    def probe(self):
        return None


def test_builtin_is_always_there():
    plugins = renderer_plugins()
    assert probe_renderers(plugins)["builtin"] == __version__


def test_a_failing_or_missing_renderer_is_simply_not_advertised():
    found = probe_renderers({"broken": Broken(), "missing": Missing(), **renderer_plugins()})
    assert "builtin" in found and not {"broken", "missing"} & set(found)


def test_output_pattern_escapes_braces_in_the_folder():
    pattern = output_pattern(Path("/data/{odd}"), "demo")
    assert pattern.format(frame=7).endswith("demo_0007.png")
    assert "{odd}" in pattern.format(frame=7)


def test_renderer_processes_parse_frames_like_the_farm():
    from peerfarm.renderers.base import frame_range_arg

    assert frame_range_arg("-3--1") == (-3, -1)
    assert frame_range_arg("7") == (7, 7)
    with pytest.raises(argparse.ArgumentTypeError, match="before the first"):
        frame_range_arg("9-1")


def test_builtin_refuses_frames_outside_the_scenes_animation():
    from peerfarm.renderers.base import RendererError
    from peerfarm.renderers.builtin import builtin_scene_text

    plugin = renderer_plugins()["builtin"]
    spec = JobRequest(scene=builtin_scene_text("demo"))
    assert plugin.check_job(spec) == (1, 48)
    assert plugin.check_job(spec.replace(frames=[5, 48])) == (1, 48)
    with pytest.raises(RendererError, match=r"frames 1-60 are outside .* \(frames 1-48\)"):
        plugin.check_job(spec.replace(frames=[1, 60]))
