"""The desktop app with a real farm behind it: separate node processes on loopback,
the app's own embedded node joining them through the bootstrap server."""

from __future__ import annotations

from factories import demo_spec
from farmtools import farm_running, job_of, start_farm
from guitools import farm_status, running_app


def test_the_embedded_node_joins_the_farm_and_the_jobs_view_follows_a_job(qtbot, tmp_path):
    farm, _, bootstrap, nodes = start_farm(tmp_path, nodes=2)
    with farm_running(farm, tmp_path), running_app(qtbot, tmp_path, bootstrap) as (app, window):
        app_id = app.node.node_id
        # The farm's nodes see the app's node as a peer, and the app sees them.
        qtbot.waitUntil(
            lambda: all(
                any(p["id"] == app_id and p["state"] == "up" for p in farm_status(n)["peers"])
                for n in nodes
            ),
            timeout=30_000,
        )
        qtbot.waitUntil(
            lambda: (
                app.snapshot is not None
                and {"artist", "node-1", "node-2"}
                <= {p.name for p in app.snapshot.peers if p.health == "up"}
            ),
            timeout=30_000,
        )
        job_ids = []
        app.spawn(
            lambda: _submit(app, demo_spec(tmp_path / "out", frames=(1, 8), chunk=2), job_ids)
        )
        qtbot.waitUntil(lambda: bool(job_ids), timeout=10_000)
        job_id = job_ids[0]
        model = window.jobs_view.jobs_model
        qtbot.waitUntil(
            lambda: any(r.id == job_id and r.complete for r in model.rows), timeout=120_000
        )
        row = next(r for r in model.rows if r.id == job_id)
        assert (row.state, row.frames_done, row.frames_total, row.mine) == ("done", 8, 8, True)
        assert model.data(model.index(0, 6)) == "done"
        assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == [
            f"demo_{i:04d}.png" for i in range(1, 9)
        ]
        # Every node agrees the job is done.
        assert all(job_of(farm_status(n), job_id)["state"] == "done" for n in nodes)


async def _submit(app, spec, out):
    out.append(await app.node.submit(spec))
