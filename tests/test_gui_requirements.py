"""The desktop app and requirements (docs/scheduling.md): the submit dialog's Requires
and Nodes fields, the jobs and job views saying why a job waits, the farm view showing
each node's tags, memory and cores, and the node's tags in Settings. Offscreen, with the
app's real embedded node."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from factories import A, B, joined_payload, new_job_payload
from guitools import running_app
from PySide6.QtCore import Qt

from peerfarm.core.log import ActionLog
from ui.farm_summary import FarmSummary
from ui.farm_view import COLUMNS, FarmModel, machine_text
from ui.jobs_view import STATE, JobsModel, state_text
from ui.settings import Settings, SettingsError, load, node_config, save

GIB = 2**30


def test_the_submit_dialog_sends_requirements_and_says_when_no_node_meets_them(qtbot, tmp_path):
    with running_app(qtbot, tmp_path, None) as (app, window):
        qtbot.waitUntil(lambda: app.node.node_id in app.node.state.peers, timeout=10_000)
        dialog = window.open_submit("builtin:demo")
        qtbot.waitUntil(dialog.submit_button.isEnabled, timeout=20_000)
        dialog.first.setValue(1)
        dialog.last.setValue(2)
        # The app's own node is the farm: it has no tags.
        dialog.require_edit.setText("GPU, lab2")
        assert dialog.needs_status.isVisible()
        assert "no node has tags gpu, lab2" in dialog.needs_status.text()
        dialog.memory_edit.setText("16Q")
        assert "memory '16Q': expected a size such as 16G" in dialog.needs_status.text()
        dialog.submit()
        assert dialog.error.isVisible() and "Requires: memory '16Q'" in dialog.error.text()
        assert not app.node.state.jobs  # nothing was submitted
        dialog.memory_edit.setText("1.5G")
        dialog.max_nodes.setValue(3)
        request = dialog.request()
        assert (request.require, request.require_memory, request.max_nodes) == (
            ["gpu", "lab2"],
            int(1.5 * GIB),
            3,
        )
        dialog.submit()
        qtbot.waitUntil(lambda: bool(app.node.state.jobs), timeout=20_000)
        job = next(iter(app.node.state.jobs.values()))
        assert (job.require, job.require_memory, job.max_nodes) == (
            ("gpu", "lab2"),
            int(1.5 * GIB),
            3,
        )
        # The views say why it waits.
        window.job_view.set_job(job.id)
        qtbot.waitUntil(
            lambda: "waiting: no node has tags gpu, lab2" in window.job_view.detail.text(),
            timeout=10_000,
        )
        assert "requires tag gpu, tag lab2, 1.5 GiB of memory, at most 3 nodes" in (
            window.job_view.detail.text()
        )
        row = next(r for r in app.snapshot.jobs if r.id == job.id)
        assert state_text(row) == "queued: no node matches"
        # Without requirements the fields add nothing.
        dialog = window.open_submit("builtin:demo")
        qtbot.waitUntil(dialog.submit_button.isEnabled, timeout=20_000)
        assert not dialog.needs_status.isVisible()
        request = dialog.request()
        assert (request.require, request.require_memory, request.max_nodes) == ([], 0, 0)


def test_the_farm_view_shows_tags_memory_and_cores(qtbot):
    log = ActionLog()
    payload = {**joined_payload("b"), "tags": ["gpu", "lab2"], "memory": 16 * GIB, "cores": 8}
    log.add(log.create(B, "PEER_JOINED", payload))
    log.add(log.create(A, "PEER_JOINED", joined_payload("a")))  # an older node: unknown
    rows = FarmSummary().peers(log.state, A, 0.0, {B: "up"}, {})
    by_id = {r.id: r for r in rows}
    assert machine_text(by_id[B]) == "gpu, lab2 · 16 GiB · 8 cores"
    assert machine_text(by_id[A]) == "memory unknown · cores unknown"
    model = FarmModel()
    model.update(rows)
    column = COLUMNS.index("Tags and memory")
    row = [r.id for r in rows].index(B)
    assert model.data(model.index(row, column)) == "gpu, lab2 · 16 GiB · 8 cores"


def test_tags_in_settings_reach_the_node_and_bad_ones_are_refused(tmp_path):
    path = tmp_path / "settings.json"
    save(path, replace(Settings(), tags=("gpu", "lab2")))
    assert json.loads(path.read_text())["tags"] == ["gpu", "lab2"]
    settings = load(path)
    assert settings.tags == ("gpu", "lab2")
    assert node_config(replace(settings, listen="127.0.0.1:0"), tmp_path).tags == ("gpu", "lab2")
    with pytest.raises(SettingsError, match="tags: tag 'my gpu': use 1-32 letters"):
        replace(settings, tags=("my gpu",)).check()


def test_the_apps_command_line_takes_tags():
    import argparse

    from ui.options import add_gui_options, overrides_from

    parser = argparse.ArgumentParser()
    add_gui_options(parser)
    assert overrides_from(parser.parse_args(["--tag", "GPU", "--tag", "lab2"]))["tags"] == (
        "gpu",
        "lab2",
    )
    assert "tags" not in overrides_from(parser.parse_args([]))
    with pytest.raises(SystemExit):
        parser.parse_args(["--tag", "my gpu"])


def test_the_jobs_view_says_when_the_output_disk_is_full(qtbot):
    """A job of this machine whose frames cannot be written to its output folder: the
    State column says so, its tooltip and the job view say what to do."""
    log = ActionLog()
    log.add(log.create(A, "PEER_JOINED", joined_payload("a")))
    log.add(log.create(A, "NEW_JOB", new_job_payload("j", frames=(1, 2), chunk=1)))
    full = "cannot write to the output folder out: [Errno 28] No space left on device"
    progress = {"j": {"frames_collected": 0, "complete": False, "output_waiting": full}}
    (row,) = FarmSummary().jobs(log.state, A, 0.0, progress)
    assert row.output_waiting == full and state_text(row) == "output disk full"
    model = JobsModel()
    model.update([row])
    tooltip = model.data(model.index(0, STATE), Qt.ItemDataRole.ToolTipRole)
    assert full in tooltip
    progress["j"]["output_waiting"] = ""  # a frame came in: nothing to say
    (row,) = FarmSummary().jobs(log.state, A, 0.0, progress)
    assert state_text(row) != "output disk full"
