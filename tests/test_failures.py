"""Fault tolerance with real processes on loopback: nodes killed, frozen and restarted."""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import pytest
from factories import demo_spec
from farmtools import (
    farm_running,
    job_of,
    peerfarm_cli,
    start_bootstrap,
    start_farm,
    start_node,
    status,
    submit,
    wait_until,
)

from peerfarm.cli.demo import Farm

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="uses SIGSTOP/SIGKILL")


def test_killed_frozen_and_restarted_workers(tmp_path):
    """Bootstrap server + 4 nodes; SIGKILL the bootstrap server and one worker
    mid-job, SIGSTOP another for 8 s, restart the killed worker: the job
    completes with every frame in the output folder once and equal digests."""
    farm, bootstrap_proc, bootstrap, nodes = start_farm(tmp_path, nodes=4)
    out = tmp_path / "out"
    procs = dict(zip(nodes, farm.procs[1:], strict=True))
    with farm_running(farm, tmp_path):
        wait_until(
            "a full mesh",
            lambda: all(sum(p["connected"] for p in status(n)["peers"]) == 4 for n in nodes),
            30,
        )
        killed_id = status(nodes[1])["node_id"]
        frozen_id = status(nodes[2])["node_id"]
        job_id = submit(nodes[0], demo_spec(out, frames=(1, 48), chunk=2, size=(320, 240)))
        wait_until(
            "the first frames",
            lambda: job_of(status(nodes[0]), job_id).get("frames_done", 0) >= 4,
            120,
        )

        bootstrap_proc.kill()
        procs[nodes[1]].kill()
        os.kill(procs[nodes[2]].pid, signal.SIGSTOP)
        frozen_at = time.monotonic()

        def peer_state(observer, node_id):
            return next((p["state"] for p in status(observer)["peers"] if p["id"] == node_id), "")

        wait_until(
            "the killed node declared down", lambda: peer_state(nodes[0], killed_id) == "down", 5
        )
        wait_until(
            "the frozen node declared down", lambda: peer_state(nodes[0], frozen_id) == "down", 8
        )
        # Their claims went back to the pool: nothing is claimed by them now.
        time.sleep(max(0.0, 8 - (time.monotonic() - frozen_at)))
        os.kill(procs[nodes[2]].pid, signal.SIGCONT)
        _, restarted = start_node(farm, tmp_path, 2, bootstrap)
        assert status(restarted)["node_id"] == killed_id  # same identity after restart
        live = [nodes[0], restarted, nodes[2], nodes[3]]

        wait_until(
            "every frame in the output folder",
            lambda: job_of(status(nodes[0]), job_id).get("complete"),
            240,
        )
        frames = sorted(p.name for p in out.iterdir() if p.suffix == ".png")
        assert frames == [f"demo_{i:04d}.png" for i in range(1, 49)]
        assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]

        def converged():
            sts = [status(n) for n in live]
            return len({s["state_digest"] for s in sts}) == 1 and all(
                job_of(s, job_id).get("frames_done") == 48 for s in sts
            )

        wait_until("equal digests on every live node", converged, 30)
        # The frozen and the restarted node rejoined with their own identities.
        for node_id in (killed_id, frozen_id):
            wait_until(
                "rejoined peers seen up", lambda n=node_id: peer_state(nodes[3], n) == "up", 15
            )
        job = job_of(status(nodes[3]), job_id)
        assert job["frame_renders"] >= 48
        print(f"frame_renders {job['frame_renders']} for 48 frames")


def test_cancel_reaches_the_renderers_on_every_node(tmp_path):
    farm, _, _, nodes = start_farm(tmp_path, nodes=2)
    with farm_running(farm, tmp_path):
        job_id = submit(
            nodes[0], demo_spec(tmp_path / "out", frames=(1, 40), chunk=10, size=(640, 480))
        )
        wait_until(
            "both nodes rendering", lambda: all(status(n)["worker"]["rendering"] for n in nodes), 30
        )
        cli = peerfarm_cli("cancel", job_id, "--node", nodes[1], timeout=60)
        assert cli.returncode == 0, cli.stderr
        wait_until(
            "no renderer running anywhere",
            lambda: not any(status(n)["worker"]["rendering"] for n in nodes),
            10,
        )
        assert all(job_of(status(n), job_id)["state"] == "cancelled" for n in nodes)
        again = peerfarm_cli("cancel", job_id, "--node", nodes[0], timeout=60)
        assert again.returncode == 1 and "already cancelled" in again.stderr


FAILING_SCENE = {
    "format": "peerfarm-scene/1",
    "comment": "Frame 5 (clock 0.5) has a negative radius: the renderer fails on it, only.",
    "animation": {"initial_frame": 1, "final_frame": 9, "initial_clock": 0, "final_clock": 1},
    "camera": {"position": [0, 1, 5], "look_at": [0, 0.5, 0]},
    "lights": [{"position": [3, 5, 3]}],
    "objects": [
        {
            "type": "sphere",
            "center": [0, 0.5, 0],
            "radius": "0.5 - 40 * max(0, 0.05 - abs(clock - 0.5))",
        },
    ],
}


def test_a_failing_frame_is_retried_on_three_nodes_then_fails_the_job(tmp_path):
    farm, _, _, nodes = start_farm(tmp_path, nodes=3)
    scene = tmp_path / "failing.json"
    scene.write_text(json.dumps(FAILING_SCENE))
    with farm_running(farm, tmp_path):
        wait_until(
            "a full mesh",
            lambda: all(sum(p["connected"] for p in status(n)["peers"]) == 3 for n in nodes),
            30,
        )
        cli = peerfarm_cli(
            "submit",
            str(scene),
            "--node",
            nodes[0],
            "--chunk",
            "1",
            "--size",
            "32x24",
            "--output",
            str(tmp_path / "out"),
            "--wait",
            timeout=180,
        )
        assert cli.returncode == 1, cli.stdout + cli.stderr
        job_id = cli.stdout.splitlines()[0]
        assert f"job {job_id} failed: frames 5-5 failed 3 times on 3 node(s)" in cli.stderr
        assert "radius" in cli.stderr  # the renderer's own words reach the user
        logs_cli = peerfarm_cli("logs", job_id, "--frame", "5", "--node", nodes[1], timeout=60)
        assert logs_cli.returncode == 0, logs_cli.stderr
        # One log per node it failed on, fetched from the node that made it.
        assert logs_cli.stdout.count("failed here") == 3
        assert logs_cli.stdout.count("radius") >= 3
        names = {f"node-{i}" for i in (1, 2, 3)}
        assert all(f"on {n}, failed here" in logs_cli.stdout for n in names)
        # Frames that rendered are not lost.
        wait_until(
            "rendered frames in the output folder",
            lambda: (tmp_path / "out" / "failing_0001.png").exists(),
            20,
        )


def test_frames_lost_with_their_holder_are_rendered_again_for_an_offline_submitter(tmp_path):
    """The submitter is frozen while the only worker renders the job and then dies
    with the frames on its disk; back online, the submitter gets them rendered
    again elsewhere and collects every frame."""
    farm = Farm(tmp_path)
    _, bootstrap = start_bootstrap(farm, tmp_path)
    submitter_proc, submitter = start_node(farm, tmp_path, 1, bootstrap, "--slots", "0")
    worker_proc, worker = start_node(farm, tmp_path, 2, bootstrap)
    out = tmp_path / "out"
    with farm_running(farm, tmp_path):
        wait_until(
            "a link",
            lambda: any(
                p["connected"] for p in status(submitter)["peers"] if p["name"] == "node-2"
            ),
            30,
        )
        job_id = submit(submitter, demo_spec(out, frames=(1, 4), chunk=4, size=(640, 480)))
        wait_until("the worker rendering", lambda: status(worker)["worker"]["rendering"], 30)
        os.kill(submitter_proc.pid, signal.SIGSTOP)
        wait_until(
            "the job rendered", lambda: job_of(status(worker), job_id)["state"] == "done", 60
        )
        worker_proc.kill()
        worker_proc.wait()
        start_node(farm, tmp_path, 3, bootstrap)
        os.kill(submitter_proc.pid, signal.SIGCONT)
        wait_until(
            "every frame in the output folder",
            lambda: job_of(status(submitter), job_id).get("complete"),
            120,
        )
        assert sorted(p.name for p in out.glob("*.png")) == [
            f"demo_{i:04d}.png" for i in range(1, 5)
        ]
        assert job_of(status(submitter), job_id)["frame_renders"] == 8  # rendered twice


def test_whole_farm_power_cut(tmp_path):
    """Every process is killed with SIGKILL mid-job, then all are restarted: the job
    completes, and only chunks that were in flight at the kill are rendered again."""
    farm, bootstrap_proc, _, nodes = start_farm(tmp_path, nodes=3)
    out = tmp_path / "out"
    chunk = 3
    with farm_running(farm, tmp_path):
        job_id = submit(nodes[0], demo_spec(out, frames=(1, 36), chunk=chunk, size=(320, 240)))
        wait_until(
            "a third of the frames",
            lambda: job_of(status(nodes[0]), job_id).get("frames_done", 0) >= 12,
            120,
        )
        for proc in farm.procs:
            proc.kill()
        for proc in farm.procs:
            proc.wait()
        before = len(list(out.glob("*.png")))

        _, bootstrap = start_bootstrap(farm, tmp_path, "bootstrap-again")
        nodes = [start_node(farm, tmp_path, i, bootstrap)[1] for i in (1, 2, 3)]
        wait_until(
            "every frame in the output folder",
            lambda: job_of(status(nodes[0]), job_id).get("complete"),
            180,
        )
        assert sorted(p.name for p in out.glob("*.png")) == [
            f"demo_{i:04d}.png" for i in range(1, 37)
        ]
        renders = job_of(status(nodes[0]), job_id)["frame_renders"]
        # At most one chunk per node (1 slot each) was in flight at the kill.
        assert 36 <= renders <= 36 + 3 * chunk, renders
        print(f"{before} frames collected before the power cut; {renders} frame renders for 36")
        wait_until(
            "equal digests", lambda: len({status(n)["state_digest"] for n in nodes}) == 1, 30
        )
