"""Content-addressed blobs: a store on disk keyed by SHA-256, and chunked,
resumable fetching of a blob from any peer that holds it.

Scene files (and later frames) are named by the SHA-256 of their bytes, so the
same content is stored once however often it is added or fetched, any peer
holding it can serve it, and a fetched copy is verified before it is used.

Layout under ``root`` (one file system, so every rename is atomic)::

    ab/abcdef...      a complete, verified blob (fanned out by its first two digits)
    partial/<sha>     a download in progress; its size is where a fetch resumes
    tmp/              files being written by put_bytes / put_file

``BlobStore`` blocks (file I/O, fsync, hashing): the node calls it through
``trio.to_thread.run_sync``. ``fetch_blob`` is the async side.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import trio

from peerfarm.disk import replace_file
from peerfarm.wire.messages import MAX_BLOB_CHUNK_BYTES, message

if TYPE_CHECKING:
    from peerfarm.runtime.link import Link

log = logging.getLogger(__name__)

_SHA256 = re.compile(r"[0-9a-f]{64}")
COPY_BLOCK = 1024 * 1024
CHUNK_BYTES = 1024 * 1024  # per GET_BLOB: large enough to amortise a round trip
CHUNK_TIMEOUT = 20.0  # a peer silent this long on one chunk: try another source
RELINK_WAIT = 5.0  # how long a retry waits for a dropped link to come back
ATTEMPTS = 3  # rounds over all sources that bring no new byte before giving up

Progress = Callable[[int, int], None]  # (bytes we hold, blob size)


class BlobError(Exception):
    """A blob cannot be stored, read or fetched; the message says which and why."""


def check_sha(sha: Any) -> str:
    """Return ``sha`` if it is a blob id (64 lowercase hex digits), else raise BlobError.

    Strict on purpose: blob ids arrive from peers and become file names, so
    nothing but hex digits may pass (no '/', '..', capitals or separators).
    """
    if type(sha) is not str or not _SHA256.fullmatch(sha):
        raise BlobError(f"{sha!r} is not a blob id (a SHA-256: 64 lowercase hex digits)")
    return sha


def short(sha: str) -> str:
    return sha[:12]


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        # Fetches of one sha on this node take turns (see fetch_blob). The locks
        # live here because a store belongs to exactly one node.
        self.fetch_locks: dict[str, trio.Lock] = {}

    # -- complete blobs ------------------------------------------------------------

    def path(self, sha: str) -> Path:
        check_sha(sha)
        return self.root / sha[:2] / sha

    def has(self, sha: str) -> bool:
        return self.path(sha).is_file()

    def size(self, sha: str) -> int:
        try:
            return self.path(sha).stat().st_size
        except FileNotFoundError:
            raise BlobError(f"blob {short(sha)} is not in {self.root}") from None

    def read_range(self, sha: str, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``offset`` (fewer at the end of the blob).

        An offset at or past the end is an error, except offset 0 of an empty
        blob, so a reader can never loop forever on empty answers.
        """
        if offset < 0 or length < 0:
            raise BlobError(f"blob {short(sha)}: bad range {offset}+{length}")
        try:
            with open(self.path(sha), "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if offset > size or (offset == size and size > 0):
                    raise BlobError(f"blob {short(sha)} has {size} bytes, none at {offset}")
                f.seek(offset)
                return f.read(length)
        except FileNotFoundError:
            raise BlobError(f"blob {short(sha)} is not in {self.root}") from None

    def put_bytes(self, data: bytes) -> str:
        """Store bytes and return their sha; content already here is not written again."""
        sha = hashlib.sha256(data).hexdigest()
        if self.has(sha):
            self.renew(sha)
        else:
            tmp = self._temp_file()
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                self._install(tmp, sha)
            finally:
                tmp.unlink(missing_ok=True)
        return sha

    def put_file(self, source: Path) -> str:
        """Copy a file into the store, hashing while copying (one pass, bounded memory)."""
        tmp = self._temp_file()
        digest = hashlib.sha256()
        try:
            try:
                with open(source, "rb") as src, open(tmp, "wb") as dst:
                    while block := src.read(COPY_BLOCK):
                        digest.update(block)
                        dst.write(block)
                    dst.flush()
                    os.fsync(dst.fileno())
            except OSError as exc:
                raise BlobError(
                    f"cannot add {source} to the blob store: {exc.strerror or exc}"
                ) from None
            sha = digest.hexdigest()
            if self.has(sha):
                self.renew(sha)
            else:
                self._install(tmp, sha)
        finally:
            tmp.unlink(missing_ok=True)
        return sha

    # -- downloads in progress -----------------------------------------------------

    def partial_path(self, sha: str) -> Path:
        check_sha(sha)
        return self.root / "partial" / sha

    def partial_size(self, sha: str) -> int:
        """How many bytes of ``sha`` a fetch already holds (0 if none)."""
        try:
            return self.partial_path(sha).stat().st_size
        except FileNotFoundError:
            return 0

    def append_partial(self, sha: str, offset: int, data: bytes) -> int:
        """Append the piece at ``offset``; returns the new partial size.

        Only the piece that starts exactly at the current end is taken: a
        duplicated or reordered piece would otherwise corrupt the file silently.
        No fsync per piece: the whole file is verified before it is used, and
        a piece lost in a crash only means fetching it again.
        """
        part = self.partial_path(sha)
        part.parent.mkdir(parents=True, exist_ok=True)
        with open(part, "ab") as f:
            have = os.fstat(f.fileno()).st_size
            if offset != have:
                raise BlobError(
                    f"blob {short(sha)}: a piece at offset {offset} does not follow the "
                    f"{have} bytes already fetched"
                )
            f.write(data)
            return have + len(data)

    def finish_partial(self, sha: str) -> bool:
        """Verify the whole partial against its sha. On a match it becomes the blob
        (True); on a mismatch it is deleted (False), so the next fetch starts clean."""
        part = self.partial_path(sha)
        part.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        with open(part, "ab+") as f:  # "a": an empty blob has no partial file yet
            f.seek(0)
            while block := f.read(COPY_BLOCK):
                digest.update(block)
            f.flush()
            os.fsync(f.fileno())
        if digest.hexdigest() != sha:
            part.unlink(missing_ok=True)
            return False
        if self.has(sha):
            part.unlink(missing_ok=True)  # stored meanwhile (put_bytes): keep one copy
        else:
            self._install(part, sha)
        return True

    def drop_partial(self, sha: str) -> None:
        self.partial_path(sha).unlink(missing_ok=True)

    # -- uploads from clients --------------------------------------------------------

    def held(self, sha: str) -> tuple[bool, int]:
        """(complete, bytes held): a stored blob's size, or how much of it a partial
        upload or fetch holds (where an upload resumes). A stored blob asked about is
        about to be used (a SUBMIT names it next): it counts as new for retention."""
        try:
            size = self.path(sha).stat().st_size
        except FileNotFoundError:
            return False, self.partial_size(sha)
        self.renew(sha)
        return True, size

    def renew(self, sha: str) -> None:
        """Mark a stored blob as just used, so retention (runtime/retention.py) keeps it
        for a while even if no job names it yet."""
        try:
            os.utime(self.path(sha))
        except OSError:
            pass  # gone, or a read-only store: nothing to keep then

    def put_piece(self, sha: str, size: int, offset: int, data: bytes) -> tuple[int, bool]:
        """Take a piece of blob ``sha`` (``size`` bytes in all) that a client uploads;
        returns (bytes held, complete).

        A piece is appended only if it starts where the partial file ends;
        otherwise nothing changes and the answer says where to go on from (two
        uploads of one blob then take turns instead of corrupting it). The piece
        that completes the blob has the whole file verified: on a mismatch it is
        deleted and BlobError says so.
        """
        check_sha(sha)
        if offset + len(data) > size:
            raise BlobError(
                f"blob {short(sha)}: a piece of {len(data)} bytes at offset {offset} goes past "
                f"its size of {size} bytes"
            )
        if self.has(sha):
            return size, True  # stored already (by another upload, or fetched)
        have = self.partial_size(sha)
        if have > size:  # left by an upload that claimed another size: cannot be this blob
            self.drop_partial(sha)
            have = 0
        if offset != have:
            return have, False
        if not data and have < size:
            raise BlobError(f"blob {short(sha)}: an empty piece at offset {offset}")
        if data:
            have = self.append_partial(sha, offset, data)
        if have < size:
            return have, False
        if self.finish_partial(sha) or self.has(sha):  # or a fetch of it finished meanwhile
            return size, True
        raise BlobError(
            f"the {size} bytes uploaded for blob {short(sha)} do not match its SHA-256 "
            "(did the file change while it was being submitted?); they were dropped"
        )

    # -- helpers -------------------------------------------------------------------

    def _temp_file(self) -> Path:
        tmp_dir = self.root / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=tmp_dir, suffix=".tmp")
        os.close(fd)
        return Path(name)

    def _install(self, written: Path, sha: str) -> None:
        final = self.path(sha)
        final.parent.mkdir(parents=True, exist_ok=True)
        replace_file(written, final)


# -- serving (called by the node's dispatch) -------------------------------------------


async def serve_blob(store: BlobStore, link: Link, sha: str, offset: int, length: int) -> None:
    """Answer GET_BLOB: the piece (BLOB) or BLOB_MISSING if absent or out of range."""
    try:
        data = await trio.to_thread.run_sync(store.read_range, sha, offset, length)
    except (BlobError, OSError) as exc:
        reason = str(exc) if isinstance(exc, BlobError) else "this node cannot read that blob"
        await link.send(message("BLOB_MISSING", sha=sha, offset=offset, reason=reason[:500]))
        return
    await link.send(message("BLOB", sha=sha, offset=offset, data=data))


# -- fetching -----------------------------------------------------------------------------


class BlobPeers(Protocol):
    """What fetching a blob needs from the node: its store, and asking peers."""

    node_id: str
    blobs: BlobStore

    def link_to(self, peer: str) -> Any: ...

    async def ask(
        self, peer: str, request: dict[str, Any], key: tuple[Any, ...], timeout: float
    ) -> dict[str, Any] | None: ...

    async def wait_for_change(self, timeout: float | None = None) -> None: ...

    def peer_name(self, peer: str) -> str: ...


async def fetch_blob(
    node: BlobPeers,
    sha: str,
    size: int,
    sources: list[str],
    *,
    chunk_bytes: int = CHUNK_BYTES,
    progress: Progress | None = None,
    timeout: float = CHUNK_TIMEOUT,
    attempts: int = ATTEMPTS,
) -> None:
    """Bring blob ``sha`` of ``size`` bytes into ``node.blobs`` from peers ``sources``.

    Pieces are appended to the partial file; after a dropped link, a silent
    peer or a peer that lacks the blob, the fetch goes on with the next source
    from the partial's size (never from zero). The whole blob is verified
    before it is stored. Returns at once if the blob is already here; raises
    BlobError naming the blob and every peer tried if no source can give it.
    """
    check_sha(sha)
    if size < 0:
        raise BlobError(f"blob {short(sha)}: size {size} is negative")
    if not 0 < chunk_bytes <= MAX_BLOB_CHUNK_BYTES:
        raise BlobError(f"chunk_bytes must be 1..{MAX_BLOB_CHUNK_BYTES}, got {chunk_bytes}")
    store = node.blobs
    lock = store.fetch_locks.setdefault(sha, trio.Lock())
    try:
        async with lock:  # a second fetch of this sha waits, then finds it stored
            if not await trio.to_thread.run_sync(store.has, sha):
                await _fetch(node, sha, size, sources, chunk_bytes, progress, timeout, attempts)
    finally:
        # trio hands a released lock straight to the next waiter, so an unlocked
        # lock has nobody waiting and can go.
        if not lock.locked() and store.fetch_locks.get(sha) is lock:
            del store.fetch_locks[sha]


# What one source did: gave every missing byte, failed in a way worth retrying
# later (link dropped, silent), or is no use for this blob (lacks it, bad data).
COMPLETE, RETRY, GIVE_UP = "complete", "retry", "give up"


async def _fetch(
    node: BlobPeers,
    sha: str,
    size: int,
    sources: list[str],
    chunk_bytes: int,
    progress: Progress | None,
    timeout: float,
    attempts: int,
) -> None:
    store = node.blobs
    if await trio.to_thread.run_sync(store.partial_size, sha) == size:
        # Complete but never verified (e.g. stopped right after the last piece).
        if await trio.to_thread.run_sync(store.finish_partial, sha):
            return
        if size == 0:
            raise BlobError(f"blob {short(sha)} is not empty; its size cannot be 0")
    peers = [p for p in dict.fromkeys(sources) if p != node.node_id]
    problems: dict[str, str] = {}  # peer -> what went wrong last time
    given_up: set[str] = set()
    idle_rounds = 0
    first_round = True
    while idle_rounds < attempts and any(p not in given_up for p in peers):
        start = await trio.to_thread.run_sync(store.partial_size, sha)
        for peer in peers:
            if peer in given_up:
                continue
            if node.link_to(peer) is None and not first_round:
                # A retry: give a dropped link the time to be redialed.
                with trio.move_on_after(RELINK_WAIT):
                    while node.link_to(peer) is None:
                        await node.wait_for_change()
            outcome, problem = await _fetch_from(
                node, peer, sha, size, chunk_bytes, progress, timeout
            )
            if outcome == COMPLETE:
                if await trio.to_thread.run_sync(store.finish_partial, sha):
                    if problems:
                        log.info("blob %s fetched from %s", short(sha), _label(node, peer))
                    return
                outcome, problem = GIVE_UP, "sent data that does not match the blob's SHA-256"
            if outcome == GIVE_UP:
                given_up.add(peer)
            problems[peer] = problem
            log.warning("blob %s: %s %s", short(sha), _label(node, peer), problem)
        first_round = False
        end = await trio.to_thread.run_sync(store.partial_size, sha)
        # A round that brought new bytes does not count: resuming always progresses.
        idle_rounds = 0 if end > start else idle_rounds + 1
    tried = "; ".join(f"{_label(node, p)} {why}" for p, why in problems.items())
    raise BlobError(
        f"cannot fetch blob {short(sha)} ({size} bytes): "
        + (tried or "no other peer was named as a source")
        + ". Make sure a node that holds it is running and linked to this one, then retry."
    )


async def _fetch_from(
    node: BlobPeers,
    peer: str,
    sha: str,
    size: int,
    chunk_bytes: int,
    progress: Progress | None,
    timeout: float,
) -> tuple[str, str]:
    """Fetch pieces from one peer, from the partial's end until it holds ``size``
    bytes. Returns (outcome, why it failed).

    One request at a time: with 1 MiB pieces a LAN round trip costs little,
    and requesting 2-8 pieces ahead measured no faster on loopback (the cost is
    per byte, in this one Python thread), so the simpler loop stays.
    """
    store = node.blobs
    offset = await trio.to_thread.run_sync(store.partial_size, sha)
    if offset > size:
        # More bytes than the blob has: this partial cannot be right.
        await trio.to_thread.run_sync(store.drop_partial, sha)
        offset = 0
    while offset < size:
        length = min(chunk_bytes, size - offset)
        request = message("GET_BLOB", sha=sha, offset=offset, length=length)
        # A dropped link ends the wait at once (Requests.ask): resuming is cheap.
        reply = await node.ask(peer, request, ("blob", sha, offset), timeout)
        if reply is None:
            return RETRY, "did not answer (not linked, link dropped or timed out)"
        if reply["type"] == "BLOB_MISSING":
            return GIVE_UP, f"cannot serve it: {reply['reason']}"
        data = reply["data"]
        if len(data) != length:
            return GIVE_UP, (
                f"sent {len(data)} bytes for the {length}-byte piece at offset {offset} "
                f"(does it hold a blob of {size} bytes?)"
            )
        offset = await trio.to_thread.run_sync(store.append_partial, sha, offset, data)
        if progress is not None:
            progress(offset, size)
    return COMPLETE, ""


def _label(node: BlobPeers, peer: str) -> str:
    name = node.peer_name(peer)
    return f"peer {name} ({peer[:8]})" if name else f"peer {peer[:8]}"
