"""A POV-Ray animation (INI-driven, with an include file and a texture) rendered
across three node processes; every frame compared pixel by pixel with a direct
`povray` run of the same INI."""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest
from farmtools import (
    farm_running,
    job_of,
    peerfarm_cli,
    start_farm,
    status,
    wait_for_rendering_mesh,
)
from PIL import Image
from test_povray import ball_files, write_files

from peerfarm.renderers.povray.sandbox import unavailable_reason

if shutil.which("povray") is None or unavailable_reason() is not None:
    if os.environ.get("CI"):
        raise RuntimeError("CI must have a working POV-Ray: .ci/run installs it")
    pytest.skip("POV-Ray is not usable here", allow_module_level=True)

INI = (
    "Input_File_Name=scene.pov\nWidth=64\nHeight=48\n"
    "Initial_Frame=1\nFinal_Frame=9\nInitial_Clock=0\nFinal_Clock=1\n"
    "Antialias=on\nAntialias_Threshold=0.3\n"
)


def test_povray_animation_across_three_nodes_is_pixel_identical(tmp_path):
    files = ball_files(INI)
    scene_dir = write_files(tmp_path / "ball", files)
    direct_dir = write_files(tmp_path / "direct", files)
    direct = subprocess.run(
        ["povray", "scene.ini", "-D", "+Odirect.png"],
        cwd=direct_dir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert direct.returncode == 0, direct.stderr[-2000:]

    farm, _, _, nodes = start_farm(tmp_path / "farm", nodes=3)
    out = tmp_path / "out"
    with farm_running(farm, tmp_path / "farm"):
        wait_for_rendering_mesh(nodes)
        cli = peerfarm_cli(
            "submit",
            str(scene_dir),
            "--node",
            nodes[0],
            "--chunk",
            "2",
            "--output",
            str(out),
            "--wait",
            timeout=300,
        )
        assert cli.returncode == 0, cli.stdout + cli.stderr
        job_id = cli.stdout.splitlines()[0]
        job = job_of(status(nodes[0]), job_id)
        assert job["renderer"] == "povray" and job["frames_total"] == 9
        for n in range(1, 10):
            ours = np.asarray(Image.open(out / f"ball_{n:04d}.png"))
            theirs = np.asarray(Image.open(direct_dir / f"direct{n}.png"))
            assert np.array_equal(ours, theirs), f"frame {n} differs from the direct run"
        # The work was shared: scene files reached other nodes as blobs.
        workers = [
            n
            for n in nodes
            if (tmp_path / "farm" / f"node-{nodes.index(n) + 1}" / "work" / job_id).exists()
        ]
        assert len(workers) >= 2, "only one node rendered"
