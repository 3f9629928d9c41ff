"""Helpers for the desktop app's tests: the app with its embedded node, offscreen."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before any QApplication exists

import farmtools  # noqa: E402

from ui.app import PeerfarmApp  # noqa: E402
from ui.main_window import MainWindow  # noqa: E402
from ui.settings import SettingsStore  # noqa: E402

START_TIMEOUT_MS = 30_000
_pool = ThreadPoolExecutor(max_workers=1)


def in_thread(fn, *args):  # noqa: ANN001, ANN201
    """Run a blocking farm helper in another thread: this thread already runs trio
    (the app's guest run), and one thread runs one trio run at a time."""
    return _pool.submit(fn, *args).result(timeout=60)


def farm_status(address: str) -> dict:
    """A farm node's status (asked from another thread, see in_thread)."""
    return in_thread(farmtools.status, address)


def app_settings(tmp_path: Path, bootstrap: str | None, **extra) -> dict:
    """Settings of a private test app: loopback, a free port, no LAN discovery."""
    settings = {
        "listen": "127.0.0.1:0",
        "bootstraps": (bootstrap,) if bootstrap else (),
        "lan_discovery": False,
        "data_dir": str(tmp_path / "app-node"),
        "name": "artist",
        "slots": 1,
        "setup_done": True,
        "keep_rendering_in_tray": False,
        "output_folder": str(tmp_path / "outputs"),
    }
    settings.update(extra)
    return settings


@contextmanager
def running_app(qtbot, tmp_path: Path, bootstrap: str | None, settings_path=None, **extra):
    """The app with its node up (joined to ``bootstrap``'s farm); stopped afterwards."""
    store = SettingsStore(settings_path, app_settings(tmp_path, bootstrap, **extra))
    app = PeerfarmApp(store, tmp_path / "app-default-data")
    window = MainWindow(app)
    qtbot.addWidget(window)
    window.show()
    window.begin()
    try:
        qtbot.waitUntil(lambda: bool(app.address) or bool(app.stop_error), timeout=START_TIMEOUT_MS)
        assert not app.stop_error, app.stop_error
        # The views (and tests reading app.snapshot) start from the first refresh.
        qtbot.waitUntil(lambda: app.snapshot is not None, timeout=START_TIMEOUT_MS)
        yield app, window
    finally:
        if app.running:
            app.stop()
            app.stop()  # at once: give chunks in flight back, do not wait for them
            qtbot.waitUntil(lambda: not app.running, timeout=START_TIMEOUT_MS)
