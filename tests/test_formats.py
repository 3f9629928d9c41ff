"""Output formats: what a plugin writes, what submit refuses, and the renderer
processes writing each format for real (the built-in renderer and POV-Ray)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from factories import builtin_request
from PIL import Image
from test_povray import ball_files, write_files

from peerfarm.formats import format_name, pillow_reads, why_no_video, why_not_stitched
from peerfarm.job_request import JobRequest, SubmitError
from peerfarm.jobspec import build_new_job
from peerfarm.renderers.base import RendererError, output_pattern
from peerfarm.renderers.povray import PovrayRenderer
from peerfarm.renderers.povray.ini import IniError, load_scene
from peerfarm.renderers.povray.sandbox import unavailable_reason
from peerfarm.renderers.registry import renderer_plugins

POVRAY_USABLE = shutil.which("povray") is not None and unavailable_reason() is None
needs_povray = pytest.mark.skipif(
    not POVRAY_USABLE and not os.environ.get("CI"), reason="POV-Ray is not usable here"
)


def test_format_table():
    assert format_name("JPEG") == "jpg" and format_name(".tif") == "tiff"
    assert pillow_reads("tga") and not pillow_reads("exr") and not pillow_reads("webp")
    assert why_not_stitched("png") is None and why_not_stitched("bmp") is None
    assert "lossy" in why_not_stitched("jpg")
    assert "cannot read exr" in why_not_stitched("exr")
    assert why_no_video("jpg") is None and "high-dynamic-range" in why_no_video("hdr")


def test_submit_checks_the_format():
    plugins = renderer_plugins()
    assert build_new_job(builtin_request(), "j1", plugins, {"builtin"})["format"] == "png"
    assert build_new_job(builtin_request(format="JPEG"), "j2", plugins, {"builtin"})["format"] == (
        "jpg"
    )
    with pytest.raises(SubmitError, match="does not write exr frames; it writes png, jpg, tiff"):
        build_new_job(builtin_request(format="exr"), "j3", plugins, {"builtin"})
    with pytest.raises(SubmitError, match=r"--tiles with --format jpg: jpg is lossy.*png, tiff"):
        build_new_job(builtin_request(format="jpg", tiles=4), "j4", plugins, {"builtin"})
    with pytest.raises(SubmitError, match=r"--format \.\./x: the builtin renderer does not"):
        build_new_job(builtin_request(format="../x"), "j5", plugins, {"builtin"})


def test_povray_output_type_follows_the_job_format():
    files = {"a.pov": b""}
    scene = load_scene("a.pov", "", files, ["+FT"], None, "tga")
    assert "Output_File_Type=T" in scene.chunk_ini(range(1, 2), "/o/frame.tga").splitlines()
    assert scene.output_name(1) == "frame.tga"
    scene = load_scene("a.pov", "", files, [], None, "exr")
    assert "Output_File_Type=E" in scene.chunk_ini(range(1, 2), "/o/frame.exr").splitlines()
    with pytest.raises(IniError, match=r"option '\+FJ': .* writes jpg frames, but the job's"):
        load_scene("a.pov", "", files, ["+FJ"], None, "png")
    plugin = PovrayRenderer()
    spec = JobRequest(files={"a.pov": b"", "s.ini": b"Input_File_Name=a.pov\n+FC\n"}, main="s.ini")
    assert plugin.check_job_with_notes(spec.replace(format="tga")).notes == ()  # C: compressed
    # Without --format the job writes what the INI asks for, as `povray s.ini` would ...
    assert plugin.scene_format(spec) == "tga"
    # ... and an explicit --format overrides the INI's type, saying so.
    (note,) = plugin.check_job_with_notes(spec.replace(format="png")).notes
    assert note == (
        "s.ini line 2 (+FC): Output_File_Type=C is overridden: the job's format is png, so "
        "POV-Ray writes png frames (submit with --format tga to keep the scene's)"
    )
    with pytest.raises(RendererError, match="Pillow reads without the alpha"):
        plugin.check_job(spec.replace(format="bmp", tiles=4, options=["+UA", "+FB"]))


def test_builtin_process_writes_each_format(tmp_path):
    frames = {}
    for fmt in ("png", "jpg", "tiff", "bmp"):
        result = subprocess.run(
            [sys.executable, "-m", "peerfarm.renderers.builtin", "--scene-file", "builtin:demo",
             "--frames", "3", "--size", "64x48", "--format", fmt,
             "--output-pattern", str(tmp_path / f"d_{{frame:04d}}.{fmt}")],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        with Image.open(tmp_path / f"d_0003.{fmt}") as image:
            assert image.format == {"jpg": "JPEG"}.get(fmt, fmt.upper())
            frames[fmt] = np.asarray(image.convert("RGB"))
    assert np.array_equal(frames["tiff"], frames["png"])
    assert np.array_equal(frames["bmp"], frames["png"])
    # JPEG is lossy, but close
    assert np.abs(frames["jpg"].astype(int) - frames["png"]).mean() < 4


POVRAY_LETTERS = {
    "png": "N",
    "jpg": "J",
    "tga": "T",
    "bmp": "B",
    "ppm": "P",
    "exr": "E",
    "hdr": "H",
}
MAGIC = {"exr": b"\x76\x2f\x31\x01", "hdr": b"#?RADIANCE"}


def undated(data: bytes) -> bytes:
    return re.sub(rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", b"DATE", data)


@needs_povray
@pytest.mark.parametrize("fmt", sorted(POVRAY_LETTERS))
def test_povray_chunk_writes_each_format_like_a_direct_run(tmp_path, fmt):
    ini = (
        "Input_File_Name=scene.pov\nWidth=64\nHeight=48\n"
        "Initial_Frame=1\nFinal_Frame=3\nAntialias=on\n"
    )
    work = write_files(tmp_path / "work", ball_files(ini))
    direct = write_files(tmp_path / "direct", ball_files(ini))
    run = subprocess.run(
        ["povray", "scene.ini", "-D", f"+F{POVRAY_LETTERS[fmt]}", "+Od", "+SF2", "+EF3"],
        cwd=direct, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    the_job = {"main": "scene.ini", "options": [], "width": 0, "height": 0, "format": fmt}
    pattern = output_pattern(tmp_path / "out", "ball", 4, fmt)
    command = PovrayRenderer().chunk_command(the_job, range(2, 4), work, pattern)
    result = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[-1] == f"FRAME 3 {tmp_path / 'out' / f'ball_0003.{fmt}'}"
    for frame in (2, 3):
        ours = tmp_path / "out" / f"ball_{frame:04d}.{fmt}"
        theirs = direct / f"d{frame}.{fmt}"
        if fmt in MAGIC:  # Pillow cannot read them: same bytes but for the creation time
            assert ours.read_bytes().startswith(MAGIC[fmt])
            assert undated(ours.read_bytes()) == undated(theirs.read_bytes())
        else:
            with Image.open(ours) as a, Image.open(theirs) as b:
                assert np.array_equal(np.asarray(a), np.asarray(b)), f"frame {frame} differs"
