"""`peerfarm submit SCENE --watch`: re-render a scene each time it is saved.

The first revision is submitted as any job. Then the scene's folder is watched
(peerfarm/scenes/watch.py); after each burst of saves the scene is read again,
its files hashed, and if anything changed a new revision is submitted:

- only changed files travel (the node already holds the others' blobs: upload.py
  asks before it sends);
- the new job names the one it replaces (``supersedes``), and the farm cancels that
  one as the new one arrives, on every node alike: its chunks still rendering stop;
- chunks are taken in spread order (first, last, middle...), so the whole shot is
  seen early; the frames go to the same output folder, where the old revision's
  frames stay until the new ones replace them.

Each revision's job id is printed on its own line of stdout. Ctrl+C stops watching
(the last revision goes on rendering).
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import trio

from peerfarm.cli.errors import CliError
from peerfarm.core.chunk_order import SPREAD
from peerfarm.job_request import JobRequest, SubmitError
from peerfarm.runtime.addresses import from_this_machine
from peerfarm.runtime.client import ClientError, NodeClient
from peerfarm.runtime.upload import UploadSummary, upload_scene
from peerfarm.scenes.watch import scene_changes, scene_key, watched_folder


def _say(text: str) -> None:
    print(f"peerfarm: {text}", file=sys.stderr, flush=True)


async def send_job(
    args: argparse.Namespace, request: JobRequest
) -> tuple[str, tuple[str, ...], dict[str, Any] | None, UploadSummary | None]:
    """Upload what the node lacks and submit: (job id, notes, manifest, upload summary).
    Scene notes and the renderer's notes are printed."""
    for note in request.scene_notes:
        _say(f"note: {note}")
    manifest = summary = None
    async with NodeClient(args.node, args.farm_key) as client:
        if request.files:
            manifest, summary = await upload_scene(client, request.files)
            request = request.replace(files=None, manifest=manifest)
        job_id, notes = await client.submit_job(request)
    for note in notes:
        _say(f"note: {note}")
    return job_id, tuple(notes), manifest, summary


async def submit_and_watch(args: argparse.Namespace) -> int:
    from peerfarm.cli.commands import request_from_args

    if args.scene.startswith("builtin:"):
        raise CliError("--watch watches a scene file or folder; builtin scenes never change")
    if args.wait:
        raise CliError("--watch and --wait do not go together: --watch submits until Ctrl+C")
    order = args.order or SPREAD

    async def revision(supersedes: str) -> tuple[str, Any] | None:
        """Read the scene and submit it if it changed; (job id, scene key) or None."""
        with tempfile.TemporaryDirectory(prefix="peerfarm-submit-") as spool:
            try:
                request = request_from_args(args, Path(spool)).replace(
                    order=order, supersedes=supersedes
                )
            except SubmitError as exc:
                if not supersedes:
                    raise
                _say(f"the scene cannot be submitted now: {exc}; waiting for the next save")
                return None
            # Hashed before anything is sent: an unchanged scene is not a revision.
            key = await trio.to_thread.run_sync(
                scene_key, request.scene, request.main, request.files
            )
            if supersedes and key == last_key:
                return None
            try:
                job_id, _, _, summary = await send_job(args, request)
            except (ClientError, SubmitError) as exc:
                if not supersedes:
                    raise
                _say(f"revision not submitted: {exc}; waiting for the next save")
                return None
        sent = f" ({summary.describe()})" if summary is not None else ""
        if supersedes:
            _say(f"scene changed: job {job_id} replaces job {supersedes}{sent}")
        elif summary is not None:
            _say(summary.describe())
        print(job_id, flush=True)
        return job_id, key

    scene = Path(args.scene)
    folder = watched_folder(scene)
    with tempfile.TemporaryDirectory(prefix="peerfarm-submit-") as spool:
        output = Path(request_from_args(args, Path(spool)).output).resolve()
    here = from_this_machine(args.node)  # else the frames go to the node's machine
    if here and scene.is_dir() and (output == folder or folder in output.parents):
        raise CliError(
            f"the output folder {output} is inside the scene folder {folder}: every frame "
            "written would change the scene; choose an output folder outside it (--output)"
        )
    job_id = ""
    last_key: Any = None
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_interrupt, scope)
            # The first (empty) change says the folder is watched: the scene is read
            # after it, so a save made while the first revision uploads is not missed.
            async for _ in scene_changes(scene, ignore=output if here else None):
                new = await revision(job_id)
                if new is None:
                    continue
                if not job_id:
                    _say(f"watching {folder} for changes; Ctrl+C stops watching")
                job_id, last_key = new
    if job_id:
        _say(f"stopped watching; job {job_id} goes on rendering")
    return 0


async def _cancel_on_interrupt(scope: trio.CancelScope) -> None:
    """Ctrl+C (or SIGTERM) ends the watch cleanly instead of a traceback."""
    stops = [signal.SIGINT, signal.SIGTERM]
    with trio.open_signal_receiver(*stops) as signals:
        async for _ in signals:
            scope.cancel()
            return
