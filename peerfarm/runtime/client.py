"""A client connection to one node, as the CLI (and other tools) use it."""

from __future__ import annotations

import secrets
from typing import Any

import trio

from peerfarm.runtime.link import HandshakeError, Link
from peerfarm.runtime.node import parse_address
from peerfarm.wire.framing import ProtocolError
from peerfarm.wire.messages import PROTOCOL_VERSION, MessageError, message

CONNECT_TIMEOUT = 10.0
REQUEST_TIMEOUT = 30.0


class ClientError(Exception):
    """Talking to the node failed; the message says why and what to check."""


class NodeClient:
    def __init__(self, address: str) -> None:
        self.address = address
        self._link: Link | None = None

    async def __aenter__(self) -> NodeClient:
        try:
            host, port = parse_address(self.address)
        except ValueError as exc:
            raise ClientError(str(exc)) from None
        try:
            with trio.fail_after(CONNECT_TIMEOUT):
                stream = await trio.open_tcp_stream(host, port)
        except (OSError, trio.TooSlowError) as exc:
            raise ClientError(
                f"cannot reach a peerfarm node at {self.address} ({exc}); is `peerfarm node` "
                f"running there, and is the address right?"
            ) from None
        link = Link(stream, outbound=True, remote=self.address)
        hello = message(
            "HELLO",
            protocol=PROTOCOL_VERSION,
            node_id=secrets.token_hex(16),
            name="cli",
            role="client",
            address="",
        )
        try:
            await link.handshake(hello)
        except HandshakeError as exc:
            await link.close()
            raise ClientError(str(exc)) from None
        self._link = link
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._link is not None:
            await self._link.close()

    async def request(self, msg: dict[str, Any]) -> dict[str, Any]:
        assert self._link is not None
        try:
            with trio.fail_after(REQUEST_TIMEOUT):
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

    async def submit(self, job: dict[str, Any]) -> str:
        return (await self.request(message("SUBMIT", job=job)))["job_id"]

    async def logs(self, job_id: str, frame: int | None = None) -> list[dict[str, Any]]:
        request = message("LOGS", job_id=job_id)
        if frame is not None:
            request["frame"] = frame
        return (await self.request(request))["logs"]

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
