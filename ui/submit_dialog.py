"""The submit dialog: a scene (dropped on the window or chosen here) becomes a job.

The scene is read and checked as `peerfarm submit` reads it (peerfarm.scenes:
hostile archives are refused with the offending entry named); reading happens
in a worker thread, and every refusal is shown in the dialog in words.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from peerfarm.core.actions import MAX_NODES_LIMIT
from peerfarm.core.chunk_order import SPREAD
from peerfarm.core.names import safe_name
from peerfarm.core.refused import Refused
from peerfarm.core.requirements import parse_memory, parse_tags, unmet
from peerfarm.core.state import UP
from peerfarm.core.tiles import MAX_TILES
from peerfarm.job_request import JobRequest, SubmitError, scene_request
from peerfarm.jobspec import DEFAULT_SIZE
from peerfarm.renderers.base import RendererError
from peerfarm.scenes import RENDERERS
from ui.scene_watch import submit_with_preview

if TYPE_CHECKING:
    from ui.app import PeerfarmApp

DEMO_SCENE = "builtin:demo"
AUTO = "detect from the scene"
RENDERER_NAMES = {"builtin": "built-in ray tracer", "povray": "POV-Ray", "blender": "Blender"}


def _read_scene(scene: str, renderer: str | None, plugins: dict) -> dict[str, Any]:
    """Blocking: read and check the scene; its request, renderer and frame range."""
    request = scene_request(scene, renderer)
    chosen = request.renderer or "builtin"
    plugin = plugins.get(chosen)
    if plugin is None:
        raise SubmitError(f"this computer does not know the {chosen} renderer plugin")
    try:
        first, last = plugin.check_job(request)
    except RendererError as exc:
        raise SubmitError(str(exc)) from None
    return {"request": request.replace(renderer=chosen), "renderer": chosen, "range": (first, last)}


class SubmitDialog(QDialog):
    submitted = Signal(str)  # job id

    def __init__(self, app: PeerfarmApp, scene: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.app = app
        self.setWindowTitle("Submit a job")
        self.setMinimumWidth(620)
        self.scene: dict[str, Any] | None = None  # the checked scene (see _read_scene)
        self._reading = 0  # id of the newest read; older answers are dropped
        self._scene_key: tuple[str, str | None] | None = None

        self.scene_edit = QLineEdit()
        self.scene_edit.setPlaceholderText("drop a scene file or folder here, or choose one")
        file_button = QPushButton("File…")
        folder_button = QPushButton("Folder…")
        demo_button = QPushButton("Demo scene")
        demo_button.setToolTip("The built-in demo animation: try the farm without a scene")
        scene_row = QHBoxLayout()
        scene_row.addWidget(self.scene_edit, 1)
        for b in (file_button, folder_button, demo_button):
            scene_row.addWidget(b)

        self.scene_status = QLabel(" ")
        self.scene_status.setWordWrap(True)
        self.renderer = QComboBox()
        self.renderer.addItem(AUTO, None)
        for name in RENDERERS:
            self.renderer.addItem(RENDERER_NAMES.get(name, name), name)
        self.name_edit = QLineEdit()
        self.first = QSpinBox()
        self.last = QSpinBox()
        for spin in (self.first, self.last):
            spin.setRange(-10_000_000, 10_000_000)
        frames_row = QHBoxLayout()
        frames_row.addWidget(self.first)
        frames_row.addWidget(QLabel("to"))
        frames_row.addWidget(self.last)
        self.frames_hint = QLabel()
        frames_row.addWidget(self.frames_hint, 1)
        self.chunk = QSpinBox()
        self.chunk.setRange(0, 10_000)  # 0: "auto", runs sized to each node's speed
        self.chunk.setValue(0)
        self.chunk.setSpecialValueText("auto chunk size")
        self.chunk.setSuffix(" frames per chunk")
        self.chunk.setToolTip(
            "A node renders a chunk in one renderer run. Auto: each node takes runs sized "
            "to its measured speed, big early and small at the end (docs/scheduling.md); "
            "a number fixes the chunk size"
        )
        self.tiles = QSpinBox()
        self.tiles.setRange(1, MAX_TILES)
        self.tiles.setSpecialValueText("whole frames")
        self.tiles.setSuffix(" tiles per frame")
        self.tiles.setToolTip(
            "For big stills: cut each frame into tiles that different computers render at "
            "once; the tiles are stitched into the frame (built-in renderer and POV-Ray)"
        )
        # A tiled job renders one tile of one frame per chunk.
        self.tiles.valueChanged.connect(lambda n: self.chunk.setEnabled(n == 1))
        self.own_size = QCheckBox("the scene's own size")
        self.width_spin = QSpinBox()
        self.height_spin = QSpinBox()
        for spin, value in (
            (self.width_spin, DEFAULT_SIZE[0]),
            (self.height_spin, DEFAULT_SIZE[1]),
        ):
            spin.setRange(1, 16384)
            spin.setValue(value)
        size_row = QHBoxLayout()
        size_row.addWidget(self.width_spin)
        size_row.addWidget(QLabel("×"))
        size_row.addWidget(self.height_spin)
        size_row.addWidget(QLabel("pixels"))
        size_row.addWidget(self.own_size)
        size_row.addStretch(1)
        self.output_edit = QLineEdit()
        output_button = QPushButton("Choose…")
        output_row = QHBoxLayout()
        output_row.addWidget(self.output_edit, 1)
        output_row.addWidget(output_button)
        self.priority = QSpinBox()
        self.priority.setRange(-1000, 1000)
        self.priority.setToolTip("Higher priority jobs render first")
        # Requirements and limit (docs/scheduling.md), as `peerfarm submit` takes them.
        self.require_edit = QLineEdit()
        self.require_edit.setPlaceholderText("any node (or tags, e.g. gpu, lab2)")
        self.require_edit.setToolTip(
            "Render only on nodes that have every one of these tags (a node gets tags with "
            "`peerfarm node --tag gpu`, or in the app's Settings)"
        )
        self.memory_edit = QLineEdit()
        self.memory_edit.setPlaceholderText("any (or e.g. 16G, 512M)")
        self.memory_edit.setToolTip("Render only on nodes with at least this much memory")
        self.max_nodes = QSpinBox()
        self.max_nodes.setRange(0, MAX_NODES_LIMIT)
        self.max_nodes.setSpecialValueText("no limit")
        self.max_nodes.setSuffix(" nodes at most")
        self.max_nodes.setToolTip("How many nodes may render this job at once")
        needs_row = QHBoxLayout()
        needs_row.addWidget(QLabel("tags"))
        needs_row.addWidget(self.require_edit, 2)
        needs_row.addWidget(QLabel("memory"))
        needs_row.addWidget(self.memory_edit, 1)
        self.needs_status = QLabel()
        self.needs_status.setWordWrap(True)
        self.needs_status.setStyleSheet("color: #b26a00;")
        self.needs_status.hide()
        self.preview = QCheckBox("Preview first: a quick pass at quarter size")
        self.preview.setToolTip(
            "Before the full render, the farm renders every frame small and with quick "
            "settings (first, last, middle...), into the output folder's preview folder; "
            "the frame grid shows them until the full frames arrive"
        )
        self.rerender = QCheckBox("Re-render when the scene's files change")
        self.rerender.setToolTip(
            "Each time a file of the scene is saved, a new revision of the job is "
            "submitted: only changed files are sent, the old revision's frames still "
            "rendering stop, and the new frames come first, last, middle... so the whole "
            "shot shows early. The old frames stay until the new ones replace them."
        )

        form = QFormLayout()
        form.addRow("Scene", scene_row)
        form.addRow("", self.scene_status)
        form.addRow("Renderer", self.renderer)
        form.addRow("Job name", self.name_edit)
        form.addRow("Frames", frames_row)
        form.addRow("Chunks", self.chunk)
        form.addRow("Tiles", self.tiles)
        form.addRow("Image size", size_row)
        form.addRow("Output folder", output_row)
        form.addRow("Priority", self.priority)
        form.addRow("Requires", needs_row)
        form.addRow("", self.needs_status)
        form.addRow("Nodes", self.max_nodes)
        form.addRow("", self.preview)
        form.addRow("", self.rerender)

        self.error = QLabel()
        self.error.setWordWrap(True)
        self.error.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error.setStyleSheet("color: #b71c1c;")
        self.error.hide()
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.submit_button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.submit_button.setText("Submit")
        self.submit_button.setEnabled(False)
        for spin in (self.chunk, self.tiles, self.priority, self.max_nodes):
            spin.setMaximumWidth(220)
        # What the job looks like depends on the scene: editable once it is read.
        self.job_fields = [
            self.name_edit,
            self.first,
            self.last,
            self.chunk,
            self.tiles,
            self.width_spin,
            self.height_spin,
            self.own_size,
            self.output_edit,
            output_button,
            self.priority,
            self.require_edit,
            self.memory_edit,
            self.max_nodes,
            self.preview,
            self.rerender,
        ]
        self._fields_enabled(False)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.error)
        layout.addWidget(self.buttons)

        file_button.clicked.connect(self._choose_file)
        folder_button.clicked.connect(self._choose_folder)
        demo_button.clicked.connect(lambda: self.set_scene(DEMO_SCENE))
        output_button.clicked.connect(self._choose_output)
        self.scene_edit.editingFinished.connect(
            lambda: self.set_scene(self.scene_edit.text(), force=False)
        )
        self.renderer.currentIndexChanged.connect(
            lambda _: self.set_scene(self.scene_edit.text(), force=False)
        )
        self.own_size.toggled.connect(self._own_size_toggled)
        self.name_edit.textChanged.connect(lambda _: self._update_output())
        self.require_edit.textChanged.connect(lambda _: self._check_needs())
        self.memory_edit.textChanged.connect(lambda _: self._check_needs())
        self.buttons.accepted.connect(self.submit)
        self.buttons.rejected.connect(self.reject)
        self.setAcceptDrops(True)
        self._output_edited = False
        self.output_edit.textEdited.connect(lambda _: setattr(self, "_output_edited", True))
        if scene:
            self.set_scene(scene)

    # -- the scene ------------------------------------------------------------------------

    def _choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self,
            "Choose a scene",
            "",
            "Scenes (*.pov *.ini *.blend *.json *.zip *.tar.gz *.tgz *.tar);;All files (*)",
        )
        if path:
            self.set_scene(path)

    def _choose_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Choose the scene's folder")
        if path:
            self.set_scene(path)

    def _choose_output(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Where should the frames go?")
        if path:
            self.output_edit.setText(path)
            self._output_edited = True

    def dragEnterEvent(self, event) -> None:  # noqa: ANN001, N802
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: ANN001, N802
        urls = [u for u in event.mimeData().urls() if u.isLocalFile()]
        if urls:
            self.set_scene(urls[0].toLocalFile())

    def set_scene(self, scene: str, force: bool = True) -> None:
        """Read and check a scene (a path, or builtin:NAME) in a worker thread; again only
        if ``force`` (a file chosen or dropped anew may have changed on disk)."""
        scene = scene.strip()
        key = (scene, self.renderer.currentData())
        if key == self._scene_key and not force:
            return  # already read (or being read): e.g. focus left the scene field
        self._scene_key = key
        if self.scene_edit.text() != scene:
            self.scene_edit.setText(scene)
        self.scene = None
        self.submit_button.setEnabled(False)
        self._fields_enabled(False)
        self._show_error("")
        if not scene:
            self.scene_status.setText(" ")
            return
        self._reading += 1
        self.scene_status.setText("reading the scene…")
        self.scene_status.setStyleSheet("")
        if self.app.node is None:
            self._scene_failed("the node is not running yet; try again in a moment")
            return
        self.app.spawn(self._read, self._reading, scene, self.renderer.currentData())

    async def _read(self, reading: int, scene: str, renderer: str | None) -> None:
        plugins = self.app.node.plugins
        try:
            result = await trio.to_thread.run_sync(_read_scene, scene, renderer, plugins)
        except SubmitError as exc:
            if reading == self._reading:
                self._scene_failed(str(exc))
            return
        if reading == self._reading:
            self._scene_read(scene, result)

    def _fields_enabled(self, on: bool) -> None:
        for w in self.job_fields:
            w.setEnabled(on)
        if on:
            self._own_size_toggled(self.own_size.isChecked())

    def _scene_failed(self, why: str) -> None:
        self.scene_status.setText("This scene cannot be submitted.")
        self.scene_status.setStyleSheet("color: #b71c1c;")
        self._show_error(why)

    def _scene_read(self, scene: str, result: dict[str, Any]) -> None:
        self.scene = {**result, "scene": scene}
        renderer = result["renderer"]
        first, last = result["range"]
        request = result["request"]
        files = request.files or {}
        what = f"{len(files)} file(s), main file {request.main}" if files else "scene"
        farm = self._farm_renderers()
        status = f"{RENDERER_NAMES.get(renderer, renderer)} {what}, frames {first}–{last}"
        if renderer not in farm:
            status += f" — no node of the farm has {renderer} installed now"
            self.scene_status.setStyleSheet("color: #b26a00;")
        else:
            self.scene_status.setStyleSheet("color: #1b5e20;")
        for note in request.scene_notes:  # e.g. a .blend's files from outside its folder
            status += f"\nNote: {note}"
        self.scene_status.setText(status)
        if not self.name_edit.isModified():
            self.name_edit.setText(safe_name(request.name))
        self.first.setValue(first)
        self.last.setValue(last)
        self.frames_hint.setText(f"(the scene has {first}–{last})")
        builtin = renderer == "builtin"
        self._fields_enabled(True)
        self.own_size.setEnabled(not builtin)  # the built-in renderer needs a size
        self.own_size.setChecked(not builtin)
        self._update_output()
        self.rerender.setEnabled(not scene.startswith("builtin:"))  # a shipped scene never changes
        self.submit_button.setEnabled(True)

    def _farm_renderers(self) -> set[str]:
        node = self.app.node
        if node is None:
            return set()
        names = set(node.renderers)
        for peer in node.state.peers.values():
            if peer.state == UP:
                names.update(name for name, _ in peer.renderers)
        return names

    def requirements(self) -> tuple[list[str], int]:
        """The tags and memory the fields ask for; Refused with what to type."""
        words = self.require_edit.text().replace(",", " ").split()
        tags = list(parse_tags(words, job=True))
        memory_text = self.memory_edit.text().strip()
        return tags, parse_memory(memory_text) if memory_text else 0

    def _check_needs(self) -> None:
        """Say at once when a requirement cannot be read, or no node up now meets it (the
        job is accepted all the same: a matching node may join later)."""
        try:
            tags, memory = self.requirements()
        except Refused as exc:
            text = str(exc)
        else:
            text = ""
            node = self.app.node
            if (tags or memory) and node is not None:
                up = [p for p in node.state.peers.values() if p.state == UP and p.renders]
                why = unmet(tuple(tags), memory, up).removeprefix("waiting: ")
                if why:
                    text = f"No node of the farm meets this now ({why}): the job will wait."
        self.needs_status.setText(text)
        self.needs_status.setVisible(bool(text))

    def _own_size_toggled(self, own: bool) -> None:
        self.width_spin.setEnabled(not own)
        self.height_spin.setEnabled(not own)

    def _update_output(self) -> None:
        if self._output_edited:
            return
        base = self.app.store.effective.output_folder or str(Path.home() / "peerfarm-output")
        name = safe_name(self.name_edit.text() or "job")
        self.output_edit.setText(str(Path(base) / name))

    # -- submitting -----------------------------------------------------------------------

    def _show_error(self, text: str) -> None:
        self.error.setText(text)
        self.error.setVisible(bool(text))

    def request(self) -> JobRequest:
        """The job request the dialog's fields make of the scene read."""
        assert self.scene is not None
        own = self.own_size.isChecked() and self.own_size.isEnabled()
        output = self.output_edit.text().strip()
        request: JobRequest = self.scene["request"]
        tags, memory = self.requirements()
        return request.replace(
            name=self.name_edit.text().strip() or request.name,
            frames=(self.first.value(), self.last.value()),
            chunk_size=(self.chunk.value() or None) if self.tiles.value() == 1 else 1,
            tiles=self.tiles.value(),
            width=None if own else self.width_spin.value(),
            height=None if own else self.height_spin.value(),
            output=str(Path(output).expanduser().resolve()) if output else "",
            priority=self.priority.value(),
            order=SPREAD if self.rerender.isChecked() else None,
            require=tags,
            require_memory=memory,
            max_nodes=self.max_nodes.value(),
        )

    def submit(self) -> None:
        if self.scene is None or self.app.node is None:
            return
        if self.last.value() < self.first.value():
            self._show_error("The last frame is before the first: check the frame range.")
            return
        if not self.output_edit.text().strip():
            self._show_error("Choose an output folder for the frames.")
            return
        try:
            self.requirements()
        except Refused as exc:
            self._show_error(f"Requires: {exc}")
            return
        self._show_error("")
        self.submit_button.setEnabled(False)
        self.submit_button.setText("Submitting…")
        watch = self.rerender.isChecked() and self.rerender.isEnabled()
        preview = self.preview.isChecked()
        scene = self.scene["scene"]
        self.app.spawn(self._submit, self.request(), scene, watch, preview, on_error=self._refused)

    async def _submit(self, request: JobRequest, scene: str, watch: bool, preview: bool) -> None:
        job_id, preview_id = await submit_with_preview(self.app.node, request, preview)
        if watch:
            self.app.watches.start(scene, request, job_id, preview_id if preview else None)
        self.submitted.emit(job_id)
        self.accept()

    def _refused(self, why: str) -> None:
        self.submit_button.setText("Submit")
        self.submit_button.setEnabled(True)
        self._show_error(f"The farm refused the job: {why}")
