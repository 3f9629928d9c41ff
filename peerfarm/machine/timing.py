"""The node's timings, in seconds: one place, read by the machine and both drivers.

Failure-detection values follow memberlist's LAN defaults (SWIM probing with
Lifeguard's refinements; see docs/failure-handling.md for what each one does).
"""

# A frozen peer is down about this long after it stops answering (in a farm of up to
# ten; longer in bigger ones): half of it to notice, half as suspicion (probing.py).
PEER_TIMEOUT = 3.0
PROBE_INTERVAL = 1.0  # one peer probed per period (memberlist ProbeInterval)
PROBE_TIMEOUT = 0.5  # no ACK by then: ask others to probe it (memberlist ProbeTimeout)
INDIRECT_PROBES = 3  # peers asked to probe it for us (memberlist IndirectChecks)
SUSPICION_MAX_MULT = 3  # an unconfirmed suspicion lasts this many times the shortest
SUSPICION_CONFIRMATIONS = 2  # independent suspicions that make it the shortest
MAX_AWARENESS = 8  # Lifeguard: a node missing answers stretches its probes up to 9x
GOSSIP_RETRANSMIT_MULT = 4  # an update rides on this x log10(n) messages (memberlist)
GOSSIP_PER_MESSAGE = 8  # updates piggybacked on one probe message at most
ANTI_ENTROPY_INTERVAL = 2.0  # version-vector swap with every linked peer not known in sync
RECONNECT_GRACE = 0.5  # a lost link not re-established within this: the peer is down
# A peer not linked once since this node started: at a lab's 8 am boot, linking every
# pair over TLS on busy machines takes seconds, so its silence means less than a link's.
NEVER_LINKED_TIMEOUT = 10.0
SYNC_TIMEOUT = 3.0  # start working even if no bootstrap server answers
# How far a node's Lamport clock jumps when it starts working without having caught up
# (membership.py): past anything the farm can have done meanwhile.
LAMPORT_JUMP = 2**30
COLLECT_INTERVAL = 1.0  # the collector looks again for frames it could not fetch
# A long run tells the farm the chunks it has finished this often (a DONE of them while
# it renders on): the submitter shows and collects them, and a node that dies loses
# at most this much of a run (worker.py).
FINISHED_TOLD_EVERY = 30.0
ABORT_TIMEOUT = 2.0  # an emergency stop waits this long for the renderers to die
MAX_FETCHES = 8  # frames fetched at once for our own jobs
CHAIN_SHOWN_EVERY = 10.0  # a peer's diverging view of an origin gets our chain this often
COMPACTION_CHECK_EVERY = 10.0  # how often the machine looks whether to compact its log
COMPACT_AFTER = 20_000  # actions the members all hold before the log is compacted
COMPACTION_WAITS_FOR_DOWN = 600.0  # a member down longer no longer holds compaction back

# Kept by the drivers, not the machine: how long a frame fetch may take, how long
# a leaving node waits for its last actions to drain, and how dialing backs off.
FRAME_FETCH_TIMEOUT = 30.0
LEAVE_TIMEOUT = 3.0
MIN_BACKOFF = 0.2
MAX_BACKOFF = 5.0
