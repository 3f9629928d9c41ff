"""Tiled frames across three node processes, stitched by the submitter, compared pixel
by pixel with the same frames rendered whole: POV-Ray (a direct `povray` run) and the
built-in renderer (its own process)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

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

from peerfarm.renderers.povray.sandbox import unavailable_reason

POVRAY_USABLE = shutil.which("povray") is not None and unavailable_reason() is None


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    root = tmp_path_factory.mktemp("farm")
    farm, _, _, nodes = start_farm(root, nodes=3)
    with farm_running(farm, root):
        wait_for_rendering_mesh(nodes)
        yield root, nodes


def tile_holders(root, job_id: str) -> int:
    """How many nodes rendered tiles of the job (the submitter, node-1, also keeps
    the ones it pulled, so it counts only if no other node rendered any)."""
    others = [
        i for i in (2, 3) if list((root / f"node-{i}" / "frames" / job_id).glob("*.tile*.png"))
    ]
    return len(others)


def test_tiled_builtin_frames_match_whole_frames(farm, tmp_path):
    root, nodes = farm
    out = tmp_path / "out"
    cli = peerfarm_cli(
        "submit",
        "builtin:demo",
        "--node",
        nodes[0],
        "--frames",
        "5-6",
        "--size",
        "200x150",
        "--tiles",
        "6",
        "--output",
        str(out),
        "--wait",
        timeout=300,
    )
    assert cli.returncode == 0, cli.stdout + cli.stderr
    job_id = cli.stdout.splitlines()[0]
    job = job_of(status(nodes[0]), job_id)
    assert (job["tiles"], job["chunks_total"], job["frames_done"]) == (6, 12, 2)
    assert "tiles (" in cli.stdout  # progress counts tiles
    whole = subprocess.run(
        [
            sys.executable,
            "-m",
            "peerfarm.renderers.builtin",
            "--scene-file",
            "builtin:demo",
            "--frames",
            "5-6",
            "--size",
            "200x150",
            "--output-pattern",
            str(tmp_path / "whole_{frame:04d}.png"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert whole.returncode == 0, whole.stderr
    for frame in (5, 6):
        ours = np.asarray(Image.open(out / f"demo_{frame:04d}.png"))
        theirs = np.asarray(Image.open(tmp_path / f"whole_{frame:04d}.png"))
        assert ours.shape == (150, 200, 3)
        assert np.array_equal(ours, theirs), f"frame {frame} differs from the whole render"
    assert (out / ".thumbs" / "demo_0005.png").exists() and (out / "demo.gif").exists()
    assert tile_holders(root, job_id) >= 1, "no other node rendered a tile"


@pytest.mark.skipif(
    not POVRAY_USABLE and not os.environ.get("CI"), reason="POV-Ray is not usable here"
)
def test_tiled_povray_still_matches_a_direct_render(farm, tmp_path):
    from test_povray import ball_files, write_files

    root, nodes = farm
    # Antialiasing with jitter and recursion: adaptive sampling stays inside POV-Ray's
    # 32-pixel blocks, and tiles on that grid give the same pixels.
    ini = "Input_File_Name=scene.pov\nWidth=200\nHeight=150\nClock=0.3\n"
    options = ["+A0.1", "+R3", "+J"]
    files = ball_files(ini)
    scene = write_files(tmp_path / "ball", files)
    direct_dir = write_files(tmp_path / "direct", files)
    direct = subprocess.run(
        ["povray", "scene.ini", *options, "-D", "+Odirect.png"],
        cwd=direct_dir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert direct.returncode == 0, direct.stderr[-2000:]
    out = tmp_path / "out"
    args = [f"--renderer-option={option}" for option in options]
    cli = peerfarm_cli(
        "submit", str(scene), "--node", nodes[0], "--tiles", "6", "--output", str(out), "--wait",
        *args, timeout=300,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stdout + cli.stderr
    job_id = cli.stdout.splitlines()[0]
    assert job_of(status(nodes[0]), job_id)["chunks_total"] == 6
    ours = Image.open(out / "ball_0001.png")
    theirs = Image.open(direct_dir / "direct.png")
    assert ours.info.get("gamma") == theirs.info.get("gamma")
    assert np.array_equal(np.asarray(ours), np.asarray(theirs)), "the stitched still differs"
    assert tile_holders(root, job_id) >= 1, "no other node rendered a tile"


@pytest.mark.skipif(
    not POVRAY_USABLE and not os.environ.get("CI"), reason="POV-Ray is not usable here"
)
def test_povray_scene_that_cannot_tile_is_refused(farm, tmp_path):
    from test_povray import ball_files, write_files

    _, nodes = farm
    files = ball_files("Input_File_Name=scene.pov\nWidth=200\nHeight=150\n")
    files["scene.pov"] += b"global_settings { radiosity { count 20 } }\n"
    scene = write_files(tmp_path / "ball", files)
    cli = peerfarm_cli("submit", str(scene), "--node", nodes[0], "--tiles", "4", timeout=60)
    assert cli.returncode == 1
    assert "scene.pov line 10: radiosity" in cli.stderr, cli.stderr
    assert "without --tiles" in cli.stderr and "Traceback" not in cli.stderr
    cli = peerfarm_cli("submit", str(scene), "--node", nodes[0], "--tiles", "200", timeout=60)
    assert cli.returncode == 1 and "at most 35 tiles" in cli.stderr, cli.stderr
