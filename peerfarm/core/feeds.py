"""Each node's actions form a signed, append-only feed (as Secure Scuttlebutt's do).

- An action names the hash of its origin's previous action (``prev``), so an origin's
  actions form a chain; its first carries the origin's certificate (``cert``), whose
  SHA-256 is the origin's node id: a feed proves whose it is from its first action.
- The origin signs an action's hash (``sig``) at least at the end of every batch it
  emits; a signature covers the action and, through the chain, every action before
  it. A node accepts an action only once a signature covers it, whoever relayed it:
  nobody can make actions in another node's name.
- Two different actions that both chain to signed heads at one ``(origin, seq)`` are a
  fork: proof that their origin is faulty (it signed both). The proof travels as an
  EQUIVOCATION action; every node that applies it drops that origin's actions from
  the fork on, so every node ends with the same actions and the same state.

Pure computation (hashing, signature checks): no I/O, no clock.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgpack
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

GENESIS = bytes(32)  # the ``prev`` of an origin's first action
HASH_BYTES = 32
MAX_CHAIN = 1024  # unsigned actions of one origin held, waiting for a signature
_ECDSA = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)

PublicKey = ec.EllipticCurvePublicKey


def _canonical(value: Any) -> Any:
    """Maps with sorted keys, so every node hashes the same bytes for the same action."""
    if type(value) is dict:
        return [[k, _canonical(value[k])] for k in sorted(value)]
    if type(value) is list or type(value) is tuple:
        return [_canonical(v) for v in value]
    return value


def action_hash(
    type_: str, payload: dict[str, Any], origin: str, seq: int, lamport: int, prev: bytes
) -> bytes:
    """What an action's signature signs and its successor's ``prev`` names."""
    body = [type_, _canonical(payload), origin, seq, lamport, prev]
    return hashlib.sha256(msgpack.packb(body, use_bin_type=True)).digest()


def key_of(cert: bytes, origin: str) -> PublicKey | None:
    """The public key of a certificate whose SHA-256 is ``origin``, else None."""
    if hashlib.sha256(cert).hexdigest() != origin:
        return None
    try:
        key = x509.load_der_x509_certificate(cert).public_key()
    except ValueError:
        return None
    return key if isinstance(key, ec.EllipticCurvePublicKey) else None


def signed_by(key: PublicKey, digest: bytes, signature: bytes) -> bool:
    try:
        key.verify(signature, digest, _ECDSA)
    except (InvalidSignature, ValueError):
        return False
    return True


def sign(private_key: ec.EllipticCurvePrivateKey, digest: bytes) -> bytes:
    """A deterministic (RFC 6979) signature: the same action always signs alike."""
    return private_key.sign(digest, _ECDSA)


def check_fork_proof(payload: dict[str, Any]) -> str | None:
    """Why an EQUIVOCATION payload does not prove a fork (None: it does).

    ``ours`` and ``theirs`` are runs of the origin's actions (wire form) that start at
    the same seq from the same ``prev``, chain inside, each end with an action the
    origin signed, and differ at their first action.
    """
    origin, seq = payload["node_id"], payload["seq"]
    key = key_of(payload["cert"], origin)
    if key is None:
        return "the certificate is not the node's"
    firsts = []
    for name in ("ours", "theirs"):
        run = payload[name]
        if not run:
            return f"{name} is empty"
        prev = run[0].get("prev", GENESIS)
        for i, raw in enumerate(run):
            this_prev = raw.get("prev", GENESIS)
            if raw["origin"] != origin or raw["seq"] != seq + i or this_prev != prev:
                return f"{name} is not one chain of the node's actions from #{seq}"
            prev = action_hash(
                raw["type"], raw["payload"], origin, raw["seq"], raw["lamport"], this_prev
            )
            if i == 0:
                firsts.append((this_prev, prev))
        if not signed_by(key, prev, run[-1].get("sig", b"")):
            return f"{name} does not end with an action the node signed"
    (prev_a, hash_a), (prev_b, hash_b) = firsts
    if prev_a != prev_b:
        return "the two runs do not start from the same action"
    if hash_a == hash_b:
        return "the two runs start with the same action"
    return None
