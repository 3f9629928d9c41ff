"""Screenshots of the desktop app with a real farm behind it (for docs/user-guide.md).

Starts a bootstrap server and three nodes (separate processes on loopback), the
app with its own node joining them, submits jobs (one finishes, one renders,
one fails, one comes from another node), and saves a PNG of every view here.
Run it under a real X server or Xvfb, e.g.:

    xvfb-run -s "-screen 0 1400x900x24" python docs/screenshots/make_screenshots.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import trio
from PySide6.QtWidgets import QApplication, QToolTip, QWidget

from peerfarm.cli.demo import Farm
from peerfarm.job_request import JobRequest
from peerfarm.renderers.builtin import builtin_scene_text
from peerfarm.runtime.client import NodeClient
from peerfarm.security.farm_key import resolve_key
from ui.app import PeerfarmApp
from ui.farm_summary import RENDERING
from ui.main_window import MainWindow
from ui.settings import SettingsStore

HERE = Path(__file__).resolve().parent
WINDOW: list = []  # for the timeout message

FAILING_SCENE = {
    "format": "peerfarm-scene/1",
    "comment": "Frame 5 has a negative radius: the renderer fails on it.",
    "animation": {"initial_frame": 1, "final_frame": 12, "initial_clock": 0, "final_clock": 1},
    "camera": {"position": [0, 1.6, 5], "look_at": [0, 0.7, 0]},
    "background": {"horizon": [0.9, 0.85, 0.8], "zenith": [0.45, 0.3, 0.55]},
    "lights": [{"position": [3, 5, 3]}],
    "objects": [
        {
            "type": "plane",
            "normal": [0, 1, 0],
            "offset": 0,
            "material": {"color": [0.8, 0.8, 0.75], "checker": {"color": [0.3, 0.3, 0.35]}},
        },
        {
            "type": "sphere",
            "center": [0, "0.8 + 0.3*sin(6.283*clock)", 0],
            "radius": "0.7 - 40 * max(0, 0.05 - abs(clock - 4/11))",
            "material": {"color": [0.2, 0.5, 0.9], "specular": 0.6, "shininess": 80},
        },
    ],
}


def wait(what: str, check, timeout: float = 120.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        QApplication.processEvents()
        if check():
            return
        time.sleep(0.01)
    import collections

    grid_cells = collections.Counter(c[2] for c in WINDOW[0].job_view.grid.cells) if WINDOW else {}
    jobs = [(r.name, r.state, r.frames_done) for r in WINDOW[0].app.snapshot.jobs] if WINDOW else []
    raise SystemExit(f"timed out waiting for {what}; grid {dict(grid_cells)}; jobs {jobs}")


def settle(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.01)


def shot(widget: QWidget, name: str, with_popups: bool = False) -> None:
    settle(0.4)
    if with_popups:  # tooltips and menus are windows of their own: grab the screen
        geo = widget.frameGeometry()
        image = widget.screen().grabWindow(0, geo.x(), geo.y(), geo.width(), geo.height())
    else:
        image = widget.grab()
    image.save(str(HERE / f"{name}.png"))
    print(f"saved {name}.png ({image.width()}x{image.height()})")


def client_submit(address: str, spec: JobRequest) -> str:
    async def go() -> str:
        async with NodeClient(address, resolve_key(None)) as client:
            return await client.submit(spec)

    import threading

    out: list[str] = []
    thread = threading.Thread(target=lambda: out.append(trio.run(go)))
    thread.start()  # this thread runs the app's trio (guest mode): a client needs its own
    while thread.is_alive():
        QApplication.processEvents()
        time.sleep(0.01)
    return out[0]


def main() -> int:
    qapp = QApplication(sys.argv[:1])
    qapp.setApplicationName("peerfarm")
    with tempfile.TemporaryDirectory(prefix="peerfarm-shots-") as tmp:
        root = Path(tmp)
        farm = Farm(root)
        try:
            _, bootstrap = farm.start_bootstrap(root / "bootstrap")
            nodes = [
                farm.start_node(name, bootstrap, root / name, 1)[1]
                for name in ("render-01", "render-02", "laptop-ana")
            ]
            store = SettingsStore(
                None,
                {
                    "listen": "127.0.0.1:0",
                    "bootstraps": (bootstrap,),
                    "lan_discovery": False,
                    "data_dir": str(root / "app"),
                    "name": "studio-ws3",
                    "slots": 1,
                    "setup_done": True,
                    "keep_rendering_in_tray": False,
                    "output_folder": str(root / "renders"),
                },
            )
            app = PeerfarmApp(store, root / "app-default")
            window = MainWindow(app)
            WINDOW.append(window)
            window.resize(1320, 820)
            window.move(20, 20)
            window.show()
            window.begin()
            wait("an empty jobs view", lambda: app.snapshot is not None)
            wait("the farm", lambda: sum(p.health == "up" for p in app.snapshot.peers) >= 5)
            settle(1.0)
            shot(window, "00-empty")

            # A job from this computer through the submit dialog: the demo animation.
            dialog = window.open_submit("builtin:demo")
            wait("the scene read", lambda: dialog.submit_button.isEnabled())
            dialog.name_edit.setText("bouncing-balls")
            dialog.chunk.setValue(2)
            shot(dialog, "01-submit")
            dialog.submit()
            wait("the job submitted", lambda: not dialog.isVisible())
            done_id = window.jobs_view.selected_row().id
            wait(
                "the first job complete",
                lambda: any(r.id == done_id and r.complete for r in app.snapshot.jobs),
                240,
            )

            # A failing job, and a big one from another node, still rendering.
            failing = root / "wobbly-sphere.json"
            failing.write_text(json.dumps(FAILING_SCENE))
            dialog = window.open_submit(str(failing))
            wait("the scene read", lambda: dialog.submit_button.isEnabled())
            dialog.chunk.setValue(1)
            dialog.width_spin.setValue(160)
            dialog.height_spin.setValue(120)
            dialog.submit()
            wait("submitted", lambda: not dialog.isVisible())
            fail_id = window.jobs_view.selected_row().id
            spec = JobRequest(
                scene=builtin_scene_text("demo"),
                name="turntable-hd",
                frames=(1, 48),
                chunk_size=1,
                width=1280,  # slow enough to still render after the failing job fails
                height=720,
                output=str(root / "ana-renders"),
            )
            # Submitted after the failing job has reached every node, so that it is
            # the younger job (submitted at once, the two would be concurrent).
            settle(2.0)
            big_id = client_submit(nodes[2], spec)
            wait(
                "the failing job failed",
                lambda: any(r.id == fail_id and r.state == "failed" for r in app.snapshot.jobs),
                180,
            )
            wait(
                "the big job rendering",
                lambda: any(r.id == big_id and r.frames_done >= 6 for r in app.snapshot.jobs),
                180,
            )
            window.jobs_view.select_job(big_id)
            grid = window.job_view.grid
            wait("frames rendering", lambda: sum(c[2] == RENDERING for c in grid.cells) >= 3, 60)
            settle(0.5)
            shot(window, "02-jobs-rendering")
            # Hover a yellow cell: which node renders it.
            wait("a frame rendering", lambda: any(c[2] == RENDERING for c in grid.cells), 60)
            cell = next(i for i, c in enumerate(grid.cells) if c[2] == RENDERING)
            centre = grid.cell_rect(cell).center()
            frame, chunk, _ = grid.cells[cell]
            QToolTip.showText(grid.mapToGlobal(centre), grid.text_for(frame, chunk), grid)
            shot(window, "03-hover-rendering", with_popups=True)
            QToolTip.hideText()

            window.jobs_view.select_job(fail_id)
            settle(1.0)
            shot(window, "04-job-failed")
            logs = window.job_view.open_logs(5)
            logs.move(200, 200)
            wait("the log", lambda: logs.loaded)
            shot(logs, "05-log")
            logs.close()

            window.jobs_view.select_job(done_id)
            wait("thumbnails", lambda: len(window.job_view.thumbnails) >= 48)
            window.job_view.cell_size.setCurrentText("large")
            settle(1.0)
            shot(window, "06-job-done-thumbnails")
            window.job_view.cell_size.setCurrentText("medium")
            viewer = window.job_view.open_viewer(12)
            viewer.move(120, 80)
            wait("the frame", lambda: viewer.current_image is not None)
            shot(viewer, "07-viewer")
            viewer.close()

            window.tabs.setCurrentIndex(1)
            settle(2.0)
            shot(window, "08-farm")
            window.tabs.setCurrentIndex(0)

            settings = window.open_settings()
            shot(settings, "09-settings")
            settings.reject()

            hostile = root / "scene.zip"
            import zipfile

            with zipfile.ZipFile(hostile, "w") as z:
                z.writestr("scene.pov", "sphere { 0, 1 }")
                z.writestr("../../.bashrc", "echo owned")
            dialog = window.open_submit(str(hostile))
            wait("the refusal", lambda: dialog.error.isVisible())
            shot(dialog, "10-submit-refused")
            dialog.reject()

            from ui.first_run import FirstRunDialog

            guide = FirstRunDialog(app, window)
            guide.show()
            shot(guide, "11-first-start")
            guide.close()
        finally:
            if "app" in locals() and app.running:
                app.stop()
                app.stop()
                wait("the node stopped", lambda: not app.running, 30)
            farm.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
