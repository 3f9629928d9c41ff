"""Outputs across three node processes: frames in the job's format, thumbnails and
the GIF only where Pillow reads the format, tiles stitched in another format."""

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

from peerfarm.renderers.povray.sandbox import unavailable_reason

POVRAY_USABLE = shutil.which("povray") is not None and unavailable_reason() is None
needs_povray = pytest.mark.skipif(
    not POVRAY_USABLE and not os.environ.get("CI"), reason="POV-Ray is not usable here"
)


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    root = tmp_path_factory.mktemp("farm")
    farm, _, _, nodes = start_farm(root, nodes=3)
    with farm_running(farm, root):
        wait_for_rendering_mesh(nodes)
        yield root, nodes


def submit_and_wait(node: str, *args: str) -> tuple[str, str]:
    cli = peerfarm_cli("submit", *args, "--node", node, "--wait", timeout=300)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    return cli.stdout.splitlines()[0], cli.stdout


def test_builtin_jpeg_frames_with_thumbnails_and_gif(farm, tmp_path):
    _, nodes = farm
    out = tmp_path / "out"
    job_id, _ = submit_and_wait(
        nodes[0], "builtin:demo", "--frames", "1-3", "--chunk", "1", "--size", "64x48",
        "--format", "JPEG", "--output", str(out),
    )  # fmt: skip
    assert job_of(status(nodes[0]), job_id)["format"] == "jpg"
    assert sorted(p.name for p in out.glob("demo_*")) == [f"demo_000{i}.jpg" for i in (1, 2, 3)]
    for i in (1, 2, 3):
        with Image.open(out / f"demo_000{i}.jpg") as image:
            assert (image.format, image.size) == ("JPEG", (64, 48))
        with Image.open(out / ".thumbs" / f"demo_000{i}.png") as thumb:
            assert thumb.format == "PNG"
    with Image.open(out / "demo.gif") as gif:
        assert gif.n_frames == 3


@needs_povray
def test_povray_exr_frames_without_previews(farm, tmp_path):
    from test_povray import ball_files, write_files

    _, nodes = farm
    ini = "Input_File_Name=scene.pov\nWidth=64\nHeight=48\nInitial_Frame=1\nFinal_Frame=2\n"
    scene = write_files(tmp_path / "ball", ball_files(ini))
    out = tmp_path / "out"
    job_id, printed = submit_and_wait(nodes[0], str(scene), "--format", "exr", "--output", str(out))
    frames = sorted(p.name for p in out.iterdir())
    assert frames == ["ball_0001.exr", "ball_0002.exr"]  # no .thumbs, no GIF
    assert (out / "ball_0001.exr").read_bytes()[:4] == b"\x76\x2f\x31\x01"
    note = "no thumbnails and no GIF: Pillow cannot read exr frames"
    assert job_of(status(nodes[0]), job_id)["output_note"] == note
    assert f"animation: none ({note})" in printed


@needs_povray
def test_povray_tiles_stitched_as_tga_match_a_direct_render(farm, tmp_path):
    from test_povray import ball_files, write_files

    _, nodes = farm
    ini = "Input_File_Name=scene.pov\nWidth=128\nHeight=96\nAntialias=on\n"
    files = ball_files(ini)
    scene = write_files(tmp_path / "ball", files)
    direct_dir = write_files(tmp_path / "direct", files)
    direct = subprocess.run(
        ["povray", "scene.ini", "-D", "+FT", "+Odirect"],
        cwd=direct_dir, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert direct.returncode == 0, direct.stderr[-2000:]
    out = tmp_path / "out"
    submit_and_wait(nodes[0], str(scene), "--format", "tga", "--tiles", "4", "--output", str(out))
    with Image.open(out / "ball_0001.tga") as ours, Image.open(direct_dir / "direct.tga") as theirs:
        assert ours.format == "TGA"
        assert np.array_equal(np.asarray(ours), np.asarray(theirs))


@pytest.mark.skipif(
    not (shutil.which("ffmpeg") and shutil.which("ffprobe")) and not os.environ.get("CI"),
    reason="ffmpeg is not installed (Debian/Ubuntu: apt-get install ffmpeg)",
)
def test_video_of_tiled_frames(farm, tmp_path):
    from test_video import probe

    _, nodes = farm
    out = tmp_path / "out"
    job_id, printed = submit_and_wait(
        nodes[0], "builtin:demo", "--frames", "1-6", "--size", "65x49", "--tiles", "2",
        "--video", "--fps", "12", "--output", str(out),
    )  # fmt: skip
    job = job_of(status(nodes[0]), job_id)
    assert (job["video"], job["fps"], job["video_path"]) == (True, 12, str(out / "demo.mp4"))
    assert f"video: {out / 'demo.mp4'}" in printed
    stream = probe(out / "demo.mp4")
    assert (stream["codec_name"], stream["pix_fmt"]) == ("h264", "yuv420p")
    assert (stream["width"], stream["height"]) == (66, 50)  # 65x49 padded to even
    assert (stream["nb_read_frames"], stream["r_frame_rate"]) == ("6", "12/1")
    with Image.open(out / "demo.gif") as gif:
        assert abs(gif.info["duration"] - 1000 / 12) < 10  # GIF counts in 1/100 s
