"""The farm key: one shared secret that makes a set of machines one farm.

Anyone holding the key file can join the farm and have its nodes run renders,
so it is created readable by its owner only. Nodes never send the key: they
prove they hold it (``peerfarm.security.proof``) and show its *key id*, a
fingerprint that says which farm a peer belongs to without revealing the key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "PEERFARM_FARM_KEY_FILE"
KEY_BYTES = 32
_PREFIX = "pfk1:"
NO_KEY_ID = "none"


class FarmKeyError(Exception):
    """A farm key file is missing, unreadable or malformed; the message says what to do."""


@dataclass(frozen=True)
class FarmKey:
    secret: bytes
    path: Path | None = None

    @property
    def key_id(self) -> str:
        """Which farm this key makes: the same on every machine holding the key."""
        return hmac.new(self.secret, b"peerfarm farm key id", hashlib.sha256).hexdigest()[:16]

    def __repr__(self) -> str:  # never print the secret by accident
        return f"FarmKey(key_id={self.key_id!r}, path={str(self.path)!r})"


def key_id_of(key: FarmKey | None) -> str:
    return key.key_id if key is not None else NO_KEY_ID


def config_dir() -> Path:
    """The per-user configuration folder of this platform."""
    if sys.platform == "win32":
        base = os.environ.get("APPDATA") or str(Path.home() / "AppData" / "Roaming")
        return Path(base) / "peerfarm"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "peerfarm"
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "peerfarm"


def default_key_path() -> Path:
    return config_dir() / "farm.key"


def new_key() -> FarmKey:
    return FarmKey(secrets.token_bytes(KEY_BYTES))


def key_file_text(key: FarmKey) -> str:
    encoded = base64.urlsafe_b64encode(key.secret).decode("ascii")
    return (
        "# peerfarm farm key. Anyone holding this file can join the farm and run\n"
        "# renders on its machines: copy it only to machines of this farm.\n"
        f"# key id: {key.key_id}\n"
        f"{_PREFIX}{encoded}\n"
    )


def write_key(key: FarmKey, path: Path) -> None:
    """Write a new key file readable by its owner only; never overwrite one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
    except FileExistsError:
        raise FarmKeyError(
            f"{path} already exists; a farm key is never overwritten (machines holding it "
            f"would be locked out). Choose another path with --farm-key-file, or delete it first"
        ) from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(key_file_text(key))


def load_key(path: Path) -> FarmKey:
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise FarmKeyError(
            f"farm key file {path} does not exist; create a farm with `peerfarm init` or copy "
            f"the farm's key file from a machine of the farm"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FarmKeyError(f"cannot read farm key file {path}: {exc}") from None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(_PREFIX):
            try:
                secret = base64.urlsafe_b64decode(line[len(_PREFIX) :].encode("ascii"))
            except (ValueError, UnicodeEncodeError):
                break
            if len(secret) == KEY_BYTES:
                return FarmKey(secret, path)
            break
    raise FarmKeyError(
        f"{path} is not a peerfarm farm key file (expected a line starting with "
        f"{_PREFIX!r}, as `peerfarm init` writes); copy the file again from a machine of the farm"
    )


def resolve_key(option: Path | None) -> FarmKey | None:
    """The key a command uses: --farm-key-file, else $PEERFARM_FARM_KEY_FILE, else the
    per-user default file if it exists, else none (loopback only)."""
    if option is not None:
        return load_key(option)
    env = os.environ.get(ENV_VAR)
    if env:
        return load_key(Path(env))
    default = default_key_path()
    if default.exists():
        return load_key(default)
    return None
