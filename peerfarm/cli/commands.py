"""The `peerfarm` commands that talk to a node as a client: init, submit, status,
job control (cancel, pause, resume, retry, priority), logs, gc."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from peerfarm.cli.progress import wait_for_job
from peerfarm.core.requirements import memory_text
from peerfarm.core.retention import size_text
from peerfarm.core.user_text import parse_frames, parse_size
from peerfarm.job_request import JobRequest, scene_request
from peerfarm.runtime.addresses import from_this_machine
from peerfarm.runtime.client import NodeClient
from peerfarm.runtime.node import WARNING
from peerfarm.runtime.retention import summary
from peerfarm.security.farm_key import ENV_VAR, default_key_path, new_key, write_key


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
    print(f"    peerfarm node{key_option}")
    print()
    print("Nodes find each other on the LAN; across subnets, run a bootstrap server on one")
    print(f"machine (`peerfarm bootstrap{key_option}`) and give the nodes --bootstrap HOST:7000.")
    print("`peerfarm doctor` checks a machine; docs/quick-start.md shows the whole way.")
    return 0


def request_from_args(args: argparse.Namespace, spool: Path | None = None) -> JobRequest:
    """The job request `peerfarm submit` makes of its arguments."""
    request = scene_request(args.scene, args.renderer, spool)
    name = args.name or request.name
    width, height = parse_size(args.size) if args.size else (None, None)
    output = args.output or Path("peerfarm-output") / name
    return request.replace(
        renderer=request.renderer or args.renderer,
        name=name,
        renderer_version=args.renderer_version,
        options=list(args.renderer_option),
        frames=parse_frames(args.frames) if args.frames else None,
        chunk_size=args.chunk,
        tiles=args.tiles,
        format=args.format,
        video=args.video,
        fps=args.fps,
        padding=args.padding,
        width=width,
        height=height,
        # On this machine: the folder the user means here. On another machine the node
        # puts it inside its folder for remote jobs (--remote-outputs): a relative
        # path stays relative.
        output=str(output.resolve()) if from_this_machine(args.node) else str(output),
        priority=args.priority,
        order=args.order,
        require=list(args.require),
        require_memory=args.require_memory,
        max_nodes=args.max_nodes,
    )


async def submit(args: argparse.Namespace) -> int:
    from peerfarm.runtime.upload import upload_scene

    if args.watch or args.preview:
        from peerfarm.cli.rerender import submit_scene

        return await submit_scene(args)

    # The spool holds big files of an archive while they are uploaded.
    with tempfile.TemporaryDirectory(prefix="peerfarm-submit-") as spool:
        request = request_from_args(args, Path(spool))
        for note in request.scene_notes:
            print(f"peerfarm: note: {note}", file=sys.stderr, flush=True)
        async with NodeClient(args.node, args.farm_key) as client:
            if request.files:
                manifest, summary = await upload_scene(client, request.files)
                print(f"peerfarm: {summary.describe()}", file=sys.stderr, flush=True)
                request = request.replace(files=None, manifest=manifest)
            job_id, notes = await client.submit_job(request)
    for note in notes:  # stderr: the job id stays the first line of stdout
        what = "" if note.startswith(WARNING) else "note: "
        print(f"peerfarm: {what}{note}", file=sys.stderr, flush=True)
    print(job_id, flush=True)
    if not args.wait:
        return 0
    return await wait_for_job(args.node, job_id, args.farm_key)


async def status(args: argparse.Namespace) -> int:
    async with NodeClient(args.node, args.farm_key) as client:
        st = await client.status()
    if args.json:
        print(json.dumps(st, indent=2, sort_keys=True))
        return 0
    print(f"node {st['name']} ({st['node_id'][:12]}) at {st['address']}, role {st['role']}")
    print(f"state digest {st['state_digest'][:16]}, {st['log_length']} actions in the log")
    features = ", ".join(st.get("features", [])) or "none"
    print(f"protocol {st.get('protocol')}, features enabled in the farm: {features}")
    if st.get("faulty"):
        print(
            "this node's id signed two different actions (another machine runs with its "
            "identity: a copied data folder?); the farm ignores it: restart it and it "
            "joins as a new node"
        )
    for name, why in sorted(st.get("renderers_not_offered", {}).items()):
        print(f"{name} is not offered by this node: {why}")
    if st.get("speeds"):
        print(f"this node's measured speed: {describe_speeds(st['speeds'])}")
    if "tags" in st and st.get("worker") is not None:  # a node that renders
        print(f"this node: {describe_machine(st)}")
    print(f"\npeers ({len(st['peers'])}):")
    for p in st["peers"]:
        link = "connected" if p["connected"] else "not connected"
        speed = f"  {describe_speeds(p['speeds'])}" if p.get("speeds") else ""
        machine = f"  {describe_machine(p)}" if p.get("renders") else ""
        print(f"  {p['name'] or '?':<16} {p['address']:<22} {p['state']:<8} {link}{machine}{speed}")
    print(f"\njobs ({len(st['jobs'])}):")
    for j in st["jobs"]:
        tiles = j.get("tiles", 1)
        detail = f", {j['chunks_done']}/{j['chunks_total']} tiles" if tiles > 1 else ""
        needs = describe_requirements(j)
        print(
            f"  {j['id']}  {j['name']:<16} {j['state']:<10} {j['frames_done']}/{j['frames_total']}"
            f" frames{detail}{f'  ({needs})' if needs else ''}"
        )
        for why in (j.get("waiting"), j.get("output_waiting")):
            if why:
                print(f"      {why}")
    return 0


def describe_machine(node: dict) -> str:
    """ "tags gpu, lab2; 16 GiB, 8 cores": what a node advertises (status, peers[])."""
    tags = ", ".join(node.get("tags", [])) or "none"
    memory = memory_text(node["memory"]) if node.get("memory") else "memory unknown"
    cores = f"{node['cores']} cores" if node.get("cores") else "cores unknown"
    return f"tags {tags}; {memory}, {cores}"


def describe_requirements(job: dict) -> str:
    """ "requires gpu, 16 GiB; at most 4 nodes": a job's requirements and limit."""
    needs = list(job.get("require", []))
    if job.get("require_memory"):
        needs.append(memory_text(job["require_memory"]))
    parts = [f"requires {', '.join(needs)}"] if needs else []
    if job.get("max_nodes"):
        parts.append(f"at most {job['max_nodes']} node{'s' if job['max_nodes'] != 1 else ''}")
    return "; ".join(parts)


def describe_speeds(speeds: dict[str, dict[str, float]]) -> str:
    """ "builtin 1.20 s/frame (start-up 0.65 s)" per renderer a node measured itself with."""
    return ", ".join(
        f"{name} {s['frame_seconds']:.2f} s/frame (start-up {s['startup_seconds']:.2f} s)"
        for name, s in sorted(speeds.items())
    )


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
        print(f"no renderer logs for job {args.job_id} yet (nothing rendering, rendered or failed)")
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


GC_LINES = 50  # deletions listed one by one (--json lists them all)


async def collect_garbage(args: argparse.Namespace) -> int:
    """`peerfarm gc`: the node's retention now, and what it freed."""
    async with NodeClient(args.node, args.farm_key) as client:
        rep = await client.gc(args.dry_run)
    if args.json:
        print(json.dumps(rep, indent=2, sort_keys=True))
        return 0
    print(summary(rep))
    for entry in rep["deleted"][:GC_LINES]:
        print(
            f"  {entry['kind']:<6} {entry['name']:<20} {size_text(entry['bytes']):>10}  "
            f"{entry['reason']}"
        )
    more = len(rep["deleted"]) - GC_LINES
    if more > 0:
        print(f"  ... and {more} more (--json lists them all)")
    grace_hours = rep["grace"] / 3600
    print(
        f"kept {size_text(rep['needed_bytes'])} that live jobs need, and "
        f"{size_text(rep['grace_bytes'])} of collected frames in their grace "
        f"({grace_hours:g} h); the data folder held {size_text(rep['total_bytes'])}"
    )
    if rep["over_budget_bytes"]:
        print(
            f"over the budget of {size_text(rep['budget'])} by "
            f"{size_text(rep['over_budget_bytes'])}: all of it is needed by live jobs or too "
            "recent to delete"
        )
    for error in rep["errors"]:
        print(f"could not delete {error} (tried again at the next run)", file=sys.stderr)
    return 0
