"""What every part of the node machine shares: who we are, the log, the time, the output.

The machine's parts (membership, worker, collector) each keep their own view;
they meet here to read the replicated state, emit our own actions and queue
effects. Nothing here does I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from peerfarm.core import actions as act
from peerfarm.core.actions import Action, InvalidAction, validate_action
from peerfarm.core.features import SPOKEN
from peerfarm.core.log import ActionLog
from peerfarm.core.state import State
from peerfarm.machine import effects as fx
from peerfarm.machine.timing import COMPACT_AFTER, COMPACTION_WAITS_FOR_DOWN, PEER_TIMEOUT


@dataclass
class MachineConfig:
    node_id: str
    name: str
    address: str  # where peers dial us
    role: str = "node"  # "node" or "bootstrap"
    renders: bool = True  # False: a mirror that never renders (the bootstrap server)
    slots: int = 1
    renderers: dict[str, str] = field(default_factory=dict)  # what we can render: name -> version
    # What this node advertises of itself (jobs may require them, docs/scheduling.md):
    # tags its owner gave it (sorted, checked), total memory in bytes and logical cores
    # as the driver detected them (0: unknown).
    tags: tuple[str, ...] = ()
    memory: int = 0
    cores: int = 0
    bootstraps: tuple[str, ...] = ()  # bootstrap server addresses to dial
    peer_timeout: float = PEER_TIMEOUT
    # Ids this node had before (it came back as a new incarnation after its log lost
    # actions): jobs submitted under them are still ours to collect.
    former_ids: tuple[str, ...] = ()
    # This node's certificate (its SHA-256 is node_id) and how to sign with its key: our
    # actions form a signed feed (core/feeds.py). Without a signer the machine neither
    # signs nor checks signatures (unit tests of the rules).
    cert: bytes = b""
    sign: Callable[[bytes], bytes] | None = None
    # Protocol features this node speaks (core/features.py) and its peerfarm version.
    features: frozenset[str] = SPOKEN
    version: str = ""
    # Idle nodes render copies of the runs expected to finish last (docs/scheduling.md).
    # False only to measure the baseline policy (peerfarm bench schedule).
    backups: bool = True
    # A render running this many times longer than this node's estimate for it is
    # stopped and counted a failure (a hung renderer); 0: never.
    hung_limit: float = 10.0
    # Compact the log (machine/compaction.py) once this many actions every live member
    # holds are in it; 0: never.
    compact_after: int = COMPACT_AFTER
    # A member down in our view for longer than this no longer holds compaction back
    # (machine/compaction.py); it gets the snapshot when it returns.
    compaction_waits_for_down: float = COMPACTION_WAITS_FOR_DOWN


class Shared:
    def __init__(self, config: MachineConfig, log: ActionLog) -> None:
        self.config = config
        self.node_id = config.node_id
        self.log = log
        self.now = 0.0
        self.effects: list[fx.Effect] = []
        self.dirty = False  # something the worker or the collector may act on changed
        self.changes = 0  # bumped by anything a face could show (drivers wake waiters)
        self.stopping = False  # a stop was asked: claim nothing more
        self.applied: list[Action] = []  # since the rules last looked (machine._react)
        self._persist: list[dict[str, Any]] = []
        self._own = 0  # our actions since the effects were last taken (signed then)
        self.faulty = False  # the farm proved this node id signed two different actions

    def _check_faulty(self) -> bool:
        if not self.faulty and self.node_id in self.log.forked():
            self.faulty = True
            self.note(
                logging.ERROR,
                "the farm proved that this node's id signed two different actions: another "
                "machine runs with this node's identity (a copied data folder?). Nothing "
                "this node does counts any more; restart it and it joins as a new node",
            )
        return self.faulty

    @property
    def state(self) -> State:
        return self.log.state

    def feature_on(self, feature: str) -> bool:
        """Whether we may write what a protocol feature adds: we speak it and the farm
        enabled it (every member speaks it; core/features.py)."""
        return feature in self.config.features and feature in self.state.features

    def is_me(self, node_id: str) -> bool:
        """This node, under its id or one it had before."""
        return node_id == self.node_id or node_id in self.config.former_ids

    def out(self, effect: fx.Effect) -> None:
        self.effects.append(effect)

    def note(self, level: int, text: str) -> None:
        self.effects.append(fx.Note(level, text))

    def touch(self) -> None:
        """Something changed that the worker, the collector or a face should see."""
        self.dirty = True
        self.changes += 1

    def emit(self, type_: str, payload: dict[str, Any]) -> Action:
        """Create one of our own actions and apply it now; it is persisted, then
        broadcast, when the current event's effects are taken."""
        action = self.log.create(self.node_id, type_, payload, self.config.cert)
        validate_action(action.to_wire())  # our own bugs must not reach the farm
        if self._check_faulty():
            return action  # the farm takes nothing more of this id (core/feeds.py)
        self.applied.extend(self.log.add(action, trusted=True))
        self._own += 1
        self.touch()
        return action

    def accept(self, raw_actions: list[Any], source: str) -> list[Action]:
        """Validate and apply actions from a peer; invalid ones are dropped with a note,
        the rest of the batch is applied. Returns what was applied."""
        valid: list[Action] = []
        for raw in raw_actions:
            try:
                valid.append(validate_action(raw))
            except InvalidAction as exc:
                self.note(logging.WARNING, f"dropped an invalid action from {source}: {exc}")
        log = self.log
        refused, unauthentic = log.refused, log.unauthentic
        applied = log.add_all(valid)
        if log.refused > refused:
            self.note(
                logging.WARNING,
                f"refused {log.refused - refused} action(s) from {source}: their origin's "
                "Lamport clock went back or jumped too far (a faulty member?)",
            )
        if log.unauthentic > unauthentic:
            self.note(
                logging.WARNING,
                f"refused {log.unauthentic - unauthentic} action(s) from {source}: not on "
                "their origin's signed feed (forged, or altered on the way)",
            )
        if applied:
            self.applied.extend(applied)
            self._persist.extend(a.to_wire() for a in applied)
            self.touch()
        self._report_forks()
        self._check_faulty()
        return applied

    def _report_forks(self) -> None:
        """A fork the log proved: tell the farm, whose every node then drops the same
        actions of that node and counts it faulty (core/feeds.py)."""
        while self.log.forks:
            proof = self.log.forks.pop(0)
            node = proof["node_id"]
            if node in self.log.forked() and self.log.forked()[node] <= proof["seq"]:
                continue  # proven already
            if node == self.node_id:
                # Our own fork (a copy of us runs elsewhere): whatever we emitted now
                # would be past the fork and dropped with it. The nodes that hold both
                # versions prove it.
                self.note(
                    logging.ERROR,
                    f"another machine signed a different action #{proof['seq']} with this "
                    "node's identity (a copied data folder?)",
                )
                continue
            self.note(
                logging.ERROR,
                f"node {node[:12]} signed two different actions as #{proof['seq']}: it is "
                "faulty; the farm drops what it sent from there on and stops counting on it "
                "(rotate the farm key if it was a member's machine taken over)",
            )
            self.emit(act.EQUIVOCATION, proof)

    def persist(self, action: Action) -> None:
        """Write an action to our log file with the next batch (a re-signed one)."""
        self._persist.append(action.to_wire())

    def take_effects(self) -> list[fx.Effect]:
        """The effects queued so far, with the actions to persist and broadcast last."""
        effects, self.effects = self.effects, []
        own: tuple[dict[str, Any], ...] = ()
        if self._own:
            sign = self.config.sign
            actions = self.log.own_last(self.node_id, self._own)
            if sign is not None:  # one signature covers the batch (the feed's chain)
                actions[-1] = self.log.sign_last(self.node_id, sign(actions[-1].hash))
            own = tuple(a.to_wire() for a in actions)
            self._own = 0
        if self._persist or own:
            effects.append(fx.Persist((*self._persist, *own)))
            self._persist = []
        if own:
            effects.append(fx.Broadcast(own))
        return effects
