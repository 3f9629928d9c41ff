"""Signed feeds (core/feeds.py) in the log: nobody can make actions in another node's
name, whoever relays them, and a node that signs two versions of an action is proven
faulty alike on every node."""

from __future__ import annotations

import pytest
from factories import Member, joined_payload, new_job_payload

from peerfarm.core import actions as act
from peerfarm.core.actions import Action, InvalidAction, validate_action
from peerfarm.core.feeds import GENESIS, check_fork_proof
from peerfarm.core.log import ActionLog
from peerfarm.core.state import FAULTY, UP
from peerfarm.security.identity import identity_from_secret

ALICE = identity_from_secret(1)
BOB = identity_from_secret(2)
CAROL = identity_from_secret(3)


def wire(actions: list[Action]) -> list[Action]:
    """As another node gets them: through the wire schema."""
    return [validate_action(a.to_wire()) for a in actions]


def joined(name: str = "m") -> tuple[str, dict]:
    return act.PEER_JOINED, joined_payload(name)


def new_job(job_id: str) -> tuple[str, dict]:
    return act.NEW_JOB, new_job_payload(job_id)


def test_a_signed_feed_is_taken_from_anyone_who_relays_it():
    alice = Member(ALICE)
    actions = wire(alice.emit(joined(), new_job("j1")))
    assert not actions[0].sig and actions[1].sig  # one signature covers the batch
    node = ActionLog(authenticate=True)
    assert node.add_all(actions) == actions
    assert "j1" in node.state.jobs and node.unauthentic == 0
    relayed = ActionLog(authenticate=True)  # the same actions, relayed by a third node
    relayed.add_all(wire(node.actions()))
    assert relayed.digest() == node.digest()


def test_unsigned_actions_wait_for_the_signature_that_covers_them():
    alice = Member(ALICE)
    first, second = wire(alice.emit(joined(), new_job("j1")))
    node = ActionLog(authenticate=True)
    assert node.add(first) == []  # not signed yet: waits
    assert len(node.state.peers) == 0 and node.version_vector() == {}
    assert node.add(second) == [first, second]
    assert node.state.peers[alice.id].state == UP


def test_forged_origin_is_refused():
    """Bob makes a NEW_JOB in Alice's name: with his key, or with hers but altered."""
    alice = Member(ALICE)
    node = ActionLog(authenticate=True)
    node.add_all(wire(alice.emit(joined())))
    # Bob signs an action that says it is Alice's.
    real = alice.log.create(alice.id, act.NEW_JOB, new_job_payload("forged"))
    forged = real._replace(sig=BOB.sign(real.hash))
    assert node.add(validate_action(forged.to_wire())) == []
    # Alice's own signed action, with its payload changed on the way.
    (signed,) = alice.emit(new_job("j1"))
    altered = signed._replace(payload={**signed.payload, "output": "/etc"})
    assert node.add(validate_action(altered.to_wire())) == []
    # A feed that starts with Bob's certificate in Alice's name.
    fake_first = Action(
        act.PEER_JOINED, joined_payload("x"), CAROL.node_id, 1, 1, GENESIS, b"", BOB.cert_der
    )
    fake_first = fake_first._replace(sig=BOB.sign(fake_first.hash))
    assert node.add(validate_action(fake_first.to_wire())) == []
    assert node.unauthentic == 3
    assert set(node.state.jobs) == set() and set(node.state.peers) == {alice.id}
    # Alice's real action still goes in: the forgeries changed nothing.
    assert node.add(validate_action(signed.to_wire())) == [signed]


def _fork(alice: Member) -> tuple[list[Action], list[Action]]:
    """Alice's feed, and a second version of its last action, signed by her too."""
    common = wire(alice.emit(joined(), new_job("j1")))
    (mine,) = alice.emit((act.SET_PRIORITY, {"job_id": "j1", "priority": 5}))
    other = mine._replace(payload={"job_id": "j1", "priority": -5}, sig=b"")
    other = other._replace(sig=ALICE.sign(other.hash))
    return [*common, *wire([mine])], [*common, *wire([other])]


def test_equivocation_is_proven_and_settled_alike_everywhere():
    alice = Member(ALICE)
    one, two = _fork(alice)
    a, b = ActionLog(authenticate=True), ActionLog(authenticate=True)
    a.add_all(one)
    b.add_all(two)
    assert a.state.jobs["j1"].priority == 5 and b.state.jobs["j1"].priority == -5
    # Same counts, other heads: what a VV exchange shows the two nodes.
    assert a.version_vector() == b.version_vector() and a.heads() != b.heads()
    # b shows a its version of Alice's recent actions: a holds both and proves the fork.
    a.add_all(wire(b.chain_tail(alice.id)))
    assert a.diverged == {alice.id}  # a's own version goes back to b in turn
    (proof,) = a.forks
    assert check_fork_proof(proof) is None
    # The proof travels as an action of a's node (Carol here); every node applies it.
    carol = Member(CAROL)
    carol.log.add_all(a.actions(), trusted=True)
    (equivocation,) = carol.emit((act.EQUIVOCATION, proof))
    for log in (a, b):
        log.add_all(wire([*carol.log.actions_of(carol.id)]))
    carol.log.add_all(wire(b.actions()))
    for log in (a, b, carol.log):
        assert log.state.peers[alice.id].state == FAULTY
        assert log.forked() == {alice.id: 3}
        assert "j1" in log.state.jobs and log.state.jobs["j1"].priority == 0  # both dropped
    assert a.digest() == b.digest() == carol.log.digest()
    # The heads a and b showed each other before the proof are not kept past it.
    assert a.heads() == b.heads() == carol.log.heads()
    # Nothing more of Alice's counts from the fork on, whatever version it is.
    later = alice.log.create(alice.id, act.CANCEL_JOB, {"job_id": "j1"})
    later = later._replace(sig=ALICE.sign(later.hash))
    assert a.add(validate_action(later.to_wire())) == []


def test_a_fork_proof_vouches_for_what_came_before_it():
    """A node that holds Alice's last common action unsigned (its signature was on the
    dropped part) takes it once the proof arrives: all nodes end with the same actions."""
    alice = Member(ALICE)
    common = wire(alice.emit(joined()))
    mine = alice.emit(new_job("j1"), (act.SET_PRIORITY, {"job_id": "j1", "priority": 5}))
    other = mine[1]._replace(payload={"job_id": "j1", "priority": -5}, sig=b"")
    other = other._replace(sig=ALICE.sign(other.hash))
    a = ActionLog(authenticate=True)
    a.add_all([*common, *wire(mine), *wire([other])])
    (proof,) = a.forks
    late = ActionLog(authenticate=True)  # got the NEW_JOB without the signed action after it
    late.add_all([*common, *wire(mine[:1])])
    assert "j1" not in late.state.jobs
    carol = Member(CAROL)
    (equivocation,) = wire(carol.emit((act.EQUIVOCATION, proof)))
    for log in (a, late):
        log.add_all(wire(carol.log.actions_of(carol.id)))
    assert "j1" in late.state.jobs and late.digest() == a.digest()


def _proof_of_alices_fork() -> tuple[dict, Member]:
    """The EQUIVOCATION payload a node finds for Alice's fork, and Carol to send it."""
    one, two = _fork(Member(ALICE))
    witness = ActionLog(authenticate=True)
    witness.add_all([*one, *two])
    (proof,) = witness.forks
    return proof, Member(CAROL)


@pytest.mark.parametrize(
    "change, why",
    [
        (lambda p: {**p, "theirs": p["ours"]}, "start with the same action"),
        (lambda p: {**p, "cert": BOB.cert_der}, "certificate is not the node's"),
        (
            lambda p: {**p, "theirs": [{**p["theirs"][0], "sig": BOB.sign(b"x" * 32)}]},
            "does not end with an action the node signed",
        ),
        (lambda p: {**p, "ours": []}, "ours is empty"),
        (lambda p: {**p, "seq": 2}, "not one chain"),
    ],
)
def test_a_false_fork_proof_is_refused(change, why):
    proof, carol = _proof_of_alices_fork()
    raw = carol.log.create(carol.id, act.EQUIVOCATION, change(proof), CAROL.cert_der).to_wire()
    with pytest.raises(InvalidAction, match=why):
        validate_action(raw)


def test_a_proof_does_not_nest_another_proof():
    proof, carol = _proof_of_alices_fork()
    (inner,) = carol.emit((act.EQUIVOCATION, proof))
    nested = {**proof, "ours": [inner.to_wire()]}
    raw = carol.log.create(carol.id, act.EQUIVOCATION, nested).to_wire()
    with pytest.raises(InvalidAction, match="nest"):
        validate_action(raw)


def test_one_signature_check_per_origin_and_message():
    """A message of many actions (a node catching up) is checked through its origin's
    last signature in it; if that one is forged, the latest earlier signature is
    checked instead, so a bad end holds back only what only it would sign."""
    alice = Member(ALICE)
    feed = wire([*alice.emit(joined()), *alice.emit(new_job("j1")), *alice.emit(new_job("j2"))])
    forged_end = feed[:-1] + [feed[-1]._replace(sig=CAROL.sign(feed[-1].hash))]
    node = ActionLog(authenticate=True)
    taken = node.add_all(forged_end)
    assert [a.hash for a in taken] == [a.hash for a in feed[:2]] and node.unauthentic == 1
    assert "j2" not in node.state.jobs
    garbled = ActionLog(authenticate=True)  # a garbled signature the end covers
    taken = garbled.add_all([feed[0]._replace(sig=b"not a signature"), *feed[1:]])
    assert [a.hash for a in taken] == [a.hash for a in feed]
    # Only checked signatures are kept.
    assert [bool(a.sig) for a in garbled.actions_of(alice.id)] == [False, False, True]


def test_a_log_file_cut_after_unsigned_actions_waits_for_their_signature():
    """A node's log file lost the action whose signature covered another origin's last
    ones: restored, they wait for that signature as a peer's would (no other node could
    check them, so holding them applied would keep this node apart from the farm)."""
    alice = Member(ALICE)
    joined_a, job_a = wire(alice.emit(joined(), new_job("j1")))
    first, second = wire(alice.emit(new_job("j2"), new_job("j3")))  # `second` signs both
    bob = Member(BOB)
    own = wire(bob.emit(joined("bob")))  # Bob's own feed: restored whatever it holds
    on_disk = [joined_a, job_a, first, *own]  # the file was cut before `second`

    node = ActionLog(authenticate=True)
    node.restore(on_disk, own={bob.id})
    assert node.version_vector() == {alice.id: 2, bob.id: 1}
    assert "j2" not in node.state.jobs  # waits: nothing signed it in this file
    peer = ActionLog(authenticate=True)  # a peer that never had the cut actions
    peer.add_all([joined_a, job_a, *own])
    assert not node.missing_for(peer.version_vector())  # nothing it could not check
    assert node.add(second) == [first, second]  # anti-entropy brings the signed copy
    assert {"j2", "j3"} <= set(node.state.jobs)

    trusting = ActionLog(authenticate=True)  # what a restore did before: all applied
    trusting.add_all(on_disk, trusted=True)
    assert trusting.version_vector()[alice.id] == 3


@pytest.mark.parametrize("authenticate", [True, False])
def test_heads_follow_every_action_and_outlive_compaction(authenticate):
    """``heads`` is asked for with every version vector a node sends or answers, so it
    is kept between changes: it must still be each origin's last action's hash after
    actions arrive and after they are folded into the base."""
    alice, bob = Member(ALICE), Member(BOB)
    log = ActionLog(authenticate=authenticate)

    def expected() -> dict[str, bytes]:
        return {m.id: m.log.actions_of(m.id)[-1].hash[:8] for m in (alice, bob)}

    log.add_all(wire([*alice.emit(joined("a")), *bob.emit(joined("b"))]))
    assert log.heads() == expected()
    log.add_all(wire(alice.emit(new_job("j1"), new_job("j2"))))
    assert log.heads() == expected()
    log.compact(len(log.actions()))
    assert log.actions() == [] and log.heads() == expected()
    log.add_all(wire(bob.emit(new_job("j3"))))
    assert log.heads() == expected()
    log.heads()[alice.id] = b"changed"  # a caller's copy: the log's own is untouched
    assert log.heads() == expected()
