"""Throughput of the ordered log: claim+done pairs folded per second.

Prints JSON. The per-action cost must not grow with the size of the state (no
whole-state copy per action): compare a 1,000-chunk job with a 100,000-chunk one
in the same run. Also measures late arrivals (actions that sort before the tail),
and what signed feeds cost (core/feeds.py): the same history as four nodes emit it
(a signature on the last action of each batch: a CLAIM and its DONE),
checked by an authenticating log, against the plain fold in the same run.

    python benchmarks/bench_log.py
"""

from __future__ import annotations

import json
import time

from peerfarm.core.actions import Action
from peerfarm.core.feeds import GENESIS
from peerfarm.core.log import ActionLog
from peerfarm.security.identity import identity_from_secret

NODES = [f"{i:x}" * 16 for i in range(1, 5)]  # four nodes
BATCH = 1024  # actions per ACTIONS message


def history(chunks: int, pairs: int) -> list[Action]:
    job = {
        "job_id": "bench",
        "name": "bench",
        "renderer": "builtin",
        "renderer_version": "",
        "scene": "{}",
        "files": {},
        "main": "",
        "options": [],
        "padding": 4,
        "frame_start": 1,
        "frame_end": chunks,
        "chunk_size": 1,
        "width": 8,
        "height": 8,
        "output": "/tmp/bench",
        "priority": 0,
    }
    out = [Action("NEW_JOB", job, NODES[0], 1, 1)]
    seqs = {n: 1 if n == NODES[0] else 0 for n in NODES}
    lamport = 1
    for i in range(pairs):
        node = NODES[i % 4]
        lamport += 1
        seqs[node] += 1
        claim_seq = seqs[node]
        out.append(Action("CLAIM_CHUNK", {"job_id": "bench", "chunk": i}, node, claim_seq, lamport))
        lamport += 1
        seqs[node] += 1
        done = {"job_id": "bench", "chunk": i, "claim_seq": claim_seq}
        out.append(Action("DONE", done, node, seqs[node], lamport))
    return out


def signed(actions: list[Action]) -> tuple[list[Action], float]:
    """The history as signed feeds of real identities; and the seconds spent signing."""
    identities = {n: identity_from_secret(i + 1) for i, n in enumerate(NODES)}
    last_seq = {}
    for a in actions:
        last_seq[a.origin] = a.seq
    prev: dict[str, bytes] = {}
    out = []
    signing = 0.0
    for a in actions:
        ident = identities[a.origin]
        feed = a._replace(origin=ident.node_id, prev=prev.get(a.origin, GENESIS))
        if a.seq == 1:
            feed = feed._replace(cert=ident.cert_der)
        digest = feed.hash
        prev[a.origin] = digest
        # A node's batch here is a CLAIM and the DONE after it (and the NEW_JOB).
        if a.type != "CLAIM_CHUNK" or a.seq == last_seq[a.origin]:
            began = time.perf_counter()
            feed = feed._replace(sig=ident.sign(digest))
            signing += time.perf_counter() - began
        out.append(feed)
    return out, signing


def fold_rate(actions: list[Action], authenticate: bool = False) -> float:
    log = ActionLog(authenticate=authenticate)
    start = time.perf_counter()
    for a in actions:
        log.add(a)
    elapsed = time.perf_counter() - start
    assert log.state.jobs["bench"].chunks_done == (len(actions) - 1) // 2
    return (len(actions) - 1) / 2 / elapsed


def batch_rate(actions: list[Action], batch: int) -> float:
    """Signed feeds as a node takes them in ACTIONS messages of ``batch`` actions."""
    log = ActionLog(authenticate=True)
    start = time.perf_counter()
    for i in range(0, len(actions), batch):
        log.add_all(actions[i : i + batch])
    elapsed = time.perf_counter() - start
    assert log.state.jobs["bench"].chunks_done == (len(actions) - 1) // 2
    return (len(actions) - 1) / 2 / elapsed


def late_rate(actions: list[Action]) -> tuple[float, int]:
    """Deliver per node, so other nodes' actions often arrive after later ones."""
    by_node = sorted(actions, key=lambda a: (NODES.index(a.origin), a.seq))
    log = ActionLog()
    start = time.perf_counter()
    for i in range(0, len(by_node), BATCH):  # as a node receives them: ACTIONS batches
        log.add_all(by_node[i : i + BATCH])
    elapsed = time.perf_counter() - start
    return (len(actions) - 1) / 2 / elapsed, log.late_inserts


def main() -> None:
    pairs = 20_000
    plain = history(1_000 if pairs <= 1_000 else pairs, pairs)
    small = fold_rate(plain)
    big = fold_rate(history(100_000, pairs))
    feeds, signing = signed(plain)
    checked = fold_rate(feeds, authenticate=True)  # live: one node's batch at a time
    catch_up = batch_rate(feeds, BATCH)  # a node catching up: anti-entropy batches
    signatures = sum(1 for a in feeds if a.sig)
    late_pairs = 20_000
    late, late_inserts = late_rate(history(late_pairs, late_pairs))
    print(
        json.dumps(
            {
                "benchmark": "ordered_log_fold",
                "pairs": pairs,
                "claim_done_pairs_per_s_job_20k_chunks": round(small),
                "claim_done_pairs_per_s_job_100k_chunks": round(big),
                "ratio_100k_to_20k": round(big / small, 3),
                "late_arrival_pairs": late_pairs,
                "late_arrival_pairs_per_s": round(late),
                "late_inserts": late_inserts,
                "signed_feeds_pairs_per_s": round(checked),
                "ratio_signed_to_plain": round(checked / small, 3),
                "signed_feeds_catch_up_pairs_per_s": round(catch_up),
                "ratio_signed_catch_up_to_plain": round(catch_up / small, 3),
                "signatures": signatures,
                "signing_us_per_signature": round(signing / signatures * 1e6, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
