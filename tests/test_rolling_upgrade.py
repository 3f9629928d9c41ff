"""Rolling upgrades: two builds of peerfarm in one farm of real processes.

"This release" is the checkout; "the next release" is a copy of the package made
here that speaks one more protocol feature (peer_versions: PEER_JOINED carries
the node's version), with a version number of its own. During a job, the
bootstrap server and every node are upgraded one at a time (stopped, started as
the next release on the same data folder). While both builds are in the farm the
feature stays off (the older build would refuse what it adds); once every member
speaks it, the farm enables it, the nodes announce their versions, the job
completes and every node holds the same state. A node of the older build that
comes back after that is refused at the handshake, with a message saying to upgrade.
"""

from __future__ import annotations

import shutil
import signal
import sys
from pathlib import Path

from farmtools import farm_running, job_of, status, wait_for_rendering_mesh, wait_until

from peerfarm import __version__
from peerfarm.cli.demo import Farm
from peerfarm.core.features import JOB_SUMMARIES, PEER_VERSIONS

ROOT = Path(__file__).resolve().parent.parent
NEXT_VERSION = __version__ + "+next"
FRAMES = 300
LAUNCHER = """\
import runpy, sys
# This script's folder is first on sys.path: its copy of peerfarm is what runs.
runpy.run_module("peerfarm", run_name="__main__", alter_sys=True)
"""


def next_release(where: Path) -> list[str]:
    """A copy of this peerfarm that speaks peer_versions, and how to run it."""
    for package in ("peerfarm", "bootstrap_server"):
        shutil.copytree(
            ROOT / package, where / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    features = where / "peerfarm" / "core" / "features.py"
    text = features.read_text()
    spoken = "SPOKEN: frozenset[str] = frozenset({JOB_SUMMARIES})"
    assert spoken in text
    both = "SPOKEN: frozenset[str] = frozenset({JOB_SUMMARIES, PEER_VERSIONS})"
    features.write_text(text.replace(spoken, both))
    init = where / "peerfarm" / "__init__.py"
    init.write_text(init.read_text().replace(f'"{__version__}"', f'"{NEXT_VERSION}"'))
    (where / "launch.py").write_text(LAUNCHER)
    return [sys.executable, str(where / "launch.py")]


def stop(proc) -> None:
    """A graceful stop, as a service manager does it (chunks in flight finish)."""
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)


def test_a_farm_upgraded_one_machine_at_a_time_during_a_job(tmp_path):
    this_release = [sys.executable, "-m", "peerfarm"]
    upgraded = next_release(tmp_path / "next")
    root = tmp_path / "farm"
    farm = Farm(root)
    with farm_running(farm, root):
        boot_proc, bootstrap = farm.start_bootstrap(root / "b")
        procs, nodes = {}, {}
        for i in (1, 2, 3):
            procs[i], nodes[i] = farm.start_node(f"node-{i}", bootstrap, root / f"node-{i}", 1)
        wait_for_rendering_mesh(list(nodes.values()))
        job_id = submit(nodes[1], tmp_path / "out")

        def done_frames() -> int:
            return job_of(status(nodes[1]), job_id).get("frames_done", 0)

        wait_until("the job to start", lambda: done_frames() > 0, 60)

        # One machine at a time: the bootstrap server, then each node.
        farm.command = upgraded
        stop(boot_proc)
        boot_proc, bootstrap_again = farm.start(
            "bootstrap-next",
            ["bootstrap", "--listen", bootstrap, "--data-dir", str(root / "b"), "--no-zeroconf"]
            + ["--no-config"],
        )
        assert bootstrap_again == bootstrap
        for i in (1, 2, 3):
            stop(procs[i])
            _, address = nodes[i].rsplit(":", 1)
            procs[i], nodes[i] = farm.start(
                f"node-{i}-next",
                ["node", "--listen", nodes[i], "--bootstrap", bootstrap]
                + ["--data-dir", str(root / f"node-{i}"), "--name", f"node-{i}"]
                + ["--slots", "1", "--no-zeroconf", "--no-config"],
            )
            wait_for_rendering_mesh(list(nodes.values()))
            st = status(nodes[i])
            if i < 3:  # a member of this release is still there: the feature stays off
                assert st["features"] == [JOB_SUMMARIES], st  # both builds speak it
                assert st["speaks"] == [JOB_SUMMARIES, PEER_VERSIONS], st
                assert all(p["version"] == "" for p in st["peers"])
        rendered_during_upgrade = done_frames()
        assert 0 < rendered_during_upgrade < FRAMES, "the job did not run across the upgrade"

        # Every member speaks it now: the farm enables it, nodes announce their version.
        everyone = [*nodes.values(), bootstrap]

        def enabled_everywhere() -> bool:
            for address in everyone:
                st = status(address)
                if st["features"] != [JOB_SUMMARIES, PEER_VERSIONS]:
                    return False
                if any(p["version"] != NEXT_VERSION for p in st["peers"] if p["state"] == "up"):
                    return False
            return True

        wait_until("the farm to enable peer_versions", enabled_everywhere, 60)

        # The job completes, every frame collected, and every node holds the same state.
        wait_until("the job collected", lambda: job_of(status(nodes[1]), job_id)["complete"], 300)
        assert len(list((tmp_path / "out").glob("demo_*.png"))) == FRAMES

        def same_state() -> bool:
            return len({status(a)["state_digest"] for a in everyone}) == 1

        wait_until("equal state digests", same_state, 30)

        # A machine still on this release that comes back now is refused, and told why.
        farm.command = this_release
        old_proc, _ = farm.start_node("node-old", bootstrap, root / "node-old", 1)
        log = root / "node-old.log"
        wait_until(
            "the old node to be refused",
            lambda: (
                "protocol features your peerfarm does not speak (peer_versions)"
                in log.read_text(errors="replace")
            ),
            60,
        )
        assert all(p["name"] != "node-old" or not p["connected"] for p in status(nodes[1])["peers"])
        stop(old_proc)
        assert same_state()


def submit(node: str, out: Path) -> str:
    """The demo scene, animated over FRAMES frames: a job that outlasts the upgrade."""
    import json

    from farmtools import peerfarm_cli

    from peerfarm.renderers.builtin import builtin_scene_text

    scene = json.loads(builtin_scene_text("demo"))
    scene["animation"]["final_frame"] = FRAMES
    path = out.parent / "demo.json"
    path.write_text(json.dumps(scene))
    done = peerfarm_cli(
        "submit",
        str(path),
        "--node",
        node,
        "--frames",
        f"1-{FRAMES}",
        "--chunk",
        "1",
        "--size",
        "160x120",
        "--output",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()[0]
