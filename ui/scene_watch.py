"""Re-render when the scene changes: the app's side of `peerfarm submit --watch`.

A job submitted with "Re-render when the scene's files change" is watched until
the user turns it off (or the app stops): after each burst of saves the scene is
read again (as the submit dialog read it), and if any file changed, a new revision
is submitted with the same settings. It replaces the last one (``supersedes``: the
farm cancels it and its chunks still rendering stop), takes its chunks in spread
order, and writes into the same output folder, where the old frames stay until the
new ones replace them. The job view follows the newest revision (``revised``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import trio
from PySide6.QtCore import QObject, Signal

from peerfarm.core.chunk_order import SPREAD
from peerfarm.core.refused import Refused
from peerfarm.job_request import JobRequest, scene_request
from peerfarm.preview import preview_request
from peerfarm.scenes.watch import scene_changes, scene_key

if TYPE_CHECKING:
    from peerfarm.runtime.node import Node
    from ui.app import PeerfarmApp

log = logging.getLogger(__name__)


@dataclass
class Watch:
    scene: str
    request: JobRequest  # the settings every revision is submitted with
    job_id: str  # the newest revision
    key: tuple = ()
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    revisions: int = 1
    preview_id: str | None = None  # the newest revision's preview; None: no preview
    note: str = ""  # the last thing worth telling (a scene that cannot be read...)


def _revised_request(watch: Watch) -> tuple[JobRequest, tuple]:
    """Blocking: the scene read again, with the watched job's settings; and its key."""
    fresh = scene_request(watch.scene, watch.request.renderer)
    request = watch.request.replace(
        scene=fresh.scene,
        files=fresh.files,
        main=fresh.main,
        scene_notes=fresh.scene_notes,
        supersedes=watch.job_id,
    )
    return request, scene_key(request.scene, request.main, request.files)


async def submit_with_preview(
    node: Node, request: JobRequest, preview: bool | str | None
) -> tuple[str, str]:
    """Submit ``request``, after its preview job if ``preview`` (True, or the id of the
    preview job the new one replaces): (job id, preview job id or "")."""
    preview_id = ""
    if preview:
        quick = await trio.to_thread.run_sync(preview_request, request, node.plugins)
        replaces = preview if isinstance(preview, str) else ""
        preview_id = await node.submit(quick.replace(supersedes=replaces))
    return await node.submit(request), preview_id


class SceneWatches(QObject):
    """The app's watched scenes, by the job id of their newest revision."""

    revised = Signal(str, str)  # the replaced job's id, the new revision's
    changed = Signal()  # a watch started, stopped or has a new note

    def __init__(self, app: PeerfarmApp) -> None:
        super().__init__()
        self.app = app
        self.watches: dict[str, Watch] = {}

    def watching(self, job_id: str) -> Watch | None:
        return self.watches.get(job_id)

    def start(
        self, scene: str, request: JobRequest, job_id: str, preview_id: str | None = None
    ) -> None:
        """Watch ``scene``, which was just submitted as ``request`` (job ``job_id``, with
        its preview ``preview_id``, or None without one)."""
        request = request.replace(supersedes="", order=request.order or SPREAD)
        watch = Watch(scene, request, job_id, preview_id=preview_id)
        self.watches[job_id] = watch
        self.app.spawn(self._run, watch)
        self.changed.emit()

    def stop(self, job_id: str) -> None:
        watch = self.watches.pop(job_id, None)
        if watch is not None:
            watch.scope.cancel()
            self.changed.emit()

    def stop_all(self) -> None:
        for job_id in list(self.watches):
            self.stop(job_id)

    async def _run(self, watch: Watch) -> None:
        node = self.app.node
        request = watch.request
        output = Path(request.output) if request.output else None
        with watch.scope:
            watch.key = await trio.to_thread.run_sync(
                scene_key, request.scene, request.main, request.files
            )
            # The first (empty) change: the folder is watched from now on. Reading the
            # scene then catches a save made between the submit and this moment.
            async for _ in scene_changes(Path(watch.scene), ignore=output):
                try:
                    revised, key = await trio.to_thread.run_sync(_revised_request, watch)
                except (Refused, OSError) as exc:
                    self._note(watch, f"the scene cannot be submitted now: {exc}")
                    continue
                if key == watch.key:
                    continue
                try:
                    new_id, preview_id = await submit_with_preview(
                        node, revised.replace(scene_notes=()), watch.preview_id
                    )
                except Refused as exc:
                    self._note(watch, f"the new revision was refused: {exc}")
                    continue
                old_id = watch.job_id
                watch.job_id, watch.key, watch.note = new_id, key, ""
                if watch.preview_id is not None:
                    watch.preview_id = preview_id
                watch.revisions += 1
                self.watches.pop(old_id, None)
                self.watches[new_id] = watch
                log.info("scene %s changed: job %s replaces job %s", watch.scene, new_id, old_id)
                self.revised.emit(old_id, new_id)
                self.changed.emit()

    def _note(self, watch: Watch, text: str) -> None:
        watch.note = text
        log.warning("re-render of %s: %s", watch.scene, text)
        self.changed.emit()
