"""Protocol features: what a build speaks beyond its protocol version, so two
releases can share a farm while it is upgraded one machine at a time.

Every node advertises the features it speaks (HELLO and PEER_JOINED). A feature
changes what goes into the replicated log (a new action type, a new field), so
a node uses it only once the farm has *enabled* it: an ENABLE_FEATURE action,
which counts only if, at its place in the total order, every member that is up
advertises the feature (as databases finalise an upgrade once every member runs
the new version). Until then a newer node writes what every member can read, so
the state never diverges between versions; once it is enabled, a node that does
not speak it is refused at the handshake (docs/protocol.md, "Features").
"""

from __future__ import annotations

# PEER_JOINED carries the node's peerfarm version; status shows it per peer.
PEER_VERSIONS = "peer_versions"

# A finished job that its submitter collected has its chunk records summarised
# (core/summary.py): an older build keeps them, and would fold to another digest.
JOB_SUMMARIES = "job_summaries"

KNOWN = frozenset({PEER_VERSIONS, JOB_SUMMARIES})

# The features this build speaks. peer_versions is written but not spoken yet: the
# next release turns it on (tests/test_rolling_upgrade.py plays that release by
# turning it on in a copy of this package).
SPOKEN: frozenset[str] = frozenset({JOB_SUMMARIES})

MAX_FEATURES = 64
MAX_FEATURE_NAME = 32
