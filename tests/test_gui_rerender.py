"""The app's "re-render when the scene's files change" with a real farm (node processes
on loopback, real POV-Ray): a save submits a new revision, the job view follows it,
the old frames stand in (dimmed) until the new ones replace them."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from farmtools import farm_running, job_of, start_farm
from guitools import farm_status, running_app
from PIL import Image
from PySide6.QtCore import Qt
from rerender_scene import ball_inc, scene_files
from test_povray import write_files

from peerfarm.renderers.povray.sandbox import unavailable_reason
from ui.farm_summary import DONE

if shutil.which("povray") is None or unavailable_reason() is not None:
    if os.environ.get("CI"):
        raise RuntimeError("CI must have a working POV-Ray: .ci/run installs it")
    pytest.skip("POV-Ray is not usable here", allow_module_level=True)

RED = ball_inc(0, "<1, 0, 0>")
GREEN_SLOWER = ball_inc(1_500_000, "<0, 1, 0>")  # about a second or two per frame
BLUE = ball_inc(0, "<0, 0, 1>")


def centre(path) -> tuple[int, int, int]:
    return tuple(int(v) for v in np.asarray(Image.open(path).convert("RGB"))[18, 24])


def test_the_app_re_renders_a_watched_scene_on_save(qtbot, tmp_path):
    scene = write_files(tmp_path / "ball", scene_files(RED))
    out = tmp_path / "ball-out"
    farm, _, bootstrap, nodes = start_farm(tmp_path / "farm", nodes=2)
    with (
        farm_running(farm, tmp_path / "farm"),
        running_app(qtbot, tmp_path, bootstrap) as (
            app,
            window,
        ),
    ):
        qtbot.waitUntil(lambda: len(app.snapshot.peers) >= 4, timeout=30_000)
        dialog = window.open_submit(str(scene))
        qtbot.waitUntil(dialog.submit_button.isEnabled, timeout=20_000)
        assert dialog.rerender.isEnabled()
        dialog.rerender.setChecked(True)
        dialog.chunk.setValue(1)
        dialog.output_edit.setText(str(out))
        dialog._output_edited = True
        qtbot.mouseClick(dialog.submit_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: not dialog.isVisible() or dialog.error.isVisible(), timeout=20_000)
        assert dialog.error.isHidden(), dialog.error.text()
        view = window.job_view
        first = view.job_id
        assert first and app.watches.watching(first) is not None
        qtbot.waitUntil(lambda: app.job(first) is not None, timeout=10_000)
        assert app.job(first).order == "spread"
        qtbot.waitUntil(lambda: len(view.thumbnails) == 9, timeout=120_000)
        assert view.watch_box.isVisible() and view.watch_box.isChecked()
        assert centre(out / "ball_0005.png")[0] > 200  # red

        # Save: a new revision, the view follows it, the red frames stand in until
        # the green ones replace them.
        (scene / "ball.inc").write_bytes(GREEN_SLOWER)
        qtbot.waitUntil(lambda: view.job_id != first, timeout=30_000)
        second = view.job_id
        assert app.job(second).supersedes == first
        qtbot.waitUntil(lambda: bool(view.earlier), timeout=20_000)
        # The first revision had finished: it stays done (a running one is cancelled).
        assert job_of(farm_status(nodes[0]), first)["state"] == "done"
        qtbot.waitUntil(
            lambda: len(view.grid.cells) == 9 and all(c[2] == DONE for c in view.grid.cells),
            timeout=180_000,
        )
        qtbot.waitUntil(lambda: not view.earlier and len(view.thumbnails) == 9, timeout=30_000)
        for n in range(1, 10):
            r, g, _ = centre(out / f"ball_{n:04d}.png")
            assert g > 200 and r < 60, f"frame {n} is not from the new revision"

        # Untick: watching stops; a later save submits nothing.
        view.watch_box.setChecked(False)
        assert app.watches.watching(second) is None and view.watch_box.isHidden()
        (scene / "ball.inc").write_bytes(BLUE)
        qtbot.wait(3000)
        assert view.job_id == second
        assert len(app.node.state.jobs) == 2


def test_the_app_shows_the_preview_until_the_full_frames_arrive(qtbot, tmp_path):
    scene = write_files(tmp_path / "ball", scene_files(GREEN_SLOWER))
    out = tmp_path / "ball-out"
    farm, _, bootstrap, nodes = start_farm(tmp_path / "farm", nodes=2)
    with (
        farm_running(farm, tmp_path / "farm"),
        running_app(qtbot, tmp_path, bootstrap) as (
            app,
            window,
        ),
    ):
        qtbot.waitUntil(lambda: len(app.snapshot.peers) >= 4, timeout=30_000)
        dialog = window.open_submit(str(scene))
        qtbot.waitUntil(dialog.submit_button.isEnabled, timeout=20_000)
        dialog.preview.setChecked(True)
        dialog.chunk.setValue(3)
        dialog.output_edit.setText(str(out))
        dialog._output_edited = True
        qtbot.mouseClick(dialog.submit_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: not dialog.isVisible() or dialog.error.isVisible(), timeout=20_000)
        assert dialog.error.isHidden(), dialog.error.text()
        view = window.job_view
        full = app.job(view.job_id)
        assert full is not None and full.output == str(out)
        (preview,) = [j for j in app.node.state.jobs.values() if j.id != full.id]
        assert preview.output == str(out / "preview") and preview.priority == full.priority + 1
        assert (preview.width, preview.height) == (12, 9)
        # The preview's small frames stand in for the full ones...
        qtbot.waitUntil(lambda: bool(view.earlier), timeout=60_000)
        # ...until every full frame is in.
        qtbot.waitUntil(lambda: not view.earlier and len(view.thumbnails) == 9, timeout=180_000)
        assert all(c[2] == DONE for c in view.grid.cells)
