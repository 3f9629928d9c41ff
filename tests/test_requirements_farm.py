"""Requirements on real processes on loopback: a bootstrap server and two nodes, one
started with `--tag gpu`; a job submitted with `--require gpu` is rendered by that node
only, a job no node can take is accepted with a warning and says why it waits."""

from __future__ import annotations

from farmtools import (
    farm_running,
    job_of,
    peerfarm_cli,
    start_bootstrap,
    start_node,
    status,
    wait_for_rendering_mesh,
    wait_until,
)

from peerfarm.cli.demo import Farm
from peerfarm.runtime import store


def test_a_job_requiring_a_tag_renders_only_on_the_tagged_node(tmp_path):
    farm = Farm(tmp_path)
    _, bootstrap = start_bootstrap(farm, tmp_path)
    _, plain = start_node(farm, tmp_path, 1, bootstrap)
    _, gpu = start_node(farm, tmp_path, 2, bootstrap, "--tag", "GPU", "--tag", "lab2")
    out = tmp_path / "out"
    with farm_running(farm, tmp_path):
        wait_for_rendering_mesh([plain, gpu])
        gpu_id = status(gpu)["node_id"]
        # What each node advertises, as the other one sees it.
        seen = next(p for p in status(plain)["peers"] if p["id"] == gpu_id)
        assert seen["tags"] == ["gpu", "lab2"]
        assert seen["memory"] > 2**20 and seen["cores"] >= 1

        submitted = peerfarm_cli(
            "submit", "builtin:demo", "--node", plain, "--no-config", "--frames", "1-12",
            "--size", "64x48", "--output", str(out), "--require", "gpu", "--max-nodes", "1",
        )  # fmt: skip
        assert submitted.returncode == 0, submitted.stderr
        assert "warning" not in submitted.stderr
        job_id = submitted.stdout.split()[0]

        # A job no node can take: accepted, with a warning, and status says why it waits.
        waiting = peerfarm_cli(
            "submit", "builtin:demo", "--node", plain, "--no-config", "--frames", "1-2",
            "--size", "64x48", "--output", str(tmp_path / "out2"), "--require", "cuda",
            "--require-memory", "1T",
        )  # fmt: skip
        assert waiting.returncode == 0, waiting.stderr
        assert "peerfarm: warning: no node in the farm now meets" in waiting.stderr
        waiting_id = waiting.stdout.split()[0]

        wait_until(
            "the gpu job done and collected",
            lambda: job_of(status(plain), job_id).get("complete"),
            120,
        )
        assert sorted(p.name for p in out.glob("*.png")) == [
            f"demo_{i:04d}.png" for i in range(1, 13)
        ]
        st = status(plain)
        job = job_of(st, waiting_id)
        assert job["state"] == "queued"
        assert job["waiting"] == (
            "waiting: no node has tag cuda; needs 1 TiB of memory, the largest node has "
            + job["waiting"].rsplit("has ", 1)[1]
        )
        shown = peerfarm_cli("status", "--node", plain, "--no-config")
        assert "requires gpu; at most 1 node" in shown.stdout
        assert "waiting: no node has tag cuda" in shown.stdout
        assert "tags gpu, lab2;" in shown.stdout
        print(shown.stdout)  # shown with -s: what a user sees
        watched = peerfarm_cli("status", "--node", plain, "--no-config", "--watch", "--count", "1")
        assert "waiting: no node has tag cuda" in watched.stdout
        assert "tags gpu, lab2;" in watched.stdout
        print(watched.stdout)
    # Per the replicated log: every frame of the gpu job was claimed and rendered by
    # the gpu node, and the other node never won a claim of it.
    records = store.LogFile(tmp_path / "node-1" / "log.bin").load()
    actions = [r for r in records if r["payload"].get("job_id") == job_id]
    done = [a for a in actions if a["type"] == "DONE"]
    assert done and {a["origin"] for a in done} == {gpu_id}
    frames = sum(a["payload"].get("count", 1) for a in done)
    assert frames >= 12
    claims = {a["origin"] for a in actions if a["type"] in ("CLAIM_CHUNK", "BACKUP_CHUNK")}
    assert claims == {gpu_id}
