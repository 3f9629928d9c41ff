"""A simulated node: a real ActionLog driven by the runtime's rules, without trio.

Each rule below mirrors one piece of the runtime, so a bug the simulation finds
is a bug of the farm, not of the model:

- ``emit``: create, validate, apply, persist, then broadcast (``Node.emit`` and
  its flusher);
- anti-entropy and heartbeats (``Node._anti_entropy``, ``Node._heartbeats``);
- the failure detector and rejoining (``Node.peer_health``, ``Node._failure_detector``);
- start-up: rebuild from disk, catch up, announce (``Node._load``, ``Node._start_working``,
  ``Node._announce``);
- the worker (``Worker._stop_lost_claims``, ``_adopt_orphan_claims``, ``_fill_slots``);
- the collector (``Collector._collect``, ``_fetch``, ``_lost``) and frame serving
  (``Node._serve_frame``).

Where the model differs from the runtime on purpose, a comment says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from peerfarm import __version__
from peerfarm.core import actions as act
from peerfarm.core.actions import Action, validate_action
from peerfarm.core.log import ActionLog
from peerfarm.core.scheduler import pick_chunk
from peerfarm.core.state import (
    ACTIVE,
    CANCELLED,
    CHUNK_DONE,
    CHUNK_FAILED,
    CLAIMED,
    DOWN,
    JOB_FAILED,
    LEFT,
    PENDING,
    UP,
    Job,
)
from peerfarm.sim.network import Message

if TYPE_CHECKING:
    from peerfarm.sim.farm import Farm

# The runtime's timings (peerfarm/runtime/node.py, collector.py); a test keeps them equal.
PEER_TIMEOUT = 3.0
HEARTBEAT_INTERVAL = PEER_TIMEOUT / 3
ANTI_ENTROPY_INTERVAL = 2.0
RECONNECT_GRACE = 0.5
SYNC_TIMEOUT = 3.0
COLLECT_INTERVAL = 1.0  # the collector's RETRY_INTERVAL
FRAME_FETCH_TIMEOUT = 30.0
MAX_FETCHES = 8
# The runtime checks every 0.1 s. Checking every 0.25 s only delays a declaration by
# at most 0.15 s against a 3 s timeout, and keeps the event count (the test budget) low.
DETECT_INTERVAL = 0.25

# Message kinds (the wire protocol's, reduced to what the simulation needs).
ACTIONS = "ACTIONS"  # (ACTIONS, tuple of Action)
VV = "VV"  # (VV, version vector)
HEARTBEAT = "HEARTBEAT"  # (HEARTBEAT,)
GET_FRAME = "GET_FRAME"  # (GET_FRAME, job id, frame)
FRAME = "FRAME"  # (FRAME, job id, frame)
FRAME_MISSING = "FRAME_MISSING"  # (FRAME_MISSING, job id, frame)

MAX_REACTIONS = 10_000  # reactions to one event; more means a node is looping


@dataclass
class Render:
    job_id: str
    chunk: int
    claim_seq: int
    frames: range
    fails: bool  # drawn when the render starts: the renderer will exit non-zero


class SimNode:
    def __init__(
        self, farm: Farm, index: int, node_id: str, slots: int, speed: float, fail_prob: float
    ) -> None:
        self.farm = farm
        self.index = index
        self.node_id = node_id
        self.name = f"n{index}"
        self.address = f"10.0.0.{index + 1}:7100"
        self.slots = slots
        self.renders_frames = slots > 0  # a node with no slots is a mirror, like a bootstrap server
        # What the runtime's probe finds: the built-in renderer ships with peerfarm; a
        # node that does not render probes nothing.
        self.renderers = {"builtin": __version__} if self.renders_frames else {}
        self.speed = speed  # seconds per frame is frame_time * speed
        self.fail_prob = fail_prob
        # What survives a crash: the log file (every applied action is fsynced), the
        # frames it rendered and the frames it collected into its output folders.
        self.durable: list[Action] = []
        self.frames: set[tuple[str, int]] = set()
        self.outputs: dict[str, set[int]] = {}
        self.running = False
        self.frozen = False
        self.life = 0  # bumped on start and crash: events of an earlier life are dropped
        self._deferred: list[tuple[Callable[..., None], tuple[Any, ...]]] = []
        self._reset()

    def _reset(self) -> None:
        """Forget everything that lives only in memory."""
        self.log = ActionLog()
        self.started_at = 0.0
        self.working = False  # announced, worker and collector started
        self._join_vv: dict[str, int] | None = None
        self.heard: dict[str, float] = {}  # linked peers -> when we last heard from them
        self._lost_at: dict[str, float] = {}  # peers whose link broke -> when
        self._declared_down: dict[str, int] = {}
        self.renders: dict[tuple[str, int], Render] = {}
        self._fetching: dict[tuple[str, int], tuple[str, Job, int]] = {}  # -> holder, job, token
        self._fetch_tokens = 0
        self._complete: set[str] = set()
        self._reported_lost: set[tuple[str, int, int, str]] = set()
        self._outbox: list[Action] = []
        self._changed = False

    @property
    def state(self):  # noqa: ANN201 - peerfarm.core.state.State
        return self.log.state

    # -- scheduling on this node ------------------------------------------------------

    def call_later(self, delay: float, fn: Callable[..., None], *args: Any) -> None:
        self.farm.loop.call_later(delay, self._fire, self.life, fn, args)

    def _fire(self, life: int, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
        if life != self.life or not self.running:
            return  # scheduled before a crash: it died with the process
        if self.frozen:
            # SIGSTOP: nothing runs, but timers expire and sockets buffer; it all
            # happens at once when the process resumes.
            self._deferred.append((fn, args))
            return
        fn(*args)
        self._after_event()

    def deliver(self, src: str, msg: Message, life: int) -> None:
        """The network hands over a message sent to our life ``life``."""
        self._fire(life, self._receive, (src, msg))

    def _after_event(self) -> None:
        reactions = 0
        while self._changed:
            self._changed = False
            self._react()
            reactions += 1
            if reactions > MAX_REACTIONS:
                self.farm.violation(f"{self.name} keeps reacting to its own actions")
        self._flush()
        self.farm.check_running_node(self)

    def _react(self) -> None:
        """What wakes up on a state change: the worker loop and the collector loop."""
        if not self.working:
            return
        if self.renders_frames:
            self._stop_lost_claims()
            self._adopt_orphan_claims()
            self._fill_slots()
        self._collect_pass()

    # -- life cycle (driven by the farm's fault schedule) -----------------------------

    def start(self) -> None:
        """Start, or restart with the same node id after a crash."""
        assert not self.running
        self.running = True
        self.frozen = False
        self.life += 1
        self._reset()
        self.log.add_all(self.durable)  # rebuild the state from the log file
        self.started_at = self.farm.loop.now
        self.farm.trace(self, f"start ({len(self.durable)} actions on disk)")
        # Dial every known peer; each new link starts with a version-vector swap.
        for peer in self.farm.peers_of(self):
            self._send(peer, (VV, self.log.version_vector()))
        self.call_later(HEARTBEAT_INTERVAL, self._heartbeat)
        self.call_later(ANTI_ENTROPY_INTERVAL, self._anti_entropy)
        self.call_later(SYNC_TIMEOUT, self._start_working)
        self._after_event()

    def crash(self) -> None:
        """SIGKILL or power cut: everything in memory is gone, renders die."""
        if not self.running:
            return
        self.farm.trace(self, f"crash ({len(self.renders)} renders killed)")
        self.running = False
        self.frozen = False
        self.life += 1
        self._deferred = []
        self._reset()

    def freeze(self) -> None:
        if self.running and not self.frozen:
            self.farm.trace(self, "freeze")
            self.frozen = True

    def unfreeze(self) -> None:
        if not self.frozen:
            return
        self.farm.trace(self, f"resume ({len(self._deferred)} events waiting)")
        self.frozen = False
        deferred, self._deferred = self._deferred, []
        for fn, args in deferred:
            self.call_later(0.0, fn, *args)

    def lose_disk(self) -> None:
        """The disk holding rendered frames dies (the log and the outputs survive)."""
        self.farm.trace(self, f"disk lost ({len(self.frames)} frames)")
        self.frames.clear()

    def link_lost(self, peer: str) -> None:
        """The OS reported the link closed (the peer's process died)."""
        self.heard.pop(peer, None)
        self._lost_at[peer] = self.farm.loop.now

    def linked(self, peer: str) -> bool:
        """The runtime's ``Node.link_to(peer) is not None``.

        A runtime link lives from its handshake until the connection closes; silence
        alone never closes it (it only makes ``peer_health`` say suspect, then down),
        and a partition leaves TCP connections open. The model's link is ``heard``:
        entered on the first message from the peer, removed only when the OS reports
        the link closed (``link_lost``: the peer's process died) or when this node
        restarts. So a peer behind a partition stays linked, as in the runtime, and a
        fetch from it simply gets no answer until the partition ends. (Messages here
        overtake each other, so a message sent just before a crash can arrive after
        ``link_lost`` and link the dead peer again until it restarts; TCP would not.)
        """
        return peer in self.heard

    # -- what a user does -------------------------------------------------------------

    def submit(self, payload: dict[str, Any]) -> None:
        self.emit(act.NEW_JOB, payload)
        self._after_event()

    def cancel(self, job_id: str) -> str:
        """Like ``Node.cancel``: only a job this node knows as active. Returns why not."""
        job = self.state.jobs.get(job_id)
        if job is None:
            return "unknown here yet"
        if job.state != ACTIVE:
            return f"already {job.state}"
        self.emit(act.CANCEL_JOB, {"job_id": job_id})
        self._after_event()
        return ""

    def control(self, kind: str, job_id: str, priority: int = 0) -> str:
        """Like ``Node.pause/resume/retry/set_priority``, with the same refusals.
        Returns why not ("" when emitted)."""
        job = self.state.jobs.get(job_id)
        if job is None:
            return "unknown here yet"
        if kind == "pause":
            if job.state != ACTIVE or job.paused:
                return f"job is {job.display_state}"
            self.emit(act.PAUSE_JOB, {"job_id": job_id})
        elif kind == "resume":
            if not job.paused:
                return "not paused"
            self.emit(act.RESUME_JOB, {"job_id": job_id})
        elif kind == "retry":
            failed = any(c.state == CHUNK_FAILED or c.failed_on for c in job.chunks.values())
            if job.state not in (ACTIVE, JOB_FAILED) or not (failed or job.failures):
                return "nothing to retry"
            self.emit(act.RETRY_JOB, {"job_id": job_id})
        else:
            self.emit(act.SET_PRIORITY, {"job_id": job_id, "priority": priority})
        self._after_event()
        return ""

    # -- the log and the mesh ---------------------------------------------------------

    def emit(self, type_: str, payload: dict[str, Any]) -> Action:
        """Create one of our own actions, apply it, persist it, then broadcast it."""
        action = self.log.create(self.node_id, type_, payload)
        validate_action(action.to_wire())
        self.log.add(action)
        self.durable.append(action)
        self._outbox.append(action)
        self._changed = True
        self.farm.record(self, action)
        return action

    def _flush(self) -> None:
        """Broadcast our actions of this event in one ACTIONS message per peer.

        The runtime queues them only on live links; here every peer is tried and
        the network drops what cannot arrive: the same effect."""
        if not self._outbox:
            return
        batch = tuple(self._outbox)
        self._outbox = []
        for peer in self.farm.peers_of(self):
            self._send(peer, (ACTIONS, batch))

    def _send(self, peer: str, msg: Message) -> None:
        self.farm.network.send(self.node_id, peer, msg)

    def _receive(self, src: str, msg: Message) -> None:
        if src not in self.heard:
            # A new link (or the first message after the peer's restart): swap
            # version vectors, as both ends do on connect.
            self._send(src, (VV, self.log.version_vector()))
        self.heard[src] = self.farm.loop.now
        self._lost_at.pop(src, None)
        kind = msg[0]
        if kind == ACTIONS:
            applied = self.log.add_all(msg[1])
            if applied:
                self.durable.extend(applied)
                self._changed = True
                self._check_synced()
        elif kind == VV:
            missing = self.log.missing_for(msg[1])
            if missing:
                self._send(src, (ACTIONS, tuple(missing)))
            if self._join_vv is None:
                # Stands in for the bootstrap server's JOIN_REPLY: the first peer to
                # answer tells us how far we must catch up before announcing.
                self._join_vv = dict(msg[1])
                self._check_synced()
        elif kind == GET_FRAME:
            self._serve_frame(src, msg[1], msg[2])
        elif kind == FRAME:
            self._frame_arrived(src, msg[1], msg[2])
        elif kind == FRAME_MISSING:
            self._frame_missing(src, msg[1], msg[2])
        # HEARTBEAT: hearing anything is the point

    def _check_synced(self) -> None:
        if self.working or self._join_vv is None:
            return
        vv = self.log.version_vector()
        if all(vv.get(origin, 0) >= n for origin, n in self._join_vv.items()):
            self._start_working()

    def _heartbeat(self) -> None:
        for peer in self.farm.peers_of(self):
            self._send(peer, (HEARTBEAT,))
        self.call_later(HEARTBEAT_INTERVAL, self._heartbeat)

    def _anti_entropy(self) -> None:
        # Also to peers we have no link with: stands in for the dial loop's redialing.
        vv = self.log.version_vector()
        for peer in self.farm.peers_of(self):
            self._send(peer, (VV, vv))
        self.call_later(ANTI_ENTROPY_INTERVAL, self._anti_entropy)

    # -- start-up, failure detection, rejoining ---------------------------------------

    def _start_working(self) -> None:
        if self.working:
            return
        self.working = True
        self._announce()
        # No separate release of stale claims: the worker's first pass adopts the
        # claims this node held before a restart, like any other orphaned claim.
        self._changed = True
        self.call_later(DETECT_INTERVAL, self._detect)
        self.call_later(COLLECT_INTERVAL, self._collect_tick)

    def _announce(self) -> None:
        me = self.state.peers.get(self.node_id)
        renderers = tuple(sorted(self.renderers.items()))
        wanted = (self.name, self.address, self.slots, self.renders_frames, UP, renderers)
        if (
            me is None
            or (me.name, me.address, me.slots, me.renders, me.state, me.renderers) != wanted
        ):
            payload = {
                "name": self.name,
                "address": self.address,
                "slots": self.slots,
                "renders": self.renders_frames,
                "renderers": dict(renderers),
            }
            self.emit(act.PEER_JOINED, payload)

    def peer_health(self, peer: str) -> str:
        now = self.farm.loop.now
        heard = self.heard.get(peer)
        if heard is not None:
            silent = now - heard
            return (
                "down"
                if silent > PEER_TIMEOUT
                else "suspect"
                if silent > PEER_TIMEOUT / 2
                else "up"
            )
        lost = self._lost_at.get(peer)
        if lost is not None:
            return "down" if now - lost > RECONNECT_GRACE else "suspect"
        return "down" if now - self.started_at > PEER_TIMEOUT else "suspect"

    def _detect(self) -> None:
        peers = self.state.peers
        for peer_id in sorted(peers):  # sorted: a Map's order depends on string hashing
            peer = peers[peer_id]
            if peer_id == self.node_id or peer.state != UP:
                continue
            if self._declared_down.get(peer_id) == peer.incarnation:
                continue
            if self.peer_health(peer_id) == "down":
                self._declared_down[peer_id] = peer.incarnation
                self.emit(act.PEER_DOWN, {"node_id": peer_id, "incarnation": peer.incarnation})
        me = self.state.peers.get(self.node_id)
        if me is not None and me.state == DOWN:
            self._announce()  # declared down while alive (frozen or cut off): rejoin
        self.call_later(DETECT_INTERVAL, self._detect)

    # -- the worker -------------------------------------------------------------------

    def _holds(self, job: Job, index: int, claim_seq: int) -> bool:
        chunk = job.chunk(index)
        return (
            job.state == ACTIVE
            and chunk.state == CLAIMED
            and chunk.claim_origin == self.node_id
            and chunk.claim_seq == claim_seq
        )

    def _fill_slots(self) -> None:
        while len(self.renders) < self.slots:
            pick = pick_chunk(self.state, self.node_id, busy=self.renders)
            if pick is None:
                return
            job_id, index = pick
            claim = self.emit(act.CLAIM_CHUNK, {"job_id": job_id, "chunk": index})
            job = self.state.jobs[job_id]
            if not self._holds(job, index, claim.seq):
                self.farm.violation(f"{self.name}: its own claim on {job_id}/{index} lost locally")
            self._start_render(job, index, claim.seq)

    def _adopt_orphan_claims(self) -> None:
        """Chunks the state shows claimed by us with no render of ours: render them if
        a slot is free, else give them back (``RELEASE_CHUNK``).

        They come from a restart (the renders died with the process) and from claim
        outcomes that flip when late actions re-fold the log: a claim we lost (and
        stopped rendering) can win again when the claim that beat it turns out void.
        The runtime also checks that it is still claiming and not stopping; the model
        has no graceful stop, so a free slot is the only condition.
        """
        state = self.state
        for job_id in sorted(state.jobs):
            job = state.jobs[job_id]
            if job.state != ACTIVE:
                continue
            for index in sorted(job.chunks):
                chunk = job.chunks[index]
                if chunk.state != CLAIMED or chunk.claim_origin != self.node_id:
                    continue
                if (job_id, index) in self.renders:
                    continue
                if len(self.renders) < self.slots and not job.paused:
                    self.farm.trace(self, f"adopt {job_id}/{index} claim #{chunk.claim_seq}")
                    self._start_render(job, index, chunk.claim_seq)
                else:
                    self.farm.trace(self, f"give back {job_id}/{index}: not rendering it")
                    payload = {"job_id": job_id, "chunk": index, "claim_seq": chunk.claim_seq}
                    self.emit(act.RELEASE_CHUNK, payload)

    def _start_render(self, job: Job, index: int, claim_seq: int) -> None:
        frames = job.frames_of(index)
        rng = self.farm.rng
        render = Render(job.id, index, claim_seq, frames, rng.random() < self.fail_prob)
        self.renders[(job.id, index)] = render
        seconds = len(frames) * self.farm.schedule.frame_time * self.speed
        self.call_later(seconds * rng.uniform(0.8, 1.25), self._render_finished, render)

    def _stop_lost_claims(self) -> None:
        for key, render in list(self.renders.items()):
            job = self.state.jobs[render.job_id]
            chunk = job.chunk(render.chunk)
            if job.state != ACTIVE:
                reason = f"job {job.state}"
            elif chunk.state == CLAIMED and chunk.claim_origin != self.node_id:
                reason = f"claim lost to {self.farm.name_of(chunk.claim_origin)}"
            elif chunk.state in (CLAIMED, PENDING):
                continue  # ours, or released and still free: its DONE still counts
            else:
                reason = f"chunk {chunk.state}"
            del self.renders[key]
            self.farm.trace(self, f"stop {render.job_id}/{render.chunk}: {reason}")

    def _render_finished(self, render: Render) -> None:
        key = (render.job_id, render.chunk)
        if self.renders.get(key) is not render:
            return  # stopped meanwhile
        del self.renders[key]
        ref = {"job_id": render.job_id, "chunk": render.chunk, "claim_seq": render.claim_seq}
        if render.fails:
            self.emit(act.CHUNK_FAILED, {**ref, "error": "simulated renderer failure"})
        else:
            # Frames are fsynced before DONE is emitted.
            self.frames.update((render.job_id, f) for f in render.frames)
            self.emit(act.DONE, ref)
        self._changed = True

    # -- the collector and frame serving ----------------------------------------------

    def _collect_tick(self) -> None:
        self._collect_pass()
        self.call_later(COLLECT_INTERVAL, self._collect_tick)

    def _collect_pass(self) -> None:
        state = self.state
        for job_id in sorted(state.jobs):
            job = state.jobs[job_id]
            if job.submitter == self.node_id and job.state != CANCELLED:
                self._collect(job)

    def _collect(self, job: Job) -> None:
        if job.id in self._complete:
            return
        collected = self.outputs.setdefault(job.id, set())
        for index in sorted(job.chunks):
            chunk = job.chunks[index]
            if chunk.state != CHUNK_DONE:
                continue
            missing = [f for f in job.frames_of(index) if f not in collected]
            holder = self.state.peers.get(chunk.done_by)
            # Lost only if the farm calls the holder gone *and* we have no link to it:
            # after a partition the state may still say down while we hear it again.
            if (
                missing
                and chunk.done_by != self.node_id
                and (holder is None or holder.state in (DOWN, LEFT))
                and not self.linked(chunk.done_by)
            ):
                self._lost(job, index, chunk.done_by, "its holder is gone")
                continue
            for frame in missing:
                if (job.id, frame) in self._fetching:
                    continue
                if len(self._fetching) >= MAX_FETCHES:
                    return
                self._fetch(job, frame, chunk.done_by)
        if len(collected) == job.frames_total:
            self._complete.add(job.id)  # the runtime writes the GIF here
            self.farm.trace(self, f"collected all {job.frames_total} frames of {job.id}")

    def _fetch(self, job: Job, frame: int, holder: str) -> None:
        if holder == self.node_id:
            if (job.id, frame) in self.frames:
                self.outputs[job.id].add(frame)
                self._changed = True
            else:
                self._lost(job, job.chunk_of_frame(frame), holder, f"frame {frame} is missing")
            return
        if not self.linked(holder):
            return  # no link to the holder: the next pass tries again
        self._fetch_tokens += 1
        token = self._fetch_tokens
        self._fetching[(job.id, frame)] = (holder, job, token)
        self._send(holder, (GET_FRAME, job.id, frame))
        self.call_later(FRAME_FETCH_TIMEOUT, self._fetch_timed_out, (job.id, frame), token)

    def _fetch_timed_out(self, key: tuple[str, int], token: int) -> None:
        entry = self._fetching.get(key)
        if entry is not None and entry[2] == token:
            del self._fetching[key]

    def _frame_arrived(self, src: str, job_id: str, frame: int) -> None:
        entry = self._fetching.get((job_id, frame))
        if entry is None or entry[0] != src:
            return  # an answer to a request that timed out
        del self._fetching[(job_id, frame)]
        self.outputs.setdefault(job_id, set()).add(frame)
        self._changed = True

    def _frame_missing(self, src: str, job_id: str, frame: int) -> None:
        entry = self._fetching.get((job_id, frame))
        if entry is None or entry[0] != src:
            return
        del self._fetching[(job_id, frame)]
        job = entry[1]  # as the runtime's _fetch: the job as it was when the fetch began
        self._lost(job, job.chunk_of_frame(frame), src, f"frame {frame} is missing")

    def _lost(self, job: Job, index: int, holder: str, why: str) -> None:
        # Per holder too: after a re-fold another node can hold the same epoch's frames.
        key = (job.id, index, job.chunk(index).epoch, holder)
        if key in self._reported_lost:
            return
        self._reported_lost.add(key)
        self.farm.trace(self, f"frames of {job.id}/{index} lost: {why}")
        self.emit(act.CHUNK_LOST, {"job_id": job.id, "chunk": index, "holder": holder})

    def _serve_frame(self, src: str, job_id: str, frame: int) -> None:
        job = self.state.jobs.get(job_id)
        if job is not None and job.state != CANCELLED and (job_id, frame) in self.frames:
            self._send(src, (FRAME, job_id, frame))
        else:
            self._send(src, (FRAME_MISSING, job_id, frame))
