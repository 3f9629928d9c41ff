"""The node machine with plain values: events in, effects out, time as a number.

These are the rules of a node (claims, adoption, failure detection, stops,
collection) checked without sockets, processes or sleeps; the runtime and the
simulator drive this very object.
"""

from __future__ import annotations

import logging

import pytest
from factories import A, B, C, joined_payload, new_job_payload

from peerfarm.core import actions as act
from peerfarm.core.refused import Refused
from peerfarm.core.scheduler import PROBE_FRAMES
from peerfarm.machine import MachineConfig, NodeMachine
from peerfarm.machine import effects as fx
from peerfarm.machine import events as ev
from peerfarm.machine.timing import (
    ANTI_ENTROPY_INTERVAL,
    COLLECT_INTERVAL,
    FINISHED_TOLD_EVERY,
    NEVER_LINKED_TIMEOUT,
    PEER_TIMEOUT,
    PROBE_INTERVAL,
    RECONNECT_GRACE,
    SUSPICION_MAX_MULT,
)

ME = "0" * 16  # sorts before A and B: our claims win ties against theirs
LATE = "f" * 16  # sorts after us
D = "d" * 16


class Harness:
    """One machine, a clock, and what it asked for."""

    def __init__(self, slots: int = 1, **config) -> None:
        self.now = 0.0
        self.machine = NodeMachine(
            MachineConfig(
                node_id=ME,
                name="me",
                address="127.0.0.1:7100",
                slots=slots,
                renderers={"builtin": "0.1.0"},
                **config,
            )
        )
        self.effects: list = []
        self.seqs: dict[str, int] = {}
        self.lamport = 0

    def feed(self, event: object, at: float | None = None) -> list:
        if at is not None:
            self.now = at
        out = self.machine.handle(event, self.now)
        self.effects.extend(out)
        return out

    def tick(self, at: float) -> list:
        """Time passes to ``at`` as a driver lets it: a Tick at every deadline on the way
        (a machine woken late believes it was stalled; see test_a_stalled_node...)."""
        out = []
        while (deadline := self.machine.next_deadline()) < at:
            out += self.feed(ev.Tick(), max(deadline, self.now))
        return out + self.feed(ev.Tick(), at)

    def stall(self, at: float) -> list:
        """The process did not run until ``at`` (frozen, or starved of CPU)."""
        return self.feed(ev.Tick(), at)

    def peer_action(self, origin: str, type_: str, payload: dict, lamport: int = 0) -> dict:
        """An action of another node, as it would arrive on a link."""
        self.seqs[origin] = self.seqs.get(origin, 0) + 1
        self.lamport = max(self.lamport, self.machine.log.lamport) + 1
        return {
            "type": type_,
            "payload": payload,
            "origin": origin,
            "seq": self.seqs[origin],
            "lamport": lamport or self.lamport,
        }

    def receive(self, origin: str, *actions: dict) -> list:
        return self.feed(ev.ActionsReceived(origin, list(actions)))

    def start_working(self) -> None:
        """Start, and catch up with a (silent) farm: the sync timeout passes."""
        self.feed(ev.Started())
        self.tick(3.0)
        assert self.machine.working

    def emitted(self, type_: str) -> list[dict]:
        return [
            a
            for e in self.effects
            if isinstance(e, fx.Broadcast)
            for a in e.actions
            if a["type"] == type_
        ]


def of(effects: list, kind: type) -> list:
    return [e for e in effects if isinstance(e, kind)]


def test_an_idle_node_announces_itself_after_catching_up():
    h = Harness()
    out = h.feed(ev.Started())
    assert not h.machine.working and not h.emitted(act.PEER_JOINED)
    assert 0 <= h.machine.next_deadline() <= PROBE_INTERVAL  # the first probe
    h.tick(3.0)  # nobody answered: start anyway (SYNC_TIMEOUT)
    (joined,) = h.emitted(act.PEER_JOINED)
    assert joined["payload"]["renderers"] == {"builtin": "0.1.0"}
    # Persisted before broadcast, in one event.
    kinds = [type(e) for e in h.effects]
    assert kinds.index(fx.Persist) < kinds.index(fx.Broadcast)
    assert out == [] or all(not isinstance(e, fx.Broadcast) for e in out)


def test_the_loser_of_a_claim_race_stops_and_takes_other_work():
    h = Harness(slots=1)
    h.start_working()
    job = h.peer_action(A, act.NEW_JOB, new_job_payload("j", frames=(1, 8), chunk=2))
    out = h.receive(A, h.peer_action(A, act.PEER_JOINED, joined_payload("a")), job)
    (start,) = of(out, fx.StartRender)
    ours = next(a for a in h.emitted(act.CLAIM_CHUNK) if a["payload"]["chunk"] == start.chunk)
    # A rival whose claim sorts before ours (earlier Lamport time) took the same chunk.
    rival = h.peer_action(
        A, act.CLAIM_CHUNK, {"job_id": "j", "chunk": start.chunk}, lamport=ours["lamport"] - 1
    )
    out = h.receive(A, rival)
    (stop,) = of(out, fx.StopRender)
    assert (stop.chunk, stop.reason) == (start.chunk, f"claim lost to {A[:8]}")
    assert not of(out, fx.StartRender)  # the slot is busy until the process is gone
    out = h.feed(ev.RenderEnded("j", start.chunk, ok=False, error="stopped"))
    (other,) = of(out, fx.StartRender)
    assert other.chunk != start.chunk
    assert not h.emitted(act.CHUNK_FAILED) and not h.emitted(act.RELEASE_CHUNK)


def test_a_render_that_finishes_is_done_and_one_that_fails_is_reported():
    h = Harness(slots=2)
    h.start_working()
    out = h.receive(A, h.peer_action(A, act.NEW_JOB, new_job_payload("j", frames=(1, 4), chunk=2)))
    first, second = of(out, fx.StartRender)
    h.feed(ev.RenderProgress("j", first.chunk))
    assert h.machine.worker.status()["rendering"][0]["frames_finished"] == 1
    h.feed(ev.RenderEnded("j", first.chunk, ok=True))
    h.feed(ev.RenderEnded("j", second.chunk, ok=False, error="exit 3"))
    assert [a["payload"]["chunk"] for a in h.emitted(act.DONE)] == [first.chunk]
    (failed,) = h.emitted(act.CHUNK_FAILED)
    assert failed["payload"]["error"] == "exit 3"


def test_a_claim_found_in_the_log_after_a_restart_is_adopted_or_given_back():
    for slots, adopted in ((1, True), (0, False)):
        before = Harness(slots=1)
        before.start_working()
        before.receive(
            A, before.peer_action(A, act.NEW_JOB, new_job_payload("j", frames=(1, 2), chunk=2))
        )
        assert before.emitted(act.CLAIM_CHUNK)
        # Restart: same identity, the log from disk, no render running.
        h = Harness(slots=slots)
        h.machine.restore([a.to_wire() for a in before.machine.log.actions()])
        h.start_working()
        starts = of(h.effects, fx.StartRender)
        if adopted:
            assert [s.chunk for s in starts] == [0]
            assert starts[0].claim_seq == before.emitted(act.CLAIM_CHUNK)[0]["seq"]
        else:
            assert not starts
            (released,) = h.emitted(act.RELEASE_CHUNK)
            assert released["payload"]["chunk"] == 0


def link(h: Harness, *peers: tuple[str, str]) -> None:
    """Link peers (id, name) that joined the farm."""
    for i, (peer, name) in enumerate(peers):
        h.feed(ev.LinkUp(peer, "node", name, f"10.0.0.{i + 2}:7100"))
        h.receive(peer, h.peer_action(peer, act.PEER_JOINED, joined_payload(name)))


def sent(effects: list, kind: str, to: str | None = None) -> list[dict]:
    return [
        e.message
        for e in of(effects, fx.Send)
        if e.message["type"] == kind and (to is None or e.peer == to)
    ]


def answer(h: Harness, effects: list, *silent: str) -> list:
    """Peers answer what the machine sent them as a live peer would: a PING with an
    ACK (with the same view, as if in sync); ``silent`` peers answer nothing."""
    out = []
    for e in of(effects, fx.Send):
        if e.peer in silent or e.message["type"] != "PING":
            continue
        view = e.message["view"]
        ack = {"type": "ACK", "seq": e.message["seq"], "view": view}
        out += h.feed(ev.ProbeReceived(e.peer, ack))
    return out


def run(h: Harness, until: float, *silent: str) -> list:
    """Time passes to ``until`` with live peers answering every probe at once."""
    out = []
    while (deadline := h.machine.next_deadline()) < until:
        step = h.feed(ev.Tick(), max(deadline, h.now))
        out += step + answer(h, step, *silent)
    step = h.feed(ev.Tick(), until)
    return out + step + answer(h, step, *silent)


def test_a_peer_that_answers_no_probe_is_suspected_then_declared_down_once():
    """SWIM: A answers neither our PING nor the PING_REQs we send through B and C; it is
    suspect, and down when nobody refutes the suspicion in time. Its claims go back."""
    h = Harness(slots=0)
    h.start_working()
    link(h, (A, "a"), (B, "b"), (C, "c"))
    h.feed(ev.SubmitJob(new_job_payload("j", frames=(1, 2), chunk=2)))
    h.receive(A, h.peer_action(A, act.CLAIM_CHUNK, {"job_id": "j", "chunk": 0}))
    assert h.machine.health(A) == "up"
    out = run(h, h.now + 4 * PROBE_INTERVAL, A)
    # Every peer probed once in the round; A, silent, through the two others.
    assert {m["target"] for m in sent(out, "PING_REQ")} == {A}
    assert {e.peer for e in of(out, fx.Send) if e.message["type"] == "PING_REQ"} == {B, C}
    assert h.machine.health(A) == "suspect"
    assert not h.emitted(act.PEER_DOWN)
    run(h, h.now + 3 * SUSPICION_MAX_MULT * PEER_TIMEOUT, A)
    (down,) = h.emitted(act.PEER_DOWN)
    assert down["payload"] == {"node_id": A, "incarnation": 1}
    assert h.machine.state.jobs["j"].chunk(0).state == "pending"
    assert h.machine.health(B) == "up" and h.machine.health(C) == "up"
    run(h, h.now + 20.0, A)
    assert len(h.emitted(act.PEER_DOWN)) == 1  # once per incarnation
    assert h.machine.health(A) == "down"  # until it shows life


def test_a_peer_declared_down_by_another_node_turns_down_in_our_eyes_too():
    """B declared A down first; A answers our probes no more either: our own view of A
    goes on to down (the suspicion is not dropped because the farm acted first)."""
    h = Harness(slots=0)
    h.start_working()
    link(h, (A, "a"), (B, "b"), (C, "c"))
    run(h, h.now + 2 * PROBE_INTERVAL)
    h.receive(B, h.peer_action(B, act.PEER_DOWN, {"node_id": A, "incarnation": 1}))
    run(h, h.now + 3 * SUSPICION_MAX_MULT * PEER_TIMEOUT, A)
    assert h.machine.health(A) == "down"
    assert not h.emitted(act.PEER_DOWN)  # the farm knows already
    # A was only frozen: it rejoins, and is up again for us.
    h.receive(A, h.peer_action(A, act.PEER_JOINED, joined_payload("a")))
    assert h.machine.health(A) == "up"


def test_a_probe_answered_through_another_peer_keeps_the_peer_up():
    """The direct path to A is slow, but B reaches it: B's relayed ACK answers our probe.
    And we relay for others: a PING_REQ makes us PING the target and pass its ACK on."""
    h = Harness(slots=0)
    h.start_working()
    link(h, (A, "a"), (B, "b"))
    for _ in range(6):  # three rounds of probes over A and B
        out = h.tick(h.machine.next_deadline())
        for req in [e for e in of(out, fx.Send) if e.message["type"] == "PING_REQ"]:
            ack = {"type": "ACK", "seq": req.message["seq"], "view": req.message["view"]}
            h.feed(ev.ProbeReceived(req.peer, ack))  # relayed by the helper
        answer(h, out, A)
    assert h.machine.health(A) == "up" and not h.machine.membership.prober.suspicions
    # B asks us to probe A for it.
    view = b"v" * 8
    out = h.feed(ev.ProbeReceived(B, {"type": "PING_REQ", "seq": 7, "target": A, "view": view}))
    (ping,) = sent(out, "PING", to=A)
    out = h.feed(ev.ProbeReceived(A, {"type": "ACK", "seq": ping["seq"], "view": view}))
    assert [m["seq"] for m in sent(out, "ACK", to=B)] == [7]


def test_a_suspected_peer_that_refutes_stays_up_and_we_refute_a_suspicion_of_us():
    h = Harness(slots=0)
    h.start_working()
    link(h, (A, "a"), (B, "b"), (C, "c"))
    view = b"v" * 8
    suspect_a = {"node": A, "inc": 0, "suspect": True, "by": B}
    h.feed(ev.ProbeReceived(B, {"type": "PING", "seq": 1, "view": view, "gossip": [suspect_a]}))
    assert h.machine.health(A) == "suspect"
    alive_a = {"node": A, "inc": 1, "suspect": False}
    h.feed(ev.ProbeReceived(C, {"type": "ACK", "seq": 99, "view": view, "gossip": [alive_a]}))
    assert h.machine.health(A) == "up"
    # The suspicion goes on as gossip on our next probe messages, and so does the
    # refutation: peers that heard only one of them learn the latest.
    out = run(h, h.now + 2 * PROBE_INTERVAL)
    told = [g for m in sent(out, "PING") for g in m.get("gossip", [])]
    assert alive_a in told
    run(h, h.now + 3 * SUSPICION_MAX_MULT * PEER_TIMEOUT)
    assert not h.emitted(act.PEER_DOWN)
    # B suspects us: we refute with a higher incarnation, to every linked peer at once
    # (a refutation must beat every suspicion's timeout).
    me_suspected = {"node": ME, "inc": 0, "suspect": True, "by": B}
    out = h.feed(
        ev.ProbeReceived(B, {"type": "PING", "seq": 2, "view": view, "gossip": [me_suspected]})
    )
    alive_me = {"node": ME, "inc": 1, "suspect": False}
    for peer in (A, B, C):
        assert any(
            alive_me in e.message.get("gossip", []) for e in of(out, fx.Send) if e.peer == peer
        )
    # C still holds the old suspicion: its next message gets the refutation back.
    out = h.feed(
        ev.ProbeReceived(C, {"type": "PING", "seq": 3, "view": view, "gossip": [me_suspected]})
    )
    (ack,) = sent(out, "ACK", to=C)
    assert alive_me in ack["gossip"]


def test_suspicions_of_the_same_peer_by_others_shorten_the_wait():
    """Lifeguard: one node's suspicion alone waits the longest (the suspecter may be the
    slow one); independent confirmations bring it down to the shortest."""
    from peerfarm.machine.probing import _Suspicion

    h = Harness(slots=0)
    h.start_working()
    link(h, (A, "a"), (B, "b"), (C, "c"), (D, "d"))
    prober = h.machine.membership.prober
    shortest = PEER_TIMEOUT / 2  # five members: log10(5) < 1
    alone = prober.suspicion_timeout(_Suspicion(0, 0.0, {D}))
    confirmed = prober.suspicion_timeout(_Suspicion(0, 0.0, {D, B, C}))
    assert confirmed == pytest.approx(shortest)
    assert alone == pytest.approx(SUSPICION_MAX_MULT * shortest)
    assert confirmed < prober.suspicion_timeout(_Suspicion(0, 0.0, {D, B})) < alone


def test_a_lost_link_counts_after_the_grace_and_a_never_seen_peer_after_the_timeout():
    h = Harness(slots=0)
    h.start_working()
    h.receive(B, h.peer_action(B, act.PEER_JOINED, joined_payload("b")))  # known, never linked
    h.feed(ev.LinkUp(A, "node", "a", "10.0.0.2:7100"), at=3.5)
    h.receive(A, h.peer_action(A, act.PEER_JOINED, joined_payload("a")))
    h.feed(ev.LinkDown(A), at=4.0)
    assert h.machine.health(A) == "suspect"
    h.tick(4.0 + RECONNECT_GRACE)
    assert {a["payload"]["node_id"] for a in h.emitted(act.PEER_DOWN)} == {A}
    # B was never linked since we saw it announce itself, at 3.0 (a boot storm may
    # still be linking every pair): down NEVER_LINKED_TIMEOUT after it, not PEER_TIMEOUT.
    h.tick(3.0 + NEVER_LINKED_TIMEOUT - 0.01)
    assert len(h.emitted(act.PEER_DOWN)) == 1
    h.tick(3.0 + NEVER_LINKED_TIMEOUT)
    assert {a["payload"]["node_id"] for a in h.emitted(act.PEER_DOWN)} == {A, B}
    # The machine dials a peer known only from the replicated state.
    assert any(isinstance(e, fx.Dial) and e.peer == B for e in h.effects)


def test_a_peer_that_announced_itself_late_in_a_boot_storm_is_not_declared_down():
    """The false declarations of a 32-node boot storm (docs/performance.md): a node
    declared peers down 10 s after its own start because it had not linked them yet,
    although they had only just started and announced themselves (PEER_JOINED), and
    linked them a moment later. A peer's never-linked time counts from its announce."""
    h = Harness(slots=0)
    h.start_working()
    h.tick(9.0)
    h.receive(B, h.peer_action(B, act.PEER_JOINED, joined_payload("b")))  # B just started
    h.tick(9.0 + NEVER_LINKED_TIMEOUT - 0.01)
    assert not h.emitted(act.PEER_DOWN)  # 10 s after our start, B is still new
    h.tick(9.0 + NEVER_LINKED_TIMEOUT)
    assert [a["payload"]["node_id"] for a in h.emitted(act.PEER_DOWN)] == [B]


def test_a_stalled_node_hears_its_peers_out_before_declaring_them_down():
    """A node that did not run for a while (frozen, or starved of CPU at a boot storm)
    finds its probe unanswered and its suspicions expired: the answers wait unread in
    its sockets. It reads them before judging, and declares only a peer that goes on
    answering nothing, and not before a timeout after the stall."""
    h = Harness(slots=0)
    h.start_working()
    link(h, (A, "a"), (B, "b"))
    run(h, 4.0)
    update = {"node": B, "inc": 0, "suspect": True, "by": A}  # from A, just before
    h.feed(ev.ProbeReceived(A, {"type": "PING", "seq": 1, "view": b"v" * 8, "gossip": [update]}))
    h.stall(12.0)  # 8 s without running: the suspicion of B ran out meanwhile
    assert not h.emitted(act.PEER_DOWN)
    assert h.machine.next_deadline() >= 12.0  # no busy loop while it waits
    run(h, 12.0 + PEER_TIMEOUT - 0.01, B)
    assert not h.emitted(act.PEER_DOWN)
    run(h, 30.0, B)  # A answers every probe; B nothing
    assert [a["payload"]["node_id"] for a in h.emitted(act.PEER_DOWN)] == [B]


def test_an_idle_node_sends_one_probe_per_period_whatever_the_farm_size():
    """All-pairs heartbeats cost a node one message per peer and period; probing costs
    one PING (and the ACKs of the peers probing it) whatever the farm's size. Views in
    sync swap no version vector; a probe whose view hash differs brings one."""
    h = Harness(slots=0)
    h.start_working()
    peers = [(f"{i:016x}", f"n{i}") for i in range(1, 31)]
    link(h, *peers)
    out = run(h, h.now + 2 * ANTI_ENTROPY_INTERVAL)
    for e in of(out, fx.Send):  # every peer tells us the view we told it: in sync
        if e.message["type"] == "VV":
            h.feed(ev.VersionVectorReceived(e.peer, e.message["vv"], e.message.get("heads", {})))
    start = h.now
    out = run(h, start + 60 * PROBE_INTERVAL)
    kinds = [e.message["type"] for e in of(out, fx.Send)]
    assert kinds.count("PING") == pytest.approx(60, abs=1)
    assert set(kinds) == {"PING"}  # no heartbeats, no version vectors, no PING_REQ
    # Shuffled rounds: every peer probed in those two rounds' time, none more than 3 times.
    probed = [e.peer for e in of(out, fx.Send)]
    assert {p for p, _ in peers} == set(probed)
    assert max(probed.count(p) for p, _ in peers) <= 3
    # A peer whose probe carries another view gets our version vector.
    a = peers[0][0]
    out = h.feed(ev.ProbeReceived(a, {"type": "PING", "seq": 5, "view": b"x" * 8}))
    assert [m["type"] for m in of_sends(out, a)] == ["ACK", "VV"]
    # The same view hash: only the ACK.
    view = sent(out, "ACK")[0]["view"]
    out = h.feed(ev.ProbeReceived(a, {"type": "PING", "seq": 6, "view": view}))
    assert [m["type"] for m in of_sends(out, a)] == ["ACK"]
    # Our view changed (actions flow): another view within ANTI_ENTROPY_INTERVAL of our
    # last version vector gets only the ACK (the actions are on their way), and our
    # version vector once the interval is over.
    h.receive(a, h.peer_action(a, act.PEER_JOINED, joined_payload("a")))
    out = h.feed(ev.ProbeReceived(a, {"type": "PING", "seq": 7, "view": b"x" * 8}))
    assert [m["type"] for m in of_sends(out, a)] == ["ACK"]
    assert sent(out, "ACK")[0]["view"] != view  # (our view did change)
    out = h.feed(ev.ProbeReceived(a, {"type": "PING", "seq": 8, "view": b"x" * 8}), h.now + 2.0)
    assert [m["type"] for m in of_sends(out, a)] == ["ACK", "VV"]


def of_sends(effects: list, peer: str) -> list[dict]:
    return [e.message for e in of(effects, fx.Send) if e.peer == peer]


def test_graceful_stop_finishes_in_flight_then_leaves():
    h = Harness(slots=1)
    h.start_working()
    out = h.receive(A, h.peer_action(A, act.NEW_JOB, new_job_payload("j", frames=(1, 8), chunk=2)))
    (start,) = of(out, fx.StartRender)
    out = h.feed(ev.Stop())
    assert not of(out, fx.StopRender) and not of(out, fx.Left)
    out = h.feed(ev.RenderEnded("j", start.chunk, ok=True))
    assert not of(out, fx.StartRender)  # claims nothing more
    assert [a["type"] for a in h.emitted(act.DONE) + h.emitted(act.PEER_LEFT)] == [
        act.DONE,
        act.PEER_LEFT,
    ]
    assert of(out, fx.Left)


def test_stopping_at_once_gives_the_chunks_back():
    h = Harness(slots=2)
    h.start_working()
    out = h.receive(A, h.peer_action(A, act.NEW_JOB, new_job_payload("j", frames=(1, 8), chunk=2)))
    starts = of(out, fx.StartRender)
    h.feed(ev.Stop())
    out = h.feed(ev.Stop())  # the second stop: at once
    assert {(s.chunk, s.reason) for s in of(out, fx.StopRender)} == {
        (s.chunk, "node stopping") for s in starts
    }
    for s in starts:
        out = h.feed(ev.RenderEnded("j", s.chunk, ok=False, error="stopped"))
    assert sorted(a["payload"]["chunk"] for a in h.emitted(act.RELEASE_CHUNK)) == sorted(
        s.chunk for s in starts
    )
    assert h.emitted(act.PEER_LEFT) and of(out, fx.Left)


def test_pausing_this_machine_gives_its_chunks_back_and_resuming_takes_work_again():
    h = Harness(slots=1)
    h.start_working()
    out = h.receive(A, h.peer_action(A, act.NEW_JOB, new_job_payload("j", frames=(1, 8), chunk=2)))
    (start,) = of(out, fx.StartRender)
    out = h.feed(ev.PauseWorker())
    (stop,) = of(out, fx.StopRender)
    assert stop.reason == "this machine's worker paused"
    h.feed(ev.RenderEnded("j", start.chunk, ok=False, error="stopped"))
    assert h.emitted(act.RELEASE_CHUNK)
    assert not of(h.effects[-3:], fx.StartRender)
    out = h.feed(ev.ResumeWorker())
    assert of(out, fx.StartRender)


def test_a_render_stopped_because_its_job_failed_gives_the_chunk_back_for_a_retry():
    """The job fails on one chunk while another of ours renders: that render stops,
    and its chunk must not stay claimed by us, or a retry could never finish the job."""
    h = Harness(slots=2)
    h.start_working()
    out = h.receive(A, h.peer_action(A, act.NEW_JOB, new_job_payload("j", frames=(1, 4), chunk=2)))
    first, second = of(out, fx.StartRender)
    failing = first
    for attempt in range(3):  # MAX_ATTEMPTS: nobody else can render it
        out = h.feed(ev.RenderEnded("j", failing.chunk, ok=False, error="exit 3"))
        if attempt < 2:
            (failing,) = of(out, fx.StartRender)
            assert failing.chunk == first.chunk
    assert h.machine.shared.state.jobs["j"].state == "failed"
    (stop,) = of(out, fx.StopRender)
    assert (stop.chunk, stop.reason) == (second.chunk, "job failed")
    h.feed(ev.RenderEnded("j", second.chunk, ok=False, error="stopped"))
    (released,) = h.emitted(act.RELEASE_CHUNK)
    assert released["payload"]["chunk"] == second.chunk
    assert h.machine.shared.state.jobs["j"].chunk(second.chunk).state == "pending"
    out = h.receive(A, h.peer_action(A, act.RETRY_JOB, {"job_id": "j"}))
    assert sorted(s.chunk for s in of(out, fx.StartRender)) == sorted([first.chunk, second.chunk])
    for s in of(out, fx.StartRender):
        h.feed(ev.RenderEnded("j", s.chunk, ok=True))
    assert h.machine.shared.state.jobs["j"].state == "done"


def test_the_collector_fetches_frames_and_reports_lost_ones():
    h = Harness(slots=0)
    h.start_working()
    payload = new_job_payload("j", frames=(1, 20), chunk=1)
    h.feed(ev.SubmitJob(payload))
    (scan,) = of(h.effects, fx.ScanOutputs)
    h.feed(ev.OutputsScanned("j", frozenset({1})))  # frame 1 is in the output folder already
    h.feed(ev.LinkUp(A, "node", "a", "10.0.0.2:7100"))
    h.receive(A, h.peer_action(A, act.PEER_JOINED, joined_payload("a")))
    for chunk in range(20):
        claim = h.peer_action(A, act.CLAIM_CHUNK, {"job_id": "j", "chunk": chunk})
        h.receive(A, claim)
        h.receive(A, h.peer_action(A, act.DONE, {**claim["payload"], "claim_seq": claim["seq"]}))
    fetches = of(h.effects, fx.FetchFrame)
    assert len(fetches) == 8  # at most 8 at once
    assert 1 not in {f.frame for f in fetches} and {f.holder for f in fetches} == {A}
    h.feed(ev.FrameFetched("j", fetches[0].frame, None, A, ev.STORED))
    assert len(of(h.effects, fx.FetchFrame)) == 9  # a free place is used at once
    h.feed(ev.FrameFetched("j", fetches[1].frame, None, A, ev.MISSING))
    (lost,) = h.emitted(act.CHUNK_LOST)
    assert lost["payload"] == {"job_id": "j", "chunk": fetches[1].frame - 1, "holder": A}
    h.feed(ev.FrameFetched("j", fetches[2].frame, None, A, ev.WRITE_FAILED, "disk full"))
    assert "disk full" in h.machine.status()["jobs"][0]["output_error"]


def _submitter_with_a_peer(frames: tuple[int, int]) -> Harness:
    """A node that submitted job "j" (one-frame chunks, an empty output folder) and is
    linked to peer A, which renders it."""
    h = Harness(slots=0)
    h.start_working()
    h.feed(ev.SubmitJob(new_job_payload("j", frames=frames, chunk=1)))
    h.feed(ev.OutputsScanned("j", frozenset()))
    h.feed(ev.LinkUp(A, "node", "a", "10.0.0.2:7100"))
    h.receive(A, h.peer_action(A, act.PEER_JOINED, joined_payload("a")))
    return h


def test_the_frames_of_a_run_are_fetched_as_soon_as_its_done_arrives():
    """A DONE covering a run of chunks queued only its first for fetching: the others
    waited for the collector's next look over the whole job (up to a minute)."""
    h = _submitter_with_a_peer(frames=(1, 6))
    claim = h.peer_action(A, act.CLAIM_CHUNK, {"job_id": "j", "chunk": 1, "count": 4})
    h.receive(A, claim)
    out = h.receive(A, h.peer_action(A, act.DONE, {**claim["payload"], "claim_seq": claim["seq"]}))
    assert sorted(f.frame for f in of(out, fx.FetchFrame)) == [2, 3, 4, 5]


def test_a_full_output_disk_is_shown_as_waiting_until_a_frame_is_stored_again():
    """The submitter's disk full: the job is done everywhere, but its frames wait on
    their nodes. Status said nothing while `submit --wait` waited silently; now the job
    says why, retries, and stops saying it once a frame comes in."""
    h = _submitter_with_a_peer(frames=(1, 2))
    for chunk in range(2):
        claim = h.peer_action(A, act.CLAIM_CHUNK, {"job_id": "j", "chunk": chunk})
        h.receive(A, claim)
        h.receive(A, h.peer_action(A, act.DONE, {**claim["payload"], "claim_seq": claim["seq"]}))
    first, second = of(h.effects, fx.FetchFrame)
    assert h.machine.status()["jobs"][0]["output_waiting"] == ""
    full = "cannot write to the output folder out: [Errno 28] No space left on device"
    h.feed(ev.FrameFetched("j", first.frame, None, A, ev.NO_SPACE, full))
    job = h.machine.status()["jobs"][0]
    assert job["output_waiting"] == full and not job["output_error"] and not job["complete"]
    out = h.tick(h.now + COLLECT_INTERVAL + 1)  # asked again after the interval
    assert [f.frame for f in of(out, fx.FetchFrame)] == [first.frame]
    h.feed(ev.FrameFetched("j", second.frame, None, A, ev.STORED))
    assert h.machine.status()["jobs"][0]["output_waiting"] == ""


def test_requests_that_make_no_sense_are_refused_and_change_nothing():
    h = Harness(slots=0)
    h.start_working()
    length = len(h.machine.log)
    with pytest.raises(Refused, match="no job 'nope'"):
        h.feed(ev.CancelJob("nope"))
    h.feed(ev.SubmitJob(new_job_payload("j")))
    with pytest.raises(Refused, match="not paused"):
        h.feed(ev.ResumeJob("j"))
    with pytest.raises(Refused, match="from -1000 to 1000"):
        h.feed(ev.SetPriority("j", 5000))
    with pytest.raises(Refused, match="0 to 1024"):
        h.feed(ev.SetSlots(-1))
    assert len(h.machine.log) == length + 1  # only the NEW_JOB


def test_an_invalid_action_from_a_peer_is_dropped_with_a_note():
    h = Harness(slots=0)
    h.start_working()
    good = h.peer_action(A, act.PEER_JOINED, joined_payload("a"))
    bad = {**h.peer_action(A, act.NEW_JOB, new_job_payload("x")), "origin": "NOT-HEX"}
    out = h.receive(A, bad, good)
    notes = [e.text for e in of(out, fx.Note) if e.level == logging.WARNING]
    assert any("dropped an invalid action" in t for t in notes)
    assert A in h.machine.state.peers  # the rest of the batch applied


def test_an_idle_machine_sleeps_until_its_next_probe():
    h = Harness(slots=0)
    h.start_working()
    h.feed(ev.LinkUp(A, "node", "a", "10.0.0.2:7100"))
    deadline = h.machine.next_deadline()
    assert deadline > h.now
    h.tick(deadline)
    assert h.machine.next_deadline() > deadline  # a tick moves it on; no busy loop


def test_a_done_reports_frame_times_only_when_they_can_tell_a_scene_s_costs():
    """Frames of a few milliseconds (the node's own work decides their times) send no
    frame_ms: the farm would re-solve its cost table for nothing."""
    for step, sent in ((0.001, False), (0.5, True)):
        h = Harness(slots=1)
        h.start_working()
        payload = new_job_payload("j", frames=(1, 4), chunk=4)
        (start,) = of(h.receive(A, h.peer_action(A, act.NEW_JOB, payload)), fx.StartRender)
        for _ in range(4):
            h.feed(ev.RenderProgress("j", start.chunk), at=h.now + step)
        h.feed(ev.RenderEnded("j", start.chunk, ok=True))
        (done,) = h.emitted(act.DONE)
        assert ("frame_ms" in done["payload"]) == sent, step
        if sent:
            assert done["payload"]["frame_ms"] == [0, 500, 500, 500]


def rendered_light_job(h: Harness, frame_seconds: float) -> None:
    """The node renders a job of 4 frames in one chunk, each ``frame_seconds``."""
    light = new_job_payload("light", frames=(1, 4), chunk=4)
    (start,) = of(h.receive(A, h.peer_action(A, act.NEW_JOB, light)), fx.StartRender)
    for _ in range(4):
        h.feed(ev.RenderProgress("light", start.chunk), at=h.now + frame_seconds)
    h.feed(ev.RenderEnded("light", start.chunk, ok=True))


def test_a_heavy_scene_after_a_light_one_is_not_stopped_as_hung():
    """The hung limit judged a job's first render by the renderer's speed on other
    scenes: after frames of 0.3 s, a POV-Ray scene of 35 s a frame was stopped "as
    hung" at 10 s, three times, and the job failed. A job is judged by its own frame
    times now; a render of it that stops finishing frames is still stopped."""
    h = Harness(slots=1)
    h.start_working()
    rendered_light_job(h, frame_seconds=0.3)
    heavy = new_job_payload("heavy", frames=(1, 3), chunk=1)
    (start,) = of(h.receive(A, h.peer_action(A, act.NEW_JOB, heavy)), fx.StartRender)
    assert not of(h.tick(h.now + 35.0), fx.StopRender)  # 100 frames of the light scene
    h.feed(ev.RenderProgress("heavy", start.chunk))
    (second,) = of(h.feed(ev.RenderEnded("heavy", start.chunk, ok=True)), fx.StartRender)
    assert not h.emitted(act.CHUNK_FAILED)
    # Its second render hangs: stopped after 10 times its 35 s, and counted a failure.
    began = h.now
    assert not of(h.tick(began + 9 * 35.0), fx.StopRender)
    (stop,) = of(h.tick(began + 11 * 35.0), fx.StopRender)
    assert stop.chunk == second.chunk
    h.feed(ev.RenderEnded("heavy", second.chunk, ok=False, error="stopped"))
    (failed,) = h.emitted(act.CHUNK_FAILED)
    assert "stopped as hung" in failed["payload"]["error"]


def test_the_first_render_of_a_job_is_judged_by_its_own_frames_once_it_has_some():
    """With no frame of the job measured yet, a run's own finished frames set its hung
    limit, as an estimate of the job would: ten times the whole run (8 frames of 2 s)
    from its start; a run that stops finishing frames is stopped then."""
    h = Harness(slots=1)
    h.start_working()
    payload = new_job_payload("j", frames=(1, 8), chunk=8)
    (start,) = of(h.receive(A, h.peer_action(A, act.NEW_JOB, payload)), fx.StartRender)
    started = h.now
    for _ in range(3):
        h.feed(ev.RenderProgress("j", start.chunk), at=h.now + 2.0)
    assert not of(h.tick(started + 150.0), fx.StopRender)
    assert of(h.tick(started + 170.0), fx.StopRender)  # 10 × 8 frames × 2 s


def test_a_long_run_tells_the_farm_its_finished_chunks_as_it_goes():
    """A run showed nothing until its end: a run of hundreds of frames kept the job's
    progress still for its whole length, its frames could not be collected, and a node
    dying near its end lost all of it. Every FINISHED_TOLD_EVERY it now emits a DONE of
    the chunks it has finished; the run goes on, and its last DONE names the rest."""
    for step, told in ((1.0, False), (12.0, True)):
        h = Harness(slots=1)
        h.start_working()
        payload = {**new_job_payload("j", frames=(1, 4), chunk=1), "adaptive": True}
        (start,) = of(h.receive(A, h.peer_action(A, act.NEW_JOB, payload)), fx.StartRender)
        n = len(start.frames)
        assert n == 4  # a run of several chunks (the whole job: the part of a farm of one)
        for _ in range(n):
            out = h.feed(ev.RenderProgress("j", start.chunk), at=h.now + step)
            assert not of(out, fx.StopRender)  # its own DONE does not stop the run
        dones = [d["payload"] for d in h.emitted(act.DONE)]
        if not told:
            assert dones == []
        else:
            # After 3 frames (36 s): the first 3 chunks, with their frame times.
            assert FINISHED_TOLD_EVERY < 3 * step < 2 * FINISHED_TOLD_EVERY
            (early,) = dones
            assert (early["chunk"], early["count"]) == (start.chunk, 3)
            assert early["frame_ms"] == [0, 12000, 12000]
            job = h.machine.shared.state.jobs["j"]
            assert job.frames_done == 3 and job.chunk(start.chunk + 3).state == "claimed"
        h.feed(ev.RenderEnded("j", start.chunk, ok=True))
        last = h.emitted(act.DONE)[-1]["payload"]
        first = start.chunk + (3 if told else 0)
        assert (last["chunk"], last.get("count", 1)) == (first, start.chunk + n - first)
        assert h.machine.shared.state.jobs["j"].frames_done == n
        assert not h.emitted(act.CHUNK_FAILED) and not h.emitted(act.RELEASE_CHUNK)


def test_a_first_part_shares_its_speed_from_its_first_frames():
    """A node's first run of a fresh job is its whole part (core/scheduler.py
    _first_part): it measures its speed from the part's first PROBE_FRAMES frames and
    shares it then, not at the run's end, so the farm can size its work by it."""
    h = Harness(slots=1)
    h.start_working()
    payload = {**new_job_payload("j", frames=(1, 40), chunk=1), "adaptive": True}
    (start,) = of(h.receive(A, h.peer_action(A, act.NEW_JOB, payload)), fx.StartRender)
    assert len(start.frames) == 40  # the whole job: the part of a farm of one
    h.feed(ev.RenderProgress("j", start.chunk), at=h.now + 3.0)  # start-up and a frame
    for _ in range(PROBE_FRAMES - 2):
        h.feed(ev.RenderProgress("j", start.chunk), at=h.now + 2.0)
    assert not h.emitted(act.NODE_SPEED)
    h.feed(ev.RenderProgress("j", start.chunk), at=h.now + 2.0)
    (told,) = h.emitted(act.NODE_SPEED)
    assert told["payload"]["frame_ms"] == 2000 and told["payload"]["startup_ms"] == 1000
    for _ in range(10):  # once
        h.feed(ev.RenderProgress("j", start.chunk), at=h.now + 2.0)
    assert len(h.emitted(act.NODE_SPEED)) == 1


def test_a_run_of_fast_frames_looks_whether_to_split_at_most_once_a_second(monkeypatch):
    """Whether to give a run's tail back was looked at every frame, a walk over the
    run's chunks each time: a 1,000,000-frame job of millisecond frames (runs of
    100,000) kept its node from answering anything."""
    from peerfarm.machine import worker

    looks = []

    def counting(*args, **kw):  # noqa: ANN002, ANN003, ANN202
        looks.append(args[2].id)
        return args[4]  # keep the whole run

    monkeypatch.setattr(worker, "split_keep", counting)
    h = Harness(slots=1)
    h.start_working()
    payload = {**new_job_payload("j", frames=(1, 100), chunk=1), "adaptive": True}
    (start,) = of(h.receive(A, h.peer_action(A, act.NEW_JOB, payload)), fx.StartRender)
    for _ in range(len(start.frames) - 1):
        h.feed(ev.RenderProgress("j", start.chunk), at=h.now + 0.01)
    assert looks == ["j"]
    h.feed(ev.RenderProgress("j", start.chunk), at=h.now + worker.SPLIT_LOOK_EVERY)
    assert looks == ["j"]  # (the last frame: nothing left to give)


def test_a_run_that_gives_its_tail_back_no_longer_counts_it_as_busy(monkeypatch):
    """The chunks our renders work on were kept until a render started or ended, so a
    tail given back (a split) still counted as ours while the render went on."""
    from peerfarm.machine import worker

    monkeypatch.setattr(worker, "split_keep", lambda *args, **kw: 2)
    h = Harness(slots=1)
    h.start_working()
    payload = {**new_job_payload("j", frames=(1, 100), chunk=1), "adaptive": True}
    (start,) = of(h.receive(A, h.peer_action(A, act.NEW_JOB, payload)), fx.StartRender)
    assert len(start.frames) > 2
    assert h.machine.worker.busy() == {("j", start.chunk + i) for i in range(len(start.frames))}
    h.feed(ev.RenderProgress("j", start.chunk), at=h.now + 1)
    (released,) = h.emitted(act.RELEASE_CHUNK)
    assert released["payload"]["chunk"] == start.chunk + 2
    assert h.machine.worker.busy() == {("j", start.chunk), ("j", start.chunk + 1)}


def test_the_rest_of_a_run_after_its_first_done_counts_as_seen_then():
    """After a DONE of the first part of another node's run, the claim's other chunks
    form a run starting at a new chunk: not seen by then, it looked just started at
    every look, so it could never be overdue (backups of hung renderers)."""
    h = Harness(slots=0)
    h.start_working()
    h.receive(A, h.peer_action(A, act.PEER_JOINED, joined_payload("a")))
    payload = {**new_job_payload("j", frames=(1, 20), chunk=1), "adaptive": True}
    h.receive(A, h.peer_action(A, act.NEW_JOB, payload))
    claim = h.peer_action(A, act.CLAIM_CHUNK, {"job_id": "j", "chunk": 0, "count": 10})
    h.receive(A, claim)
    seq = claim["seq"]
    assert h.machine.worker.claims_seen[("j", 0, seq)] == h.now
    told = {"job_id": "j", "chunk": 0, "count": 4, "claim_seq": seq}
    h.feed(ev.ActionsReceived(A, [h.peer_action(A, act.DONE, told)]), at=h.now + 40)
    assert h.machine.worker.claims_seen[("j", 4, seq)] == h.now


def test_a_stopping_or_paused_node_keeps_the_finished_chunks_of_its_run():
    """A graceful stop waited for every run in flight to end (an hour, for a long run),
    and a pause or a stop at once threw away the frames a run had finished. Now a
    stopping node stops a run at its next finished chunk, and any stop that gives a
    run back tells its finished chunks first (DONE), releasing only the rest."""
    for how in ("stop", "pause", "stop at once"):
        h = Harness(slots=1)
        h.start_working()
        payload = {**new_job_payload("j", frames=(1, 100), chunk=1), "adaptive": True}
        (start,) = of(h.receive(A, h.peer_action(A, act.NEW_JOB, payload)), fx.StartRender)
        assert len(start.frames) >= 4
        for _ in range(2):
            h.feed(ev.RenderProgress("j", start.chunk), at=h.now + 1)
        if how == "stop":
            out = h.feed(ev.Stop())
            assert not of(out, fx.StopRender)  # the chunk being rendered is finished
            out = h.feed(ev.RenderProgress("j", start.chunk), at=h.now + 1)
            finished = 3
        else:
            out = h.feed(ev.PauseWorker() if how == "pause" else ev.Stop(at_once=True))
            finished = 2
        (stop,) = of(out, fx.StopRender)
        (done,) = [d["payload"] for d in h.emitted(act.DONE)]
        assert (done["chunk"], done["count"]) == (start.chunk, finished), how
        h.feed(ev.RenderEnded("j", start.chunk, ok=False, error="stopped"))
        (released,) = h.emitted(act.RELEASE_CHUNK)
        job = h.machine.shared.state.jobs["j"]
        assert job.frames_done == finished, how
        assert [job.chunk(start.chunk + i).state for i in range(len(start.frames))] == [
            "done"
        ] * finished + ["pending"] * (len(start.frames) - finished), how
        assert not h.emitted(act.CHUNK_FAILED)


def test_a_heavy_frame_in_a_render_does_not_make_the_node_look_slow():
    # A run of 4 frames (fixed chunks of 4): start-up 2 s, then 1 s a frame but one
    # frame 8 s (an explosion). The median frame tells the node's speed; a mean over
    # the run (3.3 s a frame) would make it look three times slower than it is.
    h = Harness(slots=1)
    h.start_working()
    job = h.peer_action(A, act.NEW_JOB, new_job_payload("j", frames=(1, 4), chunk=4))
    out = h.receive(A, h.peer_action(A, act.PEER_JOINED, joined_payload("a")), job)
    (start,) = of(out, fx.StartRender)
    at = h.now
    for seconds in (3.0, 1.0, 8.0, 1.0):  # the first frame also paid the start-up
        at += seconds
        h.feed(ev.RenderProgress("j", start.chunk), at)
    h.feed(ev.RenderEnded("j", start.chunk, ok=True), at)
    (speed,) = h.emitted(act.NODE_SPEED)
    assert speed["payload"]["frame_ms"] == 1000
    assert speed["payload"]["startup_ms"] == 2000


def test_a_node_puts_its_speed_on_the_farms_scale_once_a_job_is_done():
    """Measured as it renders, a speed is the cost of the frames rendered: a node whose
    part held the heavy frames looked 8 times slower than it is, and the next job's
    parts were weighted by that. Once the job is done the node takes its speed from the
    job's frame times, put on one scale with the other nodes' where their frames meet."""
    h = Harness(slots=1)
    h.start_working()
    h.receive(A, h.peer_action(A, act.PEER_JOINED, joined_payload("a")))
    speed_of_a = {"renderer": "builtin", "startup_ms": 0}
    h.receive(A, h.peer_action(A, act.NODE_SPEED, {**speed_of_a, "frame_ms": 1000}))
    payload = new_job_payload("j", frames=(1, 20), chunk=10)
    (start,) = of(h.receive(A, h.peer_action(A, act.NEW_JOB, payload)), fx.StartRender)
    assert start.chunk == 0  # frames 1-10: 7 heavy frames (8 s here), then light ones
    claim = h.peer_action(A, act.CLAIM_CHUNK, {"job_id": "j", "chunk": 1})
    h.receive(A, claim)
    h.feed(ev.RenderProgress("j", start.chunk), at=h.now + 10.0)  # start-up and a frame
    for seconds in (8.0,) * 6 + (1.0,) * 3:
        h.feed(ev.RenderProgress("j", start.chunk), at=h.now + seconds)
    h.feed(ev.RenderEnded("j", start.chunk, ok=True))
    (slow,) = h.emitted(act.NODE_SPEED)
    assert slow["payload"]["frame_ms"] == 8000
    # A renders frames 11-20, all light, 1 s each: where its frames meet ours (frames
    # 8-10 and 11-13), it is as fast as we are.
    done = {"job_id": "j", "chunk": 1, "claim_seq": claim["seq"], "frame_ms": [0] + [1000] * 9}
    h.receive(A, h.peer_action(A, act.DONE, done))
    assert h.machine.shared.state.jobs["j"].state == "done"
    (_, fixed) = h.emitted(act.NODE_SPEED)
    assert fixed["payload"]["frame_ms"] == 1000


def test_a_speed_put_on_the_farms_scale_is_shared_even_a_little_off():
    """The next job's parts are weighted by the speeds put on one scale once a job is
    done: one left 20% off (the old rule for sharing a speed) sized its node's part 20%
    wrong. Measured at 1.1 s a frame on frames a tenth heavier than the job's typical
    one, the node shares 1.0 s once the job is done."""
    h = Harness(slots=1)
    h.start_working()
    h.receive(A, h.peer_action(A, act.PEER_JOINED, joined_payload("a")))
    speed_of_a = {"renderer": "builtin", "startup_ms": 0, "frame_ms": 1000}
    h.receive(A, h.peer_action(A, act.NODE_SPEED, speed_of_a))
    payload = new_job_payload("j", frames=(1, 40), chunk=10)
    (start,) = of(h.receive(A, h.peer_action(A, act.NEW_JOB, payload)), fx.StartRender)
    assert start.chunk == 0
    claims = [h.peer_action(A, act.CLAIM_CHUNK, {"job_id": "j", "chunk": c}) for c in (1, 2, 3)]
    for claim in claims:
        h.receive(A, claim)
    h.feed(ev.RenderProgress("j", start.chunk), at=h.now + 1.1)
    for _ in range(9):
        h.feed(ev.RenderProgress("j", start.chunk), at=h.now + 1.1)
    h.feed(ev.RenderEnded("j", start.chunk, ok=True))
    (measured,) = h.emitted(act.NODE_SPEED)
    assert measured["payload"]["frame_ms"] == 1100
    # A's frames next to ours cost as much (1.1 s on A: as fast as we are), the rest of
    # the job's frames 1.0 s on A.
    for claim, ms in zip(
        claims, ([0, 1100, 1100] + [1000] * 7, [0] + [1000] * 9, [0] + [1000] * 9), strict=True
    ):
        done = {"job_id": "j", "chunk": claim["payload"]["chunk"], "claim_seq": claim["seq"]}
        h.receive(A, h.peer_action(A, act.DONE, {**done, "frame_ms": ms}))
    assert h.machine.shared.state.jobs["j"].state == "done"
    (_, on_scale) = h.emitted(act.NODE_SPEED)
    assert on_scale["payload"]["frame_ms"] == 1000


def test_a_node_that_became_slower_tells_it_from_its_parts_first_frames():
    """A node whose speed the farm knows may have become slower (an artist now works on
    it): its part of the next job, sized by its old speed, is too long. It measures
    itself from the part's first frames and shares it then, not at the part's end, so
    the part can give its tail back early (a farm's second job took 28.9 s against the
    others' 19 when it did not)."""
    h = Harness(slots=1)
    h.start_working()
    rendered_light_job(h, frame_seconds=1.0)
    (fast,) = h.emitted(act.NODE_SPEED)
    assert fast["payload"]["frame_ms"] == 1000
    payload = {**new_job_payload("j", frames=(1, 40), chunk=1), "adaptive": True}
    (start,) = of(h.receive(A, h.peer_action(A, act.NEW_JOB, payload)), fx.StartRender)
    assert len(start.frames) == 40  # its part, sized by the speed the farm knows
    for _ in range(PROBE_FRAMES):  # now 4 s a frame
        h.feed(ev.RenderProgress("j", start.chunk), at=h.now + 4.0)
    (_, slower) = h.emitted(act.NODE_SPEED)
    assert slower["payload"]["frame_ms"] > 2 * 1000


def test_a_job_arriving_makes_a_run_give_its_tail_back_at_once():
    """Two jobs of equal priority submitted together: every node had taken a part of
    the first, and the movers gave their runs back only as their next frame ended, each
    a frame more of the first job's head start (kept to the end: 25% apart on a real
    farm). A run now looks as the other job arrives and keeps only the frame it
    renders; a first run cut to one frame shares no speed (its start-up and its frame
    in one: the next run measures it)."""
    h = Harness(slots=1)
    h.start_working()
    h.receive(A, h.peer_action(A, act.PEER_JOINED, joined_payload("a")))
    payload = {**new_job_payload("j", frames=(1, 48), chunk=1), "adaptive": True}
    (start,) = of(h.receive(A, h.peer_action(A, act.NEW_JOB, payload)), fx.StartRender)
    assert start.chunk == 0 and len(start.frames) == 24  # our part of the job
    h.receive(A, h.peer_action(A, act.CLAIM_CHUNK, {"job_id": "j", "chunk": 24, "count": 24}))
    assert not h.emitted(act.RELEASE_CHUNK)
    other = {**new_job_payload("k", frames=(1, 48), chunk=1), "adaptive": True}
    h.feed(ev.ActionsReceived(A, [h.peer_action(A, act.NEW_JOB, other)]), at=h.now + 0.5)
    (released,) = h.emitted(act.RELEASE_CHUNK)  # 2 nodes on j, none on k: we move
    assert (released["payload"]["chunk"], released["payload"]["count"]) == (1, 23)
    out = h.feed(ev.RenderProgress("j", 0), at=h.now + 3)
    assert of(out, fx.StopRender)
    out = h.feed(ev.RenderEnded("j", 0, ok=False, error="stopped"), at=h.now + 0.1)
    (started,) = of(out, fx.StartRender)
    assert started.job.id == "k"
    (done,) = h.emitted(act.DONE)
    assert (done["payload"]["chunk"], done["payload"].get("count", 1)) == (0, 1)
    assert not h.emitted(act.NODE_SPEED)
