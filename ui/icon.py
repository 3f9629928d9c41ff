"""The app's icon, drawn at run time (a small frame grid), so no image files ship."""

from __future__ import annotations

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QIcon, QPainter, QPixmap

CELLS = [
    "#3fa34d",
    "#3fa34d",
    "#3fa34d",
    "#3fa34d",
    "#f5c518",
    "#3fa34d",
    "#f5c518",
    "#d6d6d6",
    "#d6d6d6",
]


def app_icon() -> QIcon:
    icon = QIcon()
    for size in (16, 24, 32, 48, 64, 128, 256):
        pixmap = QPixmap(size, size)
        pixmap.fill(Qt.GlobalColor.transparent)
        painter = QPainter(pixmap)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor("#263238"))
        painter.drawRoundedRect(QRectF(0, 0, size, size), size * 0.18, size * 0.18)
        pad, gap = size * 0.14, size * 0.06
        cell = (size - 2 * pad - 2 * gap) / 3
        for i, colour in enumerate(CELLS):
            row, column = divmod(i, 3)
            painter.setBrush(QColor(colour))
            rect = QRectF(pad + column * (cell + gap), pad + row * (cell + gap), cell, cell)
            painter.drawRoundedRect(rect, cell * 0.15, cell * 0.15)
        painter.end()
        icon.addPixmap(pixmap)
    return icon
