"""A client connection to one node, as the CLI (and other tools) use it."""

from __future__ import annotations

from typing import Any

import trio

from peerfarm.job_request import JobRequest
from peerfarm.runtime.addresses import parse_address
from peerfarm.runtime.link import HandshakeError, Link, dial
from peerfarm.security.farm_key import FarmKey
from peerfarm.security.identity import new_identity
from peerfarm.wire.framing import ProtocolError
from peerfarm.wire.messages import PROTOCOL_VERSION, MessageError, message

CONNECT_TIMEOUT = 10.0
REQUEST_TIMEOUT = 30.0
# The node checks a scene before it answers, which may mean running the renderer
# on it (Blender reads a .blend's frame range): allow for a big file on a busy node.
SUBMIT_TIMEOUT = 120.0


class ClientError(Exception):
    """Talking to the node failed; the message says why and what to check."""


class NodeClient:
    """``async with NodeClient(address, farm_key) as client: await client.status()``.

    A client proves it holds the farm key like a node does, with a throwaway
    identity (a client has no data dir and needs no stable id).
    """

    def __init__(self, address: str, farm_key: FarmKey | None = None) -> None:
        self.address = address
        self.farm_key = farm_key
        self._link: Link | None = None

    async def __aenter__(self) -> NodeClient:
        try:
            parse_address(self.address)
        except ValueError as exc:
            raise ClientError(str(exc)) from None
        identity = new_identity()
        hello = message(
            "HELLO",
            protocol=PROTOCOL_VERSION,
            node_id=identity.node_id,
            name="cli",
            role="client",
            address="",
        )
        try:
            with trio.fail_after(CONNECT_TIMEOUT):
                self._link = await dial(self.address, hello, identity, self.farm_key)
        except (OSError, trio.TooSlowError) as exc:
            raise ClientError(
                f"cannot reach a peerfarm node at {self.address} ({exc}); is `peerfarm node` "
                f"running there, and is the address right?"
            ) from None
        except HandshakeError as exc:
            raise ClientError(str(exc)) from None
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._link is not None:
            await self._link.close()

    async def request(
        self, msg: dict[str, Any], timeout: float = REQUEST_TIMEOUT
    ) -> dict[str, Any]:
        assert self._link is not None
        try:
            with trio.fail_after(timeout):
                await self._link.send(msg)
                reply = await self._link.receive()
        except trio.TooSlowError:
            raise ClientError(f"the node at {self.address} did not answer in time") from None
        except (ProtocolError, MessageError, trio.BrokenResourceError, OSError) as exc:
            raise ClientError(f"lost the connection to {self.address}: {exc}") from None
        if reply is None:
            raise ClientError(f"the node at {self.address} closed the connection")
        if reply["type"] == "REFUSED":
            raise ClientError(reply["message"])
        if reply["type"] == "ERROR":
            raise ClientError(f"the node at {self.address} refused: {reply['message']}")
        return reply

    async def status(self) -> dict[str, Any]:
        return (await self.request(message("STATUS")))["status"]

    async def submit(self, request: JobRequest) -> str:
        """Submit a job; its scene files must be bytes or already uploaded (manifest)."""
        job_id, _ = await self.submit_job(request)
        return job_id

    async def submit_job(self, request: JobRequest) -> tuple[str, list[str]]:
        """``submit``, also returning the notes: scene settings the farm overrides."""
        reply = await self.request(message("SUBMIT", job=request.to_wire()), SUBMIT_TIMEOUT)
        return reply["job_id"], reply.get("notes", [])

    async def blobs_held(self, shas: list[str]) -> list[tuple[bool, int]]:
        """For each blob: (complete, bytes the node holds of it)."""
        reply = await self.request(message("HAVE_BLOBS", shas=shas))
        if reply["type"] != "BLOBS_HELD" or len(reply["blobs"]) != len(shas):
            raise ClientError(f"the node at {self.address} answered HAVE_BLOBS wrongly")
        return [(blob["complete"], blob["held"]) for blob in reply["blobs"]]

    async def put_blob(self, sha: str, size: int, offset: int, data: bytes) -> tuple[int, bool]:
        """Upload a piece of a blob; (bytes the node now holds, complete)."""
        request = message("PUT_BLOB", sha=sha, size=size, offset=offset, data=data)
        reply = await self.request(request)
        if reply["type"] != "BLOB_PUT" or reply["sha"] != sha:
            raise ClientError(f"the node at {self.address} answered PUT_BLOB wrongly")
        return reply["held"], reply["complete"]

    async def logs(self, job_id: str, frame: int | None = None) -> list[dict[str, Any]]:
        request = message("LOGS", job_id=job_id)
        if frame is not None:
            request["frame"] = frame
        return (await self.request(request))["logs"]

    async def gc(self, dry_run: bool = False) -> dict[str, Any]:
        """Run the node's retention now; its report (runtime/retention.py)."""
        return (await self.request(message("GC", dry_run=dry_run), SUBMIT_TIMEOUT))["report"]

    async def cancel(self, job_id: str) -> None:
        await self.request(message("CANCEL", job_id=job_id))

    async def pause(self, job_id: str) -> None:
        await self.request(message("PAUSE", job_id=job_id))

    async def resume(self, job_id: str) -> None:
        await self.request(message("RESUME", job_id=job_id))

    async def retry(self, job_id: str) -> int:
        """Returns how many failed frames are rendered again."""
        return (await self.request(message("RETRY", job_id=job_id)))["frames"]

    async def set_priority(self, job_id: str, priority: int) -> None:
        await self.request(message("PRIORITY", job_id=job_id, priority=priority))
