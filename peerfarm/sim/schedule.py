"""What happens in one simulated run: the nodes, the jobs, the faults.

A schedule is plain data, drawn from the run's random source by
``random_schedule`` or written by hand in a test that targets one fault.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field

from peerfarm.security.identity import Identity, identity_from_secret
from peerfarm.sim.network import NetworkConditions

CRASH = "crash"  # SIGKILL / power cut, then a restart with the same node id
FREEZE = "freeze"  # SIGSTOP, then SIGCONT
PARTITION = "partition"  # the listed nodes cannot talk to the others
DISK_LOSS = "disk_loss"  # the node's rendered frames are gone (it keeps running)
FAULT_KINDS = (CRASH, FREEZE, PARTITION, DISK_LOSS)
# A crash after which the log file has lost its last records (a corrupt record cut
# off with all after it): drawn only when a schedule asks for it (random_schedule's
# log_damage), so the seeds of ordinary schedules stay what they were.
LOG_DAMAGE = "log_damage"
# A faulty member: the first node signs two versions of one action and sends one to the
# other listed nodes, the other to the rest (a copied data folder, or a machine taken
# over). Drawn only when asked (random_schedule's equivocation).
EQUIVOCATE = "equivocate"
# A crash in the middle of compacting the log: the node's next compaction writes the
# snapshot, then the node dies before the log file is rewritten; it restarts after the
# fault's duration. Drawn only when asked (random_schedule's compaction_crashes).
CRASH_COMPACTING = "crash_compacting"


@dataclass(frozen=True)
class NodePlan:
    slots: int  # 0: a node that never renders (like the bootstrap server)
    speed: float = 1.0  # seconds per frame = frame_time * speed * the frame's cost
    # Renders after this many hang (never finish, report nothing); -1: none hang.
    hang_after: int = -1
    # When the node starts for the first time (simulated s; None: in the first 0.5 s): a
    # node that joins a farm running for long.
    start_at: float | None = None
    # What the node advertises (jobs may require them): tags, memory in bytes (0: unknown).
    tags: tuple[str, ...] = ()
    memory: int = 0


@dataclass(frozen=True)
class JobPlan:
    job_id: str
    at: float
    submitter: int  # index of the node the user submits to
    frame_start: int
    frame_end: int
    chunk_size: int
    priority: int = 0
    cancel_at: float | None = None
    cancel_by: int = 0
    # Job controls a user gives: (time, node index, "pause"/"resume"/"retry"/"priority",
    # priority). Written by hand in tests; random_schedule draws none, so every seed
    # keeps the schedule it had.
    controls: tuple[tuple[float, int, str, int], ...] = ()
    # Each frame's relative cost, in frame order (frame_start first); empty: all 1.
    costs: tuple[float, ...] = ()
    # The same scene content as another job's (re-submitted): "" means its own.
    scene: str = ""
    adaptive: bool = False  # runs of frames sized to each node's speed (no --chunk)
    # Requirements and limit (docs/scheduling.md): tags, memory in bytes, nodes at once.
    require: tuple[str, ...] = ()
    require_memory: int = 0
    max_nodes: int = 0

    def cost(self, frame: int) -> float:
        return self.costs[frame - self.frame_start] if self.costs else 1.0

    def payload(self) -> dict[str, object]:
        return {
            "job_id": self.job_id,
            "name": "sim",
            "renderer": "builtin",
            "renderer_version": "",  # any version
            "scene": self.scene or "{}",
            "files": {},  # the built-in renderer's scene travels inline
            "main": "",
            "options": [],
            "frame_start": self.frame_start,
            "frame_end": self.frame_end,
            "chunk_size": self.chunk_size,
            "padding": 4,
            "width": 32,
            "height": 24,
            "output": f"/out/{self.job_id}",
            "priority": self.priority,
            **({"adaptive": True} if self.adaptive else {}),
            **({"require": list(self.require)} if self.require else {}),
            **({"require_memory": self.require_memory} if self.require_memory else {}),
            **({"max_nodes": self.max_nodes} if self.max_nodes else {}),
        }


@dataclass(frozen=True)
class FaultPlan:
    kind: str
    at: float
    nodes: tuple[int, ...]  # the node (or, for a partition, one side of it)
    duration: float = 0.0


@dataclass
class Schedule:
    node_ids: list[str]
    nodes: list[NodePlan]
    jobs: list[JobPlan]
    faults: list[FaultPlan] = field(default_factory=list)
    network: NetworkConditions = field(default_factory=NetworkConditions)
    fail_prob: float = 0.0  # chance that a render fails (CHUNK_FAILED)
    frame_time: float = 0.3  # simulated seconds per frame on a speed-1 node
    fault_end: float = 20.0  # everything heals at max(fault_end, end of the last fault)
    startup: float = 0.0  # a renderer process's start-up (loading the scene), per chunk
    # A render takes its modelled time times a factor drawn from this range.
    render_noise: tuple[float, float] = (0.8, 1.25)
    backups: bool = True  # idle nodes copy the runs expected to finish last
    hung_limit: float = 10.0  # a render this many times past its estimate is stopped
    converge_within: float = 0.0  # simulated s after healing to converge; 0: the default
    # Nodes compact their logs (machine/compaction.py) once this many actions every live
    # member holds are in them (0: never). Low, so that runs this short compact.
    compact_after: int = 32
    # A member down this long no longer holds compaction back: longer than any fault
    # random_schedule draws, so only a test's long outage reaches it.
    compaction_waits_for_down: float = 60.0

    def job(self, job_id: str) -> JobPlan | None:
        return next((j for j in self.jobs if j.job_id == job_id), None)

    def heal_at(self) -> float:
        return max([self.fault_end] + [f.at + f.duration for f in self.faults])

    def describe(self) -> list[str]:
        out = [
            f"nodes: {len(self.nodes)}; frame time {self.frame_time:.2f} s; "
            f"start-up {self.startup:.2f} s per chunk; "
            f"render failure chance {self.fail_prob}; heal at {self.heal_at():.2f} s",
            f"network: loss {self.network.loss}, delay {self.network.min_delay}-"
            f"{self.network.max_delay} s, {self.network.slow_chance:.0%} slow by up to "
            f"{self.network.slow_delay:.2f} s",
        ]
        for i, (nid, n) in enumerate(zip(self.node_ids, self.nodes, strict=True)):
            out.append(f"  n{i} {nid} slots={n.slots} speed={n.speed:.2f}")
        for j in self.jobs:
            cancel = f", cancel by n{j.cancel_by} at {j.cancel_at:.2f}" if j.cancel_at else ""
            adaptive = " adaptive" if j.adaptive else ""
            out.append(
                f"  job {j.job_id} at {j.at:.2f} by n{j.submitter}: frames "
                f"{j.frame_start}-{j.frame_end} chunk {j.chunk_size}{adaptive} "
                f"priority {j.priority}{cancel}"
            )
            for at, by, kind, value in j.controls:
                extra = f" {value}" if kind == "priority" else ""
                out.append(f"    {kind}{extra} by n{by} at {at:.2f}")
        for f in self.faults:
            who = ",".join(f"n{i}" for i in f.nodes)
            out.append(f"  {f.kind} {who} at {f.at:.2f} for {f.duration:.2f} s")
        return out


# Simulated nodes have real identities (their actions are signed feeds, as on a real
# farm), made from the run's random numbers so that every run repeats exactly.
_IDENTITIES: dict[str, Identity] = {}


def new_node_id(rng: random.Random) -> str:
    identity = identity_from_secret(rng.getrandbits(64))
    _IDENTITIES[identity.node_id] = identity
    return identity.node_id


def identity_of(node_id: str) -> Identity:
    """The identity of a simulated node id made by new_node_id."""
    return _IDENTITIES[node_id]


def node_ids(rng: random.Random, count: int) -> list[str]:
    ids: list[str] = []
    while len(ids) < count:
        nid = new_node_id(rng)
        if nid not in ids:
            ids.append(nid)
    return ids


def random_schedule(
    rng: random.Random,
    min_nodes: int = 3,
    max_nodes: int = 6,
    log_damage: bool = False,
    equivocation: bool = False,
    compaction_crashes: bool = False,
) -> Schedule:
    """3-6 nodes, 1-4 jobs, 0-6 faults in the first 15-30 simulated seconds; with
    ``log_damage``, about half the crashes also damage the crashed node's log file;
    with ``equivocation``, a node that submits nothing equivocates once (if there is one:
    a faulty node can no longer ask for lost frames again, so it is never a submitter);
    with ``compaction_crashes``, about half the other crashes happen in the middle of the
    node's next compaction instead."""
    n = rng.randint(min_nodes, max_nodes)
    ids = node_ids(rng, n)
    nodes = [NodePlan(rng.choice((1, 1, 2, 3)), rng.uniform(0.5, 2.0)) for _ in range(n)]
    if n >= 4 and rng.random() < 0.25:
        nodes[0] = NodePlan(0)  # a mirror that submits but never renders
    network = NetworkConditions(
        loss=rng.choice((0.0, 0.0, 0.01, 0.05, 0.2)),
        max_delay=rng.choice((0.002, 0.02, 0.1)),
        slow_chance=rng.choice((0.0, 0.02, 0.1)),
        slow_delay=rng.uniform(0.2, 2.0),
    )
    fault_end = rng.uniform(15.0, 30.0)
    jobs = []
    for _ in range(rng.randint(1, 4)):
        at = rng.uniform(0.0, fault_end * 0.7)
        start = rng.randint(0, 100)
        cancel = rng.random() < 0.15
        jobs.append(
            JobPlan(
                job_id=f"job-{rng.getrandbits(32):08x}",
                at=at,
                submitter=rng.randrange(n),
                frame_start=start,
                frame_end=start + rng.randint(0, 39),
                chunk_size=rng.randint(1, 6),
                priority=rng.choice((0, 0, 0, 1, -1)),
                cancel_at=at + rng.uniform(0.0, 15.0) if cancel else None,
                cancel_by=rng.randrange(n),
            )
        )
    faults = []
    for _ in range(rng.randint(0, 6)):
        kind = rng.choices(FAULT_KINDS, weights=(3, 2, 3, 1))[0]
        at = rng.uniform(0.0, fault_end)
        if kind == PARTITION:
            side = sorted(rng.sample(range(n), rng.randint(1, n - 1)))
            faults.append(FaultPlan(kind, at, tuple(side), rng.uniform(1.0, 12.0)))
        elif kind == CRASH:
            faults.append(FaultPlan(kind, at, (rng.randrange(n),), rng.uniform(0.5, 10.0)))
        elif kind == FREEZE:
            faults.append(FaultPlan(kind, at, (rng.randrange(n),), rng.uniform(0.5, 8.0)))
        else:
            faults.append(FaultPlan(kind, at, (rng.randrange(n),)))
    if log_damage:
        faults = [
            FaultPlan(LOG_DAMAGE, f.at, f.nodes, f.duration)
            if f.kind == CRASH and rng.random() < 0.5
            else f
            for f in faults
        ]
    if compaction_crashes:
        faults = [
            FaultPlan(CRASH_COMPACTING, f.at, f.nodes, f.duration)
            if f.kind == CRASH and rng.random() < 0.5
            else f
            for f in faults
        ]
    if equivocation:
        users = {j.submitter for j in jobs} | {j.cancel_by for j in jobs if j.cancel_at}
        liars = [i for i in range(n) if i not in users]
        if liars:
            liar = rng.choice(liars)
            others = [i for i in range(n) if i != liar]
            fooled = rng.sample(others, rng.randint(1, len(others)))
            at = rng.uniform(1.0, fault_end)
            faults.append(FaultPlan(EQUIVOCATE, at, (liar, *sorted(fooled))))
    # Drawn last, so every other draw of a seed stays what it was: about half the jobs
    # are submitted without --chunk (adaptive runs, core/scheduler.py).
    jobs = [
        dataclasses.replace(j, chunk_size=1, adaptive=True) if rng.random() < 0.5 else j
        for j in jobs
    ]
    return Schedule(
        node_ids=ids,
        nodes=nodes,
        jobs=jobs,
        faults=faults,
        network=network,
        fail_prob=rng.choice((0.0, 0.0, 0.01, 0.05)),
        frame_time=rng.uniform(0.1, 0.6),
        fault_end=fault_end,
    )
