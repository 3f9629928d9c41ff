"""What a node keeps on disk: its identity, its known-worker list and its action log.

The log file is append-only. Each record is ``length (4 bytes, big endian) |
crc32 (4 bytes) | msgpack action``. A crash can leave the last record torn;
loading detects that (short record or bad checksum), drops it with a warning
and truncates the file back to the last good record.

These functions block (file I/O, fsync): the node calls them through
``trio.to_thread.run_sync`` so the event loop never waits on the disk.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import msgpack

from peerfarm.disk import write_atomically

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">II")


class DataDirError(Exception):
    """A file in the data folder cannot be used; the message says which and what to do."""


MAX_RECORD_BYTES = 1024 * 1024


# A crash while appending leaves a torn last record: that batch was never fsynced,
# so never sent; anything else cut off may have reached peers (see ``damaged``).
_TORN = ("a torn record header", "a torn last record")


class LogFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        # Set by load: records were cut off that peers may hold. The node must then get
        # its own actions back from them before it emits, or it would reuse their seqs.
        self.damaged = False

    def load(self) -> list[Any]:
        """Every intact record in order; a torn or corrupt tail is cut off with a warning."""
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        records: list[Any] = []
        pos = 0
        while pos < len(data):
            problem = None
            if len(data) - pos < _HEADER.size:
                problem = "a torn record header"
            else:
                length, crc = _HEADER.unpack_from(data, pos)
                body = data[pos + _HEADER.size : pos + _HEADER.size + length]
                if length > MAX_RECORD_BYTES:
                    problem = f"a record claiming {length} bytes"
                elif len(body) < length:
                    problem = "a torn last record"
                elif zlib.crc32(body) != crc:
                    problem = "a record with a bad checksum"
                else:
                    try:
                        records.append(msgpack.unpackb(body, raw=False, strict_map_key=True))
                    except (ValueError, msgpack.UnpackException):
                        problem = "a record that does not decode"
            if problem:
                self.damaged = problem not in _TORN
                log.warning(
                    "%s: found %s at byte %d of %d; dropping it and everything after it "
                    "(%d records kept); peers will send back what was lost",
                    self.path,
                    problem,
                    pos,
                    len(data),
                    len(records),
                )
                with open(self.path, "r+b") as f:
                    f.truncate(pos)
                    f.flush()
                    os.fsync(f.fileno())
                break
            pos += _HEADER.size + length
        return records

    def set_aside(self, name: str) -> Path:
        """Rename the log file to ``name`` beside it (the node starts an empty one)."""
        target = self.path.with_name(name)
        os.replace(self.path, target)
        return target

    def append(self, records: list[Any]) -> None:
        """Append records and fsync once for the whole batch."""
        if not records:
            return
        with open(self.path, "ab") as f:
            f.write(_encode(records))
            f.flush()
            os.fsync(f.fileno())

    def rewrite(self, records: list[Any]) -> None:
        """Replace the file with these records: a reader (or a crash) finds the old file
        or the new one, never a mix (temp file, fsync, rename; the file is never held
        open between writes, so Windows can replace it)."""
        write_atomically(self.path, _encode(records))


def _encode(records: list[Any]) -> bytes:
    parts = []
    for rec in records:
        body = msgpack.packb(rec, use_bin_type=True)
        parts.append(_HEADER.pack(len(body), zlib.crc32(body)))
        parts.append(body)
    return b"".join(parts)


class SnapshotFile:
    """``DATA_DIR/snapshot.bin``: the log's base (core/snapshot.py), written whole.

    Compaction writes it first (temp file, fsync, rename), then rewrites the log file
    as the actions after it: a crash in between leaves the new snapshot and the old
    log, whose actions already in the snapshot load as duplicates and are dropped."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None

    def write(self, data: bytes) -> None:
        write_atomically(self.path, data)

    def set_aside(self, name: str) -> Path:
        target = self.path.with_name(name)
        os.replace(self.path, target)
        return target


def compact(snapshot: SnapshotFile, logfile: LogFile, data: bytes, tail: list[Any]) -> None:
    """Write a new snapshot, then the log file as the tail after it (in that order)."""
    snapshot.write(data)
    logfile.rewrite(tail)


def load_identity(data_dir: Path, default_name: str) -> dict[str, str]:
    """The node's name and id as last saved (the id is its certificate's hash, see
    peerfarm.security.identity; the certificate is the source of truth)."""
    path = data_dir / "node.json"
    if path.exists():
        try:
            ident = json.loads(path.read_text("utf-8"))
            if isinstance(ident.get("node_id"), str) and isinstance(ident.get("name"), str):
                return ident
        except (ValueError, OSError) as exc:
            raise DataDirError(
                f"cannot read {path} ({exc}): fix it, or remove it and the node keeps its id "
                "from node.crt"
            ) from None
        raise DataDirError(
            f"{path} is not a node identity file: fix it, or remove it and the node keeps its "
            "id from node.crt"
        )
    return {"node_id": "", "name": default_name}  # a new node: the caller saves it


def save_identity(data_dir: Path, ident: dict[str, str]) -> None:
    write_atomically(data_dir / "node.json", json.dumps(ident, indent=2).encode())


def load_kwl(data_dir: Path) -> dict[str, dict[str, str]]:
    """Known-worker list: node id -> {address, name}."""
    path = data_dir / "kwl.json"
    try:
        kwl = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return {}
    except (ValueError, OSError) as exc:
        log.warning("%s is unreadable (%s); starting with an empty known-worker list", path, exc)
        return {}
    return kwl if isinstance(kwl, dict) else {}


def save_kwl(data_dir: Path, kwl: dict[str, dict[str, str]]) -> None:
    write_atomically(data_dir / "kwl.json", json.dumps(kwl, indent=2, sort_keys=True).encode())
