"""Tiles: the geometry, the job model and reducers, the submit checks, stitching."""

from __future__ import annotations

import io

import numpy as np
import pytest
from factories import A, B, C, act, builtin_request, new_job_payload
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from peerfarm.core.actions import InvalidAction, validate_action
from peerfarm.core.log import ActionLog
from peerfarm.core.tiles import MAX_TILES, TileError, max_tiles, tile_box, tile_boxes, tile_grid
from peerfarm.job_request import SubmitError
from peerfarm.jobspec import build_new_job
from peerfarm.renderers.base import Renderer
from peerfarm.renderers.povray.tiling import tiling_problem, untileable_features
from peerfarm.renderers.registry import renderer_plugins
from peerfarm.runtime.stitch import StitchError, stitch_tiles

# --- geometry ---


@given(
    width=st.integers(1, 700),
    height=st.integers(1, 500),
    tiles=st.integers(1, 40),
    align=st.sampled_from([1, 8, 32]),
)
def test_tiles_cover_every_pixel_once_on_the_block_grid(width, height, tiles, align):
    try:
        boxes = tile_boxes(width, height, tiles, align)
    except TileError:
        # Refused only when no grid of that many tiles fits the image's blocks.
        across, down = -(-width // align), -(-height // align)
        assert not any(
            tiles % c == 0 and c <= across and tiles // c <= down for c in range(1, tiles + 1)
        )
        return
    cover = np.zeros((height, width), dtype=int)
    for box in boxes:
        assert box.width > 0 and box.height > 0
        for edge, size in ((box.left, width), (box.right, width)):
            assert edge % align == 0 or edge == size
        for edge, size in ((box.top, height), (box.bottom, height)):
            assert edge % align == 0 or edge == size
        cover[box.top : box.bottom, box.left : box.right] += 1
    assert (cover == 1).all()


def test_grid_is_closest_to_square_and_row_major():
    assert tile_grid(320, 240, 4) == (2, 2)
    assert tile_grid(320, 240, 6) == (3, 2)  # 107x120 beats 160x80
    assert tile_grid(100, 1000, 5) == (1, 5)
    assert tile_box(320, 240, 4, 1) == (160, 0, 320, 120)
    assert tile_box(320, 240, 4, 2) == (0, 120, 160, 240)
    # POV-Ray's 32-pixel blocks: 100 = 32+32+32+4 pixels -> edges at 0, 64, 100
    assert [tuple(b) for b in tile_boxes(100, 75, 4, 32)] == [
        (0, 0, 64, 32),
        (64, 0, 100, 32),
        (0, 32, 64, 75),
        (64, 32, 100, 75),
    ]


def test_too_many_tiles_is_refused_with_the_limit():
    with pytest.raises(TileError, match="at most 6 tiles"):
        tile_grid(64, 96, 7, 32)  # 2 x 3 blocks
    assert max_tiles(64, 96, 32) == 6
    with pytest.raises(TileError, match="tiles must be"):
        tile_grid(320, 240, MAX_TILES + 1)
    with pytest.raises(TileError, match="does not exist"):
        tile_box(320, 240, 4, 4)


# --- the job model and reducers ---


def tiled_job(frames=(1, 2), tiles=4, job_id="job1"):
    payload = {**new_job_payload(job_id, frames=frames, chunk=1), "tiles": tiles}
    return act("NEW_JOB", payload, A, 1, 1)


def fold(*actions):
    log = ActionLog()
    for action in actions:
        assert log.add(action), action
    return log.state


def test_tiled_job_has_one_chunk_per_tile_of_each_frame():
    job = fold(tiled_job(frames=(5, 7), tiles=4)).jobs["job1"]
    assert (job.chunk_total, job.frames_total) == (12, 3)
    assert [(job.frames_of(i).start, job.tile_of(i)) for i in (0, 3, 4, 11)] == [
        (5, 0),
        (5, 3),
        (6, 0),
        (7, 3),
    ]
    assert list(job.chunks_of_frame(6)) == [4, 5, 6, 7]
    assert job.tile_file_name(6, 2) == "demo_0006.tile2.png"


def test_a_frame_is_done_when_its_last_tile_is_and_lost_tiles_undo_it():
    actions = [tiled_job(frames=(1, 2), tiles=2)]
    seq = {B: 0, C: 0}
    lamport = 1

    def emit(kind, origin, payload):
        nonlocal lamport
        seq[origin] += 1
        lamport += 1
        actions.append(act(kind, {"job_id": "job1", **payload}, origin, seq[origin], lamport))
        return seq[origin]

    claims = {}
    for chunk, origin in ((0, B), (1, C), (2, B)):
        claims[chunk] = emit("CLAIM_CHUNK", origin, {"chunk": chunk})
        emit("DONE", origin, {"chunk": chunk, "claim_seq": claims[chunk]})
    job = fold(*actions).jobs["job1"]
    # frame 1: both tiles done; frame 2: one of two
    assert (job.chunks_done, job.frames_done, job.state) == (3, 1, "active")
    assert job.frame_complete(1) and not job.frame_complete(2)
    emit("CHUNK_LOST", C, {"chunk": 1, "holder": C})  # tile 1 of frame 1 is gone
    job = fold(*actions).jobs["job1"]
    assert (job.chunks_done, job.frames_done) == (2, 0)
    claims[1] = emit("CLAIM_CHUNK", B, {"chunk": 1})
    emit("DONE", B, {"chunk": 1, "claim_seq": claims[1]})
    claims[3] = emit("CLAIM_CHUNK", C, {"chunk": 3})
    emit("DONE", C, {"chunk": 3, "claim_seq": claims[3]})
    job = fold(*actions).jobs["job1"]
    assert (job.chunks_done, job.frames_done, job.state) == (4, 2, "done")
    assert job.frame_renders == 5  # tile renders started


def test_failed_tile_names_the_tile():
    actions = [tiled_job(frames=(3, 3), tiles=2)]
    # Only B renders: after three failures there the tile fails the job.
    joined = {"name": "b", "address": "h:1", "slots": 1, "renders": True}
    actions.append(act("PEER_JOINED", {**joined, "renderers": {"builtin": "0"}}, B, 1, 2))
    seq, lamport = 1, 2
    for _ in range(3):
        seq, lamport = seq + 1, lamport + 1
        actions.append(act("CLAIM_CHUNK", {"job_id": "job1", "chunk": 1}, B, seq, lamport))
        claim_seq = seq
        seq, lamport = seq + 1, lamport + 1
        failed = {"job_id": "job1", "chunk": 1, "claim_seq": claim_seq, "error": "boom"}
        actions.append(act("CHUNK_FAILED", failed, B, seq, lamport))
    job = fold(*actions).jobs["job1"]
    assert job.state == "failed"
    assert job.error.startswith("tile 1 of frame 3 failed 3 times")


def wire(payload):
    return {"type": "NEW_JOB", "payload": payload, "origin": A, "seq": 1, "lamport": 1}


def test_new_job_schema_for_tiles():
    # Written before tiles existed: still valid, and whole frames.
    old = new_job_payload()
    assert "tiles" not in old
    assert fold(validate_action(wire(old))).jobs["job1"].tiles == 1
    with pytest.raises(InvalidAction, match="one tile per chunk"):
        validate_action(wire({**new_job_payload(chunk=2), "tiles": 4}))
    with pytest.raises(InvalidAction, match="tiles"):
        validate_action(wire({**new_job_payload(chunk=1), "tiles": MAX_TILES + 1}))
    with pytest.raises(InvalidAction, match="more than"):
        validate_action(wire({**new_job_payload(frames=(1, 1000), chunk=1), "tiles": 200}))


# --- submit checks ---


class NoTiles(Renderer):
    name = "notiles"

    def probe(self):
        return "1"

    def check_job(self, spec):
        return (1, 1)

    def prepare(self, job, work_dir):
        pass

    def chunk_command(self, job, frames, work_dir, output_pattern):
        return []


def test_submit_checks_tiles():
    plugins = renderer_plugins()
    payload = build_new_job(builtin_request(tiles=6), "j1", plugins, {"builtin"})
    assert (payload["tiles"], payload["chunk_size"]) == (6, 1)
    assert build_new_job(builtin_request(), "j2", plugins, {"builtin"})["tiles"] == 1
    plugins["notiles"] = NoTiles()
    with pytest.raises(SubmitError, match="the notiles renderer cannot render tiles.*builtin"):
        build_new_job(
            builtin_request(renderer="notiles", tiles=2), "j3", plugins, {"builtin", "notiles"}
        )
    with pytest.raises(SubmitError, match="leave out --chunk"):
        build_new_job(builtin_request(tiles=2, chunk_size=4), "j4", plugins, {"builtin"})
    with pytest.raises(SubmitError, match="cannot be cut into 7 tiles"):
        build_new_job(builtin_request(tiles=7, width=6, height=1), "j5", plugins, {"builtin"})
    with pytest.raises(SubmitError, match="--tiles must be"):
        build_new_job(builtin_request(tiles=0.5), "j6", plugins, {"builtin"})


# --- POV-Ray: what cannot be tiled ---


def test_povray_features_that_do_not_tile_are_found_outside_comments_and_strings():
    clean = b'// radiosity in a comment\n/* aperture /* nested */ jitter */\n#debug "crand"\n'
    assert untileable_features({"scene.pov": clean, "tex.png": b"\x89PNG\0jitter"}) == []
    scene = b"global_settings {\n  radiosity { count 50 }\n}\nmedia { method 2 }\n"
    found = untileable_features({"scene.pov": scene})
    assert found[0].startswith("scene.pov line 2: radiosity")
    assert found[1].startswith("scene.pov line 4: media method 1 or 2")
    problem = tiling_problem({"scene.pov": scene}, 320, 240, 4, 8)
    assert "Submit it without --tiles" in problem and "radiosity" in problem
    assert "8 bits per colour" in tiling_problem({}, 320, 240, 4, 16)
    assert "at most 80 tiles" in tiling_problem({}, 320, 240, 81, 8)
    assert tiling_problem({"scene.pov": clean}, 320, 240, 4, 8) is None


def test_uploaded_scene_files_are_scanned_where_the_node_keeps_them(tmp_path):
    # Files a client uploaded reach check_job as paths into the blob store.
    scene = tmp_path / "scene.pov"
    scene.write_bytes(b"light_source { <0,9,0> 1 area_light x, z, 4, 4 jitter }\n")
    texture = tmp_path / "tex.png"
    texture.write_bytes(b"\x89PNG\0" + b"jitter" * 100)
    found = untileable_features({"scene.pov": scene, "tex.png": texture})
    assert len(found) == 1 and found[0].startswith("scene.pov line 1: jitter")


# --- stitching ---


def png(image):
    data = io.BytesIO()
    image.save(data, format="PNG")
    return data.getvalue()


def test_stitch_pastes_each_tiles_box(tmp_path):
    rng = np.random.default_rng(7)
    whole = rng.integers(0, 256, (75, 100, 3), dtype=np.uint8)
    files = []
    for i, box in enumerate(tile_boxes(100, 75, 4, 32)):
        tile = np.zeros_like(whole)  # like POV-Ray: black outside the box
        tile[box.top : box.bottom, box.left : box.right] = whole[
            box.top : box.bottom, box.left : box.right
        ]
        files.append(tmp_path / f"t{i}.png")
        files[-1].write_bytes(png(Image.fromarray(tile)))
    stitched = Image.open(io.BytesIO(stitch_tiles(files, 32)))
    assert np.array_equal(np.asarray(stitched), whole)
    # The same tiles cut on another grid would not be the frame: align matters.
    wrong = Image.open(io.BytesIO(stitch_tiles(files, 1)))
    assert not np.array_equal(np.asarray(wrong), whole)


def test_stitch_refuses_tiles_that_do_not_fit(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(png(Image.new("RGB", (64, 48))))
    b.write_bytes(png(Image.new("RGB", (64, 40))))
    with pytest.raises(StitchError, match=r"tile 1 \(b.png\) is a RGB image of 64x40"):
        stitch_tiles([a, b])
    b.write_bytes(b"not an image")
    with pytest.raises(StitchError, match="tile 1 .* not a readable image"):
        stitch_tiles([a, b])
