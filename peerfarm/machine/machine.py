"""The node machine: one node's rules, as an object that eats events and emits effects.

In the spirit of h11 and wsproto, the machine does no I/O: no sockets, no
files, no clock, no randomness, no trio. A driver feeds it events (with the
time they happened) and carries out the effects it returns. The trio runtime
(peerfarm/runtime) and the simulator (peerfarm/sim) both drive this very
object, so a green simulator seed means the rules that run on a user's
machine hold.

    machine = NodeMachine(config, kwl=known_peers, log=log_rebuilt_from_disk)
    effects = machine.handle(Started(), now)
    ...
    effects = machine.handle(ActionsReceived(peer, actions), now)
    effects = machine.handle(Tick(), now)   # at machine.next_deadline() at the latest

Every rule that decides lives in one part, each with its own view:
membership (links, known-worker list, catching up, failure detection,
announcing), worker (claiming, adoption, stopping lost claims, pause), collector
(collection order, lost frames), job_control (user requests), and the
lifecycle here (start, graceful and emergency stop).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

from peerfarm.core import actions as act
from peerfarm.core import summary
from peerfarm.core.actions import InvalidAction, validate_action
from peerfarm.core.log import ActionLog
from peerfarm.core.refused import Refused
from peerfarm.core.requirements import why_waiting
from peerfarm.core.state import CANCELLED, FAULTY, LEFT, Peer, State
from peerfarm.machine import effects as fx
from peerfarm.machine import events as ev
from peerfarm.machine import job_control
from peerfarm.machine.collector import Collector
from peerfarm.machine.compaction import Compaction
from peerfarm.machine.features import FeatureLevel
from peerfarm.machine.membership import Membership
from peerfarm.machine.shared import MachineConfig, Shared
from peerfarm.machine.timing import ABORT_TIMEOUT
from peerfarm.machine.worker import Worker

MAX_REACTIONS = 10_000  # reaction passes for one event; more means the node is looping


def speeds_of(peer: Peer | None) -> dict[str, dict[str, float]]:
    """A peer's measured speeds as status shows them: renderer -> seconds per frame and
    start-up seconds (docs/scheduling.md)."""
    if peer is None:
        return {}
    return {
        name: {"frame_seconds": frame_ms / 1000.0, "startup_seconds": startup_ms / 1000.0}
        for name, frame_ms, startup_ms in peer.speeds
    }


class NodeMachine:
    def __init__(
        self,
        config: MachineConfig,
        *,
        kwl: dict[str, dict[str, str]] | None = None,
        log: ActionLog | None = None,
    ) -> None:
        if log is None:
            log = ActionLog(authenticate=config.sign is not None)
        self.shared = Shared(config, log)
        self.membership = Membership(self.shared, kwl or {})
        self.worker = Worker(self.shared)
        self.collector = Collector(self.shared, self.membership)
        self.features = FeatureLevel(self.shared, self.membership)
        self.compaction = Compaction(self.shared, self.membership)
        self.started = False
        self.aborting = False
        # Users' requests (submit, job control) that came before this node caught up
        # with the farm: emitted once it has (see _user_action).
        self._before_sync: list[tuple[str, dict]] = []
        self.left = False
        self._abort_deadline = math.inf
        self._handlers: dict[type, Callable[[Any], None]] = {
            ev.Started: self._started,
            ev.Tick: self._tick,
            ev.LinkUp: self._link_up,
            ev.LinkDown: lambda e: self.membership.link_down(e.peer),
            ev.Heard: lambda e: None,  # handle() already noted when we heard the peer
            ev.ProbeReceived: lambda e: self.membership.probe_received(e.peer, e.message),
            ev.ActionsReceived: lambda e: self.membership.actions_received(e.peer, e.actions),
            ev.VersionVectorReceived: self._vv_received,
            ev.SnapshotReceived: lambda e: self.compaction.received(e.peer, e.snapshot),
            ev.JoinAsked: self._join_asked,
            ev.JoinAnswered: lambda e: self.membership.join_answered(e.kwl, e.vv),
            ev.PeersFound: lambda e: self.membership.learn(e.entries),
            ev.RenderProgress: lambda e: self.worker.progress(e.job_id, e.chunk),
            ev.RenderEnded: lambda e: self.worker.ended(
                e.job_id, e.chunk, e.ok, e.error, e.no_space
            ),
            ev.DiskTrouble: lambda e: self.worker.disk_trouble(e.problem),
            ev.OutputsScanned: self.collector.scanned,
            ev.FrameFetched: self.collector.fetched,
            ev.Stitched: self.collector.stitched,
            ev.OutputsFinished: self.collector.finished,
            ev.SubmitJob: self._submit,
            ev.CancelJob: lambda e: self._control(job_control.cancel(self.state, e.job_id)),
            ev.PauseJob: lambda e: self._control(job_control.pause(self.state, e.job_id)),
            ev.ResumeJob: lambda e: self._control(job_control.resume(self.state, e.job_id)),
            ev.RetryJob: lambda e: self._control(job_control.retry(self.state, e.job_id)),
            ev.SetPriority: lambda e: self._control(
                job_control.set_priority(self.state, e.job_id, e.priority)
            ),
            ev.PauseWorker: lambda e: self.worker.pause(),
            ev.ResumeWorker: lambda e: self.worker.resume(),
            ev.SetSlots: self._set_slots,
            ev.Stop: self._stop,
        }

    # -- queries (read only; faces reach them through the driver's API) ----------------

    @property
    def config(self) -> MachineConfig:
        return self.shared.config

    @property
    def node_id(self) -> str:
        return self.shared.node_id

    @property
    def log(self) -> ActionLog:
        return self.shared.log

    @property
    def state(self) -> State:
        return self.shared.log.state

    @property
    def changes(self) -> int:
        """Grows whenever something a face could show changed."""
        return self.shared.changes

    @property
    def stopping(self) -> bool:
        return self.shared.stopping

    @property
    def working(self) -> bool:
        """Caught up and announced: the worker and the collector run."""
        return self.membership.working

    @property
    def synced(self) -> bool:
        return self.membership.synced

    def health(self, peer: str, now: float | None = None) -> str:
        """up, suspect or down: this node's own view, at ``now`` (default: the last event)."""
        return self.membership.health(peer, now)

    def linked(self, peer: str) -> bool:
        return self.membership.linked(peer)

    def address_of(self, peer: str) -> str | None:
        return self.membership.address_of(peer)

    def known_peers(self) -> dict[str, dict[str, str]]:
        """The known-worker list: peer id -> {address, name} (a copy)."""
        return {peer: dict(entry) for peer, entry in self.membership.kwl.items()}

    def peer_name(self, peer: str) -> str:
        known = self.state.peers.get(peer)
        return known.name if known else self.membership.kwl.get(peer, {}).get("name", "")

    def frames_collected(self, job_id: str) -> frozenset[int]:
        """Frames of one of our jobs that are in its output folder."""
        return frozenset(self.collector.collected.get(job_id, ()))

    def serves_frames_of(self, job_id: str) -> bool:
        """Whether this node hands out frames of the job (not of cancelled ones)."""
        job = self.state.jobs.get(job_id)
        return job is not None and job.state != CANCELLED

    def frames_to_retry(self, job_id: str) -> int:
        return job_control.frames_to_retry(self.state, job_id)

    def next_deadline(self) -> float:
        """When to hand the machine a Tick at the latest (math.inf: only on events)."""
        if not self.started:
            return math.inf
        deadline = min(self.membership.next_deadline(), self.compaction.next_deadline())
        if self.working:
            deadline = min(deadline, self.collector.next_deadline())
            if self.config.renders:
                deadline = min(deadline, self.worker.next_deadline())
        if self.shared.stopping and not self.left:
            deadline = min(deadline, self._abort_deadline)
        return deadline

    def restore(
        self, raw_records: list[Any], signers: Mapping[str, Callable[[bytes], bytes]] = {}
    ) -> int:
        """Rebuild the state from the actions of our log file; returns how many
        records were invalid (and skipped). ``signers``: ids we retired at this start,
        with their keys: the last action of each is signed if nothing signed it."""
        valid = []
        for raw in raw_records:
            try:
                valid.append(validate_action(raw))
            except InvalidAction:
                pass
        log = self.shared.log
        log.restore(valid, own={self.node_id, *signers})  # checked before they were written
        for origin, sign in signers.items():
            signed = log.sign_held(origin, sign)
            if signed is not None:
                self.shared.persist(signed)
        return len(raw_records) - len(valid)

    def status(self) -> dict[str, Any]:
        """This node's view of the farm: peers, jobs, its worker (what `status` shows)."""
        state = self.state
        membership = self.membership
        peers = []
        for peer_id in sorted(set(membership.kwl) | set(state.peers)):
            if peer_id == self.node_id:
                continue
            replicated = state.peers.get(peer_id)
            known = membership.kwl.get(peer_id, {})
            if replicated is not None and replicated.state in (LEFT, FAULTY):
                health = replicated.state
            elif not self.started:
                health = "unknown"
            else:
                health = membership.health(peer_id)
            peers.append(
                {
                    "id": peer_id,
                    "name": replicated.name if replicated else known.get("name", ""),
                    "address": known.get("address") or (replicated.address if replicated else ""),
                    "connected": membership.linked(peer_id),
                    "state": health,
                    "renders": replicated.renders if replicated else None,
                    "slots": replicated.slots if replicated else None,
                    "features": list(replicated.features) if replicated else [],
                    "version": replicated.version if replicated else "",
                    "speeds": speeds_of(replicated),
                    "tags": list(replicated.tags) if replicated else [],
                    "memory": replicated.memory if replicated else 0,
                    "cores": replicated.cores if replicated else 0,
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
                "order": job.order,
                "supersedes": job.supersedes,
                "output": job.output,
                "error": job.error,
                # requirements and limits (docs/scheduling.md), and why no node takes it
                "require": list(job.require),
                "require_memory": job.require_memory,
                "max_nodes": job.max_nodes,
                "waiting": why_waiting(state, job),
                # Who rendered the done frames: node id -> frames (the render that counted).
                "frames_by_node": summary.frames_by_node(job),
            }
            if self.shared.is_me(job.submitter):
                entry.update(self.collector.progress(job))
            jobs.append(entry)
        config = self.config
        return {
            "node_id": self.node_id,
            "name": config.name,
            "address": config.address,
            "role": config.role,
            "faulty": self.shared.faulty,
            "state_digest": self.log.digest(),
            "log_length": len(self.log),  # actions after the snapshot, in memory
            "log_compacted": self.log.base_count,  # actions folded into the snapshot
            # protocol features: the farm's (enabled) and this node's (core/features.py)
            "features": list(state.features),
            "speaks": sorted(config.features),
            "peers": peers,
            "jobs": jobs,
            "worker": self.worker.status() if config.renders else None,
            # What the farm knows of this node's speed (NODE_SPEED), as of its peers'.
            "speeds": speeds_of(self.state.peers.get(self.node_id)),
            # What this node advertises of itself (jobs may require them).
            "tags": list(config.tags),
            "memory": config.memory,
            "cores": config.cores,
        }

    # -- the one way in ----------------------------------------------------------------

    def handle(self, event: object, now: float) -> list[fx.Effect]:
        """Apply one event at time ``now``; return the effects to carry out, in order.

        A user request that cannot be carried out raises Refused and changes nothing.
        """
        shared = self.shared
        shared.now = max(shared.now, now)
        peer = getattr(event, "peer", None)
        if peer:
            self.membership.heard_from(peer, getattr(event, "at", None))
        try:
            self._handlers[type(event)](event)
        except Refused:
            shared.effects.clear()
            raise
        self._react()
        return shared.take_effects()

    def _react(self) -> None:
        """Run the rules that act on change until nothing more changes."""
        shared = self.shared
        for _ in range(MAX_REACTIONS):
            if not shared.dirty:
                return
            shared.dirty = False
            applied, shared.applied = shared.applied, []
            if not self.started or self.left:
                continue
            membership = self.membership
            if membership.synced and not membership.working and not shared.stopping:
                self._start_working()
            if membership.working:
                if not shared.stopping:
                    self.features.react()
                self.collector.observe(applied)
                if self.config.renders:
                    self.worker.observe(applied)
                    self.worker.react()
                self.collector.react()
            if shared.stopping:
                self._maybe_leave()
        shared.dirty = False
        shared.note(logging.CRITICAL, "internal error: the node keeps reacting to its own actions")

    # -- lifecycle ---------------------------------------------------------------------

    def _started(self, event: ev.Started) -> None:
        if self.started:
            return
        self.started = True
        self.membership.start()
        self.shared.touch()

    def _start_working(self) -> None:
        """Caught up with the farm (or no one answered in time): announce ourselves and
        start the worker, the collector and the failure detector. No separate release
        of stale claims: the worker's first pass adopts the claims this node held
        before a restart, like any other orphaned claim."""
        self.membership.working = True
        self.membership.announce()
        waiting, self._before_sync = self._before_sync, []
        for type_, payload in waiting:
            self.shared.emit(type_, payload)
        self.collector.start()
        self.shared.touch()

    def _tick(self, event: ev.Tick) -> None:
        if not self.started:
            return
        membership = self.membership
        self.compaction.tick()  # first: none of our own actions is waiting to be signed
        membership.tick()
        if membership.synced and not membership.working and not self.shared.stopping:
            self._start_working()
        if membership.working and not self.shared.stopping:
            membership.detect()
        if membership.working:
            self.collector.tick()
            if self.config.renders:
                self.worker.tick()
        if self.shared.stopping:
            self.shared.dirty = True  # _react checks whether we may leave now

    def _link_up(self, event: ev.LinkUp) -> None:
        self.membership.link_up(event.peer, event.role, event.name, event.address)
        self.collector.relinked()

    def _vv_received(self, event: ev.VersionVectorReceived) -> None:
        self.compaction.heard(event.peer, event.vv, event.heads)
        self.membership.vv_received(event.peer, event.vv, event.heads)

    def _join_asked(self, event: ev.JoinAsked) -> None:
        if self.config.role != "bootstrap":
            raise Refused("only a bootstrap server answers JOIN")
        self.membership.join_asked(event.peer)

    def _submit(self, event: ev.SubmitJob) -> None:
        if self.shared.stopping:
            raise Refused("this node is stopping; submit to another node")
        old = event.payload.get("supersedes")
        if old and old not in self.state.jobs:
            raise Refused(f"job {old}, which this job would replace, is not known to this node")
        self._user_action(act.NEW_JOB, event.payload)

    def _control(self, request: job_control.Request) -> None:
        self._user_action(*request)

    def _user_action(self, type_: str, payload: dict) -> None:
        """Emit a user's request, or keep it until this node has caught up with the farm.
        A node's Lamport clock is only as far as its log: just started (a log lost to
        damage, or days down), an action emitted now could sort before history the
        others already folded into their snapshots (machine/compaction.py), and nodes
        would fold it in different places. Catching up takes a moment (a bootstrap
        server's answer, or SYNC_TIMEOUT when no one answers)."""
        if self.membership.working:
            self.shared.emit(type_, payload)
            return
        self._before_sync.append((type_, payload))
        self.shared.note(logging.INFO, f"{type_} waits until this node has caught up with the farm")

    def _set_slots(self, event: ev.SetSlots) -> None:
        slots = event.slots
        if type(slots) is not int or not 0 <= slots <= 1024:
            raise Refused(f"slots {slots!r}: give a whole number from 0 to 1024")
        self.shared.config.slots = slots
        if self.membership.synced and self.config.renders:
            self.membership.announce()  # the farm view shows every node's slots
        self.shared.touch()

    def _stop(self, event: ev.Stop) -> None:
        shared = self.shared
        if (shared.stopping or event.at_once) and not self.aborting:
            self.aborting = True
            self._abort_deadline = shared.now + ABORT_TIMEOUT
            if self.worker.renders:
                shared.note(
                    logging.INFO, "stopping at once: killing renderers, releasing their chunks"
                )
            self.worker.abort()
        if not shared.stopping:
            shared.stopping = True
            if self.worker.renders and not self.aborting:
                self.worker.finish_soon()
                shared.note(
                    logging.INFO,
                    f"stopping: finishing {len(self.worker.renders)} render(s) in flight, "
                    "runs of several chunks at their next finished chunk "
                    "(stop again to stop at once)",
                )
        shared.touch()

    def _maybe_leave(self) -> None:
        """Leave once the renders in flight ended (or, stopping at once, after a while)."""
        shared = self.shared
        if self.left:
            return
        if self.worker.renders and not (self.aborting and shared.now >= self._abort_deadline):
            return
        self.left = True
        me = shared.state.peers.get(shared.node_id)
        if me is not None and me.state != LEFT:
            shared.emit(act.PEER_LEFT, {})
        shared.out(fx.Left())
