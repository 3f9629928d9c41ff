"""The main window: jobs (with the selected job's frames), the farm, this machine's worker."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, Qt, QTimer
from PySide6.QtGui import QAction, QCloseEvent
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QDialog,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMenu,
    QMessageBox,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QSplitter,
    QStackedWidget,
    QSystemTrayIcon,
    QTabWidget,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from ui.app import PeerfarmApp, Snapshot
from ui.farm_view import FarmView
from ui.first_run import FirstRunDialog
from ui.icon import app_icon
from ui.job_view import JobView
from ui.jobs_view import JobsView
from ui.settings_dialog import SettingsDialog
from ui.submit_dialog import DEMO_SCENE, SubmitDialog


class EmptyJobs(QWidget):
    """What the Jobs tab shows before there is any job: how to start one."""

    def __init__(self, submit, demo) -> None:  # noqa: ANN001
        super().__init__()
        title = QLabel("No jobs yet")
        font = title.font()
        font.setPointSizeF(font.pointSizeF() * 1.8)
        font.setBold(True)
        title.setFont(font)
        hint = QLabel(
            "Drop a scene file or folder on this window to render it on the farm\n"
            "(POV-Ray .pov/.ini, Blender .blend, peerfarm .json, or a .zip of the scene's folder)."
        )
        hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        hint.setStyleSheet("color: #555555;")
        submit_button = QPushButton("Submit a job…")
        demo_button = QPushButton("Render the demo animation")
        submit_button.clicked.connect(submit)
        demo_button.clicked.connect(demo)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(submit_button)
        buttons.addWidget(demo_button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addStretch(1)
        layout.addWidget(title, 0, Qt.AlignmentFlag.AlignCenter)
        layout.addWidget(hint)
        layout.addSpacing(12)
        layout.addLayout(buttons)
        layout.addStretch(2)


class StoppingDialog(QDialog):
    """Shown while the node finishes its chunks in flight before the app quits."""

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.setWindowTitle("Quitting peerfarm")
        self.label = QLabel("Finishing the frames this computer is rendering…")
        self.label.setWordWrap(True)
        now = QPushButton("Quit now (give them back to the farm)")
        now.clicked.connect(window.app.stop)  # a second stop: release the chunks at once
        layout = QVBoxLayout(self)
        layout.addWidget(self.label)
        layout.addWidget(now)


class QuitRequests(QObject):
    """macOS's Cmd+Q and the Dock's Quit ask the application to quit (a Quit event),
    and logging out asks it to save its data: both mean quit, not "close the window
    to the tray" (where the node would go on, or die with the session unannounced)."""

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.window = window
        qapp = QApplication.instance()
        qapp.installEventFilter(self)
        qapp.commitDataRequest.connect(self._logging_out)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802
        if (
            watched is QApplication.instance()
            and event.type() == QEvent.Type.Quit
            and self.window.app.running
            and not self.window.quitting
        ):
            QTimer.singleShot(0, self.window.quit_app)  # stops the node, then quits
            return True
        return False

    def _logging_out(self, _manager: object) -> None:
        # The session ends: no time to finish chunks; give them back to the farm now.
        self.window.quit_app()
        self.window.quit_app()


class MainWindow(QMainWindow):
    def __init__(self, app: PeerfarmApp) -> None:
        super().__init__()
        self.app = app
        self.quitting = False
        self._quit_requests = QuitRequests(self)
        self.dialogs: list[QDialog] = []  # open dialogs (tests look at them)
        self._told_about_tray = False
        self._stopping: StoppingDialog | None = None
        self.setWindowTitle("peerfarm")
        self.setWindowIcon(app_icon())
        self.resize(1180, 760)
        self.setAcceptDrops(True)

        self._build_toolbar()
        self.jobs_view = JobsView()
        self.job_view = JobView(app)
        self.jobs_view.job_selected.connect(self.job_view.set_job)
        self.jobs_view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.jobs_view.customContextMenuRequested.connect(self._job_menu)
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.jobs_view)
        splitter.addWidget(self.job_view)
        splitter.setStretchFactor(0, 2)
        splitter.setStretchFactor(1, 5)
        self.jobs_stack = QStackedWidget()
        self.jobs_stack.addWidget(EmptyJobs(self.open_submit, lambda: self.open_submit(DEMO_SCENE)))
        self.jobs_stack.addWidget(splitter)
        self.farm_view = FarmView()
        self.tabs = QTabWidget()
        self.tabs.addTab(self.jobs_stack, "Jobs")
        self.tabs.addTab(self.farm_view, "Farm")
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(6, 6, 6, 0)
        layout.addWidget(self.tabs)
        self.setCentralWidget(central)

        self.node_label = QLabel("starting the node…")
        self.node_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.statusBar().addWidget(self.node_label, 1)
        self._build_tray()

        app.started.connect(self._node_started)
        app.refreshed.connect(self.show_snapshot)
        app.stopped.connect(self._node_stopped)
        app.restarting.connect(lambda: self.node_label.setText("restarting the node…"))
        app.notified.connect(self.notify)
        app.watches.revised.connect(self._revised)

    # -- building -----------------------------------------------------------------------

    def _build_toolbar(self) -> None:
        bar = QToolBar("Main")
        bar.setMovable(False)
        bar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.addToolBar(bar)
        submit = QAction("Submit a job…", self)
        submit.setIcon(
            self.style().standardIcon(self.style().StandardPixmap.SP_FileDialogNewFolder)
        )
        submit.triggered.connect(lambda: self.open_submit())
        bar.addAction(submit)
        settings = QAction("Settings…", self)
        settings.triggered.connect(self.open_settings)
        bar.addAction(settings)
        spacer = QWidget()
        spacer.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        bar.addWidget(spacer)

        s = self.app.store.effective
        self.machine_label = QLabel("This computer:")
        self.machine_label.setStyleSheet("margin-right: 6px;")
        self.pause_worker = QCheckBox("Pause rendering here")
        self.pause_worker.setToolTip(
            "Stop rendering on this computer now; its frames go to other nodes"
        )
        self.slots = QSpinBox()
        self.slots.setRange(0, 1024)
        self.slots.setValue(s.slots)
        self.slots.setPrefix("slots ")
        self.slots.setToolTip("How many frames this computer renders at once")
        self.away = QCheckBox("Only when I'm away for")
        self.away.setChecked(s.render_only_when_away)
        self.away.setToolTip(
            "Render only when nobody has used this computer's keyboard or mouse for a while"
        )
        self.away_minutes = QSpinBox()
        self.away_minutes.setRange(1, 24 * 60)
        self.away_minutes.setValue(s.away_minutes)
        self.away_minutes.setSuffix(" min")
        for w in (self.machine_label, self.pause_worker, self.slots, self.away, self.away_minutes):
            bar.addWidget(w)
        self.pause_worker.toggled.connect(self.app.set_worker_paused)
        self.slots.editingFinished.connect(lambda: self.app.set_slots(self.slots.value()))
        self.away.toggled.connect(self._away_changed)
        self.away_minutes.editingFinished.connect(self._away_changed)

    def _away_changed(self) -> None:
        self.app.set_render_only_when_away(self.away.isChecked(), self.away_minutes.value())

    def _build_tray(self) -> None:
        self.tray: QSystemTrayIcon | None = None
        if not QSystemTrayIcon.isSystemTrayAvailable():
            return
        self.tray = QSystemTrayIcon(app_icon(), self)
        self.tray.setToolTip("peerfarm")
        menu = QMenu(self)
        menu.addAction("Show peerfarm", self.show_window)
        pause = menu.addAction("Pause rendering here")
        pause.setCheckable(True)
        pause.toggled.connect(self.pause_worker.setChecked)
        self.pause_worker.toggled.connect(pause.setChecked)
        menu.addSeparator()
        menu.addAction("Quit peerfarm", self.quit_app)
        self.tray.setContextMenu(menu)
        self.tray.activated.connect(
            lambda reason: (
                self.show_window() if reason == QSystemTrayIcon.ActivationReason.Trigger else None
            )
        )
        self.tray.show()

    # -- the node -------------------------------------------------------------------------

    def begin(self) -> None:
        """Start the node; on the very first start, after the first-start guide."""
        if self.app.store.effective.setup_done:
            self.app.start()
            return
        guide = FirstRunDialog(self.app, self)
        self.dialogs.append(guide)
        guide.accepted.connect(lambda: self._setup_done(guide.created_key))
        guide.rejected.connect(lambda: QApplication.instance().quit())
        guide.open()

    def _setup_done(self, created_key: str = "") -> None:
        s = self.app.store.effective
        self.slots.setValue(s.slots)
        self.app.start()
        if created_key:
            box = QMessageBox(
                QMessageBox.Icon.Information,
                "Your farm is ready",
                f"The farm's key is in\n{created_key}\n\nCopy this file to every computer "
                'that should join the farm, and choose it there under "Join a farm". '
                "Keep it private: anyone holding it can send renders to your computers.",
                QMessageBox.StandardButton.Ok,
                self,
            )
            self.dialogs.append(box)
            box.open()

    def _node_started(self, address: str) -> None:
        self.node_label.setText(f"this computer listens on {address}")

    def show_snapshot(self, snap: Snapshot) -> None:
        self.setWindowTitle(f"peerfarm — {snap.name}")
        self.jobs_stack.setCurrentIndex(1 if snap.jobs else 0)
        self.jobs_view.update_rows(snap.jobs)
        if snap.jobs and not self.jobs_view.selected_row():
            self.jobs_view.select_job(snap.jobs[-1].id)  # show the newest job's frames
        self.job_view.refresh(snap.jobs)
        self.farm_view.update_rows(snap.peers)
        nodes = [p for p in snap.peers if p.renders]
        up = sum(1 for p in nodes if p.health == "up")
        stopping = " · stopping" if snap.stopping else ""
        self.node_label.setText(
            f"{snap.name} · listening on {snap.address} · {up} of {len(nodes)} rendering "
            f"nodes up{stopping}"
        )
        self.machine_label.setText(f"This computer: {self.worker_text(snap)}")
        if self._stopping is not None and snap.worker is not None:
            n = len(snap.worker["rendering"])
            self._stopping.label.setText(
                f"Finishing {n} chunk(s) this computer is rendering, then quitting…"
                if n
                else "Leaving the farm…"
            )

    def worker_text(self, snap: Snapshot) -> str:
        worker = snap.worker
        if worker is None:
            return "not rendering"
        if self.app.worker_pause_reason:
            return self.app.worker_pause_reason
        if worker.get("disk_problem"):
            return f"takes no chunks: {worker['disk_problem']}"
        busy = len(worker["rendering"])
        if not worker["slots"]:
            return "renders nothing (0 slots)"
        return f"rendering {busy} of {worker['slots']}" if busy else "idle, ready to render"

    def _node_stopped(self, error: str) -> None:
        if self._stopping is not None:
            self._stopping.close()
        if error and not self.quitting:
            QMessageBox.critical(self, "peerfarm stopped", error)
        self.quitting = True
        self.close()

    def quit_app(self) -> None:
        """Stop the node gracefully (it finishes its chunks in flight); again: at once."""
        self.quitting = True
        if not self.app.running:
            self.close()
            return
        snap = self.app.snapshot
        if self._stopping is None and snap and snap.worker and snap.worker["rendering"]:
            self._stopping = StoppingDialog(self)
            self._stopping.show()
        self.app.stop()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        if not self.app.running:
            event.accept()
            return
        event.ignore()
        if (
            not self.quitting
            and self.app.store.effective.keep_rendering_in_tray
            and self.tray is not None
            and self.tray.isVisible()
        ):
            self.hide()
            if not self._told_about_tray:
                self._told_about_tray = True
                self.tray.showMessage(
                    "peerfarm keeps rendering",
                    "The farm can still use this computer. Quit from this icon's menu.",
                )
            return
        self.quit_app()

    def show_window(self) -> None:
        self.show()
        self.raise_()
        self.activateWindow()

    def _job_menu(self, pos) -> None:  # noqa: ANN001
        """Right-click on a job: the job view's controls, for that job."""
        index = self.jobs_view.indexAt(pos)
        if not index.isValid():
            return
        self.jobs_view.select_job(self.jobs_view.jobs_model.rows[index.row()].id)
        v = self.job_view
        menu = QMenu(self)
        for button in (v.pause_button, v.resume_button, v.retry_button, v.cancel_button):
            action = menu.addAction(button.text(), button.click)
            action.setEnabled(button.isEnabled())
        menu.addSeparator()
        for button in (v.play_button, v.folder_button, v.log_button):
            action = menu.addAction(button.text(), button.click)
            action.setEnabled(button.isEnabled())
        menu.exec(self.jobs_view.viewport().mapToGlobal(pos))

    # -- dialogs --------------------------------------------------------------------------

    def open_submit(self, scene: str = "") -> SubmitDialog:
        dialog = SubmitDialog(self.app, scene, self)
        dialog.submitted.connect(self._submitted)
        self.dialogs = [d for d in self.dialogs if d.isVisible()] + [dialog]
        dialog.open()
        return dialog

    def _submitted(self, job_id: str) -> None:
        self.tabs.setCurrentIndex(0)
        self.app.refresh()
        self.jobs_view.select_job(job_id)

    def _revised(self, old_id: str, new_id: str) -> None:
        """A watched scene changed: the job view follows the new revision."""
        if self.job_view.job_id in ("", old_id):
            self.app.refresh()
            self.jobs_view.select_job(new_id)

    def open_settings(self) -> SettingsDialog:
        dialog = SettingsDialog(self.app, self)
        self.dialogs = [d for d in self.dialogs if d.isVisible()] + [dialog]

        def saved() -> None:
            self.slots.setValue(self.app.store.effective.slots)
            if dialog.needs_restart and self.app.running:
                box = QMessageBox(
                    QMessageBox.Icon.Question,
                    "Restart the node?",
                    "Some changes apply when the node restarts. Restart it now? "
                    "(It finishes the frames it is rendering first.)",
                    QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                    self,
                )
                box.accepted.connect(self.app.restart)  # Yes is the accepting button
                self.dialogs.append(box)
                box.open()

        dialog.accepted.connect(saved)
        dialog.open()
        return dialog

    def notify(self, title: str, text: str) -> None:
        if self.tray is not None and self.tray.isVisible():
            self.tray.showMessage(title, text)
        line = f"{title}: {text.splitlines()[0] if text else ''}"
        self.statusBar().showMessage(line if len(line) < 140 else line[:139] + "…", 20_000)
        QApplication.alert(self)

    # -- drag and drop --------------------------------------------------------------------

    def dragEnterEvent(self, event) -> None:  # noqa: ANN001, N802
        if any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: ANN001, N802
        urls = [u for u in event.mimeData().urls() if u.isLocalFile()]
        if urls:
            event.acceptProposedAction()
            self.open_submit(urls[0].toLocalFile())
