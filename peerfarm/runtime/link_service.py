"""What a node does with a link: reads its messages and handles each by its type.

Mesh peers' messages that carry the farm's replication (ACTIONS, VV, JOIN,
JOIN_REPLY) become events of the node machine; requests for data a node holds
(frames, blobs, logs) are answered here; answers to our own requests go to
whoever asked (runtime/requests.py); clients (the CLI) get their requests
carried out through the node's public API. Bad input closes this link only:
the node and its other links go on.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from peerfarm.core import snapshot
from peerfarm.core.refused import Refused
from peerfarm.job_request import JobRequest
from peerfarm.machine import events as ev
from peerfarm.runtime.addresses import from_this_machine
from peerfarm.runtime.blobs import BlobError, serve_blob
from peerfarm.runtime.link import Link
from peerfarm.runtime.renderer_logs import read_log_tail
from peerfarm.scenes import DEFAULT_LIMITS
from peerfarm.wire.framing import ProtocolError
from peerfarm.wire.messages import MessageError, message

if TYPE_CHECKING:
    from peerfarm.runtime.node import Node

log = logging.getLogger(__name__)

Handler = Callable[[Link, dict[str, Any]], Awaitable[None]]
FEATURES_NOTE_INTERVAL = 60.0  # an older node refused for want of features: logged this often


class LinkService:
    def __init__(self, node: Node) -> None:
        self.node = node
        self._upload_lock = trio.Lock()  # one piece at a time: appends must not interleave
        self._told_features: dict[str, float] = {}  # peer -> when to log its refusal again
        # Messages a mesh peer may send, and those a client may send.
        answers: dict[str, Handler] = {
            "FRAME": self._answer,
            "FRAME_MISSING": self._answer,
            "LOG": self._answer,
            "BLOB": self._answer,
            "BLOB_MISSING": self._answer,
            "GET_FRAME": self._get_frame,
            "GET_BLOB": self._get_blob,
            "GET_LOG": self._get_log,
            "ERROR": self._error,
            "SUBMIT": self._client_request,
            "STATUS": self._client_request,
            "CANCEL": self._client_request,
            "PAUSE": self._client_request,
            "RESUME": self._client_request,
            "RETRY": self._client_request,
            "PRIORITY": self._client_request,
        }
        self.mesh_handlers: dict[str, Handler] = {
            **answers,
            "ACTIONS": self._actions,
            "VV": self._vv,
            "PING": self._probe,
            "ACK": self._probe,
            "PING_REQ": self._probe,
            "JOIN": self._join,
            "JOIN_REPLY": self._join_reply,
            "SNAPSHOT": self._snapshot,
        }
        self.client_handlers: dict[str, Handler] = {
            **answers,
            "HAVE_BLOBS": self._upload,
            "PUT_BLOB": self._upload,
            "LOGS": self._logs,
            "GC": self._gc,
        }

    # -- a link's life -------------------------------------------------------------------

    async def serve(self, link: Link) -> str | None:
        """Serve a link after its handshake until it closes. Returns the peer's id."""
        node = self.node
        assert node.mesh is not None
        if link.peer_id == node.node_id:
            await link.close()
            return node.node_id
        mesh = link.peer_role != "client"
        missing = node.missing_features(link.peer_features) if mesh else []
        if missing:
            await self._refuse_features(link, missing)
            return link.peer_id
        if mesh and not node.mesh.register(link):
            await link.close()
            return link.peer_id
        if mesh:
            log.info("linked with %s %s", link.peer_role, link.describe())
            node.feed(ev.LinkUp(link.peer_id, link.peer_role, link.peer_name, link.peer_address))
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(link.run_sender)
                await self._read(link, self.mesh_handlers if mesh else self.client_handlers)
                nursery.cancel_scope.cancel()
        finally:
            await link.close()
            if mesh and node.mesh.unregister(link):
                log.info("link to %s closed", link.describe())
                node.feed(ev.LinkDown(link.peer_id))
        return link.peer_id

    async def _refuse_features(self, link: Link, missing: list[str]) -> None:
        """A peer of an older peerfarm, after the farm enabled features it lacks: what the
        farm writes now, it could not read (core/features.py)."""
        names = ", ".join(missing)
        now = trio.current_time()
        if now >= self._told_features.get(link.peer_id, -math.inf):  # not at every redial
            self._told_features[link.peer_id] = now + FEATURES_NOTE_INTERVAL
            log.warning(
                "refused %s: this farm uses protocol features it does not speak (%s); "
                "upgrade peerfarm there",
                link.describe(),
                names,
            )
        text = (
            f"this farm uses protocol features your peerfarm does not speak ({names}): "
            "upgrade peerfarm on this machine to the farm's version (docs/admin-guide.md, "
            "Upgrades)"
        )
        with trio.move_on_after(1):
            try:
                await link.send(message("ERROR", code="features", message=text))
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
        await link.close()

    async def _read(self, link: Link, handlers: dict[str, Handler]) -> None:
        """Read and handle messages until the link closes."""
        try:
            while True:
                msg = await link.receive()
                if msg is None:
                    return
                handler = handlers.get(msg["type"])
                if handler is None:
                    raise MessageError(f"unexpected {msg['type']} from a {link.peer_role}")
                await handler(link, msg)
        except (ProtocolError, MessageError) as exc:
            log.warning("closing the link to %s: %s", link.describe(), exc)
            with trio.move_on_after(1):
                try:
                    await link.send(message("ERROR", code="protocol", message=str(exc)[:4000]))
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            log.debug("link to %s lost: %s", link.describe(), exc)
        except Exception:
            # A bug in handling one message must not take the whole node down.
            log.exception("internal error while serving %s; closing that link", link.describe())

    # -- replication (mesh peers) --------------------------------------------------------

    async def _actions(self, link: Link, msg: dict[str, Any]) -> None:
        self.node.feed(ev.ActionsReceived(link.peer_id, msg["actions"]))

    async def _probe(self, link: Link, msg: dict[str, Any]) -> None:
        self.node.feed(ev.ProbeReceived(link.peer_id, msg))

    async def _vv(self, link: Link, msg: dict[str, Any]) -> None:
        self.node.feed(ev.VersionVectorReceived(link.peer_id, msg["vv"], msg.get("heads", {})))

    async def _snapshot(self, link: Link, msg: dict[str, Any]) -> None:
        # Decoded in a thread (a big farm's state is megabytes); the link reads its next
        # message (the tail's actions) only after the machine has it.
        try:
            plain = await trio.to_thread.run_sync(snapshot.decode, msg["data"])
        except snapshot.SnapshotError as exc:
            log.warning("ignored a snapshot from %s: %s", link.peer_id[:8], exc)
            return
        base_key = tuple(plain["base_key"]) if plain.get("base_key") else None
        self.node.received_snapshot = (plain.get("count"), base_key, msg["data"])
        self.node.feed(ev.SnapshotReceived(link.peer_id, plain))

    async def _join(self, link: Link, msg: dict[str, Any]) -> None:
        if self.node.config.role != "bootstrap":
            raise MessageError(f"unexpected JOIN from a {link.peer_role}: this is not a bootstrap")
        self.node.feed(ev.JoinAsked(link.peer_id))

    async def _join_reply(self, link: Link, msg: dict[str, Any]) -> None:
        self.node.feed(ev.JoinAnswered(link.peer_id, msg["kwl"], msg["vv"]))

    # -- data this node holds --------------------------------------------------------

    async def _answer(self, link: Link, msg: dict[str, Any]) -> None:
        kind = msg["type"]
        if kind == "LOG":
            key: tuple[Any, ...] = ("log", msg["job_id"], msg["chunk"])
        elif kind in ("BLOB", "BLOB_MISSING"):
            key = ("blob", msg["sha"], msg["offset"])
        else:
            key = ("frame", msg["job_id"], msg["frame"], msg.get("tile", -1))
        self.node.requests.answer(link.peer_id, key, msg)

    async def _get_frame(self, link: Link, msg: dict[str, Any]) -> None:
        node = self.node
        job_id, frame, tile = msg["job_id"], msg["frame"], msg.get("tile")
        data = None
        job = node.state.jobs.get(job_id)
        if job is not None and node.machine is not None and node.machine.serves_frames_of(job_id):
            try:
                path = node.data_dir.frame_path(job, frame, tile)
                data = await trio.to_thread.run_sync(path.read_bytes)
            except OSError:
                data = None
        extra = {} if tile is None else {"tile": tile}
        if data is None:
            what = "that frame" if tile is None else f"tile {tile} of that frame"
            reason = f"this node does not hold {what}"
            reply = message("FRAME_MISSING", job_id=job_id, frame=frame, reason=reason, **extra)
        else:
            reply = message("FRAME", job_id=job_id, frame=frame, data=data, **extra)
        await link.send(reply)

    async def _get_blob(self, link: Link, msg: dict[str, Any]) -> None:
        await serve_blob(self.node.blobs, link, msg["sha"], msg["offset"], msg["length"])

    async def _get_log(self, link: Link, msg: dict[str, Any]) -> None:
        path = self.node.data_dir.chunk_log_path(msg["job_id"], msg["chunk"])
        text = await trio.to_thread.run_sync(read_log_tail, path)
        await link.send(message("LOG", job_id=msg["job_id"], chunk=msg["chunk"], text=text))

    async def _error(self, link: Link, msg: dict[str, Any]) -> None:
        log.warning("%s reports an error: %s", link.describe(), msg["message"])

    # -- clients (the CLI) ------------------------------------------------------------

    async def _client_request(self, link: Link, msg: dict[str, Any]) -> None:
        node = self.node
        kind = msg["type"]
        try:
            if kind == "SUBMIT":
                request = JobRequest.from_wire(msg["job"])
                if not from_this_machine(link.remote):
                    request = node.place_remote_output(request)  # not our user's choice
                job_id, notes = await node.submit_job(request)
                reply = message("SUBMITTED", job_id=job_id, notes=list(notes))
            elif kind == "CANCEL":
                node.cancel(msg["job_id"])
                reply = message("CANCELLED", job_id=msg["job_id"])
            elif kind == "PAUSE":
                node.pause(msg["job_id"])
                reply = message("PAUSED", job_id=msg["job_id"])
            elif kind == "RESUME":
                node.resume(msg["job_id"])
                reply = message("RESUMED", job_id=msg["job_id"])
            elif kind == "RETRY":
                frames = node.retry(msg["job_id"])
                reply = message("RETRIED", job_id=msg["job_id"], frames=frames)
            elif kind == "PRIORITY":
                node.set_priority(msg["job_id"], msg["priority"])
                reply = message("PRIORITY_SET", job_id=msg["job_id"], priority=msg["priority"])
            else:
                reply = message("STATUS_REPLY", status=node.status())
        except Refused as exc:
            reply = message("REFUSED", message=str(exc))
        await link.send(reply)

    async def _logs(self, link: Link, msg: dict[str, Any]) -> None:
        try:
            logs = await self.node.collect_logs(msg["job_id"], msg.get("frame"))
            reply = message("LOGS_REPLY", logs=logs)
        except Refused as exc:
            reply = message("REFUSED", message=str(exc))
        await link.send(reply)

    async def _gc(self, link: Link, msg: dict[str, Any]) -> None:
        try:
            report = await self.node.collect_garbage(msg["dry_run"])
            reply = message("GC_REPLY", report=report)
        except Refused as exc:
            reply = message("REFUSED", message=str(exc))
        await link.send(reply)

    async def _upload(self, link: Link, msg: dict[str, Any]) -> None:
        """HAVE_BLOBS and PUT_BLOB: a client uploading scene files before SUBMIT."""
        blobs = self.node.blobs
        if msg["type"] == "HAVE_BLOBS":
            held = await trio.to_thread.run_sync(lambda: [blobs.held(sha) for sha in msg["shas"]])
            reply = message("BLOBS_HELD", blobs=[{"complete": c, "held": n} for c, n in held])
            await link.send(reply)
            return
        sha, size = msg["sha"], msg["size"]
        if size > DEFAULT_LIMITS.max_file_bytes:
            limit = DEFAULT_LIMITS.max_file_bytes
            text = f"a scene file may have at most {limit} bytes; blob {sha[:12]} has {size}"
            await link.send(message("REFUSED", message=text))
            return
        try:
            async with self._upload_lock:
                held, complete = await trio.to_thread.run_sync(
                    blobs.put_piece, sha, size, msg["offset"], msg["data"]
                )
        except (BlobError, OSError) as exc:
            await link.send(message("REFUSED", message=f"cannot store the upload: {exc}"[:4000]))
            return
        await link.send(message("BLOB_PUT", sha=sha, held=held, complete=complete))
