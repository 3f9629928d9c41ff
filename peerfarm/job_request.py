"""A job request: what a user asks the farm to render, from the CLI or the app to a node.

One typed record travels the whole way: the faces build it (``scene_request``
reads a user's scene into it), the CLI sends it in a SUBMIT message
(``to_wire`` / ``from_wire``), and the node turns it into a NEW_JOB payload
(peerfarm/jobspec.py). Anything wrong with it is a SubmitError whose message
says what to change.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peerfarm.core.refused import Refused


class SubmitError(Refused):
    """The job cannot be submitted; the message says what to change."""


SceneFile = bytes | Path  # a file's bytes, or (big files) where it is kept on disk


@dataclass
class JobRequest:
    # The scene: the built-in renderer's scene text inline, or scene files. Files are
    # sent as bytes (small scenes), or uploaded as blobs first and named by ``manifest``
    # (path -> {"sha", "size"}); a node reads uploaded files where its blob store keeps
    # them (``files`` then maps to paths).
    renderer: str | None = None  # None: the built-in renderer
    scene: str = ""
    files: dict[str, SceneFile] | None = None
    manifest: dict[str, dict[str, Any]] | None = None
    main: str = ""  # the main scene file among ``files``
    name: str = "job"
    renderer_version: str = ""  # "" = any; else a version prefix nodes must have
    options: list[str] = field(default_factory=list)  # renderer options (allow-listed)
    frames: tuple[int, int] | None = None  # None: the scene's own range
    chunk_size: int | None = None  # None: the default
    tiles: int = 1
    format: str | None = None  # None: the scene's own, else png
    video: bool = False
    fps: int = 24
    padding: int = 4
    width: int | None = None  # None: the scene's own size
    height: int | None = None
    output: str = ""  # the output folder, on the node the job is submitted to
    priority: int = 0
    # Which chunks nodes take first: None or "in-order", or "spread" (first, last,
    # middle...: the whole shot early; peerfarm/core/chunk_order.py).
    order: str | None = None
    # A new revision of this job (re-render on save): the farm cancels that job as this
    # one arrives; "" for none.
    supersedes: str = ""
    # Requirements and limits (docs/scheduling.md): only nodes with every one of these
    # tags and at least this much memory (bytes; 0: any) take the job, and at most
    # max_nodes nodes render it at once (0: no limit).
    require: list[str] = field(default_factory=list)
    require_memory: int = 0
    max_nodes: int = 0
    # What reading the scene found that the user should know (a .blend's files taken
    # from outside its folder): shown by the face before submitting, never sent.
    scene_notes: tuple[str, ...] = ()

    def replace(self, **changes: Any) -> JobRequest:
        return dataclasses.replace(self, **changes)

    def to_wire(self) -> dict[str, Any]:
        """The request as a SUBMIT message carries it (files must be uploaded first, or
        be bytes)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name in _LOCAL_ONLY:
            del data[name]
        if self.files is not None:
            if not all(isinstance(v, bytes) for v in self.files.values()):
                raise SubmitError("scene files kept on disk must be uploaded before submitting")
        data["frames"] = list(self.frames) if self.frames is not None else None
        return data

    @classmethod
    def from_wire(cls, data: Any) -> JobRequest:
        """A request from a SUBMIT message; every field's type is checked."""
        if type(data) is not dict:
            raise SubmitError("the job request is not a map")
        known = {f.name: f for f in dataclasses.fields(cls) if f.name not in _LOCAL_ONLY}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise SubmitError(f"the job request has unknown fields: {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for name, value in data.items():
            check = _WIRE_TYPES[name]
            if value is None and name in _OPTIONAL:
                values[name] = None
                continue
            if not check(value):
                raise SubmitError(f"the job request's {name} has the wrong type")
            values[name] = tuple(value) if name == "frames" else value
        return cls(**values)


def _map_of(check_value: Any) -> Any:
    return lambda v: (
        type(v) is dict and all(type(k) is str and check_value(x) for k, x in v.items())
    )


def _int(v: Any) -> bool:
    return type(v) is int


def _str(v: Any) -> bool:
    return type(v) is str


_WIRE_TYPES = {
    "renderer": _str,
    "scene": _str,
    "files": _map_of(lambda x: type(x) is bytes),
    "manifest": _map_of(lambda x: type(x) is dict),
    "main": _str,
    "name": _str,
    "renderer_version": _str,
    "options": lambda v: type(v) is list and all(type(o) is str for o in v),
    "frames": lambda v: type(v) in (list, tuple) and len(v) == 2 and all(_int(f) for f in v),
    "chunk_size": _int,
    "tiles": _int,
    "format": _str,
    "video": lambda v: type(v) is bool,
    "fps": _int,
    "padding": _int,
    "width": _int,
    "height": _int,
    "output": _str,
    "priority": _int,
    "order": _str,
    "supersedes": _str,
    "require": lambda v: type(v) is list and all(type(t) is str for t in v),
    "require_memory": _int,
    "max_nodes": _int,
}
_LOCAL_ONLY = {"scene_notes"}  # fields a face uses and SUBMIT does not carry
_OPTIONAL = {
    "renderer",
    "files",
    "manifest",
    "frames",
    "chunk_size",
    "format",
    "width",
    "height",
    "order",
}


def builtin_scene(scene: str) -> tuple[str, str]:
    """(scene text, default job name) of a shipped scene, ``builtin:NAME``."""
    from peerfarm.renderers.builtin import SceneError, builtin_scene_text

    name = scene.split(":", 1)[1]
    try:
        return builtin_scene_text(name), name
    except SceneError as exc:
        raise SubmitError(str(exc)) from None


def scene_request(scene: str, renderer: str | None, spool: Path | None = None) -> JobRequest:
    """A request for a user's scene, named after it: ``builtin:NAME``, or a file,
    folder, .zip or .tar.gz read as a scene package (peerfarm.scenes: hostile archives
    are refused before anything is sent).

    The built-in renderer's scene travels as text; other scenes as files (bytes, or
    with ``spool``, big ones as paths that are uploaded before the job is submitted).
    """
    from peerfarm.core.actions import MAX_SCENE_BYTES
    from peerfarm.scenes import PackageError, load_package

    if scene.startswith("builtin:"):
        text, name = builtin_scene(scene)
        return JobRequest(renderer=renderer, scene=text, name=name)
    path = Path(scene)
    if not path.exists():
        raise SubmitError(f"scene {path} does not exist")
    name = path.name.split(".")[0] if path.is_file() else path.resolve().name
    try:
        package = load_package(path, renderer=renderer, spool=spool)
    except PackageError as exc:
        raise SubmitError(str(exc)) from None
    if package.renderer == "builtin":
        data = package.files[package.main]
        if not isinstance(data, bytes):  # kept on disk: bigger than any builtin scene
            raise SubmitError(
                f"{package.main} is too big for a built-in renderer scene "
                f"(at most {MAX_SCENE_BYTES // 1024} KiB)"
            )
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise SubmitError(f"{package.main} is not UTF-8 text") from None
        return JobRequest(renderer="builtin", scene=text, name=name)
    return JobRequest(
        renderer=package.renderer,
        files=dict(package.files),
        main=package.main,
        name=name,
        scene_notes=package.notes,
    )
