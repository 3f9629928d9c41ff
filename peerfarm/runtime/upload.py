"""Uploading a scene's files to the node a job is submitted to, before SUBMIT.

Each file is a blob named by its SHA-256. The client hashes every file (reading
it in blocks), asks which blobs the node holds (HAVE_BLOBS: complete, or how
much of a partial upload), sends only what is missing in pieces (PUT_BLOB,
from where an interrupted upload stopped), and then submits the manifest
(path -> {sha, size}) instead of the bytes. Neither side ever holds a whole
big file in memory: one piece at a time. The node verifies each blob's
SHA-256 when its last piece arrives.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

import trio

from peerfarm.runtime.blobs import CHUNK_BYTES
from peerfarm.runtime.client import ClientError, NodeClient
from peerfarm.scenes.package import FileData, open_data
from peerfarm.wire.messages import MAX_HAVE_BLOBS

PIECE_BYTES = CHUNK_BYTES  # per PUT_BLOB, as per GET_BLOB between nodes
_BLOCK = 1024 * 1024


@dataclass
class UploadSummary:
    """What an upload did: files and bytes of the scene, and of them sent now."""

    files: int = 0
    bytes: int = 0
    sent_files: int = 0
    sent_bytes: int = 0

    def describe(self) -> str:
        kept = self.files - self.sent_files
        return (
            f"scene: {_count(self.files)} ({_size(self.bytes)}); uploaded "
            f"{_count(self.sent_files)} ({_size(self.sent_bytes)})"
            + (f", {_count(kept)} already on the node" if kept else "")
        )


def _count(n: int) -> str:
    return f"{n} file" if n == 1 else f"{n} files"


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB"):
        if n < 1024:
            return f"{n:g} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def hash_data(data: FileData) -> tuple[str, int]:
    """(SHA-256, size) of a file's contents, read in blocks (blocking)."""
    digest = hashlib.sha256()
    size = 0
    with open_data(data) as stream:
        while block := stream.read(_BLOCK):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def _read_piece(stream: BinaryIO, offset: int, length: int) -> bytes:
    stream.seek(offset)
    return stream.read(length)


async def upload_scene(
    client: NodeClient, files: Mapping[str, FileData]
) -> tuple[dict[str, dict[str, Any]], UploadSummary]:
    """Upload the blobs the node lacks; the manifest to SUBMIT and what was sent."""
    manifest: dict[str, dict[str, Any]] = {}
    sources: dict[str, tuple[str, FileData, int]] = {}  # sha -> (a path, contents, size)
    summary = UploadSummary()
    for path, data in files.items():
        try:
            sha, size = await trio.to_thread.run_sync(hash_data, data)
        except OSError as exc:
            raise ClientError(f"cannot read scene file {path}: {exc.strerror or exc}") from None
        manifest[path] = {"sha": sha, "size": size}
        sources.setdefault(sha, (path, data, size))
        summary.files += 1
        summary.bytes += size
    shas = list(sources)
    held: list[tuple[bool, int]] = []
    for start in range(0, len(shas), MAX_HAVE_BLOBS):
        held += await client.blobs_held(shas[start : start + MAX_HAVE_BLOBS])
    sent_shas = set()
    for sha, (complete, have) in zip(shas, held, strict=True):
        if complete:
            continue
        path, data, size = sources[sha]
        summary.sent_bytes += await _upload_blob(client, path, data, sha, size, have)
        sent_shas.add(sha)
    summary.sent_files = sum(1 for entry in manifest.values() if entry["sha"] in sent_shas)
    return manifest, summary


async def _upload_blob(
    client: NodeClient, path: str, data: FileData, sha: str, size: int, have: int
) -> int:
    """Send blob `sha` from byte `have` on (0 if the node's partial cannot be ours);
    the bytes sent."""
    offset = have if have <= size else 0
    sent = 0
    try:
        stream = await trio.to_thread.run_sync(open_data, data)
    except OSError as exc:
        raise ClientError(f"cannot read scene file {path}: {exc.strerror or exc}") from None
    try:
        while True:
            length = min(PIECE_BYTES, size - offset)
            piece = await trio.to_thread.run_sync(_read_piece, stream, offset, length)
            if len(piece) != length:
                raise ClientError(
                    f"scene file {path} changed while it was being submitted; submit again"
                )
            try:
                held, complete = await client.put_blob(sha, size, offset, piece)
            except ClientError as exc:
                raise ClientError(f"uploading scene file {path}: {exc}") from None
            sent += len(piece)
            if complete:
                return sent
            if held == offset:  # the node took nothing and asks for the same piece again
                raise ClientError(
                    f"uploading scene file {path}: the node does not take the piece at "
                    f"byte {offset}; submit again"
                )
            offset = held  # where the node's copy ends (another upload may have added to it)
    finally:
        stream.close()
