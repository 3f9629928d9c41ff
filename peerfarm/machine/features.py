"""The farm-wide feature level: enabling a protocol feature once every member that
is up speaks it (core/features.py), and saying again who we are once a feature
changes what we announce.

Any node may emit ENABLE_FEATURE (several at once is harmless: the reducer takes
the first that counts). It is looked at again whenever the members change.
"""

from __future__ import annotations

import logging

from immutables import Map

from peerfarm.core import actions as act
from peerfarm.core.state import UP
from peerfarm.machine.membership import Membership
from peerfarm.machine.shared import Shared


class FeatureLevel:
    def __init__(self, shared: Shared, membership: Membership) -> None:
        self.shared = shared
        self.membership = membership
        self._peers_seen: Map | None = None
        self._features_seen: tuple[str, ...] = ()

    def react(self) -> None:
        state = self.shared.state
        if state.features != self._features_seen:
            self._features_seen = state.features
            self.membership.announce()  # a feature may add to what we announce
        if state.peers is self._peers_seen:
            return
        self._peers_seen = state.peers
        me = state.peers.get(self.shared.node_id)
        if me is None or me.state != UP:
            return  # not a member yet: our own advertisement is not in the state
        up = [p for p in state.peers.values() if p.state == UP]
        for feature in sorted(self.shared.config.features - set(state.features)):
            if all(feature in p.features for p in up):
                self.shared.note(
                    logging.INFO, f"every member speaks {feature}: enabling it farm-wide"
                )
                self.shared.emit(act.ENABLE_FEATURE, {"feature": feature})
