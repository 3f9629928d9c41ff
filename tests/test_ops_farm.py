"""Operations against real node processes: a node started with a relative --data-dir
renders POV-Ray chunks (its data folder resolved once, at start), its metrics
endpoint parsed by Prometheus' own text parser, JSON log lines, and
`peerfarm status --watch`."""

from __future__ import annotations

import json
import re
import shutil
import socket
import urllib.request
from pathlib import Path

import pytest
from factories import demo_spec
from farmtools import farm_running, job_of, peerfarm_cli, status, submit, wait_until
from prometheus_client.parser import text_string_to_metric_families
from test_povray import ball_files, write_files

from peerfarm.cli.demo import Farm
from peerfarm.renderers.povray.sandbox import unavailable_reason

POVRAY = shutil.which("povray") is not None and unavailable_reason() is None
INI = "Input_File_Name=scene.pov\nWidth=48\nHeight=32\nInitial_Frame=1\nFinal_Frame=4\n"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A bootstrap server and two nodes; node-1 runs in its own folder with a relative
    --data-dir, metrics on a free loopback port and JSON logs."""
    root = tmp_path_factory.mktemp("ops-farm")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)  # node processes inherit it: "peerfarm-node" means root/peerfarm-node
        farm = Farm(root / "logs")
        with farm_running(farm, root / "logs"):
            _, bootstrap = farm.start_bootstrap(root / "bootstrap")
            _, first = farm.start_node(
                "node-1",
                bootstrap,
                Path("peerfarm-node"),
                1,
                "--metrics",
                "127.0.0.1:0",
                "--log-json",
            )
            _, second = farm.start_node("node-2", bootstrap, root / "node-2", 1)
            yield root, farm, [first, second]


def metrics_url(root: Path) -> str:
    """Where node-1 serves metrics, as its log says."""
    log = root / "logs" / "node-1.log"
    return wait_until(
        "the metrics address in the log",
        lambda: next(iter(re.findall(r"http://[\d.:]+/metrics", log.read_text())), None),
        10,
    )


def scrape(url: str) -> dict[str, list]:
    with urllib.request.urlopen(url, timeout=10) as reply:
        assert reply.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        body = reply.read().decode()
    return {f.name: f.samples for f in text_string_to_metric_families(body)}


def value(families: dict, name: str, **labels: str) -> float:
    """The sum of a family's samples with these labels (counters: their _total)."""
    samples = [
        s.value
        for s in families[name]
        if s.name in (name, f"{name}_total")
        if all(s.labels.get(k) == v for k, v in labels.items())
    ]
    return sum(samples)


@pytest.mark.skipif(not POVRAY, reason="POV-Ray is not usable here (CI installs it)")
def test_relative_data_dir_renders_povray_chunks(lab, tmp_path):
    root, farm, nodes = lab
    scene = write_files(tmp_path / "ball", ball_files(INI))
    out = tmp_path / "out"
    # Submitted to node-1, chunk 1 frame: both nodes render, node-1 in its relative folder.
    cli = peerfarm_cli(
        "submit",
        str(scene),
        "--node",
        nodes[0],
        "--chunk",
        "1",
        "--output",
        str(out),
        "--wait",
        timeout=300,
    )
    assert cli.returncode == 0, cli.stdout + cli.stderr
    job_id = cli.stdout.splitlines()[0]
    assert sorted(p.name for p in out.glob("*.png")) == [f"ball_{n:04d}.png" for n in range(1, 5)]
    data_dir = root / "peerfarm-node"  # resolved against the node's folder, once
    assert (data_dir / "node.json").exists()
    assert (data_dir / "work" / job_id / "scene.pov").exists()
    assert job_of(status(nodes[0]), job_id)["state"] == "done"
    # node-1 rendered chunks itself, and none failed there: a job that completes because
    # node-2 took over node-1's failed chunks would hide a data folder that is not absolute.
    assert list((data_dir / "frames" / job_id).glob("ball_*.png"))
    families = scrape(metrics_url(root))
    assert value(families, "peerfarm_chunks_failed") == 0
    assert value(families, "peerfarm_renderer_seconds", renderer="povray") > 0


def test_metrics_of_a_running_node_parse_as_prometheus_text(lab, tmp_path):
    root, farm, nodes = lab
    job_id = submit(nodes[0], demo_spec(tmp_path / "out", frames=(1, 8), chunk=2))
    wait_until("the job collected", lambda: job_of(status(nodes[0]), job_id).get("complete"), 120)
    wait_until(
        "both nodes linked",
        lambda: all(p["connected"] for p in status(nodes[0])["peers"] if p["renders"]),
        30,
    )
    # Retention on demand: the frames node-1 rendered are in their grace (1 hour).
    gc = peerfarm_cli("gc", "--node", nodes[0], "--json")
    assert gc.returncode == 0, gc.stderr
    report = json.loads(gc.stdout)
    families = scrape(metrics_url(root))
    st = status(nodes[0])
    assert value(families, "peerfarm_retention_runs") == 1
    assert value(families, "peerfarm_retention_grace_bytes") == report["grace_bytes"] > 0
    assert value(families, "peerfarm_retention_freed_bytes", kind="frames") == 0
    info = families["peerfarm_node_info"][0]  # the text format has no info type: a gauge
    assert info.labels["node_id"] == st["node_id"] and info.labels["role"] == "node"
    # Counts from the replicated log: what node-1 did, and the farm's actions.
    claimed = value(families, "peerfarm_chunks_claimed")
    rendered = value(families, "peerfarm_chunks_rendered")
    assert claimed >= rendered >= 1
    assert value(families, "peerfarm_frames_rendered") >= 1
    assert value(families, "peerfarm_farm_actions", type="NEW_JOB") >= 1
    assert value(families, "peerfarm_farm_actions", type="DONE") >= 4
    assert value(families, "peerfarm_chunks_failed") == 0
    assert value(families, "peerfarm_log_actions") == st["log_length"]
    assert value(families, "peerfarm_log_bytes") > 0
    # Links: the bootstrap server and node-2 are up and linked.
    assert value(families, "peerfarm_peers", state="up") == 2
    assert value(families, "peerfarm_links") == 2
    linked = {s.labels["peer_name"]: s.value for s in families["peerfarm_peer_linked"]}
    assert linked == {"bootstrap": 1.0, "node-2": 1.0}
    # From the runtime's counters: renderer seconds and bytes moved.
    assert value(families, "peerfarm_renderer_seconds", renderer="builtin") > 0
    assert value(families, "peerfarm_link_sent_bytes") > 1000
    assert value(families, "peerfarm_link_received_bytes") > 1000
    with pytest.raises(urllib.error.HTTPError, match="404"):
        urllib.request.urlopen(metrics_url(root).replace("/metrics", "/other"), timeout=10)


def test_metrics_listen_on_loopback_by_default(lab):
    root, _, _ = lab
    assert metrics_url(root).startswith("http://127.0.0.1:")


def test_logs_are_json_lines_on_request(lab):
    root, _, _ = lab
    lines = [
        json.loads(line)
        for line in (root / "logs" / "node-1.log").read_text().splitlines()
        if line.strip()
    ]
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    assert any("listening on" in entry["message"] for entry in lines)


def test_status_watch_draws_live_views(lab, tmp_path):
    root, _, nodes = lab
    submit(nodes[0], demo_spec(tmp_path / "watched", frames=(1, 2), chunk=1))
    cli = peerfarm_cli("status", "--node", nodes[0], "--watch", "--interval", "0.2", "--count", "3")
    assert cli.returncode == 0, cli.stderr
    views = cli.stdout.split("\n\n\n")  # not a terminal: each view printed after the last
    assert cli.stdout.count("every 0.2s, Ctrl+C quits") == 3
    assert "node-2" in cli.stdout and "bootstrap" in cli.stdout
    assert "demo" in views[-1] and "JOB" in views[-1]


def test_a_busy_port_is_one_clear_line(tmp_path):
    """A node (or its metrics) that cannot listen says so, and what to do: no traceback."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        for where in (["--listen", f"127.0.0.1:{port}"], ["--metrics", str(port)]):
            cli = peerfarm_cli(
                "node", "--no-config", "--no-zeroconf", "--data-dir", str(tmp_path / "n"), *where
            )
            assert cli.returncode == 1, cli.stderr
            assert "peerfarm: error: cannot listen" in cli.stderr
            assert "peerfarm doctor" in cli.stderr and "Traceback" not in cli.stderr
