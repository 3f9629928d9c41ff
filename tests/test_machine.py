"""The node machine with plain values: events in, effects out, time as a number.

These are the rules of a node (claims, adoption, failure detection, stops,
collection) checked without sockets, processes or sleeps; the runtime and the
simulator drive this very object.
"""

from __future__ import annotations

import logging

import pytest
from factories import A, B, joined_payload, new_job_payload

from peerfarm.core import actions as act
from peerfarm.core.refused import Refused
from peerfarm.machine import MachineConfig, NodeMachine
from peerfarm.machine import effects as fx
from peerfarm.machine import events as ev
from peerfarm.machine.timing import (
    ANTI_ENTROPY_INTERVAL,
    FULL_ANTI_ENTROPY_EVERY,
    NEVER_LINKED_TIMEOUT,
    PEER_TIMEOUT,
    RECONNECT_GRACE,
)

ME = "0" * 16  # sorts before A and B: our claims win ties against theirs
LATE = "f" * 16  # sorts after us


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
    assert h.machine.next_deadline() == pytest.approx(PEER_TIMEOUT / 3)  # first heartbeat
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


def test_a_silent_peer_is_declared_down_once_and_its_claims_go_back():
    h = Harness(slots=0)
    h.start_working()
    h.feed(ev.LinkUp(A, "node", "a", "10.0.0.2:7100"), at=3.0)
    h.receive(A, h.peer_action(A, act.PEER_JOINED, joined_payload("a")))
    h.feed(ev.SubmitJob(new_job_payload("j", frames=(1, 2), chunk=2)))
    h.receive(A, h.peer_action(A, act.CLAIM_CHUNK, {"job_id": "j", "chunk": 0}))
    assert h.machine.health(A) == "up"
    h.feed(ev.Heard(A), at=4.0)
    assert h.machine.health(A, 5.6) == "suspect"
    h.tick(4.0 + PEER_TIMEOUT - 0.01)
    assert not h.emitted(act.PEER_DOWN)
    assert h.machine.next_deadline() <= 4.0 + PEER_TIMEOUT
    h.tick(4.0 + PEER_TIMEOUT)
    (down,) = h.emitted(act.PEER_DOWN)
    assert down["payload"] == {"node_id": A, "incarnation": 1}
    assert h.machine.state.jobs["j"].chunk(0).state == "pending"
    h.tick(20.0)
    assert len(h.emitted(act.PEER_DOWN)) == 1  # once per incarnation


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
    # B was never linked since our start (a boot storm may still be linking every
    # pair): down NEVER_LINKED_TIMEOUT after it, not PEER_TIMEOUT.
    h.tick(NEVER_LINKED_TIMEOUT - 0.01)
    assert len(h.emitted(act.PEER_DOWN)) == 1
    h.tick(NEVER_LINKED_TIMEOUT)
    assert {a["payload"]["node_id"] for a in h.emitted(act.PEER_DOWN)} == {A, B}
    # The machine dials a peer known only from the replicated state.
    assert any(isinstance(e, fx.Dial) and e.peer == B for e in h.effects)


def test_a_stalled_node_hears_its_peers_out_before_declaring_them_down():
    """A node that did not run for a while (frozen, or starved of CPU at a boot storm)
    finds every peer silent: their messages wait unread in its sockets. It reads them
    before judging, and declares only a peer that stays silent a timeout longer."""
    h = Harness(slots=0)
    h.start_working()
    for peer, name, address in ((A, "a", "10.0.0.2:7100"), (B, "b", "10.0.0.3:7100")):
        h.feed(ev.LinkUp(peer, "node", name, address), at=3.0)
        h.receive(peer, h.peer_action(peer, act.PEER_JOINED, joined_payload(name)))
    h.stall(10.0)  # 7 s without running: A and B look silent for longer than the timeout
    assert not h.emitted(act.PEER_DOWN)
    assert h.machine.next_deadline() >= 10.0  # no busy loop while it waits
    h.feed(ev.Heard(A), at=10.1)  # A's queued heartbeats are read; B really is silent
    h.tick(10.0 + PEER_TIMEOUT - 0.01)
    assert not h.emitted(act.PEER_DOWN)
    h.tick(10.0 + PEER_TIMEOUT)
    assert [a["payload"]["node_id"] for a in h.emitted(act.PEER_DOWN)] == [B]


def test_heartbeats_and_version_vectors_go_to_linked_peers_on_time():
    """Every heartbeat interval a linked peer gets one message: a version vector while
    our views may differ, else a heartbeat (an idle farm in sync swaps no version
    vectors, but for a full swap every FULL_ANTI_ENTROPY_EVERY)."""
    h = Harness(slots=0)
    h.start_working()
    h.feed(ev.LinkUp(A, "node", "a", "10.0.0.2:7100"))

    def sent_to_a(since: int) -> list[str]:
        return [e.message["type"] for e in of(h.effects[since:], fx.Send) if e.peer == A]

    assert sent_to_a(0) == ["VV"]  # on link up
    mark = len(h.effects)
    h.tick(h.now + 2 * ANTI_ENTROPY_INTERVAL)
    sent = sent_to_a(mark)
    assert "HEARTBEAT" in sent and "VV" in sent  # A has not told us its view yet
    # A tells us the very view we hold: in sync, only heartbeats from now on.
    vv = next(
        e.message
        for e in reversed(h.effects)
        if isinstance(e, fx.Send) and e.message["type"] == "VV"
    )
    h.feed(ev.VersionVectorReceived(A, vv["vv"], vv.get("heads", {})))
    mark = len(h.effects)
    h.tick(h.now + 3 * ANTI_ENTROPY_INTERVAL)
    sent = sent_to_a(mark)
    assert sent and set(sent) == {"HEARTBEAT"}
    # A new action changes our view: A gets a version vector at the next swap.
    h.feed(ev.SubmitJob(new_job_payload("j", frames=(1, 2), chunk=2)))
    mark = len(h.effects)
    h.tick(h.now + ANTI_ENTROPY_INTERVAL)
    assert "VV" in sent_to_a(mark)
    # In sync again, and a full swap comes anyway after FULL_ANTI_ENTROPY_EVERY.
    vv = next(
        e.message
        for e in reversed(h.effects)
        if isinstance(e, fx.Send) and e.message["type"] == "VV"
    )
    h.feed(ev.VersionVectorReceived(A, vv["vv"], vv.get("heads", {})))
    mark = len(h.effects)
    h.tick(h.now + FULL_ANTI_ENTROPY_EVERY - ANTI_ENTROPY_INTERVAL)
    assert "VV" not in sent_to_a(mark)
    h.tick(h.now + 2 * ANTI_ENTROPY_INTERVAL)
    assert "VV" in sent_to_a(mark)


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


def test_an_idle_machine_sleeps_until_its_next_heartbeat():
    h = Harness(slots=0)
    h.start_working()
    h.feed(ev.LinkUp(A, "node", "a", "10.0.0.2:7100"))
    deadline = h.machine.next_deadline()
    assert deadline > h.now
    h.tick(deadline)
    assert h.machine.next_deadline() > deadline  # a tick moves it on; no busy loop
