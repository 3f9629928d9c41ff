"""Log compaction: when to fold a prefix of the log into the base (core/log.py).

The base (core/snapshot.py) replaces the actions it folds: memory and the log file
then hold only the tail. The cut must be a prefix of the total order that no action
can later arrive into, or nodes would fold different histories. The rule, pure like
the rest of the machine, for every member (in the state, not left, not faulty) and
every node we know of (known-worker list, links) that has not reached the state yet:

- a member whose version vector we heard (over any link, however long ago) and whose
  own actions up to it we all hold: everything it emits from then on sorts after
  everything in that vector (its Lamport clock is past them), so the cut may go as far
  as that vector covers (the minimum over such members and us);
- a member we never heard, or that told us of actions of its own we do not hold yet
  (lost on the way, or never sent before it went down): those sort after its last
  action we hold, so the cut stops there; one we hold nothing of stops compaction
  (a node that started alone, no one answering it, stamps its actions early);
- a member down (in our own view) for longer than ``compaction_waits_for_down`` no
  longer holds the cut back. If it returns with actions that reached no one before it
  went down and sort before the cut, they are folded right after the base (core/log.py):
  the one case where nodes whose bases differ may fold them differently.

Then: only from ``compact_after`` actions on (a snapshot costs a write of the state),
looked at every ``COMPACTION_CHECK_EVERY`` seconds, never while a fork is being shown
or proven (its proof must name what it drops).

The driver writes the snapshot, then the log file as the tail (``Compacted``), and
sends the snapshot to a peer whose version vector lacks something of the base
(``SendSnapshot``): a node that joins, or returns after the history it lacks was
compacted, gets the snapshot and then the tail.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from peerfarm.core.snapshot import SnapshotError, log_from_snapshot
from peerfarm.core.state import DOWN, FAULTY, LEFT
from peerfarm.machine import effects as fx
from peerfarm.machine.membership import Membership
from peerfarm.machine.shared import Shared
from peerfarm.machine.timing import COMPACTION_CHECK_EVERY

Key = tuple[int, str, int]


class Compaction:
    def __init__(self, shared: Shared, membership: Membership) -> None:
        self.shared = shared
        self.membership = membership
        self._next_check = 0.0
        # peer -> the last version vector it told us, and its heads (core/log.py heads)
        self._heard: dict[str, tuple[dict[str, int], dict[str, bytes]]] = {}
        self._down_since: dict[str, float] = {}  # member down in our view -> since when

    def next_deadline(self) -> float:
        threshold = self.shared.config.compact_after
        if threshold <= 0 or len(self.shared.log) < threshold:
            return math.inf  # nothing to look at before the log grows past it
        return self._next_check

    def heard(self, peer: str, vv: dict[str, int], heads: dict[str, bytes]) -> None:
        """A peer's version vector: it holds at least this (its log never shrinks; a
        node that lost actions comes back under a new id)."""
        self._heard[peer] = (dict(vv), dict(heads))

    def _same_actions(self, origin: str, count: int, head: bytes | None) -> bool:
        """Whether the peer's first ``count`` actions of ``origin`` are ours (its head
        there is our hash: the chain makes the rest equal). A peer holding another
        version of one (a faulty origin's fork, not proven yet) must not see it folded
        away: the fork could never be proven then."""
        if head is None or count <= self.shared.log.base_of(origin):
            return True  # no heads (a log that does not authenticate), or agreed already
        ours = self.shared.log.hash_at(origin, count)
        return ours is not None and ours[: len(head)] == head

    def cut(self) -> tuple[dict[str, int], Key | None]:
        """How far the log may be compacted: a version vector every member holds, and
        a key no action still to come can sort before (None: no such limit)."""
        shared = self.shared
        log = shared.log
        ours = log.version_vector()
        stable = dict(ours)
        limit: Key | None = None
        now = shared.now
        peers = shared.state.peers
        # Members in the state, and nodes we know of that may not have reached it yet: a
        # node that started alone (no one answered it) emits with an early clock.
        known = set(peers) | set(self.membership.kwl) | set(self._heard)
        for peer_id in sorted(known):
            peer = peers.get(peer_id)
            if peer_id == shared.node_id or (peer is not None and peer.state in (LEFT, FAULTY)):
                continue
            down = peer is not None and peer.state == DOWN
            if down or self.membership.health(peer_id) == "down":
                since = self._down_since.setdefault(peer_id, now)
                if now - since > shared.config.compaction_waits_for_down:
                    continue
            else:
                self._down_since.pop(peer_id, None)
            heard = self._heard.get(peer_id)
            if heard is not None and heard[0].get(peer_id, 0) <= ours.get(peer_id, 0):
                theirs, heads = heard
                for origin, n in stable.items():
                    count = theirs.get(origin, 0)
                    if self._same_actions(origin, count, heads.get(origin)):
                        stable[origin] = min(n, count)
                    else:
                        stable[origin] = min(n, log.base_of(origin))
                continue
            last = log.last_key(peer_id)
            if last is None:
                return {}, None  # a node we hold nothing of: nothing is safe yet
            limit = last if limit is None else min(limit, last)
        return stable, limit

    def tick(self) -> None:
        shared = self.shared
        threshold = shared.config.compact_after
        if threshold <= 0 or shared.now < self._next_check:
            return
        self._next_check = shared.now + COMPACTION_CHECK_EVERY
        log = shared.log
        if len(log) < threshold or log.diverged or log.forks:
            return
        stable, limit = self.cut()
        count = log.foldable(stable, limit)
        if count < threshold:
            return
        log.compact(count)
        shared.out(fx.Compacted(count))
        shared.note(
            logging.INFO,
            f"compacted the log: {count} actions folded into the snapshot "
            f"({log.base_count} in all), {len(log)} after it",
        )

    def received(self, peer: str, snapshot: dict[str, Any]) -> None:
        """A peer's snapshot: take it as our base if it holds actions we lack and holds
        everything our own base does; then what we held after our base goes on top
        (duplicates drop out), and the tail comes from the peer as actions."""
        shared = self.shared
        old = shared.log
        try:
            theirs = {row[0]: int(row[1]) for row in snapshot["origins"]}
        except (KeyError, TypeError, ValueError, IndexError):
            theirs = {}
        ours = old.version_vector()
        if all(theirs.get(o, 0) <= ours.get(o, 0) for o in theirs):
            return  # nothing we lack (an older one, sent before our last swap)
        if any(theirs.get(o, 0) < old.base_of(o) for o in ours):
            return  # ours folded something theirs did not: two bases do not merge
        try:
            new = log_from_snapshot(snapshot, authenticate=old.authenticate)
        except SnapshotError as exc:
            shared.note(logging.WARNING, f"ignored a snapshot from {peer[:8]}: {exc}")
            return
        new.add_all(old.actions(), trusted=True)
        new.add_all(old.waiting())
        shared.log = new
        shared.out(fx.Compacted(new.base_count - old.base_count))
        shared.note(
            logging.INFO,
            f"took a snapshot from {peer[:8]}: {new.base_count} actions folded into it, "
            f"{len(new)} after it (digest {new.digest()[:12]})",
        )
        shared.touch()
        self.membership.check_synced()
