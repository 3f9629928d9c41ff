"""POV-Ray INI files as POV-Ray reads them, and what peerfarm does with each setting.

The oracle is the real povray: `+GI out.ini` (Create_Ini) makes POV-Ray write every
option it read, so each INI here, and every INI of POV-Ray's own example
distribution (Debian: povray-examples), is read by both and the readings compared.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_povray import ball_files, job, needs_sandbox, run_chunk, spec, write_files

from peerfarm.jobspec import prepare_new_job
from peerfarm.renderers.base import RendererError
from peerfarm.renderers.povray import PovrayRenderer
from peerfarm.renderers.povray.ini import _RULES, IniError, load_scene
from peerfarm.renderers.povray.ini_syntax import ALIASES, KEYWORDS, read_ini
from peerfarm.scenes.detect import decode_text

# Where distributions install POV-Ray 3.7's sample scenes (Debian/Ubuntu: povray-examples).
EXAMPLE_FOLDERS = [Path("/usr/share/doc/povray/examples"), Path("/usr/share/povray-3.7/scenes")]


def examples_folder() -> Path:
    """POV-Ray's example scenes; skips (or, under CI, fails) when they are not installed."""
    for folder in EXAMPLE_FOLDERS:
        if any(folder.rglob("*.ini")):
            return folder
    if os.environ.get("CI"):
        pytest.fail(
            "POV-Ray's example scenes are not installed, but CI is set: .ci/run must install "
            "them (apt-get install povray-examples)",
            pytrace=False,
        )
    pytest.skip("POV-Ray's example scenes are not installed (apt-get install povray-examples)")


def example_files(ini: Path) -> set[str]:
    """The files of an example's folder, as a scene package's names."""
    return {p.relative_to(ini.parent).as_posix() for p in ini.parent.rglob("*") if p.is_file()}


# --- the oracle: what POV-Ray itself read ---

# Set on povray's command line below, so POV-Ray's values are not the INI's.
COMMAND_LINE_KEYS = {
    "Input_File_Name",
    "Width",
    "Height",
    "Display",
    "Output_To_File",
    "Create_Ini",
    "Subset_Start_Frame",
    "Subset_End_Frame",
}
# Read by POV-Ray but never written by Create_Ini (its writer has no case for them).
NOT_WRITTEN = {
    "File_Gamma",
    "Display_Gamma",
    "Dither_Method",
    "Include_Ini",
    "Video_Mode",
    "Buffer_Output",
    "Buffer_Size",
    "Create_Histogram",
    "Histogram_Name",
    "Histogram_Grid_Size",
    "Histogram_Type",
}
MULTI = ("Library_Path", "Declare")  # POV-Ray keeps every value, in order


def povray_reading(ini: Path, work: Path) -> dict[str, list[str]] | None:
    """What povray read from `ini` (key -> values, as Create_Ini writes them), or None
    when povray refuses the INI. No system povray.ini (POVINI points to an empty file),
    an empty scene, one tiny frame, no output: only the reading counts."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "empty.ini").write_text("")
    (work / "empty.pov").write_text("camera { location -z look_at 0 }\n")
    out = work / "read.ini"
    result = subprocess.run(
        ["povray", str(ini), f"+I{work / 'empty.pov'}", "+W8", "+H6", "-D", "-F"]
        + ["+SF1", "+EF1", f"+GI{out}"],
        cwd=ini.parent,
        env={**os.environ, "POVINI": str(work / "empty.ini")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if not out.exists():
        assert result.returncode != 0, result.stderr[-2000:]
        return None
    reading: dict[str, list[str]] = {}
    for line in out.read_text().splitlines():
        key, _, value = line.partition("=")
        if value[:1] == '"' and value[-1:] == '"':
            value = value[1:-1]
        reading.setdefault(key, []).append(value)
    return reading


def same_value(key: str, ours: str, theirs: str) -> bool:
    if ours.lower() in ("on", "off"):
        return ours == theirs.lower()
    if key == "Declare" and '"' not in ours:
        name, _, number = ours.partition("=")
        their_name, _, their_number = theirs.partition("=")
        return name == their_name and float(number) == pytest.approx(float(their_number), 1e-5)
    if key.endswith("_Return"):
        return ours.lower() == theirs.lower()
    try:  # Create_Ini writes numbers with printf's %g
        return float(ours) == pytest.approx(float(theirs), rel=1e-5)
    except ValueError:
        return ours == theirs


def assert_read_as_povray_reads(ini: Path, text: str, theirs: dict[str, list[str]] | None):
    try:
        settings = read_ini(text, ini.name).settings
    except IniError as exc:
        assert theirs is None, f"{ini}: povray reads it, peerfarm refuses it: {exc}"
        return
    assert theirs is not None, f"{ini}: peerfarm reads it, povray stops with an error"
    ours: dict[str, list[str]] = {}
    for setting in settings:
        if setting.key in MULTI:
            ours.setdefault(setting.key, []).append(setting.value)
        else:
            ours[setting.key] = [setting.value]
    if "Declare" in ours:  # POV-Ray's writer skips string declares
        ours["Declare"] = [d for d in ours["Declare"] if '"' not in d]
        if not ours["Declare"]:
            del ours["Declare"]
    if "Library_Path" in ours:  # POV-Ray keeps the first of equal folders (vfecontrol.cpp)
        ours["Library_Path"] = list(dict.fromkeys(ours["Library_Path"]))
    for key in set(ours) | set(theirs):
        if key in COMMAND_LINE_KEYS or (key == "Work_Threads" and key not in ours):
            continue
        assert key in theirs or key in NOT_WRITTEN, f"{ini}: peerfarm reads {key}, povray not"
        if key not in theirs:
            continue
        assert key in ours, f"{ini}: povray reads {key}={theirs[key]}, peerfarm does not"
        assert len(ours[key]) == len(theirs[key]) and all(
            same_value(key, a, b) for a, b in zip(ours[key], theirs[key], strict=True)
        ), f"{ini}: {key}: peerfarm reads {ours[key]}, povray {theirs[key]}"


needs_povray = pytest.mark.skipif(
    shutil.which("povray") is None and not os.environ.get("CI"),
    reason="povray is not installed (apt-get install povray)",
)

TRICKY = {
    # Switches and Key=Value on one line; after a Key=Value POV-Ray skips the line's rest;
    # a value with a blank runs on; comma lists; nothing after the first [section].
    "mixed": "Input_File_Name=a.pov\nBounding_Threshold=40 Quality=3\n"
    "+kf0.1666 +kff20 +kc declare=fp=0 +R7\nAntialias_Threshold=.3, 0.2 ; c\n"
    'Library_Path=inc, "b c"\nLibrary_Path=inc\n[Section]\nQuality=9\n',
    # POV-Ray's switch table, matched in its order (+KFF before +KF, +A0 before +A).
    "switches": "+A0.3 +AM2 -J +R4 +Q9 +KFI3 +KFF17 +KI0.7 +KF0.2 +UA +FN16 +MB20 +STP2 "
    "+BS16 +TH +HR -UV +WL5 +MI64 +SC0.25 +EC0.75 +EF0.9 -GA +GP +KLA +RFI +RVP\n",
    # Values as C reads them: on/off by prefix, numbers with trailing text, blanks.
    "values": "Antialias=yes please\nJitter=Enabled\nCyclic_Animation=\n"
    "Bounding_Threshold=25xyz\nVersion=3.7 ; comment\nBits_Per_Colour=12\n"
    "Quality=  7 # hash comment\nTest_Abort_Count=50 \nOutput_File_Type=tga\n"
    "Warning_Level=5 Quality=2\nAntialias_Threshold=0.5 +A\nDeclare=N=-3e2\n",
    # Quotes, plain strings (a scene, a library folder), empty file and command settings.
    "quotes": 'Input_File_Name=\'my "big" scene.pov\'\n+I"file\'s.pov"\n'
    "Declare='Title=\"hello\"'\nscene.pov\nlib/\n+W10\nAll_File=\nPre_Frame_Command=\n"
    "Fatal_Error_Command=\nFatal_Error_Return=I\nRadiosity_File_Name=my cache.rca\n"
    "+Q5 [Low] +R2\nQuality=3\n",
    # What POV-Ray refuses, peerfarm refuses too.
    "empty-number": "Final_Frame=\n",
    "unknown-switch": "+W10 +Z\n",
    "unknown-key": "Pretty_Colours=on\n",
    "switch-without-value": "+W\n",
    "bad-number": "Height=abc\n",
    "bad-type": "Output_File_Type=Q\n",
    "bad-type-modifier": "+FNX\n",
}


@needs_povray
@pytest.mark.parametrize("name", sorted(TRICKY))
def test_tricky_inis_are_read_as_povray_reads_them(tmp_path, name):
    ini = tmp_path / f"{name}.ini"
    ini.write_text(TRICKY[name])
    assert_read_as_povray_reads(ini, TRICKY[name], povray_reading(ini, tmp_path / "povray"))


@needs_povray
def test_every_example_ini_is_read_as_povray_reads_it(tmp_path):
    inis = sorted(examples_folder().rglob("*.ini"))
    assert len(inis) >= 40  # POV-Ray 3.7.0.10 ships 41
    with ThreadPoolExecutor(8) as pool:  # povray mostly waits here: a few seconds in all
        readings = list(
            pool.map(lambda i: povray_reading(inis[i], tmp_path / str(i)), range(len(inis)))
        )
    for ini, theirs in zip(inis, readings, strict=True):
        assert_read_as_povray_reads(ini, decode_text(ini.read_bytes()), theirs)


# --- what peerfarm does with POV-Ray's examples ---

# The examples peerfarm refuses, and why: both are INIs POV-Ray itself cannot render.
REFUSED_EXAMPLES = {
    # A template to fill in: "Input_File_Name= ... .pov", "Final_Frame=" (empty).
    "__empty.ini": "__empty.ini line 19: Final_Frame=: expected a whole number (POV-Ray stops",
    # Names reflect.pov, which the example folder does not have.
    "reflection.ini": "Input_File_Name 'reflect.pov' is not in the scene package",
}
# What the accepted examples set that peerfarm overrides (all output settings).
OVERRIDES = re.compile(
    r"(All_File|Output_File_Name|Output_To_File)=\S* is overridden: "
    r"(POV-Ray's messages go to the chunk's log|peerfarm names the frames itself|"
    r"a farm delivers frames as files)"
)


def test_every_example_ini_is_accepted_or_refused_for_a_real_reason():
    inis = sorted(examples_folder().rglob("*.ini"))
    overridden = 0
    for ini in inis:
        text = decode_text(ini.read_bytes())
        try:
            scene = load_scene(ini.name, text, example_files(ini))
        except IniError as exc:
            assert ini.name in REFUSED_EXAMPLES, f"{ini} is refused: {exc}"
            assert REFUSED_EXAMPLES[ini.name] in str(exc)
            continue
        assert ini.name not in REFUSED_EXAMPLES, f"{ini} is accepted"
        for note in scene.notes:
            assert note.startswith(f"{ini.name} line "), note
            assert OVERRIDES.search(note), note
        overridden += bool(scene.notes)
        # What peerfarm gives POV-Ray names no file of the scene's own choosing.
        chunk = scene.chunk_ini(range(*scene.frame_range), "/out/frame.png")
        assert chunk.count("Output_File_Name=") == 1 and "All_File" not in chunk
    # 22 set Output_File_Name (21 accepted and __empty.ini); benchmark.ini All_File and more.
    assert overridden == 22
    assert len(inis) - len(REFUSED_EXAMPLES) == 39


def test_what_povray_itself_refuses_of_the_examples(tmp_path):
    # The two refused examples fail in POV-Ray too: peerfarm only says so earlier.
    folder = examples_folder()
    for name in REFUSED_EXAMPLES:
        (ini,) = folder.rglob(name)
        copy = shutil.copytree(ini.parent, tmp_path / ini.parent.name)
        result = subprocess.run(
            ["povray", name, "+W8", "+H6", "-D", "-F", "+SF1", "+EF1"],
            cwd=copy,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode != 0, f"povray renders {name}"


# --- peerfarm's judgement, setting by setting ---


def test_every_povray_setting_has_a_rule():
    assert set(_RULES) == set(KEYWORDS) - set(ALIASES)


def scene_of(ini: str, **more):
    return load_scene("s.ini", "Input_File_Name=a.pov\n" + ini, {"a.pov", "inc/x.inc"}, **more)


@pytest.mark.parametrize(
    ("line", "note"),
    [
        ("Output_File_Name=/home/me/.bashrc", "peerfarm names the frames itself"),
        ("+O../out/", "peerfarm names the frames itself"),
        ("+GA/tmp/all.log", "POV-Ray's messages go to the chunk's log"),
        ("Warning_File=warn.txt", "POV-Ray's messages go to the chunk's log"),
        ("-F", "a farm delivers frames as files"),
        ("Create_Ini=all.ini", "peerfarm writes POV-Ray's INI itself"),
        ("+C", "no partial image to continue"),
        ("Radiosity_To_File=on", "radiosity cache would be saved on a render node"),
        ("+RTR", "real-time raytracing"),
        ("Frame_Step=3", "every frame of the job's range"),
    ],
)
def test_output_settings_are_overridden_with_a_note(line, note):
    scene = scene_of(f"; a comment\n{line}\n")
    (written,) = scene.notes
    assert written.startswith("s.ini line 3") and " is overridden: " in written
    assert note in written
    setting = written.split(": ", 1)[1].split(" is overridden")[0]
    ini = scene.chunk_ini(range(1, 2), "/out/frame.png")
    assert setting not in ini.splitlines()
    assert 'Output_File_Name="/out/frame.png"' in ini and "Output_To_File=on" in ini


def test_settings_that_do_nothing_are_dropped_without_a_note():
    scene = scene_of(
        "Pre_Frame_Command=\nPost_Scene_Return=I\nContinue_Trace=off\nHistogram_Type=C\n"
        "Field_Render=on\nLight_Buffer=on\nStart_Column=0\nEnd_Column=1\n+SR1 +ER1.0\n"
        "Radiosity_File_Name=x.rca\nInclude_Header=\nVerbose=on\n+P -D +X\nFrame_Step=1\n"
    )
    assert scene.notes == ()
    assert {s.key for s in scene.settings} == {"Input_File_Name", "Width", "Height"}


def test_what_povray_skips_is_noted():
    scene = scene_of("Width=40 Height=30\nAntialias_Threshold=0.5 +A\n+W20 [Low] +H10\nQuality=3\n")
    # Height=30 runs into Width's value, +A is the rest of a Key=Value line, and nothing
    # from [Low] on counts: POV-Ray reads none of them.
    assert scene.size == (20, 120)
    assert scene.value("Antialias") is None and scene.value("Quality") is None
    assert scene.notes == (
        "s.ini line 2: POV-Ray reads Width=40 and ignores the rest of the value, "
        "'Height=30'; so does peerfarm (put another setting on a line of its own)",
        "s.ini line 3: POV-Ray reads one Key=Value per line and ignores the rest of it, "
        "'+A'; so does peerfarm (put it on a line of its own if it should count)",
        "s.ini line 4: [Low] starts a named section; POV-Ray reads only the settings before "
        "the first section of an INI given without a section name, and so does peerfarm: "
        "the rest of the file is ignored",
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("Post_Frame_Command=rm -rf ~ ; bye", "s.ini line 2: Post_Frame_Command=rm -rf ~ is not"),
        ("User_Abort_Command=x", "shell-out commands would run programs"),
        ("+L/usr/share", "Library_Path=/usr/share is not allowed: it reaches outside"),
        ("Library_Path=C:\\povray\\include", "reaches outside the scene folder"),
        ("+HI../../etc/passwd", "Include_Header=../../etc/passwd is not allowed"),
        ("+RFI +RFO", "which frames rendered on different nodes cannot do"),
        ("+RFI +RF/tmp/cache.rca", "Radiosity_File_Name=/tmp/cache.rca is not allowed"),
        ("more.ini", "Include_Ini=more.ini is not allowed: POV-Ray would read that INI"),
        ("Antialias on", "Include_Ini=Antialias on is not allowed"),
        ("Start_Row=2\nEnd_Row=1.5", "select no part of the 160x120 image"),
        ("Grayscale_Output=on\nOutput_File_Type=J", "grey frames only as PNG or PPM"),
    ],
)
def test_refusals_name_file_line_and_danger(line, message):
    with pytest.raises(IniError, match=re.escape(message)):
        scene_of(line + "\n", fmt="jpg" if "=J" in line else "png")


def test_inside_paths_string_declares_and_partial_frames_are_passed_on():
    scene = scene_of(
        "Library_Path=inc\n+HIx.inc\nDeclare='Title=\"hi there\"'\n+SR0.5\n"
        "Dither=on\nDither_Method=b4\n+BS16\nOutput_File_Type=n\n"
    )
    assert scene.notes == ()
    ini = scene.chunk_ini(range(1, 2), "/out/frame.png").splitlines()
    for line in (
        'Library_Path="inc"',
        'Include_Header="x.inc"',
        "Declare='Title=\"hi there\"'",
        "Start_Row=0.5",
        "Dither_Method=B4",
        "Render_Block_Size=16",
        "Output_File_Type=N",
    ):
        assert line in ini
    # Tiles: Bayer dithering and 16-pixel blocks fit the 32-pixel tile grid; a partial
    # frame, 24-pixel blocks and error-diffusion dithering do not.
    assert scene_of("+BS16\n+TH\n+THB2\n").tile_problem(32) is None
    assert "part of the frame" in scene.tile_problem(32)
    assert "not a multiple of 24" in scene_of("+BS24\n").tile_problem(32)
    assert "error diffusion" in scene_of("+TH\n").tile_problem(32)


def test_tiled_jobs_refuse_what_would_not_stitch():
    files = {"s.ini": b"Input_File_Name=a.pov\nEnd_Column=0.5\n", "a.pov": b""}
    with pytest.raises(RendererError, match="--tiles 4: s.ini line 2: the INI renders only part"):
        PovrayRenderer().check_job(spec(files, "s.ini", tiles=4, width=128, height=96))
    assert PovrayRenderer().check_job(spec(files, "s.ini")) == (1, 1)


def test_notes_travel_beside_the_new_job_payload():
    files = {
        "s.ini": b"Input_File_Name=a.pov\nOutput_File_Name=mine\n+GS\n+GSstats.txt\n",
        "a.pov": b"",
    }
    request = spec(files, "s.ini").replace(renderer="povray", output="/tmp/out")
    new = prepare_new_job(request, "j1", {"povray": PovrayRenderer()}, {"povray"})
    assert new.notes == (
        "s.ini line 2: Output_File_Name=mine is overridden: peerfarm names the frames itself "
        "(NAME_0001.png, ... in the job's output folder)",
        "s.ini line 4 (+GSstats.txt): Statistic_File=stats.txt is overridden: POV-Ray's "
        "messages go to the chunk's log on the render node instead (`peerfarm logs JOB` "
        "shows them)",
    )
    assert "notes" not in new.payload and new.payload["main"] == "s.ini"


@needs_sandbox
def test_a_partial_frame_and_an_overridden_output_render_as_povray_renders_them(tmp_path):
    ini = (
        "Input_File_Name=scene.pov\nWidth=64\nHeight=48\nOutput_File_Name=mine.png\n"
        "+SC0.25 +EC40 Start_Row=10 ; rows 10 to the end\n+A0.3 +GAall.log\n"
    )
    files = ball_files(ini)
    direct_dir = write_files(tmp_path / "direct", files)
    direct = subprocess.run(
        ["povray", "scene.ini", "-D"], cwd=direct_dir, capture_output=True, text=True, timeout=60
    )
    assert direct.returncode == 0, direct.stderr[-2000:]
    work_dir = write_files(tmp_path / "work", files)
    result, pattern = run_chunk(work_dir, tmp_path / "frames", job("scene.ini", size=None), 1, 1)
    assert result.returncode == 0, result.stderr[-3000:]
    ours = np.asarray(Image.open(pattern.format(frame=1)))
    theirs = np.asarray(Image.open(direct_dir / "mine.png"))
    assert np.array_equal(ours, theirs)
    assert ours[:9].max() == 0 and ours[9:, 16:40].max() > 0  # only the region is rendered
    # The overrides are in the chunk's log, and POV-Ray wrote no file of the INI's choice.
    assert "note: scene.ini line 4: Output_File_Name=mine.png is overridden" in result.stderr
    assert "note: scene.ini line 6 (+GAall.log): All_File=all.log is overridden" in result.stderr
    assert not (work_dir / "all.log").exists() and not (work_dir / "mine.png").exists()


@needs_sandbox
def test_tiles_keep_the_inis_render_block_size(tmp_path):
    # POV-Ray's antialiasing looks only within a block: tiles rendered with the INI's
    # 16-pixel blocks (on the 32-pixel tile grid) stitch into the frame povray renders.
    from peerfarm.runtime.stitch import stitch_tiles

    ini = "Input_File_Name=scene.pov\nWidth=96\nHeight=64\n+A0.1 +R3 +BS16\n"
    files = ball_files(ini)
    direct_dir = write_files(tmp_path / "direct", files)
    direct = subprocess.run(
        ["povray", "scene.ini", "-D", "+Od.png"], cwd=direct_dir, capture_output=True, timeout=60
    )
    assert direct.returncode == 0, direct.stderr[-2000:]
    work_dir = write_files(tmp_path / "work", files)
    tiles = []
    for index in range(6):
        pattern = str(tmp_path / f"tile{index}_{{frame:04d}}.png")
        command = PovrayRenderer().chunk_command(
            job("scene.ini", size=None), range(1, 2), work_dir, pattern, tile=(index, 6)
        )
        result = subprocess.run(command, cwd=work_dir, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr[-2000:]
        assert "Render_Block_Size=16" in result.stderr  # the INI POV-Ray got
        tiles.append(Path(pattern.format(frame=1)))
    stitched = np.asarray(Image.open(io.BytesIO(stitch_tiles(tiles, 32))))
    assert np.array_equal(stitched, np.asarray(Image.open(direct_dir / "d.png")))
