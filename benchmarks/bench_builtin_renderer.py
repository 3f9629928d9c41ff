"""Time the built-in ray tracer on the demo scene at 320x240 and print one JSON object.

Run from the repository root with peerfarm importable (installed, or PYTHONPATH=.):
    python benchmarks/bench_builtin_renderer.py
"""

from __future__ import annotations

import json
import statistics
import time

import numpy as np

from peerfarm.renderers.builtin import builtin_scene_text, load_scene_text, render_frame

WIDTH, HEIGHT = 320, 240
# Spread over the loop: the camera sees different objects (and mirrors) in each.
FRAMES = (1, 8, 12, 18, 24, 30, 36, 42)


def main() -> None:
    scene = load_scene_text(builtin_scene_text("demo"))
    render_frame(scene, FRAMES[0], WIDTH, HEIGHT)  # warm-up: first-call costs are not per frame
    seconds = []
    for frame in FRAMES:
        start = time.perf_counter()
        render_frame(scene, frame, WIDTH, HEIGHT)
        seconds.append(time.perf_counter() - start)
    result = {
        "benchmark": "builtin_renderer",
        "width": WIDTH,
        "height": HEIGHT,
        "frames": len(FRAMES),
        "seconds_per_frame_median": round(statistics.median(seconds), 4),
        "seconds_per_frame_max": round(max(seconds), 4),
        "antialias": scene.antialias,
        "numpy": np.__version__,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
