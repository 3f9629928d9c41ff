"""The desktop app's parts: settings, the first-start guide, the submit dialog's refusals,
closing the window, away detection, and the plain-value helpers behind the views."""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
from factories import A, B, joined_payload, new_job_payload
from guitools import running_app
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication

from peerfarm.core.log import ActionLog
from peerfarm.renderers.builtin import builtin_scene_text
from peerfarm.security.farm_key import load_key, new_key, write_key
from ui import settings as settings_mod
from ui.app import PeerfarmApp
from ui.farm_summary import DONE, RENDERING, WAITING, FarmSummary, cell_text, frame_cells
from ui.first_run import FirstRunDialog
from ui.idle import IdleClock, pause_reason
from ui.main_window import MainWindow
from ui.options import overrides_from
from ui.rates import RateMeter, format_eta
from ui.settings import Settings, SettingsError, SettingsStore, node_config

# -- settings -------------------------------------------------------------------------


def test_settings_round_trip_and_overrides_are_not_saved(tmp_path):
    path = tmp_path / "cfg" / "settings.json"
    store = SettingsStore(path, {"listen": "127.0.0.1:9999"})
    assert store.effective.listen == "127.0.0.1:9999"
    store.update(slots=3, bootstraps=("farm:7000",), farm_key_file="")
    saved = json.loads(path.read_text())
    assert saved["slots"] == 3 and saved["bootstraps"] == ["farm:7000"]
    assert saved["listen"] == settings_mod.DEFAULT_LISTEN  # the override stays out
    again = SettingsStore(path)
    assert again.effective.slots == 3 and again.effective.bootstraps == ("farm:7000",)


def test_broken_or_foreign_settings_fall_back_to_defaults(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text("{not json")
    assert settings_mod.load(path) == Settings()
    path.write_text(json.dumps({"slots": "many", "listen": "10.0.0.1:7100", "from_v9": 1}))
    loaded = settings_mod.load(path)
    assert loaded.listen == "10.0.0.1:7100" and loaded.slots == Settings().slots


def test_node_config_from_settings_and_clear_errors(tmp_path):
    s = replace(Settings(), listen="127.0.0.1:0", bootstraps=("b:7000",), slots=2, name="ws")
    config = node_config(s, tmp_path / "default")
    assert (config.listen, config.bootstraps, config.slots, config.name) == (
        ("127.0.0.1", 0),
        [("b", 7000)],
        2,
        "ws",
    )
    assert config.data_dir == tmp_path / "default"
    with pytest.raises(SettingsError, match="listen address: 'nowhere' is not an address"):
        node_config(replace(s, listen="nowhere"), tmp_path)
    with pytest.raises(SettingsError, match="farm key file .* does not exist"):
        node_config(replace(s, farm_key_file=str(tmp_path / "missing.key")), tmp_path)


def test_command_line_options_override_settings(tmp_path):
    from ui.launch import build_parser

    args = build_parser().parse_args(
        ["--listen", "0.0.0.0:7200", "--bootstrap", "f:7000", "--slots", "3", "--no-zeroconf"]
    )
    over = overrides_from(args)
    assert over == {
        "listen": "0.0.0.0:7200",
        "bootstraps": ("f:7000",),
        "slots": 3,
        "lan_discovery": False,
        "setup_done": True,
    }


# -- the first start, settings, restart, closing ----------------------------------------


def test_first_start_guide_then_the_node_starts_with_the_choice_saved(qtbot, tmp_path):
    path = tmp_path / "settings.json"
    store = SettingsStore(path, {"data_dir": str(tmp_path / "node")})
    app = PeerfarmApp(store, tmp_path / "default")
    window = MainWindow(app)
    qtbot.addWidget(window)
    window.show()
    window.begin()
    guide = window.dialogs[-1]
    assert isinstance(guide, FirstRunDialog) and guide.isVisible() and not app.running
    guide.try_here.setChecked(True)
    guide.name.setText("ana-laptop")
    guide.slots.setValue(1)
    qtbot.mouseClick(guide.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: bool(app.address), timeout=30_000)
    try:
        saved = json.loads(path.read_text())
        assert saved["setup_done"] and saved["listen"] == "127.0.0.1:0"
        assert saved["name"] == "ana-laptop" and not saved["lan_discovery"]
        assert app.node.name == "ana-laptop"
    finally:
        app.stop()
        qtbot.waitUntil(lambda: not app.running, timeout=30_000)


def test_first_start_guide_refuses_a_bad_farm_address_or_no_key(qtbot, tmp_path):
    store = SettingsStore(None, {})
    app = PeerfarmApp(store, tmp_path)
    guide = FirstRunDialog(app)
    qtbot.addWidget(guide)
    guide.join.setChecked(True)
    guide.finish()
    assert "choose the farm key file you were given" in guide.error.text()
    write_key(new_key(), tmp_path / "farm.key")
    guide.farm_key.setText(str(tmp_path / "farm.key"))
    guide.bootstraps.setText("farm-server")
    guide.finish()
    assert not guide.error.isHidden()
    assert "bootstrap server: 'farm-server' is not an address" in guide.error.text()
    assert not store.saved.setup_done


def test_creating_a_farm_writes_a_new_key_and_never_overwrites_one(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    made = []
    for _ in range(2):
        store = SettingsStore(tmp_path / "settings.json", {})
        guide = FirstRunDialog(PeerfarmApp(store, tmp_path))
        qtbot.addWidget(guide)
        guide.create.setChecked(True)
        guide.finish()
        assert guide.error.isHidden(), guide.error.text()
        assert store.saved.setup_done and store.saved.farm_key_file == guide.created_key
        made.append(load_key(Path(guide.created_key)))
    assert Path(guide.created_key).parent == tmp_path / "config" / "peerfarm"
    assert made[0].key_id != made[1].key_id  # a second farm: a second file beside the first
    config = node_config(store.effective, tmp_path / "node")
    assert config.farm_key.key_id == made[1].key_id and config.listen == ("0.0.0.0", 7100)


def test_without_a_key_the_app_node_stays_on_this_computer(tmp_path, monkeypatch):
    monkeypatch.delenv("PEERFARM_FARM_KEY_FILE", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "empty"))
    s = replace(Settings(), listen="0.0.0.0:7100")
    with pytest.raises(SettingsError, match="no farm key.*choose the farm key file"):
        node_config(s, tmp_path)
    assert node_config(replace(s, listen="127.0.0.1:0"), tmp_path).farm_key is None


def test_settings_dialog_saves_and_restarts_the_node(qtbot, tmp_path):
    path = tmp_path / "settings.json"
    with running_app(qtbot, tmp_path, None, settings_path=path) as (app, window):
        first_id = app.node.node_id
        dialog = window.open_settings()
        dialog.listen.setText("somewhere")
        dialog.save()
        assert dialog.error.isVisible() and "listen address" in dialog.error.text()
        dialog.listen.setText("127.0.0.1:0")
        dialog.name.setText("renamed")
        dialog.save()
        assert dialog.needs_restart and json.loads(path.read_text())["name"] == "renamed"
        ask = window.dialogs[-1]
        assert "Restart it now?" in ask.text()
        qtbot.mouseClick(ask.button(ask.StandardButton.Yes), Qt.MouseButton.LeftButton)
        qtbot.waitUntil(
            lambda: app.node is not None and bool(app.address) and app.node.name == "renamed",
            timeout=30_000,
        )
        assert app.node.node_id == first_id  # same data folder: same identity


def test_settings_set_the_address_peers_dial_and_where_programs_are(qtbot, tmp_path, monkeypatch):
    # The app puts program places in its environment (for its renderer processes):
    # restored after the test, so later tests find the real programs.
    for program in ("blender", "povray", "ffmpeg"):
        monkeypatch.setenv(f"PEERFARM_{program.upper()}", "")
    povray = tmp_path / "Program Files" / "POV-Ray" / "povray"
    povray.parent.mkdir(parents=True)
    shutil.copy2(shutil.which("povray") or sys.executable, povray)
    path = tmp_path / "settings.json"
    with running_app(qtbot, tmp_path, None, settings_path=path) as (app, window):
        dialog = window.open_settings()
        assert dialog.advertise.placeholderText().endswith(app.address)  # what it chose
        dialog.programs["blender"].setText(str(tmp_path / "nowhere" / "blender"))
        dialog.save()
        assert dialog.error.isVisible() and "blender program: there is no file" in (
            dialog.error.text()
        )
        dialog.programs["blender"].setText("")
        dialog.programs["povray"].setText(str(povray))
        dialog.advertise.setText("render-7.lan:7100")
        dialog.save()
        assert dialog.needs_restart
        saved = json.loads(path.read_text())
        assert (saved["advertise"], saved["povray"]) == ("render-7.lan:7100", str(povray))
        ask = window.dialogs[-1]
        qtbot.mouseClick(ask.button(ask.StandardButton.Yes), Qt.MouseButton.LeftButton)
        qtbot.waitUntil(
            lambda: app.node is not None and app.address == "render-7.lan:7100", timeout=30_000
        )
        assert app.node.status()["address"] == "render-7.lan:7100"
        assert os.environ["PEERFARM_POVRAY"] == str(povray)


def test_closing_the_window_stops_the_node_gracefully(qtbot, tmp_path):
    with running_app(qtbot, tmp_path, None) as (app, window):
        node = app.node
        qtbot.waitUntil(lambda: node.node_id in node.state.peers, timeout=10_000)  # announced
        window.close()
        qtbot.waitUntil(lambda: not app.running, timeout=30_000)
        assert node.state.peers[node.node_id].state == "left"  # it told the farm
        assert not window.isVisible()


def test_closing_keeps_rendering_in_the_tray_when_asked(qtbot, tmp_path):
    with running_app(qtbot, tmp_path, None, keep_rendering_in_tray=True) as (app, window):
        if window.tray is None:
            pytest.skip("no system tray on this display (offscreen)")
        window.close()
        assert not window.isVisible() and app.running


# -- the submit dialog's refusals -------------------------------------------------------


def _refusal(qtbot, window, scene) -> str:
    dialog = window.open_submit(str(scene))
    qtbot.waitUntil(dialog.error.isVisible, timeout=20_000)
    assert not dialog.submit_button.isEnabled()
    return dialog.error.text()


def test_submit_dialog_explains_refused_scenes(qtbot, tmp_path):
    hostile = tmp_path / "scene.zip"
    with zipfile.ZipFile(hostile, "w") as z:
        z.writestr("scene.pov", "sphere { 0, 1 }")
        z.writestr("../../evil.sh", "rm -rf ~")
    notes = tmp_path / "notes.txt"
    notes.write_text("not a scene")
    with running_app(qtbot, tmp_path, None) as (app, window):
        text = _refusal(qtbot, window, hostile)
        assert "'../../evil.sh' points outside the scene folder" in text
        assert "no such" not in text.lower() and "Traceback" not in text
        assert "notes.txt" in _refusal(qtbot, window, notes)
        assert "does not exist" in _refusal(qtbot, window, tmp_path / "missing.pov")
        assert not (tmp_path / "evil.sh").exists()
        assert not app.node.state.jobs  # nothing was submitted


def test_dropping_a_scene_on_the_window_opens_the_submit_dialog(qtbot, tmp_path):
    scene = tmp_path / "dropped.json"
    scene.write_text(builtin_scene_text("demo"))
    with running_app(qtbot, tmp_path, None) as (app, window):
        data = QMimeData()
        data.setUrls([QUrl.fromLocalFile(str(scene))])
        pos = QPointF(window.width() / 2, window.height() / 2)
        actions = Qt.DropAction.CopyAction
        buttons, keys = Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
        enter = QDragEnterEvent(pos.toPoint(), actions, data, buttons, keys)
        QApplication.sendEvent(window, enter)
        assert enter.isAccepted()
        QApplication.sendEvent(window, QDropEvent(pos, actions, data, buttons, keys))
        dialog = window.dialogs[-1]
        assert dialog.scene_edit.text() == str(scene)
        qtbot.waitUntil(dialog.submit_button.isEnabled, timeout=20_000)
        assert dialog.name_edit.text() == "dropped"
        assert "built-in ray tracer scene, frames 1–48" in dialog.scene_status.text()
        assert dialog.request().tiles == 1 and dialog.chunk.isEnabled()
        dialog.tiles.setValue(4)  # a still in 4 tiles: one tile per chunk
        assert not dialog.chunk.isEnabled()
        assert (dialog.request().tiles, dialog.request().chunk_size) == (4, 1)


def test_submit_dialog_shows_the_farm_refusing_a_job(qtbot, tmp_path):
    scene = tmp_path / "short.json"
    data = json.loads(builtin_scene_text("demo"))
    data["animation"]["final_frame"] = 10
    scene.write_text(json.dumps(data))
    with running_app(qtbot, tmp_path, None) as (app, window):
        dialog = window.open_submit(str(scene))
        qtbot.waitUntil(dialog.submit_button.isEnabled, timeout=20_000)
        assert (dialog.first.value(), dialog.last.value()) == (1, 10)
        dialog.last.setValue(30)
        dialog.submit()
        qtbot.waitUntil(dialog.error.isVisible, timeout=10_000)
        assert "frames 1-30 are outside the scene's animation (frames 1-10)" in dialog.error.text()
        assert dialog.isVisible() and dialog.submit_button.isEnabled()
        assert not app.node.state.jobs


# -- away detection ---------------------------------------------------------------------


def test_pause_reason():
    assert pause_reason(True, False, None, 10) == "paused on this computer"
    assert pause_reason(False, False, None, 10) == ""
    assert "until you are away (10 min" in pause_reason(False, True, 599.0, 10)
    assert pause_reason(False, True, 600.0, 10) == ""
    assert "until you are away" in pause_reason(False, True, None, 10)  # unknown: assume here


def test_render_only_when_away_pauses_the_worker_while_someone_works(qtbot, tmp_path):
    with running_app(qtbot, tmp_path, None) as (app, window):
        app.note_input()
        window.away_minutes.setValue(1440)  # nobody is away that long in a test run
        window.away.setChecked(True)
        qtbot.waitUntil(lambda: app.node.worker_paused, timeout=10_000)
        assert "until you are away (1440 min" in app.worker_pause_reason
        assert app.store.effective.render_only_when_away
        window.away.setChecked(False)
        qtbot.waitUntil(lambda: not app.node.worker_paused, timeout=10_000)


XVFB = shutil.which("Xvfb")


@pytest.mark.skipif(
    not XVFB or not ctypes.util.find_library("Xss") or not ctypes.util.find_library("Xtst"),
    reason="needs Xvfb, libXss and libXtst (X11 idle time)",
)
def test_x11_idle_time_counts_and_resets_on_input(monkeypatch):
    display = f":{90 + os.getpid() % 9}"
    server = subprocess.Popen(
        [XVFB, display, "-screen", "0", "640x480x24"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        monkeypatch.setenv("DISPLAY", display)
        monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
        deadline = time.monotonic() + 10
        clock = IdleClock()
        while not clock.system_wide and time.monotonic() < deadline:
            time.sleep(0.2)
            clock = IdleClock()
        assert clock.method == "X11 screen saver extension"
        time.sleep(1.2)
        assert clock.seconds() >= 1.0
        x11 = ctypes.CDLL(ctypes.util.find_library("X11"))
        xtst = ctypes.CDLL(ctypes.util.find_library("Xtst"))
        x11.XOpenDisplay.restype = ctypes.c_void_p
        x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
        x11.XFlush.argtypes = [ctypes.c_void_p]
        xtst.XTestFakeMotionEvent.argtypes = (
            [ctypes.c_void_p] + [ctypes.c_int] * 3 + [ctypes.c_ulong]
        )
        dpy = x11.XOpenDisplay(display.encode())
        xtst.XTestFakeMotionEvent(dpy, -1, 10, 10, 0)  # the user moves the mouse
        x11.XFlush(dpy)
        time.sleep(0.2)
        assert clock.seconds() < 0.8
    finally:
        server.terminate()
        server.wait(timeout=10)


# -- plain values behind the views ------------------------------------------------------


def test_rate_meter_and_eta():
    meter = RateMeter(window=30)
    assert meter.rate(0) is None
    meter.add(0, 0)
    meter.add(10, 20)
    assert meter.rate(10) == pytest.approx(2.0)
    assert meter.rate(20) == pytest.approx(1.0)  # nothing new for 10 s: slower
    meter.add(21, 5)  # frames were lost: start over
    assert meter.rate(21) is None
    assert [format_eta(s) for s in (None, 42, 125, 7322)] == [
        "",
        "42 s",
        "2 min 05 s",
        "2 h 02 min",
    ]


def test_frame_cells_and_what_hovering_says():
    log = ActionLog()
    log.add(log.create(B, "PEER_JOINED", joined_payload("render-01")))
    log.add(log.create(A, "NEW_JOB", new_job_payload(frames=(1, 6), chunk=2)))
    claim = log.create(B, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 0})
    log.add(claim)
    log.add(log.create(B, "DONE", {"job_id": "job1", "chunk": 0, "claim_seq": claim.seq}))
    log.add(log.create(B, "CLAIM_CHUNK", {"job_id": "job1", "chunk": 1}))
    job = log.state.jobs["job1"]
    cells = frame_cells(job)
    assert [(f, s) for f, _, s in cells] == [
        (1, DONE),
        (2, DONE),
        (3, RENDERING),
        (4, RENDERING),
        (5, WAITING),
        (6, WAITING),
    ]
    names = {B: "render-01"}
    assert cell_text(job, 1, names) == "frames 3-4: rendering on render-01"
    assert cell_text(job, 0, names) == "frames 1-2: done, rendered by render-01"
    summary = FarmSummary()
    rows = summary.peers(log.state, A, 0.0, {B: "up"}, {B: "10.0.0.2:7100"})
    row = next(r for r in rows if r.id == B)
    assert (row.frames_rendered, row.rendering, row.address) == (
        2,
        ["demo frames 3-4"],
        "10.0.0.2:7100",
    )
