"""Farm overhead: the same job rendered by a local peerfarm farm and by renderer
processes run directly with the same parallelism (an ideal central scheduler
with no overhead). Prints JSON; compare the two as a ratio in one run.

    python benchmarks/bench_farm.py [--frames 48] [--chunk 2] [--size 160x120] [--nodes 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from farmtools import start_farm  # noqa: E402

from peerfarm.job_request import JobRequest
from peerfarm.renderers.builtin import builtin_scene_text
from peerfarm.runtime.client import NodeClient


def direct(frames: int, chunk: int, size: str, parallel: int, out: Path) -> float:
    scene = out / "demo.json"
    scene.write_text(builtin_scene_text("demo"))
    chunks = [(a, min(a + chunk - 1, frames)) for a in range(1, frames + 1, chunk)]

    def run(ab: tuple[int, int]) -> None:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "peerfarm.renderers.builtin",
                "--scene-file",
                str(scene),
                "--frames",
                f"{ab[0]}-{ab[1]}",
                "--size",
                size,
                "--output-pattern",
                str(out / "demo_{frame:04d}.png"),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )

    start = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(run, chunks))
    return time.perf_counter() - start


def farm(frames: int, chunk: int, size: str, nodes: int, root: Path) -> dict:
    f, _, _, addresses = start_farm(root, nodes=nodes)
    try:
        w, h = (int(x) for x in size.split("x"))
        spec = JobRequest(
            scene=builtin_scene_text("demo"),
            name="demo",
            frames=(1, frames),
            chunk_size=chunk,
            width=w,
            height=h,
            output=str(root / "out"),
        )

        async def go() -> dict:
            async with NodeClient(addresses[0]) as client:
                await trio.sleep(3.5)  # let every node join and announce itself
                start = time.perf_counter()
                job_id = await client.submit(spec)
                frames_in = None
                while True:
                    job = next(j for j in (await client.status())["jobs"] if j["id"] == job_id)
                    if frames_in is None and job.get("frames_collected") == frames:
                        frames_in = time.perf_counter() - start
                    if job.get("complete"):
                        return {
                            "seconds": frames_in,
                            "with_gif": time.perf_counter() - start,
                            "frame_renders": job["frame_renders"],
                        }
                    await trio.sleep(0.05)

        return trio.run(go)
    finally:
        f.stop()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--frames", type=int, default=48)
    p.add_argument("--chunk", type=int, default=2)
    p.add_argument("--size", default="160x120")
    p.add_argument("--nodes", type=int, default=2)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "direct").mkdir()
        direct_s = direct(a.frames, a.chunk, a.size, a.nodes, d / "direct")
        result = farm(a.frames, a.chunk, a.size, a.nodes, d / "farm")
    print(
        json.dumps(
            {
                "benchmark": "farm_overhead",
                "frames": a.frames,
                "chunk": a.chunk,
                "size": a.size,
                "nodes": a.nodes,
                "slots_per_node": 1,
                "cores": os.cpu_count(),
                "direct_seconds": round(direct_s, 2),
                "farm_seconds_submit_to_all_frames_in_output": round(result["seconds"], 2),
                "farm_to_direct_ratio": round(result["seconds"] / direct_s, 3),
                "farm_seconds_including_gif": round(result["with_gif"], 2),
                "frame_renders": result["frame_renders"],
                "wasted_frame_renders": result["frame_renders"] - a.frames,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
