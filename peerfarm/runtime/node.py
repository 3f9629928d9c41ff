"""The node on a real machine: the trio driver of the node machine.

Every rule of a node lives in peerfarm.machine, which does no I/O. This
driver feeds it events (messages from links, ended renders, fetched frames,
the clock, a user's requests) and carries out the effects it returns: it owns
the sockets (runtime/mesh.py, link.py), the log file, renderer processes
(renders.py) and the output folders (outputs.py). The simulator
(peerfarm/sim) drives the same machine.

``Node.run()`` runs inside any trio run and never calls ``trio.run`` itself; it
has no global state and pushes every blocking call (disk, fsync, Pillow) to
``trio.to_thread``. The CLI runs it with ``trio.run``, the bootstrap server
runs its non-rendering variant, and the desktop app runs it in Qt's event loop
(trio guest mode). Faces use the public API below (docs/architecture.md).
"""

from __future__ import annotations

import functools
import logging
import secrets
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from peerfarm import __version__
from peerfarm.core import snapshot
from peerfarm.core.actions import Action
from peerfarm.core.features import SPOKEN
from peerfarm.core.log import ActionLog
from peerfarm.core.refused import Refused
from peerfarm.core.requirements import parse_tags, why_waiting
from peerfarm.core.retention import Policy as RetentionPolicy
from peerfarm.core.state import CANCELLED, UP, State
from peerfarm.job_request import JobRequest, SubmitError
from peerfarm.jobspec import check_files, check_manifest, manifest_of, prepare_new_job
from peerfarm.machine import MachineConfig, NodeMachine
from peerfarm.machine import effects as fx
from peerfarm.machine import events as ev
from peerfarm.machine.timing import (
    COMPACT_AFTER,
    FRAME_FETCH_TIMEOUT,
    LEAVE_TIMEOUT,
    PEER_TIMEOUT,
    SYNC_TIMEOUT,
)
from peerfarm.renderers.registry import probe_renderers, renderer_plugins, renderers_not_offered
from peerfarm.runtime import store
from peerfarm.runtime.addresses import advertised_host, format_address, is_loopback, parse_address
from peerfarm.runtime.blobs import BlobStore
from peerfarm.runtime.counters import RuntimeCounters
from peerfarm.runtime.data_dir import DAMAGED_SNAPSHOT_NAME, LEGACY_LOG_NAME, DataDir
from peerfarm.runtime.discovery import LanDiscovery
from peerfarm.runtime.folder_lock import FolderInUse, FolderLock
from peerfarm.runtime.hardware import logical_cores, total_memory
from peerfarm.runtime.link import Link
from peerfarm.runtime.link_service import LinkService
from peerfarm.runtime.mesh import Mesh
from peerfarm.runtime.outputs import Outputs
from peerfarm.runtime.renderer_logs import collect_logs
from peerfarm.runtime.renders import Renders
from peerfarm.runtime.requests import Requests
from peerfarm.runtime.retention import DEFAULT_INTERVAL as DEFAULT_RETENTION_INTERVAL
from peerfarm.runtime.retention import Retention
from peerfarm.runtime.tls import server_context
from peerfarm.runtime.video import ffmpeg_problem
from peerfarm.security.farm_key import FarmKey, key_id_of
from peerfarm.security.identity import Identity, load_or_create_identity, retire_identity
from peerfarm.wire.messages import PROTOCOL_VERSION, message

log = logging.getLogger(__name__)

# The app and headless nodes wake the machine at its own deadlines; this bounds a
# sleep in case a deadline moved without an event (it never should).
MAX_TICK_INTERVAL = 1.0
DEFAULT_MIN_FREE_BYTES = 200 * 1024 * 1024
DISK_CHECK_INTERVAL = 5.0  # free space looked at; a failed write looks at once


# A note of submit_job that warns (faces show it as a warning, not a note).
WARNING = "warning: "


class SetupError(ValueError):
    """The node cannot start as configured; the message says what to change."""


def _names_as_faulty(record: Any, node_id: str) -> bool:
    """A log record that is an EQUIVOCATION proving ``node_id`` faulty."""
    if type(record) is not dict or record.get("type") != "EQUIVOCATION":
        return False
    payload = record.get("payload")
    return type(payload) is dict and payload.get("node_id") == node_id


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
    peer_timeout: float = PEER_TIMEOUT  # a frozen peer is down about this long after
    zeroconf: bool = True  # announce and find nodes on the LAN
    farm_key: FarmKey | None = None  # None: a loopback-only farm (docs/security.md)
    # Below this much free space in the data folder's disk, take no new chunks.
    min_free_bytes: int = DEFAULT_MIN_FREE_BYTES
    # Jobs submitted from another machine write their outputs only under this folder
    # (None: DATA_DIR/outputs): a farm member must not choose folders on our disk.
    remote_outputs: Path | None = None
    # What the node deletes from its data folder, and how often it looks (0: only on
    # `peerfarm gc`); core/retention.py.
    retention: RetentionPolicy = field(default_factory=RetentionPolicy)
    retention_interval: float = DEFAULT_RETENTION_INTERVAL
    # A render this many times past this node's estimate is stopped as hung (0: never).
    hung_limit: float = 10.0
    # Compact the log once this many actions every member holds are in it (0: never;
    # machine/compaction.py).
    compact_after: int = COMPACT_AFTER
    # Tags this node advertises (`--tag gpu`): jobs that require a tag go only to nodes
    # that have it (docs/scheduling.md). Its memory and cores are detected.
    tags: tuple[str, ...] = ()


class Node:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.data_dir = DataDir(config.data_dir)
        self.node_id = ""
        self.name = ""
        self.address = ""
        self.plugins = renderer_plugins()
        self.renderers: dict[str, str] = {}  # what this machine can render: name -> version
        self.renderers_not_offered: dict[str, str] = {}  # installed, not offered: name -> why
        self.blobs = BlobStore(self.data_dir.blobs)  # content-addressed (runtime/blobs.py)
        self.identity: Identity | None = None
        self._retired: list[Identity] = []  # identities retired at this start (see _load)
        self.machine: NodeMachine | None = None
        self.mesh: Mesh | None = None
        self.requests = Requests(self.link_to)
        self.counters = RuntimeCounters()  # for metrics: renderer seconds, bytes moved
        self._logfile = store.LogFile(self.data_dir.log_file)
        self._snapshot_file = store.SnapshotFile(self.data_dir.snapshot_file)
        self._base_log: ActionLog | None = None  # the log as the snapshot file left it
        self._snapshot_bytes: bytes | None = None  # the snapshot last written (or loaded)
        self._compact_pending = False  # the machine compacted: write snapshot and tail
        # The last snapshot a peer sent: its count, base key and bytes (link_service.py).
        self.received_snapshot: tuple[int, Any, bytes] | None = None
        self._stop_requests = 0
        self._changed = trio.Event()
        self._seen_changes = -1
        self._left = trio.Event()
        self._stopped = trio.Event()
        self._tick_wakeup = trio.Event()
        self._heard_fed: dict[str, float] = {}  # peer -> the link's last_heard we told
        # The flusher's queue: actions to persist, then (peer or None for all, actions).
        self._to_persist: list[dict[str, Any]] = []
        self._to_send: list[tuple[str | None, tuple[dict[str, Any], ...]]] = []
        self._flush_ready = trio.Event()
        self._flushed = trio.Event()
        self._log_write_failed = False
        self._former_ids: tuple[str, ...] = ()
        self._has_log = False
        self._kwl_lock = trio.Lock()
        self._nursery: trio.Nursery | None = None
        self._renders: Renders | None = None
        self._outputs: Outputs | None = None
        self.retention = Retention(self.data_dir, config.retention, lambda: self.state)

    # -- the public API (used by the faces) ---------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until ``request_stop``; ``task_status.started`` gets the listen address."""
        self.check_setup()
        lock = FolderLock(self.data_dir.root)
        try:
            lock.acquire()  # before anything in the folder is read or written
        except FolderInUse as exc:
            raise SetupError(str(exc)) from None
        try:
            await self._run(task_status)
        finally:
            lock.release()

    async def _run(self, task_status: trio.TaskStatus[str]) -> None:
        host, port = self.config.listen
        async with trio.open_nursery() as nursery:
            if self.config.renders:  # probes wait for programs: beside reading the log
                nursery.start_soon(self._probe_renderers)
            kwl, records = await self._load()
        tls_context = server_context(self.identity)
        listeners = await trio.open_tcp_listeners(port, host=host)
        bound_port = listeners[0].socket.getsockname()[1]
        if self.config.advertise:
            self.address = self.config.advertise
        else:
            bootstrap_hosts = [h for h, _ in self.config.bootstraps]
            chosen, why = await trio.to_thread.run_sync(advertised_host, host, bootstrap_hosts)
            self.address = format_address(chosen, bound_port)
            log.info("peers dial this node at %s (%s; --advertise to change)", self.address, why)
        self.machine = self._make_machine(kwl, records)
        self.mesh = Mesh(
            node_id=self.node_id,
            identity=self.identity,
            farm_key=self.config.farm_key,
            tls_context=tls_context,
            hello=self._hello,
            address_of=self.machine.address_of,
            member_hosts=self._member_hosts,
            serve=functools.partial(self._serve_counted, LinkService(self).serve),
        )
        self._renders = Renders(
            self.data_dir,
            self.plugins,
            self.blobs,
            self._fetch_blob,
            self.feed,
            self.disk_is_full,
            self.counters,
        )
        self._outputs = Outputs(
            self.node_id, self.data_dir, self.plugins, self.fetch_frame, self.feed, self._wanted
        )
        log.info(
            "%s %s (%s) listening on %s",
            self.config.role,
            self.name,
            self.node_id[:8],
            self.address,
        )
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.mesh.start(nursery)
            nursery.start_soon(trio.serve_listeners, self.mesh.handle_inbound, listeners)
            nursery.start_soon(self._flusher)
            nursery.start_soon(self._watch_disk)
            await nursery.start(self._renders.run)  # after leftovers from before are gone
            if self.config.renders:  # the first chunks start no Python either
                self._renders.start_spares(self.renderers, self.config.slots)
            nursery.start_soon(self._outputs.run)
            nursery.start_soon(
                self.retention.run_periodically, self.config.retention_interval, self._settled
            )
            if self.config.zeroconf:
                discovery = LanDiscovery(
                    self.node_id,
                    self.name,
                    self.address,
                    key_id_of(self.config.farm_key),
                    self.learn_peers,
                )
                nursery.start_soon(discovery.run)
            await trio.sleep(0)  # let the effect runners open their nurseries
            self.feed(ev.Started())
            for _ in range(self._stop_requests):  # asked to stop while starting
                self.feed(ev.Stop())
            nursery.start_soon(self._ticker)
            task_status.started(self.address)
            await self._left.wait()
            await self._drain()
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
        try:
            parse_tags(self.config.tags)
        except Refused as exc:
            raise SetupError(
                f"{exc}; fix the node's tags (--tag, or `tag` in the config)"
            ) from None

    def request_stop(self) -> None:
        """First call: stop claiming, finish the chunks in flight, announce leaving, exit.
        Second call: kill the renderers, release their chunks, exit at once."""
        self._stop_requests += 1
        if self.machine is not None and self.machine.started:
            self.feed(ev.Stop())

    async def wait_stopped(self) -> None:
        """Return once ``run`` has finished."""
        await self._stopped.wait()

    @property
    def state(self) -> State:
        return self.machine.state if self.machine is not None else State()

    @property
    def stopping(self) -> bool:
        return self.machine is not None and self.machine.stopping

    @property
    def worker_paused(self) -> bool:
        """Whether this machine's user paused its rendering (pause_worker)."""
        return self.machine is not None and self.machine.worker.paused

    @property
    def digest(self) -> str:
        """The state digest: equal on every node that holds the same actions."""
        return self.machine.log.digest() if self.machine is not None else ""

    def actions(self) -> list[Action]:
        """Every action of the replicated log, in total order."""
        return self.machine.log.actions() if self.machine is not None else []

    async def wait_for_change(self, timeout: float | None = None) -> None:
        """Return after the next state change (or the timeout)."""
        event = self._changed
        if timeout is None:
            await event.wait()
        else:
            with trio.move_on_after(timeout):
                await event.wait()

    async def submit(self, request: JobRequest) -> str:
        """Check a job request and emit NEW_JOB; returns the job id. Raises SubmitError."""
        job_id, _ = await self.submit_job(request)
        return job_id

    @property
    def remote_outputs(self) -> Path:
        root = self.config.remote_outputs
        return Path(root).expanduser().resolve() if root else self.data_dir.root / "outputs"

    def place_remote_output(self, request: JobRequest) -> JobRequest:
        """A job from a client on another machine: its output folder must be inside
        ``remote_outputs`` (a relative one is taken inside it). Raises SubmitError."""
        root = self.remote_outputs
        wanted = Path(request.output) if request.output else Path(f"job-{secrets.token_hex(3)}")
        output = (wanted if wanted.is_absolute() else root / wanted).resolve()
        if output != root and root not in output.parents:
            raise SubmitError(
                f"this node writes the outputs of jobs submitted from other machines only "
                f"inside {root}: ask for a folder there (e.g. --output {root / 'myjob'}, "
                "or a relative one), or submit on this machine"
            )
        return request.replace(output=str(output))

    async def submit_job(self, request: JobRequest) -> tuple[str, tuple[str, ...]]:
        """``submit``, also returning the renderer plugin's notes: scene settings the
        farm overrides (each is logged here too).

        Scene files come inline (``request.files``: path -> bytes), and are stored as
        blobs here; or were uploaded as blobs before (PUT_BLOB), and
        ``request.manifest`` (path -> {sha, size}) names them. Workers fetch them from
        this node (or from each other) when they render.
        """
        if self.stopping:
            raise SubmitError("this node is stopping; submit to another node")
        job_id = secrets.token_hex(6)
        farm_renderers = set(self.renderers) | {  # ours count even before we announce
            name for p in self.state.peers.values() if p.state == UP for name, _ in p.renderers
        }
        if request.files is None and request.manifest is not None:
            manifest = check_manifest(request.manifest)
            uploaded = await trio.to_thread.run_sync(self._uploaded_files, manifest)
            files: dict[str, bytes] = {}  # nothing more to store
            # Plugins read the uploaded files where the blob store keeps them.
            request = request.replace(files=uploaded, manifest=manifest)
        else:
            files = check_files(request.files)
            manifest = await trio.to_thread.run_sync(manifest_of, files)
            request = request.replace(manifest=manifest)
        video_problem = None
        if request.video:  # this node's collector will run ffmpeg
            video_problem = await trio.to_thread.run_sync(ffmpeg_problem)
        # In a thread: a plugin may run its renderer to read the scene (Blender does).
        new_job = await trio.to_thread.run_sync(
            prepare_new_job, request, job_id, self.plugins, farm_renderers, video_problem
        )
        for data in files.values():
            await trio.to_thread.run_sync(self.blobs.put_bytes, data)
        await self._caught_up()
        self.feed(ev.SubmitJob(new_job.payload))
        notes = new_job.notes
        job = self.state.jobs.get(job_id)
        waiting = why_waiting(self.state, job) if job is not None else ""
        if waiting:  # accepted all the same: a matching node may join later
            notes += (
                f"{WARNING}no node in the farm now meets this job's requirements "
                f"({waiting.removeprefix('waiting: ')}): it waits until one joins",
            )
        for note in notes:
            log.info("job %s: %s", job_id, note)
        return job_id, notes

    async def _caught_up(self) -> None:
        """Wait (a few seconds at most) until this node has caught up with the farm: the
        machine keeps a request that comes before (machine.py, _user_action), and a job
        submitted moments after the node started is then in its state when submit
        returns, for the progress and status that follow."""
        with trio.move_on_after(SYNC_TIMEOUT + 2.0):
            while self.machine is None or not self.machine.working:
                await trio.sleep(0.05)

    def _wanted(self, job_id: str) -> bool:
        """Whether a job's frames may still be written to its output folder: not once it
        is cancelled (a late fetch of a replaced revision must not overwrite the new
        revision's frame)."""
        job = self.state.jobs.get(job_id)
        return job is not None and job.state != CANCELLED

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

    # Job control is farm-wide: each is a replicated action (machine/job_control.py).
    # Each raises Refused when it makes no sense for the job as this node sees it.

    def cancel(self, job_id: str) -> None:
        self.feed(ev.CancelJob(job_id))

    def pause(self, job_id: str) -> None:
        """No node starts new chunks of the job; chunks in flight finish."""
        self.feed(ev.PauseJob(job_id))

    def resume(self, job_id: str) -> None:
        self.feed(ev.ResumeJob(job_id))

    def retry(self, job_id: str) -> int:
        """Render the job's failed frames again; returns how many frames that is."""
        frames = self._machine().frames_to_retry(job_id)
        self.feed(ev.RetryJob(job_id))
        return frames

    def set_priority(self, job_id: str, priority: int) -> None:
        self.feed(ev.SetPriority(job_id, priority))

    # This machine's worker: its own settings, not replicated (except its slots,
    # which the farm sees through PEER_JOINED).

    def pause_worker(self) -> None:
        """Stop rendering on this machine now: renders in flight are stopped and their
        chunks given back to the farm."""
        self.feed(ev.PauseWorker())

    def resume_worker(self) -> None:
        self.feed(ev.ResumeWorker())

    def set_slots(self, slots: int) -> None:
        """Renderer processes at once on this machine; extra renders in flight finish."""
        self.config.slots = slots if type(slots) is int else self.config.slots
        if self.machine is not None:
            self.feed(ev.SetSlots(slots))

    async def collect_garbage(self, dry_run: bool = False) -> dict[str, Any]:
        """Run retention now (runtime/retention.py): delete what the policy lets go from
        the data folder (``dry_run``: only say what). Returns the report. Raises Refused
        before the node has caught up with the farm: until then its state may lack jobs
        that need what is here."""
        if not self._settled():
            raise Refused(
                "this node is still catching up with the farm (or stopping); run gc again "
                "in a moment"
            )
        return await self.retention.run(dry_run)

    def _settled(self) -> bool:
        machine = self.machine
        return machine is not None and machine.working and not machine.stopping

    def frames_collected(self, job_id: str) -> frozenset[int]:
        """Frames of one of our jobs that are in its output folder (with a thumbnail
        beside them, if Pillow could read them)."""
        return self.machine.frames_collected(job_id) if self.machine else frozenset()

    def output_progress(self, job_id: str) -> dict[str, Any]:
        """How far this node brought one of its own jobs' outputs home: frames and
        tiles collected, complete, GIF and video paths, output error (as in status)."""
        machine = self._machine()
        job = machine.state.jobs.get(job_id)
        if job is None or not machine.shared.is_me(job.submitter):
            raise Refused(f"job {job_id} was not submitted to this node")
        assert self._outputs is not None
        return self._outputs.progress(job, machine.collector.progress(job))

    def frame_path(self, job: Any, frame: int, tile: int | None = None) -> Path:
        """Where this node keeps a frame (or tile) it rendered (runtime/data_dir.py)."""
        return self.data_dir.frame_path(job, frame, tile)

    def status(self) -> dict[str, Any]:
        machine = self._machine()
        status = machine.status()
        assert self._outputs is not None
        jobs = self.state.jobs
        for entry in status["jobs"]:
            if "complete" in entry:  # one of ours: the machine's collection progress
                entry.update(self._outputs.progress(jobs[entry["id"]], entry))
        return {
            **status,
            "protocol": PROTOCOL_VERSION,
            "farm_key_id": key_id_of(self.config.farm_key),
            "renderers_not_offered": dict(self.renderers_not_offered),
        }

    def peer_health(self, peer_id: str) -> str:
        """This node's view of a peer: up, suspect or down (never replicated)."""
        return self._machine().health(peer_id, trio.current_time())

    def peer_name(self, peer_id: str) -> str:
        return self.machine.peer_name(peer_id) if self.machine else ""

    def link_to(self, peer_id: str) -> Link | None:
        return self.mesh.link_to(peer_id) if self.mesh is not None else None

    def known_peers(self) -> dict[str, dict[str, str]]:
        """The known-worker list: peer id -> {address, name}."""
        return self.machine.known_peers() if self.machine is not None else {}

    def linked_peers(self) -> list[str]:
        """Peers this node has a live link to now."""
        return sorted(p for p in self.mesh.links if self.link_to(p)) if self.mesh else []

    def learn_peers(self, entries: list[dict[str, str]]) -> None:
        """Known-worker-list entries found outside the mesh (LAN discovery)."""
        self.feed(ev.PeersFound(entries))

    async def ask(
        self, peer_id: str, request: dict[str, Any], key: tuple[Any, ...], timeout: float
    ) -> dict[str, Any] | None:
        """Send a request to a peer and wait for the answer with the same key (None if
        the peer is not linked, the link drops, or no answer comes in time)."""
        return await self.requests.ask(peer_id, request, key, timeout)

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

    async def collect_logs(self, job_id: str, frame: int | None = None) -> list[dict[str, Any]]:
        """The renderer logs of a job's chunks (of one frame), from every node that
        rendered them. Raises Refused for an unknown job or frame."""
        return await collect_logs(self, job_id, frame)

    # -- the machine -----------------------------------------------------------------

    def _machine(self) -> NodeMachine:
        if self.machine is None:
            raise Refused("this node is still starting; try again in a moment")
        return self.machine

    def _make_machine(self, kwl: dict[str, dict[str, str]], records: list[Any]) -> NodeMachine:
        config = self.config
        machine = NodeMachine(
            MachineConfig(
                node_id=self.node_id,
                name=self.name,
                address=self.address,
                role=config.role,
                renders=config.renders,
                slots=config.slots,
                renderers=dict(self.renderers),
                bootstraps=tuple(format_address(*b) for b in config.bootstraps),
                peer_timeout=config.peer_timeout,
                former_ids=self._former_ids,
                cert=self.identity.cert_der,
                sign=self.identity.sign,
                version=__version__,
                hung_limit=config.hung_limit,
                compact_after=config.compact_after,
                tags=parse_tags(config.tags),
                memory=total_memory(),
                cores=logical_cores(),
            ),
            kwl=kwl,
            log=self._base_log if self._base_log is not None else ActionLog(authenticate=True),
        )
        self._base_log = None  # the machine's now
        # Our old id's last logged action may have lost the action that signed it: sign
        # it with the old key, or the farm could never take it.
        signers = {old.node_id: old.sign for old in self._retired}
        dropped = machine.restore(records, signers)
        if dropped:
            log.warning("%d invalid records in %s were skipped", dropped, self._logfile.path)
        if records:
            log.info(
                "rebuilt state from %d logged actions (digest %s)",
                len(machine.log),
                machine.log.digest()[:12],
            )
        return machine

    def feed(self, event: object) -> None:
        """Hand one event to the machine and carry out what it asks (for the node's own
        parts: links, renderer processes, outputs). A user request the machine refuses
        raises Refused."""
        machine = self._machine()
        for effect in machine.handle(event, trio.current_time()):
            self._carry_out(effect)
        if machine.changes != self._seen_changes:
            self._seen_changes = machine.changes
            self._changed.set()
            self._changed = trio.Event()
        self._tick_wakeup.set()  # the machine's next deadline may have moved

    def _carry_out(self, effect: object) -> None:
        if isinstance(effect, fx.Persist):
            self._to_persist.extend(effect.actions)
            self._flush_ready.set()
        elif isinstance(effect, fx.Broadcast):
            self._to_send.append((None, effect.actions))
            self._flush_ready.set()
        elif isinstance(effect, fx.SendActions):
            self._to_send.append((effect.peer, effect.actions))
            self._flush_ready.set()
        elif isinstance(effect, fx.Send):
            link = self.link_to(effect.peer)
            if link is not None:
                link.queue_message(effect.message)
        elif isinstance(effect, fx.Compacted):
            self._compact_pending = True
            self._flush_ready.set()
        elif isinstance(effect, fx.SendSnapshot):
            link = self.link_to(effect.peer)
            if link is not None and self._snapshot_bytes is not None:
                link.queue_message(message("SNAPSHOT", data=self._snapshot_bytes))
        elif isinstance(effect, fx.Dial):
            assert self.mesh is not None
            self.mesh.dial(effect.peer, effect.address)
        elif isinstance(effect, fx.SaveKnownPeers):
            assert self._nursery is not None
            self._nursery.start_soon(self._save_kwl)
        elif isinstance(effect, fx.StartRender):
            assert self._renders is not None
            self._renders.start(effect)
        elif isinstance(effect, fx.StopRender):
            assert self._renders is not None
            self._renders.stop(effect)
        elif isinstance(effect, fx.ScanOutputs | fx.FetchFrame | fx.Stitch | fx.FinishOutputs):
            assert self._outputs is not None
            self._outputs.carry_out(effect)
        elif isinstance(effect, fx.Note):
            log.log(effect.level, "%s", effect.text)
        elif isinstance(effect, fx.Left):
            self._left.set()

    async def _ticker(self) -> None:
        """Hand the machine a Tick at its next deadline."""
        machine = self._machine()
        while True:
            self._tick_wakeup = trio.Event()
            deadline = min(machine.next_deadline(), trio.current_time() + MAX_TICK_INTERVAL)
            with trio.move_on_at(deadline):
                await self._tick_wakeup.wait()
                continue
            self._tell_heard()
            self.feed(ev.Tick())

    def _tell_heard(self) -> None:
        """Tell the machine when each link last brought bytes (also the middle of a long
        message: a peer sending a big frame over a slow link is not silent)."""
        assert self.mesh is not None
        for peer, link in list(self.mesh.links.items()):
            if link.last_heard > self._heard_fed.get(peer, -1.0):
                self._heard_fed[peer] = link.last_heard
                self.feed(ev.Heard(peer, link.last_heard))

    async def _flusher(self) -> None:
        """Write accepted actions to disk (one fsync per batch), then send.

        Our own actions reach peers only once they are durable, so a crash can
        never make us reuse a seq that a peer has already seen. When the log file
        cannot be written (a full disk), nothing is sent and the batch is tried again
        until it can: the node stops taking chunks meanwhile and says why.
        """
        while True:
            await self._flush_ready.wait()
            self._flush_ready = trio.Event()
            persist, self._to_persist = self._to_persist, []
            sends, self._to_send = self._to_send, []
            if persist:
                try:
                    await trio.to_thread.run_sync(self._logfile.append, persist)
                except OSError as exc:
                    self._to_persist[:0] = persist
                    self._to_send[:0] = sends
                    self._disk_trouble(f"cannot write {self._logfile.path}: {exc}")
                    await trio.sleep(DISK_CHECK_INTERVAL)
                    self._flush_ready.set()
                    continue
                if self._log_write_failed:
                    self._log_write_failed = False
                    self._disk_ok_now()
                await self._note_log_started()
            assert self.mesh is not None
            for peer, actions in sends:
                if peer is None:
                    for link in list(self.mesh.links.values()):
                        link.queue_actions(actions)
                else:
                    link = self.link_to(peer)
                    if link is not None:
                        link.queue_actions(actions)
            if self._compact_pending:  # after the sends: they wait for nothing more
                try:
                    await self._write_compaction()
                except OSError as exc:
                    self._disk_trouble(f"cannot write {self._snapshot_file.path}: {exc}")
                    await trio.sleep(DISK_CHECK_INTERVAL)
                    self._flush_ready.set()
                    continue
            self._flushed.set()
            self._flushed = trio.Event()

    async def _write_compaction(self) -> None:
        """The machine compacted its log: write its base as the snapshot file, then the
        log file as the actions after it. Taken now, after the batches before it are on
        disk: every action the log applied is in one of the two."""
        self._compact_pending = False
        machine = self._machine()
        base, tail = snapshot.base_of(machine.log), machine.log.actions()
        received = self.received_snapshot
        if received is not None and (received[0], received[1]) != (base.count, base.base_key):
            received = None  # the base moved on since: encode it
        # Queued since the batch just written: applied, so in the base or the tail now.
        self._to_persist = []

        def write() -> bytes:
            # The bytes a peer sent, if they are this base's: the encoding is the same.
            if received is not None:
                data = received[2]
            else:
                data = snapshot.encode(snapshot.to_plain(base))
            store.compact(self._snapshot_file, self._logfile, data, [a.to_wire() for a in tail])
            return data

        try:
            self._snapshot_bytes = await trio.to_thread.run_sync(write)
        except OSError:
            self._compact_pending = True
            raise

    def disk_is_full(self) -> bool:
        """Whether the data folder's disk has less free space than the node needs."""
        try:
            return shutil.disk_usage(self.data_dir.root).free < self.config.min_free_bytes
        except OSError:
            return False

    def _disk_trouble(self, problem: str) -> None:
        if problem.startswith("cannot write"):
            self._log_write_failed = True
        if self.machine is not None and self.machine.worker.disk_problem != problem:
            self.feed(ev.DiskTrouble(problem))

    def _disk_ok_now(self) -> None:
        if (
            not self.disk_is_full()
            and self.machine is not None
            and self.machine.worker.disk_problem
        ):
            self.feed(ev.DiskTrouble(""))

    async def _watch_disk(self) -> None:
        """Stop taking chunks while the data folder's disk is (nearly) full; go on when
        there is room again. Serving what the node holds goes on all the while."""
        while True:
            free = await trio.to_thread.run_sync(self._free_bytes)
            if free is not None and free < self.config.min_free_bytes:
                self._disk_trouble(
                    f"the disk of {self.data_dir.root} has {free // 2**20} MiB free, below "
                    f"{self.config.min_free_bytes // 2**20} MiB: free some space (or set "
                    "--min-free-space lower) and this node takes chunks again"
                )
            elif not self._log_write_failed:
                self._disk_ok_now()
            await trio.sleep(DISK_CHECK_INTERVAL)

    def _free_bytes(self) -> int | None:
        try:
            return shutil.disk_usage(self.data_dir.root).free
        except OSError:
            return None

    async def _serve_counted(self, serve: Any, link: Link) -> str | None:
        """Serve a link, counting the bytes it moves (runtime/counters.py)."""
        self.counters.link_opened(link)
        try:
            return await serve(link)
        finally:
            self.counters.link_closed(link)

    async def _fetch_blob(self, sha: str, size: int, sources: list[str]) -> None:
        from peerfarm.runtime.blobs import fetch_blob

        await fetch_blob(self, sha, size, sources)

    # -- start-up and shut-down -------------------------------------------------------

    async def _probe_renderers(self) -> None:
        """What this node offers (each renderer's version), and why installed ones are not."""
        self.renderers = await trio.to_thread.run_sync(probe_renderers, self.plugins)
        self.renderers_not_offered = await trio.to_thread.run_sync(
            renderers_not_offered, self.plugins, self.renderers
        )
        log.info(
            "renderers here: %s",
            ", ".join(f"{n} {v}" for n, v in sorted(self.renderers.items())) or "none",
        )

    async def _load(self) -> tuple[dict[str, dict[str, str]], list[Any]]:
        """Identity, known-worker list and log records from the data folder."""
        root = self.data_dir.root
        root.mkdir(parents=True, exist_ok=True)
        default_name = self.config.name or socket.gethostname()[:64] or "node"
        self.identity = await trio.to_thread.run_sync(load_or_create_identity, root)
        ident = await trio.to_thread.run_sync(store.load_identity, root, default_name)
        records = await trio.to_thread.run_sync(self._logfile.load)
        await self._load_snapshot()
        former = ident.get("former_ids")
        self._former_ids = (
            tuple(i for i in former if type(i) is str) if type(former) is list else ()
        )
        # node.json says "has_log" once the log file held anything: a log gone since
        # (deleted, a lost disk) is damage too. A node restarted before it wrote any is not.
        self._has_log = bool(ident.get("has_log")) and ident["node_id"] == self.identity.node_id
        legacy = any(type(r) is dict and "prev" not in r for r in records)
        if legacy:
            # Written by protocol 2, before signed feeds (docs/protocol.md): its actions
            # cannot be shown to protocol 3 nodes, which refuse unsigned ones. The farm
            # starts a new history; rendered frames stay in their output folders.
            kept = await trio.to_thread.run_sync(self._logfile.set_aside, LEGACY_LOG_NAME)
            records = []
            log.warning(
                "this node's log was written by an older peerfarm (protocol 2, before "
                "signed feeds): kept as %s; the node starts a new history as a new node. "
                "Jobs that were not finished must be submitted again (frames already "
                "rendered stay in their output folders)",
                kept,
            )
        burnt = any(_names_as_faulty(r, self.identity.node_id) for r in records)
        if burnt:
            log.warning(
                "the farm proved that this node's id signed two different actions: another "
                "machine ran with this node's identity (a copied data folder?); it joins as "
                "a new node"
            )
        if (
            burnt
            or self._logfile.damaged
            or (self._has_log and not records and self._base_log is None)
        ):
            # Actions of ours the farm may hold are gone from our log: emitting under the
            # same id would reuse their numbers with other contents (a fork the farm
            # could not heal). A new incarnation, a new id, never can.
            self._retired.append(self.identity)
            old = await trio.to_thread.run_sync(retire_identity, root)
            self.identity = await trio.to_thread.run_sync(load_or_create_identity, root)
            self._former_ids = (*self._former_ids, old)
            if not legacy and not burnt:
                log.warning(
                    "this node's log file lost actions the farm may hold: it joins as a new "
                    "node %s (the old id %s is retired; its chunks go back to the farm)",
                    self.identity.node_id[:12],
                    old[:12],
                )
        self._has_log = bool(records) or self._base_log is not None
        wanted = self._identity_record(self.config.name or ident["name"])
        if ident != wanted:
            if ident["node_id"] and ident["node_id"] != wanted["node_id"]:
                log.info("this node's id is now its certificate's hash %s", wanted["node_id"][:12])
            await trio.to_thread.run_sync(store.save_identity, root, wanted)
        self.node_id, self.name = wanted["node_id"], wanted["name"]
        kwl = await trio.to_thread.run_sync(store.load_kwl, root)
        return kwl, records

    async def _load_snapshot(self) -> None:
        """The snapshot file, if the log was ever compacted: the log's base."""
        data = await trio.to_thread.run_sync(self._snapshot_file.load)
        if data is None:
            return
        try:
            base = await trio.to_thread.run_sync(
                lambda: snapshot.log_from_snapshot(snapshot.decode(data), authenticate=True)
            )
        except snapshot.SnapshotError as exc:
            kept = await trio.to_thread.run_sync(
                self._snapshot_file.set_aside, DAMAGED_SNAPSHOT_NAME
            )
            # The actions folded into it are gone from this node: as a damaged log file.
            self._logfile.damaged = True
            log.warning("%s cannot be used (%s): kept as %s", self._snapshot_file.path, exc, kept)
            return
        self._base_log, self._snapshot_bytes = base, data
        log.info(
            "loaded the log's snapshot: %d actions folded into it (digest %s)",
            base.base_count,
            base.digest()[:12],
        )

    def _identity_record(self, name: str) -> dict[str, Any]:
        """What node.json holds (runtime/store.py)."""
        record: dict[str, Any] = {"node_id": self.identity.node_id, "name": name}
        if self._former_ids:
            record["former_ids"] = list(self._former_ids)
        if self._has_log:
            record["has_log"] = True
        return record

    async def _note_log_started(self) -> None:
        """The log file holds something now: its loss later counts as damage (see _load)."""
        if not self._has_log:
            self._has_log = True
            record = self._identity_record(self.name)
            try:
                await trio.to_thread.run_sync(store.save_identity, self.data_dir.root, record)
            except OSError as exc:  # a full disk: the next batch tries again
                self._has_log = False
                log.warning("cannot update node.json: %s", exc)

    async def _drain(self) -> None:
        """Let the flusher write and hand the last actions to the links, then let them drain."""
        with trio.move_on_after(LEAVE_TIMEOUT):
            while self._to_persist or self._to_send:
                await self._flushed.wait()
            assert self.mesh is not None
            while any(not lk.outbox_empty() for lk in list(self.mesh.links.values())):
                await trio.sleep(0.02)
            await trio.sleep(0.05)

    async def _save_kwl(self) -> None:
        async with self._kwl_lock:  # one writer at a time; each writes the newest list
            kwl = self._machine().known_peers()
            await trio.to_thread.run_sync(store.save_kwl, self.data_dir.root, kwl)

    def _member_hosts(self) -> set[str]:
        """Hosts of the farm's known members (their handshakes get reserved slots)."""
        hosts = set()
        for entry in self._machine().known_peers().values():
            try:
                hosts.add(parse_address(entry["address"])[0])
            except ValueError:
                pass
        return hosts

    def _hello(self) -> dict[str, Any]:
        return message(
            "HELLO",
            protocol=PROTOCOL_VERSION,
            node_id=self.node_id,
            name=self.name,
            role=self.config.role,
            address=self.address,
            features=sorted(SPOKEN),
        )

    def missing_features(self, features: list[str]) -> list[str]:
        """Features the farm enabled that a peer does not speak (it is refused: what the
        farm writes now, it could not read)."""
        return sorted(set(self.state.features) - set(features))
