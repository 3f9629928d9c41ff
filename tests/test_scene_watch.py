"""Noticing saves (peerfarm/scenes/watch.py): a burst of writes is one change, an
ignored folder (the output) is no change, and the key tells real changes apart."""

from __future__ import annotations

import time
from pathlib import Path

import trio

from peerfarm.scenes.watch import scene_changes, scene_key


async def _changes(scene: Path, ignore: Path | None, write, seconds: float) -> list[set[Path]]:  # noqa: ANN001
    seen: list[set[Path]] = []
    with trio.move_on_after(seconds):
        async for changed in scene_changes(scene, ignore=ignore):
            if not seen:  # the first, empty: the folder is watched from now on
                assert changed == set()
                seen.append(changed)
                await trio.to_thread.run_sync(write)
                continue
            seen.append(changed)
    return seen[1:]


def test_a_burst_of_saves_is_one_change_and_the_output_folder_is_ignored(tmp_path):
    scene = tmp_path / "scene"
    out = scene / "frames"
    out.mkdir(parents=True)
    main = scene / "scene.pov"
    main.write_text("a")

    def save_like_an_editor() -> None:
        for i in range(6):  # an editor writes, renames, writes again...
            main.write_text(f"version {i}")
            (out / f"x_{i}.png").write_bytes(b"frame")  # frames coming in: not the scene
            time.sleep(0.05)  # closer together than the quiet period

    changes = trio.run(_changes, main, out, save_like_an_editor, 3.0)
    assert changes == [{main}]


def test_frames_written_to_an_ignored_folder_change_nothing(tmp_path):
    scene = tmp_path / "scene"
    out = scene / "out"
    out.mkdir(parents=True)
    (scene / "scene.pov").write_text("a")

    def frames() -> None:
        for i in range(3):
            (out / f"f_{i}.png").write_bytes(b"x")

    assert trio.run(_changes, scene, out, frames, 2.0) == []


def test_the_key_changes_with_a_files_content_only(tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 3_000_000)
    files = {"scene.pov": b"sphere", "textures/big.bin": big}
    key = scene_key("", "scene.pov", files)
    assert scene_key("", "scene.pov", dict(files)) == key
    assert scene_key("", "scene.pov", {**files, "scene.pov": b"sphere2"}) != key
    big.write_bytes(b"y" * 3_000_000)
    assert scene_key("", "scene.pov", files) != key
