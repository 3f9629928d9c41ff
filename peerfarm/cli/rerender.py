"""`peerfarm submit SCENE --watch`: re-render a scene each time it is saved; and
`--preview`: a quick pass of the shot before the full render (peerfarm/preview.py).

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from peerfarm.cli.errors import CliError
from peerfarm.core.chunk_order import SPREAD
from peerfarm.core.refused import Refused
from peerfarm.job_request import JobRequest, SubmitError
from peerfarm.runtime.addresses import from_this_machine
from peerfarm.runtime.client import ClientError, NodeClient
from peerfarm.runtime.upload import UploadSummary, upload_scene
from peerfarm.scenes.watch import scene_changes, scene_key, watched_folder


def _say(text: str) -> None:
    print(f"peerfarm: {text}", file=sys.stderr, flush=True)


async def send_job(
    args: argparse.Namespace, request: JobRequest, notes_shown: bool = True
) -> tuple[str, UploadSummary | None]:
    """Upload what the node lacks and submit: (job id, what the upload sent). Scene
    notes and the renderer's notes are printed (if ``notes_shown``)."""
    for note in request.scene_notes if notes_shown else ():
        _say(f"note: {note}")
    summary = None
    async with NodeClient(args.node, args.farm_key) as client:
        if request.files:
            manifest, summary = await upload_scene(client, request.files)
            request = request.replace(files=None, manifest=manifest)
        job_id, notes = await client.submit_job(request)
    for note in notes if notes_shown else ():
        _say(f"note: {note}")
    return job_id, summary


@dataclass(frozen=True)
class Revision:
    """One submitted revision of the scene: its job, its preview job ("" for none), and
    what its files were."""

    job_id: str
    preview_id: str
    key: Any


async def send_revision(
    args: argparse.Namespace, request: JobRequest, last: Revision | None, key: Any = None
) -> Revision:
    """Submit the scene (its preview first, with --preview); each job replaces its
    counterpart of the ``last`` revision. Prints the job id on stdout. ``key``: the
    scene's key (peerfarm.scenes.watch.scene_key), if known already."""
    if key is None:
        key = await trio.to_thread.run_sync(scene_key, request.scene, request.main, request.files)
    preview_id = ""
    uploaded = None  # what the preview's upload sent: the full job's then sends nothing
    if args.preview:
        from peerfarm.preview import preview_request
        from peerfarm.renderers.registry import renderer_plugins

        quick = await trio.to_thread.run_sync(preview_request, request, renderer_plugins())
        quick = quick.replace(supersedes=last.preview_id if last else "")
        # The full job shows the notes: they are the same scene's.
        preview_id, uploaded = await send_job(args, quick, notes_shown=False)
        size = f"{quick.width}x{quick.height}" if quick.width else "the scene's own size"
        _say(f"preview: job {preview_id} ({size}, quick settings, first), frames in {quick.output}")
    job_id, summary = await send_job(args, request.replace(supersedes=last.job_id if last else ""))
    if summary is not None and uploaded is not None:
        summary.sent_files += uploaded.sent_files
        summary.sent_bytes += uploaded.sent_bytes
    sent = f" ({summary.describe()})" if summary is not None else ""
    if last is not None:
        _say(f"scene changed: job {job_id} replaces job {last.job_id}{sent}")
    elif summary is not None:
        _say(summary.describe())
    print(job_id, flush=True)
    return Revision(job_id, preview_id, key)


async def submit_scene(args: argparse.Namespace) -> int:
    """`peerfarm submit` with --preview and/or --watch."""
    from peerfarm.cli.commands import request_from_args
    from peerfarm.cli.progress import wait_for_job

    if args.watch and args.scene.startswith("builtin:"):
        raise CliError("--watch watches a scene file or folder; builtin scenes never change")
    if args.watch and args.wait:
        raise CliError("--watch and --wait do not go together: --watch submits until Ctrl+C")
    order = args.order or (SPREAD if args.watch else None)

    def read(spool: str) -> JobRequest:
        return request_from_args(args, Path(spool)).replace(order=order)

    if not args.watch:
        with tempfile.TemporaryDirectory(prefix="peerfarm-submit-") as spool:
            first = await send_revision(args, read(spool), None)
        return await wait_for_job(args.node, first.job_id, args.farm_key) if args.wait else 0

    async def revision(last: Revision | None) -> Revision | None:
        """Read the scene and submit it if it changed since ``last``."""
        with tempfile.TemporaryDirectory(prefix="peerfarm-submit-") as spool:
            if last is None:
                return await send_revision(args, read(spool), None)
            try:
                request = read(spool)
                # Hashed before anything is sent: an unchanged scene is not a revision.
                key = await trio.to_thread.run_sync(
                    scene_key, request.scene, request.main, request.files
                )
                if key == last.key:
                    return None
                return await send_revision(args, request, last, key)
            except (ClientError, SubmitError) as exc:
                _say(f"the scene was not submitted again: {exc}; waiting for the next save")
                return None

    scene = Path(args.scene)
    folder = watched_folder(scene)
    with tempfile.TemporaryDirectory(prefix="peerfarm-submit-") as spool:
        output = Path(read(spool).output).resolve()
    here = from_this_machine(args.node)  # else the frames go to the node's machine
    if here and scene.is_dir() and (output == folder or folder in output.parents):
        raise CliError(
            f"the output folder {output} is inside the scene folder {folder}: every frame "
            "written would change the scene; choose an output folder outside it (--output)"
        )
    last: Revision | None = None
    failure: Exception | None = None  # the first revision's: raised outside the nursery
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_interrupt, scope)
            # The first (empty) change says the folder is watched: the scene is read
            # after it, so a save made while the first revision uploads is not missed.
            async for _ in scene_changes(scene, ignore=output if here else None):
                try:
                    new = await revision(last)
                except (ClientError, Refused) as exc:
                    failure = exc
                    scope.cancel()
                    break
                if new is None:
                    continue
                if last is None:
                    _say(f"watching {folder} for changes; Ctrl+C stops watching")
                last = new
    if failure is not None:
        raise failure
    if last is not None:
        _say(f"stopped watching; job {last.job_id} goes on rendering")
    return 0


async def _cancel_on_interrupt(scope: trio.CancelScope) -> None:
    """Ctrl+C (or SIGTERM) ends the watch cleanly instead of a traceback."""
    stops = [signal.SIGINT, signal.SIGTERM]
    with trio.open_signal_receiver(*stops) as signals:
        async for _ in signals:
            scope.cancel()
            return
