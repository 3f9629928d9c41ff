"""Requirements and limits of a job, matched against what nodes advertise
(docs/scheduling.md): `--require TAG`, `--require-memory SIZE`, `--max-nodes N` on a
job; `--tag TAG` on a node, and its memory and cores as detected.

Pure: the scheduler asks ``has_room`` (with ``Peer.meets`` and ``able_renderers`` in
core/state.py) before it claims, the reducers settle concurrent claims with it, and
faces show ``why_waiting`` for a job no node may take.
"""

from __future__ import annotations

from collections.abc import Iterable

from peerfarm.core import schema as s
from peerfarm.core.actions import MAX_JOB_TAGS, MAX_MEMORY, MAX_NODE_TAGS, MAX_NODES_LIMIT
from peerfarm.core.refused import Refused
from peerfarm.core.state import ACTIVE, CLAIMED, UP, Job, Peer, State
from peerfarm.core.user_text import parse_bytes


def parse_tag(text: str) -> str:
    """A tag as a user types it (`--tag GPU`) -> its one spelling ("gpu"); Refused with
    what to type when it cannot be a tag."""
    tag = text.strip().lower()
    if s.tag(tag) is not None:
        raise Refused(
            f"tag {text!r}: use 1-32 letters, digits, '_', '.' or '-', starting with a "
            "letter or digit (e.g. gpu, lab2, 64gb)"
        )
    return tag


def parse_tags(texts: Iterable[str], job: bool = False) -> tuple[str, ...]:
    """Several tags (a node's, or with ``job`` a job's requirements) -> sorted, without
    repeats; Refused past the limit."""
    tags = tuple(sorted({parse_tag(t) for t in texts}))
    limit = MAX_JOB_TAGS if job else MAX_NODE_TAGS
    if len(tags) > limit:
        what = "a job requires" if job else "a node has"
        raise Refused(f"{len(tags)} tags: {what} at most {limit}")
    return tags


def parse_memory(text: str) -> int:
    """`--require-memory 16G` -> bytes (16G, 512M, 1.5G, plain bytes)."""
    try:
        memory = parse_bytes(text)
    except Refused:
        raise Refused(
            f"memory {text!r}: expected a size such as 16G, 512M or a number of bytes"
        ) from None
    if not 1 <= memory <= MAX_MEMORY:
        raise Refused(f"memory {text!r}: give a size from 1 byte to {memory_text(MAX_MEMORY)}")
    return memory


def parse_max_nodes(text: str) -> int:
    """`--max-nodes 4` -> 4 (a whole number from 1)."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_NODES_LIMIT:
        raise Refused(f"max nodes {text!r}: give a whole number from 1 to {MAX_NODES_LIMIT:,}")
    return n


def memory_text(n: int) -> str:
    """Bytes as people read a machine's memory: "16 GiB", "512 MiB"."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            value = n / size
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} bytes"


def holders(job: Job) -> frozenset[str]:
    """The nodes rendering the job now: holding a claim of it, or a copy (a backup).
    A walk over its chunks; the reducers keep the same in ``Job.holders`` for a job
    with max_nodes (the simulator checks that they agree)."""
    nodes: set[str] = set()
    for chunk in job.chunks.values():
        if chunk.state == CLAIMED:
            nodes.add(chunk.claim_origin)
            if chunk.backup_origin:
                nodes.add(chunk.backup_origin)
    return frozenset(nodes)


def has_room(job: Job, node_id: str) -> bool:
    """Whether ``node_id`` may start rendering more of the job under its ``max_nodes``:
    a node already rendering it may take more; another only below the limit."""
    if not job.max_nodes:
        return True
    return node_id in job.holders or len(job.holders) < job.max_nodes


def requirement_text(job: Job) -> str:
    """The job's requirements and limit in a few words ("" when it has none)."""
    parts = (
        [_needs_text(job.require, job.require_memory)] if job.require or job.require_memory else []
    )
    if job.max_nodes:
        parts.append(f"at most {job.max_nodes} node{'s' if job.max_nodes != 1 else ''}")
    return ", ".join(parts)


def _needs_text(require: tuple[str, ...], require_memory: int) -> str:
    parts = [f"tag {t}" for t in require]
    if require_memory:
        parts.append(f"{memory_text(require_memory)} of memory")
    return ", ".join(parts)


def why_waiting(state: State, job: Job) -> str:
    """Why no node up may take this active job because of its requirements, in words a
    user can act on ("" when some node may, or the job asks nothing)."""
    if job.state != ACTIVE or not (job.require or job.require_memory):
        return ""
    # Nodes that could render it but for its requirements (a missing renderer is
    # another matter, said elsewhere).
    up = [p for p in state.peers.values() if p.state == UP and p.renders and p.can_render(job)]
    if not up:
        return ""
    return unmet(job.require, job.require_memory, up)


def unmet(require: tuple[str, ...], require_memory: int, nodes: Iterable[Peer]) -> str:
    """Why none of ``nodes`` has every tag of ``require`` and ``require_memory`` bytes
    ("" when one has): "waiting: no node has tag gpu", "waiting: needs 16 GiB of
    memory, the largest node has 8 GiB"."""
    nodes = list(nodes)
    if any(set(require) <= set(p.tags) and p.memory >= require_memory for p in nodes):
        return ""
    if not nodes:
        return "waiting: no node that renders is up"
    reasons = []
    missing = [t for t in require if not any(t in p.tags for p in nodes)]
    if missing:
        reasons.append(f"no node has tag{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    if require_memory:
        largest = max(p.memory for p in nodes)
        if largest < require_memory:
            has = memory_text(largest) if largest else "unknown memory"
            reasons.append(
                f"needs {memory_text(require_memory)} of memory, the largest node has {has}"
            )
    if not reasons:
        # Each requirement is met by some node, but no one node meets them all.
        reasons.append(f"no one node has all of: {_needs_text(require, require_memory)}")
    return "waiting: " + "; ".join(reasons)
