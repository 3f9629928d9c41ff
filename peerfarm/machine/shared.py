"""What every part of the node machine shares: who we are, the log, the time, the output.

The machine's parts (membership, worker, collector) each keep their own view;
they meet here to read the replicated state, emit our own actions and queue
effects. Nothing here does I/O.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from peerfarm.core.actions import Action, InvalidAction, validate_action
from peerfarm.core.log import ActionLog
from peerfarm.core.state import State
from peerfarm.machine import effects as fx
from peerfarm.machine.timing import PEER_TIMEOUT


@dataclass
class MachineConfig:
    node_id: str
    name: str
    address: str  # where peers dial us
    role: str = "node"  # "node" or "bootstrap"
    renders: bool = True  # False: a mirror that never renders (the bootstrap server)
    slots: int = 1
    renderers: dict[str, str] = field(default_factory=dict)  # what we can render: name -> version
    bootstraps: tuple[str, ...] = ()  # bootstrap server addresses to dial
    peer_timeout: float = PEER_TIMEOUT
    # Ids this node had before (it came back as a new incarnation after its log lost
    # actions): jobs submitted under them are still ours to collect.
    former_ids: tuple[str, ...] = ()


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
        self._own: list[dict[str, Any]] = []

    @property
    def state(self) -> State:
        return self.log.state

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
        action = self.log.create(self.node_id, type_, payload)
        wire = action.to_wire()
        validate_action(wire)  # our own bugs must not reach the farm
        self.applied.extend(self.log.add(action))
        self._persist.append(wire)
        self._own.append(wire)
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
        refused = self.log.refused
        applied = self.log.add_all(valid)
        if self.log.refused > refused:
            self.note(
                logging.WARNING,
                f"refused {self.log.refused - refused} action(s) from {source}: their origin's "
                "Lamport clock went back or jumped too far (a faulty member?)",
            )
        if applied:
            self.applied.extend(applied)
            self._persist.extend(a.to_wire() for a in applied)
            self.touch()
        return applied

    def take_effects(self) -> list[fx.Effect]:
        """The effects queued so far, with the actions to persist and broadcast last."""
        effects, self.effects = self.effects, []
        if self._persist:
            effects.append(fx.Persist(tuple(self._persist)))
            self._persist = []
        if self._own:
            effects.append(fx.Broadcast(tuple(self._own)))
            self._own = []
        return effects
