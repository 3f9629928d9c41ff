"""The built-in ray tracer: scene format, clock rule, safe expressions, images, and its CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from peerfarm.renderers.builtin import (
    SceneError,
    builtin_scene_text,
    frame_clock,
    load_scene_text,
    render_frame,
    save_png,
    scene_frame_range,
)

REPO = Path(__file__).resolve().parents[1]


def scene_text(**overrides: object) -> str:
    scene: dict[str, object] = {
        "format": "peerfarm-scene/1",
        "camera": {"position": [0, 2, 6], "look_at": [0, 0.5, 0]},
        "lights": [{"position": [4, 6, 4]}],
        "objects": [
            {"type": "plane", "normal": [0, 1, 0], "offset": 0},
            {"type": "sphere", "center": [0, 1, 0], "radius": 1},
        ],
    }
    scene.update(overrides)
    return json.dumps(scene)


@pytest.fixture(scope="module")
def demo():
    return load_scene_text(builtin_scene_text("demo"))


# --- determinism and animation ---------------------------------------------------------------


def test_same_frame_renders_identically(demo):
    first = render_frame(demo, 5, 64, 48)
    second = render_frame(demo, 5, 64, 48)
    assert first.dtype == np.uint8 and first.shape == (48, 64, 3)
    assert first.tobytes() == second.tobytes()


def test_full_size_frame(demo):
    pixels = render_frame(demo, 1, 320, 240)
    assert pixels.shape == (240, 320, 3) and pixels.dtype == np.uint8
    # Not a blank frame: sky, floor and objects give many distinct colours.
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 1000


def test_animation_moves(demo):
    assert scene_frame_range(demo) == (1, 48)
    assert not np.array_equal(render_frame(demo, 1, 64, 48), render_frame(demo, 24, 64, 48))


def test_save_png_round_trips_and_leaves_no_temp_file(tmp_path, demo):
    pixels = render_frame(demo, 2, 64, 48)
    path = tmp_path / "frame.png"
    save_png(pixels, path)
    assert os.listdir(tmp_path) == ["frame.png"]
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert np.array_equal(np.asarray(image.convert("RGB")), pixels)


# --- the clock -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("initial_frame", "final_frame", "initial_clock", "final_clock"),
    [(1, 48, 0.0, 1.0), (0, 10, -2.0, 3.5), (10, 20, 1.0, 0.0), (5, 5, 0.25, 9.0)],
)
def test_clock_follows_povray_rule(initial_frame, final_frame, initial_clock, final_clock):
    animation = dict(
        initial_frame=initial_frame,
        final_frame=final_frame,
        initial_clock=initial_clock,
        final_clock=final_clock,
    )
    scene = load_scene_text(scene_text(animation=animation))
    assert scene_frame_range(scene) == (initial_frame, final_frame)
    for frame in range(initial_frame, final_frame + 1):
        if initial_frame == final_frame:
            expected = initial_clock
        else:
            expected = initial_clock + (final_clock - initial_clock) * (frame - initial_frame) / (
                final_frame - initial_frame
            )
        assert frame_clock(scene, frame) == expected
    assert frame_clock(scene, initial_frame) == initial_clock


def test_animation_defaults_to_a_still_like_povray():
    scene = load_scene_text(scene_text())
    assert scene_frame_range(scene) == (1, 1)
    assert frame_clock(scene, 1) == 0.0


def test_frame_outside_range_is_refused(demo):
    with pytest.raises(SceneError, match="outside the scene's frame range 1-48"):
        render_frame(demo, 49, 8, 8)


# --- the safe expression evaluator -----------------------------------------------------------


def radius_expression_error(expression: str) -> str:
    objects = [{"type": "sphere", "center": [0, 1, 0], "radius": expression}]
    with pytest.raises(SceneError) as caught:
        load_scene_text(scene_text(objects=objects))
    return str(caught.value)


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("__import__('os')", "function '__import__' is not allowed"),
        ("os", "name 'os' is not allowed"),
        ("clock.real", "attribute access is not allowed"),
        ("(lambda: 1)()", "only calls of the listed math functions"),
        ("lambda: clock", "lambda is not allowed"),
        ("9**9**9", "exponent"),
        ("10 ** 400", "fails"),
        ("clock if 1 else 2", "if/else is not allowed"),
        ("[1][0]", "is not allowed"),
        ("'text'", "only numbers"),
        ("1 // 2", "operator '//' is not allowed"),
        ("sqrt(clock - 1)", "math domain error"),
        ("1 / clock", "division by zero"),
        ("sin(1, 2)", "sin() takes 1 arguments, got 2"),
        ("1 +", "invalid expression"),
        ("-" * 300 + "1", "nested too deeply"),
    ],
)
def test_evaluator_rejects_unsafe_or_broken_expressions(expression, reason):
    message = radius_expression_error(expression)
    assert message.startswith("objects[0].radius: ")
    assert reason in message


def test_evaluator_computes_whitelisted_math():
    expression = "clamp(mix(1, 3, 0.5) + max(0, -1) * sin(pi) + abs(-0.5) % 2, 0.1, 2.4) + e - e"
    objects = [
        {"type": "sphere", "center": [0, 1, 0], "radius": expression},
        {"type": "sphere", "center": [0, "2**3 - atan2(0, 1) + floor(clock)", 0], "radius": 1},
    ]
    scene = load_scene_text(scene_text(objects=objects))
    from peerfarm.renderers.builtin.scene import resolve_frame

    resolved = resolve_frame(scene, 1)
    assert resolved.objects[0].radius == 2.4
    assert resolved.objects[1].center == (0.0, 8.0, 0.0)


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"format": "povray"}, "format: expected 'peerfarm-scene/1'"),
        ({"camera": {"position": [0, 1, 5]}}, "camera.look_at: this required field is missing"),
        (
            {"camera": {"position": [0, 1], "look_at": [0, 0, 0]}},
            "camera.position: expected a list",
        ),
        ({"ambient": True}, "ambient: expected a number"),
        ({"ambient": 2}, "ambient: must be >= 0 and <= 1"),
        ({"lights": [{"position": [0, 5, 0], "colour": [1, 1, 1]}]}, "did you mean 'color'"),
        ({"objects": [{"type": "cube"}]}, "objects[0].type: expected 'sphere', 'plane' or 'box'"),
        (
            {"objects": [{"type": "sphere", "center": [0, 0, 0], "radius": -1}]},
            "objects[0].radius: must be > 0",
        ),
        (
            {"objects": [{"type": "box", "min": [0, 0, 0], "max": [1, 0, 1]}]},
            "objects[0].max[1]: must be greater than min[1]",
        ),
        (
            {"objects": [{"type": "plane", "normal": [0, 1, 0]}]},
            "objects[0]: a plane needs exactly one of 'point' or 'offset'",
        ),
        (
            {
                "objects": [
                    {
                        "type": "sphere",
                        "center": [0, 0, 0],
                        "radius": 1,
                        "material": {"checker": {"color": [0, 0, 0]}},
                    },
                ]
            },
            "objects[0].material.checker: a checker pattern is only available on planes",
        ),  # fmt: skip
        ({"animation": {"final_frame": "10"}}, "animation.final_frame: expected a whole number"),
        ({"max_depth": 99}, "max_depth: expected a whole number 0..5"),
        ({"objects": [{"type": "sphere", "center": [0, 0, 0], "radius": 1}] * 257}, "at most 256"),
        ({"camera": {"position": [0, 1, 0], "look_at": [0, 5, 0]}}, "camera.up: must not be"),
    ],
)
def test_validation_names_the_field(overrides, message):
    with pytest.raises(SceneError) as caught:
        load_scene_text(scene_text(**overrides))
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not valid JSON"),
        ('{"format": "peerfarm-scene/1", "ambient": NaN}', "NaN"),
        ('{"format": "peerfarm-scene/1", "format": "peerfarm-scene/1"}', "appears twice"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        (" " * (300 * 1024), "larger than the limit"),
    ],
)
def test_bad_json_and_limits(text, message):
    with pytest.raises(SceneError, match=message):
        load_scene_text(text)


def test_infinite_number_names_the_field():
    with pytest.raises(SceneError, match="ambient: expected a finite number"):
        load_scene_text(scene_text().replace('"lights"', '"ambient": 1e999, "lights"'))


def test_expression_leaving_its_range_later_names_the_frame():
    scene = load_scene_text(
        scene_text(
            animation={"initial_frame": 1, "final_frame": 3},
            objects=[{"type": "sphere", "center": [0, 1, 0], "radius": "2*abs(clock - 0.5)"}],
        )
    )
    # Loading checks the first and last frame only; the middle one fails when rendered.
    assert render_frame(scene, 3, 8, 8).shape == (8, 8, 3)
    with pytest.raises(SceneError, match=r"objects\[0\]\.radius: must be > 0.*frame 2, clock 0.5"):
        render_frame(scene, 2, 8, 8)


def test_unknown_builtin_scene():
    with pytest.raises(SceneError, match="unknown built-in scene 'nope' \\(available: demo\\)"):
        builtin_scene_text("nope")
    with pytest.raises(SceneError, match="unknown built-in scene"):
        builtin_scene_text("../scenes/demo")


# --- what the images show --------------------------------------------------------------------


def test_sphere_casts_a_hard_shadow_on_the_floor():
    # Looking straight down; the light at +x puts the shadow of the sphere at x ~ -1.1, z = 0.
    text = scene_text(
        camera={"position": [0, 10, 0], "look_at": [0, 0, 0], "up": [0, 0, -1], "fov": 60},
        ambient=0.1,
        lights=[{"position": [10, 10, 0]}],
        objects=[
            {"type": "plane", "normal": [0, 1, 0], "offset": 0},
            {"type": "sphere", "center": [0, 1, 0], "radius": 0.5},
        ],
    )
    pixels = render_frame(load_scene_text(text), 1, 64, 48).astype(int)
    # x = -1.1 on the floor is column (1 + x / (10 tan 30deg)) * 32 ~ 26; row 24 is z = 0.
    in_shadow = pixels[23:26, 25:28].mean()
    lit_floor = pixels[23:26, 4:7].mean()
    assert in_shadow < 0.6 * lit_floor
    # Without the light blocked (sphere removed), the same spot is lit.
    text_no_sphere = text.replace(', {"type": "sphere", "center": [0, 1, 0], "radius": 0.5}', "")
    unblocked = render_frame(load_scene_text(text_no_sphere), 1, 64, 48).astype(int)
    assert unblocked[23:26, 25:28].mean() > 1.5 * in_shadow


def test_mirror_sphere_reflects_a_red_sphere():
    def render(with_red: bool) -> np.ndarray:
        objects = [
            {
                "type": "sphere",
                "center": [0, 0, 0],
                "radius": 1,
                "material": {"color": [1, 1, 1], "diffuse": 0, "reflection": 1},
            }
        ]
        if with_red:
            # Behind the camera: visible only in the mirror.
            red = {"color": [1, 0, 0], "diffuse": 1}
            objects.append({"type": "sphere", "center": [0, 0, 9], "radius": 2, "material": red})
        text = scene_text(
            camera={"position": [0, 0, 4], "look_at": [0, 0, 0], "fov": 40},
            background=[0, 0, 0],
            ambient=0.3,
            lights=[{"position": [0, 3, 5]}],
            objects=objects,
        )
        return render_frame(load_scene_text(text), 1, 64, 48).astype(int)

    with_red, without_red = render(True), render(False)
    red, green, blue = (with_red[..., i] for i in range(3))
    # The mirror fills the middle of the frame; the black sky leaves only the red sphere to see.
    reddish = (red > 100) & (red > 3 * (green + blue))
    assert reddish[12:36, 16:48].sum() >= 10
    assert without_red.max() < 10


# --- the renderer process ----------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-m", "peerfarm.renderers.builtin", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_cli_renders_frames_and_reports_each(tmp_path):
    scene_file = tmp_path / "demo.json"
    scene_file.write_text(builtin_scene_text("demo"))
    pattern = str(tmp_path / "out" / "demo_{frame:04d}.png")
    result = run_cli(
        "--scene-file", str(scene_file), "--frames", "3-4", "--size", "64x48",
        "--output-pattern", pattern,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    frame_lines = [line for line in result.stdout.splitlines() if line.startswith("FRAME ")]
    paths = [tmp_path / "out" / f"demo_{n:04d}.png" for n in (3, 4)]
    assert frame_lines == [f"FRAME 3 {paths[0]}", f"FRAME 4 {paths[1]}"]
    assert result.stdout.splitlines()[0] == "START 3"
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == (64, 48) and image.mode == "RGB"


def test_cli_processes_write_identical_files(tmp_path):
    outputs = []
    for run in ("a", "b"):
        pattern = str(tmp_path / run / "f_{frame:04d}.png")
        result = run_cli(
            "--scene-file", "builtin:demo", "--frames", "7", "--size", "64x48",
            "--output-pattern", pattern,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        outputs.append((tmp_path / run / "f_0007.png").read_bytes())
    assert outputs[0] == outputs[1]


def test_cli_bad_scene_exits_2_with_field_path(tmp_path):
    scene_file = tmp_path / "bad.json"
    objects = [{"type": "sphere", "center": [0, "__import__('os')", 0], "radius": 1}]
    scene_file.write_text(scene_text(objects=objects))
    result = run_cli(
        "--scene-file", str(scene_file), "--frames", "1", "--size", "8x8",
        "--output-pattern", str(tmp_path / "x_{frame}.png"),
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stdout == ""
    assert "peerfarm-builtin: error: " in result.stderr
    assert "objects[0].center[1]: function '__import__' is not allowed" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.glob("x_*"))


@pytest.mark.parametrize(
    "args",
    [
        ["--frames", "1-x", "--size", "8x8"],
        ["--frames", "1", "--size", "8"],
        ["--frames", "40-60", "--size", "8x8"],
    ],
)
def test_cli_bad_arguments_exit_2(tmp_path, args):
    pattern = str(tmp_path / "f_{frame}.png")
    result = run_cli("--scene-file", "builtin:demo", "--output-pattern", pattern, *args)
    assert result.returncode == 2
    assert "peerfarm-builtin: error: " in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "encoding",
    [
        # The C locale, coercion and UTF-8 mode off: stdout is ASCII.
        {"LANG": "C", "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"},
        # A pipe in a code page without "ł", as on a Windows machine set to Western
        # European (cp1252): the case that failed (issue 16 #2).
        {"LANG": "C.UTF-8", "PYTHONUTF8": "0", "PYTHONIOENCODING": "cp1252"},
    ],
    ids=["C-locale", "cp1252-pipe"],
)
def test_cli_reports_a_non_ascii_frame_path_in_utf8_whatever_the_locale(tmp_path, encoding):
    out_dir = tmp_path / "Michał" / "klatki"
    pattern = str(out_dir / "żółw_{frame:04d}.png")
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "PYTHONPATH": str(REPO),
        **encoding,
    }  # PYTHONIOENCODING only where the case sets it
    result = subprocess.run(
        [sys.executable, "-m", "peerfarm.renderers.builtin", "--scene-file", "builtin:demo",
         "--frames", "2", "--size", "8x8", "--output-pattern", pattern],
        capture_output=True, env=env, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode("utf-8", "replace")
    frame = out_dir / "żółw_0002.png"
    assert frame.is_file()
    # What the worker reads: bytes, decoded as UTF-8 (worker.py).
    assert result.stdout.decode("utf-8").splitlines() == ["START 2", f"FRAME 2 {frame}"]
