"""A whole farm in one process: run a schedule of jobs and faults, heal, check.

A run has two phases. During the *fault phase* the schedule's jobs are
submitted and its faults happen over a lossy, delaying, reordering network.
Then everything heals (partitions end, loss stops, frozen nodes resume,
crashed nodes restart) and the farm runs until it has converged, or until a
generous simulated deadline, which fails the run. Once converged it must stay
quiet for two peer timeouts, and then the invariants are checked.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from dataclasses import dataclass

import msgpack

from peerfarm.core import actions as act
from peerfarm.core.actions import Action
from peerfarm.core.digest import canonical
from peerfarm.core.requirements import holders
from peerfarm.core.state import (
    ACTIVE,
    CANCELLED,
    CHUNK_DONE,
    FAULTY,
    JOB_DONE,
    JOB_FAILED,
    UP,
    Job,
)
from peerfarm.machine import events as ev
from peerfarm.sim.network import EventLoop, Network
from peerfarm.sim.node import PEER_TIMEOUT, SimNode
from peerfarm.sim.schedule import (
    CRASH,
    CRASH_COMPACTING,
    DISK_LOSS,
    EQUIVOCATE,
    FREEZE,
    LOG_DAMAGE,
    PARTITION,
    FaultPlan,
    JobPlan,
    Schedule,
    new_node_id,
    random_schedule,
)

CONVERGE_DEADLINE = 300.0  # simulated s after healing; 2,000 seeds needed <= 31
QUIET_PERIOD = 2 * PEER_TIMEOUT  # long enough for a false "down" to show
LINK_LOST_DELAY = 0.01  # the OS tells peers a killed process's links are closed
RETRY_DELAY = 0.5  # a user whose node is down or frozen tries again
TRACE_TAIL = 60


class SimulationFailure(AssertionError):
    """An invariant broke or the farm did not converge; the message says how to replay it."""

    def __init__(self, seed: int | None, problem: str, context: list[str]) -> None:
        self.seed = seed
        self.problem = problem
        replay = f"\nreplay: python -m peerfarm.sim --seed {seed}" if seed is not None else ""
        body = "\n".join(context)
        super().__init__(f"seed {seed}: {problem}{replay}\n{body}")


@dataclass
class RunResult:
    seed: int | None
    digest: str  # the state digest every node agrees on
    trace: list[str]
    healed_at: float
    converged_at: float
    events: int
    messages: int
    messages_lost: int
    actions: list[tuple[float, int, Action]]  # (time, node index, action) as emitted
    jobs: dict[str, str]  # job id -> final state
    frames_total: int
    frame_renders: int  # renders started, duplicates included
    done_at: dict[str, float] = dataclasses.field(default_factory=dict)  # job -> first seen done
    summarised: int = 0  # finished jobs whose chunk records were summarised (core/summary.py)

    @property
    def trace_digest(self) -> str:
        return hashlib.sha256("\n".join(self.trace).encode()).hexdigest()

    def emitted(self, type_: str, start: float = 0.0, end: float = float("inf")) -> list[Action]:
        return [a for t, _, a in self.actions if a.type == type_ and start <= t <= end]

    def summary(self) -> str:
        states = ", ".join(f"{j} {s}" for j, s in sorted(self.jobs.items()))
        return (
            f"seed {self.seed}: converged at {self.converged_at:.1f} s (healed at "
            f"{self.healed_at:.1f} s); {self.events} events, {self.messages} messages "
            f"({self.messages_lost} dropped), {len(self.actions)} actions; "
            f"{self.frame_renders} frame renders for {self.frames_total} frames; "
            f"jobs: {states} ({self.summarised} summarised); digest {self.digest[:16]}"
        )


class Farm:
    def __init__(self, schedule: Schedule, rng: random.Random, seed: int | None = None) -> None:
        self.schedule = schedule
        self.rng = rng
        self.seed = seed
        self.loop = EventLoop()
        # Healing changes the conditions: work on a copy so the schedule stays as written.
        self.network = Network(self.loop, rng, dataclasses.replace(schedule.network))
        ids = schedule.node_ids
        self._names = {node_id: f"n{i}" for i, node_id in enumerate(ids)}
        self._index = {node_id: i for i, node_id in enumerate(ids)}
        self._peers = {i: [p for p in ids if p != node_id] for i, node_id in enumerate(ids)}
        self.retired: set[str] = set()  # ids of nodes that came back as new incarnations
        # EQUIVOCATE: the second versions a node signed ((origin, seq, signature)), and
        # the ids whose second version reached another node (the farm must prove them).
        self.lies: set[tuple[str, int, bytes]] = set()
        self.liars: set[str] = set()
        self._damaged_at: dict[int, list[float]] = {}  # node index -> when its log lost records
        self.nodes = [
            SimNode(
                self,
                i,
                node_id,
                plan.slots,
                plan.speed,
                schedule.fail_prob,
                plan.hang_after,
                plan.tags,
                plan.memory,
            )
            for i, (node_id, plan) in enumerate(zip(schedule.node_ids, schedule.nodes, strict=True))
        ]
        for node in self.nodes:
            self.network.attach(node)
        self.trace_lines: list[str] = []
        self.actions: list[tuple[float, int, Action]] = []
        self._checked: dict[int, object] = {}
        self.done_at: dict[str, float] = {}  # job id -> when some node first saw it done
        self._healed = False

    # -- services for the nodes -------------------------------------------------------

    def peers_of(self, node: SimNode) -> list[str]:
        return self._peers[node.index]

    def index_of(self, node_id: str) -> int:
        return self._index[node_id]

    def address_of(self, node_id: str) -> str:
        return f"10.0.0.{self._index[node_id] + 1}:7100"

    def new_incarnation(self, node: SimNode) -> str:
        """A node comes back under a new id (its log lost actions others may hold)."""
        old = node.node_id
        new = new_node_id(self.rng)
        self.retired.add(old)
        self._names[new] = node.name
        self._index[new] = node.index
        self.network.detach(old)
        current = [n.node_id if n is not node else new for n in self.nodes]
        self._peers = {n.index: [p for p in current if p != current[n.index]] for n in self.nodes}
        node.node_id = new
        self.network.attach(node)
        return new

    def name_of(self, node_id: str) -> str:
        return self._names.get(node_id, node_id[:8])

    def trace(self, node: SimNode | None, text: str) -> None:
        who = node.name if node is not None else "--"
        self.trace_lines.append(f"{self.loop.now:9.3f} {who:>3} {text}")

    def record(self, node: SimNode, action: Action) -> None:
        self.actions.append((self.loop.now, node.index, action))
        self.trace(node, self._describe(action))

    def violation(self, problem: str) -> None:
        context = self.schedule.describe() + ["trace (last lines):"]
        context += self.trace_lines[-TRACE_TAIL:]
        raise SimulationFailure(self.seed, problem, context)

    def check_running_node(self, node: SimNode) -> None:
        """Checked after every event: counters stay within their totals."""
        state = node.log.state
        if self._checked.get(node.index) is state:
            return
        self._checked[node.index] = state
        for job in state.jobs.values():
            if job.state == JOB_DONE and job.id not in self.done_at:
                self.done_at[job.id] = self.loop.now
            if not 0 <= job.frames_done <= job.frames_total:
                self.violation(
                    f"{node.name}: job {job.id} has {job.frames_done} of "
                    f"{job.frames_total} frames done"
                )
            if not 0 <= job.chunks_done <= job.chunk_total:
                self.violation(
                    f"{node.name}: job {job.id} has {job.chunks_done} of "
                    f"{job.chunk_total} chunks done"
                )
            if job.max_nodes and len(holders(job)) > job.max_nodes:
                self.violation(
                    f"{node.name}: job {job.id} is rendered by {len(holders(job))} nodes, "
                    f"more than its max_nodes {job.max_nodes}"
                )
            if job.max_nodes and set(job.holders) != holders(job):
                self.violation(
                    f"{node.name}: job {job.id} counts {sorted(job.holders)} rendering, its "
                    f"chunks say {sorted(holders(job))}"
                )

    def _describe(self, action: Action) -> str:
        p = action.payload
        if action.type == act.NEW_JOB:
            detail = (
                f"{p['job_id']} frames {p['frame_start']}-{p['frame_end']} chunk {p['chunk_size']}"
            )
        elif action.type == act.CLAIM_CHUNK:
            detail = f"{p['job_id']}/{p['chunk']}{_count(p)}"
        elif action.type in (act.DONE, act.RELEASE_CHUNK, act.CHUNK_FAILED, act.BACKUP_CHUNK):
            detail = f"{p['job_id']}/{p['chunk']}{_count(p)} claim #{p['claim_seq']}"
        elif action.type == act.NODE_SPEED:
            detail = f"{p['renderer']} {p['frame_ms']} ms/frame, start-up {p['startup_ms']} ms"
        elif action.type == act.CHUNK_LOST:
            detail = f"{p['job_id']}/{p['chunk']} held by {self.name_of(p['holder'])}"
        elif action.type == act.PEER_DOWN:
            detail = f"{self.name_of(p['node_id'])} incarnation {p['incarnation']}"
        elif action.type in (act.CANCEL_JOB, act.PAUSE_JOB, act.RESUME_JOB, act.RETRY_JOB):
            detail = p["job_id"]
        elif action.type == act.SET_PRIORITY:
            detail = f"{p['job_id']} to {p['priority']}"
        else:
            detail = ""
        return f"{action.type} {detail} (#{action.seq} L{action.lamport})"

    # -- the run ----------------------------------------------------------------------

    def run(self) -> RunResult:
        s = self.schedule
        loop = self.loop
        for node, plan in zip(self.nodes, s.nodes, strict=True):
            at = self.rng.uniform(0.0, 0.5)  # drawn either way: seeds keep their draws
            loop.call_at(at if plan.start_at is None else plan.start_at, node.start)
        for job in s.jobs:
            loop.call_at(job.at, self._submit, job)
            if job.cancel_at is not None:
                loop.call_at(job.cancel_at, self._cancel, job)
            for control in job.controls:
                loop.call_at(control[0], self._control, job, control)
        for fault in s.faults:
            loop.call_at(fault.at, self._begin, fault)
            if fault.kind == CRASH_COMPACTING:
                continue  # it ends when the crash it arms happens (crash_compacting)
            if fault.duration:
                loop.call_at(fault.at + fault.duration, self._end, fault)
        healed_at = s.heal_at()
        loop.run_until(healed_at)
        self._heal()
        converged_at = self._converge(healed_at + (s.converge_within or CONVERGE_DEADLINE))
        vv = self.nodes[0].log.version_vector()
        loop.run_until(loop.now + QUIET_PERIOD)
        reason = self._not_converged()
        if reason is not None:
            self.violation(f"converged at {converged_at:.1f} s, then diverged: {reason}")
        if self.nodes[0].log.version_vector() != vv:
            self.violation(f"actions were still emitted after convergence at {converged_at:.1f} s")
        self._check_invariants()
        state = self.nodes[0].state
        return RunResult(
            seed=self.seed,
            digest=self.nodes[0].log.digest(),
            trace=self.trace_lines,
            healed_at=healed_at,
            converged_at=converged_at,
            events=loop.events_run,
            messages=self.network.sent,
            messages_lost=self.network.lost,
            actions=self.actions,
            jobs={j.id: j.state for j in state.jobs.values()},
            frames_total=sum(j.frames_total for j in state.jobs.values()),
            frame_renders=sum(j.frame_renders for j in state.jobs.values()),
            done_at=dict(self.done_at),
            summarised=sum(1 for j in state.jobs.values() if j.done_runs),
        )

    def _submit(self, job: JobPlan) -> None:
        node = self.nodes[job.submitter]
        if not node.running or node.frozen:
            self.loop.call_later(RETRY_DELAY, self._submit, job)
            return
        why = node.request(ev.SubmitJob(job.payload()))
        if "own history back" in why:  # its log was damaged: the user tries again
            self.loop.call_later(RETRY_DELAY, self._submit, job)
        elif why:
            self.violation(f"{node.name} refused job {job.job_id}: {why}")

    def _cancel(self, job: JobPlan) -> None:
        node = self.nodes[job.cancel_by]
        if not node.running or node.frozen:
            self.loop.call_later(RETRY_DELAY, self._cancel, job)
            return
        why = node.request(ev.CancelJob(job.job_id))
        if why.startswith("no job") or "own history back" in why:  # not heard of here yet
            self.loop.call_later(RETRY_DELAY, self._cancel, job)
        elif why:
            self.trace(node, f"cancel of {job.job_id} refused: {why}")

    def _control(self, job: JobPlan, control: tuple[float, int, str, int]) -> None:
        _, by, kind, priority = control
        node = self.nodes[by]
        if not node.running or node.frozen:
            self.loop.call_later(RETRY_DELAY, self._control, job, control)
            return
        event = {
            "pause": ev.PauseJob(job.job_id),
            "resume": ev.ResumeJob(job.job_id),
            "retry": ev.RetryJob(job.job_id),
            "priority": ev.SetPriority(job.job_id, priority),
        }[kind]
        why = node.request(event)
        if why.startswith("no job") or "own history back" in why:  # not heard of here yet
            self.loop.call_later(RETRY_DELAY, self._control, job, control)
        elif why:
            self.trace(node, f"{kind} of {job.job_id} refused: {why}")

    def _begin(self, fault: FaultPlan) -> None:
        nodes = [self.nodes[i] for i in fault.nodes]
        if fault.kind in (CRASH, LOG_DAMAGE):
            node = nodes[0]
            if not node.running:
                return
            node.crash()
            if fault.kind == LOG_DAMAGE:
                node.damage_log()
                self._damaged_at.setdefault(node.index, []).append(self.loop.now)
            # The OS closes the dead process's connections; the other ends hear of it
            # if the network between them works.
            for peer in self.network.close_links(node.node_id):
                other = self.nodes[self._index[peer]]
                if other.running and self.network.reachable(peer, node.node_id):
                    other.call_later(LINK_LOST_DELAY, other.link_down, node.node_id)
        elif fault.kind == FREEZE:
            nodes[0].freeze()
        elif fault.kind == PARTITION:
            side, others = self._sides(fault)
            self.network.cut(side, others)
            self.trace(None, f"partition {self._group(side)} | {self._group(others)}")
        elif fault.kind == DISK_LOSS:
            nodes[0].lose_disk()
        elif fault.kind == EQUIVOCATE:
            nodes[0].fool = frozenset(n.node_id for n in nodes[1:])
        elif fault.kind == CRASH_COMPACTING:
            nodes[0].crash_compacting = fault.duration

    def crash_compacting(self, node: SimNode, duration: float) -> None:
        """A node died between writing its snapshot and rewriting its log file."""
        self.trace(node, "crash in the middle of compacting its log")
        plan = FaultPlan(CRASH, self.loop.now, (node.index,), duration)
        self._begin(plan)
        self.loop.call_at(self.loop.now + duration, self._end, plan)

    def _end(self, fault: FaultPlan) -> None:
        node = self.nodes[fault.nodes[0]]
        if fault.kind in (CRASH, LOG_DAMAGE):
            if not node.running:
                node.start()
        elif fault.kind == FREEZE:
            node.unfreeze()
        elif fault.kind == PARTITION:
            side, others = self._sides(fault)
            self.network.mend(side, others)
            self.trace(None, f"partition {self._group(side)} | {self._group(others)} ends")

    def _sides(self, fault: FaultPlan) -> tuple[list[str], list[str]]:
        side = [self.nodes[i].node_id for i in fault.nodes]
        return side, [n.node_id for n in self.nodes if n.node_id not in side]

    def _group(self, ids: list[str]) -> str:
        return ",".join(self.name_of(i) for i in ids)

    def _heal(self) -> None:
        self.trace(None, "heal: no more faults")
        self._healed = True
        for node in self.nodes:
            node.crash_compacting = None  # a crash it armed that has not happened yet
        self.network.heal()
        for node in self.nodes:
            if not node.running:
                node.start()
            elif node.frozen:
                node.unfreeze()

    def _converge(self, deadline: float) -> float:
        while True:
            reason = self._not_converged()
            if reason is None:
                return self.loop.now
            if self.loop.now >= deadline:
                after = deadline - self.schedule.heal_at()
                self.violation(f"no convergence {after:.0f} s after healing: {reason}")
            self.loop.run_until(self.loop.now + 1.0)

    def _not_converged(self) -> str | None:
        """Why the farm has not settled yet, or None once it has."""
        nodes = self.nodes
        for node in nodes:
            if not node.running or node.frozen or not node.working:
                return f"{node.name} is not working yet"
        for node in nodes:
            for peer in self.peers_of(node):
                # A view still lagging behind the fault phase (suspect or down) would
                # act on it next. Once healed, answered probes keep every view "up".
                health = node.peer_health(peer)
                if health != "up":
                    return f"{node.name} sees {self.name_of(peer)} {health}"
        vv, heads = nodes[0].log.version_vector(), nodes[0].log.heads()
        for node in nodes[1:]:
            if node.log.version_vector() != vv or node.log.heads() != heads:
                return f"{node.name} holds other actions than n0"
        state = nodes[0].state
        for peer_id in sorted(state.peers):
            peer_state = state.peers[peer_id].state
            lied = any(lie[0] == peer_id for lie in self.lies)
            if (
                peer_id in self.liars
                and peer_state != FAULTY
                and self._lie_held(peer_id)
                and peer_id not in self.retired
            ):
                # A lie another node took must be found out, everywhere alike (unless
                # every copy of it was lost since, with a log's damage).
                return f"{self.name_of(peer_id)} equivocated but is {peer_state}"
            if lied and peer_state in (FAULTY, UP):
                pass  # proven, or its lie reached nobody for good
            elif peer_state != UP and peer_id not in self.retired:
                return f"{self.name_of(peer_id)} is {peer_state}"
        for plan in self.schedule.jobs:
            job = state.jobs.get(plan.job_id)
            if job is None:
                if self._lost_with_a_log(plan):
                    continue
                return f"job {plan.job_id} is not submitted yet"
            if job.state == ACTIVE:
                return f"job {job.id} is active ({job.frames_done}/{job.frames_total} frames)"
            if job.state == JOB_DONE:
                have = len(self.nodes[plan.submitter].outputs.get(job.id, ()))
                if have != job.frames_total:
                    return f"job {job.id}: {have}/{job.frames_total} frames collected"
        return None

    def _lie_held(self, origin: str) -> bool:
        """Some node holds a second version ``origin`` signed (EQUIVOCATE)."""
        return any(
            node.holds(o, seq, sig)
            for o, seq, sig in self.lies
            if o == origin
            for node in self.nodes
        )

    def _check_summary(self, name: str, job: Job) -> None:
        """A summarised job (core/summary.py) is done and collected, its runs cover every
        chunk in order, and each names a node whose DONE of the job was emitted."""
        if job.state != JOB_DONE or not job.collected:
            self.violation(f"{name}: job {job.id} is summarised but {job.state}, not collected")
        rendered = {
            a.origin
            for _, _, a in self.actions
            if a.type == act.DONE and a.payload["job_id"] == job.id
        }
        at = 0
        for first, count, node in job.done_runs:
            if first != at or count < 1 or node not in rendered:
                self.violation(f"{name}: job {job.id}'s summary {job.done_runs} does not add up")
                return
            at += count
        if at != job.chunk_total:
            self.violation(f"{name}: job {job.id}'s summary covers {at}/{job.chunk_total} chunks")

    def _lost_with_a_log(self, plan: JobPlan) -> bool:
        """A job whose only copy was in a log that lost it: its submitter's log was
        damaged after the submit, before any other node had the NEW_JOB (no node knows
        it now). What a lost disk loses; everything that reached a second node stays."""
        damaged = self._damaged_at.get(plan.submitter, [])
        return any(at >= plan.at for at in damaged) and all(
            plan.job_id not in n.state.jobs for n in self.nodes if n.machine is not None
        )

    def _check_invariants(self) -> None:
        # 5. No seq is used twice: one action per (origin, seq), whatever was lost.
        seen: dict[tuple[str, int], Action] = {}
        for _, _, action in self.actions:
            other = seen.setdefault((action.origin, action.seq), action)
            if other != action:
                self.violation(
                    f"{self.name_of(action.origin)} emitted two actions as #{action.seq}: "
                    f"{other.type} and {action.type}"
                )
        digest = self.nodes[0].log.digest()
        # 3a. The digest is the hash of the state's canonical encoding: the encoding
        # caches (core/digest.py, core/chunk_index.py) must never make two states agree.
        whole = msgpack.packb(canonical(self.nodes[0].log.state), use_bin_type=True)
        if digest != hashlib.sha256(whole).hexdigest():
            self.violation("n0's digest is not the hash of its state's canonical encoding")
        for node in self.nodes:
            # 3. Same actions, same state: every node has the same digest.
            if node.log.digest() != digest:
                self.violation(f"{node.name}'s digest differs from n0's with the same actions")
            jobs = node.state.jobs
            # (What a node compacted is no longer in its log: every action emitted.)
            logged = {(a.type, a.payload.get("job_id")) for _, _, a in self.actions}
            for plan in self.schedule.jobs:
                job = jobs.get(plan.job_id)
                if job is None:
                    if self._lost_with_a_log(plan):
                        continue
                    self.violation(f"{node.name} never heard of job {plan.job_id}")
                # 1. Every job reached a final state it had a reason to reach.
                if job.state == CANCELLED and (act.CANCEL_JOB, job.id) not in logged:
                    self.violation(f"{node.name}: job {job.id} is cancelled without CANCEL_JOB")
                if job.state == JOB_FAILED and (act.CHUNK_FAILED, job.id) not in logged:
                    self.violation(f"{node.name}: job {job.id} failed without a failed render")
                if job.state not in (JOB_DONE, CANCELLED, JOB_FAILED):
                    self.violation(f"{node.name}: job {job.id} ended {job.state}")
                # 2. Each frame done once: the counters match the chunk map.
                done = [i for i, c in job.chunks.items() if c.state == CHUNK_DONE]
                if job.done_runs:  # summarised (core/summary.py): every chunk is done
                    self._check_summary(node.name, job)
                    done = [i for i in range(job.chunk_total) if job.chunk(i).state == CHUNK_DONE]
                frames = sum(len(job.frames_of(i)) for i in done)
                if job.chunks_done != len(done) or job.frames_done != frames:
                    self.violation(
                        f"{node.name}: job {job.id} counts {job.chunks_done} chunks/"
                        f"{job.frames_done} frames done, its chunk map {len(done)}/{frames}"
                    )
                if job.state == JOB_DONE and (
                    job.chunks_done != job.chunk_total or job.frames_done != job.frames_total
                ):
                    self.violation(f"{node.name}: job {job.id} is done with chunks missing")
                # 4. No output lost: the submitter holds every frame of a done job.
                if job.state == JOB_DONE:
                    submitter = self.nodes[plan.submitter]
                    want = set(range(job.frame_start, job.frame_end + 1))
                    if submitter.outputs.get(job.id, set()) != want:
                        self.violation(f"job {job.id}: frames missing at {submitter.name}")


def _count(payload: dict) -> str:
    """How a trace shows a run of chunks: "+N" more after the first."""
    count = payload.get("count", 1)
    return f"+{count - 1}" if count > 1 else ""


def run_seed(
    seed: int,
    log_damage: bool = False,
    equivocation: bool = False,
    compaction_crashes: bool = False,
) -> RunResult:
    """One random schedule and its run, both drawn from ``random.Random(seed)``."""
    rng = random.Random(seed)
    schedule = random_schedule(
        rng,
        log_damage=log_damage,
        equivocation=equivocation,
        compaction_crashes=compaction_crashes,
    )
    return run_schedule(schedule, rng, seed)


def run_schedule(schedule: Schedule, rng: random.Random, seed: int | None = None) -> RunResult:
    farm = Farm(schedule, rng, seed)
    try:
        return farm.run()
    except SimulationFailure:
        raise
    except Exception as exc:  # a crash inside the farm is a finding too: keep the seed
        context = schedule.describe() + farm.trace_lines[-TRACE_TAIL:]
        raise SimulationFailure(seed, f"the simulation raised {exc!r}", context) from exc
