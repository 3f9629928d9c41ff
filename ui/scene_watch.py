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
from peerfarm.scenes.watch import scene_changes, scene_key

if TYPE_CHECKING:
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

    def start(self, scene: str, request: JobRequest, job_id: str) -> None:
        """Watch ``scene``, which was just submitted as ``request`` (job ``job_id``)."""
        watch = Watch(scene, request.replace(supersedes="", order=request.order or SPREAD), job_id)
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
                    new_id = await node.submit(revised.replace(scene_notes=()))
                except Refused as exc:
                    self._note(watch, f"the new revision was refused: {exc}")
                    continue
                old_id = watch.job_id
                watch.job_id, watch.key, watch.note = new_id, key, ""
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
