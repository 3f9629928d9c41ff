"""The Blender plugin against the real Blender: options, scene info, chunks, a 2-node farm.

The scenes are made by Blender itself (the factory cube, camera and light; Cycles
on the CPU, 64x48, 4 samples), so every test renders in a second or two.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

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

from peerfarm.job_request import JobRequest
from peerfarm.renderers.base import RendererError, output_pattern
from peerfarm.renderers.blender import BlenderRenderer
from peerfarm.renderers.blender.options import OptionError, parse_options
from peerfarm.renderers.blender.program import (
    blender_version,
    clean_environment,
    parse_version,
    read_scene_info,
    render_command,
)
from peerfarm.renderers.blender.run import UsageError, blender_output_path
from peerfarm.renderers.blender.scene_script import scene_problems

if shutil.which("blender") is None:
    if os.environ.get("CI"):
        # CI installs Blender: a missing blender there is a broken setup, not a reason to skip.
        pytest.fail(
            "blender is not installed, but CI is set: the CI job must install Blender "
            "(apt-get install blender) so that these tests run",
            pytrace=False,
        )
    pytest.skip(
        "blender is not installed (Debian/Ubuntu: apt-get install blender)",
        allow_module_level=True,
    )

# Run inside Blender: turn the factory scene into the test scenes (one Blender start).
MAKE_SCENES = """
import bpy, json, sys
args = json.loads(sys.argv[sys.argv.index("--") + 1])
scene = bpy.context.scene
scene.render.engine = "CYCLES"
scene.cycles.device = "CPU"
scene.cycles.samples = 4
scene.cycles.use_denoising = False
scene.render.resolution_x, scene.render.resolution_y = 64, 48
scene.render.resolution_percentage = 100
scene.frame_start, scene.frame_end = 1, 4
cube = bpy.data.objects["Cube"]
for frame in (1, 4):
    cube.location.x = frame * 0.3
    cube.keyframe_insert("location", frame=frame)
bpy.ops.wm.save_as_mainfile(filepath=args["clean"], copy=True)
scene.render.image_settings.file_format = "JPEG"
bpy.ops.wm.save_as_mainfile(filepath=args["jpeg"], copy=True)
scene.render.image_settings.file_format = "PNG"
scene.cycles.use_denoising = True
bpy.ops.wm.save_as_mainfile(filepath=args["denoise"], copy=True)
scene.cycles.use_denoising = False
text = bpy.data.texts.new("autorun.py")
text.write("open(%r, 'w').write('the file ran its script')\\n" % args["marker"])
text.use_module = True  # "Register": runs when the file loads, if scripts may run
bpy.ops.wm.save_as_mainfile(filepath=args["autorun"], copy=True)
"""


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> SimpleNamespace:
    folder = tmp_path_factory.mktemp("blends")
    paths = SimpleNamespace(
        clean=folder / "cube.blend",
        jpeg=folder / "jpeg.blend",
        denoise=folder / "denoised.blend",
        autorun=folder / "autorun.blend",
        marker=folder / "marker.txt",
    )
    request = json.dumps({k: str(v) for k, v in vars(paths).items()})
    result = subprocess.run(
        ["blender", "-b", "--factory-startup", "--python-expr", MAKE_SCENES, "--", request],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and paths.autorun.exists(), result.stdout + result.stderr
    assert not paths.marker.exists()
    return paths


def job(main: str = "cube.blend", options=(), size=None):
    width, height = size or (0, 0)
    return SimpleNamespace(main=main, options=list(options), width=width, height=height)


def spec(blend: Path, **more) -> JobRequest:
    return JobRequest(files={blend.name: blend.read_bytes()}, main=blend.name, **more)


def run_chunk(work_dir: Path, out_dir: Path, the_job, first: int, last: int, ext: str = "png"):
    """Run the plugin's command for one chunk as the worker does (cwd = the job folder)."""
    pattern = output_pattern(out_dir, "cube", ext=ext)
    command = BlenderRenderer().chunk_command(the_job, range(first, last + 1), work_dir, pattern)
    result = subprocess.run(command, cwd=work_dir, capture_output=True, text=True, timeout=300)
    return result, pattern


def job_folder(tmp_path: Path, blend: Path) -> Path:
    work_dir = tmp_path / "work"
    work_dir.mkdir()
    shutil.copy(blend, work_dir / "cube.blend")
    return work_dir


# --- options, versions, command lines (no Blender run) ---


def test_options_allow_list():
    assert parse_options([]) == {}
    assert parse_options(["engine=cycles", "samples=16", "denoise=off"]) == {
        "engine": "CYCLES",
        "samples": 16,
        "denoise": False,
    }
    assert parse_options(["Engine = BLENDER_WORKBENCH"]) == {"engine": "BLENDER_WORKBENCH"}


@pytest.mark.parametrize(
    "options, message",
    [
        (["engine=LUXCORE"], "the engine must be one of CYCLES, BLENDER_EEVEE"),
        (["samples=0"], "samples must be a whole number"),
        (["samples=many"], "samples must be a whole number"),
        (["samples=99999999999"], "samples must be a whole number"),
        (["denoise=on"], "only denoise=off"),
        (["threads=4"], "'threads=4' is not allowed; allowed: engine="),
        (["--python-expr=import os"], "is not allowed"),
        (["engine"], "expected KEY=VALUE"),
        (["samples=4", "samples=8"], "given twice"),
        ("engine=CYCLES", "must be a list"),
    ],
)
def test_options_outside_the_allow_list_are_refused_by_name(options, message):
    with pytest.raises(OptionError, match=re.escape(message)):
        parse_options(options)


def test_version_line_parsing():
    assert parse_version("Blender 3.4.1\n\tbuild date: 2023-03-06\n") == "3.4.1"
    assert parse_version("Blender 4.1.0 (hash 8e7cb7ba8b43 built 2024-03-25)\n") == "4.1.0"
    assert parse_version("Blender 2.93\n") == "2.93"
    assert parse_version("bash: blender: command not found\n") is None


def test_output_pattern_in_blenders_notation(tmp_path):
    assert blender_output_path(str(tmp_path / "name_{frame:04d}.png")) == str(
        tmp_path / "name_####.png"
    )
    assert blender_output_path(str(tmp_path / "a_{frame}.png")) == str(tmp_path / "a_#.png")
    braces = output_pattern(tmp_path / "odd{dir}#1", "name", padding=6)
    assert blender_output_path(braces) == str(tmp_path / "odd{dir}#1" / "name_######.png")
    for bad in ("/o/x.png", "/o/x_{frame:4d}.png", "/o/{frame}_{frame}.png", "/o/a#_{frame}.png"):
        with pytest.raises(UsageError, match="output-pattern"):
            blender_output_path(bad)


def test_render_command_keeps_blenders_argument_order():
    command = render_command("blender", Path("/j/scene.blend"), 3, 5, {"filepath": "/o/x_####"})
    assert command[:5] == [
        "blender",
        "--background",
        "--factory-startup",
        "--disable-autoexec",  # before the file: the file's scripts never run
        "/j/scene.blend",
    ]
    python = command.index("--python")
    # The file, then our script, then the frame range, and the render flag last.
    assert command.index("/j/scene.blend") < python < command.index("-s") < command.index("-a")
    assert command[command.index("-s") + 1 : command.index("-s") + 4] == ["3", "-e", "5"]
    assert command[-2] == "--" and json.loads(command[-1])["settings"]["filepath"] == "/o/x_####"


def test_clean_environment_keeps_no_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "hunter2")
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    env = clean_environment(tmp_path)
    assert "AWS_SECRET_ACCESS_KEY" not in env and "PYTHONPATH" not in env
    assert env["HOME"] == env["TMPDIR"] == str(tmp_path)


def test_chunk_command_and_frame_lines(tmp_path):
    plugin = BlenderRenderer()
    command = plugin.chunk_command(
        job(options=["engine=CYCLES", "samples=8"], size=(32, 24)),
        range(3, 6),
        tmp_path,
        "/out/x_{frame:04d}.png",
    )
    assert command[:3] == [sys.executable, "-m", "peerfarm.renderers.blender.run"]
    assert "--frames=3-5" in command
    assert command[command.index("--size") + 1] == "32x24"
    assert "--option=engine=CYCLES" in command and "--option=samples=8" in command
    assert "--size" not in plugin.chunk_command(job(), range(1, 2), tmp_path, "x")  # scene's own
    assert plugin.frame_finished("Saved: '/out/x_0003.png'")
    assert not plugin.frame_finished("Saved: /elsewhere/Image0003.png")  # a File Output node
    assert not plugin.frame_finished("Fra:3 Mem:9.91M | Sample 4/4")
    with pytest.raises(RendererError, match="main scene file"):
        plugin.prepare(job(), tmp_path)  # not unpacked there
    (tmp_path / "cube.blend").write_bytes(b"")
    plugin.prepare(job(), tmp_path)


INFO = {
    "blender": "3.4.1",
    "scene": "Scene",
    "engine": "CYCLES",
    "frame_step": 1,
    "camera": "Camera",
    "multiview": False,
    "denoising": False,
    "oidn": False,
    "denoise_nodes": [],
    "file_output_nodes": [],
}


@pytest.mark.parametrize(
    "info, settings, message",
    [
        ({"denoising": True}, {}, "Render Properties > Sampling > Denoise"),
        ({"denoising": True}, {"denoise": False}, None),
        ({"denoising": True, "oidn": True}, {}, None),
        ({"denoising": True}, {"engine": "BLENDER_EEVEE"}, None),
        ({"engine": "BLENDER_WORKBENCH"}, {"samples": 8}, "not to Workbench"),
        ({"engine": "LUXCORE"}, {}, "render engine is LUXCORE"),
        ({"engine": "LUXCORE"}, {"engine": "CYCLES"}, None),
        ({"camera": ""}, {}, "no active camera"),
        ({"frame_step": 2}, {}, "Frame Step is 2"),
        ({"multiview": True}, {}, "Stereoscopy"),
        ({"denoise_nodes": ["Denoise"]}, {}, "Denoise node (Denoise)"),
        ({"file_output_nodes": ["File Output"]}, {}, "File Output nodes (File Output)"),
    ],
)
def test_scene_rules(info, settings, message):
    problems = scene_problems({**INFO, **info}, settings)
    if message is None:
        assert problems == []
    else:
        assert len(problems) == 1 and message in problems[0]


# --- with the real Blender ---


def test_probe_reports_the_installed_version():
    version = blender_version()
    said = subprocess.run(["blender", "--version"], capture_output=True, text=True, timeout=60)
    assert version and said.stdout.startswith(f"Blender {version}")
    assert BlenderRenderer().probe() == version


def test_probe_without_blender_says_none(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert BlenderRenderer().probe() is None


def test_scene_info_comes_from_blender(scenes):
    info = read_scene_info(scenes.clean)
    assert (info["frame_start"], info["frame_end"], info["frame_step"]) == (1, 4, 1)
    assert (info["width"], info["height"], info["percentage"]) == (64, 48, 100)
    assert info["engine"] == "CYCLES" and info["camera"] == "Camera"
    assert info["blender"].startswith(blender_version())
    assert read_scene_info(scenes.denoise)["denoising"] is True


def test_check_job_returns_the_scenes_frame_range(scenes):
    plugin = BlenderRenderer()
    assert plugin.check_job(spec(scenes.clean)) == (1, 4)
    assert plugin.check_job(spec(scenes.clean, options=["samples=2"], frames=[0, 9])) == (1, 4)


def test_check_job_refuses_with_reasons(scenes, tmp_path):
    plugin = BlenderRenderer()
    denoise = spec(scenes.denoise)
    if read_scene_info(scenes.denoise)["oidn"]:
        pytest.skip("this Blender has OpenImageDenoise: denoised scenes render")
    with pytest.raises(RendererError, match=r"denoised\.blend: the scene has Cycles denoising on"):
        plugin.check_job(denoise)
    assert plugin.check_job(denoise.replace(options=["denoise=off"])) == (1, 4)
    with pytest.raises(RendererError, match="not allowed"):
        plugin.check_job(spec(scenes.clean, options=["threads=2"]))
    with pytest.raises(RendererError, match="frames 0 to"):
        plugin.check_job(spec(scenes.clean, frames=[-2, 3]))
    garbage = tmp_path / "garbage.blend"
    garbage.write_bytes(b"this is no blend file")
    with pytest.raises(RendererError, match="garbage.blend: Blender could not read it"):
        plugin.check_job(spec(garbage))


def test_check_job_without_blender_needs_frames(scenes, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    plugin = BlenderRenderer()
    with pytest.raises(RendererError, match="Blender is not installed .* pass --frames A-B"):
        plugin.check_job(spec(scenes.clean))
    assert plugin.check_job(spec(scenes.clean, frames=[2, 3])) == (2, 3)


def test_a_chunk_renders_its_frames_in_one_blender(scenes, tmp_path):
    work_dir = job_folder(tmp_path, scenes.clean)
    result, pattern = run_chunk(work_dir, tmp_path / "out", job(), 2, 3)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = [line for line in result.stdout.splitlines() if BlenderRenderer().frame_finished(line)]
    assert saved == [f"Saved: '{pattern.format(frame=f)}'" for f in (2, 3)]
    assert result.stderr.count("Blender quit") == 1  # one Blender for the chunk
    for frame in (2, 3):
        with Image.open(pattern.format(frame=frame)) as image:
            assert image.format == "PNG" and image.size == (64, 48)  # the scene's own size
    assert not Path(pattern.format(frame=1)).exists()
    assert not Path(pattern.format(frame=4)).exists()
    assert "Sample 4/4" in result.stderr  # the scene's own samples


def test_size_and_options_override_the_scene(scenes, tmp_path):
    work_dir = job_folder(tmp_path, scenes.clean)
    the_job = job(options=["samples=1", "engine=CYCLES"], size=(32, 24))
    result, pattern = run_chunk(work_dir, tmp_path / "out", the_job, 4, 4)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Sample 1/1" in result.stderr and "Sample 4/4" not in result.stderr
    with Image.open(pattern.format(frame=4)) as image:
        assert image.size == (32, 24)


def test_a_denoised_scene_that_reaches_a_worker_fails_with_the_reason(scenes, tmp_path):
    if read_scene_info(scenes.denoise)["oidn"]:
        pytest.skip("this Blender has OpenImageDenoise: denoised scenes render")
    work_dir = job_folder(tmp_path, scenes.denoise)
    result, pattern = run_chunk(work_dir, tmp_path / "out", job(), 1, 2)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("peerfarm-blender: error: the scene cannot be rendered here")
    assert "turn denoising off in Render Properties > Sampling > Denoise" in last
    assert not Path(pattern.format(frame=1)).exists()


def test_blenders_own_error_fails_the_chunk(tmp_path):
    work_dir = tmp_path / "work"
    work_dir.mkdir()
    (work_dir / "cube.blend").write_bytes(b"BLENDER-v300 but not really")
    result, _ = run_chunk(work_dir, tmp_path / "out", job(), 1, 1)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("peerfarm-blender: error: Blender failed with exit status")
    assert "cube.blend" in last


def test_scripts_in_the_blend_never_run(scenes, tmp_path):
    # The script does run when scripts are allowed: the test below can fail.
    allowed = subprocess.run(
        ["blender", "-b", "--factory-startup", "--enable-autoexec", str(scenes.autorun)],
        capture_output=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert allowed.returncode == 0 and scenes.marker.read_text() == "the file ran its script"
    scenes.marker.unlink()

    assert BlenderRenderer().check_job(spec(scenes.autorun)) == (1, 4)
    work_dir = job_folder(tmp_path, scenes.autorun)
    result, pattern = run_chunk(work_dir, tmp_path / "out", job(), 1, 1)
    assert result.returncode == 0, result.stderr[-3000:]
    assert Path(pattern.format(frame=1)).is_file()
    assert "skipping 'autorun.py'" in result.stderr  # Blender's own word for it
    assert not scenes.marker.exists()


# --- a farm of real node processes ---


def test_blender_job_across_two_nodes(scenes, tmp_path):
    version = blender_version()
    farm, _, _, nodes = start_farm(tmp_path / "farm", nodes=2)
    out = tmp_path / "out"
    with farm_running(farm, tmp_path / "farm"):
        wait_for_rendering_mesh(nodes)
        refused = peerfarm_cli("submit", str(scenes.denoise), "--node", nodes[0], timeout=120)
        if not read_scene_info(scenes.denoise)["oidn"]:
            assert refused.returncode == 1
            assert "denoised.blend: the scene has Cycles denoising on" in refused.stderr
            assert "Render Properties > Sampling > Denoise" in refused.stderr
            assert "Traceback" not in refused.stderr

        cli = peerfarm_cli(
            "submit",
            str(scenes.clean),
            "--node",
            nodes[0],
            "--chunk",
            "2",
            "--renderer-version",
            version,
            "--output",
            str(out),
            "--wait",
            timeout=300,
        )
        assert cli.returncode == 0, cli.stdout + cli.stderr
        job_id = cli.stdout.splitlines()[0]
        job = job_of(status(nodes[0]), job_id)
        assert job["renderer"] == "blender" and job["frames_total"] == 4
        frames = sorted(out.glob("cube_*.png"))
        assert [f.name for f in frames] == [f"cube_{n:04d}.png" for n in range(1, 5)]
        for frame in frames:
            with Image.open(frame) as image:
                assert image.size == (64, 48)
        workers = [
            i for i in (1, 2) if (tmp_path / "farm" / f"node-{i}" / "work" / job_id).exists()
        ]
        assert workers == [1, 2], "one node rendered both chunks"

        # The job's frames and size override the scene's.
        out2 = tmp_path / "out2"
        cli = peerfarm_cli(
            "submit",
            str(scenes.clean),
            "--node",
            nodes[1],
            "--frames",
            "2-3",
            "--size",
            "32x24",
            "--renderer-option",
            "samples=1",
            "--output",
            str(out2),
            "--wait",
            timeout=300,
        )
        assert cli.returncode == 0, cli.stdout + cli.stderr
        frames = sorted(out2.glob("cube_*.png"))
        assert [f.name for f in frames] == ["cube_0002.png", "cube_0003.png"]
        for frame in frames:
            with Image.open(frame) as image:
                assert image.size == (32, 24)


def test_frames_come_in_the_scenes_own_format_unless_the_job_names_one(scenes, tmp_path):
    plugin = BlenderRenderer()
    assert plugin.scene_format(spec(scenes.clean)) == "png"
    assert plugin.scene_format(spec(scenes.jpeg)) == "jpg"
    from peerfarm.jobspec import build_new_job

    blender_spec = spec(scenes.jpeg).replace(renderer="blender", name="j", output="/o")
    plugins = {"blender": plugin}
    assert build_new_job(blender_spec, "j1", plugins, {"blender"})["format"] == "jpg"
    chosen = build_new_job(blender_spec.replace(format="exr"), "j2", plugins, {"blender"})
    assert chosen["format"] == "exr"
    # The worker side: the job's format, whatever the file says.
    work_dir = job_folder(tmp_path, scenes.jpeg)
    result, pattern = run_chunk(work_dir, tmp_path / "jpg", job(), 1, 1, ext="jpg")
    assert result.returncode == 0, result.stderr[-3000:]
    with Image.open(pattern.format(frame=1)) as image:
        assert image.format == "JPEG" and image.size == (64, 48)
    result, pattern = run_chunk(work_dir, tmp_path / "exr", job(), 2, 2, ext="exr")
    assert result.returncode == 0, result.stderr[-3000:]
    assert Path(pattern.format(frame=2)).read_bytes()[:4] == b"\x76\x2f\x31\x01"  # OpenEXR
