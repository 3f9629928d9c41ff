"""Scene files uploaded as blobs in pieces before SUBMIT: resuming, verifying,
skipping what the node holds, memory bounds, and a scene over 64 MiB on a farm."""

from __future__ import annotations

import hashlib
import os
import sys
import zipfile
from pathlib import Path

import pytest
import trio
from test_node import make_node

from peerfarm.job_request import JobRequest
from peerfarm.runtime.client import ClientError, NodeClient
from peerfarm.runtime.upload import PIECE_BYTES, _upload_blob, upload_scene
from peerfarm.scenes import load_package, unpack_to
from peerfarm.scenes.detect import renderer_of
from peerfarm.scenes.package import SMALL_FILE_BYTES

MiB = 1024 * 1024


def write_random(path: Path, size: int) -> Path:
    """A file of random bytes, written in blocks (so the test holds little of it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as file:
        left = size
        while left:
            block = os.urandom(min(left, 4 * MiB))
            file.write(block)
            left -= len(block)
    return path


def sha_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(MiB):
            digest.update(block)
    return digest.hexdigest()


# --- scene packages keep big files on disk ---


def test_packages_keep_big_files_on_disk_with_a_spool(tmp_path):
    scene = tmp_path / "scene"
    big = write_random(scene / "textures" / "big.bin", 3 * MiB)
    (scene / "scene.pov").write_text("sphere { 0, 1 }\n")
    spool = tmp_path / "spool"
    spool.mkdir()
    package = load_package(scene, spool=spool)
    assert package.files["scene.pov"] == b"sphere { 0, 1 }\n"
    assert package.files["textures/big.bin"] == big  # the folder's own file, not a copy
    assert load_package(scene).files["textures/big.bin"] == big.read_bytes()  # no spool: bytes

    archive = tmp_path / "scene.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(scene / "scene.pov", "scene.pov")
        zf.write(big, "textures/big.bin")
    package = load_package(archive, spool=spool)
    spooled = package.files["textures/big.bin"]
    assert isinstance(spooled, Path) and spooled.parent == spool
    assert sha_of(spooled) == sha_of(big)

    unpack_to(package, tmp_path / "unpacked")
    assert sha_of(tmp_path / "unpacked" / "textures" / "big.bin") == sha_of(big)
    assert (tmp_path / "unpacked" / "scene.pov").read_bytes() == b"sphere { 0, 1 }\n"
    assert SMALL_FILE_BYTES < 3 * MiB


def test_detection_reads_a_scene_kept_on_disk(tmp_path):
    scene = tmp_path / "s.json"
    scene.write_text('{"format": "peerfarm-scene/1", "objects": []}')
    assert renderer_of("s.json", scene) == "builtin"
    write_random(scene, 2 * MiB)  # too big to be a builtin scene: not even read
    assert renderer_of("s.json", scene) is None


# --- the upload protocol against a node over real TCP ---


def run_with_node(tmp_path, body):
    async def main():
        node = make_node(tmp_path, slots=0)
        async with trio.open_nursery() as nursery:
            address = await nursery.start(node.run)
            try:
                async with NodeClient(address) as client:
                    return await body(node, client)
            finally:
                node.request_stop()

    return trio.run(main)


def test_upload_resumes_skips_and_verifies(tmp_path):
    size = 3 * MiB + 12345
    big = write_random(tmp_path / "big.bin", size)
    sha = sha_of(big)
    data = big.read_bytes()
    other = os.urandom(2 * PIECE_BYTES)
    other_sha = hashlib.sha256(other).hexdigest()

    async def body(node, client):
        # An upload that stopped after its first piece...
        held, complete = await client.put_blob(sha, size, 0, data[:PIECE_BYTES])
        assert (held, complete) == (PIECE_BYTES, False)
        assert await client.blobs_held([sha]) == [(False, PIECE_BYTES)]
        # ...resumes there: only the rest travels.
        manifest, summary = await upload_scene(client, {"big.bin": big, "note.txt": b"hi"})
        assert manifest["big.bin"] == {"sha": sha, "size": size}
        assert summary.sent_bytes == size - PIECE_BYTES + 2
        assert node.blobs.has(sha) and sha_of(node.blobs.path(sha)) == sha
        # Everything is there now: nothing travels again.
        _, again = await upload_scene(client, {"big.bin": big, "note.txt": b"hi"})
        assert (again.sent_files, again.sent_bytes) == (0, 0)
        assert "uploaded 0 files (0 bytes), 2 files already on the node" in again.describe()

        # A piece that does not follow what the node holds changes nothing.
        assert await client.put_blob(other_sha, len(other), PIECE_BYTES, b"x") == (0, False)
        # Bytes that do not match their SHA-256 are dropped at the last piece.
        await client.put_blob(other_sha, len(other), 0, other[:PIECE_BYTES])
        with pytest.raises(ClientError, match="do not match its SHA-256"):
            await client.put_blob(other_sha, len(other), PIECE_BYTES, b"y" * PIECE_BYTES)
        assert await client.blobs_held([other_sha]) == [(False, 0)]
        with pytest.raises(ClientError, match="goes past its size"):
            await client.put_blob(other_sha, 10, 0, b"z" * 11)
        with pytest.raises(ClientError, match="a scene file may have at most"):
            await client.put_blob(other_sha, 2**33, 0, b"z")

        # SUBMIT names only what was uploaded.
        spec = JobRequest(
            renderer="povray",
            main="scene.ini",
            manifest={"scene.ini": {"sha": other_sha, "size": len(other)}},
            output=str(tmp_path / "out"),
        )
        with pytest.raises(ClientError, match=r"scene file 'scene.ini' was not uploaded"):
            await client.submit(spec)
        spec = spec.replace(manifest={"../x": {"sha": sha, "size": size}})
        with pytest.raises(ClientError, match="not a relative path"):
            await client.submit(spec)
        spec = spec.replace(manifest={"big.bin": {"sha": sha, "size": size + 1}})
        with pytest.raises(ClientError, match="the manifest says"):
            await client.submit(spec)

    run_with_node(tmp_path, body)


def test_a_file_that_changes_while_uploading_is_refused(tmp_path):
    big = write_random(tmp_path / "big.bin", 2 * PIECE_BYTES)

    async def body(node, client):
        sha, size = sha_of(big), big.stat().st_size
        write_random(big, size)  # same size, other bytes: caught by the node's check
        with pytest.raises(ClientError, match="do not match its SHA-256"):
            await _upload_blob(client, "big.bin", big, sha, size, 0)
        assert not node.blobs.has(sha)

    run_with_node(tmp_path, body)


# --- a scene over 64 MiB on a farm of node processes ---


def _povray_usable() -> bool:
    import shutil

    from peerfarm.renderers.povray.sandbox import unavailable_reason

    return shutil.which("povray") is not None and unavailable_reason() is None


def _peak_rss_kib(pid: int) -> int:
    """Peak resident memory of a process (Linux /proc), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for process {pid}")


CLI_WITH_PEAK = (
    "import resource, sys\n"
    "from peerfarm.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "print('PEAK_KIB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="measures memory via /proc")
@pytest.mark.skipif(
    not _povray_usable() and not os.environ.get("CI"), reason="POV-Ray is not usable here"
)
def test_a_scene_over_64_mib_renders_on_two_nodes(tmp_path):
    import subprocess

    from farmtools import (
        farm_running,
        job_of,
        start_farm,
        status,
        wait_for_rendering_mesh,
    )
    from test_povray import ball_files, write_files

    ini = "Input_File_Name=scene.pov\nWidth=32\nHeight=24\nInitial_Frame=1\nFinal_Frame=4\n"
    small = write_files(tmp_path / "small", ball_files(ini))
    scene = write_files(tmp_path / "ball", ball_files(ini))
    big = write_random(scene / "data" / "noise.bin", 70 * 10**6)  # over the 64 MiB message limit

    def cli(*args: str) -> tuple[subprocess.CompletedProcess, int]:
        result = subprocess.run(
            [sys.executable, "-c", CLI_WITH_PEAK, *args],
            capture_output=True,
            text=True,
            timeout=300,
        )
        peak = [line for line in result.stderr.splitlines() if line.startswith("PEAK_KIB ")]
        return result, int(peak[-1].split()[1]) if peak else 0

    farm, _, _, nodes = start_farm(tmp_path / "farm", nodes=2)
    with farm_running(farm, tmp_path / "farm"):
        wait_for_rendering_mesh(nodes)
        node_peaks = [_peak_rss_kib(p.pid) for p in farm.procs[1:]]
        base, base_peak = cli(
            "submit", str(small), "--node", nodes[0], "--output", str(tmp_path / "out0"), "--wait"
        )
        assert base.returncode == 0, base.stderr

        first, first_peak = cli(
            "submit",
            str(scene),
            "--node",
            nodes[0],
            "--chunk",
            "2",
            "--output",
            str(tmp_path / "out1"),
            "--wait",
        )
        assert first.returncode == 0, first.stderr
        # The small scene's four files are on the node already; only the big one travels.
        said = "scene: 5 files (66.8 MiB); uploaded 1 file (66.8 MiB), 4 files already on the node"
        assert said in first.stderr
        job_id = first.stdout.splitlines()[0]
        assert job_of(status(nodes[0]), job_id)["frames_total"] == 4
        assert sorted(p.name for p in (tmp_path / "out1").glob("ball_*.png")) == [
            f"ball_{n:04d}.png" for n in range(1, 5)
        ]
        # Every node that rendered has the whole file in the job's folder.
        sha = sha_of(big)
        copies = list((tmp_path / "farm").glob(f"node-*/work/{job_id}/data/noise.bin"))
        assert len(copies) == 2, "one node rendered both chunks"
        assert all(sha_of(copy) == sha for copy in copies)
        print(
            "peak KiB: CLI",
            base_peak,
            first_peak,
            "nodes",
            node_peaks,
            [_peak_rss_kib(p.pid) for p in farm.procs[1:]],
        )

        # Memory: the 70 MB file was never held whole by the CLI or a node.
        assert first_peak - base_peak < 35 * 1024, (first_peak, base_peak)
        for proc, before in zip(farm.procs[1:], node_peaks, strict=True):
            assert _peak_rss_kib(proc.pid) - before < 35 * 1024

        # Submitted again: the node has every blob, nothing is uploaded.
        blob = tmp_path / "farm" / "node-1" / "blobs" / sha[:2] / sha
        inode = blob.stat().st_ino
        again, _ = cli(
            "submit", str(scene), "--node", nodes[0], "--output", str(tmp_path / "out2"), "--wait"
        )
        assert again.returncode == 0, again.stderr
        assert "uploaded 0 files (0 bytes), 5 files already on the node" in again.stderr
        # Not written again (a rewrite is a new file); its time is renewed for retention.
        assert blob.stat().st_ino == inode
        assert len(list((tmp_path / "out2").glob("ball_*.png"))) == 4
