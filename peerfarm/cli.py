"""The `peerfarm` command line: init, node, gui, bootstrap, submit, status, job control
(cancel, pause, resume, retry, priority), logs, demo."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from peerfarm import __version__
from peerfarm.jobspec import SubmitError, parse_frames, parse_size
from peerfarm.runtime.addresses import parse_address
from peerfarm.runtime.client import ClientError, NodeClient
from peerfarm.runtime.node import Node, NodeConfig, SetupError
from peerfarm.security.farm_key import (
    ENV_VAR,
    FarmKey,
    FarmKeyError,
    default_key_path,
    new_key,
    resolve_key,
    write_key,
)
from peerfarm.security.identity import IdentityError

log = logging.getLogger("peerfarm")

WAIT_POLL = 0.5


class CliError(Exception):
    """An expected failure: printed as one clear line, exit code 1."""


def _address(text: str) -> tuple[str, int]:
    try:
        return parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _priority(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not -1000 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"{text}: give a whole number from -1000 to 1000")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="peerfarm",
        description="A peer-to-peer render farm: every machine renders and submits.",
    )
    parser.add_argument("--version", action="version", version=f"peerfarm {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    # Every command that talks to a farm takes its key (docs/security.md).
    key = argparse.ArgumentParser(add_help=False)
    key.add_argument(
        "--farm-key-file",
        type=Path,
        default=None,
        metavar="PATH",
        help=f"the farm's key file (default: ${ENV_VAR}, else {default_key_path()} if it "
        f"exists; without a key, the farm is this machine's loopback only)",
    )

    p = sub.add_parser(
        "init", parents=[key], help="create a farm: write a new farm key and say how to join"
    )

    p = sub.add_parser("node", parents=[key], help="run a node (worker and manager)")
    p.add_argument(
        "--listen",
        type=_address,
        default=None,
        metavar="HOST:PORT",
        help="where to listen (port 0: any free port); default 0.0.0.0:7100 with a farm key, "
        "127.0.0.1:7100 without",
    )
    p.add_argument(
        "--bootstrap",
        type=_address,
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="a bootstrap server; give several for redundancy",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        required=True,
        metavar="DIR",
        help="where the node keeps its identity, log and rendered frames",
    )
    p.add_argument(
        "--slots",
        type=int,
        default=os.cpu_count() or 1,
        metavar="N",
        help="renderer processes at once (default: number of cores)",
    )
    p.add_argument("--name", default="", help="a name shown to the farm (default: host name)")
    p.add_argument(
        "--advertise",
        default="",
        metavar="HOST:PORT",
        help="the address peers should dial, if not the listen address",
    )
    p.add_argument(
        "--peer-timeout",
        type=float,
        default=3.0,
        metavar="SECONDS",
        help="a peer silent this long is declared down and its chunks rendered elsewhere "
        "(default 3; a lost link that does not come back within 0.5 s counts at once)",
    )
    p.add_argument(
        "--no-zeroconf",
        action="store_true",
        help="do not announce or look for nodes on the LAN (zeroconf/mDNS)",
    )

    p = sub.add_parser(
        "gui",
        help="the desktop app: a node (worker and manager) with a window; "
        "options given here override its saved settings",
    )
    from ui.options import add_gui_options  # Qt-free: PySide6 is needed only to run it

    add_gui_options(p)

    p = sub.add_parser(
        "bootstrap", parents=[key], help="run a bootstrap server (a peer that never renders)"
    )
    p.add_argument(
        "--listen",
        type=_address,
        default=None,
        metavar="HOST:PORT",
        help="default 0.0.0.0:7000 with a farm key, 127.0.0.1:7000 without",
    )
    p.add_argument("--data-dir", type=Path, required=True, metavar="DIR")
    p.add_argument("--advertise", default="", metavar="HOST:PORT")
    p.add_argument("--no-zeroconf", action="store_true", help="do not use LAN discovery")

    p = sub.add_parser(
        "submit", parents=[key], help="submit a job; prints the job id on the first line"
    )
    p.add_argument(
        "scene",
        metavar="SCENE",
        help="a scene file, or builtin:NAME for a shipped scene (builtin:demo)",
    )
    p.add_argument("--node", required=True, metavar="HOST:PORT", help="the node to submit to")
    p.add_argument("--frames", metavar="A-B", help="frame range (default: the scene's own)")
    p.add_argument("--chunk", type=int, default=None, metavar="N", help="frames per chunk")
    p.add_argument(
        "--tiles",
        type=int,
        default=1,
        metavar="N",
        help="cut each frame into N tiles rendered by different nodes and stitched by the "
        "submitter; each chunk is then one tile (default 1: whole frames)",
    )
    p.add_argument(
        "--size",
        metavar="WxH",
        help="image size (default: the scene's own; 320x240 for built-in scenes)",
    )
    p.add_argument(
        "--format",
        default=None,
        metavar="FMT",
        help="image format of the frames, also their file extension (default: the .blend's "
        "own for Blender, else png); builtin: png jpg tiff bmp; povray: png jpg tga bmp ppm "
        "exr hdr; blender: png jpg tiff bmp tga exr hdr",
    )
    p.add_argument("--renderer", default=None, metavar="NAME", help="renderer (default: builtin)")
    p.add_argument(
        "--renderer-option",
        action="append",
        default=[],
        metavar="OPT",
        help="an option for the renderer, e.g. +A0.3 for POV-Ray, engine=CYCLES for Blender "
        "(allow-listed; repeatable)",
    )
    p.add_argument(
        "--renderer-version",
        default="",
        metavar="VERSION",
        help="only nodes whose renderer version starts with this take the job (e.g. 3.7)",
    )
    p.add_argument(
        "--output",
        type=Path,
        metavar="DIR",
        help="output folder on the node's machine (default ./peerfarm-output/NAME)",
    )
    p.add_argument("--name", default=None, help="job name (default: the scene's name)")
    p.add_argument(
        "--padding",
        type=int,
        default=4,
        metavar="N",
        help="digits of the frame number in file names (default 4: name_0001.png)",
    )
    p.add_argument("--priority", type=int, default=0, help="higher renders first (default 0)")
    p.add_argument(
        "--video",
        action="store_true",
        help="also make NAME.mp4 (H.264) of the frames; needs ffmpeg on the node you submit to",
    )
    p.add_argument(
        "--fps",
        type=int,
        default=24,
        metavar="N",
        help="frames per second of the video and the GIF (default 24)",
    )
    p.add_argument(
        "--wait",
        action="store_true",
        help="show progress and return once every frame is in the output folder",
    )

    p = sub.add_parser("status", parents=[key], help="show the farm as one node sees it")
    p.add_argument("--node", required=True, metavar="HOST:PORT")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("cancel", parents=[key], help="cancel a job on every node")
    p.add_argument("job_id", metavar="JOB")
    p.add_argument("--node", required=True, metavar="HOST:PORT")

    p = sub.add_parser(
        "pause", parents=[key], help="pause a job on every node (chunks in flight finish)"
    )
    p.add_argument("job_id", metavar="JOB")
    p.add_argument("--node", required=True, metavar="HOST:PORT")

    p = sub.add_parser("resume", parents=[key], help="resume a paused job")
    p.add_argument("job_id", metavar="JOB")
    p.add_argument("--node", required=True, metavar="HOST:PORT")

    p = sub.add_parser("retry", parents=[key], help="render a job's failed frames again")
    p.add_argument("job_id", metavar="JOB")
    p.add_argument("--node", required=True, metavar="HOST:PORT")

    p = sub.add_parser(
        "priority", parents=[key], help="change a job's priority (higher renders first)"
    )
    p.add_argument("job_id", metavar="JOB")
    p.add_argument("priority", type=_priority, metavar="PRIORITY", help="-1000 to 1000")
    p.add_argument("--node", required=True, metavar="HOST:PORT")

    p = sub.add_parser("logs", parents=[key], help="show the renderer output of a job's chunks")
    p.add_argument("job_id", metavar="JOB")
    p.add_argument(
        "--frame",
        type=int,
        default=None,
        metavar="N",
        help="the chunk holding this frame (default: chunks that failed)",
    )
    p.add_argument("--node", required=True, metavar="HOST:PORT")

    p = sub.add_parser("demo", help="start a small farm on this machine and render builtin:demo")
    p.add_argument("--nodes", type=int, default=3, metavar="N", help="worker nodes (default 3)")
    p.add_argument("--frames", type=int, default=24, metavar="N", help="frames (default 24)")
    p.add_argument("--chunk", type=int, default=2, metavar="N", help="frames per chunk (default 2)")
    p.add_argument("--size", default="320x240", metavar="WxH")
    p.add_argument("--output", type=Path, default=Path("peerfarm-demo-output"), metavar="DIR")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        if args.command == "init":
            return init_farm(args.farm_key_file)
        if hasattr(args, "farm_key_file"):
            args.farm_key = resolve_key(args.farm_key_file)
        if args.command == "node":
            config = NodeConfig(
                listen=listen_address(args, 7100),
                data_dir=args.data_dir,
                bootstraps=args.bootstrap,
                slots=max(args.slots, 0),
                name=args.name,
                advertise=args.advertise,
                peer_timeout=max(args.peer_timeout, 0.3),
                zeroconf=not args.no_zeroconf,
                farm_key=args.farm_key,
            )
            return trio.run(serve, Node(config))
        if args.command == "gui":
            try:
                from ui.app import run_gui
            except ImportError as exc:
                raise CliError(
                    f"the desktop app needs PySide6 ({exc}); install it with "
                    f"pip install 'peerfarm[gui]'"
                ) from None
            return run_gui(args)
        if args.command == "bootstrap":
            from bootstrap_server.server import bootstrap_node

            node = bootstrap_node(listen_address(args, 7000), args.data_dir, farm_key=args.farm_key)
            node.config.advertise = args.advertise
            node.config.zeroconf = not args.no_zeroconf
            return trio.run(serve, node)
        if args.command == "submit":
            return trio.run(submit, args)
        if args.command == "status":
            return trio.run(status, args)
        if args.command in JOB_CONTROLS:
            return trio.run(control_job, args)
        if args.command == "logs":
            return trio.run(show_logs, args)
        if args.command == "demo":
            from peerfarm.demo import run_demo

            return run_demo(args)
    except (CliError, ClientError, SubmitError, FarmKeyError, IdentityError, SetupError) as exc:
        print(f"peerfarm: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 2


def listen_address(args: argparse.Namespace, port: int) -> tuple[str, int]:
    """--listen, else all interfaces with a farm key and loopback only without one."""
    if args.listen is not None:
        return args.listen
    if args.farm_key is None:
        print(
            f"peerfarm: no farm key, so this {args.command} listens on loopback only "
            f"(127.0.0.1:{port}) and serves this machine alone. To build a farm of several "
            f"machines, run `peerfarm init` once and copy the key file it writes to each of them",
            file=sys.stderr,
        )
        return ("127.0.0.1", port)
    return ("0.0.0.0", port)


def init_farm(path: Path | None) -> int:
    """Create a farm key and say how the other machines join."""
    path = path or default_key_path()
    key = new_key()
    write_key(key, path)
    default = path.resolve() == default_key_path().resolve()
    key_option = "" if default else f" --farm-key-file {path}"
    print(f"created a new farm: key id {key.key_id}, key file {path}")
    print()
    print("Keep the key file secret: anyone holding it can join the farm and run renders.")
    print(f"On every machine of the farm, copy it to {default_key_path()} (or anywhere, and")
    print(f"pass --farm-key-file PATH or set {ENV_VAR}), then start a node:")
    print()
    print(f"    peerfarm node --data-dir ~/peerfarm-node{key_option}")
    print()
    print("Nodes find each other on the LAN; across subnets, run a bootstrap server on one")
    print(f"machine (`peerfarm bootstrap --data-dir DIR{key_option}`) and give the nodes")
    print("--bootstrap HOST:7000.")
    return 0


_STOP_SIGNALS = [signal.SIGINT, signal.SIGTERM] + (
    [signal.SIGBREAK] if hasattr(signal, "SIGBREAK") else []  # Windows' Ctrl+Break
)


async def serve(node: Node) -> int:
    """Run a node until a signal: the first stops it gracefully (finishing the chunks
    in flight), a second at once (killing renderers, releasing their chunks)."""
    node.check_setup()  # a clear error before anything starts
    async with trio.open_nursery() as nursery:

        async def watch_signals() -> None:
            with trio.open_signal_receiver(*_STOP_SIGNALS) as signals:
                count = 0
                async for _ in signals:
                    count += 1
                    if count <= 2:
                        node.request_stop()  # 1st: finish in flight; 2nd: release and exit
                    else:
                        nursery.cancel_scope.cancel()

        nursery.start_soon(watch_signals)
        address = await nursery.start(node.run)
        # One line on stdout, so scripts (and `peerfarm demo`) learn the address.
        print(f"{node.config.role} {node.name} {node.node_id} listening on {address}", flush=True)
        await node._stopped.wait()
        nursery.cancel_scope.cancel()
    return 0


def read_scene(scene: str) -> tuple[str, str]:
    """(scene text, default job name) of a shipped scene, `builtin:NAME`."""
    from peerfarm.renderers.builtin import SceneError, builtin_scene_text

    name = scene.split(":", 1)[1]
    try:
        return builtin_scene_text(name), name
    except SceneError as exc:
        raise CliError(str(exc)) from None


def scene_fields(
    scene: str, renderer: str | None, spool: Path | None = None
) -> tuple[dict[str, Any], str]:
    """The scene part of a submit request, and the default job name.

    `builtin:NAME`, or a file, folder, .zip or .tar.gz read as a scene package
    (peerfarm.scenes: hostile archives are refused before anything is sent).
    The built-in renderer's scene travels as text; other scenes as files
    (`files`: path -> bytes, or with `spool`, big ones as paths; `submit`
    uploads them before it submits).
    """
    from peerfarm.core.actions import MAX_SCENE_BYTES
    from peerfarm.scenes import PackageError, load_package

    if scene.startswith("builtin:"):
        text, name = read_scene(scene)
        return {"scene": text}, name
    path = Path(scene)
    if not path.exists():
        raise CliError(f"scene {path} does not exist")
    name = path.name.split(".")[0] if path.is_file() else path.resolve().name
    try:
        package = load_package(path, renderer=renderer, spool=spool)
    except PackageError as exc:
        raise CliError(str(exc)) from None
    if package.renderer == "builtin":
        data = package.files[package.main]
        if not isinstance(data, bytes):  # kept on disk: bigger than any builtin scene
            raise CliError(
                f"{package.main} is too big for a built-in renderer scene "
                f"(at most {MAX_SCENE_BYTES // 1024} KiB)"
            )
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise CliError(f"{package.main} is not UTF-8 text") from None
        return {"scene": text, "renderer": "builtin"}, name
    return {"files": package.files, "main": package.main, "renderer": package.renderer}, name


def job_spec(args: argparse.Namespace, spool: Path | None = None) -> dict[str, Any]:
    scene, default_name = scene_fields(args.scene, args.renderer, spool)
    name = args.name or default_name
    width, height = parse_size(args.size) if args.size else (None, None)
    output = args.output or Path("peerfarm-output") / name
    return {
        "renderer": args.renderer,
        **scene,
        "name": name,
        "renderer_version": args.renderer_version,
        "options": args.renderer_option,
        "frames": list(parse_frames(args.frames)) if args.frames else None,
        "chunk_size": args.chunk,
        "tiles": args.tiles,
        "format": args.format,
        "video": args.video,
        "fps": args.fps,
        "padding": args.padding,
        "width": width,
        "height": height,
        "output": str(output.resolve()),
        "priority": args.priority,
    }


async def submit(args: argparse.Namespace) -> int:
    from peerfarm.runtime.upload import upload_scene

    # The spool holds big files of an archive while they are uploaded.
    with tempfile.TemporaryDirectory(prefix="peerfarm-submit-") as spool:
        spec = job_spec(args, Path(spool))
        async with NodeClient(args.node, args.farm_key) as client:
            files = spec.pop("files", None)
            if files:
                spec["manifest"], summary = await upload_scene(client, files)
                print(f"peerfarm: {summary.describe()}", file=sys.stderr, flush=True)
            job_id = await client.submit(spec)
    print(job_id, flush=True)
    if not args.wait:
        return 0
    return await wait_for_job(args.node, job_id, args.farm_key)


async def wait_for_job(
    node: str,
    job_id: str,
    farm_key: FarmKey | None = None,
    out=sys.stdout,  # noqa: ANN001
) -> int:
    """Show a live progress bar until every frame is in the output folder."""
    started = time.monotonic()
    tty = out.isatty()
    last_line: tuple = ()
    job: dict[str, Any] = {}
    async with NodeClient(node, farm_key) as client:
        while True:
            status = await client.status()
            job = next((j for j in status["jobs"] if j["id"] == job_id), {})
            if not job:
                raise CliError(f"job {job_id} is not known to the node at {node}")
            total, done = job["frames_total"], job["frames_done"]
            collected = job.get("frames_collected", 0)
            rate = done / max(time.monotonic() - started, 1e-6)
            unit = "frames"
            if job.get("tiles", 1) > 1:  # a tiled still: tiles show the progress
                total, done = job["chunks_total"], job["chunks_done"]
                rate = done / max(time.monotonic() - started, 1e-6)
                unit = f"tiles ({job['frames_done']}/{job['frames_total']} frames)"
            eta = f"{(total - done) / rate:5.0f}s" if rate > 0 else "    ?"
            width = 30
            filled = int(width * done / total) if total else width
            per_second = "tiles/s" if job.get("tiles", 1) > 1 else "fps"
            line = (
                f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {unit}, "
                f"{rate:4.1f} {per_second}, ETA {eta}, {collected} in output, {job['state']}"
            )
            if tty:
                print("\r" + line, end="", file=out, flush=True)
            elif (done, collected, job["state"]) != last_line:
                print(line, file=out, flush=True)  # a log file gets a line per change
            last_line = (done, collected, job["state"])
            if job["state"] in ("failed", "cancelled"):
                if tty:
                    print(file=out)
                reason = job.get("error") or "cancelled"
                raise CliError(f"job {job_id} {job['state']}: {reason}")
            if job.get("output_error"):
                raise CliError(job["output_error"])
            if job.get("complete"):
                break
            await trio.sleep(WAIT_POLL)
    if tty:
        print(file=out)
    elapsed = time.monotonic() - started
    animation = job["gif"] or f"none ({job.get('output_note') or 'no GIF'})"
    video = f"; video: {job['video_path']}" if job.get("video_path") else ""
    print(
        f"done: {job['frames_total']} frames in {job['output']} ({elapsed:.1f}s); "
        f"animation: {animation}{video}",
        file=out,
        flush=True,
    )
    return 0


async def status(args: argparse.Namespace) -> int:
    async with NodeClient(args.node, args.farm_key) as client:
        st = await client.status()
    if args.json:
        print(json.dumps(st, indent=2, sort_keys=True))
        return 0
    print(f"node {st['name']} ({st['node_id'][:12]}) at {st['address']}, role {st['role']}")
    print(f"state digest {st['state_digest'][:16]}, {st['log_length']} actions in the log")
    print(f"\npeers ({len(st['peers'])}):")
    for p in st["peers"]:
        link = "connected" if p["connected"] else "not connected"
        print(f"  {p['name'] or '?':<16} {p['address']:<22} {p['state']:<8} {link}")
    print(f"\njobs ({len(st['jobs'])}):")
    for j in st["jobs"]:
        tiles = j.get("tiles", 1)
        detail = f", {j['chunks_done']}/{j['chunks_total']} tiles" if tiles > 1 else ""
        print(
            f"  {j['id']}  {j['name']:<16} {j['state']:<10} {j['frames_done']}/{j['frames_total']}"
            f" frames{detail}"
        )
    return 0


JOB_CONTROLS = ("cancel", "pause", "resume", "retry", "priority")


async def control_job(args: argparse.Namespace) -> int:
    """cancel, pause, resume, retry, priority: one farm-wide action on one job."""
    job = args.job_id
    async with NodeClient(args.node, args.farm_key) as client:
        if args.command == "cancel":
            await client.cancel(job)
            print(f"job {job} cancelled")
        elif args.command == "pause":
            await client.pause(job)
            print(f"job {job} paused: no new frames start; frames rendering now finish")
        elif args.command == "resume":
            await client.resume(job)
            print(f"job {job} resumed")
        elif args.command == "retry":
            frames = await client.retry(job)
            print(f"job {job}: {frames} failed frame(s) will be rendered again")
        else:
            await client.set_priority(job, args.priority)
            print(f"job {job} now has priority {args.priority}")
    return 0


async def show_logs(args: argparse.Namespace) -> int:
    async with NodeClient(args.node, args.farm_key) as client:
        logs = await client.logs(args.job_id, args.frame)
    if not logs:
        print(f"no renderer logs for job {args.job_id} yet (nothing rendered or failed)")
    for entry in logs:
        a, b = entry["frames"]
        where = entry["node_name"] or entry["node_id"][:8]
        note = ", failed here" if entry["failed_here"] else ""
        part = (
            f"frames {a}-{b}" if entry.get("tile") is None else f"tile {entry['tile']} of frame {a}"
        )
        print(f"== chunk {entry['chunk']} ({part}, {entry['state']}) on {where}{note} ==")
        print(entry["text"].rstrip() or "(empty)")
        print()
    return 0
