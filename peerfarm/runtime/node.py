"""The node: worker and manager in one object that runs inside any trio run.

The CLI runs it with ``trio.run``, the bootstrap server runs its non-rendering
variant, and the desktop app will run it in Qt's event loop (trio guest mode).
So: no global state, no ``trio.run`` in here, nothing blocking on the event
loop (disk work goes through ``trio.to_thread``).

What a node owns:
- the ordered action log (``peerfarm.core.log``) and its file on disk;
- the known-worker list (KWL) and a link to every peer on it (full mesh);
- a worker (``--slots`` renderer processes) and an output collector (pulls the
  frames of the jobs this node submitted into their output folder).
"""

from __future__ import annotations

import ipaddress
import logging
import random
import secrets
import socket
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from peerfarm.core import actions as act
from peerfarm.core.actions import Action, InvalidAction, validate_action
from peerfarm.core.log import ActionLog
from peerfarm.core.state import ACTIVE, CANCELLED, CHUNK_FAILED, DOWN, JOB_FAILED, LEFT, UP, Job
from peerfarm.jobspec import SubmitError, build_new_job, check_files, check_manifest, manifest_of
from peerfarm.renderers.registry import probe_renderers, renderer_plugins
from peerfarm.runtime import store
from peerfarm.runtime.addresses import format_address
from peerfarm.runtime.blobs import BlobError, BlobStore, serve_blob
from peerfarm.runtime.discovery import LanDiscovery
from peerfarm.runtime.link import HandshakeError, Link, accept, dial
from peerfarm.runtime.renderer_logs import collect_logs, read_log_tail
from peerfarm.runtime.tls import server_context
from peerfarm.runtime.video import ffmpeg_problem
from peerfarm.scenes import DEFAULT_LIMITS
from peerfarm.security.farm_key import FarmKey, key_id_of
from peerfarm.security.identity import Identity, load_or_create_identity
from peerfarm.wire.framing import ProtocolError
from peerfarm.wire.messages import PROTOCOL_VERSION, MessageError, message

log = logging.getLogger(__name__)

ANTI_ENTROPY_INTERVAL = 2.0
RECONNECT_GRACE = 0.5  # a lost link not re-established within this: the peer is down
DETECT_INTERVAL = 0.1
SYNC_TIMEOUT = 3.0
MAX_BACKOFF = 5.0
LEAVE_TIMEOUT = 3.0
FRAME_FETCH_TIMEOUT = 30.0
# Bounds on inbound connections, so a flood from one address cannot starve the node.
# A handshake slot is held at most HANDSHAKE_TIMEOUT (runtime/link.py); one address
# can hold a few, so a flood from it leaves room for everyone else.
MAX_PENDING_HANDSHAKES = 128
MAX_PENDING_PER_ADDRESS = 16
MAX_CONNECTIONS_PER_ADDRESS = 64
REFUSAL_LOG_WINDOW = 10.0  # log the first refusal per address per window, count the rest


class SetupError(ValueError):
    """The node cannot start as configured; the message says what to change."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


JoinHandler = Callable[["Node", Link], Awaitable[None]]
CLIENT_REQUESTS = ("SUBMIT", "STATUS", "CANCEL", "PAUSE", "RESUME", "RETRY", "PRIORITY")


@dataclass
class NodeConfig:
    listen: tuple[str, int]
    data_dir: Path
    bootstraps: list[tuple[str, int]] = field(default_factory=list)
    slots: int = 1
    name: str = ""
    renders: bool = True
    role: str = "node"  # "node" or "bootstrap"
    advertise: str = ""  # address peers should dial; default: the listen address
    peer_timeout: float = 3.0  # silent this long: down (half of it: suspect)
    zeroconf: bool = True  # announce and find nodes on the LAN
    farm_key: FarmKey | None = None  # None: a loopback-only farm (docs/security.md)


class Node:
    def __init__(self, config: NodeConfig, *, join_handler: JoinHandler | None = None) -> None:
        self.config = config
        self.data_dir = config.data_dir
        self.join_handler = join_handler
        self.log = ActionLog()
        self.node_id = ""
        self.name = ""
        self.address = ""
        self.kwl: dict[str, dict[str, str]] = {}
        self._kwl_lock = trio.Lock()
        self.links: dict[str, Link] = {}  # mesh peers by node id (clients are not here)
        self.stopping = False
        self.synced = trio.Event()
        self._changed = trio.Event()
        self._stop_requested = trio.Event()
        self._stop_now = trio.Event()
        self._started_at = 0.0
        self._lost_at: dict[str, float] = {}  # peer id -> when its link was lost
        self._declared_down: dict[str, int] = {}  # peer id -> incarnation we declared down
        self._stopped = trio.Event()
        self._flush_ready = trio.Event()
        self._flushed = trio.Event()
        self._to_persist: list[dict[str, Any]] = []
        self._to_broadcast: list[dict[str, Any]] = []
        self._logfile = store.LogFile(config.data_dir / "log.bin")
        self._nursery: trio.Nursery | None = None
        self._dialing: set[str] = set()  # node ids / bootstrap addresses with a dial loop
        self._join_vv: dict[str, int] | None = None
        # Requests to peers awaiting their answer: key -> (answered, [answer message]).
        # key: (peer id, "frame", job id, frame, tile or -1), (peer id, "log", job id, chunk)
        # or (peer id, "blob", sha, offset)
        self._waiters: dict[tuple[Any, ...], tuple[trio.Event, list[dict[str, Any]]]] = {}
        self.plugins = renderer_plugins()
        self.renderers: dict[str, str] = {}  # what this machine can render: name -> version
        self.worker: Any = None
        self.collector: Any = None
        self.blobs = BlobStore(config.data_dir / "blobs")  # content-addressed (runtime/blobs.py)
        self.identity: Identity | None = None
        self._tls_context: Any = None
        self._pending_handshakes: Counter[str] = Counter()  # handshakes in progress per host
        self._connections: Counter[str] = Counter()  # live inbound connections per host
        self._refusals: dict[str, tuple[float, int]] = {}  # host -> (window start, count)
        self._upload_lock = trio.Lock()

    # -- the public API (used by the faces) ---------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until ``request_stop``; ``task_status.started`` gets the listen address."""
        from peerfarm.runtime.collector import Collector
        from peerfarm.runtime.worker import Worker

        self.check_setup()
        host, port = self.config.listen
        await self._load()
        self._tls_context = server_context(self.identity)
        if self.config.renders:
            self.renderers = await trio.to_thread.run_sync(probe_renderers, self.plugins)
            log.info(
                "renderers here: %s",
                ", ".join(f"{n} {v}" for n, v in sorted(self.renderers.items())) or "none",
            )
        self._started_at = trio.current_time()
        listeners = await trio.open_tcp_listeners(port, host=host)
        bound_port = listeners[0].socket.getsockname()[1]
        self.address = self.config.advertise or format_address(_advertised_host(host), bound_port)
        log.info(
            "%s %s (%s) listening on %s",
            self.config.role,
            self.name,
            self.node_id[:8],
            self.address,
        )
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(trio.serve_listeners, self._handle_inbound, listeners)
            nursery.start_soon(self._flusher)
            nursery.start_soon(self._anti_entropy)
            nursery.start_soon(self._heartbeats)
            if self.config.zeroconf:
                nursery.start_soon(LanDiscovery(self).run)
            for peer_id in list(self.kwl):
                self._ensure_dialing(peer_id)
            for bootstrap in self.config.bootstraps:
                self._ensure_dialing_bootstrap(format_address(*bootstrap))
            if self.config.renders:
                self.worker = Worker(self, self.config.slots)
            self.collector = Collector(self)
            nursery.start_soon(self._start_working)
            task_status.started(self.address)
            await self._stop_requested.wait()
            await self._leave()
            nursery.cancel_scope.cancel()
        self._stopped.set()

    def check_setup(self) -> None:
        """Raise SetupError if the node cannot start as configured (``run`` calls it too)."""
        host = self.config.listen[0]
        if self.config.farm_key is None and not is_loopback(host):
            raise SetupError(
                f"this {self.config.role} has no farm key, so it only listens on loopback "
                f"(127.0.0.1), not on {host}: anyone on the network could otherwise run renders "
                f"here. Create a farm key with `peerfarm init` (or copy your farm's key file "
                f"here) and pass --farm-key-file PATH"
            )

    def request_stop(self) -> None:
        """First call: stop claiming, finish the chunks in flight, announce leaving, exit.
        Second call: kill the renderers, release their chunks, exit at once."""
        if self._stop_requested.is_set():
            self._stop_now.set()
        self._stop_requested.set()

    @property
    def state(self):  # noqa: ANN201 - peerfarm.core.state.State
        return self.log.state

    async def wait_for_change(self, timeout: float | None = None) -> None:
        """Return after the next state change (or the timeout)."""
        event = self._changed
        if timeout is None:
            await event.wait()
        else:
            with trio.move_on_after(timeout):
                await event.wait()

    def emit(self, type_: str, payload: dict[str, Any]) -> Action:
        """Create one of our own actions, apply it now, persist it, then broadcast it."""
        action = self.log.create(self.node_id, type_, payload)
        validate_action(action.to_wire())  # our own bugs must not reach the farm
        self.log.add(action)
        wire = action.to_wire()
        self._to_persist.append(wire)
        self._to_broadcast.append(wire)
        self._flush_ready.set()
        self._notify_change()
        return action

    async def submit(self, spec: dict[str, Any]) -> str:
        """Validate a job spec and emit NEW_JOB; returns the job id. Raises SubmitError.

        Scene files come inline (``spec["files"]``: path -> bytes), and are stored
        as blobs here; or were uploaded as blobs before (PUT_BLOB), and
        ``spec["manifest"]`` (path -> {sha, size}) names them. Workers fetch them
        from this node (or from each other) when they render.
        """
        if self.stopping:
            raise SubmitError("this node is stopping; submit to another node")
        job_id = secrets.token_hex(6)
        farm_renderers = set(self.renderers) | {  # ours count even before we announce
            name for p in self.state.peers.values() if p.state == UP for name, _ in p.renderers
        }
        if spec.get("files") is None and spec.get("manifest") is not None:
            manifest = check_manifest(spec["manifest"])
            uploaded = await trio.to_thread.run_sync(self._uploaded_files, manifest)
            files: dict[str, bytes] = {}  # nothing more to store
            # Plugins read the uploaded files where the blob store keeps them.
            spec = {**spec, "files": uploaded, "manifest": manifest}
        else:
            files = check_files(spec.get("files"))
            spec = {**spec, "manifest": await trio.to_thread.run_sync(manifest_of, files)}
        video_problem = None
        if spec.get("video"):  # this node's collector will run ffmpeg
            video_problem = await trio.to_thread.run_sync(ffmpeg_problem)
        # In a thread: a plugin may run its renderer to read the scene (Blender does).
        payload = await trio.to_thread.run_sync(
            build_new_job, spec, job_id, self.plugins, farm_renderers, video_problem
        )
        for data in files.values():
            await trio.to_thread.run_sync(self.blobs.put_bytes, data)
        self.emit(act.NEW_JOB, payload)
        return job_id

    def _uploaded_files(self, manifest: dict[str, dict[str, Any]]) -> dict[str, Path]:
        """path -> blob file of a manifest whose blobs a client uploaded (blocking)."""
        files = {}
        for path, entry in manifest.items():
            complete, held = self.blobs.held(entry["sha"])
            if not complete:
                raise SubmitError(
                    f"scene file {path!r} was not uploaded to this node (blob "
                    f"{entry['sha'][:12]} is missing or incomplete); submit again"
                )
            if held != entry["size"]:
                raise SubmitError(
                    f"scene file {path!r}: the manifest says {entry['size']} bytes, but its "
                    f"blob {entry['sha'][:12]} has {held}; submit again"
                )
            files[path] = self.blobs.path(entry["sha"])
        return files

    async def _answer_upload(self, msg: dict[str, Any]) -> dict[str, Any]:
        """HAVE_BLOBS and PUT_BLOB: a client uploading scene files before SUBMIT."""
        blobs = self.blobs
        if msg["type"] == "HAVE_BLOBS":
            held = await trio.to_thread.run_sync(lambda: [blobs.held(sha) for sha in msg["shas"]])
            return message("BLOBS_HELD", blobs=[{"complete": c, "held": n} for c, n in held])
        sha, size = msg["sha"], msg["size"]
        if size > DEFAULT_LIMITS.max_file_bytes:
            return message(
                "REFUSED",
                message=f"a scene file may have at most {DEFAULT_LIMITS.max_file_bytes} bytes; "
                f"blob {sha[:12]} has {size}",
            )
        try:
            async with self._upload_lock:  # one piece at a time: appends must not interleave
                held, complete = await trio.to_thread.run_sync(
                    blobs.put_piece, sha, size, msg["offset"], msg["data"]
                )
        except (BlobError, OSError) as exc:
            return message("REFUSED", message=f"cannot store the upload: {exc}"[:4000])
        return message("BLOB_PUT", sha=sha, held=held, complete=complete)

    def _job(self, job_id: str) -> Job:
        job = self.state.jobs.get(job_id)
        if job is None:
            raise SubmitError(f"no job {job_id!r} on this farm; `peerfarm status` lists the jobs")
        return job

    def cancel(self, job_id: str) -> None:
        job = self._job(job_id)
        if job.state != ACTIVE:
            raise SubmitError(f"job {job_id} is already {job.state}")
        self.emit(act.CANCEL_JOB, {"job_id": job_id})

    # Job control is farm-wide: each is a replicated action (see core/reducers.py).

    def pause(self, job_id: str) -> None:
        """No node starts new chunks of the job; chunks in flight finish."""
        job = self._job(job_id)
        if job.state != ACTIVE:
            raise SubmitError(f"job {job_id} is {job.state}; only active jobs can be paused")
        if job.paused:
            raise SubmitError(f"job {job_id} is already paused")
        self.emit(act.PAUSE_JOB, {"job_id": job_id})

    def resume(self, job_id: str) -> None:
        job = self._job(job_id)
        if not job.paused:
            raise SubmitError(f"job {job_id} is not paused")
        self.emit(act.RESUME_JOB, {"job_id": job_id})

    def retry(self, job_id: str) -> int:
        """Render the job's failed frames again; returns how many frames that is."""
        job = self._job(job_id)
        if job.state not in (ACTIVE, JOB_FAILED):
            raise SubmitError(f"job {job_id} is {job.state}: there is nothing to retry")
        failed = [i for i, c in job.chunks.items() if c.state == CHUNK_FAILED or c.failed_on]
        if not failed and not job.failures:
            raise SubmitError(f"job {job_id} has no failed frames to retry")
        self.emit(act.RETRY_JOB, {"job_id": job_id})
        return sum(len(job.frames_of(i)) for i in failed)

    def set_priority(self, job_id: str, priority: int) -> None:
        self._job(job_id)
        if type(priority) is not int or not -1000 <= priority <= 1000:
            raise SubmitError(f"priority {priority!r}: give a whole number from -1000 to 1000")
        self.emit(act.SET_PRIORITY, {"job_id": job_id, "priority": priority})

    # This machine's worker: its own settings, not replicated (except its slots,
    # which the farm sees through PEER_JOINED).

    def pause_worker(self) -> None:
        """Stop rendering on this machine now: renders in flight are stopped and their
        chunks given back to the farm."""
        if self.worker is not None:
            self.worker.pause()

    def resume_worker(self) -> None:
        if self.worker is not None:
            self.worker.resume()

    def set_slots(self, slots: int) -> None:
        """Renderer processes at once on this machine; extra renders in flight finish."""
        if type(slots) is not int or not 0 <= slots <= 1024:
            raise SubmitError(f"slots {slots!r}: give a whole number from 0 to 1024")
        self.config.slots = slots
        if self.worker is not None:
            self.worker.slots = slots
        if self.synced.is_set() and self.config.renders:
            self._announce()  # the farm view shows every node's slots
        self._notify_change()

    def frame_path(self, job: Job, frame: int, tile: int | None = None) -> Path:
        """Where this node keeps a frame (or one tile of a frame) it rendered; the
        submitter also keeps the tiles it pulled there until it stitches the frame."""
        name = job.frame_file_name(frame) if tile is None else job.tile_file_name(frame, tile)
        return self.data_dir / "frames" / job.id / name

    def status(self) -> dict[str, Any]:
        state = self.state
        peers = []
        for peer_id in sorted(set(self.kwl) | set(state.peers)):
            if peer_id == self.node_id:
                continue
            replicated = state.peers.get(peer_id)
            known = self.kwl.get(peer_id, {})
            link = self.links.get(peer_id)
            peers.append(
                {
                    "id": peer_id,
                    "name": replicated.name if replicated else known.get("name", ""),
                    "address": known.get("address") or (replicated.address if replicated else ""),
                    "connected": link is not None and not link.closed.is_set(),
                    "state": self._peer_state(replicated.state if replicated else "", peer_id),
                    "renders": replicated.renders if replicated else None,
                    "slots": replicated.slots if replicated else None,
                }
            )
        jobs = []
        for job in sorted(state.jobs.values(), key=lambda j: (j.submitted_lamport, j.id)):
            entry = {
                "id": job.id,
                "name": job.name,
                "state": job.display_state,
                "renderer": job.renderer,
                "submitter": job.submitter,
                "frames_total": job.frames_total,
                "frames_done": job.frames_done,
                "frame_renders": job.frame_renders,
                "chunks_total": job.chunk_total,
                "chunks_done": job.chunks_done,
                "tiles": job.tiles,
                "format": job.format,
                "video": job.video,
                "fps": job.fps,
                "priority": job.priority,
                "output": job.output,
                "error": job.error,
            }
            if job.submitter == self.node_id and self.collector is not None:
                entry.update(self.collector.progress(job))
            jobs.append(entry)
        return {
            "node_id": self.node_id,
            "name": self.name,
            "address": self.address,
            "role": self.config.role,
            "protocol": PROTOCOL_VERSION,
            "farm_key_id": key_id_of(self.config.farm_key),
            "state_digest": self.log.digest(),
            "log_length": len(self.log),
            "peers": peers,
            "jobs": jobs,
            "worker": self.worker.status() if self.worker else None,
        }

    def _peer_state(self, replicated: str, peer_id: str) -> str:
        if replicated == LEFT:
            return LEFT
        if not self._started_at:
            return "unknown"
        return self.peer_health(peer_id)

    def link_to(self, peer_id: str) -> Link | None:
        link = self.links.get(peer_id)
        return link if link is not None and not link.closed.is_set() else None

    async def ask(
        self, peer_id: str, request: dict[str, Any], key: tuple[Any, ...], timeout: float
    ) -> dict[str, Any] | None:
        """Send a request to a peer and wait for the answer with the same key
        (None if the peer is not linked or does not answer in time)."""
        link = self.link_to(peer_id)
        if link is None:
            return None
        full_key = (peer_id, *key)
        waiter = self._waiters.setdefault(full_key, (trio.Event(), []))
        try:
            await link.send(request)
            with trio.move_on_after(timeout):
                await waiter[0].wait()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return None
        finally:
            self._waiters.pop(full_key, None)
        return waiter[1][0] if waiter[1] else None

    async def fetch_frame(
        self, holder: str, job_id: str, frame: int, tile: int | None = None
    ) -> bytes | None:
        """Ask the node that rendered a frame (or one tile of it) for its bytes: None if
        it cannot be asked now, b"" if it answers that it does not hold it."""
        request = message("GET_FRAME", job_id=job_id, frame=frame)
        if tile is not None:
            request["tile"] = tile
        key = ("frame", job_id, frame, -1 if tile is None else tile)
        reply = await self.ask(holder, request, key, FRAME_FETCH_TIMEOUT)
        if reply is None:
            return None
        return reply["data"] if reply["type"] == "FRAME" else b""

    def chunk_log_path(self, job_id: str, chunk: int) -> Path:
        """Where this node keeps the renderer output of its runs of one chunk."""
        return self.data_dir / "logs" / job_id / f"chunk-{chunk}.log"

    # -- start-up and shut-down -------------------------------------------------------

    async def _load(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        default_name = self.config.name or socket.gethostname()[:64] or "node"
        self.identity = await trio.to_thread.run_sync(load_or_create_identity, self.data_dir)
        ident = await trio.to_thread.run_sync(store.load_identity, self.data_dir, default_name)
        wanted = {
            "node_id": self.identity.node_id,
            "name": self.config.name or ident["name"],
        }
        if ident != wanted:
            if ident["node_id"] and ident["node_id"] != wanted["node_id"]:
                log.info("this node's id is now its certificate's hash %s", wanted["node_id"][:12])
            await trio.to_thread.run_sync(store.save_identity, self.data_dir, wanted)
        self.node_id, self.name = wanted["node_id"], wanted["name"]
        self.kwl = await trio.to_thread.run_sync(store.load_kwl, self.data_dir)
        self.kwl.pop(self.node_id, None)
        records = await trio.to_thread.run_sync(self._logfile.load)
        valid = []
        for raw in records:
            try:
                valid.append(validate_action(raw))
            except InvalidAction:
                pass
        dropped = len(records) - len(valid)
        self.log.add_all(valid)
        if dropped:
            log.warning("%d invalid records in %s were skipped", dropped, self._logfile.path)
        if records:
            log.info(
                "rebuilt state from %d logged actions (digest %s)",
                len(self.log),
                self.log.digest()[:12],
            )

    async def _start_working(self) -> None:
        """Once caught up with the farm, announce ourselves and start the worker."""
        with trio.move_on_after(SYNC_TIMEOUT):
            await self.synced.wait()
        self.synced.set()
        self._announce()
        assert self._nursery is not None
        if self.worker is not None:
            self._nursery.start_soon(self.worker.run)
        self._nursery.start_soon(self.collector.run)
        self._nursery.start_soon(self._failure_detector)

    def _announce(self) -> None:
        me = self.state.peers.get(self.node_id)
        slots = self.config.slots if self.config.renders else 0
        renderers = tuple(sorted(self.renderers.items()))
        wanted = (self.name, self.address, slots, self.config.renders, UP, renderers)
        if (
            me is None
            or (me.name, me.address, me.slots, me.renders, me.state, me.renderers) != wanted
        ):
            self.emit(
                act.PEER_JOINED,
                {
                    "name": self.name,
                    "address": self.address,
                    "slots": slots,
                    "renders": self.config.renders,
                    "renderers": dict(renderers),
                },
            )

    async def _leave(self) -> None:
        self.stopping = True
        self._notify_change()
        if self.worker is not None and self.worker.renders:
            log.info(
                "stopping: finishing %d chunk(s) in flight (stop again to stop at once)",
                len(self.worker.renders),
            )
            async with trio.open_nursery() as nursery:

                async def finish() -> None:
                    await self.worker.finish_in_flight()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(finish)
                await self._stop_now.wait()
                log.info("stopping at once: killing renderers, releasing their chunks")
                await self.worker.abort()
                nursery.cancel_scope.cancel()
        me = self.state.peers.get(self.node_id)
        if me is not None and me.state != LEFT:
            self.emit(act.PEER_LEFT, {})
        # Let the flusher write and hand the last actions to the links, then let them drain.
        with trio.move_on_after(LEAVE_TIMEOUT):
            while self._to_persist or self._to_broadcast:
                self._flushed = trio.Event()
                await self._flushed.wait()
            while any(not lk.outbox_empty() for lk in list(self.links.values())):
                await trio.sleep(0.02)
            await trio.sleep(0.05)

    # -- state changes and persistence -----------------------------------------------

    def _notify_change(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _accept_actions(self, raw_actions: list[Any], source: str) -> None:
        valid: list[Action] = []
        for raw in raw_actions:
            try:
                valid.append(validate_action(raw))
            except InvalidAction as exc:
                log.warning("dropped an invalid action from %s: %s", source, exc)
        applied = self.log.add_all(valid)
        if applied:
            self._to_persist.extend(a.to_wire() for a in applied)
            self._flush_ready.set()
            self._check_synced()
            self._notify_change()

    def _check_synced(self) -> None:
        if self._join_vv is not None and not self.synced.is_set():
            vv = self.log.version_vector()
            if all(vv.get(o, 0) >= n for o, n in self._join_vv.items()):
                self.synced.set()

    async def _flusher(self) -> None:
        """Write accepted actions to disk (one fsync per batch), then broadcast our own.

        Our own actions reach peers only once they are durable, so a crash can
        never make us reuse a seq that a peer has already seen.
        """
        while True:
            await self._flush_ready.wait()
            self._flush_ready = trio.Event()
            persist, self._to_persist = self._to_persist, []
            own, self._to_broadcast = self._to_broadcast, []
            if persist:
                await trio.to_thread.run_sync(self._logfile.append, persist)
            for link in list(self.links.values()):
                link.queue_actions(own)
            self._flushed.set()

    # -- the mesh -----------------------------------------------------------------------

    def _hello(self) -> dict[str, Any]:
        return message(
            "HELLO",
            protocol=PROTOCOL_VERSION,
            node_id=self.node_id,
            name=self.name,
            role=self.config.role,
            address=self.address,
        )

    def _remember_peer(self, link: Link) -> None:
        """A greeting peer goes on our known-worker list (as in the research design)."""
        if link.peer_role == "client" or not link.peer_address:
            return
        entry = {"address": link.peer_address, "name": link.peer_name}
        # Another node now listening at this address makes the old entry stale.
        for other, known in list(self.kwl.items()):
            if other != link.peer_id and known.get("address") == link.peer_address:
                del self.kwl[other]
        if self.kwl.get(link.peer_id) != entry:
            self.kwl[link.peer_id] = entry
            self._nursery.start_soon(self._save_kwl)
        self._ensure_dialing(link.peer_id)

    def learn_peers(self, entries: list[dict[str, str]]) -> None:
        """Add known-worker-list entries (from a bootstrap server) and dial them.

        An entry we already have but with another address is updated: the peer
        restarted elsewhere (the bootstrap server heard its greeting more recently).
        """
        changed = False
        for entry in entries:
            peer_id = entry["node_id"]
            known = {"address": entry["address"], "name": entry["name"]}
            if peer_id == self.node_id or self.kwl.get(peer_id) == known:
                continue
            if self.link_to(peer_id) is not None:
                continue  # a live link knows better than a list
            self.kwl[peer_id] = known
            changed = True
            self._ensure_dialing(peer_id)
        if changed:
            self._nursery.start_soon(self._save_kwl)

    async def _save_kwl(self) -> None:
        async with self._kwl_lock:  # one writer at a time; the last one writes the newest list
            await trio.to_thread.run_sync(store.save_kwl, self.data_dir, dict(self.kwl))

    def _ensure_dialing(self, peer_id: str) -> None:
        if peer_id != self.node_id and peer_id not in self._dialing and self._nursery:
            self._dialing.add(peer_id)
            self._nursery.start_soon(self._dial_loop, peer_id, None)

    def _ensure_dialing_bootstrap(self, address: str) -> None:
        if address not in self._dialing and self._nursery:
            self._dialing.add(address)
            self._nursery.start_soon(self._dial_loop, None, address)

    async def _dial_loop(self, peer_id: str | None, fixed_address: str | None) -> None:
        """Keep one link to a peer (or a bootstrap server): dial, and redial with backoff."""
        backoff = 0.2
        while True:
            if peer_id is not None:
                link = self.link_to(peer_id)
                if link is not None:
                    await link.closed.wait()
                    backoff = 0.2
                    continue
            address = fixed_address or self.kwl.get(peer_id or "", {}).get("address")
            if address is None:
                self._dialing.discard(peer_id or "")
                return
            try:
                link = await dial(address, self._hello(), self.identity, self.config.farm_key)
            except (OSError, ValueError) as exc:
                log.debug("cannot reach %s: %s", address, exc)
            except HandshakeError as exc:
                log.warning("%s", exc)
            else:
                connected_to = await self._run_link(link)
                if connected_to == self.node_id:
                    return  # a bootstrap address that turned out to be ourselves
                if connected_to is not None:
                    backoff = 0.2
                    if fixed_address is not None:
                        peer_id = connected_to
            await trio.sleep(backoff * (0.75 + random.random() / 2))
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _handle_inbound(self, stream: trio.SocketStream) -> None:
        try:
            peer = stream.socket.getpeername()
            host, remote = str(peer[0]), format_address(str(peer[0]), int(peer[1]))
        except OSError:
            host = remote = "?"
        if (
            self._pending_handshakes.total() >= MAX_PENDING_HANDSHAKES
            or self._pending_handshakes[host] >= MAX_PENDING_PER_ADDRESS
        ):
            self._log_refusal(host, f"refused {remote}: too many handshakes in progress")
            await trio.aclose_forcefully(stream)
            return
        if self._connections[host] >= MAX_CONNECTIONS_PER_ADDRESS:
            self._log_refusal(host, f"refused {remote}: too many connections from {host}")
            await trio.aclose_forcefully(stream)
            return
        self._connections[host] += 1
        try:
            self._pending_handshakes[host] += 1
            try:
                link = await accept(
                    stream,
                    remote,
                    self._hello(),
                    self.identity,
                    self.config.farm_key,
                    self._tls_context,
                )
            except HandshakeError as exc:
                self._log_refusal(host, str(exc))
                return
            finally:
                self._pending_handshakes[host] -= 1
                if not self._pending_handshakes[host]:
                    del self._pending_handshakes[host]
            await self._run_link(link)
        finally:
            self._connections[host] -= 1
            if not self._connections[host]:
                del self._connections[host]

    def _log_refusal(self, host: str, text: str) -> None:
        """Log a refused connection with its address, without letting a flood flood the log."""
        now = trio.current_time()
        start, count = self._refusals.get(host, (-REFUSAL_LOG_WINDOW, 0))
        if now - start >= REFUSAL_LOG_WINDOW:
            if len(self._refusals) > 1000:  # many addresses: forget the quiet ones
                for old, (began, _) in list(self._refusals.items()):
                    if now - began >= REFUSAL_LOG_WINDOW:
                        del self._refusals[old]
            if count > 1:
                log.warning("... and %d more refused connections from %s", count - 1, host)
            log.warning("%s", text)
            self._refusals[host] = (now, 1)
        else:
            self._refusals[host] = (start, count + 1)

    async def _run_link(self, link: Link) -> str | None:
        """Serve a link after its handshake until it closes. Returns the peer's id."""
        if link.peer_id == self.node_id:
            await link.close()
            return self.node_id
        mesh = link.peer_role != "client"
        if mesh and not self._register(link):
            await link.close()
            return link.peer_id
        if mesh:
            self._lost_at.pop(link.peer_id, None)
            log.info("linked with %s %s", link.peer_role, link.describe())
            self._remember_peer(link)
            self._notify_change()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(link.run_sender)
                await self._serve_link(link, mesh)
                nursery.cancel_scope.cancel()
        finally:
            await link.close()
            if self.links.get(link.peer_id) is link:
                del self.links[link.peer_id]
                self._lost_at[link.peer_id] = trio.current_time()
                if mesh:
                    log.info("link to %s closed", link.describe())
                    self._notify_change()
        return link.peer_id

    async def _serve_link(self, link: Link, mesh: bool) -> None:
        """Read and handle messages until the link closes. Bad input closes this link
        only; the node and its other links go on."""
        try:
            if mesh:
                await self._send_vv(link)
                if link.peer_role == "bootstrap":
                    await link.send(message("JOIN"))
            while True:
                msg = await link.receive()
                if msg is None:
                    return
                await self._dispatch(link, msg)
        except (ProtocolError, MessageError) as exc:
            log.warning("closing the link to %s: %s", link.describe(), exc)
            with trio.move_on_after(1):
                await link.send(message("ERROR", code="protocol", message=str(exc)[:4000]))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            log.debug("link to %s lost: %s", link.describe(), exc)
        except Exception:
            # A bug in handling one message must not take the whole node down.
            log.exception("internal error while serving %s; closing that link", link.describe())

    def _register(self, link: Link) -> bool:
        """Keep one link per peer. When both dialed each other at once, keep the link
        dialed by the node with the smaller id; both ends apply the same rule."""
        other = self.link_to(link.peer_id)
        if other is not None and other.outbound != link.outbound:
            preferred_dialer = min(self.node_id, link.peer_id)
            other_dialer = self.node_id if other.outbound else link.peer_id
            if other_dialer == preferred_dialer:
                return False
        if other is not None:
            self._nursery.start_soon(other.close)
        self.links[link.peer_id] = link
        return True

    async def _send_vv(self, link: Link) -> None:
        await link.send(message("VV", vv=self.log.version_vector(), digest=self.log.digest()))

    async def _anti_entropy(self) -> None:
        """Every few seconds, swap version vectors with each peer, which sends what we lack."""
        while True:
            await trio.sleep(ANTI_ENTROPY_INTERVAL)
            for link in list(self.links.values()):
                try:
                    await self._send_vv(link)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass

    async def _heartbeats(self) -> None:
        """A HEARTBEAT on every link a few times per timeout, so silence means trouble."""
        while True:
            await trio.sleep(self.config.peer_timeout / 3)
            for link in list(self.links.values()):
                try:
                    await link.send(message("HEARTBEAT"))
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass

    def peer_health(self, peer_id: str) -> str:
        """This node's view of a peer: up, suspect or down (clock-based, never replicated)."""
        now = trio.current_time()
        timeout = self.config.peer_timeout
        link = self.link_to(peer_id)
        if link is not None:
            silent = now - link.last_heard
            return "down" if silent > timeout else "suspect" if silent > timeout / 2 else "up"
        lost = self._lost_at.get(peer_id)
        if lost is not None:
            return "down" if now - lost > RECONNECT_GRACE else "suspect"
        # Never linked since we started (e.g. after a power cut): give it the full timeout.
        return "down" if now - self._started_at > timeout else "suspect"

    async def _failure_detector(self) -> None:
        """Turn what the clock says about peers into actions (reducers never read clocks).

        A peer that is up in the replicated state but down to us is declared down
        (PEER_DOWN), once per incarnation; its claims go back to the pool. If we
        are the one declared down (we were frozen or cut off), we rejoin with
        our own identity.
        """
        while True:
            await trio.sleep(DETECT_INTERVAL)
            if self.stopping:
                continue
            for peer_id, peer in list(self.state.peers.items()):
                if peer_id == self.node_id or peer.state != UP:
                    continue
                if peer_id not in self.kwl:
                    # Known only from the replicated state: dial the address it announced.
                    entry = {"node_id": peer_id, "address": peer.address, "name": peer.name}
                    self.learn_peers([entry])
                if self._declared_down.get(peer_id) == peer.incarnation:
                    continue
                if self.peer_health(peer_id) == "down":
                    log.warning(
                        "peer %s (%s) is down; its chunks go back to the pool",
                        peer.name,
                        peer_id[:8],
                    )
                    self._declared_down[peer_id] = peer.incarnation
                    self.emit(act.PEER_DOWN, {"node_id": peer_id, "incarnation": peer.incarnation})
            me = self.state.peers.get(self.node_id)
            if me is not None and me.state == DOWN:
                log.warning("the farm declared this node down; rejoining")
                self._announce()

    async def _dispatch(self, link: Link, msg: dict[str, Any]) -> None:
        kind = msg["type"]
        mesh = link.peer_role != "client"
        if kind == "ACTIONS" and mesh:
            self._accept_actions(msg["actions"], link.describe())
        elif kind == "VV" and mesh:
            missing = self.log.missing_for(msg["vv"])
            link.queue_actions([a.to_wire() for a in missing])
        elif kind == "JOIN" and mesh and self.join_handler is not None:
            await self.join_handler(self, link)
        elif kind == "JOIN_REPLY" and mesh:
            self.learn_peers(msg["kwl"])
            self._join_vv = msg["vv"]
            self._check_synced()
        elif kind == "GET_FRAME":
            await self._serve_frame(link, msg["job_id"], msg["frame"], msg.get("tile"))
        elif kind in ("FRAME", "FRAME_MISSING", "LOG"):
            if kind == "LOG":
                key = (link.peer_id, "log", msg["job_id"], msg["chunk"])
            else:
                key = (link.peer_id, "frame", msg["job_id"], msg["frame"], msg.get("tile", -1))
            waiter = self._waiters.get(key)
            if waiter is not None and not waiter[0].is_set():
                waiter[1].append(msg)
                waiter[0].set()
        elif kind == "GET_BLOB":
            await serve_blob(self.blobs, link, msg["sha"], msg["offset"], msg["length"])
        elif kind in ("BLOB", "BLOB_MISSING"):
            waiter = self._waiters.get((link.peer_id, "blob", msg["sha"], msg["offset"]))
            if waiter is not None and not waiter[0].is_set():
                waiter[1].append(msg)
                waiter[0].set()
        elif kind == "GET_LOG":
            text = await trio.to_thread.run_sync(
                read_log_tail, self.chunk_log_path(msg["job_id"], msg["chunk"])
            )
            await link.send(message("LOG", job_id=msg["job_id"], chunk=msg["chunk"], text=text))
        elif kind == "LOGS" and not mesh:
            try:
                logs = await collect_logs(self, msg["job_id"], msg.get("frame"))
                await link.send(message("LOGS_REPLY", logs=logs))
            except SubmitError as exc:
                await link.send(message("REFUSED", message=str(exc)))
        elif kind == "HEARTBEAT":
            pass  # receiving anything refreshes link.last_heard
        elif kind == "ERROR":
            log.warning("%s reports an error: %s", link.describe(), msg["message"])
        elif kind in CLIENT_REQUESTS:
            await link.send(await self._answer_client(msg))
        elif kind in ("HAVE_BLOBS", "PUT_BLOB") and not mesh:
            await link.send(await self._answer_upload(msg))
        else:
            raise MessageError(f"unexpected {kind} from a {link.peer_role}")

    async def _answer_client(self, msg: dict[str, Any]) -> dict[str, Any]:
        try:
            if msg["type"] == "SUBMIT":
                return message("SUBMITTED", job_id=await self.submit(msg["job"]))
            if msg["type"] == "CANCEL":
                self.cancel(msg["job_id"])
                return message("CANCELLED", job_id=msg["job_id"])
            if msg["type"] == "PAUSE":
                self.pause(msg["job_id"])
                return message("PAUSED", job_id=msg["job_id"])
            if msg["type"] == "RESUME":
                self.resume(msg["job_id"])
                return message("RESUMED", job_id=msg["job_id"])
            if msg["type"] == "RETRY":
                frames = self.retry(msg["job_id"])
                return message("RETRIED", job_id=msg["job_id"], frames=frames)
            if msg["type"] == "PRIORITY":
                self.set_priority(msg["job_id"], msg["priority"])
                return message("PRIORITY_SET", job_id=msg["job_id"], priority=msg["priority"])
            return message("STATUS_REPLY", status=self.status())
        except SubmitError as exc:
            return message("REFUSED", message=str(exc))

    async def _serve_frame(self, link: Link, job_id: str, frame: int, tile: int | None) -> None:
        job = self.state.jobs.get(job_id)
        data = None
        if job is not None and job.state != CANCELLED:
            try:
                path = self.frame_path(job, frame, tile)
                data = await trio.to_thread.run_sync(path.read_bytes)
            except OSError:
                data = None
        extra = {} if tile is None else {"tile": tile}
        if data is None:
            what = "that frame" if tile is None else f"tile {tile} of that frame"
            reason = f"this node does not hold {what}"
            reply = message("FRAME_MISSING", job_id=job_id, frame=frame, reason=reason, **extra)
        else:
            reply = message("FRAME", job_id=job_id, frame=frame, data=data, **extra)
        await link.send(reply)


def _advertised_host(host: str) -> str:
    """The host peers should dial when we listen on a wildcard address."""
    if host in ("", "0.0.0.0", "::"):
        try:
            return socket.gethostbyname(socket.gethostname())
        except OSError:
            return "127.0.0.1"
    return host
