"""Renderer logs of a job's chunks, fetched on demand from the nodes that ran them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import QDialogButtonBox, QLabel, QPlainTextEdit, QVBoxLayout, QWidget

if TYPE_CHECKING:
    from ui.app import PeerfarmApp


def format_logs(logs: list[dict[str, Any]]) -> str:
    parts = []
    for entry in logs:
        a, b = entry["frames"]
        frames = f"frame {a}" if a == b else f"frames {a}-{b}"
        where = entry["node_name"] or entry["node_id"][:8]
        note = ", failed here" if entry["failed_here"] else ""
        parts.append(f"== chunk {entry['chunk']} ({frames}, {entry['state']}) on {where}{note} ==")
        parts.append(entry["text"].rstrip() or "(empty)")
        parts.append("")
    return "\n".join(parts)


class LogDialog(QWidget):
    """Shows 'fetching…' at once, then the logs when every node answered."""

    def __init__(
        self, app: PeerfarmApp, job_id: str, frame: int | None, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent, Qt.WindowType.Window)
        job = app.job(job_id)
        what = f"frame {frame}" if frame is not None else "failed frames"
        self.setWindowTitle(f"Renderer log — {job.name if job else job_id}, {what}")
        self.resize(820, 520)
        self.status = QLabel(f"Fetching the renderer log of {what} from the nodes that ran it…")
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        self.text.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.close)
        layout = QVBoxLayout(self)
        layout.addWidget(self.status)
        layout.addWidget(self.text, 1)
        layout.addWidget(buttons)
        self.loaded = False
        app.spawn(self._fetch, app, job_id, frame, on_error=self._failed)

    async def _fetch(self, app: PeerfarmApp, job_id: str, frame: int | None) -> None:
        logs = await app.node.collect_logs(job_id, frame)
        if not logs:
            self.status.setText("No renderer log yet: nothing of this was rendered or failed.")
        else:
            nodes = len({e["node_id"] for e in logs})
            self.status.setText(f"{len(logs)} log(s) from {nodes} node(s)")
        self.text.setPlainText(format_logs(logs))
        self.loaded = True

    def _failed(self, message: str) -> None:
        self.status.setText(message)
        self.loaded = True
