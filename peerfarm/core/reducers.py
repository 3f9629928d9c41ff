"""Pure reducers: (state, action) -> new state. No clock, no randomness, no I/O.

Conflicts are settled here, so every node settles them alike: a claim on a
chunk that is not pending at its place in the total order has no effect, a DONE
counts only once, a RELEASE or failure only from the claim that holds the chunk.
An action that makes no sense at its place (unknown job, chunk out of range)
has no effect.
"""

from __future__ import annotations

from collections.abc import Callable

from immutables import Map

from peerfarm.core import actions as a
from peerfarm.core import chunk_index, costs
from peerfarm.core.chunk_order import IN_ORDER
from peerfarm.core.features import JOB_SUMMARIES
from peerfarm.core.requirements import has_room
from peerfarm.core.state import (
    ACTIVE,
    CANCELLED,
    CHUNK_DONE,
    CHUNK_FAILED,
    CLAIMED,
    DOWN,
    FAULTY,
    JOB_DONE,
    JOB_FAILED,
    LEFT,
    MAX_ATTEMPTS,
    MAX_FAILING_NODES,
    PENDING,
    PENDING_CHUNK,
    UP,
    Chunk,
    Job,
    Peer,
    State,
    able_renderers,
)
from peerfarm.core.summary import summarisable, summarise


def reduce(state: State, action: a.Action) -> State:
    return _count_holders(state, _HANDLERS[action.type](state, action), action)


# Actions that change the claims of the run they name, and actions that may change any
# claims of a job (of any job, for a node that is gone).
_RUN_ACTIONS = frozenset({a.CLAIM_CHUNK, a.BACKUP_CHUNK, a.DONE, a.RELEASE_CHUNK, a.CHUNK_FAILED})
_WIDE_ACTIONS = frozenset({a.PEER_LEFT, a.PEER_DOWN, a.EQUIVOCATION, a.RETRY_JOB})


def _count_holders(old: State, new: State, action: a.Action) -> State:
    """Keep ``Job.holders`` of jobs with max_nodes (the nodes rendering them now) in step
    with their chunks, looking only at what the action may have changed: a claim then
    checks the limit without a walk over every chunk."""
    if new is old or (action.type not in _RUN_ACTIONS and action.type not in _WIDE_ACTIONS):
        return new
    if action.type in _RUN_ACTIONS:
        job_id = action.payload["job_id"]
        before, after = old.jobs.get(job_id), new.jobs.get(job_id)
        if after is None or before is None or not after.max_nodes or after is before:
            return new
        first = action.payload["chunk"]
        counts = dict(before.holders)
        for index in range(first, first + action.payload.get("count", 1)):
            for node in _rendering(before.chunk(index)):
                counts[node] = counts.get(node, 0) - 1
            for node in _rendering(after.chunk(index)):
                counts[node] = counts.get(node, 0) + 1
        return _put(new, after._replace(holders=Map({n: c for n, c in counts.items() if c > 0})))
    for job_id, after in new.jobs.items():
        before = old.jobs.get(job_id)
        if after.max_nodes and (before is None or after.chunks is not before.chunks):
            counts: dict[str, int] = {}
            for chunk in after.chunks.values():
                for node in _rendering(chunk):
                    counts[node] = counts.get(node, 0) + 1
            new = _put(new, after._replace(holders=Map(counts)))
    return new


def _rendering(chunk: Chunk) -> tuple[str, ...]:
    """The nodes rendering a chunk now: its claim's, and a copy's."""
    if chunk.state != CLAIMED:
        return ()
    return (
        (chunk.claim_origin, chunk.backup_origin) if chunk.backup_origin else (chunk.claim_origin,)
    )


def _peer_joined(state: State, action: a.Action) -> State:
    p = action.payload
    renderers = tuple(sorted(p["renderers"].items()))
    peer = Peer(
        p["name"],
        p["address"],
        p["slots"],
        p["renders"],
        UP,
        action.seq,
        renderers,
        features=tuple(sorted(set(p.get("features", ())))),
        version=p.get("version", ""),
        tags=tuple(sorted(set(p.get("tags", ())))),
        memory=p.get("memory", 0),
        cores=p.get("cores", 0),
    )
    known = state.peers.get(action.origin)
    if known is not None:
        peer = peer._replace(speeds=known.speeds)  # what it measured still holds
    return state._replace(peers=state.peers.set(action.origin, peer))


def _node_speed(state: State, action: a.Action) -> State:
    peer = state.peers.get(action.origin)
    if peer is None:
        return state  # measured before it announced itself: it sends it again
    p = action.payload
    speeds = [s for s in peer.speeds if s[0] != p["renderer"]]
    speeds.append((p["renderer"], p["frame_ms"], p["startup_ms"]))
    peer = peer._replace(speeds=tuple(sorted(speeds)))
    return state._replace(peers=state.peers.set(action.origin, peer))


def _peer_left(state: State, action: a.Action) -> State:
    return _peer_gone(state, action.origin, LEFT)


def _peer_down(state: State, action: a.Action) -> State:
    node_id = action.payload["node_id"]
    peer = state.peers.get(node_id)
    if peer is None or peer.state != UP or peer.incarnation != action.payload["incarnation"]:
        return state  # already gone, or it rejoined since: the declaration is stale
    return _peer_gone(state, node_id, DOWN)


def _peer_gone(state: State, node_id: str, how: str) -> State:
    """Mark a peer left/down and give its claimed chunks back to the pool."""
    peer = state.peers.get(node_id)
    if peer is not None:
        state = state._replace(peers=state.peers.set(node_id, peer._replace(state=how)))
    jobs = state.jobs
    for job_id, job in state.jobs.items():
        if job.state != ACTIVE:
            continue
        chunks = job.chunks
        for index, chunk in job.chunks.items():
            if chunk.state == CLAIMED and chunk.claim_origin == node_id:
                chunks = chunks.set(index, chunk._replace(state=PENDING))
        if chunks is not job.chunks:
            jobs = jobs.set(job_id, job._replace(chunks=chunks))
    return state._replace(jobs=jobs)


def _new_job(state: State, action: a.Action) -> State:
    p = action.payload
    if p["job_id"] in state.jobs:
        return state  # the first NEW_JOB with this id in the total order wins
    job = Job(
        id=p["job_id"],
        name=p["name"],
        renderer=p["renderer"],
        renderer_version=p["renderer_version"],
        scene=p["scene"],
        files=tuple(sorted((path, f["sha"], f["size"]) for path, f in p["files"].items())),
        main=p["main"],
        options=tuple(p["options"]),
        frame_start=p["frame_start"],
        frame_end=p["frame_end"],
        chunk_size=p["chunk_size"],
        padding=p["padding"],
        width=p["width"],
        height=p["height"],
        output=p["output"],
        priority=p["priority"],
        submitter=action.origin,
        submitted_lamport=action.lamport,
        tiles=p.get("tiles", 1),
        format=p.get("format", "png"),
        video=p.get("video", False),
        fps=p.get("fps", 24),
        order=p.get("order", IN_ORDER),
        supersedes=p.get("supersedes", ""),
        adaptive=p.get("adaptive", False),
        require=tuple(sorted(set(p.get("require", ())))),
        require_memory=p.get("require_memory", 0),
        max_nodes=p.get("max_nodes", 0),
    )
    # A scene rendered before: each frame's cost, learned from those renders.
    content = costs.scene_content(job.renderer, job.scene, job.main, job.files)
    times = state.scenes.get(content)
    job = job._replace(
        content=content, costs=costs.frame_costs(times, job.frame_start, job.frame_end)
    )
    if times is not None:
        state = state._replace(scenes=costs.touch(state.scenes, content, times, action.lamport))
    state = state._replace(jobs=state.jobs.set(job.id, job))
    # A new revision stops the old one in the same step, alike on every node.
    old = state.jobs.get(job.supersedes)
    if old is not None and old.state == ACTIVE:
        state = _put(state, old._replace(state=CANCELLED))
    return state


def _chunk_target(state: State, action: a.Action) -> tuple[Job, Chunk] | None:
    job = state.jobs.get(action.payload["job_id"])
    if job is None or action.payload["chunk"] >= job.chunk_total:
        return None
    return job, job.chunk(action.payload["chunk"])


def _run_of(state: State, action: a.Action) -> tuple[Job, range] | None:
    """The job and the chunks an action names (a run of ``count`` from ``chunk``), or
    None if any of them is out of the job's range."""
    job = state.jobs.get(action.payload["job_id"])
    first = action.payload["chunk"]
    run = range(first, first + action.payload.get("count", 1))
    if job is None or run.stop > job.chunk_total:
        return None
    return job, run


def _put(state: State, job: Job) -> State:
    return state._replace(jobs=state.jobs.set(job.id, job))


def _claim_chunk(state: State, action: a.Action) -> State:
    """A claim wins its whole run or nothing: every chunk of it must be pending."""
    target = _run_of(state, action)
    if target is None:
        return state
    job, run = target
    if job.state != ACTIVE:
        return state
    # A worker claims only what its own fold shows pending, so every claim starts a
    # render, even one that loses a race: count them all, so wasted work is visible.
    frames = len(run) if job.tiles > 1 else len(job.run_frames(run.start, len(run)))
    job = job._replace(frame_renders=job.frame_renders + frames)
    claimer = state.peers.get(action.origin)
    get = job.chunks.get
    if (
        all(get(i, PENDING_CHUNK).state == PENDING for i in run)
        and (claimer is None or claimer.state == UP)
        and _may_take(job, claimer, action.origin)
    ):
        # A node the farm has declared down or gone wins no chunk: its claim would hold
        # the chunk until that node came back, and one that returns as a new incarnation
        # (a new id, see runtime/node.py) never does.
        # (Chunks never claimed before all become one record: a run of thousands of
        # one-frame chunks costs a map update each, not a new record each.)
        first_won = Chunk(CLAIMED, action.origin, action.seq, 1)
        chunks = job.chunks.mutate()
        for i in run:
            chunk = get(i, PENDING_CHUNK)
            if chunk is PENDING_CHUNK:
                chunks[i] = first_won
                continue
            chunks[i] = chunk._replace(
                state=CLAIMED,
                claim_origin=action.origin,
                claim_seq=action.seq,
                epoch=chunk.epoch + 1,
                backup_origin="",
            )
        new = chunks.finish()
        chunk_index.note_run(job.chunks, new, run.start, len(run))
        job = job._replace(chunks=new)
    # else: someone earlier in the total order holds one of them, and this claim loses
    return _put(state, job)


def _may_take(job: Job, claimer: Peer | None, node_id: str) -> bool:
    """A job's requirements and node limit, settled here alike on every node: two nodes
    that each saw room for one more and claimed at once, only the first in the total
    order gets in (docs/scheduling.md). Jobs that ask nothing cost nothing."""
    if not (job.require or job.require_memory or job.max_nodes):
        return True
    if (job.require or job.require_memory) and (claimer is None or not claimer.meets(job)):
        return False  # a node that has not said what it has meets no requirement
    return has_room(job, node_id)


def _backup_chunk(state: State, action: a.Action) -> State:
    """A backup counts if every chunk of the run is held by the claim it names (another
    node's) and has no backup yet: the first backup in the total order wins."""
    target = _run_of(state, action)
    if target is None:
        return state
    job, run = target
    if job.state != ACTIVE:
        return state
    chunks = [job.chunk(i) for i in run]
    if any(
        c.state != CLAIMED
        or c.claim_seq != action.payload["claim_seq"]
        or c.claim_origin in ("", action.origin)
        or c.claim_origin != chunks[0].claim_origin
        or c.backup_origin
        for c in chunks
    ) or not _may_take(job, state.peers.get(action.origin), action.origin):
        return state
    new = job.chunks
    for i, c in zip(run, chunks, strict=True):
        new = new.set(i, c._replace(backup_origin=action.origin))
    # The copy renders these frames again: count them, so wasted work is visible.
    frames = sum(len(job.frames_of(i)) for i in run)
    chunk_index.note_run(job.chunks, new, run.start, len(run))
    return _put(state, job._replace(chunks=new, frame_renders=job.frame_renders + frames))


def _complete_frames(job: Job, index: int) -> int:
    """Frames of chunk ``index`` that are complete with every chunk as ``job`` has them:
    all its frames, or for a tile the one frame once each of its tiles is done."""
    if job.tiles == 1:
        return len(job.frames_of(index))
    return 1 if job.frame_complete(job.frames_of(index).start) else 0


def _what(job: Job, index: int) -> str:
    """How messages name a chunk: "frames 3-4", or "tile 2 of frame 7"."""
    frames = job.frames_of(index)
    if job.tiles > 1:
        return f"tile {job.tile_of(index)} of frame {frames.start}"
    return f"frames {frames.start}-{frames.stop - 1}"


def _holds(chunk: Chunk, action: a.Action) -> bool:
    return (
        chunk.state == CLAIMED
        and chunk.claim_origin == action.origin
        and chunk.claim_seq == action.payload["claim_seq"]
    )


def _done(state: State, action: a.Action) -> State:
    target = _run_of(state, action)
    if target is None:
        return state
    job, run = target
    if job.state == CANCELLED or job.done_runs:
        # A summarised job (core/summary.py) is done: a late DONE counts nothing, and
        # its absent chunk records are done ones, not pending (the loop below reads
        # an absent record as pending).
        return state
    counted = []
    before = job.chunks
    if job.tiles > 1:
        for index in run:
            chunk = job.chunk(index)
            # Fencing: a DONE counts if the chunk is not done yet, even from a claim that
            # was taken away (no wasted work); a second DONE is ignored (nothing counted
            # twice).
            if chunk.state not in (PENDING, CLAIMED):
                continue
            counted.append(index)
            done = chunk._replace(state=CHUNK_DONE, done_by=action.origin)
            job = job._replace(chunks=job.chunks.set(index, done), chunks_done=job.chunks_done + 1)
            job = job._replace(frames_done=job.frames_done + _complete_frames(job, index))
    else:
        # Whole frames: the same rules, the map updated in one go, and one done record
        # per distinct claimed record (a run's chunks mostly share one: _claim_chunk).
        get = job.chunks.get
        chunks = job.chunks.mutate()
        done_of: dict[int, Chunk] = {}
        for index in run:
            chunk = get(index, PENDING_CHUNK)
            if chunk.state not in (PENDING, CLAIMED):
                continue
            counted.append(index)
            done = done_of.get(id(chunk))
            if done is None:
                done = done_of[id(chunk)] = chunk._replace(state=CHUNK_DONE, done_by=action.origin)
            chunks[index] = done
        if counted:
            frames = (
                len(counted) if job.chunk_size == 1 else sum(len(job.frames_of(i)) for i in counted)
            )
            job = job._replace(
                chunks=chunks.finish(),
                chunks_done=job.chunks_done + len(counted),
                frames_done=job.frames_done + frames,
            )
    chunk_index.note_run(before, job.chunks, run.start, len(run))
    if job.state == ACTIVE and job.chunks_done == job.chunk_total:
        job = job._replace(state=JOB_DONE)
    state = _put(state, job)
    frame_ms = action.payload.get("frame_ms")
    if counted and frame_ms and job.tiles == 1 and job.content:
        frames = job.run_frames(run.start, len(run))
        if len(frame_ms) == len(frames):
            # Only the frames this DONE counted for: a late copy's times do not
            # overwrite those of the render that counted.
            kept = {f for i in counted for f in job.frames_of(i)}
            ms = [t if f in kept else 0 for f, t in zip(frames, frame_ms, strict=True)]
            scenes = costs.record(
                state.scenes, job.content, action.origin, frames, ms, action.lamport
            )
            state = state._replace(scenes=scenes)
    return state


def _release_chunk(state: State, action: a.Action) -> State:
    target = _run_of(state, action)
    if target is None:
        return state
    job, run = target
    chunks = job.chunks
    for index in run:
        chunk = job.chunk(index)
        if _holds(chunk, action):
            chunks = chunks.set(index, chunk._replace(state=PENDING))
    if chunks is job.chunks:
        return state
    chunk_index.note_run(job.chunks, chunks, run.start, len(run))
    return _put(state, job._replace(chunks=chunks))


def _chunk_failed(state: State, action: a.Action) -> State:
    """A failed render goes back to the pool for another node; a chunk fails for good
    once it failed on MAX_FAILING_NODES different nodes (or MAX_ATTEMPTS times when no
    other node could take it), and with it the job. A run counts one failure against
    the node (one renderer process failed), and one attempt for each of its chunks."""
    target = _run_of(state, action)
    if target is None:
        return state
    job, run = target
    held = [i for i in run if _holds(job.chunk(i), action)]
    if not held:
        return state
    origin = action.origin
    error = action.payload["error"]
    job = job._replace(failures=job.failures.set(origin, job.failures.get(origin, 0) + 1))
    able = able_renderers(state, job)  # blocklisted nodes are not able
    for index in held:
        chunk = job.chunk(index)
        attempts = chunk.attempts + 1
        failed_on = chunk.failed_on if origin in chunk.failed_on else (*chunk.failed_on, origin)
        chunk = chunk._replace(attempts=attempts, error=error, failed_on=failed_on)
        others = [n for n in able if n not in failed_on]
        may_retry_here = origin in able and attempts < MAX_ATTEMPTS  # when no one else can
        if len(failed_on) < MAX_FAILING_NODES and (others or may_retry_here):
            job = job._replace(chunks=job.chunks.set(index, chunk._replace(state=PENDING)))
            continue
        job = job._replace(chunks=job.chunks.set(index, chunk._replace(state=CHUNK_FAILED)))
        if job.state == ACTIVE:
            job = job._replace(
                state=JOB_FAILED,
                error=f"{_what(job, index)} failed {attempts} times "
                f"on {len(failed_on)} node(s): {error}",
            )
    return _put(state, job)


def _chunk_lost(state: State, action: a.Action) -> State:
    target = _chunk_target(state, action)
    if target is None:
        return state
    job, chunk = target
    if job.state == CANCELLED or chunk.state != CHUNK_DONE:
        return state
    if chunk.done_by != action.payload["holder"]:
        return state  # done again elsewhere since: those frames are fine
    if job.collected:
        return state  # the submitter holds every frame: nothing is lost
    index = action.payload["chunk"]
    job = job._replace(
        chunks=job.chunks.set(index, chunk._replace(state=PENDING, done_by="")),
        chunks_done=job.chunks_done - 1,
        frames_done=job.frames_done - _complete_frames(job, index),  # before the change
        state=ACTIVE if job.state == JOB_DONE else job.state,
    )
    return _put(state, job)


def _cancel_job(state: State, action: a.Action) -> State:
    job = state.jobs.get(action.payload["job_id"])
    if job is None or job.state != ACTIVE:
        return state
    return _put(state, job._replace(state=CANCELLED))


def _pause_job(state: State, action: a.Action) -> State:
    job = state.jobs.get(action.payload["job_id"])
    if job is None or job.state != ACTIVE or job.paused:
        return state
    return _put(state, job._replace(paused=True))


def _resume_job(state: State, action: a.Action) -> State:
    job = state.jobs.get(action.payload["job_id"])
    if job is None or not job.paused:
        return state
    return _put(state, job._replace(paused=False))


def _retry_job(state: State, action: a.Action) -> State:
    """Failed chunks (and chunks waiting after failures) get a clean slate, the job's
    blocklist is forgotten, and a failed job is active again: the user fixed something
    (a missing texture, a node's renderer) and wants the failed frames rendered."""
    job = state.jobs.get(action.payload["job_id"])
    if job is None or job.state not in (ACTIVE, JOB_FAILED):
        return state
    chunks = job.chunks
    for index, chunk in job.chunks.items():
        if chunk.state == CHUNK_FAILED or (chunk.state == PENDING and chunk.failed_on):
            fresh = chunk._replace(state=PENDING, attempts=0, error="", failed_on=())
            chunks = chunks.set(index, fresh)
        elif chunk.state == CLAIMED and job.state == JOB_FAILED:
            # Nodes stop their renders of a job that failed and give the chunks back
            # (machine/worker.py), but that release may sort after the retry, and a
            # holder that left meanwhile never sends one (PEER_DOWN frees only active
            # jobs' claims). A render that finished first still counts (its DONE).
            chunks = chunks.set(index, chunk._replace(state=PENDING))
    if chunks is job.chunks and not job.failures and job.state == ACTIVE:
        return state  # nothing failed: nothing to retry
    job = job._replace(chunks=chunks, failures=Map(), state=ACTIVE, error="")
    return _put(state, job)


def _set_priority(state: State, action: a.Action) -> State:
    job = state.jobs.get(action.payload["job_id"])
    if job is None or job.priority == action.payload["priority"]:
        return state
    return _put(state, job._replace(priority=action.payload["priority"]))


def _job_collected(state: State, action: a.Action) -> State:
    """Only the submitter says it holds the frames, and only of a job that is done."""
    job = state.jobs.get(action.payload["job_id"])
    if job is None or job.collected or job.state != JOB_DONE or action.origin != job.submitter:
        return state
    job = job._replace(collected=True)
    if JOB_SUMMARIES in state.features:
        job = summarise(job)  # no one needs its chunk records now (core/summary.py)
    return _put(state, job)


def _enable_feature(state: State, action: a.Action) -> State:
    """Enabled only if every member that is up advertises the feature here: a member
    that joined before it, and does not speak it, keeps it off (core/features.py)."""
    feature = action.payload["feature"]
    up = [p for p in state.peers.values() if p.state == UP]
    if feature in state.features or not up or any(feature not in p.features for p in up):
        return state
    state = state._replace(features=tuple(sorted((*state.features, feature))))
    if feature == JOB_SUMMARIES:  # jobs collected before: summarised here, alike everywhere
        for job in state.jobs.values():
            if summarisable(job):
                state = _put(state, summarise(job))
    return state


def _equivocation(state: State, action: a.Action) -> State:
    """A node proven faulty (its fork: core/feeds.py) is out of the farm: its claims go
    back to the pool, and it takes no more (the log drops what it sends from the fork)."""
    node_id = action.payload["node_id"]
    peer = state.peers.get(node_id)
    if peer is not None and peer.state == FAULTY:
        return state
    state = _peer_gone(state, node_id, FAULTY)
    if peer is None:  # never joined in this node's view: record it all the same
        faulty = Peer(node_id[:8], "", 0, False, FAULTY)
        state = state._replace(peers=state.peers.set(node_id, faulty))
    return state


_HANDLERS: dict[str, Callable[[State, a.Action], State]] = {
    a.PEER_JOINED: _peer_joined,
    a.PEER_LEFT: _peer_left,
    a.PEER_DOWN: _peer_down,
    a.NEW_JOB: _new_job,
    a.CLAIM_CHUNK: _claim_chunk,
    a.DONE: _done,
    a.RELEASE_CHUNK: _release_chunk,
    a.CHUNK_FAILED: _chunk_failed,
    a.CANCEL_JOB: _cancel_job,
    a.CHUNK_LOST: _chunk_lost,
    a.PAUSE_JOB: _pause_job,
    a.RESUME_JOB: _resume_job,
    a.RETRY_JOB: _retry_job,
    a.SET_PRIORITY: _set_priority,
    a.EQUIVOCATION: _equivocation,
    a.JOB_COLLECTED: _job_collected,
    a.ENABLE_FEATURE: _enable_feature,
    a.NODE_SPEED: _node_speed,
    a.BACKUP_CHUNK: _backup_chunk,
}
assert set(_HANDLERS) == a.ACTION_TYPES
