"""Scene packages: hostile archives are refused whole, good submissions load and unpack."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import struct
import tarfile
import warnings
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from peerfarm.scenes import (
    BUILTIN_FORMAT,
    Limits,
    PackageError,
    ScenePackage,
    load_package,
    unpack_to,
)
from peerfarm.scenes import package as package_module
from peerfarm.scenes.detect import ini_input_file, pov_includes

POV = b'#include "colors.inc"\n#include "inc/props.inc"\nsphere { 0, 1 pigment { Red } }\n'
BUILTIN = json.dumps({"format": BUILTIN_FORMAT, "camera": {"position": [0, 1, 5]}}).encode()
BLEND = b"BLENDER-v300" + bytes(64)


# -- archive builders --------------------------------------------------------------


def make_zip(path: Path, entries: list[tuple]) -> Path:
    """Entries are (name, data) or (name, data, "symlink") for a Unix zip symlink."""
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w") as zf:
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns about duplicate names
        for name, data, *kind in entries:
            info = zipfile.ZipInfo(name)
            if kind == ["symlink"]:
                info.create_system = 3
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
    return path


def tar_member(name: str, kind: str = "file", data: bytes = b"", link: str = "") -> tuple:
    return (name, kind, data, link)


_TAR_TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "chr": tarfile.CHRTYPE,
    "fifo": tarfile.FIFOTYPE,
}


def make_tar(path: Path, members: list[tuple], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tf:
        for name, kind, data, link in members:
            info = tarfile.TarInfo(name)
            info.type = _TAR_TYPES[kind]
            info.linkname = link
            info.size = len(data) if kind == "file" else 0
            tf.addfile(info, io.BytesIO(data) if kind == "file" else None)
    return path


def patch_zip(path: Path, *, file_size=None, compress_size=None, flags=None) -> None:
    """Make the central directory lie about the first entry (zipfile would not write this)."""
    raw = bytearray(path.read_bytes())
    at = raw.index(b"PK\x01\x02")
    for offset, fmt, value in ((8, "<H", flags), (20, "<I", compress_size), (24, "<I", file_size)):
        if value is not None:
            struct.pack_into(fmt, raw, at + offset, value)
    path.write_bytes(bytes(raw))


def refused(path: Path, *needles: str, **kw: object) -> str:
    """Load must fail naming every needle; nothing may appear beside the archive."""
    before = sorted(p.name for p in path.parent.iterdir())
    with pytest.raises(PackageError) as caught:
        load_package(path, **kw)
    message = str(caught.value)
    for needle in needles:
        assert needle in message, message
    assert sorted(p.name for p in path.parent.iterdir()) == before
    return message


def files_under(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# -- hostile archives --------------------------------------------------------------


@pytest.mark.parametrize(
    "name, problem",
    [
        ("../../etc/passwd", "points outside the scene folder"),
        ("scene/../../x.pov", "points outside the scene folder"),
        ("a/../b.pov", "uses '..'"),
        ("/etc/passwd", "absolute"),
        ("//server/share/x.pov", "absolute"),
        ("\\\\server\\share\\x.pov", "absolute or network path"),
        ("C:\\Windows\\x.pov", "drive letter"),
        ("C:/x.pov", "drive letter"),
        ("..\\..\\x.pov", "backslash"),
        ("textures\\wood.png", "backslash"),
        ("con.pov", "Windows keeps for devices"),
        ("aux/x.pov", "Windows keeps for devices"),
        ("ab:c.pov", "':'"),
        ("tex/a?.png", "'?'"),
        ("a\nb.pov", "'\\n'"),
        ("dots./x.pov", "space or dot"),
    ],
)
def test_zip_with_a_bad_name_is_refused(tmp_path, name, problem):
    archive = make_zip(tmp_path / "scene.zip", [("ok.pov", POV), (name, b"evil")])
    message = refused(archive, problem)
    assert message.startswith(f"scene.zip: entry {name!r} ")


def test_the_example_message(tmp_path):
    archive = make_zip(tmp_path / "scene.zip", [("../../etc/passwd", b"x")])
    assert refused(archive) == (
        "scene.zip: entry '../../etc/passwd' points outside the scene folder; "
        "repack the scene with relative paths inside one folder"
    )


@pytest.mark.parametrize("mode, suffix", [("w:gz", ".tar.gz"), ("w", ".tar"), ("w:gz", ".tgz")])
def test_tar_traversal_and_absolute_paths_are_refused(tmp_path, mode, suffix):
    archive = make_tar(tmp_path / f"a{suffix}", [tar_member("../x.pov", data=POV)], mode)
    refused(archive, "'../x.pov'", "points outside")
    archive = make_tar(tmp_path / f"b{suffix}", [tar_member("/etc/x.pov", data=POV)], mode)
    refused(archive, "'/etc/x.pov'", "absolute")


def test_tar_name_that_is_not_utf8_is_refused(tmp_path):
    path = tmp_path / "s.tar"
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT, errors="surrogateescape") as tf:
        info = tarfile.TarInfo("caf\udce9.pov")  # the Latin-1 byte 0xE9, not UTF-8
        tf.addfile(info, io.BytesIO(b""))
    refused(path, "not valid UTF-8")


def test_tar_entry_named_dot_has_an_empty_name(tmp_path):
    archive = make_tar(tmp_path / "s.tar.gz", [tar_member("./", data=b"x")])
    refused(archive, "empty name")


@pytest.mark.parametrize("target", ["/etc/passwd", "../../etc/passwd", "sub/../../../x", "C:/x"])
def test_tar_symlink_out_of_the_package_is_refused(tmp_path, target):
    archive = make_tar(
        tmp_path / "s.tar.gz",
        [tar_member("scene.pov", data=POV), tar_member("sub/lnk", "symlink", link=target)],
    )
    refused(archive, "'sub/lnk'", f"link to {target!r}, outside the scene folder")


def test_tar_file_written_through_a_symlink_is_refused(tmp_path):
    archive = make_tar(
        tmp_path / "s.tar.gz",
        [
            tar_member("scene.pov", data=POV),
            tar_member("etc", "symlink", link="/etc"),
            tar_member("etc/passwd", data=b"root::0:0"),
        ],
    )
    refused(archive, "'etc'", "outside the scene folder")
    # Through a link that points inside: the link is a file, so the path clashes.
    archive = make_tar(
        tmp_path / "t.tar.gz",
        [
            tar_member("scene.pov", data=POV),
            tar_member("sub", "dir"),
            tar_member("lnk", "symlink", link="sub"),
            tar_member("lnk/x.inc", data=b"x"),
        ],
    )
    refused(archive, "'lnk/x.inc'", "both a file and a folder")


@pytest.mark.parametrize("target", ["/etc/passwd", "../../etc/passwd"])
def test_tar_hardlink_out_of_the_package_is_refused(tmp_path, target):
    archive = make_tar(
        tmp_path / "s.tar.gz",
        [tar_member("scene.pov", data=POV), tar_member("hl", "hardlink", link=target)],
    )
    refused(archive, "'hl'", "outside the scene folder")


def test_zip_symlinks_are_copied_inside_and_refused_outside(tmp_path):
    archive = make_zip(
        tmp_path / "in.zip",
        [
            ("scene.pov", POV),
            ("inc/props.inc", b"#declare R = 1;"),
            ("p.inc", b"inc/props.inc", "symlink"),
        ],
    )
    assert load_package(archive).files["p.inc"] == b"#declare R = 1;"
    archive = make_zip(
        tmp_path / "out.zip", [("scene.pov", POV), ("p.inc", b"../../etc/passwd", "symlink")]
    )
    refused(archive, "'p.inc'", "outside the scene folder")


def test_tar_link_to_something_missing_or_a_folder_is_refused(tmp_path):
    archive = make_tar(
        tmp_path / "s.tar.gz",
        [tar_member("scene.pov", data=POV), tar_member("lnk", "symlink", link="nothing.inc")],
    )
    refused(archive, "'lnk'", "not a file in the scene")
    archive = make_tar(
        tmp_path / "t.tar.gz",
        [
            tar_member("scene.pov", data=POV),
            tar_member("a", "symlink", link="b"),
            tar_member("b", "symlink", link="a"),
        ],
    )
    refused(archive, "not a file in the scene")


@pytest.mark.parametrize("kind", ["chr", "fifo"])
def test_tar_devices_and_fifos_are_refused(tmp_path, kind):
    archive = make_tar(
        tmp_path / "s.tar", [tar_member("scene.pov", data=POV), tar_member("dev", kind)], "w"
    )
    refused(archive, "'dev'", "device file or pipe")


def test_zip_bomb_entry_is_refused_before_reading(tmp_path):
    archive = make_zip(tmp_path / "bomb.zip", [("scene.pov", POV), ("big.tga", bytes(5 * 2**20))])
    message = refused(archive, "'big.tga'", "zip bomb")
    assert "200:1" in message


def test_many_small_entries_that_add_up_to_a_bomb_are_refused(tmp_path):
    entries = [(f"t{i}.tga", bytes(50_000)) for i in range(40)]
    archive = make_zip(tmp_path / "bomb.zip", [("scene.pov", POV), *entries])
    refused(archive, "compression bomb", limits=Limits(ratio_min_bytes=100_000))


def test_tar_gz_bomb_is_refused(tmp_path):
    archive = make_tar(
        tmp_path / "bomb.tar.gz",
        [tar_member("scene.pov", data=POV), tar_member("big.tga", data=bytes(3 * 2**20))],
    )
    refused(archive, "'big.tga'", "compression bomb")


def test_declared_sizes_over_the_limits_are_refused(tmp_path):
    archive = make_zip(tmp_path / "a.zip", [("scene.pov", POV), ("tex.png", os.urandom(3000))])
    refused(archive, "'tex.png'", "allowed for one file", limits=Limits(max_file_bytes=2000))
    refused(archive, "'tex.png'", "takes the scene over", limits=Limits(max_total_bytes=3000))
    archive = make_tar(
        tmp_path / "a.tar.gz",
        [tar_member("scene.pov", data=POV), tar_member("tex.png", data=os.urandom(3000))],
    )
    refused(archive, "'tex.png'", "takes the scene over", limits=Limits(max_total_bytes=3000))


def test_a_zip_whose_declared_size_lies_is_refused(tmp_path):
    # The directory claims 10 bytes for a 100 kB entry: reading stops there and the
    # CRC no longer matches, so the entry is named as damaged.
    archive = make_zip(tmp_path / "liar.zip", [("scene.pov", bytes(100_000))])
    patch_zip(archive, file_size=10)
    refused(archive, "'scene.pov'", "damaged")
    # Claiming more compressed data than the file holds: overlapping entries.
    archive = make_zip(tmp_path / "overlap.zip", [("scene.pov", POV)])
    patch_zip(archive, compress_size=10**6)
    refused(archive, "overlapping entries")
    # Claiming a huge size is refused from the directory alone.
    archive = make_zip(tmp_path / "huge.zip", [("scene.pov", POV)])
    patch_zip(archive, file_size=2**32 - 1)
    refused(archive, "'scene.pov'", "allowed for one file")


def test_encrypted_zip_entries_are_refused(tmp_path):
    archive = make_zip(tmp_path / "locked.zip", [("scene.pov", POV)])
    patch_zip(archive, flags=0x1)
    refused(archive, "'scene.pov'", "encrypted")


def test_a_nul_byte_in_a_zip_name_is_refused(tmp_path):
    # zipfile cuts names at NUL when writing, so put the byte in afterwards; readers
    # that cut at NUL would see 'x.pov', a different file than other tools see.
    archive = make_zip(tmp_path / "nul.zip", [("x.pov#.png", POV)])
    archive.write_bytes(archive.read_bytes().replace(b"x.pov#.png", b"x.pov\x00.png"))
    refused(archive, "entry 'x.pov\\x00.png'", "'\\x00'")


def test_too_many_files_are_refused(tmp_path):
    entries = [(f"inc/{i}.inc", b"x") for i in range(6)]
    archive = make_zip(tmp_path / "many.zip", [("scene.pov", POV), *entries])
    refused(archive, "more than 5 files", limits=Limits(max_files=5))
    folders = [(f"d{i}/", b"") for i in range(12)]
    archive = make_zip(tmp_path / "dirs.zip", [("scene.pov", POV), *folders])
    refused(archive, "more than 10 entries", limits=Limits(max_files=5))


def test_long_paths_are_refused(tmp_path):
    archive = make_zip(tmp_path / "long.zip", [("scene.pov", POV), ("a" * 30 + ".inc", b"x")])
    refused(archive, "longer than 20 characters", limits=Limits(max_path_chars=20))
    archive = make_zip(tmp_path / "part.zip", [("scene.pov", POV), ("a" * 300, b"x")])
    refused(archive, "longer than 255 bytes", limits=Limits(max_path_chars=1000))


@pytest.mark.parametrize(
    "first, second",
    [
        ("Scene.pov", "scene.pov"),
        ("Textures/a.png", "textures/b.png"),
        ("caf\u00e9.inc", "cafe\u0301.inc"),  # composed vs decomposed: one name on macOS
    ],
)
def test_names_that_differ_only_by_case_are_refused(tmp_path, first, second):
    archive = make_zip(tmp_path / "case.zip", [("main.ini", b""), (first, b"1"), (second, b"2")])
    refused(archive, repr(second), "differ only in upper/lower case")


def test_duplicate_entries(tmp_path):
    archive = make_zip(tmp_path / "dup.zip", [("scene.pov", POV), ("scene.pov", POV + b"//")])
    refused(archive, "'scene.pov'", "appears twice with different contents")
    same = make_zip(tmp_path / "same.zip", [("scene.pov", POV), ("scene.pov", POV)])
    assert load_package(same).files == {"scene.pov": POV}
    archive = make_tar(
        tmp_path / "dup.tar.gz",
        [tar_member("scene.pov", data=POV), tar_member("scene.pov", "symlink", link="x")],
    )
    refused(archive, "'scene.pov'", "appears twice")


def test_a_file_and_a_folder_of_the_same_name_are_refused(tmp_path):
    archive = make_zip(tmp_path / "clash.zip", [("scene.pov", POV), ("a", b"1"), ("a/b", b"2")])
    refused(archive, "'a/b'", "both a file and a folder")


def test_damaged_archives_are_refused(tmp_path):
    good = make_zip(tmp_path / "good.zip", [("scene.pov", POV * 100)])
    cut = tmp_path / "cut.zip"
    cut.write_bytes(good.read_bytes()[:100])
    refused(cut, "cut.zip is not a readable zip archive")
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"\x1f\x8b" + os.urandom(200))
    refused(junk, "junk.tar.gz is not a readable tar archive")
    good_tar = make_tar(tmp_path / "good.tar.gz", [tar_member("scene.pov", data=os.urandom(9000))])
    cut_tar = tmp_path / "cut.tar.gz"
    cut_tar.write_bytes(good_tar.read_bytes()[:3000])
    refused(cut_tar, "cut.tar.gz is not a readable tar archive")


# -- folders -------------------------------------------------------------------------


def symlink_or_skip(link: Path, target: Path) -> None:
    try:
        link.symlink_to(target)
    except (OSError, NotImplementedError):
        pytest.skip("this system does not let us create symlinks")


def test_folder_symlink_out_of_the_folder_is_refused(tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    scene = tmp_path / "scene"
    scene.mkdir()
    (scene / "scene.pov").write_bytes(POV)
    symlink_or_skip(scene / "leak.inc", outside)
    refused(scene, "'leak.inc'", "outside the scene folder")


def test_folder_symlinked_folder_is_refused(tmp_path):
    scene = tmp_path / "scene"
    (scene / "real").mkdir(parents=True)
    (scene / "scene.pov").write_bytes(POV)
    symlink_or_skip(scene / "alias", scene / "real")
    refused(scene, "'alias'", "link to a folder")
    (scene / "alias").unlink()
    symlink_or_skip(scene / "up", tmp_path)
    refused(scene, "'up'", "outside the scene folder")


def test_single_pov_include_through_a_linked_folder_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "props.inc").write_bytes(b"#declare Secret = 1;")
    scene = tmp_path / "scene"
    scene.mkdir()
    (scene / "scene.pov").write_bytes(POV)
    symlink_or_skip(scene / "inc", elsewhere)
    refused(scene / "scene.pov", "'inc/props.inc'", "outside the scene's folder")


def test_unpack_applies_the_size_limits(tmp_path):
    package = ScenePackage(files={"scene.pov": POV * 10}, main="scene.pov", renderer="povray")
    with pytest.raises(PackageError, match="allowed for one file"):
        unpack_to(package, tmp_path / "dest", limits=Limits(max_file_bytes=100))
    assert list(tmp_path.iterdir()) == []


def test_folder_symlink_to_a_file_inside_is_copied(tmp_path):
    scene = tmp_path / "scene"
    (scene / "inc").mkdir(parents=True)
    (scene / "scene.pov").write_bytes(POV)
    (scene / "inc" / "props.inc").write_bytes(b"#declare R = 1;")
    symlink_or_skip(scene / "alias.inc", Path("inc") / "props.inc")
    package = load_package(scene)
    assert package.files["alias.inc"] == b"#declare R = 1;"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_folder_fifo_is_refused_without_blocking(tmp_path):
    scene = tmp_path / "scene"
    scene.mkdir()
    (scene / "scene.pov").write_bytes(POV)
    os.mkfifo(scene / "pipe")
    refused(scene, "'pipe'", "not a regular file")


def test_folder_good_path_with_includes_and_textures(tmp_path):
    scene = tmp_path / "myscene"
    for rel, data in {
        "scene.ini": b"Input_File_Name=scene.pov\n",
        "scene.pov": POV,
        "inc/props.inc": b"#declare R = 1;",
        "textures/wood.png": b"\x89PNG fake",
        "old/variant.pov": POV,  # deeper: not a main candidate
        ".git/config": b"[core]",  # hidden folder: left out
        ".DS_Store": b"junk",
        "Thumbs.db": b"junk",
    }.items():
        (scene / rel).parent.mkdir(parents=True, exist_ok=True)
        (scene / rel).write_bytes(data)
    package = load_package(scene)
    assert package.renderer == "povray"
    assert package.main == "scene.ini"
    assert sorted(package.files) == [
        "inc/props.inc",
        "old/variant.pov",
        "scene.ini",
        "scene.pov",
        "textures/wood.png",
    ]
    dest = tmp_path / "out" / "job1"
    unpack_to(package, dest)
    assert files_under(dest) == package.files


def test_a_folder_name_windows_cannot_hold_is_refused(tmp_path):
    scene = tmp_path / "scene"
    scene.mkdir()
    (scene / "scene.pov").write_bytes(POV)
    try:
        (scene / "a\\b.inc").write_bytes(b"x")
    except OSError:
        pytest.skip("this file system does not allow backslashes in names")
    refused(scene, "scene/: file 'a\\\\b.inc'", "backslash")


# -- good archives and single files ---------------------------------------------------


def test_zip_with_a_wrapper_folder(tmp_path):
    archive = make_zip(
        tmp_path / "scene.zip",
        [
            ("myscene/", b""),
            ("myscene/scene.pov", POV),
            ("myscene/inc/props.inc", b"#declare R = 1;"),
            ("myscene/textures/wood.png", b"png"),
            ("__MACOSX/myscene/._scene.pov", b"apple double"),
        ],
    )
    package = load_package(archive)
    assert (package.renderer, package.main) == ("povray", "myscene/scene.pov")
    assert len(package.files) == 3


@pytest.mark.parametrize("mode, suffix", [("w:gz", ".tar.gz"), ("w:gz", ".tgz"), ("w", ".tar")])
def test_tar_with_dot_prefixes_and_inside_links(tmp_path, mode, suffix):
    archive = make_tar(
        tmp_path / f"scene{suffix}",
        [
            tar_member("./", "dir"),
            tar_member("./scene.pov", data=POV),
            tar_member("./inc", "dir"),
            tar_member("./inc/props.inc", data=b"#declare R = 1;"),
            tar_member("./inc/same.inc", "hardlink", link="./inc/props.inc"),
            tar_member("./inc/alias.inc", "symlink", link="props.inc"),
            tar_member("./chain.inc", "symlink", link="inc/alias.inc"),
        ],
        mode,
    )
    package = load_package(archive)
    assert (package.renderer, package.main) == ("povray", "scene.pov")
    for name in ("inc/same.inc", "inc/alias.inc", "chain.inc"):
        assert package.files[name] == b"#declare R = 1;"


def test_single_pov_takes_its_includes_but_not_its_folder(tmp_path):
    (tmp_path / "inc").mkdir()
    (tmp_path / "scene.pov").write_bytes(POV)
    (tmp_path / "inc" / "props.inc").write_bytes(b'#include "inc/more.inc"\n')
    (tmp_path / "inc" / "more.inc").write_bytes(b"#declare M = 2;")
    (tmp_path / "unrelated.png").write_bytes(b"png")
    package = load_package(tmp_path / "scene.pov")
    assert (package.renderer, package.main) == ("povray", "scene.pov")
    # colors.inc is POV-Ray's own and is not beside the scene: left to the renderer.
    assert sorted(package.files) == ["inc/more.inc", "inc/props.inc", "scene.pov"]


def test_single_pov_including_a_file_outside_its_folder_is_refused(tmp_path):
    """`#include "../../common/look.inc"` was taken for one of POV-Ray's own library
    files and left out: every node failed with "Cannot open include file", three
    times, and the job failed. It is refused at submit, naming the folder to send."""
    (tmp_path / "common").mkdir()
    (tmp_path / "common" / "look.inc").write_bytes(b"#declare Col = rgb 1;")
    shot = tmp_path / "shots" / "s1"
    shot.mkdir(parents=True)
    (shot / "props.inc").write_bytes(b'#include "../../common/look.inc"\n')
    (shot / "shot.pov").write_bytes(POV + b'#include "props.inc"\n')
    refused(
        shot / "shot.pov",
        "props.inc includes '../../common/look.inc'",
        f"submit a folder that holds both ({tmp_path.resolve()})",
    )
    (shot / "props.inc").write_bytes(f'#include "{tmp_path / "common" / "look.inc"}"'.encode())
    refused(shot / "shot.pov", "outside the scene's folder")
    # The folder that holds both is a package that has it.
    (shot / "props.inc").write_bytes(b'#include "../../common/look.inc"\n')
    assert "common/look.inc" in load_package(tmp_path).files
    # An include that is no file here is POV-Ray's (or missing everywhere alike).
    (shot / "props.inc").write_bytes(b'#include "../nowhere.inc"\n')
    assert sorted(load_package(shot / "shot.pov").files) == ["props.inc", "shot.pov"]


def test_single_pov_takes_the_image_maps_and_fonts_it_names(tmp_path):
    """An image map beside the scene was left out of a .pov submitted on its own: every
    node failed with POV-Ray's "Cannot open file", three times, and the job failed."""
    (tmp_path / "tex").mkdir()
    (tmp_path / "tex" / "wood.png").write_bytes(b"png")
    (tmp_path / "logo.ttf").write_bytes(b"ttf")
    (tmp_path / "unused.png").write_bytes(b"png")
    (tmp_path / "t.pov").write_bytes(
        POV
        + b'plane { z, 1 pigment { image_map { png "tex/wood.png" } } }\n'
        + b'text { ttf "logo.ttf" "Hi" 1, 0 }\n'
        + b'text { ttf "timrom.ttf" "old.png" 1, 0 }\n'  # POV-Ray's font; a text
        + b'// was: "unused.png"\n'
    )
    package = load_package(tmp_path / "t.pov")
    assert sorted(package.files) == ["logo.ttf", "t.pov", "tex/wood.png"]
    (tmp_path / "scene").mkdir()
    (tmp_path / "scene" / "t.pov").write_bytes(
        b'plane { z, 1 pigment { image_map { png "../tex/wood.png" } } }'
    )
    refused(
        tmp_path / "scene" / "t.pov", "t.pov uses '../tex/wood.png'", "outside the scene's folder"
    )


def test_single_ini_takes_the_pov_it_names(tmp_path):
    (tmp_path / "render.ini").write_bytes(b'; settings\nWidth=320\nInput_File_Name="scene.pov"\n')
    (tmp_path / "scene.pov").write_bytes(b"sphere { 0, 1 }")
    (tmp_path / "other.pov").write_bytes(b"sphere { 0, 2 }")
    package = load_package(tmp_path / "render.ini")
    assert (package.renderer, package.main) == ("povray", "render.ini")
    assert sorted(package.files) == ["render.ini", "scene.pov"]


def test_single_ini_without_its_pov_is_refused(tmp_path):
    (tmp_path / "render.ini").write_bytes(b"Input_File_Name=missing.pov\n")
    refused(tmp_path / "render.ini", "'missing.pov'", "not a file beside it")
    (tmp_path / "bare.ini").write_bytes(b"Width=320\n")
    refused(tmp_path / "bare.ini", "'bare.ini'", "names no Input_File_Name")


def test_single_builtin_json_and_blend(tmp_path):
    (tmp_path / "demo.json").write_bytes(BUILTIN)
    package = load_package(tmp_path / "demo.json")
    assert (package.renderer, package.main, list(package.files)) == (
        "builtin",
        "demo.json",
        ["demo.json"],
    )
    (tmp_path / "shot.blend").write_bytes(BLEND)
    assert load_package(tmp_path / "shot.blend").renderer == "blender"
    (tmp_path / "notes.txt").write_bytes(b"hi")
    refused(tmp_path / "notes.txt", "notes.txt: not a scene file", "--renderer")
    assert load_package(tmp_path / "notes.txt", renderer="povray").main == "notes.txt"


def test_blend_folder_detection(tmp_path):
    archive = make_zip(
        tmp_path / "shot.zip",
        [("shot.blend", BLEND), ("shot.blend1", BLEND), ("tex/a.png", b"png")],
    )
    package = load_package(archive)
    assert (package.renderer, package.main) == ("blender", "shot.blend")


def test_builtin_folder_detection_needs_the_format_tag(tmp_path):
    archive = make_zip(tmp_path / "b.zip", [("scene.json", BUILTIN), ("data.json", b"{}")])
    assert load_package(archive).main == "scene.json"
    untagged = make_zip(tmp_path / "u.zip", [("scene.json", b'{"camera": {}}'), ("x.txt", b"")])
    refused(untagged, "no scene file found among scene.json, x.txt")
    assert load_package(untagged, renderer="builtin").main == "scene.json"


def test_main_file_choice(tmp_path):
    def main_of(*names: str, **kw: object) -> str:
        archive = make_zip(tmp_path / "m.zip", [(n, POV) for n in names])
        return load_package(archive, **kw).main

    assert main_of("scene.pov", "scene.ini") == "scene.ini"
    assert main_of("scene.pov", "settings/render.ini") == "scene.pov"
    assert main_of("a/scene.pov", "a/b/other.pov") == "a/scene.pov"
    archive = make_zip(tmp_path / "two.zip", [("a.pov", POV), ("b.pov", POV)])
    refused(archive, "several files could be the main povray scene: a.pov, b.pov")
    archive = make_zip(tmp_path / "mixed.zip", [("a.pov", POV), ("b.blend", BLEND)])
    refused(archive, "several renderers", "--renderer")
    assert load_package(archive, renderer="blender").main == "b.blend"
    refused(archive, "unknown renderer 'maya'", renderer="maya")
    archive = make_zip(tmp_path / "none.zip", [("readme.txt", b""), ("a.png", b"")])
    refused(archive, "no scene file found among a.png, readme.txt", ".blend")


def test_missing_path_is_refused(tmp_path):
    with pytest.raises(PackageError, match="does not exist"):
        load_package(tmp_path / "nope.zip")


def test_builtin_format_matches_the_renderer():
    from peerfarm.renderers.builtin.scene import FORMAT

    assert BUILTIN_FORMAT == FORMAT


def test_ini_and_include_parsing():
    text = 'Input_File_Name = first.pov ; old\n  input_file_name="my scene.pov"\n'
    assert ini_input_file(text) == "my scene.pov"
    assert ini_input_file("Width=3") is None
    assert pov_includes('#include "a.inc"\n# include "b/c.inc" // x') == ["a.inc", "b/c.inc"]


# -- unpacking -------------------------------------------------------------------------


def test_unpack_round_trip_and_refusals(tmp_path):
    archive = make_zip(tmp_path / "s.zip", [("scene.pov", POV), ("inc/props.inc", b"x")])
    package = load_package(archive)
    (tmp_path / "empty").mkdir()
    unpack_to(package, tmp_path / "empty")
    assert files_under(tmp_path / "empty") == package.files
    with pytest.raises(PackageError, match="already exists and is not empty"):
        unpack_to(package, tmp_path / "empty")


@pytest.mark.parametrize(
    "files",
    [
        {"scene.pov": POV, "../escape.pov": b"x"},
        {"scene.pov": POV, "/abs.pov": b"x"},
        {"scene.pov": POV, "Scene.pov": b"x"},
        {"scene.pov": POV, "a": b"1", "a/b": b"2"},
        {"scene.pov": POV, "./a.pov": b"x"},
    ],
)
def test_unpack_refuses_a_hand_built_bad_package_and_writes_nothing(tmp_path, files):
    dest = tmp_path / "out" / "dest"
    with pytest.raises(PackageError):
        unpack_to(ScenePackage(files=files, main="scene.pov", renderer="povray"), dest)
    assert not (tmp_path / "out").exists()


def test_unpack_failing_midway_leaves_nothing(tmp_path, monkeypatch):
    package = ScenePackage(
        files={f"f{i}.inc": b"x" for i in range(5)} | {"scene.pov": POV},
        main="scene.pov",
        renderer="povray",
    )
    writes = []

    def failing_open(path, mode="r", *args, **kwargs):
        writes.append(path)
        if len(writes) == 3:
            raise OSError(28, "No space left on device")
        return open(path, mode, *args, **kwargs)

    monkeypatch.setattr(package_module, "open", failing_open, raising=False)
    with pytest.raises(PackageError, match="No space left on device"):
        unpack_to(package, tmp_path / "dest")
    assert list(tmp_path.iterdir()) == []


# -- property: no archive member name ever escapes ---------------------------------

# Names are glued from tokens that matter to path safety: separators of both kinds,
# dots, drive colons, NUL and newlines, Windows device names, accents in composed and
# decomposed form, case twins, look-alike full-width dots, hidden and junk names.
_HOSTILE = [
    "\\",
    "..",
    "C:",
    ":",
    "con",
    "NUL",
    "\x00",
    "\n",
    " ",
    "?",
    "/etc/passwd",
    "\uff0e\uff0e",
]
_ODD = [".", "e\u0301", "\u00e9", "\u202e", "\U0001f600", ".git", "__MACOSX", "desktop.ini", "~"]
# Plain tokens come several times so that about half the names are valid and reach
# the link, collision and unpacking code rather than stopping at the name check.
_PLAIN = ["/", "a", "A", "b", "B", "x", "lnk", "scene", ".pov", ".inc"]
_TOKENS = _HOSTILE + _ODD + _PLAIN * 4
_KINDS = ["file", "file", "file", "dir", "symlink", "hardlink"]
_NEXT_MEMBER, _TARGET = 61, 63  # byte % 64 in [61, 63): next member; [63, 64): link target


def _members(seed: bytes) -> list[tuple]:
    """Decode one byte string into archive members (name, kind, data, link target).

    Hypothesis draws a single byte string, which it makes and shrinks cheaply;
    drawing every token as its own choice made 2,000 examples take many seconds.
    """
    members: list[tuple] = []
    current: list[list[str]] = [[], []]
    part = 0
    kind = 0
    for byte in seed:
        code = byte % 64
        if code >= _TARGET:
            part = 1
        elif code >= _NEXT_MEMBER:
            members.append(("".join(current[0]), _KINDS[kind % 6], "".join(current[1])))
            current, part, kind = [[], []], 0, byte
        else:
            current[part].append(_TOKENS[code % len(_TOKENS)])
    members.append(("".join(current[0]), _KINDS[kind % 6], "".join(current[1])))
    contents = [b"", b"x", POV]
    return [
        (name, k, contents[i % 3], target) for i, (name, k, target) in enumerate(members) if name
    ][:5]


def _zip_entry(name: str, kind: str, data: bytes, target: str) -> tuple:
    if kind == "dir":
        return (name + "/", b"")
    if kind in ("symlink", "hardlink"):  # zip has only symlinks
        return (name, target.encode(), "symlink")
    return (name, data)


def _build(path: Path, fmt: str, members: list[tuple]) -> None:
    if fmt == "zip":
        make_zip(path, [("scene.pov", POV), *(_zip_entry(*member) for member in members)])
    else:
        make_tar(path, [tar_member("scene.pov", data=POV), *members], "w")


@settings(
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(fmt=st.sampled_from(["zip", "tar"]), seed=st.binary(max_size=48))
def test_random_member_names_never_escape_dest(tmp_path_factory, fmt, seed):
    members = _members(seed)
    # One work folder for all examples (a fresh one each costs more than the check).
    work = tmp_path_factory.getbasetemp() / "fuzz"
    work.mkdir(exist_ok=True)
    archive = work / f"scene.{fmt}"
    out = work / "out"
    try:
        try:
            _build(archive, fmt, members)
        except (ValueError, UnicodeError, tarfile.TarError):
            assume(False)  # the archive library would not write this name at all
        try:
            package = load_package(archive, renderer="povray")
        except PackageError:
            return
        dest = out / "dest"
        try:
            unpack_to(package, dest)
        except PackageError:
            assert not out.exists() or list(out.iterdir()) == []
            return
        real_dest = dest.resolve()
        for root, dirs, files in os.walk(work):
            for entry in [*dirs, *files]:
                path = Path(root) / entry
                assert not path.is_symlink()
                if path not in (archive, out):
                    assert path.resolve().is_relative_to(real_dest), path
        assert files_under(dest) == package.files
    finally:
        archive.unlink(missing_ok=True)
        shutil.rmtree(out, ignore_errors=True)
