"""Who is in the farm, seen from this node: links, the known-worker list, failure
detection, catching up at start, and announcing ourselves.

Liveness is this node's own view: a linked peer is probed (SWIM, in probing.py)
and turns down when a suspicion of it is not refuted in time; a peer whose link
closed, after a grace. It never enters the replicated state directly. A peer that
is up in the state but down to us becomes a PEER_DOWN action (reducers never read
clocks), once per incarnation; several nodes declaring the same peer down is
harmless.
"""

from __future__ import annotations

import hashlib
import logging
import math
from typing import Any

from peerfarm.core import actions as act
from peerfarm.core.features import PEER_VERSIONS
from peerfarm.core.state import DOWN, UP
from peerfarm.machine import effects as fx
from peerfarm.machine.probing import Prober
from peerfarm.machine.shared import Shared
from peerfarm.machine.timing import (
    ANTI_ENTROPY_INTERVAL,
    CHAIN_SHOWN_EVERY,
    LAMPORT_JUMP,
    NEVER_LINKED_TIMEOUT,
    RECONNECT_GRACE,
    SYNC_TIMEOUT,
)
from peerfarm.wire.messages import message

UP_HEALTH, SUSPECT, DOWN_HEALTH = "up", "suspect", "down"


class Membership:
    def __init__(self, shared: Shared, kwl: dict[str, dict[str, str]]) -> None:
        self.shared = shared
        self.kwl = {k: v for k, v in kwl.items() if k != shared.node_id}
        self.heard: dict[str, float] = {}  # linked peers -> when we last heard from them
        self.roles: dict[str, str] = {}  # linked peers -> "node" or "bootstrap"
        self.lost_at: dict[str, float] = {}  # peers whose link closed -> when
        self.declared_down: dict[str, int] = {}  # peer -> incarnation we declared down
        self.announced_at: dict[str, float] = {}  # peer -> when its last PEER_JOINED came
        self.started_at: float | None = None
        self.synced = False  # caught up with the farm (or gave up waiting)
        self.working = False  # announced; the worker and the collector run
        self._join_vv: dict[str, int] | None = None
        self._next_vv = math.inf
        self.prober = Prober(shared, lambda: sorted(self.heard))
        self.prober.view = self._view_hash
        self._chain_shown: dict[tuple[str, str], float] = {}  # (peer, origin) -> when
        # Until then this node does not trust its own view of who is silent: it was not
        # running (frozen, or starved of CPU) and its peers' messages wait unread.
        self.stalled_until = -math.inf
        # Anti-entropy that costs nothing when views agree: what we last told each peer
        # (and when), and what it last told us. Probe messages carry a hash of the view,
        # so a difference shows within a round of probes without a periodic full swap.
        self._vv_sent: dict[str, tuple] = {}
        self._vv_heard: dict[str, tuple] = {}
        self._vv_sent_at: dict[str, float] = {}
        self._view_cache: tuple[tuple[int, int], bytes] | None = None

    # -- queries ---------------------------------------------------------------------

    def linked(self, peer: str) -> bool:
        return peer in self.heard

    def address_of(self, peer: str) -> str | None:
        entry = self.kwl.get(peer)
        return entry["address"] if entry else None

    def health(self, peer: str, now: float | None = None) -> str:
        """This node's view of a peer: up, suspect or down (never replicated)."""
        if now is None:
            now = self.shared.now
        if now >= self._down_at(peer):
            return DOWN_HEALTH
        if peer in self.heard and peer not in self.prober.suspicions:
            return UP_HEALTH
        return SUSPECT

    def _down_at(self, peer: str) -> float:
        """When a peer turns down in our eyes: linked, once a suspicion of it ran out
        unrefuted (probing.py); its link lost and not back within the grace; never linked
        since we started (after a power cut, or a boot storm still linking) for the longer
        NEVER_LINKED_TIMEOUT, counted from when we saw it announce itself if that came
        later (at a boot storm a node that joined a moment ago is alive: we just have not
        linked it yet). Never before a stall of ours is heard out."""
        timeout = self.shared.config.peer_timeout
        if peer in self.heard:
            down_at = self.prober.down_at(peer)
        elif peer in self.lost_at:
            down_at = self.lost_at[peer] + RECONNECT_GRACE
        else:
            started = self.started_at if self.started_at is not None else self.shared.now
            since = max(started, self.announced_at.get(peer, started))
            down_at = since + max(timeout, NEVER_LINKED_TIMEOUT)
        return max(down_at, self.stalled_until)

    def next_deadline(self) -> float:
        """The earliest time a Tick has something to do here."""
        deadline = min(self.prober.next_deadline(), self._next_vv)
        if not self.synced and self.started_at is not None:
            deadline = min(deadline, self.started_at + SYNC_TIMEOUT)
        if self.working and not self.shared.stopping:
            state = self.shared.state
            me = state.peers.get(self.shared.node_id)
            if me is not None and me.state == DOWN:
                return self.shared.now
            suspicions = self.prober.suspicions
            for peer_id, peer in state.peers.items():
                if peer_id == self.shared.node_id or peer.state != UP:
                    continue
                if peer_id in self.heard and peer_id not in suspicions:
                    continue  # linked and unsuspected: never down (asked after every event)
                if self.declared_down.get(peer_id) == peer.incarnation:
                    continue
                deadline = min(deadline, self._down_at(peer_id))
        return deadline

    # -- start, links ----------------------------------------------------------------

    def start(self) -> None:
        shared = self.shared
        self.started_at = shared.now
        self.prober.start()
        self._next_vv = shared.now + ANTI_ENTROPY_INTERVAL
        for peer_id in sorted(self.kwl):
            shared.out(fx.Dial(peer_id, self.kwl[peer_id]["address"]))
        for address in shared.config.bootstraps:
            shared.out(fx.Dial("", address))

    def link_up(self, peer: str, role: str, name: str, address: str) -> None:
        shared = self.shared
        self.heard[peer] = shared.now
        self.roles[peer] = role
        self.lost_at.pop(peer, None)
        self.prober.link_changed(peer)
        if address:
            self._remember(peer, address, name)
        self._send_vv(peer, self._vv_message())
        if role == "bootstrap":
            shared.out(fx.Send(peer, message("JOIN")))
        shared.changes += 1

    def link_down(self, peer: str) -> None:
        for sent in (self._vv_sent, self._vv_heard, self._vv_sent_at):
            sent.pop(peer, None)
        self.prober.link_changed(peer)
        if self.heard.pop(peer, None) is not None:
            self.roles.pop(peer, None)
            self.lost_at[peer] = self.shared.now
            self.shared.changes += 1

    def heard_from(self, peer: str, at: float | None = None) -> None:
        last = self.heard.get(peer)
        if last is not None:
            self.heard[peer] = max(last, self.shared.now if at is None else at)

    def _remember(self, peer: str, address: str, name: str) -> None:
        """A greeting peer goes on our known-worker list (as in the research design)."""
        entry = {"address": address, "name": name}
        changed = False
        # Another node now listening at this address makes the old entry stale.
        for other, known in list(self.kwl.items()):
            if other != peer and known.get("address") == address:
                del self.kwl[other]
                changed = True
        if self.kwl.get(peer) != entry:
            self.kwl[peer] = entry
            changed = True
        if changed:
            self.shared.out(fx.SaveKnownPeers(dict(self.kwl)))
        self.shared.out(fx.Dial(peer, address))

    def learn(self, entries: list[dict[str, str]]) -> None:
        """Add known-worker-list entries (from a bootstrap server, LAN discovery or the
        replicated state) and dial them.

        An entry we already have but with another address is updated: the peer
        restarted elsewhere (the bootstrap server heard its greeting more recently).
        """
        changed = False
        for entry in entries:
            peer_id = entry["node_id"]
            known = {"address": entry["address"], "name": entry["name"]}
            if peer_id == self.shared.node_id or self.kwl.get(peer_id) == known:
                continue
            if self.linked(peer_id):
                continue  # a live link knows better than a list
            self.kwl[peer_id] = known
            changed = True
            self.shared.out(fx.Dial(peer_id, known["address"]))
        if changed:
            self.shared.out(fx.SaveKnownPeers(dict(self.kwl)))

    # -- replication -----------------------------------------------------------------

    def _send_vv(self, peer: str, vv: dict[str, Any]) -> None:
        self._vv_sent[peer] = _view(vv["vv"], vv.get("heads", {}))
        self._vv_sent_at[peer] = self.shared.now
        self.shared.out(fx.Send(peer, vv))

    def _in_sync_with(self, peer: str, ours: tuple) -> bool:
        """We told the peer our view and it told us the same one: nothing to reconcile.
        (A peer lacking something tells us a different view, and gets a version vector
        back, whose answer brings what it lacks; a view that drifted apart unnoticed
        shows in the hash every probe message carries, see probe_received.)"""
        return self._vv_sent.get(peer) == ours and self._vv_heard.get(peer) == ours

    def _view_hash(self) -> bytes:
        """8 bytes that differ when two nodes hold different actions: the hash of the
        version vector and its heads, carried by every probe message. (Cached on how many
        actions the log ever took and how often its history changed: compaction keeps
        the version vector, so the key never comes back.)"""
        log = self.shared.log
        vv = log.version_vector()
        key = (sum(vv.values()), log.late_inserts)
        if self._view_cache is None or self._view_cache[0] != key:
            heads = log.heads() if log.authenticate else {}
            view = repr(_view(vv, heads)).encode()
            self._view_cache = (key, hashlib.sha256(view).digest()[:8])
        return self._view_cache[1]

    def probe_received(self, peer: str, msg: dict[str, Any]) -> None:
        """A PING, ACK or PING_REQ: the failure detector's, and a free anti-entropy check.
        A peer whose view differs from ours gets our version vector (at most once per
        ANTI_ENTROPY_INTERVAL), and its answer brings what we lack; the peer, seeing
        our hash differ too, does the same for what it lacks. (Not at every probe while
        our view changes: while actions flow, views differ at every probe because
        actions are on their way, and each version vector cost a state digest here and
        its answer resent actions in flight; docs/performance.md "Dispatch".)"""
        if peer not in self.heard:
            return
        self.prober.received(peer, msg)
        if msg["view"] == self._view_hash():
            return
        if self.shared.now >= self._vv_sent_at.get(peer, -math.inf) + ANTI_ENTROPY_INTERVAL:
            self._send_vv(peer, self._vv_message())

    def _our_view(self) -> tuple:
        """Our version vector with its heads (_view), without the state's digest: the
        tick finds most peers in sync, and the digest of a state that changes with
        every action would be computed for nothing."""
        log = self.shared.log
        return _view(log.version_vector(), log.heads() if log.authenticate else {})

    def _vv_message(self) -> dict[str, Any]:
        log = self.shared.log
        if not log.authenticate:
            return message("VV", vv=log.version_vector(), digest=log.digest())
        return message("VV", vv=log.version_vector(), digest=log.digest(), heads=log.heads())

    def actions_received(self, peer: str, raw: list[Any]) -> None:
        name = self.kwl.get(peer, {}).get("name", "")
        source = f"{name} ({peer[:8]})" if name else peer[:8]
        log = self.shared.log
        applied = self.shared.accept(raw, source)
        if applied:
            self._check_synced()
        for action in applied:
            if action.type == act.PEER_JOINED:  # it ran a moment ago
                self.announced_at[action.origin] = self.shared.now
                self.prober.forget(action.origin)
        while log.diverged:
            self._show_chain(peer, log.diverged.pop())

    def vv_received(self, peer: str, vv: dict[str, int], heads: dict[str, bytes]) -> None:
        self._vv_heard[peer] = _view(vv, heads)
        log = self.shared.log
        if log.needs_base(vv):
            # It lacks actions we folded into the snapshot: that first, the tail after.
            self.shared.out(fx.SendSnapshot(peer))
        missing = log.missing_for(vv)
        if missing:
            self.shared.out(fx.SendActions(peer, tuple(a.to_wire() for a in missing)))
        if heads and log.authenticate:
            ours = log.heads()
            for origin, head in heads.items():
                if head != ours.get(origin, head) and vv.get(origin) == log.next_seq(origin) - 1:
                    self._show_chain(peer, origin)

    def _show_chain(self, peer: str, origin: str) -> None:
        """The peer holds another version of some action of ``origin``: send it our
        version of the origin's recent actions, so that it holds both and can prove the
        fork (core/feeds.py). At most once per peer and origin per CHAIN_SHOWN_EVERY."""
        now = self.shared.now
        if now < self._chain_shown.get((peer, origin), -math.inf) + CHAIN_SHOWN_EVERY:
            return
        if len(self._chain_shown) > 10_000:
            self._chain_shown.clear()
        self._chain_shown[(peer, origin)] = now
        tail = self.shared.log.chain_tail(origin)
        if tail:
            self.shared.out(fx.SendActions(peer, tuple(a.to_wire() for a in tail)))

    def join_asked(self, peer: str) -> None:
        """A bootstrap server answers JOIN with the KWL and its version vector.

        The replicated state itself travels as the log the joiner lacks: it sent
        its version vector on connect, and the normal anti-entropy answer streams
        every missing action in batches. (A folded snapshot could not take actions
        that arrive late and sort before it; the log can.)
        """
        kwl = [
            {"node_id": peer_id, "address": entry["address"], "name": entry.get("name", "")}
            for peer_id, entry in sorted(self.kwl.items())
            if peer_id != peer
        ]
        vv = self.shared.log.version_vector()
        self.shared.out(fx.Send(peer, message("JOIN_REPLY", kwl=kwl, vv=vv)))

    def join_answered(self, kwl: list[dict[str, str]], vv: dict[str, int]) -> None:
        self.learn(kwl)
        self._join_vv = dict(vv)
        self._check_synced()

    def check_synced(self) -> None:
        self._check_synced()

    def _check_synced(self) -> None:
        if self._join_vv is not None and not self.synced:
            vv = self.shared.log.version_vector()
            if all(vv.get(o, 0) >= n for o, n in self._join_vv.items()):
                self._become_synced()

    def _become_synced(self, timed_out: bool = False) -> None:
        self.synced = True
        if timed_out and self.kwl:
            # No one told us how far the farm is: our clock is only as far as our log
            # (lost to damage, or days behind). What we emit now must not sort before
            # history the others may have folded into a snapshot (machine/compaction.py),
            # so the clock jumps ahead: Lamport order allows any jump forward.
            log = self.shared.log
            log.lamport = min(log.lamport + LAMPORT_JUMP, act.MAX_LAMPORT // 2)
        self.shared.touch()

    # -- time ------------------------------------------------------------------------

    def tick(self) -> None:
        shared = self.shared
        now = shared.now
        if now >= self._next_vv:
            self._next_vv = now + ANTI_ENTROPY_INTERVAL
            ours = self._our_view()
            behind = [peer for peer in sorted(self.heard) if not self._in_sync_with(peer, ours)]
            vv = self._vv_message() if behind else {}
            for peer in behind:
                self._send_vv(peer, vv)
        prober = self.prober
        if now - prober.next_deadline() > prober.interval():
            # We woke up more than a probe period late: our probe's answer may wait
            # unread, and suspicions ran on while we could not hear refutations. Read
            # what waits before declaring anyone down (Lifeguard's local health).
            late = now - prober.next_deadline()
            self.stalled_until = now + self.shared.config.peer_timeout
            prober.stalled()
            shared.note(
                logging.INFO,
                f"this node did not run for {late:.1f} s "
                "(frozen or starved of CPU): judging peers again after a timeout",
            )
        prober.tick(self.heard)
        if not self.synced and self.started_at is not None:
            if now >= self.started_at + SYNC_TIMEOUT:
                self._become_synced(timed_out=True)

    def detect(self) -> None:
        """Turn what the clock says about peers into actions.

        A peer that is up in the replicated state but down to us is declared down
        (PEER_DOWN), once per incarnation; its claims go back to the pool. If we
        are the one declared down (we were frozen or cut off), we rejoin with our
        own identity.
        """
        shared = self.shared
        state = shared.state
        for peer_id in sorted(state.peers):  # sorted: a Map's order depends on string hashing
            peer = state.peers[peer_id]
            if peer_id == shared.node_id:
                continue
            if peer.state != UP:
                if peer.state != DOWN:  # left, or proven faulty: never up again by rejoining
                    self.prober.forget(peer_id)
                continue
            if peer_id not in self.kwl:
                # Known only from the replicated state: dial the address it announced.
                self.learn([{"node_id": peer_id, "address": peer.address, "name": peer.name}])
            if self.declared_down.get(peer_id) == peer.incarnation:
                continue
            if self.health(peer_id) == DOWN_HEALTH:
                shared.note(
                    logging.WARNING,
                    f"peer {peer.name} ({peer_id[:8]}) is down; its chunks go back to the pool",
                )
                self.declared_down[peer_id] = peer.incarnation
                shared.emit(act.PEER_DOWN, {"node_id": peer_id, "incarnation": peer.incarnation})
        me = state.peers.get(shared.node_id)
        if me is not None and me.state == DOWN:
            shared.note(logging.WARNING, "the farm declared this node down; rejoining")
            self.announce()

    def announce(self) -> None:
        """PEER_JOINED, when the state does not show us as we are (name, address, slots,
        renderers, tags, memory, cores) or shows us down or gone."""
        shared = self.shared
        config = shared.config
        me = shared.state.peers.get(shared.node_id)
        slots = config.slots if config.renders else 0
        renderers = tuple(sorted(config.renderers.items()))
        features = tuple(sorted(config.features))
        # What a feature adds is written only once the farm enabled it.
        version = config.version if shared.feature_on(PEER_VERSIONS) else ""
        tags = tuple(sorted(set(config.tags)))
        wanted = (config.name, config.address, slots, config.renders, UP, renderers)
        wanted += (features, version, tags, config.memory, config.cores)
        if me is None or (
            (me.name, me.address, me.slots, me.renders, me.state, me.renderers)
            + (me.features, me.version, me.tags, me.memory, me.cores)
            != wanted
        ):
            payload: dict[str, Any] = {
                "name": config.name,
                "address": config.address,
                "slots": slots,
                "renders": config.renders,
                "renderers": dict(renderers),
            }
            if features:
                payload["features"] = list(features)
            if version:
                payload["version"] = version
            if tags:
                payload["tags"] = list(tags)
            if config.memory:
                payload["memory"] = config.memory
            if config.cores:
                payload["cores"] = config.cores
            shared.emit(act.PEER_JOINED, payload)


def _view(vv: dict[str, int], heads: dict[str, bytes]) -> tuple:
    """A version vector with its heads, comparable: equal views hold the same actions."""
    return tuple(sorted(vv.items())), tuple(sorted(heads.items()))
