"""`peerfarm bench ...` as a user runs it: real processes, JSON out. Only the facts
are asserted (nothing died, the mesh formed, digests agree), never the timings."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def test_nodes_started_at_once_form_a_mesh_and_render_with_equal_digests():
    """The simultaneous-start case (a lab booting at 8 am) at a size CI can hold."""
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "peerfarm",
            "bench",
            "scale",
            "--nodes",
            "6",
            "--idle",
            "1",
            "--frames",
            "12",
            "--mesh-timeout",
            "120",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["nodes"] == 6
    assert result["mesh_formed_s"] is not None, result
    assert result["mesh_formed_after_all_listening_s"] <= result["mesh_formed_s"], result
    assert result["processes_died_before_stop"] == [] and result["tracebacks"] == 0, result
    assert result["job"] == {**result["job"], "frames": 12, "state": "done"}
    assert result["digests_equal"] is True
    assert result["idle_cpu_percent_per_node"]["max"] >= 0


def test_a_bench_with_bad_arguments_says_what_to_fix():
    run = subprocess.run(
        [sys.executable, "-m", "peerfarm", "bench", "scale", "--nodes", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1
    assert "--nodes must be at least 2" in run.stderr and "Traceback" not in run.stderr


def test_dispatch_hands_out_every_frame_and_digests_agree():
    """`peerfarm bench dispatch` at a size CI can hold: every one-frame chunk of the
    null renderer done everywhere, collected, equal digests; the rate is reported, and
    the claims it took."""
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "peerfarm",
            "bench",
            "dispatch",
            "--nodes",
            "2",
            "--frames",
            "300",
            "--slots",
            "2",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["frames"] == 300 and result["digests_equal"] is True
    assert result["frames_per_s"] > 0 and result["seconds_to_all_collected"] > 0
    # Nodes measured their speed and claimed runs of many frames, not probe runs of two.
    assert 0 < result["claim_actions"] < 300 / 3, result
    # The nodes' CPU over the dispatch, where /proc tells it (Linux).
    if Path("/proc/self/stat").exists():
        assert result["node_cpu_seconds"] > 0, result
        assert result["frames_per_cpu_second"] == round(300 / result["node_cpu_seconds"], 1)


def test_the_null_renderer_is_not_offered_outside_the_bench(monkeypatch):
    from peerfarm.renderers import null
    from peerfarm.renderers.registry import renderer_plugins

    monkeypatch.delenv(null.ENV_VAR, raising=False)
    assert "null" not in renderer_plugins()
    monkeypatch.setenv(null.ENV_VAR, "1")
    assert "null" in renderer_plugins()


def test_join_reaches_an_equal_digest_through_the_snapshot():
    """`peerfarm bench join` at a size CI can hold: the farm compacts the history, the
    joiner takes the snapshot (it holds the folded actions) and reaches an equal digest;
    the log file keeps the tail only."""
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "peerfarm",
            "bench",
            "join",
            "--actions",
            "3000",
            "--jobs",
            "3",
            "--compact-after",
            "500",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    # joined, enabled, left + 3 x (NEW_JOB + 2 x 498 + JOB_COLLECTED)
    assert result["actions"] == 2997 and result["jobs"] == 3
    assert result["joiner_log_compacted"] >= 2997  # the snapshot, not the actions
    assert result["join_to_equal_digest_s"] > 0
    assert result["log_bytes_after"] < result["log_bytes_before"] / 10
    # The collected jobs are summarised: not their 1,494 chunk records (about 220 KB).
    assert 0 < result["snapshot_bytes"] < 50_000


def test_overhead_renders_a_povray_animation_both_ways_and_prints_the_ratio():
    """`peerfarm bench overhead` at a size CI can hold: one farm run and one direct run
    of POV-Ray's own example animation; every frame rendered once, a ratio printed."""
    from peerfarm.cli.bench.overhead import default_scene
    from peerfarm.renderers.povray.sandbox import unavailable_reason

    if shutil.which("povray") is None or unavailable_reason() is not None:
        pytest.skip("POV-Ray is not usable here")
    if default_scene() is None:
        pytest.skip("POV-Ray's example scenes are not installed (povray-examples)")
    command = [sys.executable, "-m", "peerfarm", "bench", "overhead", "--frames", "3"]
    command += ["--chunk", "2", "--slots", "2", "--runs", "1", "--size", "64x48", "--json"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["frames"] == 3 and result["size"] == "64x48" and len(result["runs"]) == 1
    pair = result["runs"][0]
    assert pair["frame_renders"] == 3, result
    assert pair["direct_s"] > 0 and pair["farm_s"] > 0
    assert result["ratio"] == pair["ratio"]
    # Both times are rounded to the ms in the JSON, the ratio is of the unrounded ones.
    assert abs(pair["ratio"] - pair["farm_s"] / pair["direct_s"]) < 0.01
    assert pair["farm_complete_s"] >= pair["farm_s"] >= pair["farm_submitted_s"] > 0
    spread = result["ratio_spread"]
    assert spread["min"] <= spread["q1"] <= result["ratio"] <= spread["q3"] <= spread["max"]
    # Where each side's slot time without a povray lies (Linux: sampled in /proc); the
    # direct run is timed to its last frame, before the last povray's exit.
    if pair.get("direct_idle_split") is not None:
        assert set(pair["direct_idle_split"]) == {"start", "between", "end", "exit"}
        assert pair["direct_idle_split"]["exit"] >= 0
        assert set(pair["farm_idle_split"]) == {"start", "between", "end"}
        assert set(result["idle_slot_s_split"]["farm"]) == {"start", "end", "between_per_gap"}
    # The same povray work both ways: the farm's renderer CPU counts every povray, also
    # those below the spare factory (not a child of the node's own reaping).
    if pair.get("direct_cpu_s") and "farm_renderers_cpu_s" in pair:
        assert pair["farm_renderers_cpu_s"] >= 0.5 * pair["direct_cpu_s"], pair


def test_overhead_without_the_scene_says_what_to_give(tmp_path):
    missing = tmp_path / "nothing.ini"
    run = subprocess.run(
        [sys.executable, "-m", "peerfarm", "bench", "overhead", "--scene", str(missing)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    assert f"--scene {missing}: no such file" in run.stderr or "POV-Ray is not" in run.stderr


def test_memory_reports_the_nodes_resident_memory_and_the_million_frame_limit():
    """`peerfarm bench memory` at a size CI can hold: a node renders a job of one-frame
    chunks to its end and its resident memory is reported; a 1,000,000-frame job is
    refused as one-frame chunks (with the way out) and accepted as runs of frames."""
    command = [sys.executable, "-m", "peerfarm", "bench", "memory", "--frames", "200"]
    command += ["--million-seconds", "1", "--json"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["frames"] == 200 and result["log_length"] >= 400
    assert 0 < result["rss_mb_idle_before"] <= result["rss_mb_peak"]
    assert result["node_alive_at_end"] is True
    million = result["million"]
    assert million["chunk_1"]["refused"] is True
    assert "a job may have at most 100,000 chunks" in million["chunk_1"]["message"]
    assert "--chunk 10 or more" in million["chunk_1"]["message"]
    adaptive = million["adaptive"]
    assert adaptive["accepted"] is True and adaptive["chunks"] == million["max_chunks_per_job"]
    assert adaptive["state_after_cancel"] == "cancelled"
