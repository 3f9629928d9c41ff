"""The proof each side of a link gives after the TLS handshake.

TLS alone only says "this peer holds the key of the certificate it showed".
The proof adds "... and it holds the farm key, and it is talking to *me*":
an HMAC with the farm key and a signature with the node's own key, both over
a transcript naming both certificates and both sides' fresh nonces. A relay in
the middle terminates TLS with its own certificate, so what an honest node
proves names the relay's certificate and is worthless to the other side;
a recorded proof is worthless on a new connection (new nonces).
"""

from __future__ import annotations

import hashlib
import hmac

from peerfarm.security.farm_key import FarmKey
from peerfarm.security.identity import Identity, verify_signature

NONCE_BYTES = 32
_NO_KEY = b"peerfarm: no farm key (loopback only)"


def transcript(
    sender_role: str,
    dialer_cert: bytes,
    listener_cert: bytes,
    dialer_nonce: bytes,
    listener_nonce: bytes,
) -> bytes:
    """What a side signs: its role (so a proof cannot be reflected back), both
    certificates and both nonces."""
    return b"\0".join(
        [
            b"peerfarm-proof-1",
            sender_role.encode("ascii"),
            hashlib.sha256(dialer_cert).digest(),
            hashlib.sha256(listener_cert).digest(),
            dialer_nonce,
            listener_nonce,
        ]
    )


def farm_mac(key: FarmKey | None, data: bytes) -> bytes:
    # Without a farm key (loopback-only farms) the MAC still binds the transcript,
    # with a fixed public key: it proves nothing about membership, by design.
    secret = key.secret if key is not None else _NO_KEY
    return hmac.new(secret, data, hashlib.sha256).digest()


def make_proof(identity: Identity, key: FarmKey | None, data: bytes) -> dict[str, bytes]:
    return {"mac": farm_mac(key, data), "signature": identity.sign(data)}


def check_proof(
    key: FarmKey | None, cert_der: bytes, data: bytes, mac: bytes, signature: bytes
) -> str | None:
    """None when the proof holds, else why not (for the log and the ERROR reply)."""
    if not hmac.compare_digest(farm_mac(key, data), mac):
        return (
            "its farm key proof is wrong (it does not hold this farm's key, "
            "or something in between is relaying the connection)"
        )
    if not verify_signature(cert_der, data, signature):
        return "its signature does not match its certificate (it claims an id it does not own)"
    return None
