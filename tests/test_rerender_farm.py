"""`peerfarm submit --watch` on a real farm (node processes on loopback, real POV-Ray):
a save submits a new revision, only the changed file travels, the old revision's
chunks stop, and the new frames come back spread over the shot."""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
from farmtools import farm_running, job_of, start_farm, status, wait_for_rendering_mesh, wait_until
from PIL import Image
from rerender_scene import FAST_GREEN, SLOW_RED, scene_files
from test_povray import write_files

from peerfarm.core.chunk_order import spread
from peerfarm.renderers.povray.sandbox import unavailable_reason
from peerfarm.runtime.store import LogFile

if shutil.which("povray") is None or unavailable_reason() is not None:
    if os.environ.get("CI"):
        raise RuntimeError("CI must have a working POV-Ray: .ci/run installs it")
    pytest.skip("POV-Ray is not usable here", allow_module_level=True)


class Lines:
    """The lines a process prints, read in threads as they come."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.out: queue.Queue[str] = queue.Queue()
        self.err: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(proc.stdout, self.out.put), daemon=True),
            threading.Thread(target=self._read, args=(proc.stderr, self.err.append), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def drain(self, timeout: float) -> None:
        """Wait until both streams are read to their end (the process has exited)."""
        for reader in self._readers:
            reader.join(timeout)

    @staticmethod
    def _read(stream, put) -> None:  # noqa: ANN001
        for line in stream:
            put(line.rstrip("\n"))

    def next_out(self, timeout: float) -> str:
        try:
            return self.out.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"nothing printed in {timeout}s; stderr: {self.err}") from None


def rendering(address: str, job_id: str) -> set[int]:
    return {r["chunk"] for r in status(address)["worker"]["rendering"] if r["job_id"] == job_id}


def test_watch_resubmits_a_changed_scene_sending_only_the_changed_file(tmp_path):
    scene = write_files(tmp_path / "ball", scene_files(SLOW_RED))
    out = tmp_path / "out"
    farm, _, _, nodes = start_farm(tmp_path / "farm", nodes=2)
    with farm_running(farm, tmp_path / "farm"):
        wait_for_rendering_mesh(nodes)
        watch = subprocess.Popen(
            [sys.executable, "-m", "peerfarm", "submit", str(scene), "--node", nodes[0]]
            + ["--watch", "--chunk", "1", "--output", str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            lines = Lines(watch)
            first = lines.next_out(60)
            # Both nodes render slow frames of the first revision.
            wait_until(
                "two slow chunks rendering", lambda: all(rendering(n, first) for n in nodes), 60
            )
            wait_until("watching", lambda: any("watching" in e for e in lines.err), 30)
            stale = {n: rendering(n, first) for n in nodes}
            done_before = job_of(status(nodes[0]), first)["frames_done"]

            (scene / "ball.inc").write_bytes(FAST_GREEN)  # the artist saves one small file
            second = lines.next_out(60)
            assert second != first
            # stdout and stderr are read in two threads: the line may come a moment later.
            replaces = f"job {second} replaces job {first}"
            wait_until("the replacement line", lambda: any(replaces in e for e in lines.err), 10)
            changed = next(e for e in lines.err if replaces in e)
            # Only the changed file travelled: its bytes exactly, not the 300 KB texture.
            sent = re.search(
                r"uploaded 1 file \((\d+) bytes\), 3 files already on the node", changed
            )
            assert sent and int(sent[1]) == len(FAST_GREEN), changed

            # The old revision's chunks stop (they would take far longer to finish).
            wait_until(
                "the old revision's renders to stop",
                lambda: not any(rendering(n, first) for n in nodes),
                timeout=15,
                interval=0.05,
            )
            old = job_of(status(nodes[0]), first)
            assert old["state"] == "cancelled" and old["frames_done"] == done_before, (old, stale)

            # Every frame of the new revision comes in, and it is the new scene (green).
            wait_until(
                "the new revision's frames",
                lambda: job_of(status(nodes[0]), second).get("complete"),
                timeout=120,
            )
            for n in range(1, 10):
                pixels = np.asarray(Image.open(out / f"ball_{n:04d}.png").convert("RGB"))
                r, g, _ = pixels[18, 24]
                assert g > 200 and r < 60, f"frame {n} is not from the new revision"

            # The first frames done were spread over the shot: first, last, middle...
            records = LogFile(tmp_path / "farm" / "node-1" / "log.bin").load()
            done = [
                r["payload"]["chunk"]
                for r in records
                if r["type"] == "DONE" and r["payload"]["job_id"] == second
            ]
            # With two 1-slot nodes, the first three done are among the first four claimed.
            assert set(done[:3]) <= set(list(spread(9))[:4]), done

            # Ctrl+C stops watching cleanly.
            watch.send_signal(signal.SIGINT)
            assert watch.wait(timeout=15) == 0
            lines.drain(5)
            assert any(f"stopped watching; job {second}" in e for e in lines.err), lines.err
        finally:
            if watch.poll() is None:
                watch.kill()
                watch.wait()


def test_watch_refuses_what_it_cannot_watch(tmp_path):
    from farmtools import peerfarm_cli

    cli = peerfarm_cli("submit", "builtin:demo", "--node", "127.0.0.1:9", "--watch")
    assert cli.returncode == 1 and "builtin scenes never change" in cli.stderr, cli.stderr
    scene = write_files(tmp_path / "ball", scene_files(FAST_GREEN))
    inside = scene / "frames"
    cli = peerfarm_cli(
        "submit", str(scene), "--node", "127.0.0.1:9", "--watch", "--output", str(inside)
    )
    assert cli.returncode == 1, cli.stderr
    assert f"the output folder {inside} is inside the scene folder {scene}" in cli.stderr
    assert not inside.exists()


def _in_total_order(records):
    return sorted(records, key=lambda r: (r["lamport"], r["origin"], r["seq"]))


def test_preview_frames_come_first_spread_and_small(tmp_path):
    from farmtools import peerfarm_cli
    from rerender_scene import ball_inc

    scene = write_files(tmp_path / "ball", scene_files(ball_inc(300_000, "<1, 0, 0>")))
    out = tmp_path / "out"
    farm, _, _, nodes = start_farm(tmp_path / "farm", nodes=2)
    with farm_running(farm, tmp_path / "farm"):
        wait_for_rendering_mesh(nodes)
        cli = peerfarm_cli(
            "submit", str(scene), "--node", nodes[0], "--preview", "--chunk", "3",
            "--output", str(out), "--wait", timeout=300,
        )  # fmt: skip
        assert cli.returncode == 0, cli.stdout + cli.stderr
        job_id = cli.stdout.splitlines()[0]
        line = next(e for e in cli.stderr.splitlines() if "preview: job" in e)
        preview_id = re.search(r"preview: job (\w+) \(12x9, quick settings", line)[1]
        assert f"frames in {out / 'preview'}" in line
        wait_until(
            "the preview's frames",
            lambda: job_of(status(nodes[0]), preview_id).get("complete"),
            timeout=60,
        )
        for n in range(1, 10):
            assert Image.open(out / "preview" / f"ball_{n:04d}.png").size == (12, 9)
            assert Image.open(out / f"ball_{n:04d}.png").size == (48, 36)
        records = _in_total_order(LogFile(tmp_path / "farm" / "node-1" / "log.bin").load())
        claimed = []
        for r in records:
            key = (r["payload"].get("job_id"), r["payload"].get("chunk"))
            if r["type"] == "CLAIM_CHUNK" and key not in claimed:
                claimed.append(key)
        # Every preview chunk (one frame each) was taken before any chunk of the full job.
        assert [job for job, _ in claimed[:9]] == [preview_id] * 9, claimed
        assert {job for job, _ in claimed[9:]} == {job_id}
        done = [
            r["payload"]["chunk"]
            for r in records
            if r["type"] == "DONE" and r["payload"]["job_id"] == preview_id
        ]
        assert set(done[:3]) <= set(list(spread(9))[:4]), done


def test_watch_with_preview_replaces_both_jobs(tmp_path):
    from rerender_scene import ball_inc

    scene = write_files(tmp_path / "ball", scene_files(ball_inc(0, "<1, 0, 0>")))
    out = tmp_path / "out"
    farm, _, _, nodes = start_farm(tmp_path / "farm", nodes=1)
    with farm_running(farm, tmp_path / "farm"):
        watch = subprocess.Popen(
            [sys.executable, "-m", "peerfarm", "submit", str(scene), "--node", nodes[0]]
            + ["--watch", "--preview", "--output", str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            lines = Lines(watch)
            first = lines.next_out(60)
            wait_until("watching", lambda: any("watching" in e for e in lines.err), 30)
            (scene / "ball.inc").write_bytes(ball_inc(0, "<0, 0, 1>"))
            second = lines.next_out(60)
            previews = [
                re.search(r"preview: job (\w+)", e)[1] for e in lines.err if "preview: job" in e
            ]
            assert len(previews) == 2, lines.err
            jobs = {j["id"]: j for j in status(nodes[0])["jobs"]}
            assert jobs[second]["supersedes"] == first and jobs[second]["order"] == "spread"
            assert jobs[previews[1]]["supersedes"] == previews[0]
            assert jobs[previews[1]]["output"] == str(out / "preview")
            # The second save's upload: the one changed file, sent once for both jobs.
            changed = next(e for e in lines.err if f"job {second} replaces" in e)
            assert "uploaded 1 file (56 bytes)" in changed, changed
            wait_until(
                "both new jobs' frames",
                lambda: all(
                    job_of(status(nodes[0]), j).get("complete") for j in (second, previews[1])
                ),
                timeout=120,
            )
            r, g, b = np.asarray(Image.open(out / "preview" / "ball_0005.png").convert("RGB"))[4, 6]
            assert b > 200 and r < 60  # the preview was rendered again too: blue
        finally:
            watch.send_signal(signal.SIGINT)
            watch.wait(timeout=15)
