"""A .blend with the files it uses: found with BAT, packaged, rendered on a real farm.

Blender itself makes the scenes (one Blender start for all): a texture at an
absolute path outside the .blend's folder, a linked library (itself using a
texture beside it), an image sequence, and files that must be refused. Each
is rendered through a farm of two real nodes and compared with Blender's own
render of the original file, pixel for pixel (Cycles on the CPU, 4 samples,
64x48: deterministic and quick).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

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
from PIL import Image, ImageChops

from peerfarm.renderers.blender.dependencies import trace
from peerfarm.scenes import Limits, PackageError, load_package, unpack_to

if shutil.which("blender") is None:
    if os.environ.get("CI"):
        pytest.fail(
            "blender is not installed, but CI is set (apt-get install blender)", pytrace=False
        )
    pytest.skip("blender is not installed (apt-get install blender)", allow_module_level=True)

# Run inside Blender: every scene of these tests, saved with absolute paths kept as they are.
MAKE = r"""
import bpy, json, os, sys
p = json.loads(sys.argv[sys.argv.index("--") + 1])

def fresh(frames):
    bpy.ops.wm.read_factory_settings()
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 4
    scene.cycles.seed = 7
    scene.cycles.use_denoising = False
    scene.render.resolution_x, scene.render.resolution_y = 64, 48
    scene.render.resolution_percentage = 100
    scene.frame_start, scene.frame_end = 1, frames
    return scene

def png(path, colors, size=8):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img = bpy.data.images.new("tmp", size, size)
    pixels = []
    for y in range(size):
        for x in range(size):
            pixels += colors[(x // 4 + y // 4) % len(colors)]
    img.pixels = pixels
    img.filepath_raw = path
    img.file_format = "PNG"
    img.save()
    bpy.data.images.remove(img)

def textured(obj, image, name):
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    tex = mat.node_tree.nodes.new("ShaderNodeTexImage")
    tex.image = image
    tex.interpolation = "Closest"
    bsdf = mat.node_tree.nodes["Principled BSDF"]
    mat.node_tree.links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
    obj.data.materials.clear()
    obj.data.materials.append(mat)
    return tex

def save(path):
    bpy.ops.wm.save_as_mainfile(filepath=path, relative_remap=False)

def unused_image(name, path):
    img = bpy.data.images.new(name, 4, 4)
    img.source = "FILE"
    img.filepath = path
    img.use_fake_user = True  # kept in the file although nothing uses it

RED, GREEN, BLUE, WHITE = (1, 0.1, 0, 1), (0.1, 0.8, 0.1, 1), (0.1, 0.2, 1, 1), (1, 1, 1, 1)

# (1) A texture at an absolute path outside the .blend's folder.
png(p["wood"], [RED, WHITE])
fresh(2)
cube = bpy.data.objects["Cube"]
textured(cube, bpy.data.images.load(p["wood"]), "Wood")
save(p["texture"])
bpy.ops.wm.save_as_mainfile(
    filepath=p["compressed"], relative_remap=False, compress=True, copy=True
)

# (2) A library whose object uses a texture beside it (a relative path), linked into the shot.
png(p["brick"], [BLUE, WHITE])
fresh(1)
for ob in list(bpy.data.objects):
    bpy.data.objects.remove(ob)
bpy.ops.mesh.primitive_cube_add(size=1.2, location=(0.5, -2.2, 1.4))
prop = bpy.context.active_object
prop.name = "Prop"
save(p["library"])
image = bpy.data.images.load(p["brick"])
image.filepath = "//maps/brick.png"
textured(prop, image, "Brick")
save(p["library"])
fresh(2)
with bpy.data.libraries.load(p["library"], link=True) as (source, target):
    target.objects = ["Prop"]
for ob in target.objects:
    bpy.context.scene.collection.objects.link(ob)
save(p["linked"])
for key in ("gone_library", "bad_library"):  # the same shot, its library elsewhere
    bpy.data.libraries[0].filepath = p[key]
    save(p["linked_" + key])

# (3) An image sequence, one frame per scene frame, named by an absolute path.
for n, color in enumerate([RED, GREEN, BLUE, WHITE], start=1):
    png(p["frames"] % n, [color])
fresh(4)
image = bpy.data.images.load(p["frames"] % 1)
image.source = "SEQUENCE"
tex = textured(bpy.data.objects["Cube"], image, "Flicker")
tex.image_user.frame_duration = 4
tex.image_user.frame_start = 1
tex.image_user.use_auto_refresh = True
save(p["sequence"])

# Fluid domains whose caches are in a folder named by an absolute path: one baked
# (the test puts files there), one not (the test removes whatever Blender wrote there).
for key in ("baked", "unbaked"):
    fresh(1)
    fluid = bpy.data.objects["Cube"].modifiers.new("Fluid", "FLUID")
    fluid.fluid_type = "DOMAIN"
    fluid.domain_settings.cache_directory = p[key + "_cache"]
    save(p[key])

# Files that must not be sent.
fresh(1)
unused_image("gone.png", p["gone"])
save(p["missing"])
fresh(1)
unused_image("passwd", "/etc/passwd")
save(p["system"])
fresh(1)
unused_image("key.png", p["secret"])
save(p["hidden"])
fresh(1)
unused_image("pipe.png", p["pipe"])
save(p["pipe_blend"])
"""


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("blend-files")
    shots = root / "shots"
    paths = SimpleNamespace(
        wood=root / "textures" / "wood.png",
        texture=shots / "texture.blend",
        compressed=shots / "compressed.blend",
        brick=root / "libs" / "maps" / "brick.png",
        library=root / "libs" / "props.blend",
        linked=shots / "linked.blend",
        frames=str(shots / "seq" / "f_%04d.png"),
        sequence=shots / "sequence.blend",
        gone=root / "nowhere" / "gone.png",
        missing=shots / "missing.blend",
        system=shots / "system.blend",
        secret=root / ".secret" / "key.png",
        hidden=shots / "hidden.blend",
        pipe=root / "pipe.png",
        pipe_blend=shots / "pipe.blend",
        gone_library=root / "libs" / "gone.blend",
        linked_gone_library=shots / "linked_gone.blend",
        bad_library=root / "libs" / "bad.blend",
        linked_bad_library=shots / "linked_bad.blend",
        baked=shots / "baked.blend",
        baked_cache=root / "caches" / "smoke",
        unbaked=shots / "unbaked.blend",
        unbaked_cache=root / "caches" / "unbaked",
    )
    shots.mkdir()
    paths.secret.parent.mkdir()
    paths.secret.write_bytes(b"not for the farm")
    request = json.dumps({k: str(v) for k, v in vars(paths).items()})
    result = subprocess.run(
        ["blender", "-b", "--factory-startup", "--python-expr", MAKE, "--", request],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0 and paths.pipe_blend.exists(), result.stdout + result.stderr
    os.mkfifo(paths.pipe)
    paths.bad_library.write_bytes(b"no blend file")
    shutil.rmtree(paths.unbaked_cache, ignore_errors=True)
    (paths.baked_cache / "data").mkdir(parents=True, exist_ok=True)
    (paths.baked_cache / "data" / "fluid_data_0001.vdb").write_bytes(b"baked frame 1")
    paths.root = root
    return paths


def render_locally(jobs: list[tuple[Path, int, int, Path]]) -> None:
    """Blender's own render of each (file, first, last, out pattern), in one Blender."""
    command = ["blender", "-b", "--factory-startup", "--disable-autoexec"]
    for blend, first, last, pattern in jobs:
        command += [str(blend), "-o", str(pattern), "-s", str(first), "-e", str(last), "-a"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def same_pixels(a: Path, b: Path) -> bool:
    with Image.open(a) as first, Image.open(b) as second:
        if first.size != second.size:
            return False
        return (
            ImageChops.difference(first.convert("RGBA"), second.convert("RGBA")).getbbox() is None
        )


def no_missing_texture_pink(frame: Path) -> bool:
    """Blender draws a texture it cannot find in magenta."""
    with Image.open(frame) as image:
        rgb = np.asarray(image.convert("RGB")).astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return not ((r > 200) & (g < 60) & (b > 200)).any()


# --- the package: what is found, where it goes, how the paths are rewritten ---


def written_paths(blend: Path) -> dict[str, str]:
    """{datablock: path as stored} for every file a .blend uses (through its libraries)."""
    return {use.datablock: use.written for dep in trace(blend).dependencies for use in dep.uses}


def unpacked(tmp_path: Path, blend: Path) -> tuple[Path, object]:
    package = load_package(blend)
    work = tmp_path / "job"
    unpack_to(package, work)
    return work, package


def test_an_outside_texture_goes_under_outside_and_the_path_is_rewritten(made, tmp_path):
    work, package = unpacked(tmp_path, made.texture)
    assert sorted(package.files) == ["_outside/textures/wood.png", "texture.blend"]
    assert package.files["_outside/textures/wood.png"] == made.wood.read_bytes()
    assert written_paths(made.texture) == {"image 'wood.png' in texture.blend": str(made.wood)}
    assert written_paths(work / "texture.blend") == {
        "image 'wood.png' in texture.blend": "//_outside/textures/wood.png"
    }
    (note,) = package.notes
    assert note == (
        "texture.blend uses 1 file(s) from outside its folder; they are sent with it: "
        f"{made.wood} as _outside/textures/wood.png"
    )


def test_a_compressed_blend_is_read_and_rewritten(made, tmp_path):
    assert made.compressed.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"  # Zstandard
    work, package = unpacked(tmp_path, made.compressed)
    assert sorted(package.files) == ["_outside/textures/wood.png", "compressed.blend"]
    assert written_paths(work / "compressed.blend") == {
        "image 'wood.png' in compressed.blend": "//_outside/textures/wood.png"
    }


def test_a_linked_library_and_its_own_texture_come_along(made, tmp_path):
    work, package = unpacked(tmp_path, made.linked)
    # The library and its texture keep their places relative to each other.
    assert sorted(package.files) == [
        "_outside/libs/maps/brick.png",
        "_outside/libs/props.blend",
        "linked.blend",
    ]
    assert written_paths(work / "linked.blend") == {
        "library 'props.blend' in linked.blend": "//_outside/libs/props.blend",
        "image 'brick.png' in props.blend": "//maps/brick.png",
    }
    # Only the main file needed a new path: the library travels unchanged.
    assert package.files["_outside/libs/props.blend"] == made.library.read_bytes()


def test_every_frame_of_an_image_sequence_comes_along(made, tmp_path):
    work, package = unpacked(tmp_path, made.sequence)
    frames = [f"seq/f_{n:04d}.png" for n in range(1, 5)]
    assert sorted(package.files) == [*frames, "sequence.blend"]
    assert package.notes == ()  # inside the .blend's folder, though named by an absolute path
    assert written_paths(work / "sequence.blend") == {
        "image 'f_0001.png' in sequence.blend": "//seq/f_0001.png"
    }


def test_a_baked_cache_comes_along(made, tmp_path):
    work, package = unpacked(tmp_path, made.baked)
    cached = sorted(name for name in package.files if name != "baked.blend")
    on_disk = sorted(p for p in made.baked_cache.rglob("*") if p.is_file())
    assert cached == [
        f"_outside/smoke/{p.relative_to(made.baked_cache).as_posix()}" for p in on_disk
    ]
    assert "_outside/smoke/data/fluid_data_0001.vdb" in cached
    assert written_paths(work / "baked.blend") == {
        "modifier 1 of object 'Cube' in baked.blend": "//_outside/smoke"
    }


def test_a_cache_that_is_not_there_is_written_in_the_job_folder(made, tmp_path):
    work, package = unpacked(tmp_path, made.unbaked)
    assert sorted(package.files) == ["unbaked.blend"]
    assert written_paths(work / "unbaked.blend") == {
        "modifier 1 of object 'Cube' in unbaked.blend": "//_caches/unbaked"
    }
    (note,) = package.notes
    assert note.startswith(
        "unbaked.blend: the cache of modifier 1 of object 'Cube' in unbaked.blend is not there "
        "(not baked?); each node simulates it while rendering and writes it in the job's folder "
        f"(_caches/unbaked) instead of {made.unbaked_cache}"
    )


def test_a_missing_file_is_refused_by_name_with_what_to_do(made):
    with pytest.raises(PackageError) as refused:
        load_package(made.missing)
    message = str(refused.value)
    assert message.startswith(
        "missing.blend uses a file that is missing, so the farm would render it wrong "
        f"(nothing was sent): {made.gone}, used by image 'gone.png' in missing.blend. To fix it:"
    )
    assert "File > External Data > Find Missing Files" in message
    assert "File > External Data > Pack Resources" in message


def test_a_missing_or_broken_library_is_refused(made):
    with pytest.raises(PackageError) as refused:
        load_package(made.linked_gone_library)
    assert str(refused.value).startswith(
        "linked_gone.blend uses a file that is missing, so the farm would render it wrong "
        f"(nothing was sent): {made.gone_library}, used by library 'props.blend' in "
        "linked_gone.blend. To fix it:"
    )
    assert "Relocate in the Outliner's Blender File view" in str(refused.value)
    with pytest.raises(PackageError) as refused:
        load_package(made.linked_bad_library)
    assert str(refused.value).startswith(
        f"linked_bad.blend: the library {made.bad_library} cannot be read as a .blend file"
    )


@pytest.mark.parametrize(
    "attr, expected",
    [
        (
            "system",
            "uses /etc/passwd, which is outside the .blend's folder and in the system "
            "folder /etc; peerfarm does not send such files",
        ),
        (
            "hidden",
            "which is outside the .blend's folder and in a hidden folder or hidden "
            "itself ('.secret')",
        ),
        ("pipe_blend", "is not a regular file (a device, pipe or socket)"),
    ],
)
def test_secrets_and_special_files_are_refused(made, attr, expected):
    with pytest.raises(PackageError, match="used by|uses") as refused:
        load_package(getattr(made, attr))
    assert expected in str(refused.value)


def test_the_package_limits_count_the_files_a_blend_uses(made):
    with pytest.raises(PackageError, match="holds more than 3 files"):
        load_package(made.sequence, limits=Limits(max_files=3))
    size = made.sequence.stat().st_size
    with pytest.raises(PackageError, match=r"file 'seq/f_000\d\.png' takes the scene over"):
        load_package(made.sequence, limits=Limits(max_total_bytes=size + 100))


def test_what_is_not_a_blend_is_sent_alone_with_a_note(tmp_path):
    fake = tmp_path / "fake.blend"
    fake.write_bytes(b"this is no blend file")
    package = load_package(fake)
    assert package.files == {"fake.blend": b"this is no blend file"}
    (note,) = package.notes
    assert note.startswith("fake.blend: peerfarm could not read which files it uses")


# --- a farm of two real nodes, against Blender's own render of the original files ---


def test_scenes_with_their_files_render_on_the_farm_as_blender_renders_them(made, tmp_path):
    jobs = {
        "texture": (made.texture, 2),
        "linked": (made.linked, 2),
        "sequence": (made.sequence, 4),
    }
    reference = tmp_path / "reference"
    render_locally(
        [(blend, 1, last, reference / f"{name}_####") for name, (blend, last) in jobs.items()]
    )
    farm, _, _, nodes = start_farm(tmp_path / "farm", nodes=2)
    with farm_running(farm, tmp_path / "farm"):
        wait_for_rendering_mesh(nodes)
        refused = peerfarm_cli("submit", str(made.missing), "--node", nodes[0], timeout=120)
        assert refused.returncode == 1
        assert f"{made.gone}, used by image 'gone.png' in missing.blend" in refused.stderr
        assert "Traceback" not in refused.stderr
        assert status(nodes[0])["jobs"] == []  # nothing reached the farm

        job_ids = {}
        for name, (blend, last) in jobs.items():
            cli = peerfarm_cli(
                "submit", str(blend), "--node", nodes[0], "--chunk", "1",
                "--output", str(tmp_path / "out" / name), "--wait", timeout=300,
            )  # fmt: skip
            assert cli.returncode == 0, cli.stdout + cli.stderr
            job_ids[name] = cli.stdout.splitlines()[0]
            assert job_of(status(nodes[0]), job_ids[name])["frames_total"] == last
            for frame in range(1, last + 1):
                farm_frame = tmp_path / "out" / name / f"{name}_{frame:04d}.png"
                expected = reference / f"{name}_{frame:04d}.png"
                assert same_pixels(farm_frame, expected), f"{name} frame {frame} differs"
                assert no_missing_texture_pink(farm_frame), f"{name} frame {frame}"
        notes = peerfarm_cli("submit", str(made.texture), "--node", nodes[1], timeout=120)
        assert "peerfarm: note: texture.blend uses 1 file(s) from outside its folder" in (
            notes.stderr
        )

    # The sequence changes colour from frame to frame: all its files were there.
    with Image.open(tmp_path / "out" / "sequence" / "sequence_0001.png") as one:
        with Image.open(tmp_path / "out" / "sequence" / "sequence_0002.png") as two:
            assert ImageChops.difference(one.convert("RGB"), two.convert("RGB")).getbbox()

    # Each worker's job folder holds everything: with the originals gone, Blender renders
    # the same pictures from it.
    folders = {
        name: [
            folder
            for i in (1, 2)
            if (folder := tmp_path / "farm" / f"node-{i}" / "work" / job_id).is_dir()
        ]
        for name, job_id in job_ids.items()
    }
    assert all(folders.values()), folders
    for name, found in folders.items():
        for dep in trace(found[0] / f"{name}.blend").dependencies:
            assert all(use.written.startswith("//") for use in dep.uses), dep
            assert dep.files and all(found[0] in f.resolve().parents for f in dep.files), dep
    made.root.rename(made.root.with_name(made.root.name + "-gone"))
    try:
        again = tmp_path / "again"
        render_locally(
            [
                (found[0] / f"{name}.blend", 1, 1, again / f"{name}_####")
                for name, found in folders.items()
            ]
        )
        for name in jobs:
            assert same_pixels(again / f"{name}_0001.png", reference / f"{name}_0001.png"), name
    finally:
        made.root.with_name(made.root.name + "-gone").rename(made.root)
