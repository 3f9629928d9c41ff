"""POV-Ray's own example scenes (Debian: povray-examples), INIs as they ship, rendered
by a farm of three node processes and compared pixel by pixel with `povray` run
directly with the same size and frames.

The spread: a mixed switches-and-Declare line with a cyclic clock (splinefollow), an
INI whose Output_File_Name the farm overrides and whose scene writes HTML files into
its folder (allnormals), an animation's first frames with settings a render node
ignores (float1: Test_Abort_Count), the last frames of a cyclic animation
(fractalzoom), frames from the middle of one (clockd) and a still .pov without INI
(biscuit, seeded rand). Small sizes and few frames keep it to seconds.

Left out: scenes whose pixels differ between two direct runs (desk.pov: crand), and
benchmark.ini (its INI is in test_povray_ini.py; it renders for seconds even tiny).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from farmtools import farm_running, peerfarm_cli, start_farm, wait_for_rendering_mesh
from PIL import Image
from test_povray_ini import example_files, examples_folder

from peerfarm.renderers.povray.ini import load_scene
from peerfarm.renderers.povray.sandbox import unavailable_reason

if shutil.which("povray") is None or unavailable_reason() is not None:
    if os.environ.get("CI"):
        raise RuntimeError("CI must have a working POV-Ray: .ci/run installs it")
    pytest.skip("POV-Ray is not usable here", allow_module_level=True)

SIZE = (80, 60)
# (the scene file as it ships, the frames to render)
SCENES = [
    ("animations/splinefollow/splinefollow.ini", (1, 4)),
    ("portfolio/allnormals.ini", (1, 3)),
    ("animations/float1/float1.ini", (1, 2)),
    ("animations/fractalzoom/fractalzoom.ini", (59, 60)),
    ("animations/clockd/clockd.ini", (5, 7)),
    ("advanced/biscuit.pov", (1, 1)),
]


def direct_frames(scene: Path, frames: tuple[int, int], out: Path) -> dict[int, Path]:
    """`povray` run by hand in a copy of the example's folder: frame -> its file."""
    copy = shutil.copytree(scene.parent, out / "scene")
    first, last = frames
    command = ["povray", scene.name, f"+W{SIZE[0]}", f"+H{SIZE[1]}", "-D", f"+O{out}/d.png"]
    if scene.suffix == ".ini":
        command += [f"+SF{first}", f"+EF{last}"]
    result = subprocess.run(command, cwd=copy, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{scene}: {result.stderr[-2000:]}"
    if scene.suffix != ".ini":
        return {1: out / "d.png"}
    animation = load_scene(scene.name, scene.read_text(), example_files(scene)).animation
    assert animation is not None
    return {n: out / animation.file_name(n, "d") for n in range(first, last + 1)}


def test_povray_examples_render_on_a_farm_as_povray_renders_them(tmp_path):
    folder = examples_folder()
    expected = {
        name: direct_frames(folder / name, frames, tmp_path / "direct" / str(i))
        for i, (name, frames) in enumerate(SCENES)
    }
    farm, _, _, nodes = start_farm(tmp_path / "farm", nodes=3)
    with farm_running(farm, tmp_path / "farm"):
        wait_for_rendering_mesh(nodes)
        submits = []
        for i, (name, (first, last)) in enumerate(SCENES):
            # Each scene's folder copied as the user has it; the INI (or .pov) submitted
            # as it ships: peerfarm packs it with its scene and includes.
            copy = shutil.copytree((folder / name).parent, tmp_path / "scenes" / str(i))
            command = [sys.executable, "-m", "peerfarm", "submit", str(copy / Path(name).name)]
            command += ["--node", nodes[i % len(nodes)], "--name", f"s{i}", "--chunk", "2"]
            command += ["--size", f"{SIZE[0]}x{SIZE[1]}", "--frames", f"{first}-{last}"]
            command += ["--output", str(tmp_path / "out" / str(i)), "--wait"]
            submits.append(
                subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            )
        job_ids, told = [], []
        for (name, _), submit in zip(SCENES, submits, strict=True):
            stdout, stderr = submit.communicate(timeout=300)
            assert submit.returncode == 0, f"{name}: {stdout}{stderr}"
            job_ids.append(stdout.splitlines()[0])
            told.append(stderr)
        # `peerfarm submit` says what it overrode before the job renders...
        assert (
            "peerfarm: note: allnormals.ini line 15: Output_File_Name=allnormals is "
            "overridden: peerfarm names the frames itself"
        ) in told[1]
        for i, (name, _) in enumerate(SCENES):
            for n, theirs in expected[name].items():
                ours = np.asarray(Image.open(tmp_path / "out" / str(i) / f"s{i}_{n:04d}.png"))
                assert ours.shape == (SIZE[1], SIZE[0], 3), name
                assert np.array_equal(ours, np.asarray(Image.open(theirs))), (
                    f"{name} frame {n} differs from povray's"
                )
        # ... and the job's log on the nodes that rendered it says it too.
        logs = peerfarm_cli("logs", job_ids[1], "--node", nodes[0])
        assert logs.returncode == 0, logs.stderr
        assert (
            "peerfarm-povray: note: allnormals.ini line 15: Output_File_Name=allnormals is "
            "overridden: peerfarm names the frames itself"
        ) in logs.stdout


def test_a_failing_povray_scene_fails_its_job_with_povrays_error_first(tmp_path):
    """The job's error was the last 2,000 characters of the chunk's log, which began
    inside POV-Ray's banner ("McElhiney  Douglas Muir ..."): its "Parse Error" came at
    the end, under 40 lines of settings. It starts at the first line naming an error
    now, from the last try only (the chunk's log keeps all three)."""
    scene = tmp_path / "broken.pov"
    scene.write_text('#include "nowhere_to_be_found.inc"\nsphere { 0, 1 }\n')
    farm, _, _, nodes = start_farm(tmp_path / "farm", nodes=1)
    with farm_running(farm, tmp_path / "farm"):
        wait_for_rendering_mesh(nodes)
        cli = peerfarm_cli(
            "submit", str(scene), "--node", nodes[0], "--output", str(tmp_path / "out"),
            "--wait", timeout=180,
        )  # fmt: skip
    assert cli.returncode == 1, cli.stdout + cli.stderr
    said = cli.stderr.split("renderer exited with code 1: ", 1)[1]
    assert said.startswith("File 'broken.pov' line 1: "), said
    assert "Cannot open include file" in said and "Douglas Muir" not in said
    assert said.count("Parse Error: Cannot open include file") == 1  # this try's only
