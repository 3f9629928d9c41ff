"""The frame viewer: one frame at full size, and playback of a job's frames as an animation."""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

import trio
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QImage, QKeySequence, QPixmap, QShortcut
from PySide6.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSlider,
    QSpinBox,
    QStyle,
    QVBoxLayout,
    QWidget,
)

from ui.frames import frame_bytes

if TYPE_CHECKING:
    from ui.app import PeerfarmApp

CACHE_BYTES = 512 * 1024 * 1024  # decoded frames kept for playback
PRELOAD_AHEAD = 12  # frames decoded ahead of the playhead


def _decode(data: bytes) -> QImage:
    image = QImage()
    image.loadFromData(data)
    return image


class FrameViewer(QWidget):
    """A window on one job's frames: full size, stepping, playback."""

    def __init__(self, app: PeerfarmApp, job_id: str, parent: QWidget | None = None) -> None:
        super().__init__(parent, Qt.WindowType.Window)
        self.app = app
        self.job_id = job_id
        job = app.job(job_id)
        self.first, self.last = job.frame_start, job.frame_end
        self.setWindowTitle(f"{job.name} — frames")
        self.resize(900, 700)
        self.frame = self.first
        self.images: OrderedDict[int, QImage] = OrderedDict()  # LRU of decoded frames
        self.sources: dict[int, str] = {}
        self._cache_bytes = 0
        self._loading: set[int] = set()
        self.current_image: QImage | None = None

        self.image_label = QLabel()
        self.image_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.image_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)
        self.scroll = QScrollArea()
        self.scroll.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.scroll.setWidget(self.image_label)
        self.scroll.setStyleSheet("QScrollArea { background: #1e1e1e; }")
        self.fit = QCheckBox("Fit to window")
        self.fit.setChecked(True)  # only shrinks frames bigger than the window
        self.fit.setToolTip("Off: every pixel at full size (scroll to see the rest)")
        self.fit.toggled.connect(lambda _: self._show_current())

        style = self.style()
        self.prev_button = QPushButton(
            style.standardIcon(QStyle.StandardPixmap.SP_MediaSkipBackward), ""
        )
        self.prev_button.setToolTip("Previous frame (Left arrow)")
        self.play_button = QPushButton(
            style.standardIcon(QStyle.StandardPixmap.SP_MediaPlay), "Play"
        )
        self.play_button.setToolTip("Play the finished frames as an animation (Space)")
        self.next_button = QPushButton(
            style.standardIcon(QStyle.StandardPixmap.SP_MediaSkipForward), ""
        )
        self.next_button.setToolTip("Next frame (Right arrow)")
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(self.first, self.last)
        self.frame_label = QLabel()
        self.fps = QSpinBox()
        self.fps.setRange(1, 60)
        self.fps.setValue(24)
        self.fps.setSuffix(" fps")
        self.fps.setToolTip("Playback speed")
        self.loop = QCheckBox("Loop")
        self.loop.setChecked(True)
        self.info = QLabel()
        self.info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        controls = QHBoxLayout()
        for w in (self.prev_button, self.play_button, self.next_button):
            controls.addWidget(w)
        controls.addWidget(self.slider, 1)
        controls.addWidget(self.frame_label)
        controls.addWidget(self.fps)
        controls.addWidget(self.loop)
        controls.addWidget(self.fit)
        layout = QVBoxLayout(self)
        layout.addWidget(self.scroll, 1)
        layout.addLayout(controls)
        layout.addWidget(self.info)

        self.timer = QTimer(self)
        self.timer.timeout.connect(self._tick)
        self.prev_button.clicked.connect(lambda: self.step(-1))
        self.next_button.clicked.connect(lambda: self.step(1))
        self.play_button.clicked.connect(self.toggle_play)
        self.slider.valueChanged.connect(self.show_frame)
        self.fps.valueChanged.connect(lambda v: self.timer.setInterval(1000 // v))
        QShortcut(QKeySequence(Qt.Key.Key_Left), self, lambda: self.step(-1))
        QShortcut(QKeySequence(Qt.Key.Key_Right), self, lambda: self.step(1))
        QShortcut(QKeySequence(Qt.Key.Key_Space), self, self.toggle_play)

    # -- which frame ------------------------------------------------------------------

    def done_frames(self) -> list[int]:
        job = self.app.job(self.job_id)
        if job is None:
            return []
        return [
            f
            for f in range(job.frame_start, job.frame_end + 1)
            if job.chunk(job.chunk_of_frame(f)).state == "done" or f in self.images
        ]

    def show_frame(self, frame: int) -> None:
        self.frame = frame
        if self.slider.value() != frame:
            self.slider.blockSignals(True)
            self.slider.setValue(frame)
            self.slider.blockSignals(False)
        self.frame_label.setText(f"frame {frame} of {self.first}–{self.last}")
        if frame in self.images:
            self.images.move_to_end(frame)
        else:
            self._load(frame)
        self._show_current()

    def step(self, delta: int) -> None:
        frames = self.done_frames()
        if not frames:
            return
        later = [f for f in frames if (f > self.frame if delta > 0 else f < self.frame)]
        if later:
            self.show_frame(later[0] if delta > 0 else later[-1])
        elif self.loop.isChecked():
            self.show_frame(frames[0] if delta > 0 else frames[-1])

    # -- playback -----------------------------------------------------------------------

    def toggle_play(self) -> None:
        style = self.style()
        if self.timer.isActive():
            self.timer.stop()
            self.play_button.setText("Play")
            self.play_button.setIcon(style.standardIcon(QStyle.StandardPixmap.SP_MediaPlay))
        else:
            self.timer.start(1000 // self.fps.value())
            self.play_button.setText("Pause")
            self.play_button.setIcon(style.standardIcon(QStyle.StandardPixmap.SP_MediaPause))

    @property
    def playing(self) -> bool:
        return self.timer.isActive()

    def _tick(self) -> None:
        frames = self.done_frames()
        later = [f for f in frames if f > self.frame]
        if not later and not self.loop.isChecked():
            self.toggle_play()
            return
        upcoming = later or frames
        for f in upcoming[:PRELOAD_AHEAD]:
            if f not in self.images:
                self._load(f)
        nxt = upcoming[0] if upcoming else None
        # Hold the current frame until the next one is decoded: no flashing.
        if nxt is not None and nxt in self.images:
            self.show_frame(nxt)

    # -- loading ------------------------------------------------------------------------

    def _load(self, frame: int) -> None:
        if frame in self._loading or self.app.node is None:
            return
        self._loading.add(frame)
        self.app.spawn(self._fetch, frame)

    async def _fetch(self, frame: int) -> None:
        try:
            job = self.app.job(self.job_id)
            data, where = await frame_bytes(self.app.node, job, frame)
            if data is None:
                self.sources[frame] = where
                if frame == self.frame:
                    self._show_current()
                return
            image = await trio.to_thread.run_sync(_decode, data)
            if image.isNull():
                self.sources[frame] = f"frame {frame} is not an image Qt can show ({where})"
                return
            self.sources[frame] = where
            self._keep(frame, image)
            if frame == self.frame:
                self._show_current()
        finally:
            self._loading.discard(frame)

    def _keep(self, frame: int, image: QImage) -> None:
        self.images[frame] = image
        self._cache_bytes += image.sizeInBytes()
        while self._cache_bytes > CACHE_BYTES and len(self.images) > 1:
            _, old = self.images.popitem(last=False)
            self._cache_bytes -= old.sizeInBytes()

    def _show_current(self) -> None:
        image = self.images.get(self.frame)
        self.current_image = image
        if image is None:
            self.image_label.setPixmap(QPixmap())
            self.image_label.setText(self.sources.get(self.frame, "loading…"))
            self.image_label.setStyleSheet("color: #cccccc;")
            self.image_label.resize(self.scroll.viewport().size())
            self.info.setText("")
            return
        pixmap = QPixmap.fromImage(image)
        view = self.scroll.viewport().size()
        if self.fit.isChecked() and (
            image.width() > view.width() or image.height() > view.height()
        ):
            pixmap = pixmap.scaled(
                view, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation
            )
        self.image_label.setPixmap(pixmap)
        self.image_label.resize(pixmap.size().expandedTo(view))
        self.info.setText(
            f"{image.width()} × {image.height()} pixels · {self.sources.get(self.frame, '')}"
        )

    def resizeEvent(self, event) -> None:  # noqa: ANN001, N802
        super().resizeEvent(event)
        self._show_current()

    def closeEvent(self, event) -> None:  # noqa: ANN001, N802
        self.timer.stop()
        super().closeEvent(event)
