"""The jobs view: every job of the farm, one row each, with a progress bar."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QPalette
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QHeaderView,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionProgressBar,
    QStyleOptionViewItem,
    QTableView,
)

from ui.farm_summary import JobRow
from ui.rates import format_eta
from ui.row_table import RowTableModel

COLUMNS = ["Job", "Renderer", "Submitted by", "Progress", "Speed", "ETA", "State", "Priority"]
PROGRESS = COLUMNS.index("Progress")
STATE = COLUMNS.index("State")
HEADER_HINTS = [
    "The job's name; select a job to see its frames below",
    "The program that renders it",
    "The computer it was sent from (its frames are collected there)",
    "Frames rendered of all its frames",
    "Frames per second the whole farm finishes lately (over the last 30 s)",
    "Time left at that speed",
    "queued, rendering, paused, done, failed or cancelled",
    "Higher priority jobs render first",
]

STATE_COLOURS = {
    "queued": QColor("#6b6b6b"),
    "rendering": QColor("#b07d00"),
    "paused": QColor("#c0601a"),
    "done": QColor("#2e8b3d"),
    "failed": QColor("#c62828"),
    "cancelled": QColor("#6b6b6b"),
}
BAR_COLOURS = {
    "done": QColor("#3fa34d"),
    "failed": QColor("#d93a3a"),
    "paused": QColor("#e08a2c"),
    "cancelled": QColor("#9e9e9e"),
}
# What a state means, for the State column's tooltip.
STATE_HINTS = {
    "queued": "waiting for a free node",
    "rendering": "nodes are rendering its frames",
    "paused": "no node starts new frames of it until you resume it",
    "done": "every frame is rendered",
    "failed": "a frame failed on several nodes; Retry renders the failed frames again",
    "cancelled": "cancelled: nothing more is rendered",
}


def format_fps(fps: float | None) -> str:
    if fps is None:
        return ""
    if fps >= 10:
        return f"{fps:.0f} fps"
    if fps >= 1:
        return f"{fps:.1f} fps"
    return f"{fps:.2f} fps"


def state_text(row: JobRow) -> str:
    if row.output_waiting:
        return "output disk full"
    if row.mine and row.state == "done" and not row.complete:
        return "done, collecting"
    if row.waiting and row.state == "queued":
        return "queued: no node matches"
    return row.state


class JobsModel(RowTableModel[JobRow]):
    def __init__(self) -> None:
        super().__init__(COLUMNS, HEADER_HINTS)

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = 0) -> Any:
        if not index.isValid():
            return None
        row = self.rows[index.row()]
        column = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return [
                row.name,
                row.renderer,
                f"{row.submitter} (this computer)" if row.mine else row.submitter,
                f"{row.frames_done} / {row.frames_total}",
                format_fps(row.fps),
                format_eta(row.eta),
                state_text(row),
                str(row.priority),
            ][column]
        if role == Qt.ItemDataRole.UserRole:
            return row
        if role == Qt.ItemDataRole.ForegroundRole and column == STATE:
            return QBrush(STATE_COLOURS.get(row.state, QColor("black")))
        if role == Qt.ItemDataRole.ToolTipRole:
            if column == STATE:
                hint = STATE_HINTS.get(row.state, "")
                for why in (row.waiting, row.output_waiting):
                    if why:
                        hint = f"{hint}\n{why}"
                return f"{hint}\n{row.error}" if row.error else hint
            if column == PROGRESS and row.frames_collected is not None:
                return (
                    f"{row.frames_done} of {row.frames_total} frames rendered, "
                    f"{row.frames_collected} in {row.output}"
                )
            if column == 0:
                return f"job {row.id}\noutput: {row.output}"
        if role == Qt.ItemDataRole.TextAlignmentRole and column in (4, 5, 7):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None


class ProgressDelegate(QStyledItemDelegate):
    """Draws the Progress column as a progress bar."""

    def paint(self, painter, option: QStyleOptionViewItem, index: QModelIndex) -> None:  # noqa: ANN001
        row: JobRow = index.data(Qt.ItemDataRole.UserRole)
        bar = QStyleOptionProgressBar()
        bar.rect = option.rect.adjusted(2, 3, -2, -3)
        bar.minimum = 0
        bar.maximum = max(row.frames_total, 1)
        bar.progress = row.frames_done
        bar.text = f"{row.frames_done} / {row.frames_total}"
        bar.textVisible = True
        # Qt 6 draws a progress bar horizontally only when told so in its state.
        bar.state = (
            option.state | QStyle.StateFlag.State_Horizontal | QStyle.StateFlag.State_Enabled
        )
        # The bar says the state at a glance: green done, red failed, orange paused.
        bar.palette = QPalette(option.palette)
        colour = BAR_COLOURS.get(row.state)
        if colour is not None:
            bar.palette.setColor(QPalette.ColorRole.Highlight, colour)
        style = option.widget.style() if option.widget else QApplication.style()
        if option.state & QStyle.StateFlag.State_Selected:
            painter.fillRect(option.rect, option.palette.highlight())
        style.drawControl(QStyle.ControlElement.CE_ProgressBar, bar, painter, option.widget)


class JobsView(QTableView):
    """The jobs table; ``job_selected`` carries the selected job's id ("" for none)."""

    job_selected = Signal(str)

    def __init__(self) -> None:
        super().__init__()
        self.jobs_model = JobsModel()
        self.setModel(self.jobs_model)
        self.setItemDelegateForColumn(PROGRESS, ProgressDelegate(self))
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setAlternatingRowColors(True)
        self.verticalHeader().hide()
        self.setShowGrid(False)
        self.setWordWrap(False)
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(False)
        header.setSectionResizeMode(PROGRESS, QHeaderView.ResizeMode.Stretch)
        for column, width in enumerate([150, 80, 170, 200, 80, 90, 120, 60]):
            self.setColumnWidth(column, width)
        self._selected = ""
        self._updating = False
        self.selectionModel().selectionChanged.connect(self._selection_changed)

    def update_rows(self, rows: list[JobRow]) -> None:
        self._updating = True
        try:
            self.jobs_model.update(rows)
        finally:
            self._updating = False
        if self._selected:
            self.select_job(self._selected)  # a reset loses the selection: restore it

    def select_job(self, job_id: str) -> None:
        for i, row in enumerate(self.jobs_model.rows):
            if row.id == job_id:
                if self.currentIndex().row() != i:
                    self.selectRow(i)
                return

    def selected_row(self) -> JobRow | None:
        for row in self.jobs_model.rows:
            if row.id == self._selected:
                return row
        return None

    def _selection_changed(self) -> None:
        if self._updating:
            return
        rows = self.selectionModel().selectedRows()
        job_id = self.jobs_model.rows[rows[0].row()].id if rows else ""
        if job_id != self._selected:
            self._selected = job_id
            self.job_selected.emit(job_id)
