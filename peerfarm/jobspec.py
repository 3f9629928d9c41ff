"""Turning a job request (peerfarm/job_request.py) into a NEW_JOB payload, with errors
a user can act on."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from peerfarm.core import schema
from peerfarm.core.actions import (
    MAX_CHUNKS,
    MAX_FPS,
    MAX_MEMORY,
    MAX_NODES_LIMIT,
    PAYLOADS,
    chunk_count,
)
from peerfarm.core.chunk_order import IN_ORDER, ORDERS
from peerfarm.core.names import safe_name
from peerfarm.core.refused import Refused
from peerfarm.core.requirements import memory_text, parse_tags
from peerfarm.core.tiles import MAX_TILES, TileError, tile_grid
from peerfarm.formats import DEFAULT_FORMAT, format_name, why_no_video, why_not_stitched
from peerfarm.job_request import JobRequest, SubmitError
from peerfarm.renderers.base import Renderer, RendererError

DEFAULT_SIZE = (320, 240)
DEFAULT_PADDING = 4
DEFAULT_FPS = 24


MAX_FILES = 10_000


def _check_path(path: Any) -> None:
    parts = path.split("/") if type(path) is str else []
    if (
        not parts
        or path.startswith("/")
        or "\\" in path
        or ":" in path
        or len(path) > 200
        or any(part in ("", ".", "..") for part in parts)
    ):
        raise SubmitError(f"scene file name {path!r} is not a relative path inside the scene")


def check_files(files: Any) -> dict[str, bytes]:
    """Scene files of a submit request: relative POSIX paths -> bytes.

    A first check only; workers unpack with the full rules of peerfarm.scenes.
    """
    if files is None:
        return {}
    if type(files) is not dict or len(files) > MAX_FILES:
        raise SubmitError(f"scene files must be a map of at most {MAX_FILES} paths to bytes")
    for path, data in files.items():
        _check_path(path)
        if type(data) is not bytes:
            raise SubmitError(f"scene file {path!r} has no content")
    return files


_MANIFEST_ENTRY = schema.record({"sha": schema.sha256_hex, "size": schema.integer(0, 2**40)})


def check_manifest(manifest: Any) -> dict[str, dict[str, Any]]:
    """The manifest of a submit request whose files were uploaded as blobs first:
    relative POSIX paths -> {sha, size}. A first check, like check_files."""
    if type(manifest) is not dict or not 0 < len(manifest) <= MAX_FILES:
        raise SubmitError(f"the scene manifest must map 1 to {MAX_FILES} paths to {{sha, size}}")
    for path, entry in manifest.items():
        _check_path(path)
        why = _MANIFEST_ENTRY(entry)
        if why:
            raise SubmitError(f"scene file {path!r} in the manifest: {why}")
    return manifest


def manifest_of(files: dict[str, bytes]) -> dict[str, dict[str, Any]]:
    """path -> {sha, size}: what NEW_JOB carries instead of the bytes (blocking: hashes)."""
    return {
        path: {"sha": hashlib.sha256(data).hexdigest(), "size": len(data)}
        for path, data in files.items()
    }


@dataclass(frozen=True)
class NewJob:
    """A checked submit request: the NEW_JOB payload, and notes for the submitter.

    ``notes`` are human-readable lines from the renderer plugin about scene settings
    the farm overrides (e.g. "scene.ini line 15: Output_File_Name=x is overridden:
    peerfarm names the frames itself ..."). They belong in the submit reply and the
    submitting node's log; the payload does not carry them.
    """

    payload: dict[str, Any]
    notes: tuple[str, ...] = ()


def build_new_job(
    request: JobRequest,
    job_id: str,
    plugins: dict[str, Renderer],
    farm_renderers: set[str],
    video_problem: str | None = None,
) -> dict[str, Any]:
    """Check a job request and return the NEW_JOB payload (``prepare_new_job``
    without its notes)."""
    return prepare_new_job(request, job_id, plugins, farm_renderers, video_problem).payload


def prepare_new_job(
    request: JobRequest,
    job_id: str,
    plugins: dict[str, Renderer],
    farm_renderers: set[str],
    video_problem: str | None = None,
) -> NewJob:
    """Check a job request: the NEW_JOB payload and the plugin's notes.

    ``plugins`` are the renderer plugins this node knows; ``farm_renderers`` the
    renderers some node of the farm advertises; ``video_problem`` why this node
    cannot encode a video (None: it can). The request's scene files are bytes or
    paths (uploaded blobs), and its ``manifest`` names them.
    """
    renderer = request.renderer or "builtin"
    plugin = plugins.get(renderer)
    if plugin is None:
        raise SubmitError(
            f"unknown renderer {renderer!r}; renderers known here: {', '.join(sorted(plugins))}"
        )
    if renderer not in farm_renderers:
        raise SubmitError(
            f"no node of this farm can render {renderer!r} now (farm renderers: "
            f"{', '.join(sorted(farm_renderers)) or 'none'}); install it on a node first"
        )
    tiles = request.tiles or 1
    if type(tiles) is not int or not 1 <= tiles <= MAX_TILES:
        raise SubmitError(f"--tiles must be a whole number from 1 to {MAX_TILES} (got {tiles})")
    if tiles > 1 and not plugin.supports_tiles:
        able = sorted(name for name, p in plugins.items() if p.supports_tiles)
        raise SubmitError(
            f"the {renderer} renderer cannot render tiles; submit without --tiles "
            f"(renderers that can: {', '.join(able) or 'none'})"
        )
    if tiles > 1 and request.chunk_size not in (None, 1):
        raise SubmitError(
            f"--chunk {request.chunk_size} with --tiles {tiles}: a tiled job renders one "
            "tile of one frame per chunk; leave out --chunk"
        )
    asked = request.format
    if not asked:  # the scene's own, where the renderer reads it (Blender), else png
        try:
            asked = plugin.scene_format(request.replace(tiles=tiles)) or DEFAULT_FORMAT
        except RendererError as exc:
            raise SubmitError(str(exc)) from None
    asked = str(asked)
    fmt = format_name(asked)
    if fmt not in plugin.formats:
        raise SubmitError(
            f"--format {asked}: the {renderer} renderer does not write {asked} frames; "
            f"it writes {', '.join(plugin.formats)}"
        )
    if tiles > 1:
        why = why_not_stitched(fmt)
        if why is not None:
            raise SubmitError(
                f"--tiles with --format {fmt}: {why}; use a lossless format Pillow reads "
                f"({', '.join(f for f in plugin.formats if why_not_stitched(f) is None)}) "
                "or submit without --tiles"
            )
    video = request.video or False
    fps = request.fps or DEFAULT_FPS
    if type(fps) is not int or not 1 <= fps <= MAX_FPS:
        raise SubmitError(f"--fps must be a whole number from 1 to {MAX_FPS} (got {fps})")
    if video is not False:
        why = why_no_video(fmt) if video is True else "expected true or false"
        if why is not None:
            raise SubmitError(f"--video with --format {fmt}: {why}; use --format png")
        if video_problem is not None:
            raise SubmitError(
                f"--video: this node encodes the video when the frames are in, and {video_problem}"
            )
    request = request.replace(tiles=tiles, format=fmt)
    try:
        checked = plugin.check_job_with_notes(request)
    except RendererError as exc:
        raise SubmitError(str(exc)) from None
    scene_range = checked.frame_range
    frames = request.frames
    if frames is None:
        first, last = scene_range
    elif len(frames) == 2 and all(type(f) is int for f in frames):
        first, last = frames
    else:
        raise SubmitError("frames must be [first, last]")
    # The built-in renderer has a default size; other scenes keep their own (0).
    default = DEFAULT_SIZE if renderer == "builtin" else (0, 0)
    width = request.width or default[0]
    height = request.height or default[1]
    if tiles > 1 and width and height:  # else the plugin checked the scene's own size
        try:
            tile_grid(width, height, tiles, plugin.tile_align)
        except TileError as exc:
            raise SubmitError(f"--tiles {tiles}: {exc}") from None
    # Without --chunk, nodes claim runs of frames sized to their speed (adaptive): the
    # smallest run is one frame, or as many as keep the job within MAX_CHUNKS.
    adaptive = tiles == 1 and request.chunk_size is None
    if adaptive:
        frames = max(last - first + 1, 1)
        chunk_size = max(1, -(-frames // MAX_CHUNKS))
    else:
        chunk_size = 1 if tiles > 1 else request.chunk_size
    if type(chunk_size) is not int or chunk_size < 1:
        raise SubmitError(
            f"--chunk must be a whole number of frames, at least 1 (got {chunk_size})"
        )
    count = chunk_count(first, last, chunk_size, tiles) if last >= first else 0
    if count > MAX_CHUNKS:
        # Every node holds every job's chunks: the limit keeps a node's memory bounded.
        if tiles > 1:
            what = f"{last - first + 1:,} frames of {tiles} tiles make {count:,}"
            fix = "use fewer --tiles or split the frames into several jobs"
        else:
            what = f"{last - first + 1:,} frames in chunks of {chunk_size} make {count:,}"
            least = -(-(last - first + 1) // MAX_CHUNKS)
            fix = (
                f"use --chunk {least} or more, leave --chunk out (nodes then claim runs "
                "of frames), or split the frames into several jobs"
            )
        raise SubmitError(f"a job may have at most {MAX_CHUNKS:,} chunks; {what}: {fix}")
    order = request.order or IN_ORDER
    if order not in ORDERS:
        raise SubmitError(f"--order {order}: choose {' or '.join(ORDERS)}")
    output = request.output
    if not isinstance(output, str) or not output:
        raise SubmitError("the job has no output folder")
    require = _requirements(request)
    payload = {
        "job_id": job_id,
        "name": safe_name(request.name or "job"),
        "renderer": renderer,
        "renderer_version": request.renderer_version,
        "scene": request.scene,
        "files": request.manifest or {},
        "main": request.main,
        "options": list(request.options),
        "frame_start": first,
        "frame_end": last,
        "chunk_size": chunk_size,
        "padding": request.padding or DEFAULT_PADDING,
        "width": width,
        "height": height,
        "output": output,
        "priority": request.priority,
        "tiles": tiles,
        "format": fmt,
        "video": video,
        "fps": fps,
    }
    # Optional fields, sent only when set (logs from before them still load alike).
    if order != IN_ORDER:
        payload["order"] = order
    if request.supersedes:
        payload["supersedes"] = request.supersedes
    if adaptive:
        payload["adaptive"] = True
    payload.update(require)
    why = PAYLOADS["NEW_JOB"](payload)
    if why is None and last < first:
        why = "the last frame is before the first"
    if why:
        raise SubmitError(f"the job is not valid: {why}")
    return NewJob(payload, tuple(checked.notes))


def _requirements(request: JobRequest) -> dict[str, Any]:
    """The NEW_JOB fields of the request's requirements and limit (only those set), or a
    SubmitError that says what to change."""
    out: dict[str, Any] = {}
    try:
        tags = parse_tags(request.require, job=True)
    except Refused as exc:
        raise SubmitError(f"--require: {exc}") from None
    if tags:
        out["require"] = list(tags)
    memory = request.require_memory
    if memory:
        if type(memory) is not int or not 1 <= memory <= MAX_MEMORY:
            raise SubmitError(
                f"--require-memory: {memory!r} is not a size from 1 byte to "
                f"{memory_text(MAX_MEMORY)} (e.g. 16G)"
            )
        out["require_memory"] = memory
    limit = request.max_nodes
    if limit:
        if type(limit) is not int or not 1 <= limit <= MAX_NODES_LIMIT:
            raise SubmitError(
                f"--max-nodes: {limit!r}: give a whole number from 1 to {MAX_NODES_LIMIT:,} "
                "(or none for no limit)"
            )
        out["max_nodes"] = limit
    return out
