"""The ordered, replicated action log.

State = fold(reduce, log in (lamport, origin, seq) order). Every node that holds
the same set of actions holds the same state, whatever order and however many
times they arrived:

- ``(origin, seq)`` identifies an action: a seq we already have is a duplicate;
  a seq beyond the next expected one is held back until the gap is filled, so
  the version vector ``{origin: highest gap-free seq}`` is exact.
- An action that sorts before the end of the log (it arrived late) is inserted
  in its place and the tail is re-folded from the nearest checkpoint (a state
  kept every ``CHECKPOINT_EVERY`` positions; states share structure, so a
  checkpoint costs only what changed since the previous one).
- An origin's Lamport time never goes back and moves forward by at most
  ``MAX_LAMPORT_STEP`` per action (``MAX_FIRST_LAMPORT`` for its first): an action
  that breaks this is refused, alike on every node (the rule reads only the action
  and its origin's previous one), so one faulty action cannot use up the farm's
  clock. Our own actions never break it: ``create`` keeps within it, at the cost of
  sorting before actions seen from a faulty member if it must.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from typing import Any

from peerfarm.core.actions import MAX_FIRST_LAMPORT, MAX_LAMPORT, MAX_LAMPORT_STEP, Action
from peerfarm.core.digest import state_digest
from peerfarm.core.reducers import reduce
from peerfarm.core.state import EMPTY_STATE, State

CHECKPOINT_EVERY = 128
MAX_HELD_PER_ORIGIN = 100_000  # beyond this, anti-entropy will bring them again


def _key(action: Action) -> tuple[int, str, int]:
    return action.key


class ActionLog:
    def __init__(self) -> None:
        self._keys: list[tuple[int, str, int]] = []  # sorted, parallel to _actions
        self._actions: list[Action] = []  # in total order
        self._by_origin: dict[str, list[Action]] = {}  # per origin, index = seq - 1
        self._held: dict[str, dict[int, Action]] = {}  # arrived before their predecessors
        self._checkpoints: list[State] = [EMPTY_STATE]  # [i] = state after _actions[: i * K]
        self._state: State = EMPTY_STATE
        self._digest: tuple[State, str] | None = None
        self.lamport = 0  # highest Lamport time seen
        self.late_inserts = 0  # actions that arrived after later ones (for benchmarks)
        self.refused = 0  # actions that broke the Lamport rule (see the module's doc)
        self._batching = False
        self._dirty_from: int | None = None  # in a batch: where the pending re-fold starts

    # -- reading ---------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    def __len__(self) -> int:
        return len(self._actions)

    def actions(self) -> list[Action]:
        """All applied actions in total order (a copy)."""
        return list(self._actions)

    def version_vector(self) -> dict[str, int]:
        return {origin: len(lst) for origin, lst in self._by_origin.items()}

    def next_seq(self, origin: str) -> int:
        return len(self._by_origin.get(origin, ())) + 1

    def missing_for(self, vv: Mapping[str, int]) -> list[Action]:
        """What a peer with version vector ``vv`` lacks, in total order.

        Total order keeps each origin's seqs in order (Lamport time grows with
        seq), and lets the receiver append rather than re-fold.
        """
        out: list[Action] = []
        for origin, lst in self._by_origin.items():
            have = vv.get(origin, 0)
            if len(lst) > have:
                out.extend(lst[max(have, 0) :])
        out.sort(key=_key)
        return out

    def digest(self) -> str:
        if self._digest is None or self._digest[0] is not self._state:
            self._digest = (self._state, state_digest(self._state))
        return self._digest[1]

    def held_count(self) -> int:
        return sum(len(h) for h in self._held.values())

    # -- writing ---------------------------------------------------------------

    def create(self, origin: str, type_: str, payload: dict[str, Any]) -> Action:
        """A new action of ``origin``, next in its seq and after everything seen (as far
        as the Lamport rule lets it: see the module's doc)."""
        own = self._by_origin.get(origin)
        if own:
            last = own[-1].lamport
            lamport = max(min(self.lamport + 1, last + MAX_LAMPORT_STEP, MAX_LAMPORT), last)
        else:
            lamport = min(self.lamport + 1, MAX_FIRST_LAMPORT)
        return Action(type_, payload, origin, self.next_seq(origin), lamport)

    @staticmethod
    def _fits(action: Action, previous: Action | None) -> bool:
        """The Lamport rule: what an origin's next action may carry."""
        if previous is None:
            return action.lamport <= MAX_FIRST_LAMPORT
        return previous.lamport <= action.lamport <= previous.lamport + MAX_LAMPORT_STEP

    def add(self, action: Action) -> list[Action]:
        """Add a validated action; return the actions this applied, in seq order.

        Empty for a duplicate or for an action held back behind a gap; several
        when it fills a gap and releases held successors.
        """
        origin = action.origin
        have = len(self._by_origin.get(origin, ()))
        if action.seq <= have:
            return []
        if action.seq > have + 1:
            held = self._held.setdefault(origin, {})
            if len(held) < MAX_HELD_PER_ORIGIN:
                held.setdefault(action.seq, action)
            return []
        own = self._by_origin.get(origin)
        if not self._fits(action, own[-1] if own else None):
            self.refused += 1
            return []
        applied = [action]
        self._apply(action)
        held = self._held.get(origin)
        while held:
            nxt = held.pop(have + len(applied) + 1, None)
            if nxt is None:
                break
            if not self._fits(nxt, applied[-1]):
                self.refused += 1
                break
            applied.append(nxt)
            self._apply(nxt)
        if held is not None and not held:
            del self._held[origin]
        return applied

    def add_all(self, actions: Iterable[Action]) -> list[Action]:
        """Add a batch; late actions in it cost one re-fold for the whole batch."""
        applied: list[Action] = []
        self._batching = True
        try:
            for action in actions:
                applied.extend(self.add(action))
        finally:
            self._batching = False
            if self._dirty_from is not None:
                dirty, self._dirty_from = self._dirty_from, None
                self._refold(dirty)
        return applied

    def _apply(self, action: Action) -> None:
        self._by_origin.setdefault(action.origin, []).append(action)
        if action.lamport > self.lamport:
            self.lamport = action.lamport
        key = action.key
        if not self._keys or key > self._keys[-1]:
            pos = len(self._keys)
            self._keys.append(key)
            self._actions.append(action)
        else:
            # Late: it goes into its place, and the tail after it must be re-folded.
            self.late_inserts += 1
            pos = bisect.bisect_left(self._keys, key)
            self._keys.insert(pos, key)
            self._actions.insert(pos, action)
        if self._dirty_from is not None:
            self._dirty_from = min(self._dirty_from, pos)
        elif pos == len(self._actions) - 1:
            self._state = reduce(self._state, action)
            if len(self._actions) % CHECKPOINT_EVERY == 0:
                self._checkpoints.append(self._state)
        elif self._batching:
            self._dirty_from = pos
        else:
            self._refold(pos)

    def _refold(self, pos: int) -> None:
        """Re-fold from the checkpoint at or before position ``pos`` to the end."""
        cp = pos // CHECKPOINT_EVERY
        del self._checkpoints[cp + 1 :]
        state = self._checkpoints[cp]
        for i in range(cp * CHECKPOINT_EVERY, len(self._actions)):
            state = reduce(state, self._actions[i])
            if (i + 1) % CHECKPOINT_EVERY == 0:
                self._checkpoints.append(state)
        self._state = state
