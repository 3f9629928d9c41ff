"""The job view: one job's frames as a grid, its controls, its thumbnails, its logs."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import trio
from PySide6.QtCore import QPoint, QSize, Qt, QUrl
from PySide6.QtGui import QDesktopServices, QImage, QPixmap
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QMenu,
    QMessageBox,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from peerfarm.core.state import ACTIVE, CHUNK_FAILED, JOB_FAILED, Job
from ui.farm_summary import (
    DONE,
    FAILED,
    RENDERING,
    WAITING,
    JobRow,
    cell_text,
    frame_cells,
    peer_names,
)
from ui.frame_grid import COLOURS, FrameGrid
from ui.frame_viewer import FrameViewer
from ui.frames import has_earlier_frames, read_earlier_thumbnails, read_thumbnails
from ui.jobs_view import STATE_COLOURS, format_fps, state_text
from ui.log_dialog import LogDialog
from ui.rates import format_eta

if TYPE_CHECKING:
    from ui.app import PeerfarmApp

THUMBNAIL_BATCH = 16  # thumbnails per thread call: the first show soon, each batch is short
EARLIER_INTERVAL = 2.0  # seconds between looks for earlier thumbnails (see JobView)


def _decode_all(blobs: dict[int, bytes], size: QSize) -> dict[int, QImage]:
    """Decode thumbnails and fit them to the grid's cells (blocking: a worker thread),
    so the GUI thread only draws them."""
    out = {}
    for frame, data in blobs.items():
        image = QImage()
        if image.loadFromData(data):
            out[frame] = image.scaled(
                size, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation
            )
    return out


def has_failed_frames(job: Job) -> bool:
    return any(c.state == CHUNK_FAILED or c.failed_on for c in job.chunks.values())


class Legend(QWidget):
    def __init__(self) -> None:
        super().__init__()
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.labels = {}
        for state, text in (
            (WAITING, "waiting"),
            (RENDERING, "rendering"),
            (DONE, "done"),
            (FAILED, "failed"),
        ):
            swatch = QLabel()
            swatch.setFixedSize(14, 14)
            swatch.setStyleSheet(f"background: {COLOURS[state].name()}; border-radius: 2px;")
            label = QLabel(text)
            layout.addWidget(swatch)
            layout.addWidget(label)
            layout.addSpacing(10)
            self.labels[state] = (label, text)
        layout.addStretch(1)

    def set_counts(self, counts: dict[str, int]) -> None:
        for state, (label, text) in self.labels.items():
            label.setText(f"{counts.get(state, 0)} {text}")


class JobView(QWidget):
    def __init__(self, app: PeerfarmApp) -> None:
        super().__init__()
        self.app = app
        self.job_id = ""
        self._job: Job | None = None
        self.thumbnails: dict[int, QPixmap] = {}
        # Frames whose thumbnail is an earlier one (the revision this job replaced, or
        # the preview): shown until this job's own frame replaces it.
        self.earlier: set[int] = set()
        self._earlier_next = 0.0
        self._thumbs_loading = False
        self._viewers: list[FrameViewer] = []
        self._logs: list[LogDialog] = []

        self.title = QLabel("Select a job to see its frames")
        font = self.title.font()
        font.setPointSizeF(font.pointSizeF() * 1.35)
        font.setBold(True)
        self.title.setFont(font)
        self.state_label = QLabel()
        self.detail = QLabel()
        self.detail.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.detail.setWordWrap(True)
        # Long paths and errors wrap or are cut, never widen the window.
        self.detail.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)

        self.pause_button = QPushButton("Pause")
        self.pause_button.setToolTip(
            "No node starts new frames of this job; frames rendering now finish"
        )
        self.resume_button = QPushButton("Resume")
        self.retry_button = QPushButton("Retry failed frames")
        self.retry_button.setToolTip("Render the failed frames again (after fixing their cause)")
        self.cancel_button = QPushButton("Cancel job")
        self.cancel_button.setToolTip("Stop the job on every node; frames already collected stay")
        self.priority = QSpinBox()
        self.priority.setRange(-1000, 1000)
        self.priority.setPrefix("priority ")
        self.priority.setToolTip("Higher priority jobs render first, on every node")
        self.play_button = QPushButton("Play")
        self.play_button.setToolTip("Open the frame viewer and play the finished frames")
        self.folder_button = QPushButton("Open output folder")
        self.watch_box = QCheckBox("Re-render on save")
        self.watch_box.setToolTip(
            "This job's scene is watched: each save submits a new revision. Untick to stop "
            "watching (the newest revision goes on rendering)."
        )
        self.watch_box.hide()
        self.log_button = QPushButton("Logs")
        self.log_button.setToolTip(
            "Renderer logs of the failed frames (right-click a frame: its log)"
        )
        self.cell_size = QComboBox()
        self.cell_size.addItems(["small", "medium", "large"])
        self.cell_size.setCurrentText("medium")
        self.cell_size.setToolTip("Size of the frame cells")

        self.grid = FrameGrid()
        self.grid.text_for = self._cell_text
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.grid)
        self.legend = Legend()

        head = QHBoxLayout()
        head.addWidget(self.title)
        head.addWidget(self.state_label)
        head.addStretch(1)
        for w in (
            self.pause_button,
            self.resume_button,
            self.retry_button,
            self.cancel_button,
            self.priority,
        ):
            head.addWidget(w)
        second = QHBoxLayout()
        second.addWidget(self.detail, 1)
        for w in (self.watch_box, self.play_button, self.folder_button, self.log_button):
            second.addWidget(w)
        third = QHBoxLayout()
        third.addWidget(self.legend, 1)
        third.addWidget(QLabel("cells:"))
        third.addWidget(self.cell_size)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(head)
        layout.addLayout(second)
        layout.addLayout(third)
        layout.addWidget(scroll, 1)

        self.pause_button.clicked.connect(lambda: self._control("pause"))
        self.resume_button.clicked.connect(lambda: self._control("resume"))
        self.retry_button.clicked.connect(lambda: self._control("retry"))
        self.cancel_button.clicked.connect(self._confirm_cancel)
        self.priority.editingFinished.connect(self._priority_changed)
        self.play_button.clicked.connect(self._play)
        self.folder_button.clicked.connect(self._open_folder)
        self.log_button.clicked.connect(lambda: self.open_logs(None))
        self.watch_box.toggled.connect(self._watch_toggled)
        self.cell_size.currentTextChanged.connect(self._cell_size_changed)
        self.grid.frame_activated.connect(self.open_viewer)
        self.grid.frame_menu.connect(self._frame_menu)
        self._set_enabled(None)

    # -- showing a job ------------------------------------------------------------------

    def set_job(self, job_id: str) -> None:
        if job_id == self.job_id:
            return
        self.job_id = job_id
        self._job = None
        self.thumbnails = {}
        self.earlier = set()
        self._earlier_next = 0.0
        self.grid.set_thumbnails(self.thumbnails, self.earlier)
        self.grid.set_cells([])
        if not job_id:
            self.title.setText("Select a job to see its frames")
            self.state_label.setText("")
            self.detail.setText("")
            self._set_enabled(None)
        elif self.app.snapshot is not None:
            self.refresh(self.app.snapshot.jobs)  # show it now, not at the next refresh

    def refresh(self, rows: list[JobRow]) -> None:
        if not self.job_id:
            return
        job = self.app.job(self.job_id)
        row = next((r for r in rows if r.id == self.job_id), None)
        if job is None or row is None:
            return
        if job is not self._job:  # jobs are immutable: same object, nothing changed
            self._job = job
            cells = frame_cells(job)
            self.grid.set_cells(cells)
            counts: dict[str, int] = {}
            for _, _, state in cells:
                counts[state] = counts.get(state, 0) + 1
            self.legend.set_counts(counts)
        self.title.setText(row.name)
        colour = STATE_COLOURS.get(row.state)
        self.state_label.setText(state_text(row))
        sheet = f"color: {colour.name()}; font-weight: bold;" if colour else ""
        if self.state_label.styleSheet() != sheet:  # style sheets are slow to apply
            self.state_label.setStyleSheet(sheet)
        parts = [f"{row.frames_done} of {row.frames_total} frames done"]
        if row.fps:
            parts.append(format_fps(row.fps))
        if row.eta is not None and row.state in ("rendering", "queued"):
            parts.append(f"{format_eta(row.eta)} left")
        parts.append(f"{row.renderer}, submitted by {row.submitter}")
        if row.needs:
            parts.append(f"requires {row.needs}")
        if row.waiting:
            parts.append(row.waiting)
        if row.output_waiting:
            parts.append(row.output_waiting)
        if row.mine:
            parts.append(f"output: {row.output}")
        if row.error:
            parts.append(f"error: {row.error.splitlines()[0][:240]}")
        watch = self.app.watches.watching(self.job_id)
        if watch is not None:
            parts.append(f"revision {watch.revisions}, watching {watch.scene}")
            if watch.note:
                parts.append(watch.note)
        self.detail.setText(" · ".join(parts))
        self.detail.setToolTip(row.error or row.output)
        if not self.priority.hasFocus():
            self.priority.setValue(row.priority)
        self._set_enabled(job)
        if row.mine:
            self._load_thumbnails(job)

    def _set_enabled(self, job: Job | None) -> None:
        active = job is not None and job.state == ACTIVE
        self.pause_button.setEnabled(active and not job.paused)
        self.resume_button.setEnabled(job is not None and job.paused and active)
        self.retry_button.setEnabled(
            job is not None and job.state in (ACTIVE, JOB_FAILED) and has_failed_frames(job)
        )
        self.cancel_button.setEnabled(active)
        self.priority.setEnabled(active)
        self.play_button.setEnabled(job is not None and job.frames_done > 0)
        mine = (
            job is not None and self.app.node is not None and job.submitter == self.app.node.node_id
        )
        self.folder_button.setEnabled(mine)
        self.log_button.setEnabled(job is not None and bool(job.chunks or job.done_runs))
        watched = job is not None and self.app.watches.watching(job.id) is not None
        self.watch_box.setVisible(watched)
        if watched and not self.watch_box.isChecked():
            self.watch_box.blockSignals(True)
            self.watch_box.setChecked(True)
            self.watch_box.blockSignals(False)

    def _watch_toggled(self, on: bool) -> None:
        if not on and self.job_id:
            self.app.watches.stop(self.job_id)
            self.watch_box.hide()

    def _cell_text(self, frame: int, chunk: int) -> str:
        job = self.app.job(self.job_id)
        if job is None:
            return ""
        text = cell_text(job, chunk, peer_names(self.app.node.state))
        if frame in self.thumbnails:
            text += "\ndouble-click: view at full size"
        return text

    # -- thumbnails ---------------------------------------------------------------------

    def _cell_size_changed(self, name: str) -> None:
        self.grid.set_cell_size(name)
        # Thumbnails are fitted to the cells in a worker thread: load them again.
        self.thumbnails = {}
        self.earlier = set()
        self._earlier_next = 0.0
        self.grid.set_thumbnails(self.thumbnails, self.earlier)
        job = self.app.job(self.job_id)
        if job is not None and self.app.node and job.submitter == self.app.node.node_id:
            self._load_thumbnails(job)

    def _load_thumbnails(self, job: Job) -> None:
        node = self.app.node
        if self._thumbs_loading or node is None:
            return
        collected = node.frames_collected(job.id)
        missing = sorted(f for f in collected if f not in self.thumbnails or f in self.earlier)
        # Earlier thumbnails of the frames not here yet: looked for again every few
        # seconds while the job runs (its preview's frames keep coming).
        earlier = []
        now = time.monotonic()
        if now >= self._earlier_next and has_earlier_frames(job):
            self._earlier_next = now + EARLIER_INTERVAL if job.state == ACTIVE else math.inf
            earlier = [
                f
                for f in range(job.frame_start, job.frame_end + 1)
                if f not in collected and f not in self.thumbnails
            ]
        if missing or earlier:
            self._thumbs_loading = True
            self.app.spawn(self._read_thumbnails, job, missing, earlier)

    async def _read_thumbnails(self, job: Job, frames: list[int], earlier: list[int]) -> None:
        try:
            for reader, wanted in ((read_thumbnails, frames), (read_earlier_thumbnails, earlier)):
                for start in range(0, len(wanted), THUMBNAIL_BATCH):
                    batch = wanted[start : start + THUMBNAIL_BATCH]
                    size = self.grid.cell_size
                    blobs = await trio.to_thread.run_sync(reader, job, batch)
                    images = await trio.to_thread.run_sync(_decode_all, blobs, size)
                    if job.id != self.job_id or size != self.grid.cell_size:
                        return  # another job or cell size was chosen meanwhile
                    collected = self.app.node.frames_collected(job.id)
                    pixmaps = {
                        f: QPixmap.fromImage(img)
                        for f, img in images.items()
                        if reader is read_thumbnails or f not in collected
                    }
                    if reader is read_thumbnails:
                        self.earlier.difference_update(pixmaps)
                    else:
                        self.earlier.update(pixmaps)
                    self.thumbnails.update(pixmaps)
                    self.grid.add_thumbnails(pixmaps)
        finally:
            self._thumbs_loading = False

    # -- actions ------------------------------------------------------------------------

    def _error(self, text: str) -> None:
        QMessageBox.warning(self, "peerfarm", text)

    def _control(self, what: str) -> None:
        node = self.app.node
        job_id = self.job_id
        if node is None or not job_id:
            return
        fn = {"pause": node.pause, "resume": node.resume, "retry": node.retry}[what]
        self.app.call(lambda: fn(job_id), on_error=self._error)

    def _confirm_cancel(self) -> None:
        job = self.app.job(self.job_id)
        if job is None:
            return
        answer = QMessageBox.question(
            self,
            "Cancel job",
            f"Cancel {job.name} on every node?\n\nRenders in progress stop now. "
            f"Frames already in the output folder stay there.",
        )
        if answer == QMessageBox.StandardButton.Yes:
            self.cancel_job()

    def cancel_job(self) -> None:
        node, job_id = self.app.node, self.job_id
        if node is not None and job_id:
            self.app.call(lambda: node.cancel(job_id), on_error=self._error)

    def _priority_changed(self) -> None:
        node, job_id, value = self.app.node, self.job_id, self.priority.value()
        job = self.app.job(job_id)
        if node is not None and job is not None and job.priority != value:
            self.app.call(lambda: node.set_priority(job_id, value), on_error=self._error)

    def open_viewer(self, frame: int | None = None) -> FrameViewer | None:
        job = self.app.job(self.job_id)
        if job is None:
            return None
        viewer = FrameViewer(self.app, self.job_id, self)
        self._viewers = [v for v in self._viewers if v.isVisible()] + [viewer]
        viewer.show()
        if frame is None:
            done = viewer.done_frames()
            frame = done[0] if done else job.frame_start
        viewer.show_frame(frame)
        return viewer

    def _play(self) -> None:
        viewer = self.open_viewer()
        if viewer is not None and not viewer.playing:
            viewer.toggle_play()

    def _open_folder(self) -> None:
        job = self.app.job(self.job_id)
        if job is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(job.output))

    def open_logs(self, frame: int | None) -> LogDialog | None:
        if not self.job_id:
            return None
        dialog = LogDialog(self.app, self.job_id, frame, self)
        self._logs = [d for d in self._logs if d.isVisible()] + [dialog]
        dialog.show()
        return dialog

    def _frame_menu(self, frame: int, chunk: int, pos: QPoint) -> None:
        job = self.app.job(self.job_id)
        if job is None:
            return
        menu = QMenu(self)
        view = menu.addAction(f"View frame {frame}")
        view.setEnabled(job.chunk(chunk).state == "done")
        logs = menu.addAction(f"Renderer log of frame {frame}")
        logs.setEnabled(job.chunk(chunk).state != "pending" or bool(job.chunk(chunk).failed_on))
        chosen = menu.exec(pos)
        if chosen is view:
            self.open_viewer(frame)
        elif chosen is logs:
            self.open_logs(frame)
