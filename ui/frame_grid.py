"""The frame grid: one cell per frame, coloured by where it is, with its thumbnail once done.

Grey: waiting. Yellow: rendering (hover: on which node). Green: done (with a
thumbnail when the frame is in this machine's output folder). Red: failed.
Only the visible cells are painted, so a job of thousands of frames stays cheap.
"""

from __future__ import annotations

import math

from PySide6.QtCore import QEvent, QPoint, QPointF, QRect, QSize, Qt, Signal
from PySide6.QtGui import (
    QColor,
    QFont,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QPen,
    QPixmap,
    QStaticText,
)
from PySide6.QtWidgets import QSizePolicy, QToolTip, QWidget

from ui.farm_summary import DONE, FAILED, RENDERING, WAITING

COLOURS = {
    WAITING: QColor("#d6d6d6"),
    RENDERING: QColor("#f5c518"),
    DONE: QColor("#3fa34d"),
    FAILED: QColor("#d93a3a"),
}
TEXT_COLOURS = {
    WAITING: QColor("#555555"),
    RENDERING: QColor("#3a2f00"),
    DONE: QColor("#ffffff"),
    FAILED: QColor("#ffffff"),
}
GAP = 4
PARTIAL_REPAINT_LIMIT = 200  # more changed cells than this: repaint the visible grid
CELL_SIZES = {"small": QSize(36, 27), "medium": QSize(80, 60), "large": QSize(160, 120)}


class FrameGrid(QWidget):
    """Cells are (first frame, chunk index, state); the job view supplies texts and images."""

    frame_activated = Signal(int)  # double-click: open this frame in the viewer
    frame_menu = Signal(int, int, QPoint)  # right-click: frame, chunk, global position

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[tuple[int, int, str]] = []
        self.thumbnails: dict[int, QPixmap] = {}
        # Frames whose thumbnail is from before this job (the revision it replaced, or
        # its preview): drawn dimmed, framed in the cell's state colour, in any state.
        self.earlier: set[int] = set()
        self._scaled: dict[int, QPixmap] = {}  # thumbnails at the current cell size
        self.cell_size = CELL_SIZES["medium"]
        self.text_for = lambda frame, chunk: f"frame {frame}"
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.setMouseTracking(True)
        self._columns = 1
        self._texts: dict[int, QStaticText] = {}

    def set_cells(self, cells: list[tuple[int, int, str]]) -> None:
        old = self.cells
        self.cells = cells
        if len(cells) != len(old):
            self._relayout()
            self.update()
            return
        # Repaint only the cells that changed: a busy job changes a few cells at a time.
        changed = [i for i, (a, b) in enumerate(zip(old, cells, strict=True)) if a != b]
        if len(changed) > PARTIAL_REPAINT_LIMIT:
            self.update()
        else:
            for i in changed:
                self.update(self.cell_rect(i))

    def set_thumbnails(
        self, thumbnails: dict[int, QPixmap], earlier: set[int] | None = None
    ) -> None:
        if thumbnails is not self.thumbnails:
            self._scaled = {}
        self.thumbnails = thumbnails
        self.earlier = earlier if earlier is not None else set()
        self.update()

    def add_thumbnails(self, more: dict[int, QPixmap]) -> None:
        self.thumbnails.update(more)
        for frame in more:
            self._scaled.pop(frame, None)
        if len(more) > PARTIAL_REPAINT_LIMIT:
            self.update()
            return
        index = {frame: i for i, (frame, _, _) in enumerate(self.cells)}
        for frame in more:
            if frame in index:
                self.update(self.cell_rect(index[frame]))

    def set_cell_size(self, name: str) -> None:
        self.cell_size = CELL_SIZES[name]
        self._scaled = {}
        self._texts = {}  # the font size follows the cell size
        self._relayout()
        self.update()

    # -- layout -------------------------------------------------------------------------

    def _relayout(self) -> None:
        step = self.cell_size.width() + GAP
        self._columns = max(1, (self.width() - GAP) // step)
        rows = math.ceil(len(self.cells) / self._columns) if self.cells else 0
        self.setMinimumHeight(GAP + rows * (self.cell_size.height() + GAP))
        self.updateGeometry()

    def resizeEvent(self, event) -> None:  # noqa: ANN001, N802
        columns = max(1, (self.width() - GAP) // (self.cell_size.width() + GAP))
        if columns != self._columns:
            self._relayout()
        super().resizeEvent(event)

    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(600, self.minimumHeight())

    def cell_rect(self, i: int) -> QRect:
        row, column = divmod(i, self._columns)
        w, h = self.cell_size.width(), self.cell_size.height()
        return QRect(GAP + column * (w + GAP), GAP + row * (h + GAP), w, h)

    def cell_at(self, pos: QPoint) -> int | None:
        w, h = self.cell_size.width() + GAP, self.cell_size.height() + GAP
        column, row = (pos.x() - GAP) // w, (pos.y() - GAP) // h
        if pos.x() < GAP or pos.y() < GAP or column >= self._columns:
            return None
        i = row * self._columns + column
        if 0 <= i < len(self.cells) and self.cell_rect(i).contains(pos):
            return i
        return None

    # -- painting -----------------------------------------------------------------------

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802
        if not self.cells:
            return
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        small = self.cell_size.width() < 60
        font = QFont(self.font())
        font.setPointSizeF(max(6.5, font.pointSizeF() * (0.75 if small else 0.9)))
        painter.setFont(font)
        metrics = painter.fontMetrics()
        for i in self._cells_in(event.region()):
            frame, _, state = self.cells[i]
            rect = self.cell_rect(i)
            earlier = frame in self.earlier
            thumb = self.thumbnails.get(frame) if state == DONE or earlier else None
            if thumb is not None and not small:
                painter.fillRect(rect, QColor("#202020"))
                scaled = self._scaled.get(frame)
                if (
                    scaled is None
                    and thumb.width() <= rect.width()
                    and (thumb.height() <= rect.height())
                ):
                    scaled = thumb  # fitted in a worker thread already
                elif scaled is None:
                    scaled = thumb.scaled(
                        rect.size(),
                        Qt.AspectRatioMode.KeepAspectRatio,
                        Qt.TransformationMode.SmoothTransformation,
                    )
                    self._scaled[frame] = scaled
                x = rect.x() + (rect.width() - scaled.width()) // 2
                y = rect.y() + (rect.height() - scaled.height()) // 2
                if earlier:  # an older picture: dimmed until this job's frame is in
                    painter.setOpacity(0.45)
                painter.drawPixmap(x, y, scaled)
                painter.setOpacity(1.0)
                painter.setPen(QPen(COLOURS[state], 3))
                painter.drawRect(rect.adjusted(1, 1, -2, -2))
                label = QRect(rect.x() + 3, rect.bottom() - 15, rect.width() - 6, 13)
                painter.fillRect(label.adjusted(-1, 0, 1, 0), QColor(0, 0, 0, 140))
                painter.setPen(QColor("white"))
                self._draw_number(painter, metrics, label, frame)
                continue
            painter.fillRect(rect, COLOURS[state])
            painter.setPen(TEXT_COLOURS[state])
            self._draw_number(painter, metrics, rect, frame)
        painter.end()

    def _draw_number(self, painter: QPainter, metrics, rect: QRect, frame: int) -> None:  # noqa: ANN001
        # Laid-out text is cached per number: drawing plain text is the slow part.
        text = self._texts.get(frame)
        if text is None:
            text = QStaticText(str(frame))
            text.prepare(font=painter.font())
            self._texts[frame] = text
        size = text.size()
        x = rect.x() + (rect.width() - size.width()) / 2
        y = rect.y() + (rect.height() - size.height()) / 2
        painter.drawStaticText(QPointF(x, y), text)

    def _cells_in(self, region) -> list[int]:  # noqa: ANN001
        """Indexes of the cells that touch the region to repaint, each once."""
        h = self.cell_size.height() + GAP
        w = self.cell_size.width() + GAP
        found: set[int] = set()
        for r in region:
            first_row = max(0, (r.top() - GAP) // h)
            last_row = (r.bottom() - GAP) // h
            first_col = max(0, (r.left() - GAP) // w)
            last_col = min(self._columns - 1, (r.right() - GAP) // w)
            for row in range(first_row, last_row + 1):
                base = row * self._columns
                for column in range(first_col, last_col + 1):
                    i = base + column
                    if i < len(self.cells):
                        found.add(i)
        return sorted(found)

    # -- interaction --------------------------------------------------------------------

    def event(self, ev: QEvent) -> bool:
        if ev.type() == QEvent.Type.ToolTip:
            i = self.cell_at(ev.pos())
            if i is None:
                QToolTip.hideText()
            else:
                frame, chunk, _ = self.cells[i]
                QToolTip.showText(ev.globalPos(), self.text_for(frame, chunk), self)
            return True
        return super().event(ev)

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        i = self.cell_at(event.position().toPoint())
        if i is not None:
            self.frame_activated.emit(self.cells[i][0])

    def contextMenuEvent(self, event) -> None:  # noqa: ANN001, N802
        i = self.cell_at(event.pos())
        if i is not None:
            frame, chunk, _ = self.cells[i]
            self.frame_menu.emit(frame, chunk, event.globalPos())
