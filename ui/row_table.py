"""A table model over a list of row records, with fixed columns and header hints:
what the farm view and the jobs view share (each says what a cell shows)."""

from __future__ import annotations

from typing import Any, Generic, Protocol, TypeVar

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt


class _HasId(Protocol):
    @property
    def id(self) -> str: ...


Row = TypeVar("Row", bound=_HasId)


class RowTableModel(QAbstractTableModel, Generic[Row]):
    """Rows replaced as a whole on each refresh: the view is reset only when the set
    of rows (their ids) changes, so a selection and the scroll position survive the
    once-a-second refresh."""

    def __init__(self, columns: list[str], header_hints: list[str]) -> None:
        super().__init__()
        self.rows: list[Row] = []
        self._columns = columns
        self._header_hints = header_hints

    def update(self, rows: list[Row]) -> None:
        if [r.id for r in rows] != [r.id for r in self.rows]:
            self.beginResetModel()
            self.rows = rows
            self.endResetModel()
        else:
            self.rows = rows
            if rows:
                last = self.index(len(rows) - 1, len(self._columns) - 1)
                self.dataChanged.emit(self.index(0, 0), last)

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008, N802
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008, N802
        return 0 if parent.isValid() else len(self._columns)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = 0) -> Any:  # noqa: N802
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self._columns[section]
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.ToolTipRole:
            return self._header_hints[section]
        return None
