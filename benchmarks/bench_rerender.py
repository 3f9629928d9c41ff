"""Re-render on save (`peerfarm submit --watch`) on a real local farm: node processes on
loopback, real POV-Ray, a scene whose frames take tens of seconds.

Measures, after one small file of the scene is saved:
- the bytes the CLI uploaded for the new revision (only the changed file should travel);
- seconds from the save to the new revision submitted (the watch's quiet period is part);
- seconds from the new revision submitted to no renderer of the old one running on any
  node (target: < 1 s);
- seconds from the save to the new revision's first frame in the output folder.

Prints JSON.

    python benchmarks/bench_rerender.py [--nodes 3]
"""

from __future__ import annotations

import argparse
import json
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import AsyncExitStack
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from farmtools import start_farm, status, wait_for_rendering_mesh  # noqa: E402
from rerender_scene import FAST_GREEN, SLOW_RED, scene_files  # noqa: E402

from peerfarm.runtime.client import NodeClient  # noqa: E402
from peerfarm.security.farm_key import resolve_key  # noqa: E402


def rendering(address: str, job_id: str) -> bool:
    try:
        st = status(address)
    except Exception:
        return True  # not answering: count as still rendering
    return any(r["job_id"] == job_id for r in st["worker"]["rendering"])


async def save_and_measure(nodes: list[str], job_id: str, save, ids) -> tuple:  # noqa: ANN001
    """Save, wait for the new revision, then when the last node stopped rendering the old
    one: (saved, (submitted, new id), stopped). One client per node, connected before the
    save and polled every 20 ms, so the measure holds no connection set-up."""
    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(NodeClient(a, resolve_key(None))) for a in nodes]
        saved = time.monotonic()
        await trio.to_thread.run_sync(save)
        submitted = await trio.to_thread.run_sync(lambda: ids.get(timeout=60))
        ends: list[float] = []

        async def watch(client: NodeClient) -> None:
            while True:
                st = await client.status()
                if not any(r["job_id"] == job_id for r in st["worker"]["rendering"]):
                    ends.append(time.monotonic())
                    return
                await trio.sleep(0.02)

        async with trio.open_nursery() as nursery:
            for client in clients:
                nursery.start_soon(watch, client)
    return saved, submitted, max(ends)


def poll(check, timeout: float = 120.0, interval: float = 0.02) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic()
        time.sleep(interval)
    raise SystemExit("timed out")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        scene = root / "ball"
        for name, data in scene_files(SLOW_RED).items():
            (scene / name).parent.mkdir(parents=True, exist_ok=True)
            (scene / name).write_bytes(data)
        out = root / "out"
        farm, _, _, nodes = start_farm(root / "farm", nodes=args.nodes)
        watch = None
        try:
            wait_for_rendering_mesh(nodes)
            watch = subprocess.Popen(
                [sys.executable, "-m", "peerfarm", "submit", str(scene), "--node", nodes[0]]
                + ["--watch", "--chunk", "1", "--output", str(out)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            ids: queue.Queue[tuple[float, str]] = queue.Queue()
            errors: list[str] = []
            threading.Thread(
                target=lambda: [ids.put((time.monotonic(), line.strip())) for line in watch.stdout],
                daemon=True,
            ).start()
            threading.Thread(
                target=lambda: [errors.append(line.strip()) for line in watch.stderr], daemon=True
            ).start()
            _, first = ids.get(timeout=60)
            poll(lambda: all(rendering(n, first) for n in nodes))
            poll(lambda: any("watching" in e for e in errors))
            saved, (submitted, second), stopped = trio.run(
                save_and_measure,
                nodes,
                first,
                lambda: (scene / "ball.inc").write_bytes(FAST_GREEN),
                ids,
            )
            frame_in = poll(lambda: any(out.glob("ball_*.png")))
            line = next(e for e in errors if f"job {second} replaces" in e)
            sent = re.search(r"uploaded (\d+) files? \(([^)]*)\)", line)
            total = re.search(r"scene: (\d+) files \(([^)]*)\)", line)
        finally:
            if watch is not None and watch.poll() is None:
                watch.send_signal(signal.SIGINT)
                watch.wait(timeout=15)
            farm.stop()
    print(
        json.dumps(
            {
                "benchmark": "rerender",
                "nodes": args.nodes,
                "scene_files": int(total[1]),
                "scene_size": total[2],
                "changed_file_bytes": len(FAST_GREEN),
                "uploaded_files": int(sent[1]),
                "uploaded": sent[2],
                "save_to_revision_submitted_s": round(submitted - saved, 3),
                "revision_submitted_to_old_renders_stopped_s": round(stopped - submitted, 3),
                "save_to_first_new_frame_s": round(frame_in - saved, 3),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
