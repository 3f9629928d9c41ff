"""Real processes on loopback: a bootstrap server and three nodes render a job, and
the job completes after the bootstrap server is killed with SIGKILL (the research
paper's experiments: state identical on every peer; rendering goes on when the
server dies)."""

from __future__ import annotations

import zipfile

from factories import demo_spec
from farmtools import (
    farm_running,
    job_of,
    peerfarm_cli,
    start_bootstrap,
    start_farm,
    status,
    submit,
    wait_until,
)
from PIL import Image

from peerfarm.cli.demo import Farm


def test_job_survives_bootstrap_sigkill(tmp_path):
    farm, bootstrap_proc, _, nodes = start_farm(tmp_path)
    out = tmp_path / "out"
    with farm_running(farm, tmp_path):
        # Every node learns every other node through the bootstrap server and links up.
        wait_until(
            "a full mesh",
            lambda: all(sum(p["connected"] for p in status(n)["peers"]) == 3 for n in nodes),
            30,
        )
        job_id = submit(nodes[0], demo_spec(out, frames=(1, 48), chunk=2, size=(160, 120)))
        wait_until(
            "the first frames",
            lambda: job_of(status(nodes[1]), job_id).get("frames_done", 0) >= 2,
            120,
        )
        bootstrap_proc.kill()  # SIGKILL: no goodbye
        bootstrap_proc.wait()
        done = job_of(status(nodes[0]), job_id)["frames_done"]
        assert done < 48, "the job finished before the bootstrap server died; make it longer"

        wait_until(
            "every frame in the output folder",
            lambda: job_of(status(nodes[0]), job_id).get("complete"),
            240,
        )
        frames = sorted(out.glob("demo_*.png"))
        assert [f.name for f in frames] == [f"demo_{i:04d}.png" for i in range(1, 49)]
        assert all(Image.open(f).size == (160, 120) for f in frames)
        thumbs = sorted((out / ".thumbs").glob("demo_*.png"))
        assert [t.name for t in thumbs] == [f.name for f in frames]
        assert all(max(Image.open(t).size) <= 160 for t in thumbs)
        with Image.open(out / "demo.gif") as gif:
            assert gif.n_frames == 48

        def same_digest():
            sts = [status(n) for n in nodes]
            digests = {s["state_digest"] for s in sts}
            return len(digests) == 1 and all(job_of(s, job_id).get("state") == "done" for s in sts)

        wait_until("equal state digests on every node", same_digest, 30)
        # Work was spread over the farm, and wasted work is visible.
        job = job_of(status(nodes[2]), job_id)
        assert job["frames_done"] == 48 and job["frame_renders"] >= 48

        # The farm takes new work with the bootstrap server gone, through the CLI.
        cli = peerfarm_cli(
            "submit",
            "builtin:demo",
            "--node",
            nodes[2],
            "--frames",
            "1-4",
            "--chunk",
            "1",
            "--size",
            "64x48",
            "--output",
            str(tmp_path / "o2"),
            "--padding",
            "3",
            "--wait",
            timeout=180,
        )
        assert cli.returncode == 0, cli.stderr + cli.stdout
        first_line = cli.stdout.splitlines()[0]
        assert len(first_line) == 12 and first_line.isalnum()
        assert "4/4 frames" in cli.stdout
        assert sorted(p.name for p in (tmp_path / "o2").glob("demo_*.png")) == [
            f"demo_{i:03d}.png" for i in range(1, 5)
        ]

        # A restarted bootstrap server recovers from its disk and from its peers.
        _, bootstrap2 = start_bootstrap(farm, tmp_path, "bootstrap-again")
        wait_until(
            "the restarted bootstrap server to catch up",
            lambda: (
                status(bootstrap2)["state_digest"] == status(nodes[0])["state_digest"]
                and len(status(bootstrap2)["jobs"]) == 2
            ),
            30,
        )

        # SIGTERM stops a node cleanly; the others see it leave.
        node3 = farm.procs[3]
        node3.terminate()
        assert node3.wait(timeout=20) == 0
        wait_until(
            "node-3 to be seen leaving",
            lambda: any(
                p["name"] == "node-3" and p["state"] == "left" and not p["connected"]
                for p in status(nodes[0])["peers"]
            ),
            20,
        )


def test_submit_errors_are_clear(tmp_path):
    farm, _, _, nodes = start_farm(tmp_path, nodes=1)
    with farm_running(farm, tmp_path):
        bad = tmp_path / "bad.json"
        bad.write_text('{"format": "peerfarm-scene/1", "camera": 5}')
        evil = tmp_path / "evil.zip"
        with zipfile.ZipFile(evil, "w") as z:
            z.writestr("scene.pov", "sphere { 0, 1 }")
            z.writestr("../../outside.txt", "gotcha")
        for args, expected in [
            ([str(bad)], "the scene is not valid"),
            ([str(evil)], "'../../outside.txt'"),
            ([str(tmp_path / "missing.json")], "does not exist"),
            (["builtin:nope"], "nope"),
            (["builtin:demo", "--frames", "9-1"], "before the first"),
        ]:
            cli = peerfarm_cli("submit", *args, "--node", nodes[0], timeout=60)
            assert cli.returncode == 1, cli
            assert expected in cli.stderr and "Traceback" not in cli.stderr, cli.stderr
        cli = peerfarm_cli("status", "--node", "127.0.0.1:1", timeout=60)
        assert cli.returncode == 1 and "cannot reach a peerfarm node" in cli.stderr
        assert status(nodes[0])["jobs"] == []


def test_lan_discovery_without_any_bootstrap_server(tmp_path):
    """Two nodes with zeroconf and no --bootstrap find each other and render together."""
    farm = Farm(tmp_path)
    with farm_running(farm, tmp_path):
        nodes = [
            farm.start(
                f"lan-{i}",
                [
                    "node",
                    "--listen",
                    "127.0.0.1:0",
                    "--data-dir",
                    str(tmp_path / f"lan-{i}"),
                    "--name",
                    f"lan-{i}",
                    "--slots",
                    "1",
                ],
            )[1]
            for i in (1, 2)
        ]
        wait_until(
            "the nodes to find each other",
            lambda: all(any(p["connected"] for p in status(n)["peers"]) for n in nodes),
            30,
        )
        job_id = submit(nodes[0], demo_spec(tmp_path / "out", frames=(1, 8), chunk=1))
        wait_until("the job", lambda: job_of(status(nodes[0]), job_id).get("complete"), 120)
        digests = {status(n)["state_digest"] for n in nodes}
        assert len(digests) == 1
        assert len(list((tmp_path / "out").glob("*.png"))) == 8
