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
- Compaction (``compact``): a prefix of the total order that every live member holds is
  folded into a *base* state and its actions are dropped; each origin keeps only a
  count, its last action and its certificate (so its chain, its Lamport rule and its
  version vector entry go on). ``snapshot`` / ``from_snapshot`` (core/snapshot.py)
  carry the base to disk and to a joining node. An action that arrives later and sorts
  before the base (a member that went down before its last actions reached anyone) is
  folded right after the base.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from peerfarm.core.actions import (
    EQUIVOCATION,
    MAX_FIRST_LAMPORT,
    MAX_LAMPORT,
    MAX_LAMPORT_STEP,
    Action,
)
from peerfarm.core.digest import state_digest
from peerfarm.core.feeds import GENESIS, MAX_CHAIN, PublicKey, key_of, signed_by
from peerfarm.core.reducers import reduce
from peerfarm.core.state import EMPTY_STATE, State

CHECKPOINT_EVERY = 128
# The states after each of the last RECENT_KEPT positions are kept too: a late action
# usually sorts a few places before the end (claims of nodes that crossed on the wire),
# and its re-fold starts right there instead of up to CHECKPOINT_EVERY actions back
# (actions of runs of thousands of chunks cost a fold each).
RECENT_KEPT = 32
MAX_HELD_PER_ORIGIN = 100_000  # beyond this, anti-entropy will bring them again


def _key(action: Action) -> tuple[int, str, int]:
    return action.key


class ActionLog:
    """``authenticate``: accept an origin's actions only as a signed chain (core/feeds.py)
    and find forks. A node's log does; the core's tests fold plain actions without it."""

    def __init__(self, authenticate: bool = False) -> None:
        self.authenticate = authenticate
        self._hashes: dict[str, list[bytes]] = {}  # per origin, parallel to _by_origin
        self._keys_of: dict[str, PublicKey] = {}  # origin -> key, from its first action
        # Chained actions waiting for a signature to cover them, with their hashes.
        self._unsigned: dict[str, list[tuple[Action, bytes]]] = {}
        self._rivals: dict[str, list[tuple[Action, bytes]]] = {}  # a run forking from ours
        self._forked: dict[str, int] = {}  # origin -> its first seq dropped (proven faulty)
        # origin -> (seq, hash) of its last action a fork proof vouches for (see _forget)
        self._vouched: dict[str, tuple[int, bytes]] = {}
        self._also_applied: list[Action] = []  # applied by a fork proof, for add to return
        self._defer: dict[str, int] = {}  # in add_all: each origin's last signed seq in it
        self.forks: list[dict[str, Any]] = []  # EQUIVOCATION payloads found, to be emitted
        # Origins whose chain, as a peer sent it, does not continue ours: the peer holds
        # another version of an earlier action. Our chain goes back to it (see
        # ``chain_tail``), and whichever end holds both versions proves the fork.
        self.diverged: set[str] = set()
        self.unauthentic = 0  # actions refused: not on the origin's chain, or a bad signature
        self._keys: list[tuple[int, str, int]] = []  # sorted, parallel to _actions
        self._actions: list[Action] = []  # in total order
        self._by_origin: dict[str, list[Action]] = {}  # per origin, index = seq - 1
        self._held: dict[str, dict[int, Action]] = {}  # arrived before their predecessors
        self._checkpoints: list[State] = [EMPTY_STATE]  # [i] = state after _actions[: i * K]
        self._state: State = EMPTY_STATE
        self._recent: dict[int, State] = {}  # p -> the state after _actions[:p], p near the end
        self._digest: tuple[State, str] | None = None
        self.lamport = 0  # highest Lamport time seen
        self.late_inserts = 0  # history changed behind the end: late actions, dropped forks
        self._refolded_from: int | None = None  # earliest position re-folded, until taken
        self.refused = 0  # actions that broke the Lamport rule (see the module's doc)
        self._batching = False
        self._dirty_from: int | None = None  # in a batch: where the pending re-fold starts
        # Compaction: what the base (the state _checkpoints[0]) holds of each origin.
        self._base: dict[str, int] = {}  # origin -> its actions folded into the base
        self._base_last: dict[str, Action] = {}  # origin -> its last one in the base
        # ``heads()``, kept while no chain changes: every version vector a node sends or
        # answers asks for it, and an origin all in the base has no hash kept (hashed
        # again each time, it was most of a 32-node farm's CPU).
        self._heads: dict[str, bytes] | None = None
        self._base_certs: dict[str, bytes] = {}  # origin -> its first action's cert
        self.base_key: tuple[int, str, int] | None = None  # the base's last action
        self.base_count = 0  # actions folded into the base, ever
        self.behind_base = 0  # actions that arrived sorting before the base

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
        vv = dict(self._base)
        for origin, lst in self._by_origin.items():
            vv[origin] = vv.get(origin, 0) + len(lst)
        return vv

    def _count(self, origin: str) -> int:
        """How many of the origin's actions we hold (in the base and after it)."""
        return self._base.get(origin, 0) + len(self._by_origin.get(origin, ()))

    def _last(self, origin: str) -> Action | None:
        own = self._by_origin.get(origin)
        return own[-1] if own else self._base_last.get(origin)

    def next_seq(self, origin: str) -> int:
        return self._count(origin) + 1

    def needs_base(self, vv: Mapping[str, int]) -> bool:
        """Whether a peer with version vector ``vv`` lacks actions we folded into the
        base: the log alone cannot bring it up to date, the snapshot can."""
        return any(vv.get(origin, 0) < n for origin, n in self._base.items())

    def missing_for(self, vv: Mapping[str, int]) -> list[Action]:
        """What a peer with version vector ``vv`` lacks, in total order.

        Total order keeps each origin's seqs in order (Lamport time grows with
        seq), and lets the receiver append rather than re-fold.
        """
        out: list[Action] = []
        for origin, lst in self._by_origin.items():
            skip = max(vv.get(origin, 0) - self._base.get(origin, 0), 0)
            if len(lst) > skip:
                out.extend(lst[skip:])
        out.sort(key=_key)
        return out

    def known_digest(self, state: State, digest: str) -> None:
        """The digest of ``state``, known already (a snapshot's, checked)."""
        self._digest = (state, digest)

    def digest(self) -> str:
        if self._digest is None or self._digest[0] is not self._state:
            self._digest = (self._state, state_digest(self._state))
        return self._digest[1]

    def actions_of(self, origin: str) -> list[Action]:
        """The origin's applied actions after the base, in seq order (a copy; the first
        one's seq is ``base_of(origin) + 1``)."""
        return list(self._by_origin.get(origin, ()))

    def base_of(self, origin: str) -> int:
        """How many of the origin's actions the base holds (folded, dropped)."""
        return self._base.get(origin, 0)

    def heads(self) -> dict[str, bytes]:
        """Each origin's last action's hash (its first 8 bytes): two nodes that hold as
        many actions of an origin hold the same ones iff these agree."""
        if self._heads is None:
            origins = dict.fromkeys((*self._base, *self._by_origin))
            self._heads = {origin: self._last_hash(origin)[:8] for origin in origins}
        return dict(self._heads)

    def chain_tail(self, origin: str) -> list[Action]:
        """The origin's last actions (enough to show a recent fork: ``MAX_CHAIN``)."""
        return list(self._by_origin.get(origin, [])[-MAX_CHAIN:])

    def waiting(self) -> list[Action]:
        """Actions taken in but not applied: held behind a gap or waiting for a
        signature (what a new log built from a snapshot is given again)."""
        out = [a for held in self._held.values() for a in held.values()]
        out.extend(a for run in self._unsigned.values() for a, _ in run)
        return sorted(out, key=lambda a: (a.origin, a.seq))

    def held_count(self) -> int:
        return sum(len(h) for h in self._held.values())

    # -- writing ---------------------------------------------------------------

    def create(self, origin: str, type_: str, payload: dict[str, Any], cert: bytes = b"") -> Action:
        """A new action of ``origin``, next in its seq and after everything seen (as far
        as the Lamport rule lets it: see the module's doc), chained to its previous one;
        ``cert`` goes on its first."""
        own = self._last(origin)
        if own is not None:
            last = own.lamport
            lamport = max(min(self.lamport + 1, last + MAX_LAMPORT_STEP, MAX_LAMPORT), last)
            return Action(type_, payload, origin, own.seq + 1, lamport, self._last_hash(origin))
        lamport = min(self.lamport + 1, MAX_FIRST_LAMPORT)
        return Action(type_, payload, origin, 1, lamport, GENESIS, b"", cert)

    def _last_hash(self, origin: str) -> bytes:
        hashes = self._hashes.get(origin)
        if hashes:
            return hashes[-1]
        own = self._last(origin)
        return own.hash if own is not None else GENESIS

    def own_last(self, origin: str, count: int) -> list[Action]:
        """The origin's last ``count`` actions, in seq order."""
        return list(self._by_origin[origin][-count:])

    def sign_last(self, origin: str, sig: bytes) -> Action:
        """Put ``sig`` on the origin's last action (we sign our own as we emit)."""
        own = self._by_origin[origin]
        last = own[-1]
        signed = last._replace(sig=sig)
        own[-1] = signed
        pos = bisect.bisect_left(self._keys, last.key)
        self._actions[pos] = signed
        return signed

    @staticmethod
    def _fits(action: Action, previous: Action | None) -> bool:
        """The Lamport rule: what an origin's next action may carry."""
        if previous is None:
            return action.lamport <= MAX_FIRST_LAMPORT
        return previous.lamport <= action.lamport <= previous.lamport + MAX_LAMPORT_STEP

    def add(self, action: Action, trusted: bool = False) -> list[Action]:
        """Add a validated action; return the actions this applied, in seq order.

        Empty for a duplicate, for an action held back behind a gap, and (when the log
        authenticates) for one waiting for a signature to cover it; several when it
        fills a gap or brings the signature. ``trusted``: our own actions, and our log
        file's (checked before they were written), are applied without a signature.
        """
        origin = action.origin
        forked = self._forked.get(origin)
        if forked is not None and action.seq >= forked:
            return []  # a node proven faulty: nothing more of it from the fork on
        have = self._count(origin)
        if action.seq <= have:
            if self.authenticate and action.seq > self._base.get(origin, 0):
                self._compare(action, trusted)
            return []
        waiting = self._unsigned.get(origin, ())
        expected = have + len(waiting) + 1
        if action.seq < expected:
            # Waiting for a signature already: this copy may bring one.
            return self._signed_copy(action) if action.sig else []
        if action.seq > expected:
            if not self._extends_rival(action):
                held = self._held.setdefault(origin, {})
                if len(held) < MAX_HELD_PER_ORIGIN:
                    held.setdefault(action.seq, action)
            return []
        applied: list[Action] = []
        nxt: Action | None = action
        while nxt is not None:
            if not self._take(nxt, trusted, applied):
                break
            held = self._held.get(origin)
            seq = self._count(origin) + len(self._unsigned.get(origin, ())) + 1
            nxt = held.pop(seq, None) if held else None
        held = self._held.get(origin)
        if held is not None and not held:
            del self._held[origin]
        if self._also_applied:
            applied.extend(self._also_applied)
            self._also_applied.clear()
        return applied

    def _take(self, action: Action, trusted: bool, applied: list[Action]) -> bool:
        """The origin's next action: checked against the chain and the Lamport rule,
        then applied (or kept until a signature covers it). False if refused."""
        origin = action.origin
        waiting = self._unsigned.get(origin)
        if waiting:
            previous, previous_hash = waiting[-1]
        else:
            previous = self._last(origin)
            previous_hash = self._last_hash(origin) if previous is not None else GENESIS
        if not self._fits(action, previous):
            self.refused += 1
            return False
        if not self.authenticate:
            applied.append(action)
            self._apply(action)
            return True
        if action.seq == 1:
            key = key_of(action.cert, origin)
            if key is not None:
                self._keys_of[origin] = key
            elif not trusted:
                self.unauthentic += 1
                return False
        digest = action.hash
        if not trusted:
            if action.prev != previous_hash:
                if not self._extends_rival(action, digest):
                    self.unauthentic += 1
                    if previous is not None:
                        self.diverged.add(origin)
                return False
            key = self._keys_of.get(origin)
            waiting_run = self._unsigned.get(origin, ())
            # A signature that its batch's last one covers need not be checked now (the
            # batch's end checks it, see add_all).
            deferred = (
                bool(action.sig)
                and action.seq < self._defer.get(origin, 0)
                and len(waiting_run) < MAX_CHAIN // 2
            )
            if (
                action.sig
                and not deferred
                and (key is None or not signed_by(key, digest, action.sig))
            ):
                self.unauthentic += 1
                return False
            if (deferred or not action.sig) and self._vouched.get(origin) != (action.seq, digest):
                run = self._unsigned.setdefault(origin, [])
                if len(run) >= MAX_CHAIN:
                    self.unauthentic += 1
                    return False
                run.append((action, digest))
                return True
        self._cover(origin, len(self._unsigned.get(origin, ())), applied)
        applied.append(action)
        self._apply(action, digest)
        return True

    def _cover(self, origin: str, count: int, applied: list[Action]) -> None:
        """Apply the first ``count`` waiting actions of ``origin``: a checked signature
        covers them. Signatures among them were not checked and are not kept (every
        signature a log holds was checked)."""
        run = self._unsigned.get(origin)
        if not run:
            return
        covered, rest = run[:count], run[count:]
        if rest:
            self._unsigned[origin] = rest
        else:
            del self._unsigned[origin]
        for action, digest in covered:
            action = action._replace(sig=b"") if action.sig else action
            applied.append(action)
            self._apply(action, digest)

    def _settle(self, applied: list[Action]) -> None:
        """End of a batch: an origin whose last signature in it did not cover its
        waiting actions (that action was refused) gets its latest waiting signature
        checked instead, so a bad end never holds back what an earlier one signs."""
        for origin in sorted(self._defer):
            run = self._unsigned.get(origin, [])
            for index in range(len(run) - 1, -1, -1):
                action, digest = run[index]
                if not action.sig:
                    continue
                key = self._keys_of.get(origin)
                if key is not None and signed_by(key, digest, action.sig):
                    self._take_signed(origin, index, action, applied)
                else:
                    self.unauthentic += 1
                    self._unsigned[origin] = run[:index]
                    if not run[:index]:
                        del self._unsigned[origin]
                break

    def _signed_copy(self, action: Action) -> list[Action]:
        """A signed copy of an action that waits for a signature: it covers the run up
        to it (a node may sign an action after others got it unsigned: see
        ``sign_held``)."""
        origin = action.origin
        run = self._unsigned[origin]
        index = action.seq - run[0][0].seq
        waiting, digest = run[index]
        key = self._keys_of.get(origin)
        if not waiting.same_as(action) or key is None or not signed_by(key, digest, action.sig):
            return []
        applied: list[Action] = []
        self._take_signed(origin, index, waiting._replace(sig=action.sig), applied)
        return applied

    def _take_signed(self, origin: str, index: int, signed: Action, applied: list[Action]) -> None:
        """The waiting action at ``index`` has a checked signature (``signed`` is it
        with that signature): apply the run up to it."""
        self._cover(origin, index, applied)
        run = self._unsigned.pop(origin)
        digest = run[0][1]
        if len(run) > 1:
            self._unsigned[origin] = run[1:]
        applied.append(signed)
        self._apply(signed, digest)

    def sign_held(self, origin: str, sign: Callable[[bytes], bytes]) -> Action | None:
        """Sign the origin's last action if no signature covers it (we hold its key):
        a node whose log lost the action that signed it comes back under a new id
        (runtime/node.py), and the farm must still be able to take its old actions."""
        own = self._by_origin.get(origin)
        if not own or own[-1].sig:
            return None  # (an action folded into the base was signed: its batch was sent)
        return self.sign_last(origin, sign(self._last_hash(origin)))

    def _compare(self, action: Action, trusted: bool = False) -> None:
        """An action of a seq we hold: the same one, or part of a fork (a run that starts
        where ours does and differs at its first action)."""
        stored = self._by_origin[action.origin][action.seq - 1 - self._base.get(action.origin, 0)]
        if stored.same_as(action):
            if (
                action.sig
                and not stored.sig
                and trusted
                and action.seq == len(self._by_origin[action.origin])
            ):
                self.sign_last(action.origin, action.sig)  # our log file's signed copy
            return
        self.diverged.add(action.origin)  # the sender may need our version to see it too
        if action.prev == stored.prev:
            self._rivals[action.origin] = []  # a fork starts here (a newer one wins)
        self._extends_rival(action)

    def _extends_rival(self, action: Action, digest: bytes | None = None) -> bool:
        """Grow a run that forks from the origin's chain; once a signature of the origin
        ends it, the fork is proven (``forks``). True if the action belonged to it."""
        run = self._rivals.get(action.origin)
        if run is None:
            return False
        if run:
            last, last_hash = run[-1]
            if action.seq != last.seq + 1 or action.prev != last_hash:
                return False
        digest = digest or action.hash
        if len(run) >= MAX_CHAIN:
            del self._rivals[action.origin]
            return False
        run.append((action, digest))
        if action.sig:
            del self._rivals[action.origin]
            key = self._keys_of.get(action.origin)
            if key is not None and signed_by(key, digest, action.sig):
                self._prove_fork(action.origin, [a for a, _ in run])
            else:
                self.unauthentic += 1  # not the origin's: a forgery, not a fork
        return True

    def _prove_fork(self, origin: str, theirs: list[Action]) -> None:
        seq = theirs[0].seq
        own = self._by_origin.get(origin, [])
        first = seq - 1 - self._base.get(origin, 0)
        if first < 0:
            return  # our version is folded into the base: nodes that hold it prove it
        ours = []
        for stored in own[first : first + MAX_CHAIN]:
            ours.append(stored)
            if stored.sig:
                break
        if not ours or not ours[-1].sig or not self._cert_of(origin):
            return  # cannot show it (our run is not signed here): a later fork will do
        if any(a.type == EQUIVOCATION for a in (*ours, *theirs)):
            return  # a proof may not nest one (core/actions.py): the other nodes prove it
        self.forks.append(
            {
                "node_id": origin,
                "seq": seq,
                "cert": self._cert_of(origin),
                "ours": [a.to_wire() for a in ours],
                "theirs": [a.to_wire() for a in theirs],
            }
        )

    def restore(self, actions: Iterable[Action], own: Collection[str] = ()) -> list[Action]:
        """Our log file's actions (checked before they were written): applied without
        checking their signatures again, but for each other origin only up to its last
        signed action. What follows one was covered by a signature our file lost (a cut
        tail) or never had: no peer could check it, so it waits for a signature like a
        peer's unsigned actions (anti-entropy brings the signed copy); applied, it would
        stay ours alone and the farm would never converge. ``own``: ids whose keys we
        hold (this node's, and those it retires now and signs with `sign_held`)."""
        actions = list(actions)
        last_signed: dict[str, int] = {}
        for action in actions:
            if action.sig and action.seq > last_signed.get(action.origin, 0):
                last_signed[action.origin] = action.seq
        checked, unchecked = [], []
        for action in actions:
            if action.origin in own or action.seq <= last_signed.get(action.origin, 0):
                checked.append(action)
            else:
                unchecked.append(action)
        applied = self.add_all(checked, trusted=True)
        if unchecked:
            applied += self.add_all(unchecked)
        return applied

    def add_all(self, actions: Iterable[Action], trusted: bool = False) -> list[Action]:
        """Add a batch; late actions in it cost one re-fold for the whole batch."""
        applied: list[Action] = []
        self._batching = True
        if self.authenticate and not trusted:
            # One signature check per origin and batch: an earlier signature in the
            # batch is covered by the origin's last one (through the chain). Checking
            # ECDSA is most of what a signed feed costs (benchmarks/bench_log.py).
            actions = list(actions)
            for action in actions:
                if action.sig and action.seq > self._defer.get(action.origin, 0):
                    self._defer[action.origin] = action.seq
        try:
            for action in actions:
                applied.extend(self.add(action, trusted))
            if self._defer:
                self._settle(applied)
        finally:
            self._batching = False
            self._defer.clear()
            if self._dirty_from is not None:
                dirty, self._dirty_from = self._dirty_from, None
                self._refold(dirty)
        return applied

    def _apply(self, action: Action, digest: bytes | None = None) -> None:
        self._by_origin.setdefault(action.origin, []).append(action)
        if self.authenticate:
            digest = digest or action.hash
            self._hashes.setdefault(action.origin, []).append(digest)
            if self._heads is not None:
                self._heads[action.origin] = digest[:8]
        else:
            self._heads = None
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
        if self.base_key is not None and key < self.base_key:
            self.behind_base += 1  # folded right after the base (see the module's doc)
        if self._dirty_from is not None:
            self._dirty_from = min(self._dirty_from, pos)
        elif pos == len(self._actions) - 1:
            self._state = reduce(self._state, action)
            if len(self._actions) % CHECKPOINT_EVERY == 0:
                self._checkpoints.append(self._state)
            self._keep_recent(len(self._actions), self._state)
        elif self._batching:
            self._dirty_from = pos
        else:
            self._refold(pos)
        if action.type == EQUIVOCATION:
            proof = action.payload
            self._forget(proof["node_id"], proof["seq"], proof["ours"][0].get("prev", GENESIS))

    def _forget(self, origin: str, seq: int, prev: bytes) -> None:
        """A proven fork: drop the origin's actions from ``seq`` on, and take no more.
        Every node that applies the proof drops the same ones, whatever it held.

        The proof's signed runs both chain from ``prev``, the hash of the origin's
        action ``seq - 1``: they vouch for the chain up to there, which may have no
        signature of its own left (the one that covered it was in the dropped part)."""
        if self._forked.get(origin, seq + 1) <= seq:
            return
        self._forked[origin] = seq
        self._vouched[origin] = (seq - 1, prev)
        waiting = self._unsigned.pop(origin, [])
        for table in (self._held, self._rivals):
            table.pop(origin, None)
        own = self._by_origin.get(origin, [])
        base = self._base.get(origin, 0)
        if base + len(own) < seq:
            # Waiting actions that reach the vouched one are covered now.
            run = [(a, h) for a, h in waiting if a.seq < seq]
            if run and run[-1][1] == prev and run[-1][0].seq == seq - 1:
                for covered, covered_hash in run:
                    self._also_applied.append(covered)
                    self._apply(covered, covered_hash)
            return
        # What the base holds of it stays: a fork inside it cannot be undone here.
        cut = max(seq - 1 - base, 0)
        dropped = {a.key for a in own[cut:]}
        if not dropped:
            return
        self.late_inserts += 1  # history changed behind the end, as a late action changes it
        self._heads = None
        del own[cut:]
        if origin in self._hashes:
            del self._hashes[origin][cut:]
        if not own:  # nothing of it left: as if never heard of (version vectors agree)
            self._by_origin.pop(origin)
            self._hashes.pop(origin, None)
        first = bisect.bisect_left(self._keys, min(dropped))
        kept = [a for a in self._actions[first:] if a.key not in dropped]
        self._actions[first:] = kept
        self._keys[first:] = [a.key for a in kept]
        if self._batching:
            self._dirty_from = first if self._dirty_from is None else min(first, self._dirty_from)
        else:
            self._refold(first)

    def _cert_of(self, origin: str) -> bytes:
        """The certificate on the origin's first action."""
        if origin in self._base_certs:
            return self._base_certs[origin]
        own = self._by_origin.get(origin)
        return own[0].cert if own and own[0].seq == 1 else b""

    # -- compaction ----------------------------------------------------------------

    def foldable(self, vv: Mapping[str, int], limit: tuple[int, str, int] | None = None) -> int:
        """How many leading actions of the total order a version vector ``vv`` covers
        (every member's: the caller gives the minimum) and that sort at or before
        ``limit``: how far ``compact`` may go."""
        count = 0
        for action in self._actions:
            if action.seq > vv.get(action.origin, 0) or (limit is not None and action.key > limit):
                break
            count += 1
        return count

    def hash_at(self, origin: str, seq: int) -> bytes | None:
        """The hash of the origin's action ``seq``, if we hold it after the base (or it
        is the base's last of that origin); None otherwise."""
        base = self._base.get(origin, 0)
        if seq == base and origin in self._base_last:
            return self._base_last[origin].hash
        own = self._by_origin.get(origin)
        index = seq - 1 - base
        if not own or not 0 <= index < len(own):
            return None
        hashes = self._hashes.get(origin)
        return hashes[index] if hashes else own[index].hash

    def last_key(self, origin: str) -> tuple[int, str, int] | None:
        """Where the origin's last action we hold sorts (None: we hold none)."""
        last = self._last(origin)
        return last.key if last is not None else None

    def compact(self, count: int) -> None:
        """Fold the first ``count`` actions of the total order into the base and drop
        them. Nothing else changes: the state, its digest, the version vector and each
        origin's chain stay as they are. (Off a checkpoint, the tail's checkpoints are
        folded again: one reduce per action after the cut.)"""
        if count <= 0 or count > len(self._actions):
            raise ValueError(f"cannot compact {count} of {len(self._actions)} actions")
        assert self._dirty_from is None and not self._batching
        first = count // CHECKPOINT_EVERY
        base = self._checkpoints[first]
        for action in self._actions[first * CHECKPOINT_EVERY : count]:
            base = reduce(base, action)
        prefix = self._actions[:count]
        per_origin: dict[str, int] = {}
        for action in prefix:
            per_origin[action.origin] = per_origin.get(action.origin, 0) + 1
        for origin, n in per_origin.items():
            own = self._by_origin[origin]
            if self._base.get(origin, 0) == 0 and own[0].seq == 1:
                self._base_certs[origin] = own[0].cert
            self._base_last[origin] = own[n - 1]
            self._base[origin] = self._base.get(origin, 0) + n
            del own[:n]
            if origin in self._hashes:
                del self._hashes[origin][:n]
                if not self._hashes[origin]:
                    del self._hashes[origin]
            if not own:
                del self._by_origin[origin]
        self.base_key = prefix[-1].key
        self.base_count += count
        del self._actions[:count]
        del self._keys[:count]
        self._recent = {}
        if count % CHECKPOINT_EVERY == 0:
            del self._checkpoints[:first]
        else:
            self._checkpoints = [base]
            state = base
            for i, action in enumerate(self._actions, 1):
                state = reduce(state, action)
                if i % CHECKPOINT_EVERY == 0:
                    self._checkpoints.append(state)
        if self._refolded_from is not None:
            self._refolded_from = max(self._refolded_from - count, 0)

    @property
    def base_state(self) -> State:
        """The state the base holds (the empty state before any compaction)."""
        return self._checkpoints[0]

    def base_origins(self) -> dict[str, tuple[int, Action, bytes]]:
        """Per origin in the base: its count there, its last action there, its cert."""
        return {
            origin: (n, self._base_last[origin], self._base_certs.get(origin, b""))
            for origin, n in self._base.items()
        }

    @classmethod
    def from_base(
        cls,
        state: State,
        origins: Mapping[str, tuple[int, Action, bytes]],
        base_key: tuple[int, str, int] | None,
        base_count: int,
        forked: Mapping[str, int] = {},
        vouched: Mapping[str, tuple[int, bytes]] = {},
        authenticate: bool = False,
    ) -> ActionLog:
        """A log whose base is ``state`` (a snapshot's, see core/snapshot.py), with no
        actions after it yet."""
        log = cls(authenticate=authenticate)
        log._checkpoints = [state]
        log._state = state
        for origin, (n, last, cert) in origins.items():
            log._base[origin] = n
            log._base_last[origin] = last
            if cert:
                log._base_certs[origin] = cert
                key = key_of(cert, origin)
                if key is not None:
                    log._keys_of[origin] = key
            log.lamport = max(log.lamport, last.lamport)
        log.base_key = base_key
        log.base_count = base_count
        log._forked = dict(forked)
        log._vouched = dict(vouched)
        return log

    def take_refolded(self, limit: int) -> list[Action] | None:
        """The actions re-folded since the last call (from the earliest position a late
        action or a dropped fork changed), or None when they are more than ``limit``:
        what a claim outcome that flipped must be named by. Empty: nothing re-folded."""
        pos, self._refolded_from = self._refolded_from, None
        if pos is None:
            return []
        if len(self._actions) - pos > limit:
            return None
        return self._actions[pos:]

    def vouched(self) -> dict[str, tuple[int, bytes]]:
        """Per node proven faulty: the (seq, hash) of its last action a proof vouches for."""
        return dict(self._vouched)

    def forked(self) -> dict[str, int]:
        """Nodes proven faulty, and the first seq of theirs each node dropped."""
        return dict(self._forked)

    def _keep_recent(self, count: int, state: State) -> None:
        self._recent[count] = state
        self._recent.pop(count - RECENT_KEPT, None)

    def _refold(self, pos: int) -> None:
        """Re-fold from the checkpoint (or recent state) at or before position ``pos``
        to the end."""
        if self._refolded_from is None or pos < self._refolded_from:
            self._refolded_from = pos
        cp = pos // CHECKPOINT_EVERY
        del self._checkpoints[cp + 1 :]
        # States after more than ``pos`` actions folded what is changing now.
        self._recent = {p: st for p, st in self._recent.items() if p <= pos}
        start = max(self._recent, default=0)
        if start > cp * CHECKPOINT_EVERY:
            state = self._recent[start]
        else:
            start, state = cp * CHECKPOINT_EVERY, self._checkpoints[cp]
        end = len(self._actions)
        for i in range(start, end):
            state = reduce(state, self._actions[i])
            if (i + 1) % CHECKPOINT_EVERY == 0:
                self._checkpoints.append(state)
            if i + 1 > end - RECENT_KEPT:
                self._recent[i + 1] = state
        self._state = state
