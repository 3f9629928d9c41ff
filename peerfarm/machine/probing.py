"""Failure detection by probing, as SWIM and memberlist do it, with Lifeguard's
refinements: what a node does each protocol period to learn whether its peers still
run, at a cost per node that does not grow with the farm.

Each period a node probes one linked peer (a shuffled round over them, from a
random generator seeded with the node's id, so the machine stays deterministic):

1. PING to the peer over its link; an ACK (or anything else heard from the peer since
   the PING) within the probe timeout answers it;
2. no answer in time: PING_REQ to a few other peers, which PING the peer themselves and
   relay its ACK;
3. no answer by the end of the period: the peer is *suspect*. The suspicion travels as
   gossip piggybacked on probe messages; the suspected peer refutes it with a higher
   incarnation number (it was only slow). A suspicion that nobody refutes within the
   suspicion timeout makes the peer down (membership then emits PEER_DOWN).

The suspicion timeout starts long and shrinks as other peers independently suspect
the same peer (Lifeguard), so one slow observer alone does not take a peer down
quickly. A node that finds itself slow (it did not run for a while, or others
suspect it) counts itself less healthy and probes less eagerly until its probes are
answered again (Lifeguard's local health, ``awareness``): under CPU starvation the
slow node is often the one watching.

Idle cost: one PING and one ACK sent per period and node whatever the farm's size,
plus PING_REQs only when a probe goes unanswered. The incarnation numbers and
suspicions are this node's view of liveness; they never enter the replicated state.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from peerfarm.machine import effects as fx
from peerfarm.machine.shared import Shared
from peerfarm.machine.timing import (
    GOSSIP_PER_MESSAGE,
    GOSSIP_RETRANSMIT_MULT,
    INDIRECT_PROBES,
    MAX_AWARENESS,
    PROBE_INTERVAL,
    PROBE_TIMEOUT,
    SUSPICION_CONFIRMATIONS,
    SUSPICION_MAX_MULT,
)
from peerfarm.wire.messages import message


@dataclass
class _Probe:
    target: str
    seq: int
    sent_at: float
    timeout_at: float  # no answer by then: ask others (PING_REQ)
    ends_at: float  # no answer by then either: suspect
    indirect: bool = False


@dataclass
class _Suspicion:
    incarnation: int
    since: float
    confirmers: set[str] = field(default_factory=set)  # who suspected it independently


class Prober:
    def __init__(self, shared: Shared, linked: Callable[[], Iterable[str]]) -> None:
        self.shared = shared
        self._linked = linked  # the peers we hold a link to, sorted
        self.rng = random.Random(shared.node_id)  # deterministic: seeded with who we are
        self.incarnation = 0  # ours: raised to refute a suspicion of us
        self.awareness = 0  # Lifeguard's local health: 0 healthy .. MAX_AWARENESS
        self.incarnations: dict[str, int] = {}  # the highest we know of each peer
        self.suspicions: dict[str, _Suspicion] = {}
        self.next_probe = math.inf
        self._probe: _Probe | None = None
        self._round: list[str] = []  # peers still to probe in this round
        self._seq = 0
        self._relays: dict[int, tuple[str, int, float]] = {}  # our seq -> asker, its seq, until
        # Peers suspected by others that we PINGed ourselves: peer -> seq, sent at, until.
        self._checks: dict[str, tuple[int, float, float]] = {}
        self._gossip: dict[str, list[Any]] = {}  # node -> [update, sends left]
        self.view: Callable[[], bytes] = lambda: b"\0" * 8  # set by membership

    # -- timing ------------------------------------------------------------------------

    def interval(self) -> float:
        return PROBE_INTERVAL * (1 + self.awareness)

    def start(self) -> None:
        # A random phase: nodes started at once do not probe in step.
        self.next_probe = self.shared.now + self.rng.uniform(0.0, PROBE_INTERVAL)

    def next_deadline(self) -> float:
        deadline = self.next_probe
        for _, _, until in self._checks.values():
            deadline = min(deadline, until)
        probe = self._probe
        if probe is not None:
            deadline = min(deadline, probe.ends_at if probe.indirect else probe.timeout_at)
        return deadline

    def _members(self) -> int:
        return len(list(self._linked())) + 1

    def suspicion_timeout(self, suspicion: _Suspicion) -> float:
        """Lifeguard: from SUSPICION_MAX_MULT times the shortest down to the shortest
        as independent confirmations come in. The shortest is half the peer timeout
        (the other half goes on noticing the silence), longer in a bigger farm (gossip
        takes log(n) rounds to reach everyone, as memberlist scales it)."""
        members = self._members()
        low = self.shared.config.peer_timeout / 2 * max(1.0, math.log10(members))
        high = SUSPICION_MAX_MULT * low
        expected = min(SUSPICION_CONFIRMATIONS, members - 2)
        if expected < 1:
            return low
        confirmations = min(len(suspicion.confirmers) - 1, expected)
        if confirmations <= 0:
            return high
        shrink = math.log(confirmations + 1) / math.log(expected + 1)
        return max(low, high - (high - low) * shrink)

    def down_at(self, peer: str) -> float:
        """When a linked peer turns down in our eyes: never unless suspected."""
        suspicion = self.suspicions.get(peer)
        if suspicion is None:
            return math.inf
        return suspicion.since + self.suspicion_timeout(suspicion)

    # -- links -------------------------------------------------------------------------

    def link_changed(self, peer: str) -> None:
        """A link came up (the handshake is proof of life) or went down (the lost link's
        own rule takes over): no suspicion, no probe of that peer in flight."""
        self.suspicions.pop(peer, None)
        self._checks.pop(peer, None)
        if self._probe is not None and self._probe.target == peer:
            self._probe = None

    def forget(self, peer: str) -> None:
        """The peer announced itself (PEER_JOINED): it ran a moment ago, whatever we
        suspected before. (A suspicion outlives the farm declaring the peer down: it
        keeps the peer down in our own eyes until the peer shows life.)"""
        self.suspicions.pop(peer, None)

    def stalled(self) -> None:
        """We did not run for a while: the answer to our probe may wait unread. Judge
        nothing from it, count ourselves less healthy, and probe again now."""
        self._probe = None
        self._checks.clear()
        self._raise_awareness()
        self.next_probe = self.shared.now

    # -- each period -------------------------------------------------------------------

    def tick(self, heard: dict[str, float]) -> None:
        now = self.shared.now
        if self._relays:
            self._relays = {k: v for k, v in self._relays.items() if v[2] > now}
        for peer, (_, sent_at, until) in sorted(self._checks.items()):
            if heard.get(peer, -math.inf) >= sent_at:
                del self._checks[peer]  # it talked to us: no confirmation from us
            elif now >= until:
                del self._checks[peer]
                self._confirm(peer)
        probe = self._probe
        if probe is not None:
            if heard.get(probe.target, -math.inf) >= probe.sent_at:
                self._answered()  # the peer talked to us since the PING: it runs
            elif now >= probe.ends_at:
                # No awareness raised here: a peer that answers nobody is its own
                # failure, and a slower detector would only find it later. What says
                # that *we* are slow: our stalls and suspicions of us (Lifeguard counts
                # missing NACKs, which this protocol does not have).
                self._probe = None
                self._suspect(probe.target)
            elif now >= probe.timeout_at and not probe.indirect:
                probe.indirect = True
                self._ask_others(probe)
        if now >= self.next_probe:
            if self._probe is not None:  # a period shortened by our recovering health
                self._probe = None
            self.next_probe = now + self.interval()
            target = self._next_target()
            if target is not None:
                seq = self._next_seq()
                self._send(target, "PING", seq=seq)
                self._probe = _Probe(
                    target, seq, now, now + PROBE_TIMEOUT * (1 + self.awareness), self.next_probe
                )

    def _next_target(self) -> str | None:
        linked = set(self._linked())
        while self._round and self._round[-1] not in linked:
            self._round.pop()
        if not self._round:
            self._round = sorted(linked)
            self.rng.shuffle(self._round)
        return self._round.pop() if self._round else None

    def _ask_others(self, probe: _Probe) -> None:
        others = [p for p in self._linked() if p != probe.target]
        for helper in self.rng.sample(others, min(INDIRECT_PROBES, len(others))):
            self._send(helper, "PING_REQ", seq=probe.seq, target=probe.target)

    def _answered(self) -> None:
        # It answered us: whatever was suspected of it, it runs for us (a peer declared
        # down by a node whose word no longer counts must not stay down in our eyes).
        if self._probe is not None:
            self.suspicions.pop(self._probe.target, None)
        self._probe = None
        self.awareness = max(0, self.awareness - 1)

    def _raise_awareness(self) -> None:
        self.awareness = min(MAX_AWARENESS, self.awareness + 1)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    # -- messages ----------------------------------------------------------------------

    def received(self, peer: str, msg: dict[str, Any]) -> None:
        """A PING, ACK or PING_REQ from a linked peer."""
        self._take_gossip(peer, msg.get("gossip", ()))
        kind = msg["type"]
        if kind == "PING":
            self._send(peer, "ACK", seq=msg["seq"])
        elif kind == "ACK":
            seq = msg["seq"]
            if self._checks.get(peer, (0,))[0] == seq:
                del self._checks[peer]
            if self._probe is not None and seq == self._probe.seq:
                self._answered()  # directly, or relayed by a peer we asked
            elif seq in self._relays:
                asker, their_seq, _ = self._relays.pop(seq)
                if asker in set(self._linked()):
                    self._send(asker, "ACK", seq=their_seq)
        elif kind == "PING_REQ":
            target = msg["target"]
            if target != self.shared.node_id and target in set(self._linked()):
                seq = self._next_seq()
                self._relays[seq] = (peer, msg["seq"], self.shared.now + self.interval())
                self._send(target, "PING", seq=seq)

    def _send(
        self, peer: str, kind: str, *, also: dict[str, Any] | None = None, **fields: Any
    ) -> None:
        gossip = self._piggyback()
        if also is not None and also not in gossip:
            gossip = [also, *gossip[: GOSSIP_PER_MESSAGE - 1]]
        if gossip:
            fields["gossip"] = gossip
        self.shared.out(fx.Send(peer, message(kind, view=self.view(), **fields)))

    # -- suspicion and gossip ----------------------------------------------------------

    def _suspect(self, peer: str) -> None:
        """Our probe of ``peer`` went unanswered, directly and through others."""
        me = self.shared.node_id
        incarnation = self.incarnations.get(peer, 0)
        suspicion = self.suspicions.get(peer)
        if suspicion is None or suspicion.incarnation < incarnation:
            self.suspicions[peer] = _Suspicion(incarnation, self.shared.now, {me})
            self.shared.note(
                logging.INFO,
                f"peer {peer[:8]} did not answer a probe, directly or through others: "
                "suspect (it is down if it does not refute it in time)",
            )
        else:
            suspicion.confirmers.add(me)
        self._queue({"node": peer, "inc": incarnation, "suspect": True, "by": me})
        # Tell the peer at once: if it only was slow, its refutation comes back with it.
        self._send(peer, "PING", seq=self._next_seq())

    def _confirm(self, peer: str) -> None:
        """A peer suspected by others answered our own PING neither: we suspect it too,
        independently (a Lifeguard confirmation), and say so."""
        suspicion = self.suspicions.get(peer)
        me = self.shared.node_id
        if suspicion is None or me in suspicion.confirmers:
            return
        suspicion.confirmers.add(me)
        self._queue({"node": peer, "inc": suspicion.incarnation, "suspect": True, "by": me})

    def _take_gossip(self, sender: str, updates: Iterable[dict[str, Any]]) -> None:
        me = self.shared.node_id
        linked = set(self._linked())
        for update in updates:
            node, incarnation = update["node"], update["inc"]
            if node == me:
                if update["suspect"] and incarnation >= self.incarnation:
                    self._refute(incarnation, sender, update.get("by", sender))
                elif update["suspect"]:  # an old suspicion, refuted already: say it again
                    self._queue({"node": me, "inc": self.incarnation, "suspect": False})
                continue
            known = self.incarnations.get(node, 0)
            if update["suspect"]:
                if incarnation < known or node not in linked:
                    continue
                self.incarnations[node] = incarnation
                suspicion = self.suspicions.get(node)
                by = update.get("by", sender)
                if suspicion is not None and suspicion.incarnation == incarnation:
                    if by in suspicion.confirmers:
                        continue
                    suspicion.confirmers.add(by)
                    self._queue(update)
                else:
                    self.suspicions[node] = _Suspicion(incarnation, self.shared.now, {by})
                    self._queue(update)
                    # Probe it ourselves at once, the suspicion riding along: a peer that
                    # only was slow for someone else refutes it now, before any timeout;
                    # one that answers us nothing either gets our confirmation.
                    seq = self._next_seq()
                    self._checks[node] = (seq, self.shared.now, self.shared.now + self.interval())
                    self._send(node, "PING", seq=seq)
            elif incarnation > known:
                self.incarnations[node] = incarnation
                suspicion = self.suspicions.get(node)
                if suspicion is not None and suspicion.incarnation < incarnation:
                    del self.suspicions[node]
                    self.shared.note(logging.INFO, f"peer {node[:8]} refuted its suspicion")
                self._queue(update)

    def _refute(self, incarnation: int, sender: str, suspecter: str) -> None:
        """Someone suspects us: we run, so say so with a higher incarnation, to every
        linked peer at once. (Not piggybacked only: a refutation must reach everyone
        before their suspicion runs out, and it is rare.)"""
        self.incarnation = incarnation + 1
        self._raise_awareness()  # others hear us badly: we may be the slow one
        self.shared.note(
            logging.INFO,
            f"peer {suspecter[:8]} suspects this node (told by {sender[:8]}): refuting, "
            f"incarnation {self.incarnation}",
        )
        alive = {"node": self.shared.node_id, "inc": self.incarnation, "suspect": False}
        self._queue(alive)
        for peer in self._linked():
            self._send(peer, "PING", seq=self._next_seq(), also=alive)

    def _queue(self, update: dict[str, Any]) -> None:
        """Gossip an update on the next probe messages, a few times each (memberlist:
        RetransmitMult times log10 of the farm's size)."""
        sends = GOSSIP_RETRANSMIT_MULT * math.ceil(math.log10(self._members() + 1))
        self._gossip.pop(update["node"], None)  # a newer update replaces an older one
        self._gossip[update["node"]] = [update, sends]

    def _piggyback(self) -> list[dict[str, Any]]:
        out = []
        for node in list(self._gossip)[-GOSSIP_PER_MESSAGE:]:  # the newest first to go
            entry = self._gossip[node]
            out.append(entry[0])
            entry[1] -= 1
            if entry[1] <= 0:
                del self._gossip[node]
        return out
