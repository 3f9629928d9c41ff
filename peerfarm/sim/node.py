"""A simulated node: the real node machine, driven by simulated time, links, disks
and renderers.

The rules are not here: they are peerfarm.machine's, the very object the trio
runtime drives. This driver only simulates the world around one node:

- the clock: the machine gets a Tick at its own next deadline;
- links: a dial loop per peer (backoff as in the runtime), links that exist from
  their handshake until a process dies, messages that travel on a link;
- the disk: the log file (every applied action survives a crash; fsync is instant),
  the snapshot the log was compacted into (written, then the log file rewritten as the
  tail: a crash in between is a fault of its own), the known-worker list, rendered
  frames and collected outputs;
- renderer processes as timers (a chosen fraction of them fail);
- answering GET_FRAME from the frames on its disk.

Where the model simplifies the world, a comment says so.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from peerfarm import __version__
from peerfarm.core import snapshot
from peerfarm.core.actions import Action
from peerfarm.core.log import ActionLog
from peerfarm.machine import NodeMachine
from peerfarm.machine import effects as fx
from peerfarm.machine import events as ev
from peerfarm.machine.shared import MachineConfig
from peerfarm.machine.timing import FRAME_FETCH_TIMEOUT, MAX_BACKOFF, MIN_BACKOFF, PEER_TIMEOUT
from peerfarm.sim.network import Message
from peerfarm.sim.schedule import identity_of
from peerfarm.wire.messages import message

if TYPE_CHECKING:
    from peerfarm.sim.farm import Farm

__all__ = ["PEER_TIMEOUT", "SimNode"]

STOP_DELAY = 0.01  # a killed renderer process is gone this long after the signal

FetchKey = tuple[str, int, int]  # job id, frame, tile (-1: whole frame)


class SimNode:
    def __init__(
        self,
        farm: Farm,
        index: int,
        node_id: str,
        slots: int,
        speed: float,
        fail_prob: float,
        hang_after: int = -1,
        tags: tuple[str, ...] = (),
        memory: int = 0,
    ) -> None:
        self.farm = farm
        self.tags = tags  # what it advertises (jobs may require them)
        self.memory = memory
        self.index = index
        self.node_id = node_id
        self.name = f"n{index}"
        self.address = f"10.0.0.{index + 1}:7100"
        self.slots = slots
        self.speed = speed  # seconds per frame is frame_time * speed
        self.fail_prob = fail_prob
        self.hang_after = hang_after  # renders after this many hang (-1: none)
        self.renders_started = 0
        # What survives a crash: the log file, the known-worker list (every peer, as a
        # bootstrap server would have told it), the frames it rendered (job, frame,
        # tile or -1) and the frames it collected into its output folders.
        self.durable: list[Action] = []
        self.persisted: list[dict[str, Any]] = []  # the log file, in the order written
        self.snapshot: bytes | None = None  # the snapshot file, if the log was compacted
        # CRASH_COMPACTING: the next compaction dies after the snapshot is written, and
        # the node restarts this many seconds later.
        self.crash_compacting: float | None = None
        self.log_damaged = False  # the next start finds its log file damaged
        self.former_ids: list[str] = []  # ids before new incarnations
        self.fool: frozenset[str] = frozenset()  # peers its next broadcast lies to
        # (A node that starts late is a new machine: no one knows it before it greets.)
        plans = farm.schedule.nodes
        self.kwl = {
            peer: {"address": f"10.0.0.{farm.index_of(peer) + 1}:7100", "name": farm.name_of(peer)}
            for peer in farm.peers_of(self)
            if plans[farm.index_of(peer)].start_at is None
        }
        self.frames: set[FetchKey] = set()
        self.outputs: dict[str, set[int]] = {}
        self.running = False
        self.frozen = False
        self.life = 0  # bumped on start and crash: events of an earlier life are dropped
        self._deferred: list[tuple[Callable[..., None], tuple[Any, ...]]] = []
        self.machine: NodeMachine | None = None
        self._reset()

    def _reset(self) -> None:
        """Forget everything that lives only in memory."""
        self._renders: dict[tuple[str, int], int] = {}  # render -> token of its timer
        self._fetches: dict[FetchKey, tuple[str, int]] = {}  # -> holder, token
        self._dialing: dict[str, float] = {}  # peer -> backoff of its dial loop
        self._tokens = 0  # numbers renders and fetches, so stale timers are known
        self._tick_at = math.inf
        self._tick_token = 0
        self._join_answered = False

    # -- what the farm reads -------------------------------------------------------------

    @property
    def log(self) -> ActionLog:
        assert self.machine is not None
        return self.machine.log

    @property
    def state(self):  # noqa: ANN201 - peerfarm.core.state.State
        return self.log.state

    @property
    def working(self) -> bool:
        return self.machine is not None and self.machine.working

    def peer_health(self, peer: str) -> str:
        assert self.machine is not None
        return self.machine.health(peer, self.farm.loop.now)

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

    def _handle(self, event: object) -> None:
        """Hand one event to the machine and carry out what it asks."""
        machine = self.machine
        assert machine is not None
        now = self.farm.loop.now
        for effect in machine.handle(event, now):
            self._carry_out(effect)
        self.farm.check_running_node(self)
        deadline = machine.next_deadline()
        if isinstance(event, ev.Tick) and deadline <= now:
            self.farm.violation(f"{self.name}: the machine wants another tick at once ({now:.3f})")
        if deadline < self._tick_at:
            self._tick_at = deadline
            self._tick_token += 1
            self.call_later(deadline - now, self._tick, self._tick_token)

    def _tick(self, token: int) -> None:
        if token != self._tick_token:
            return  # an earlier deadline replaced this one
        self._tick_at = math.inf
        self._handle(ev.Tick())

    # -- life cycle (driven by the farm's fault schedule) -----------------------------

    def start(self) -> None:
        """Start, or restart with the same node id after a crash."""
        assert not self.running
        self.running = True
        self.frozen = False
        self.life += 1
        self._reset()
        if self.snapshot is not None:
            log = snapshot.log_from_snapshot(snapshot.decode(self.snapshot), authenticate=True)
        else:
            log = ActionLog(authenticate=True)
        # Rebuild the state from the log file, as NodeMachine.restore does.
        log.restore(self.durable, own={self.node_id})
        if self.node_id in log.forked():
            # As the runtime does: the farm proved this id faulty (it signed two versions
            # of an action); nothing it emits counts, so it comes back under a new id.
            self.log_damaged = True
        if self.log_damaged:
            # As the runtime does: actions of ours the farm may hold are gone from our
            # log, so this node comes back as a new incarnation with a new id.
            old = self.node_id
            self.former_ids.append(old)
            signed = log.sign_held(old, identity_of(old).sign)  # as NodeMachine.restore
            if signed is not None:
                self.persisted.append(signed.to_wire())
            self.node_id = self.farm.new_incarnation(self)
            self.farm.trace(self, f"new incarnation {self.node_id[:8]} (retired {old[:8]})")
        renders = self.slots > 0  # a node with no slots is a mirror, like a bootstrap server
        identity = identity_of(self.node_id)
        config = MachineConfig(
            node_id=self.node_id,
            cert=identity.cert_der,
            sign=identity.sign,
            name=self.name,
            address=self.address,
            renders=renders,
            slots=self.slots,
            # What the runtime's probe finds: the built-in renderer ships with peerfarm.
            renderers={"builtin": __version__} if renders else {},
            former_ids=tuple(self.former_ids),
            backups=self.farm.schedule.backups,
            hung_limit=self.farm.schedule.hung_limit,
            compact_after=self.farm.schedule.compact_after,
            compaction_waits_for_down=self.farm.schedule.compaction_waits_for_down,
            tags=self.tags,
            memory=self.memory,
        )
        self.log_damaged = False
        self.machine = NodeMachine(config, kwl=dict(self.kwl), log=log)
        self.farm.trace(self, f"start ({len(self.durable)} actions on disk)")
        self._handle(ev.Started())

    def crash(self) -> None:
        """SIGKILL or power cut: everything in memory is gone, renders die."""
        if not self.running:
            return
        self.farm.trace(self, f"crash ({len(self._renders)} renders killed)")
        # Every applied action was persisted before its event ended (fsync is instant here).
        self.durable = [Action(**wire) for wire in self.persisted]
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

    def damage_log(self) -> None:
        """A corrupt record in the log file: it is cut off with everything after it (the
        node finds out at its next start)."""
        keep = self.farm.rng.randint(0, len(self.persisted))
        self.farm.trace(self, f"log damaged: {len(self.persisted) - keep} of its records lost")
        self.persisted = self.persisted[:keep]
        self.durable = [Action(**wire) for wire in self.persisted]
        self.log_damaged = True

    def lose_disk(self) -> None:
        """The disk holding rendered frames dies (the log and the outputs survive)."""
        self.farm.trace(self, f"disk lost ({len(self.frames)} frames)")
        self.frames.clear()

    # -- links ----------------------------------------------------------------------------

    def _dial(self, peer: str) -> None:
        """The runtime's dial loop: keep a link to ``peer``, redialing with backoff."""
        if peer not in self._dialing:
            self._dialing[peer] = MIN_BACKOFF
            self._try_dial(peer)

    def _try_dial(self, peer: str) -> None:
        assert self.machine is not None
        # The runtime dials an address: whoever answers there is linked, also a node
        # that came back there under a new id (a new incarnation).
        reached = self.farm.nodes[self.farm.index_of(peer)].node_id
        if reached == self.node_id:
            return  # our own old id
        if self.machine.linked(reached) or self.farm.network.linked(self.node_id, reached):
            return  # the link's end (link_down) dials again
        if self.farm.network.connect(self.node_id, reached):
            self._dialing[peer] = MIN_BACKOFF
            return
        backoff = self._dialing[peer]
        self._dialing[peer] = min(backoff * 2, MAX_BACKOFF)
        self.call_later(backoff * self.farm.rng.uniform(0.75, 1.25), self._try_dial, peer)

    def link_up(self, peer: str, life: int) -> None:
        """The network finished a handshake with ``peer``."""
        name, address = self.farm.name_of(peer), self.farm.address_of(peer)
        self._fire(life, self._handle, (ev.LinkUp(peer, "node", name, address),))

    def link_reset(self, peer: str, life: int) -> None:
        """The network reset a link this node still counted on."""
        self._fire(life, self._link_was_reset, (peer,))

    def _link_was_reset(self, peer: str) -> None:
        assert self.machine is not None
        if self.machine.linked(peer) and not self.farm.network.linked(self.node_id, peer):
            self.link_down(peer)

    def link_down(self, peer: str) -> None:
        """The OS reported the link closed (the peer's process died)."""
        assert self.machine is not None
        self._handle(ev.LinkDown(peer))
        if peer in self._dialing:
            self.call_later(MIN_BACKOFF, self._try_dial, peer)

    # -- what a user does -------------------------------------------------------------

    def request(self, event: object) -> str:
        """A user's request (submit, cancel, job control); returns why it was refused."""
        from peerfarm.core.refused import Refused

        try:
            self._handle(event)
        except Refused as exc:
            return str(exc)
        return ""

    # -- effects ----------------------------------------------------------------------

    def _carry_out(self, effect: object) -> None:
        if isinstance(effect, fx.Broadcast):
            for wire in effect.actions:
                self.farm.record(self, Action(**wire))
            if self.fool:
                self._equivocate(list(effect.actions))
            else:
                self._send_all(message("ACTIONS", actions=list(effect.actions)))
        elif isinstance(effect, fx.Persist):
            self.persisted.extend(effect.actions)
        elif isinstance(effect, fx.Compacted):
            self._compacted()
        elif isinstance(effect, fx.SendSnapshot):
            if self.snapshot is not None:
                self._send(effect.peer, message("SNAPSHOT", data=self.snapshot))
        elif isinstance(effect, fx.SendActions):
            self._send(effect.peer, message("ACTIONS", actions=list(effect.actions)))
        elif isinstance(effect, fx.Send):
            self._send(effect.peer, effect.message)
        elif isinstance(effect, fx.Dial):
            if effect.peer:  # no bootstrap servers in the simulation
                self._dial(effect.peer)
        elif isinstance(effect, fx.SaveKnownPeers):
            self.kwl = dict(effect.kwl)
        elif isinstance(effect, fx.StartRender):
            self._start_render(effect)
        elif isinstance(effect, fx.StopRender):
            self._stop_render(effect)
        elif isinstance(effect, fx.ScanOutputs):
            self._scan(effect)
        elif isinstance(effect, fx.FetchFrame):
            self._fetch(effect)
        elif isinstance(effect, fx.Stitch):
            self.outputs.setdefault(effect.job.id, set()).add(effect.frame)
            self.call_later(0.0, self._handle, ev.Stitched(effect.job.id, effect.frame))
        elif isinstance(effect, fx.FinishOutputs):
            job = effect.job
            self.farm.trace(self, f"collected all {job.frames_total} frames of {job.id}")
            self.call_later(0.0, self._handle, ev.OutputsFinished(job.id, gif=True))
        elif isinstance(effect, fx.Note):
            if effect.level >= logging.CRITICAL:
                self.farm.violation(f"{self.name}: {effect.text}")
            self.farm.trace(self, effect.text)
        elif isinstance(effect, fx.Left):
            self.farm.trace(self, "left the farm")

    def _compacted(self) -> None:
        """Write the log's base as the snapshot file, then the log file as the tail (as
        runtime/store.py does), or die in between (CRASH_COMPACTING)."""
        log = self.log
        self.snapshot = snapshot.encode(snapshot.snapshot_of(log))
        if self.crash_compacting is not None:
            duration, self.crash_compacting = self.crash_compacting, None
            self.farm.loop.call_later(0.0, self.farm.crash_compacting, self, duration)
            return  # (the effects after this one still happen: the process dies after)
        self.persisted = [a.to_wire() for a in log.actions()]
        self.farm.trace(self, f"compacted: snapshot of {log.base_count} actions, {len(log)} after")

    def holds(self, origin: str, seq: int, sig: bytes) -> bool:
        """Our log holds this version of the origin's action (EQUIVOCATE)."""
        own = self.log.actions_of(origin)
        index = seq - 1 - self.log.base_of(origin)
        return 0 <= index < len(own) and own[index].sig == sig

    def _equivocate(self, actions: list[dict[str, Any]]) -> None:
        """The EQUIVOCATE fault: the fooled peers get another version of the batch's last
        action (one Lamport tick later, so it sorts elsewhere), signed all the same."""
        last = Action(**actions[-1])
        other = last._replace(lamport=last.lamport + 1, sig=b"")
        other = other._replace(sig=identity_of(self.node_id).sign(other.hash))
        lie = [*actions[:-1], other.to_wire()]
        fooled, self.fool = self.fool, frozenset()
        self.farm.lies.add((other.origin, other.seq, other.sig))
        self.farm.trace(
            self, f"equivocates: #{last.seq} goes to {len(fooled)} peer(s) as another version"
        )
        for peer in self.farm.peers_of(self):
            if self.farm.network.linked(self.node_id, peer):
                self._send(peer, message("ACTIONS", actions=lie if peer in fooled else actions))

    def _send(self, peer: str, msg: Message) -> None:
        self.farm.network.send(self.node_id, peer, msg)

    def _send_all(self, msg: Message) -> None:
        for peer in self.farm.peers_of(self):
            if self.farm.network.linked(self.node_id, peer):
                self._send(peer, msg)

    def _start_render(self, effect: fx.StartRender) -> None:
        rng = self.farm.rng
        schedule = self.farm.schedule
        fails = rng.random() < self.fail_prob  # drawn when it starts: it will exit non-zero
        plan = schedule.job(effect.job.id)
        per_unit = schedule.frame_time * self.speed
        # One process per chunk: the start-up (loading the scene) once, then each frame
        # at its own cost; the whole render is a little faster or slower than modelled.
        noise = rng.uniform(*schedule.render_noise)
        self._tokens += 1
        key = (effect.job.id, effect.chunk)
        self._renders[key] = self._tokens
        what = f"{effect.job.id}/{effect.chunk} claim #{effect.claim_seq}"
        self.renders_started += 1
        if 0 <= self.hang_after < self.renders_started:
            self.farm.trace(self, f"render {what} (its renderer hangs)")
            return  # never reports: only StopRender ends it
        self.farm.trace(self, f"render {what}")
        at = schedule.startup * noise
        tile = -1 if effect.tile is None else effect.tile
        for frame in effect.frames:
            at += (plan.cost(frame) if plan is not None else 1.0) * per_unit * noise
            if frame != effect.frames[-1]:
                self.call_later(at, self._render_progress, key, self._tokens, frame, tile)
        self.call_later(at, self._render_done, effect, self._tokens, fails)

    def _render_progress(self, key: tuple[str, int], token: int, frame: int, tile: int) -> None:
        if self._renders.get(key) == token:
            # A renderer tells a frame once it is at its place, fsynced: it is on disk
            # (a DONE may name it before the run ends, and a render stopped later leaves it
            # there: machine/worker.py).
            self.frames.add((key[0], frame, tile))
            self._handle(ev.RenderProgress(key[0], key[1]))

    def _render_done(self, effect: fx.StartRender, token: int, fails: bool) -> None:
        key = (effect.job.id, effect.chunk)
        if self._renders.get(key) != token:
            return  # stopped meanwhile
        del self._renders[key]
        if not fails:
            self._handle(ev.RenderProgress(key[0], key[1]))  # the last frame
        if fails:
            self._handle(ev.RenderEnded(key[0], key[1], False, "simulated renderer failure"))
            return
        # Frames are on disk (fsynced) before the renderer reports success.
        tile = -1 if effect.tile is None else effect.tile
        self.frames.update((key[0], f, tile) for f in effect.frames)
        self._handle(ev.RenderEnded(key[0], key[1], True))

    def _stop_render(self, effect: fx.StopRender) -> None:
        key = (effect.job_id, effect.chunk)
        if self._renders.pop(key, None) is None:
            return
        self.farm.trace(self, f"stop {effect.job_id}/{effect.chunk}: {effect.reason}")
        self.call_later(STOP_DELAY, self._handle, ev.RenderEnded(key[0], key[1], False, "stopped"))

    # -- collecting outputs and serving frames -----------------------------------------

    def _scan(self, effect: fx.ScanOutputs) -> None:
        job = effect.job
        collected = frozenset(self.outputs.setdefault(job.id, set()))
        tiles: dict[int, set[int]] = {}
        if job.tiles > 1:
            for job_id, frame, tile in self.frames:
                if job_id == job.id and tile >= 0 and frame not in collected:
                    tiles.setdefault(frame, set()).add(tile)
        found = {f: frozenset(t) for f, t in tiles.items()}
        self.call_later(0.0, self._handle, ev.OutputsScanned(job.id, collected, found))

    def _fetch(self, effect: fx.FetchFrame) -> None:
        job, frame, tile = effect.job, effect.frame, effect.tile
        key = (job.id, frame, -1 if tile is None else tile)
        if effect.holder == self.node_id:  # rendered here: it is on our disk, or lost
            outcome = ev.STORED if key in self.frames else ev.MISSING
            if outcome == ev.STORED and tile is None:
                self.outputs.setdefault(job.id, set()).add(frame)
            event = ev.FrameFetched(job.id, frame, tile, effect.holder, outcome)
            self.call_later(0.0, self._handle, event)
            return
        self._tokens += 1
        self._fetches[key] = (effect.holder, self._tokens)
        request = message("GET_FRAME", job_id=job.id, frame=frame)
        if tile is not None:
            request["tile"] = tile
        self._send(effect.holder, request)
        self.call_later(FRAME_FETCH_TIMEOUT, self._fetch_timed_out, key, self._tokens)

    def _fetch_timed_out(self, key: FetchKey, token: int) -> None:
        holder, started = self._fetches.get(key, ("", 0))
        if started == token:
            del self._fetches[key]
            tile = None if key[2] < 0 else key[2]
            self._handle(ev.FrameFetched(key[0], key[1], tile, holder, ev.UNREACHABLE))

    def _answer_get_frame(self, src: str, msg: dict[str, Any]) -> None:
        assert self.machine is not None
        tile = msg.get("tile")
        key = (msg["job_id"], msg["frame"], -1 if tile is None else tile)
        extra = {} if tile is None else {"tile": tile}
        if self.machine.serves_frames_of(msg["job_id"]) and key in self.frames:
            reply = message("FRAME", job_id=key[0], frame=key[1], data=b"", **extra)
        else:
            reason = "this node does not hold it"
            reply = message("FRAME_MISSING", job_id=key[0], frame=key[1], reason=reason, **extra)
        self._send(src, reply)

    def _frame_answered(self, src: str, msg: dict[str, Any]) -> None:
        tile = msg.get("tile")
        key = (msg["job_id"], msg["frame"], -1 if tile is None else tile)
        holder, _ = self._fetches.get(key, ("", 0))
        if holder != src:
            self._handle(ev.Heard(src))  # an answer to a request that timed out
            return
        del self._fetches[key]
        if msg["type"] == "FRAME":
            if tile is None:
                self.outputs.setdefault(key[0], set()).add(key[1])
            else:
                self.frames.add(key)  # the submitter keeps tiles with its own frames
            outcome = ev.STORED
        else:
            outcome = ev.MISSING
        self._handle(ev.FrameFetched(key[0], key[1], tile, src, outcome))

    # -- messages -----------------------------------------------------------------------

    def deliver(self, src: str, msg: Message, life: int) -> None:
        """The network hands over a message sent to our life ``life``."""
        self._fire(life, self._receive, (src, msg))

    def _receive(self, src: str, msg: dict[str, Any]) -> None:
        kind = msg["type"]
        if kind == "ACTIONS":
            lies = self.farm.lies
            told = [r for r in msg["actions"] if (r["origin"], r["seq"], r.get("sig")) in lies]
            self._handle(ev.ActionsReceived(src, msg["actions"]))
            for raw in told:  # a lie another node took (not one lost with its memory)
                if self.holds(raw["origin"], raw["seq"], raw["sig"]):
                    self.farm.liars.add(raw["origin"])
        elif kind == "VV":
            self._handle(ev.VersionVectorReceived(src, msg["vv"], msg.get("heads", {})))
            assert self.machine is not None
            if not self._join_answered and not self.machine.synced:
                # Stands in for a bootstrap server's JOIN_REPLY: the first peer to
                # answer tells us how far we must catch up before announcing.
                self._join_answered = True
                self._handle(ev.JoinAnswered(src, [], msg["vv"]))
        elif kind in ("PING", "ACK", "PING_REQ"):
            self._handle(ev.ProbeReceived(src, msg))
        elif kind == "GET_FRAME":
            self._handle(ev.Heard(src))
            self._answer_get_frame(src, msg)
        elif kind == "SNAPSHOT":
            self._handle(ev.SnapshotReceived(src, snapshot.decode(msg["data"])))
        elif kind in ("FRAME", "FRAME_MISSING"):
            self._frame_answered(src, msg)
        else:  # anything else: hearing it is the point
            self._handle(ev.Heard(src))
