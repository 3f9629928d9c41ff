"""The farm view: every node of the farm, what it can render and what it renders now."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QSize, Qt
from PySide6.QtGui import QBrush, QColor, QIcon, QPainter, QPixmap
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableView

from peerfarm.core.requirements import memory_text
from ui.farm_summary import PeerRow
from ui.jobs_view import format_fps
from ui.row_table import RowTableModel

COLUMNS = [
    "Node",
    "Address",
    "State",
    "Renderers",
    "Slots",
    "Rendering now",
    "Frames rendered",
    "Speed",
    "Tags and memory",
]
STATE = COLUMNS.index("State")
HEADER_HINTS = [
    "The node's name (its host name unless it was given one)",
    "Where the other nodes reach it",
    "As this computer sees it: up, suspect (did not answer a probe), down, left",
    "Renderers installed there, with their versions, and the speed it measured with "
    "each: seconds per frame lately (and the renderer's start-up per chunk)",
    "Slots: how many chunks it renders at once",
    "The chunks it renders now",
    "Frames it rendered (of the jobs this farm knows)",
    "Frames per second it finished lately (over the last 30 s)",
    "What it advertises: its tags (peerfarm node --tag) and its memory and cores, which "
    "jobs may require (--require, --require-memory)",
]
HEALTH_COLOURS = {
    "up": QColor("#2e8b3d"),
    "suspect": QColor("#e0a000"),
    "down": QColor("#c62828"),
    "left": QColor("#8a8a8a"),
    "faulty": QColor("#6a1b9a"),
    "unknown": QColor("#8a8a8a"),
}
HEALTH_HINTS = {
    "up": "linked and answering",
    "suspect": "did not answer a probe: may be busy or cut off",
    "down": "not answering: its unfinished frames went to other nodes",
    "left": "stopped and left the farm",
    "faulty": "signed two different actions (a copied data folder, or a machine taken "
    "over): the farm ignores it; see docs/security.md",
}


def _dot(colour: QColor) -> QIcon:
    pixmap = QPixmap(12, 12)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setBrush(colour)
    painter.setPen(colour.darker(130))
    painter.drawEllipse(1, 1, 10, 10)
    painter.end()
    return QIcon(pixmap)


def renderers_text(row: PeerRow) -> str:
    if not row.renders:
        return "—"
    speeds = {name: (frame_ms, startup_ms) for name, frame_ms, startup_ms in row.speeds}
    parts = []
    for name, version in row.renderers:
        text = f"{name} {version}"
        if name in speeds:
            frame_ms, startup_ms = speeds[name]
            text += f" ({frame_ms / 1000:.2f} s/frame, start-up {startup_ms / 1000:.2f} s)"
        parts.append(text)
    text = ", ".join(parts) or "none found"
    if row.not_offered:  # installed here but not offered: the tooltip says why
        text += f" ({', '.join(sorted(row.not_offered))} not offered)"
    return text


def machine_text(row: PeerRow) -> str:
    """ "gpu, lab2 · 16 GiB · 8 cores": a node's tags, memory and cores."""
    parts = [", ".join(row.tags)] if row.tags else []
    parts.append(memory_text(row.memory) if row.memory else "memory unknown")
    parts.append(f"{row.cores} cores" if row.cores else "cores unknown")
    return " · ".join(parts)


def not_offered_text(row: PeerRow) -> str:
    return "\n".join(
        f"{name} is not offered: {why}" for name, why in sorted(row.not_offered.items())
    )


def rendering_text(row: PeerRow) -> str:
    if row.worker_note:
        return row.worker_note
    if not row.renders:
        return "bootstrap server: keeps the farm's state, does not render"
    if not row.rendering:
        return "idle" if row.renders and row.health == "up" else ""
    if len(row.rendering) <= 2:
        return "; ".join(row.rendering)
    return f"{row.rendering[0]} and {len(row.rendering) - 1} more chunks"


class FarmModel(RowTableModel[PeerRow]):
    def __init__(self) -> None:
        super().__init__(COLUMNS, HEADER_HINTS)
        self._dots = {state: _dot(colour) for state, colour in HEALTH_COLOURS.items()}

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = 0) -> Any:
        if not index.isValid():
            return None
        row = self.rows[index.row()]
        column = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return [
                f"{row.name} (this computer)" if row.me else row.name,
                row.address,
                row.health,
                renderers_text(row),
                str(row.slots) if row.renders else "",
                rendering_text(row),
                str(row.frames_rendered) if row.renders else "",
                format_fps(row.fps) if row.renders else "",
                machine_text(row) if row.renders else "",
            ][column]
        if role == Qt.ItemDataRole.DecorationRole and column == STATE:
            return self._dots.get(row.health, self._dots["unknown"])
        if role == Qt.ItemDataRole.ForegroundRole and column == STATE:
            return QBrush(HEALTH_COLOURS.get(row.health, QColor("black")))
        if role == Qt.ItemDataRole.FontRole and row.me and column == 0:
            from PySide6.QtGui import QFont

            font = QFont()
            font.setBold(True)
            return font
        if role == Qt.ItemDataRole.ToolTipRole:
            if column == STATE:
                return HEALTH_HINTS.get(row.health, "")
            if column == 5 and row.rendering:
                return "\n".join(row.rendering)
            if column == 0:
                return f"node id {row.id}"
            if column == COLUMNS.index("Renderers") and row.not_offered:
                return not_offered_text(row)
        if role == Qt.ItemDataRole.TextAlignmentRole and column in (4, 6, 7):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None


class FarmView(QTableView):
    def __init__(self) -> None:
        super().__init__()
        self.farm_model = FarmModel()
        self.setModel(self.farm_model)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setAlternatingRowColors(True)
        self.verticalHeader().hide()
        self.setShowGrid(False)
        self.setWordWrap(False)
        self.setIconSize(QSize(12, 12))
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setSectionResizeMode(COLUMNS.index("Rendering now"), QHeaderView.ResizeMode.Stretch)
        for column, width in enumerate([190, 150, 90, 320, 50, 220, 110, 80]):
            self.setColumnWidth(column, width)

    def update_rows(self, rows: list[PeerRow]) -> None:
        self.farm_model.update(rows)
