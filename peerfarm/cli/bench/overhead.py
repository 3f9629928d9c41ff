"""`peerfarm bench overhead`: what the farm costs on a real POV-Ray animation.

Alternating runs of (a) a one-node farm (a bootstrap server and one node process with
N slots, real POV-Ray; the scene submitted as `peerfarm submit` does it) and (b) the
same `povray` commands started directly, N at a time, one per chunk. Each run is timed
from the submit (or the first povray start) to the last frame in the output folder;
the ratio farm / direct is reported per pair, and the median of the pairs. Starting
the throwaway farm is not timed (a farm is running before a user submits); it is
started afresh for each run, so no run profits from an earlier one's measured speeds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import trio

from peerfarm.child_processes import lower_priority, renderer_options
from peerfarm.cli.demo import Farm
from peerfarm.cli.errors import CliError
from peerfarm.job_request import scene_request
from peerfarm.programs import find_program
from peerfarm.renderers.povray.run import png_is_whole
from peerfarm.runtime.client import NodeClient
from peerfarm.runtime.upload import upload_scene
from peerfarm.security.farm_key import FarmKey

# Where Linux distributions put POV-Ray's example scenes (Debian: povray-examples).
EXAMPLE_FOLDERS = (Path("/usr/share/doc/povray/examples"), Path("/usr/share/povray-3.7/scenes"))
DEFAULT_SCENE = "animations/camera2/camera2.ini"  # 30 frames: a camera flying round objects
POLL_S = 0.01  # how often the output folder is looked at: within 1% of a 1 s frame


def default_scene() -> Path | None:
    for folder in EXAMPLE_FOLDERS:
        if (folder / DEFAULT_SCENE).is_file():
            return folder / DEFAULT_SCENE
    return None


def run_overhead(args: argparse.Namespace, say: Callable[[str], None]) -> dict[str, Any]:
    if min(args.frames, args.slots, args.chunk, args.runs) < 1:
        raise CliError("--frames, --slots, --chunk and --runs must be at least 1")
    povray = find_program("povray")
    if povray is None:
        raise CliError("POV-Ray is not installed here (the bench renders with it): skipped")
    scene = args.scene or default_scene()
    if scene is None:
        raise CliError(
            "POV-Ray's example scenes are not installed (Debian: apt-get install "
            f"povray-examples; looked in {', '.join(map(str, EXAMPLE_FOLDERS))}): "
            "give a scene with --scene PATH.ini"
        )
    scene = Path(scene).resolve()
    if not scene.is_file():
        raise CliError(f"--scene {scene}: no such file")
    pairs = []
    with tempfile.TemporaryDirectory(prefix="peerfarm-bench-overhead-") as tmp:
        root = Path(tmp)
        for run in range(1, args.runs + 1):
            # Alternating, direct first one time and farm first the next: a machine
            # getting busier or quieter during the bench weighs on both alike.
            order = ("direct", "farm") if run % 2 else ("farm", "direct")
            seconds: dict[str, float] = {}
            extra: dict[str, Any] = {}
            extra_direct: dict[str, Any] = {}
            for kind in order:
                folder = root / f"{run}-{kind}"
                if kind == "direct":
                    seconds[kind], cpu, idle, split = direct_run(povray, scene, args, folder)
                    extra_direct = {
                        "direct_cpu_s": None if cpu is None else round(cpu, 2),
                        "direct_idle_slot_s": idle,
                        "direct_idle_split": split,
                    }
                else:
                    seconds[kind], extra = farm_run(scene, args, folder)
                say(f"run {run}: {kind} {seconds[kind]:.2f} s")
            pairs.append(
                {
                    "direct_s": round(seconds["direct"], 3),
                    "farm_s": round(seconds["farm"], 3),
                    "ratio": round(seconds["farm"] / seconds["direct"], 3),
                    **extra_direct,
                    **extra,
                }
            )
            shutil.rmtree(root / f"{run}-farm", ignore_errors=True)
    ratios = [p["ratio"] for p in pairs]
    return {
        "ratio": statistics.median(ratios),
        "target_ratio": 1.02,
        # How far single pairs fall from each other: on a shared machine a pair's ratio
        # moves by far more than the farm's own cost; read the median with it.
        "ratio_spread": _spread(ratios),
        "scene": str(scene),
        "frames": args.frames,
        "size": f"{args.size[0]}x{args.size[1]}",
        "slots": args.slots,
        "chunk": args.chunk,
        "runs": pairs,
        "direct_s_median": round(statistics.median(p["direct_s"] for p in pairs), 3),
        "farm_s_median": round(statistics.median(p["farm_s"] for p in pairs), 3),
        # CPU seconds, farm (node + its renderer processes) over direct: what the farm
        # costs on top of povray, whatever else the machine runs meanwhile.
        "cpu_ratio": _median_cpu_ratio(pairs),
        # Slot-seconds per chunk in which no povray ran (Linux): what the farm adds
        # between renders, against the thread pool's own gaps.
        "idle_slot_s_per_chunk": _idle_per_chunk(pairs, len(chunks_of(args.frames, args.chunk))),
        # Where it lies: before the first renders and after the last ones (paid once a
        # run), and between two renders on a slot, per such gap (paid per chunk).
        "idle_slot_s_split": _between_renders(
            pairs, len(chunks_of(args.frames, args.chunk)), args.slots
        ),
        "cores": os.cpu_count(),
        "load_average": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


class PovrayWatch:
    """When each povray process below a process ran (Linux: /proc, sampled every
    SAMPLE_S): the slot time in which no povray ran is what the farm adds between
    renders (start-up, frames moved, claims), measured the same way for both sides and
    far less shaken by a busy machine than the totals."""

    SAMPLE_S = 0.02

    def __init__(self, root_pid: int) -> None:
        self.root_pid = root_pid
        self.seen: dict[int, list[float]] = {}  # pid -> [first seen, last seen]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self.works = Path(f"/proc/{root_pid}/task").is_dir()

    def __enter__(self) -> PovrayWatch:
        if self.works:
            self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self.works:
            self._thread.join()

    def povray_seconds(self, until: float) -> float:
        return sum(max(0.0, min(last, until) - first) for first, last in self.seen.values())

    def idle_split(self, started: float, elapsed: float, slots: int) -> dict[str, float] | None:
        """The slot-seconds without a povray, split: before each slot's first povray
        (`start`: the submit, the job reaching the node, the scene unpacked), after each
        slot's last one (`end`: the last frames moved to the output folder) and between
        two renders on a slot (`between`: what the farm adds per chunk)."""
        if len(self.seen) < slots:
            return None
        until = started + elapsed
        runs = sorted((first, min(last, until)) for first, last in self.seen.values())
        start = sum(first - started for first, _ in runs[:slots])
        end = sum(until - last for last in sorted(last for _, last in runs)[-slots:])
        idle = slots * elapsed - self.povray_seconds(until)
        return {
            "start": round(start, 3),
            "between": round(idle - start - end, 3),
            "end": round(end, 3),
        }

    def _watch(self) -> None:
        while not self._stop.wait(self.SAMPLE_S):
            now = time.perf_counter()
            for pid in _descendants(self.root_pid):
                try:
                    name = Path(f"/proc/{pid}/comm").read_text().strip()
                except OSError:
                    continue
                if name == "povray":
                    self.seen.setdefault(pid, [now, now])[1] = now


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                children = Path(f"/proc/{parent}/task/{task}/children").read_text().split()
            except OSError:
                continue
            found += map(int, children)
            todo += map(int, children)
    return found


def _idle_slot_s(watch: PovrayWatch, started: float, elapsed: float, slots: int) -> float | None:
    """Slot-seconds without a povray running, from `started` for `elapsed` seconds."""
    if not watch.works:
        return None
    return round(slots * elapsed - watch.povray_seconds(started + elapsed), 2)


def _spread(values: list[float]) -> dict[str, float]:
    """Lowest, quartiles and highest of the pairs' values (the quartiles: the middle
    half of the pairs lies between them)."""
    low, high = min(values), max(values)
    if len(values) < 2:
        return {"min": low, "q1": low, "q3": high, "max": high}
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return {"min": low, "q1": round(q1, 3), "q3": round(q3, 3), "max": high}


def _median_cpu_ratio(pairs: list[dict[str, Any]]) -> float | None:
    ratios = [
        (p["farm_node_cpu_s"] + p["farm_renderers_cpu_s"]) / p["direct_cpu_s"]
        for p in pairs
        if p.get("direct_cpu_s") and "farm_node_cpu_s" in p
    ]
    return round(statistics.median(ratios), 3) if ratios else None


def _idle_per_chunk(pairs: list[dict[str, Any]], chunks: int) -> dict[str, float] | None:
    direct = [p["direct_idle_slot_s"] for p in pairs if p.get("direct_idle_slot_s") is not None]
    farm = [p["farm_idle_slot_s"] for p in pairs if p.get("farm_idle_slot_s") is not None]
    if not direct or not farm:
        return None
    return {
        "direct": round(statistics.median(direct) / chunks, 3),
        "farm": round(statistics.median(farm) / chunks, 3),
    }


def _between_renders(
    pairs: list[dict[str, Any]], chunks: int, slots: int
) -> dict[str, dict[str, float]] | None:
    """Per side, medians over the pairs of the idle slot-seconds before the first
    renders (`start`), after the last ones (`end`), and between two renders on a slot
    per such gap (`between_per_gap`: a run has chunks - slots of them)."""
    found: dict[str, dict[str, float]] = {}
    for side in ("direct", "farm"):
        splits = [p[f"{side}_idle_split"] for p in pairs if p.get(f"{side}_idle_split")]
        if not splits:
            return None
        found[side] = {
            "start": round(statistics.median(split["start"] for split in splits), 3),
            "end": round(statistics.median(split["end"] for split in splits), 3),
            "between_per_gap": round(
                statistics.median(split["between"] for split in splits) / max(1, chunks - slots),
                3,
            ),
        }
    return found


def chunks_of(frames: int, chunk: int) -> list[tuple[int, int]]:
    return [(a, min(a + chunk - 1, frames)) for a in range(1, frames + 1, chunk)]


def direct_run(
    povray: str, scene: Path, args: argparse.Namespace, folder: Path
) -> tuple[float, float | None, float | None, dict[str, float] | None]:
    """The chunks' povray commands, `args.slots` at a time, in a copy of the scene's
    folder (as a user runs them); seconds until the last frame was whole in the output
    folder, the CPU seconds they used, the slot-seconds no povray ran and where (None
    where unknown)."""
    copy = shutil.copytree(scene.parent, folder / "scene")
    out = folder / "out"
    out.mkdir()
    width, height = args.size

    def render(frames: tuple[int, int]) -> None:
        command = [povray, scene.name, f"+W{width}", f"+H{height}", "-D"]
        command += [f"+SF{frames[0]}", f"+EF{frames[1]}", f"+O{out / scene.stem}.png"]
        result = subprocess.run(
            command,
            cwd=copy,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
            # The priority the farm gives its renderers (nice 10, Windows: below
            # normal): on a busy machine both then compete alike with the rest.
            preexec_fn=None if sys.platform == "win32" else lower_priority,
            **renderer_options(),
        )
        if result.returncode != 0:
            tail = result.stderr.decode(errors="replace")[-1000:]
            raise CliError(f"povray failed directly on frames {frames}: {tail}")

    cpu_before = children_cpu_seconds()
    with PovrayWatch(os.getpid()) as watch:
        started = time.perf_counter()
        with ThreadPoolExecutor(args.slots) as pool:
            renders = [pool.submit(render, c) for c in chunks_of(args.frames, args.chunk)]
            # To the last frame in the output folder, as on the farm's side: POV-Ray
            # takes another 0.3-0.4 s to exit after its last frame's file is whole.
            while True:
                if sum(png_is_whole(out / name) for name in os.listdir(out)) >= args.frames:
                    last_frame = time.perf_counter() - started
                    break
                for failed in (r for r in renders if r.done() and r.exception()):
                    failed.result()  # raises: povray failed, and says why
                if time.perf_counter() - started > args.timeout:
                    raise CliError(f"povray had not written every frame after {args.timeout} s")
                time.sleep(POLL_S)
            for done in renders:
                done.result()
        exited = time.perf_counter() - started
    cpu_after = children_cpu_seconds()
    elapsed = last_frame
    idle = _idle_slot_s(watch, started, elapsed, args.slots)
    split = watch.idle_split(started, elapsed, args.slots)
    if split is not None:
        split["exit"] = round(exited - elapsed, 3)  # the last povray's exit, after that
    written = len(list(out.iterdir()))
    if written != args.frames:
        raise CliError(f"povray wrote {written} frames directly, not {args.frames}")
    shutil.rmtree(folder, ignore_errors=True)
    cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    return elapsed, cpu, idle, split


def children_cpu_seconds() -> float | None:
    """CPU seconds of this process's ended children (POSIX), None elsewhere."""
    try:
        import resource
    except ImportError:
        return None
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def process_cpu_seconds(pid: int) -> tuple[float, float] | None:
    """(a live process's own CPU seconds, those of all its descendants: the ended ones
    and the live ones, such as a node's spare factory with the spares it reaped), from
    /proc (Linux); None elsewhere."""
    own = _cpu_seconds(pid)
    if own is None:
        return None
    below = own[1]
    for child in _descendants(pid):
        seconds = _cpu_seconds(child)
        if seconds is not None:  # (what a live one reaped is no longer below it: once)
            below += seconds[0] + seconds[1]
    return own[0], below


def _cpu_seconds(pid: int) -> tuple[float, float] | None:
    """(a process's own CPU seconds, its ended children's), from /proc/PID/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    own = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    children = (int(fields[13]) + int(fields[14])) / ticks  # cutime, cstime
    return own, children


def farm_run(scene: Path, args: argparse.Namespace, folder: Path) -> tuple[float, dict[str, Any]]:
    """A fresh bootstrap + one node; seconds from the submit to the last frame in the
    output folder, and when the job was complete (its GIF written)."""
    folder.mkdir(parents=True)
    farm, key = Farm.with_new_key(folder)
    try:
        _, bootstrap = farm.start_bootstrap(folder / "bootstrap")
        node, address = farm.start_node("node", bootstrap, folder / "node", args.slots)
        return trio.run(_submit_and_watch, scene, args, key, address, node.pid, folder / "out")
    finally:
        farm.stop()


async def _submit_and_watch(
    scene: Path, args: argparse.Namespace, key: FarmKey, address: str, pid: int, out: Path
) -> tuple[float, dict[str, Any]]:
    async with NodeClient(address, key) as client:
        name = scene.stem
        with tempfile.TemporaryDirectory(prefix="peerfarm-bench-spool-") as spool:
            cpu_before = process_cpu_seconds(pid)
            watch = PovrayWatch(pid).__enter__()
            started = time.perf_counter()
            # What `peerfarm submit SCENE --frames 1-N --size WxH --chunk C` does.
            request = scene_request(str(scene), "povray", Path(spool))
            request = request.replace(
                renderer="povray",
                name=name,
                frames=(1, args.frames),
                chunk_size=args.chunk,
                width=args.size[0],
                height=args.size[1],
                output=str(out),
            )
            manifest, _ = await upload_scene(client, request.files)
            job_id, _ = await client.submit_job(request.replace(files=None, manifest=manifest))
            submitted = time.perf_counter() - started
        expected = {f"{name}_{n:04d}.png" for n in range(1, args.frames + 1)}
        last_frame = None
        while last_frame is None:
            if out.is_dir() and expected <= set(os.listdir(out)):
                last_frame = time.perf_counter() - started
                break
            await trio.sleep(POLL_S)
            if time.perf_counter() - started > args.timeout:
                raise CliError(f"the farm had not written every frame after {args.timeout} s")
        while True:  # the GIF, after the last frame: reported, not in the ratio
            job = next(j for j in (await client.status())["jobs"] if j["id"] == job_id)
            if job.get("complete") or job["state"] in ("failed", "cancelled"):
                break
            await trio.sleep(0.05)
        watch.__exit__()
        complete = time.perf_counter() - started
        await trio.sleep(0.2)  # the last renderer processes reaped: in the node's counts
        cpu_after = process_cpu_seconds(pid)
        extra: dict[str, Any] = {
            "farm_complete_s": round(complete, 3),
            # Packed, uploaded and submitted (part of the idle split's `start`).
            "farm_submitted_s": round(submitted, 3),
            "frame_renders": job["frame_renders"],
            "farm_idle_slot_s": _idle_slot_s(watch, started, last_frame, args.slots),
            "farm_idle_split": watch.idle_split(started, last_frame, args.slots),
        }
        if cpu_before is not None and cpu_after is not None:
            # The node process itself (its status answers included), and its renderer
            # processes: guards, wrappers and povray.
            extra["farm_node_cpu_s"] = round(cpu_after[0] - cpu_before[0], 2)
            extra["farm_renderers_cpu_s"] = round(cpu_after[1] - cpu_before[1], 2)
        return last_frame, extra
