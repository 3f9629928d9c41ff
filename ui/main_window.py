"""The main window: jobs (with the selected job's frames), the farm, this machine's worker."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QLabel,
    QMainWindow,
    QMessageBox,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ui.app import PeerfarmApp, Snapshot
from ui.jobs_view import JobsView


class MainWindow(QMainWindow):
    def __init__(self, app: PeerfarmApp) -> None:
        super().__init__()
        self.app = app
        self.quitting = False
        self.setWindowTitle("peerfarm")
        self.resize(1100, 720)

        self.jobs_view = JobsView()
        jobs_page = QSplitter(Qt.Orientation.Vertical)
        jobs_page.addWidget(self.jobs_view)
        self.tabs = QTabWidget()
        self.tabs.addTab(jobs_page, "Jobs")
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(6, 6, 6, 0)
        layout.addWidget(self.tabs)
        self.setCentralWidget(central)

        self.node_label = QLabel("starting the node…")
        self.statusBar().addWidget(self.node_label, 1)

        app.started.connect(self._node_started)
        app.refreshed.connect(self.show_snapshot)
        app.stopped.connect(self._node_stopped)

    def begin(self) -> None:
        """Start the node (after the first-start guide, if it has not run yet)."""
        self.app.start()

    def _node_started(self, address: str) -> None:
        self.node_label.setText(f"this machine listens on {address}")

    def show_snapshot(self, snap: Snapshot) -> None:
        self.jobs_view.update_rows(snap.jobs)
        up = sum(1 for p in snap.peers if p.health == "up")
        stopping = " · stopping" if snap.stopping else ""
        self.node_label.setText(
            f"{snap.name} · listening on {snap.address} · {up} of {len(snap.peers)} nodes up"
            f"{stopping}"
        )

    def _node_stopped(self, error: str) -> None:
        if error and not self.quitting:
            QMessageBox.critical(self, "peerfarm stopped", error)
        self.quitting = True
        self.close()

    def quit_app(self) -> None:
        """Stop the node gracefully (it finishes its chunks in flight); again: at once."""
        self.quitting = True
        if self.app.running:
            self.app.stop()
        else:
            self.close()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        if not self.app.running:
            event.accept()
            return
        event.ignore()
        self.quit_app()
