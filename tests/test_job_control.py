"""Job control from the command line against real node processes: pause, resume,
retry and priority are farm-wide, whichever node is asked."""

from __future__ import annotations

import time

from factories import demo_spec
from farmtools import farm_running, job_of, peerfarm_cli, start_farm, status, submit, wait_until


def _everywhere(nodes, job_id, key, value):
    return all(job_of(status(n), job_id).get(key) == value for n in nodes)


def test_pause_resume_and_priority_reach_every_node(tmp_path):
    farm, _, _, nodes = start_farm(tmp_path, nodes=2)
    with farm_running(farm, tmp_path):
        job_id = submit(
            nodes[0], demo_spec(tmp_path / "out", frames=(1, 48), chunk=2, size=(160, 120))
        )
        wait_until("rendering", lambda: job_of(status(nodes[0]), job_id).get("frames_done"), 60)
        cli = peerfarm_cli("pause", job_id, "--node", nodes[1])
        assert cli.returncode == 0, cli.stderr
        assert "paused" in cli.stdout
        wait_until("paused everywhere", lambda: _everywhere(nodes, job_id, "state", "paused"), 10)
        # Chunks in flight finish, then nothing of the job renders anywhere.
        wait_until(
            "no renders", lambda: not any(status(n)["worker"]["rendering"] for n in nodes), 30
        )
        frames = job_of(status(nodes[0]), job_id)["frames_done"]
        time.sleep(1.5)
        assert job_of(status(nodes[0]), job_id)["frames_done"] == frames < 48
        assert not any(status(n)["worker"]["rendering"] for n in nodes)

        again = peerfarm_cli("pause", job_id, "--node", nodes[0])
        assert again.returncode == 1 and "already paused" in again.stderr

        cli = peerfarm_cli("priority", job_id, "-7", "--node", nodes[0])
        assert cli.returncode == 0, cli.stderr
        wait_until("priority everywhere", lambda: _everywhere(nodes, job_id, "priority", -7), 10)
        bad = peerfarm_cli("priority", job_id, "5000", "--node", nodes[0])
        assert bad.returncode == 2 and "5000: give a whole number from -1000 to 1000" in bad.stderr

        cli = peerfarm_cli("resume", job_id, "--node", nodes[0])
        assert cli.returncode == 0, cli.stderr
        wait_until("the job done", lambda: _everywhere(nodes, job_id, "state", "done"), 120)
        done = peerfarm_cli("resume", job_id, "--node", nodes[1])
        assert done.returncode == 1 and "is not paused" in done.stderr


def test_retry_renders_the_failed_frames_once_the_cause_is_fixed(tmp_path):
    """Every node fails its renders (its frames folder is blocked by a file), so the
    job fails; once the folders are fixed, `peerfarm retry` renders the failed
    frames and the job completes."""
    farm, _, _, nodes = start_farm(tmp_path, nodes=2)
    blockers = [tmp_path / f"node-{i}" / "frames" for i in (1, 2)]
    for blocker in blockers:
        blocker.write_text("not a folder")
    with farm_running(farm, tmp_path):
        job_id = submit(nodes[0], demo_spec(tmp_path / "out", frames=(1, 4), chunk=2))
        wait_until("the job failed", lambda: _everywhere(nodes, job_id, "state", "failed"), 60)
        nothing = peerfarm_cli("retry", "ffffffffffff", "--node", nodes[0])
        assert nothing.returncode == 1 and "no job" in nothing.stderr
        for blocker in blockers:
            blocker.unlink()
        cli = peerfarm_cli("retry", job_id, "--node", nodes[1])
        assert cli.returncode == 0, cli.stderr
        assert "failed frame(s) will be rendered again" in cli.stdout
        wait_until("the job done", lambda: _everywhere(nodes, job_id, "state", "done"), 60)
        wait_until(
            "all frames collected", lambda: job_of(status(nodes[0]), job_id).get("complete"), 30
        )
        again = peerfarm_cli("retry", job_id, "--node", nodes[0])
        assert again.returncode == 1 and "nothing to retry" in again.stderr
