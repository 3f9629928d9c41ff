"""What the fuzzers throw bytes at, and the seeds they start from.

``wire_case`` does what a node does with bytes from a connection: decode the
msgpack stream, check each message against its schema, validate each action of
an ACTIONS batch and fold the valid ones into a log. Expected refusals
(ProtocolError, MessageError, InvalidAction) are fine; any other exception is a
bug. A case whose actions are all refused must leave the state untouched.

``archive_case`` unpacks a (mutated) scene archive: it is either refused with
a PackageError or unpacked entirely inside its folder.
"""

from __future__ import annotations

import io
import random
import tarfile
import tempfile
import zipfile
from pathlib import Path

from factories import new_job_payload

from peerfarm.core.actions import InvalidAction, validate_action
from peerfarm.core.log import ActionLog
from peerfarm.scenes.package import Limits, PackageError, load_package, unpack_to
from peerfarm.wire.framing import FrameDecoder, ProtocolError, encode
from peerfarm.wire.messages import MessageError, message, parse_message

ORIGIN = "ab" * 32
SHA = "cd" * 32
FUZZ_LIMITS = Limits(max_total_bytes=1 << 20, max_files=50, max_file_bytes=1 << 19)


class UnexpectedState(AssertionError):
    """A case that was refused entirely still changed the state."""


def _seed_log() -> ActionLog:
    log = ActionLog()
    job = new_job_payload("job1")
    log.add_all(
        [
            validate_action(
                {"type": "NEW_JOB", "payload": job, "origin": ORIGIN, "seq": 1, "lamport": 1}
            )
        ]
    )
    return log


_BASE_DIGEST = _seed_log().digest()


def wire_case(data: bytes) -> int:
    """Feed ``data`` to a fresh decoder and a small log; return how many actions applied."""
    log = _seed_log()
    try:
        objects = FrameDecoder(max_message_bytes=1 << 20).feed(data)
    except ProtocolError:
        objects = []
    valid = []
    for obj in objects:
        try:
            msg = parse_message(obj)
        except MessageError:
            continue
        if msg["type"] != "ACTIONS":
            continue
        for raw in msg["actions"]:
            try:
                valid.append(validate_action(raw))
            except InvalidAction:
                pass
    applied = log.add_all(valid)
    if not valid and log.digest() != _BASE_DIGEST:
        raise UnexpectedState("refused input changed the state")
    log.digest()  # the canonical encoding must cope with whatever was applied
    return len(applied)


def _action(type_: str, payload: dict, seq: int) -> dict:
    return {"type": type_, "payload": payload, "origin": ORIGIN, "seq": seq, "lamport": seq + 1}


def wire_seeds() -> list[bytes]:
    """Valid encodings of every kind of message, so mutations stay near the grammar."""
    job = new_job_payload("job2", frames=(1, 20), chunk=3)
    actions = [
        _action("NEW_JOB", job, 2),
        _action("CLAIM_CHUNK", {"job_id": "job1", "chunk": 0}, 3),
        _action("DONE", {"job_id": "job1", "chunk": 0, "claim_seq": 3}, 4),
        _action("RELEASE_CHUNK", {"job_id": "job1", "chunk": 1, "claim_seq": 3}, 5),
        _action("CHUNK_FAILED", {"job_id": "job1", "chunk": 2, "claim_seq": 3, "error": "boom"}, 6),
        _action("CANCEL_JOB", {"job_id": "job1"}, 7),
        _action("PEER_DOWN", {"node_id": "ef" * 32, "incarnation": 1}, 8),
        _action("CHUNK_LOST", {"job_id": "job1", "chunk": 0, "holder": ORIGIN}, 9),
        _action(
            "PEER_JOINED",
            {"name": "n", "address": "h:1", "slots": 2, "renders": True, "renderers": {}},
            10,
        ),
        _action("PEER_LEFT", {}, 11),
    ]
    msgs = [
        message(
            "HELLO",
            protocol=2,
            node_id=ORIGIN,
            name="n",
            role="node",
            address="h:1",
            cert=b"c" * 400,
            nonce=b"n" * 32,
            key_id="0123456789abcdef",
        ),
        message("PROOF", mac=b"m" * 32, signature=b"s" * 72),
        message("ACTIONS", actions=actions),
        message("VV", vv={ORIGIN: 3}, digest="00" * 32),
        message("PING", seq=1, view=b"v" * 8),
        message("ACK", seq=1, view=b"v" * 8, gossip=[{"node": ORIGIN, "inc": 2, "suspect": False}]),
        message("PING_REQ", seq=1, target=ORIGIN, view=b"v" * 8),
        message("JOIN_REPLY", kwl=[{"node_id": ORIGIN, "address": "h:1", "name": "n"}], vv={}),
        message("GET_FRAME", job_id="job1", frame=3),
        message("FRAME", job_id="job1", frame=3, data=b"\x89PNG" * 10),
        message("GET_BLOB", sha=SHA, offset=0, length=100),
        message("BLOB", sha=SHA, offset=0, data=b"x" * 100),
        message("SUBMIT", job={"scene": "{}", "frames": [1, 2]}),
        message("LOGS", job_id="job1", frame=2),
        message("ERROR", code="protocol", message="bad"),
    ]
    seeds = [encode(m) for m in msgs]
    seeds.append(b"".join(seeds[:4]))
    return seeds


def mutate(data: bytes, rng: random.Random, seeds: list[bytes]) -> bytes:
    """One or a few random edits: flips, overwrites, inserts, deletes, splices, truncation."""
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3, 6))):
        op = rng.randrange(8)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:
            i = rng.randrange(len(buf))
            buf[i] = rng.choice((0x00, 0x7F, 0x80, 0xC0, 0xC1, 0xCC, 0xD9, 0xDB, 0xDD, 0xDF, 0xFF))
        elif op == 2:
            buf[pos:pos] = rng.randbytes(rng.randrange(1, 16))
        elif op == 3 and buf:
            end = min(len(buf), pos + rng.randrange(1, 32))
            del buf[pos:end]
        elif op == 4:
            other = rng.choice(seeds)
            start = rng.randrange(len(other))
            buf[pos:pos] = other[start : start + rng.randrange(1, 64)]
        elif op == 5:
            del buf[pos:]
        elif op == 6 and buf:
            # Big lengths in headers: str32/bin32/array32/map32 claiming huge sizes.
            buf[pos:pos] = bytes([rng.choice((0xDB, 0xC6, 0xDD, 0xDF))]) + rng.randbytes(4)
        else:
            buf[pos:pos] = bytes([rng.randrange(256)])
    return bytes(buf)


# -- archives ------------------------------------------------------------------------


def archive_seeds() -> list[tuple[str, bytes]]:
    """A small valid builtin scene as .zip and as .tar.gz."""
    from peerfarm.renderers.builtin import builtin_scene_text

    scene = builtin_scene_text("demo").encode()
    files = {"demo.json": scene, "textures/note.txt": b"wood " * 50, "README": b"hi"}
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    tbuf = io.BytesIO()
    with tarfile.open(fileobj=tbuf, mode="w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return [("scene.zip", zbuf.getvalue()), ("scene.tar.gz", tbuf.getvalue())]


def archive_case(name: str, data: bytes, workdir: Path) -> bool:
    """Load and unpack a (possibly mutated) archive; True when it was accepted.

    Raises AssertionError if anything lands outside the unpack folder.
    """
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        root = Path(tmp)
        archive = root / name
        archive.write_bytes(data)
        dest = root / "unpacked"
        try:
            package = load_package(archive, limits=FUZZ_LIMITS)
            unpack_to(package, dest, limits=FUZZ_LIMITS)
        except PackageError:
            accepted = False
        else:
            accepted = True
        for path in root.rglob("*"):
            if path == archive or path == dest:
                continue
            real = path.resolve()
            if not (real == dest.resolve() or dest.resolve() in real.parents):
                raise AssertionError(f"{path} was written outside the unpack folder")
            if path.is_symlink():
                raise AssertionError(f"{path} is a link")
        return accepted
