"""Fuzzing the decoders a stranger can reach: framing, messages, actions, scene
archives. Every run is bounded and seeded (the seed is printed; set
PEERFARM_FUZZ_SEED to replay one, PEERFARM_FUZZ_SCALE=10 for a longer run).

Counted cases per CI run: 100,000 mutated wire streams + 10,000 mutated archives
+ 2,200 structure-aware hypothesis examples + 50,000 coverage-guided atheris runs where atheris
installs (Linux x86-64)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from fuzz_targets import (
    archive_case,
    archive_seeds,
    mutate,
    wire_case,
    wire_seeds,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peerfarm.core.actions import PAYLOADS, InvalidAction, validate_action
from peerfarm.wire.framing import encode
from peerfarm.wire.messages import SCHEMAS, MessageError, parse_message

SCALE = int(os.environ.get("PEERFARM_FUZZ_SCALE", "1"))
SEED = int(os.environ.get("PEERFARM_FUZZ_SEED", str(random.SystemRandom().randrange(2**32))))
WIRE_CASES = 100_000 * SCALE
ARCHIVE_CASES = 10_000 * SCALE
ATHERIS_RUNS = 50_000 * SCALE


def _replay_hint(data: bytes) -> str:
    return f"(seed {SEED}; input {data[:200].hex()}{'...' if len(data) > 200 else ''})"


def test_mutated_wire_streams_never_crash_or_change_state():
    rng = random.Random(SEED)
    seeds = wire_seeds()
    applied = 0
    for _ in range(WIRE_CASES):
        data = mutate(rng.choice(seeds), rng, seeds)
        try:
            applied += wire_case(data) > 0
        except Exception as exc:
            raise AssertionError(f"{type(exc).__name__}: {exc} {_replay_hint(data)}") from exc
    print(f"wire fuzz: {WIRE_CASES} cases, seed {SEED}, {applied} applied some valid action")


def test_mutated_archives_are_refused_or_unpacked_inside_their_folder(tmp_path):
    rng = random.Random(SEED)
    seeds = archive_seeds()
    accepted = 0
    for _ in range(ARCHIVE_CASES):
        name, seed = rng.choice(seeds)
        data = mutate(seed, rng, [seed])
        try:
            accepted += archive_case(name, data, tmp_path)
        except Exception as exc:
            raise AssertionError(
                f"{name}: {type(exc).__name__}: {exc} {_replay_hint(data)}"
            ) from exc
    assert not any(tmp_path.iterdir()), "a case left files behind"
    print(f"archive fuzz: {ARCHIVE_CASES} cases, seed {SEED}, {accepted} accepted")


# -- structure-aware: hypothesis builds maps that look like messages and actions --------

_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=20)
    | st.binary(max_size=40)
)
_value = st.recursive(
    _leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _near(fields: list[str]) -> st.SearchStrategy[dict]:
    """Maps with (mostly) the right field names and arbitrary values."""
    names = st.sampled_from(fields) | st.text(max_size=8) if fields else st.text(max_size=8)
    return st.dictionaries(names, _value, max_size=len(fields) + 2)


_message_types = sorted(SCHEMAS)
_action_types = sorted(PAYLOADS)
_FIELDS = [
    "job_id",
    "chunk",
    "claim_seq",
    "frame",
    "node_id",
    "sha",
    "offset",
    "length",
    "data",
    "name",
    "address",
    "protocol",
    "role",
    "cert",
    "nonce",
    "key_id",
    "mac",
    "signature",
    "actions",
    "vv",
    "digest",
    "kwl",
    "job",
    "status",
    "message",
    "code",
    "frame_start",
    "frame_end",
    "chunk_size",
    "width",
    "height",
    "incarnation",
    "holder",
    "error",
    "renderers",
    "slots",
    "renders",
    "files",
    "options",
]


@settings(max_examples=600 * SCALE, deadline=None, suppress_health_check=list(HealthCheck))
@given(kind=st.sampled_from(_message_types) | st.text(max_size=10), body=_near(_FIELDS))
def test_message_like_maps_are_parsed_or_refused(kind, body):
    data = {"type": kind, **body}
    try:
        parse_message(data)
    except MessageError:
        pass
    wire_case(encode(data))


@settings(max_examples=600 * SCALE, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    kind=st.sampled_from(_action_types) | st.text(max_size=10),
    payload=_near(_FIELDS),
    seq=_value | st.integers(min_value=0, max_value=5),
    lamport=_value | st.integers(min_value=0, max_value=5),
)
def test_action_like_maps_are_validated_or_refused(kind, payload, seq, lamport):
    raw = {"type": kind, "payload": payload, "origin": "ab" * 32, "seq": seq, "lamport": lamport}
    try:
        validate_action(raw)
    except InvalidAction:
        pass
    wire_case(encode({"type": "ACTIONS", "actions": [raw]}))


@settings(max_examples=1000 * SCALE, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=2048))
def test_random_bytes_never_crash_the_decoders(data):
    wire_case(data)


# -- coverage-guided: atheris, where it installs ------------------------------------------


def test_atheris_coverage_guided_fuzzing_of_the_wire(tmp_path):
    pytest.importorskip("atheris", reason="atheris has no wheel for this platform")
    script = Path(__file__).with_name("fuzz_atheris.py")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, seed in enumerate(wire_seeds()):
        (corpus / f"seed{i}").write_bytes(seed)
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            f"-runs={ATHERIS_RUNS}",
            f"-seed={SEED % 2**31}",
            "-max_len=4096",
            "-rss_limit_mb=2048",
            f"-artifact_prefix={tmp_path}/",
            str(corpus),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=Path(__file__).parent,
    )
    tail = result.stderr[-3000:]
    assert result.returncode == 0, tail
    assert f"Done {ATHERIS_RUNS} runs" in result.stderr, tail
    print(f"atheris: {ATHERIS_RUNS} runs, seed {SEED % 2**31}: {tail.splitlines()[-1]}")
