"""A node's identity: a key pair and a self-signed certificate in its data dir.

The node id is the SHA-256 of the certificate (as in Syncthing), so no other
machine can claim it: claiming an id means proving you hold its private key.
"""

from __future__ import annotations

import datetime
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

KEY_FILE = "node.key"
CERT_FILE = "node.crt"
MAX_CERT_BYTES = 4096


class IdentityError(Exception):
    """The identity files in a data dir cannot be used; the message says what to do."""


def node_id_of(cert_der: bytes) -> str:
    return hashlib.sha256(cert_der).hexdigest()


@dataclass(frozen=True)
class Identity:
    private_key: ec.EllipticCurvePrivateKey
    cert_der: bytes
    key_path: Path | None = None
    cert_path: Path | None = None

    @property
    def node_id(self) -> str:
        return node_id_of(self.cert_der)

    def sign(self, data: bytes) -> bytes:
        # Deterministic (RFC 6979): no random number is needed, and a simulated farm
        # signs alike in every run.
        return self.private_key.sign(data, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))


def verify_signature(cert_der: bytes, data: bytes, signature: bytes) -> bool:
    """True when ``signature`` over ``data`` was made with the key of ``cert_der``."""
    try:
        public_key = x509.load_der_x509_certificate(cert_der).public_key()
    except ValueError:
        return False
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        return False
    try:
        public_key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def new_identity() -> Identity:
    """A fresh key pair and certificate (in memory; the CLI uses one per command)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "peerfarm node")])
    now = datetime.datetime.now(datetime.UTC)
    # Peers pin the certificate itself (its hash is the node id), so its dates
    # carry no meaning: valid from yesterday (clock skew) for a century.
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=36500))
        .sign(key, hashes.SHA256())
    )
    return Identity(key, cert.public_bytes(serialization.Encoding.DER))


# The order of P-256's group: private keys are the numbers 1 .. n - 1.
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def identity_from_secret(secret: int) -> Identity:
    """An identity that is a pure function of ``secret`` (key, certificate and so node
    id): for the simulator, whose runs must repeat exactly. Never for a real node."""
    key = ec.derive_private_key(secret % (_P256_ORDER - 1) + 1, ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "peerfarm simulated node")])
    start = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(secret % (2**63) + 1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=36500))
        .sign(key, hashes.SHA256(), ecdsa_deterministic=True)
    )
    return Identity(key, cert.public_bytes(serialization.Encoding.DER))


def load_or_create_identity(data_dir: Path) -> Identity:
    """The node's persistent identity: same data dir, same node id across restarts."""
    key_path, cert_path = data_dir / KEY_FILE, data_dir / CERT_FILE
    if key_path.exists() or cert_path.exists():
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        except (OSError, ValueError, TypeError) as exc:
            raise IdentityError(
                f"cannot read this node's identity ({key_path}, {cert_path}): {exc}; restore "
                f"both files, or delete both to give the node a new id"
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
            raise IdentityError(
                f"{key_path} does not belong to {cert_path}; restore both files, or delete both "
                f"to give the node a new id"
            )
        return Identity(key, cert.public_bytes(serialization.Encoding.DER), key_path, cert_path)
    ident = new_identity()
    data_dir.mkdir(parents=True, exist_ok=True)
    key_pem = ident.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    cert = x509.load_der_x509_certificate(ident.cert_der)
    _write_new(key_path, key_pem, private=True)
    _write_new(cert_path, cert.public_bytes(serialization.Encoding.PEM), private=False)
    return Identity(ident.private_key, ident.cert_der, key_path, cert_path)


def retire_identity(data_dir: Path) -> str:
    """Set the node's key and certificate aside (node.key.retired-ID, ...) so that the
    next load_or_create_identity makes a new one; returns the retired node id."""
    key_path, cert_path = data_dir / KEY_FILE, data_dir / CERT_FILE
    old = load_or_create_identity(data_dir).node_id
    for path in (key_path, cert_path):
        path.replace(path.with_name(f"{path.name}.retired-{old[:12]}"))
    return old


def _write_new(path: Path, data: bytes, *, private: bool) -> None:
    tmp = path.with_name(path.name + ".tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
