"""Retention on a farm of real node processes: frames go from the nodes that rendered
them once the submitter holds them (JOB_COLLECTED) and the grace is over; what a
finished job left goes by age; a paused job and a failed job keep their frames,
work folders, logs and scene blobs, and the paused job finishes after `peerfarm gc`
ran; a dry run deletes nothing."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path

import pytest
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
from test_povray import ball_files, write_files

from peerfarm.cli.demo import Farm
from peerfarm.renderers.povray.sandbox import unavailable_reason

if shutil.which("povray") is None or unavailable_reason() is not None:
    if os.environ.get("CI"):
        raise RuntimeError("CI must have a working POV-Ray: .ci/run installs it")
    pytest.skip("POV-Ray is not usable here", allow_module_level=True)

INI = (
    "Input_File_Name=scene.pov\nWidth=32\nHeight=24\n"
    "Initial_Frame=1\nFinal_Frame=40\nInitial_Clock=0\nFinal_Clock=1\n"
)
BROKEN = b"#declare = oops\n"  # a scene POV-Ray cannot parse
MONTH = 30 * 24 * 3600


def cli_ok(*args: str, timeout: float = 120) -> str:
    done = peerfarm_cli(*args, timeout=timeout)
    assert done.returncode == 0, f"peerfarm {' '.join(args)}:\n{done.stdout}{done.stderr}"
    return done.stdout


def submit(node: str, scene: Path, out: Path, *extra: str) -> str:
    return cli_ok("submit", str(scene), "--node", node, "--output", str(out), *extra).split()[0]


def held(data: Path) -> set[tuple[str, str]]:
    """(kind, job or blob) of what a data folder holds."""
    found = set()
    for kind in ("frames", "work", "logs"):
        if (data / kind).is_dir():
            found |= {(kind, p.name) for p in (data / kind).iterdir()}
    if (data / "blobs").is_dir():
        found |= {
            ("blobs", p.name)
            for p in (data / "blobs").glob("*/*")
            if p.parent.name not in ("tmp", "partial")
        }
    return found


def age_everything(data: Path, seconds: float) -> None:
    """Files as they would be after ``seconds`` without use."""
    stamp = time.time() - seconds
    for top, dirs, files in os.walk(data):
        for name in [*dirs, *files]:
            os.utime(os.path.join(top, name), (stamp, stamp), follow_symlinks=False)


def test_retention_on_a_farm(tmp_path):
    farm = Farm(tmp_path / "farm")
    root = tmp_path / "farm"
    with farm_running(farm, root):
        _, bootstrap = start_bootstrap(farm, root)
        # node-1 submits and collects gc only on demand; node-2 runs retention every
        # second by itself. Both with a 1 s grace.
        n1 = start_node(
            farm, root, 1, bootstrap, "--retention-grace", "1s", "--retention-interval", "0"
        )[1]
        n2 = start_node(
            farm, root, 2, bootstrap, "--retention-grace", "1s", "--retention-interval", "1s"
        )[1]
        data1, data2 = root / "node-1", root / "node-2"
        wait_for_rendering_mesh([n1, n2])

        # A: done and collected. Its frames go from node-2 once the grace is over.
        done_job = submit(n1, "builtin:demo", tmp_path / "out-a", "--frames", "1-6", "--chunk", "1")
        wait_until("job A collected", lambda: job_of(status(n1), done_job).get("complete"), 120)
        outputs = sorted(p.name for p in (tmp_path / "out-a").glob("demo_*.png"))
        assert len(outputs) == 6
        assert ("work", done_job) in held(data2), "node-2 rendered none of job A"
        wait_until(
            "node-2 to delete job A's frames", lambda: ("frames", done_job) not in held(data2), 30
        )
        assert ("frames", done_job) in held(data1)  # node-1 runs retention only on demand
        # The user's outputs are never touched.
        assert sorted(p.name for p in (tmp_path / "out-a").glob("demo_*.png")) == outputs

        # P: paused after a few frames. F: failed (a scene POV-Ray cannot parse).
        scene = write_files(tmp_path / "ball", ball_files(INI))
        paused = submit(n1, scene, tmp_path / "out-p", "--chunk", "1")
        wait_until("job P rendering", lambda: job_of(status(n1), paused)["frames_done"] >= 2, 120)
        cli_ok("pause", paused, "--node", n1)
        broken = write_files(tmp_path / "broken", {"scene.pov": BROKEN})
        failed = submit(n1, broken, tmp_path / "out-f")
        wait_until("job F failed", lambda: job_of(status(n1), failed)["state"] == "failed", 120)
        # C: cancelled at once; its INI is a blob no live job names.
        other = write_files(tmp_path / "other", ball_files(INI.replace("Width=32", "Width=30")))
        cancelled = submit(n1, other, tmp_path / "out-c", "--chunk", "1")
        cli_ok("cancel", cancelled, "--node", n1)

        def settled() -> bool:  # nothing in flight any more (P's, C's stopped ones)
            return not any(status(n)["worker"]["rendering"] for n in (n1, n2))

        wait_until("the renders in flight to end", settled, 60)
        time.sleep(0.5)  # a stopped renderer's last words reach its log
        live = {paused, failed} | {
            hashlib.sha256(data).hexdigest() for data in [*ball_files(INI).values(), BROKEN]
        }  # the jobs, and the blobs of their scene files
        kept = {d: {x for x in held(d) if x[1] in live} for d in (data1, data2)}
        assert ("frames", paused) in kept[data1] | kept[data2]
        assert ("work", failed) in kept[data1] | kept[data2]

        # A month later, nothing used: what finished jobs left goes, live jobs keep all.
        for data in (data1, data2):
            age_everything(data, MONTH)
        before = held(data1)
        dry = cli_ok("gc", "--node", n1, "--dry-run")
        assert dry.startswith("would free "), dry
        assert held(data1) == before  # a dry run deletes nothing
        assert f"work   {done_job}" in dry and "its job is finished" in dry, dry
        assert "no live job uses it" in dry, dry
        ran = cli_ok("gc", "--node", n1)
        assert ran.startswith("freed "), ran
        # What the dry run said would go (the reasons' "ago" may have moved on).
        assert [x.split()[:2] for x in ran.splitlines()[1:-1]] == [
            x.split()[:2] for x in dry.splitlines()[1:-1]
        ]
        left1 = held(data1)
        assert {x for x in left1 if x[1] in (done_job, cancelled)} == set()
        blobs_gone = {x for x in before - left1 if x[0] == "blobs"}
        assert len(blobs_gone) == 1  # C's INI: P's and F's scene files stay
        wait_until(
            "node-2 to delete job A's work folder",
            lambda: ("work", done_job) not in held(data2),
            30,
        )
        for data in (data1, data2):
            assert kept[data] <= held(data), data

        # Nothing P needs was deleted: it resumes and finishes, every frame collected.
        cli_ok("resume", paused, "--node", n1)
        wait_until("job P collected", lambda: job_of(status(n1), paused).get("complete"), 180)
        assert len(list((tmp_path / "out-p").glob("ball_*.png"))) == 40
        again = cli_ok("gc", "--node", n2, "--json")
        assert '"errors": []' in again
