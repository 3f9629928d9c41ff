"""Noticing that a scene changed on disk, for re-rendering on save (`submit --watch`
and the app's "re-render when the scene changes").

The scene's folder (a folder scene itself, or the folder of a scene file) is
watched with watchfiles. An editor writes a file several times when it saves
(a temporary file, a rename, a backup), so changes are gathered until the folder
has been quiet for ``QUIET_SECONDS``, then reported once. Whether the scene
really changed is for the caller to tell: it reads the scene again and compares
the files' hashes (a swap file or an unrelated file in the folder changes nothing).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import watchfiles

from peerfarm.scenes.package import FileData, open_data

QUIET_SECONDS = 0.4  # saves closer together than this are one change
MAX_GATHER_SECONDS = 5.0  # a folder that never goes quiet is still reported this often
# How long the watching thread waits before it looks whether it should stop: the
# longest a stop (Ctrl+C, the app's switch) waits for it.
STOP_CHECK_MS = 500


def watched_folder(scene: Path) -> Path:
    """The folder whose changes may change the scene."""
    scene = Path(scene).resolve()
    return scene if scene.is_dir() else scene.parent


async def scene_changes(scene: Path, ignore: Path | None = None) -> AsyncIterator[set[Path]]:
    """Yield an empty set as soon as the scene's folder is watched (read the scene only
    after it, and no save can slip by unseen), then the paths that changed, once per
    burst of saves, for as long as iterated. Changes under ``ignore`` (e.g. an output
    folder) do not count. Runs under trio or asyncio (watchfiles uses anyio)."""
    ignored = Path(ignore).resolve() if ignore is not None else None
    watching = False
    async for changes in watchfiles.awatch(
        watched_folder(scene),
        debounce=int(MAX_GATHER_SECONDS * 1000),
        step=int(QUIET_SECONDS * 1000),
        rust_timeout=STOP_CHECK_MS,
        yield_on_timeout=True,  # an empty set: how we learn that the watch has begun
        recursive=True,
    ):
        paths = {Path(path) for _, path in changes}
        if ignored is not None:
            paths = {p for p in paths if p != ignored and ignored not in p.parents}
        if paths or not watching:
            watching = True
            yield paths


def scene_key(scene_text: str, main: str, files: Mapping[str, FileData] | None) -> tuple:
    """What tells one revision of a scene from the next: its inline text, main file and
    every file's SHA-256 (blocking: reads the files). Equal keys: nothing to re-render."""
    hashes = []
    for path in sorted(files or {}):
        digest = hashlib.sha256()
        with open_data(files[path]) as stream:
            while block := stream.read(1024 * 1024):
                digest.update(block)
        hashes.append((path, digest.hexdigest()))
    return (scene_text, main, tuple(hashes))
