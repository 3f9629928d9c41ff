"""The desktop app: a full peerfarm node (worker and manager) with a window on it.

The node runs in trio, and trio runs inside Qt's event loop (guest mode, see
trio_host.py), so networking and renderer processes never freeze the window
and trio tasks may update widgets directly. Qt code reaches the node through
``call`` / ``spawn`` below, which hand work to trio's own thread-safe queue;
anything that blocks (disk, hashing, image loading) goes to trio's worker threads.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from PySide6.QtCore import QEvent, QObject, QStandardPaths, QTimer, Signal
from PySide6.QtWidgets import QApplication

from peerfarm.core.refused import Refused
from peerfarm.core.state import JOB_FAILED
from peerfarm.ops.places import move_out_of_roaming, roaming_data_root, user_data_root
from peerfarm.programs import set_locations
from peerfarm.runtime.node import Node, SetupError
from ui.farm_summary import FarmSummary, JobRow, PeerRow
from ui.idle import IdleClock, pause_reason
from ui.scene_watch import SceneWatches
from ui.settings import (
    SETTINGS_FILE,
    SettingsError,
    SettingsStore,
    node_config,
    program_locations,
)
from ui.trio_host import TrioHost

log = logging.getLogger(__name__)

REFRESH_INTERVAL = 0.1  # at most 10 view refreshes a second, however busy the farm is
IDLE_REFRESH = 1.0  # refresh at least this often (speeds and ETAs move with the clock)
AWAY_POLL = 2.0  # seconds between looks at how long the user has been away


@dataclass
class Snapshot:
    """What the views show, built once per refresh."""

    node_id: str
    name: str
    address: str
    jobs: list[JobRow]
    peers: list[PeerRow]
    worker: dict[str, Any] | None
    stopping: bool


class _InputWatcher(QObject):
    """Input to the app's windows: the 'away' fallback where the platform gives no idle
    time (installed only then: it sees every event of the app)."""

    def __init__(self, app: PeerfarmApp) -> None:
        super().__init__()
        self.app = app
        self.kinds = {
            QEvent.Type.KeyPress,
            QEvent.Type.MouseButtonPress,
            QEvent.Type.MouseMove,
            QEvent.Type.Wheel,
        }

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802
        if event.type() in self.kinds:
            self.app.note_input()
        return False


class PeerfarmApp(QObject):
    """The embedded node, its trio run, and what the window needs from them."""

    refreshed = Signal(object)  # Snapshot
    notified = Signal(str, str)  # title, message: a job of mine finished or failed
    started = Signal(str)  # the node's address
    stopped = Signal(str)  # "" after a clean stop, else why the node stopped
    restarting = Signal()  # the node stopped to start again with new settings

    def __init__(self, store: SettingsStore, default_data_dir: Path) -> None:
        super().__init__()
        self.store = store
        self.default_data_dir = default_data_dir
        self.host = TrioHost(self)
        self.host.finished.connect(self._finished)
        self.node: Node | None = None
        self.address = ""
        self.summary = FarmSummary()
        self.snapshot: Snapshot | None = None
        self.notifications: list[tuple[str, str]] = []
        self.stop_error = ""
        self._restarting = False
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._job_states: dict[str, str] | None = None  # my jobs' last seen states
        # This machine's worker: paused by the user, or by "render only when I'm away".
        self.worker_paused_by_user = False
        self.idle_clock: IdleClock | None = None
        self.idle_seconds: float | None = None
        self.worker_pause_reason = ""
        self.last_input = time.monotonic()  # input to our own windows (the fallback)
        self._input_watcher: _InputWatcher | None = None
        # Scenes re-rendered when they change (the submit dialog's switch).
        self.watches = SceneWatches(self)
        self.stopped.connect(lambda _: self.watches.stop_all())
        self.restarting.connect(self.watches.stop_all)

    # -- running ----------------------------------------------------------------------

    def start(self) -> None:
        self.host.start(self._main)

    @property
    def running(self) -> bool:
        return self.host.running

    def restart(self) -> None:
        """Stop the node gracefully and start it again with the current settings."""
        if self.running:
            self._restarting = True
            self.stop()

    def stop(self) -> None:
        """First call: finish the chunks in flight, then stop. Second: stop at once,
        giving the chunks back to the farm."""
        if self.node is not None and self.running:
            self.call(self.node.request_stop)

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        try:
            config = node_config(self.store.effective, self.default_data_dir)
        except SettingsError as exc:
            self.stop_error = f"cannot start the node: {exc}"
            return
        # Where Blender, POV-Ray and ffmpeg are, for the probes and the renderer processes.
        set_locations(program_locations(self.store.effective))
        self.node = Node(config)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery

            async def run_node(task_status: trio.TaskStatus[str]) -> None:
                try:
                    await self.node.run(task_status=task_status)
                finally:
                    nursery.cancel_scope.cancel()  # the node stopped: so does the app's run

            try:
                self.address = await nursery.start(run_node)
            except SetupError as exc:  # e.g. its data folder in use by another node
                self.stop_error = f"cannot start the node: {exc}"
                return
            except OSError as exc:
                listen = self.store.effective.listen
                self.stop_error = (
                    f"cannot listen on {listen}: {exc.strerror or exc}. Another program "
                    f"(or another peerfarm node) may use that port; change the listen "
                    f"address in Settings."
                )
                return
            self.apply_worker_state()  # before the worker takes its first chunk
            self.started.emit(self.address)
            nursery.start_soon(self._refresh_loop)
            nursery.start_soon(self._watch_away)

    def _finished(self, result: Any) -> None:
        try:
            result.unwrap()
        except BaseException as exc:  # noqa: BLE001 - reported to the user, not re-raised
            log.exception("the node stopped with an error")
            self.stop_error = self.stop_error or f"the node stopped with an error: {exc!r}"
        if self._restarting and not self.stop_error:
            self._restarting = False
            self.node, self.address, self._token, self._nursery = None, "", None, None
            self.summary = FarmSummary()
            self._job_states = None
            self.restarting.emit()
            self.start()
            return
        self._restarting = False
        self.stopped.emit(self.stop_error)

    # -- handing work to trio ------------------------------------------------------------

    def call(self, fn: Callable[[], Any], on_error: Callable[[str], Any] | None = None) -> None:
        """Run ``fn`` in trio's context soon (thread-safe; wakes trio up). A Refused
        (an action the farm refuses, e.g. cancelling a finished job) goes to ``on_error``."""
        if self._token is None or not self.running:
            return

        def run() -> None:
            try:
                fn()
            except Refused as exc:
                self._report(on_error, str(exc))

        self._token.run_sync_soon(run)

    def spawn(
        self,
        async_fn: Callable[..., Awaitable[Any]],
        *args: Any,
        on_error: Callable[[str], Any] | None = None,
    ) -> None:
        """Start a trio task in the app's nursery; a Refused goes to ``on_error``."""

        async def task() -> None:
            try:
                await async_fn(*args)
            except Refused as exc:
                self._report(on_error, str(exc))

        def start() -> None:
            if self._nursery is not None:
                self._nursery.start_soon(task)

        if self._token is not None and self.running:
            self._token.run_sync_soon(start)

    def _report(self, on_error: Callable[[str], Any] | None, text: str) -> None:
        # Out of trio's tick first: the handler may open a dialog (a nested event loop).
        if on_error is not None:
            QTimer.singleShot(0, lambda: on_error(text))
        else:
            log.warning("%s", text)

    # -- this machine's worker -----------------------------------------------------------

    def set_worker_paused(self, paused: bool) -> None:
        self.worker_paused_by_user = paused
        self.call(self.apply_worker_state)

    def set_slots(self, slots: int) -> None:
        self.store.update(slots=slots)
        if self.node is not None:
            node = self.node
            self.call(lambda: node.set_slots(slots))

    def set_render_only_when_away(self, on: bool, minutes: int) -> None:
        self.store.update(render_only_when_away=on, away_minutes=minutes)
        self.call(self.apply_worker_state)

    def note_input(self) -> None:
        """Input to one of the app's windows (counts when the platform gives no idle time)."""
        self.last_input = time.monotonic()

    def apply_worker_state(self) -> None:
        """Pause or resume this machine's worker as the user's choices say (trio context)."""
        node = self.node
        if node is None or not node.config.renders:
            return
        settings = self.store.effective
        reason = pause_reason(
            self.worker_paused_by_user,
            settings.render_only_when_away,
            self.idle_seconds,
            settings.away_minutes,
        )
        self.worker_pause_reason = reason
        if reason and not node.worker_paused:
            log.info("this machine stops rendering: %s", reason)
            node.pause_worker()
        elif not reason and node.worker_paused:
            log.info("this machine renders again")
            node.resume_worker()

    async def _watch_away(self) -> None:
        self.idle_clock = await trio.to_thread.run_sync(IdleClock)
        if self.idle_clock.system_wide:
            log.info("idle time from: %s", self.idle_clock.method)
        else:
            log.info("no system-wide idle time here: counting input to this app's windows")
            if self._input_watcher is None:
                self._input_watcher = _InputWatcher(self)
                QApplication.instance().installEventFilter(self._input_watcher)
        while True:
            if self.idle_clock.system_wide:
                self.idle_seconds = await trio.to_thread.run_sync(self.idle_clock.seconds)
            else:
                self.idle_seconds = time.monotonic() - self.last_input
            self.apply_worker_state()
            await trio.sleep(AWAY_POLL)

    # -- views --------------------------------------------------------------------------

    async def _refresh_loop(self) -> None:
        assert self.node is not None
        while True:
            self.refresh()
            await self.node.wait_for_change(IDLE_REFRESH)
            await trio.sleep(REFRESH_INTERVAL)

    def refresh(self) -> None:
        node = self.node
        if node is None:
            return
        now = time.monotonic()
        state = node.state
        status = node.status()
        progress = {j["id"]: j for j in status["jobs"] if "frames_collected" in j}
        jobs = self.summary.jobs(state, node.node_id, now, progress)
        health = {p["id"]: p["state"] for p in status["peers"]}
        addresses = {p["id"]: p["address"] for p in status["peers"]}
        peers = self.summary.peers(state, node.node_id, now, health, addresses)
        for row in peers:
            if row.me and self.worker_pause_reason:
                row.worker_note = self.worker_pause_reason
            if row.me:
                row.not_offered = dict(status.get("renderers_not_offered", {}))
        self.snapshot = Snapshot(
            node_id=node.node_id,
            name=node.name,
            address=self.address,
            jobs=jobs,
            peers=peers,
            worker=status["worker"],
            stopping=node.stopping,
        )
        self._notify_finished_jobs(jobs)
        self.refreshed.emit(self.snapshot)

    def _notify_finished_jobs(self, jobs: list[JobRow]) -> None:
        """A tray message when a job submitted here is done (every frame in its
        output folder) or failed. Jobs already finished when the app started are quiet."""
        seen = {}
        for row in jobs:
            if not row.mine:
                continue
            shown = "complete" if row.complete else row.state
            seen[row.id] = shown
            if self._job_states is None or self._job_states.get(row.id) == shown:
                continue
            if shown == "complete":
                self._notify(
                    f"{row.name} is done",
                    f"All {row.frames_total} frames are in {row.output}",
                )
            elif shown == JOB_FAILED:
                self._notify(f"{row.name} failed", row.error or "a chunk failed on every node")
        self._job_states = seen

    def _notify(self, title: str, text: str) -> None:
        self.notifications.append((title, text))
        self.notified.emit(title, text)

    def job(self, job_id: str):  # noqa: ANN201 - peerfarm.core.state.Job | None
        return self.node.state.jobs.get(job_id) if self.node else None


def default_paths() -> tuple[Path, Path]:
    """(settings file, default data folder) in the platform's per-user folders; the data
    folder stays on this machine (Windows: not in the roaming profile, peerfarm/ops/
    places.py), and one an earlier version left there is moved out."""
    config = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppConfigLocation)
    data = Path(user_data_root()) / "node"
    roaming = roaming_data_root()
    if roaming is not None:
        data = move_out_of_roaming(Path(roaming) / "node", data)
    return Path(config) / SETTINGS_FILE, data


def run_gui(args: argparse.Namespace) -> int:
    """Start the app (from `peerfarm gui` or `peerfarm-gui`); returns the exit code."""
    from ui.main_window import MainWindow
    from ui.options import overrides_from

    if (
        sys.platform.startswith(("linux", "freebsd", "openbsd", "netbsd"))
        and not os.environ.get("DISPLAY")
        and not os.environ.get("WAYLAND_DISPLAY")
        and not os.environ.get("QT_QPA_PLATFORM")
    ):
        print(
            "peerfarm: error: the desktop app needs a desktop session (no DISPLAY or "
            "WAYLAND_DISPLAY is set); on a machine without one, run `peerfarm node`",
            file=sys.stderr,
        )
        return 1
    qapp = QApplication.instance() or QApplication(sys.argv[:1])
    qapp.setApplicationName("peerfarm")
    qapp.setApplicationDisplayName("peerfarm")
    qapp.setQuitOnLastWindowClosed(False)  # the tray may keep the node running
    settings_path, data_dir = default_paths()
    store = SettingsStore(args.settings or settings_path, overrides_from(args))
    app = PeerfarmApp(store, data_dir)
    window = MainWindow(app)
    exit_code = 0

    def on_stopped(error: str) -> None:
        nonlocal exit_code
        if error:
            print(f"peerfarm: error: {error}", file=sys.stderr)
            exit_code = 1
        qapp.quit()

    app.stopped.connect(on_stopped)
    # Ctrl+C in the terminal: stop gracefully, as `peerfarm node` does (again: at once).
    signal.signal(signal.SIGINT, lambda *_: QTimer.singleShot(0, window.quit_app))
    window.show()
    window.begin()
    qapp.exec()
    return exit_code
