"""Protocol features (core/features.py): what a build refuses of a feature it does not
speak, when the farm enables one (every member that is up speaks it, decided in the
fold), and the node machine enabling it. Two real builds in one farm:
tests/test_rolling_upgrade.py."""

from __future__ import annotations

import pytest
from factories import A, B, C, act, joined_payload
from test_machine import Harness

from peerfarm.core.actions import InvalidAction, validate_action
from peerfarm.core.digest import state_digest
from peerfarm.core.features import PEER_VERSIONS, SPOKEN
from peerfarm.core.log import ActionLog
from peerfarm.machine import events as ev


def joined(origin, seq, lamport, features=()):
    payload = joined_payload(origin[:1])
    if features:
        payload["features"] = list(features)
    return act("PEER_JOINED", payload, origin, seq, lamport)


def enable(origin, seq, lamport, feature="x"):
    return act("ENABLE_FEATURE", {"feature": feature}, origin, seq, lamport)


def fold(*actions):
    log = ActionLog()
    for a in actions:
        assert log.add(a), a
    return log.state


def test_this_build_refuses_what_a_feature_it_does_not_speak_adds():
    assert PEER_VERSIONS not in SPOKEN  # the next release speaks it
    wire = joined(A, 1, 1, ["x"]).to_wire()
    validate_action(wire)  # advertising features is for every build
    wire["payload"]["version"] = "9.9"
    with pytest.raises(InvalidAction, match="unexpected field 'version'"):
        validate_action(wire)


def test_a_feature_is_enabled_only_if_every_member_up_speaks_it():
    assert fold(joined(A, 1, 1, ["x"]), joined(B, 1, 2), enable(A, 2, 3)).features == ()
    on = fold(joined(A, 1, 1, ["x"]), joined(B, 1, 2, ["x", "y"]), enable(A, 2, 3))
    assert on.features == ("x",)
    assert state_digest(on) != state_digest(on._replace(features=()))


def test_a_member_that_is_gone_does_not_hold_a_feature_back():
    left = act("PEER_LEFT", {}, B, 2, 3)
    state = fold(joined(A, 1, 1, ["x"]), joined(B, 1, 2), left, enable(A, 2, 4))
    assert state.features == ("x",)


def test_a_member_joining_concurrently_settles_alike_on_every_node():
    """C (an older build) joins concurrently with the enable: where C's PEER_JOINED
    sorts first, the feature stays off; either way every node folds it the same."""
    base = [joined(A, 1, 1, ["x"]), joined(B, 1, 2, ["x"])]
    first = fold(*base, joined(C, 1, 3), enable(A, 2, 4))
    assert first.features == ()
    later = fold(*base, enable(A, 2, 3), joined(C, 1, 4))
    assert later.features == ("x",)
    log = ActionLog()
    for a in reversed([*base, enable(A, 2, 3), joined(C, 1, 4)]):
        log.add(a)
    assert log.state == later  # arrival order does not matter


def test_the_machine_enables_a_feature_once_every_member_speaks_it():
    h = Harness(features=frozenset({"x"}))
    h.start_working()
    assert [a["payload"] for a in h.emitted("ENABLE_FEATURE")] == [{"feature": "x"}]
    h2 = Harness(features=frozenset({"x"}))
    h2.feed(ev.Started())
    h2.feed(ev.LinkUp(B, "node", "b", "10.0.0.3:7100"))
    h2.receive(B, h2.peer_action(B, "PEER_JOINED", joined_payload("b")))  # while catching up
    h2.feed(ev.Heard(B, 2.9), at=2.9)
    h2.tick(3.0)
    assert h2.machine.working and h2.machine.state.peers[B].state == "up"
    assert h2.emitted("ENABLE_FEATURE") == []  # B does not speak it
    upgraded = {**joined_payload("b"), "features": ["x"]}
    h2.receive(B, h2.peer_action(B, "PEER_JOINED", upgraded))  # B came back upgraded
    assert [a["payload"] for a in h2.emitted("ENABLE_FEATURE")] == [{"feature": "x"}]
    assert h2.machine.state.features == ("x",)
    assert h2.machine.status()["features"] == ["x"]
