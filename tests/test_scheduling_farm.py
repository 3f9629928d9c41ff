"""Scheduling on real processes on loopback: a renderer that hangs on a live node is
backed up by an idle node, the job completes, and the hung copy is stopped."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest
import trio
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
    wait_for_rendering_mesh,
    wait_until,
)

from peerfarm.cli.demo import Farm

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="finds renderer processes in /proc"
)


def _renderers_under(pid: int) -> list[int]:
    """Built-in renderer processes descending from process ``pid``: the renderers and
    the spare guards waiting for a chunk, not the node's spare factory (a renderer that
    hangs does not freeze the process that forks and reaps the spares)."""
    parents: dict[int, int] = {}
    commands: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            commands[int(entry.name)] = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])

    def descends(p: int) -> bool:
        while p > 1:
            p = parents.get(p, 0)
            if p == pid:
                return True
        return False

    def factory(p: int) -> bool:
        return parents.get(p) == pid and "--spares" in commands[p]

    return [
        p
        for p, cmd in commands.items()
        if "peerfarm.renderers.builtin" in cmd and descends(p) and not factory(p)
    ]


def test_a_hung_renderer_is_backed_up_and_the_job_completes(tmp_path):
    farm, _, _, nodes = start_farm(tmp_path, nodes=3)
    procs = dict(zip(nodes, farm.procs[1:], strict=True))
    out = tmp_path / "out"
    frozen: list[int] = []
    with farm_running(farm, tmp_path):
        wait_for_rendering_mesh(nodes)
        # No --chunk: an adaptive job, claimed in runs sized to each node's speed.
        job_id = submit(nodes[0], demo_spec(out, frames=(1, 48), chunk=None, size=(320, 240)))

        def measured_and_rendering():
            for node in nodes:
                st = status(node)
                running = st["worker"]["rendering"]
                # A render that finished a frame holds a claim that counts: one that lost
                # a claim race at the start is stopped within moments, never backed up.
                if (
                    st["speeds"]
                    and running
                    and running[0]["frames"][1] > running[0]["frames"][0]
                    and running[0]["frames_finished"] >= 1
                ):
                    pids = _renderers_under(procs[node].pid)
                    if pids:
                        return node, running[0], pids
            return None

        # A node that measured its speed renders a run of several frames: freeze its
        # renderer (SIGSTOP), as a renderer that hangs on a live node would.
        node, run, pids = wait_until("a measured node rendering a run", measured_and_rendering, 90)
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
            frozen.append(pid)
        try:
            wait_until(
                "every frame in the output folder",
                lambda: job_of(status(nodes[0]), job_id).get("complete"),
                240,
            )
            frames = sorted(p.name for p in out.iterdir() if p.suffix == ".png")
            assert frames == [f"demo_{i:04d}.png" for i in range(1, 49)]
            text = "\n".join(f.read_text(errors="replace") for f in tmp_path.glob("*.log"))
            first = run["chunk"]
            assert f"copying chunk {first} " in text, text  # an idle node copied the run
            # ...and the hung renderer's node stopped it once the copy's DONE arrived.
            wait_until(
                "the hung render stopped",
                lambda: not any(r["chunk"] == first for r in status(node)["worker"]["rendering"]),
                30,
            )
        finally:
            for pid in frozen:
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass


def test_a_farm_with_one_slow_node_completes_and_the_slow_node_renders_less(capsys):
    """`peerfarm bench mixed --again`, CI-sized: 4 node processes, the paced renderer,
    the last node 5 times slower, the job twice. Correctness only (timings are the
    bench's business)."""
    from peerfarm.cli.main import main

    args = ["--frames", "40", "--frame-seconds", "0.2", "--startup", "0.2", "--slow", "5"]
    assert main(["bench", "mixed", *args, "--again", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    measured = out["measured"]
    assert len(measured) == 4
    # Every frame was rendered, and counted once.
    assert sum(m["frames_rendered"] for m in measured) == 40
    *normal, slow = measured
    assert slow["frames_rendered"] < min(m["frames_rendered"] for m in normal)
    # Measured by the nodes themselves, not told: the slow node knows it is slow.
    assert slow["frame_seconds"] > 2 * max(m["frame_seconds"] for m in normal)
    assert out["makespan"] >= out["lower_bound"] > 0
    # The job again, on a farm that knows its speeds: its parts are weighted by them.
    again = out["again"]
    assert sum(again["frames_rendered"]) == 40
    assert again["frames_rendered"][-1] < min(again["frames_rendered"][:-1])
    assert again["makespan"] > 0


def test_the_paced_renderer_refuses_a_bad_pace(monkeypatch):
    from peerfarm.renderers import paced
    from peerfarm.renderers.base import RendererError

    monkeypatch.setenv(paced.ENV_VAR, "fast")
    with pytest.raises(RendererError, match="SECONDS_PER_FRAME"):
        paced.pace_from_env()
    monkeypatch.setenv(paced.ENV_VAR, "0.5,2")
    assert paced.pace_from_env() == (0.5, 2.0)


HANGING_SCENE = """// A loop that never counts up: POV-Ray parses it forever, on every node.
#declare I = 0;
#while (I < 10)
  #declare J = I;
#end
camera { location <0, 2, -5> look_at 0 }
light_source { <5, 5, -5> rgb 1 }
sphere { 0, 1 pigment { rgb <1, 0, 0> } }
"""


@pytest.mark.skipif(shutil.which("povray") is None, reason="needs POV-Ray")
def test_a_scene_on_which_pov_ray_never_ends_fails_the_job_saying_why(tmp_path, monkeypatch):
    """No node has a frame time of the job, so before, nothing counted as hung: `submit
    --wait` printed "0/1 frames ... rendering" for ever and POV-Ray spun a core on each
    node. A job's first frame now gets the hung limit too (here the least: 10 s); while
    it runs, `submit --wait` says where to look and `peerfarm logs` shows the output."""
    from peerfarm.cli import progress
    from peerfarm.cli.errors import CliError
    from peerfarm.renderers.povray.sandbox import unavailable_reason
    from peerfarm.security.farm_key import resolve_key

    if unavailable_reason() is not None:
        pytest.skip(unavailable_reason())
    scene = tmp_path / "loop.pov"
    scene.write_text(HANGING_SCENE)
    farm = Farm(tmp_path)
    _, bootstrap = start_bootstrap(farm, tmp_path)
    _, node = start_node(farm, tmp_path, 1, bootstrap, "--hung-limit", "0.005")
    with farm_running(farm, tmp_path):
        wait_until("the node renders", lambda: status(node)["worker"] is not None, 30)
        out = tmp_path / "out"
        submitted = peerfarm_cli(
            "submit", "--node", node, "--renderer", "povray", "--output", str(out), str(scene)
        )  # fmt: skip
        assert submitted.returncode == 0, submitted.stderr
        job_id = submitted.stdout.split()[-1]
        # Its output so far, though nothing is rendered nor failed yet (polled: POV-Ray
        # may not have said it yet when the render starts).
        wait_until("rendering", lambda: status(node)["worker"]["rendering"], 30)
        wait_until(
            "POV-Ray's output in the logs",
            lambda: "Parsing" in peerfarm_cli("logs", job_id, "--node", node).stdout,
            30,
            interval=1.0,
        )
        monkeypatch.setattr(progress, "NO_FRAME_SAID_AFTER", 1.0)
        said = io.StringIO()
        with pytest.raises(CliError) as failed:
            trio.run(progress.wait_for_job, node, job_id, resolve_key(None), said)
        assert f"peerfarm logs {job_id} --node {node}" in said.getvalue()
        assert said.getvalue().count("no frame done yet") == 1
        assert "without finishing a frame of this job" in str(failed.value)
        assert "higher --hung-limit" in str(failed.value)
        # Each of the three tries' POV-Ray was stopped: none is left spinning.
        povrays = [
            p
            for p in Path("/proc").iterdir()
            if p.name.isdigit() and _runs_povray_under(p, tmp_path)
        ]
        assert not povrays
        assert not list(out.glob("*.png"))


def _runs_povray_under(proc: Path, folder: Path) -> bool:
    try:
        argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False
    return Path(argv[0]).name == "povray" and str(folder) in " ".join(argv)
