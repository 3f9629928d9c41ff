"""The job's video: ffmpeg found or not, the submit checks, a real encode checked
with ffprobe."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
import trio
from factories import demo_spec
from PIL import Image

from peerfarm.job_request import SubmitError
from peerfarm.jobspec import build_new_job
from peerfarm.renderers.registry import renderer_plugins
from peerfarm.runtime import video
from peerfarm.runtime.node import Node, NodeConfig

HAVE_FFMPEG = shutil.which("ffmpeg") is not None and shutil.which("ffprobe") is not None
needs_ffmpeg = pytest.mark.skipif(
    not HAVE_FFMPEG and not os.environ.get("CI"),  # CI installs it (.ci/run): fail there
    reason="ffmpeg is not installed (Debian/Ubuntu: apt-get install ffmpeg)",
)


def probe(path) -> dict:
    """What ffprobe says about the video stream, frames counted by decoding them."""
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
         "-show_entries", "stream=codec_name,pix_fmt,width,height,r_frame_rate,nb_read_frames",
         "-of", "json", str(path)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return json.loads(result.stdout)["streams"][0]


def without_ffmpeg(monkeypatch, tmp_path) -> None:
    """A PATH on which there is no ffmpeg, as on a machine without the package."""
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert shutil.which("ffmpeg") is None


def test_no_ffmpeg_names_the_package(monkeypatch, tmp_path):
    without_ffmpeg(monkeypatch, tmp_path)
    problem = video.ffmpeg_problem()
    assert "ffmpeg is not installed" in problem and "apt-get install ffmpeg" in problem


def test_submit_checks_video_and_fps(tmp_path):
    plugins = renderer_plugins()
    spec = demo_spec(tmp_path / "out")
    payload = build_new_job(spec.replace(video=True, fps=12), "j1", plugins, {"builtin"})
    assert (payload["video"], payload["fps"]) == (True, 12)
    assert build_new_job(spec, "j2", plugins, {"builtin"})["fps"] == 24
    with pytest.raises(SubmitError, match="--fps must be a whole number from 1 to 240"):
        build_new_job(spec.replace(fps=0.5), "j3", plugins, {"builtin"})
    with pytest.raises(SubmitError, match="--video: this node encodes .* ffmpeg is missing"):
        build_new_job(spec.replace(video=True), "j4", plugins, {"builtin"}, "ffmpeg is missing")
    povray = spec.replace(
        files={"a.pov": b""}, main="a.pov", renderer="povray", format="exr", scene="", video=True
    )
    with pytest.raises(SubmitError, match="--video with --format exr: exr frames hold linear"):
        build_new_job(povray, "j5", plugins, {"builtin", "povray"})


def test_a_node_without_ffmpeg_refuses_video_at_submit(monkeypatch, tmp_path):
    without_ffmpeg(monkeypatch, tmp_path)

    async def main():
        node = Node(
            NodeConfig(listen=("127.0.0.1", 0), data_dir=tmp_path / "n", slots=0, zeroconf=False)
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            try:
                with pytest.raises(SubmitError) as refused:
                    await node.submit(demo_spec(tmp_path / "out").replace(video=True))
                jobs = dict(node.state.jobs)
            finally:
                node.request_stop()
        return str(refused.value), jobs

    message, jobs = trio.run(main)
    assert "--video" in message and "apt-get install ffmpeg" in message
    assert jobs == {}  # nothing submitted


@needs_ffmpeg
def test_encode_video_with_odd_size_and_negative_frames(tmp_path):
    frames = []
    for i, number in enumerate(range(-2, 5)):  # 7 frames, named -002 ... 0004
        path = tmp_path / f"f_{number:04d}.png"
        Image.new("RGB", (33, 25), (30 * i, 100, 200 - 20 * i)).save(path)
        frames.append(path)
    output = tmp_path / "f.mp4"
    trio.run(video.encode_video, frames, "png", 10, output)
    stream = probe(output)
    assert stream["codec_name"] == "h264" and stream["pix_fmt"] == "yuv420p"
    assert (stream["width"], stream["height"]) == (34, 26)  # padded to even sizes
    assert (stream["nb_read_frames"], stream["r_frame_rate"]) == ("7", "10/1")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@needs_ffmpeg
def test_ffmpeg_failure_is_reported_and_leaves_no_file(tmp_path):
    bad = tmp_path / "f_0001.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(video.VideoError, match="ffmpeg failed with exit status"):
        trio.run(video.encode_video, [bad], "png", 24, tmp_path / "f.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f_0001.png"]
