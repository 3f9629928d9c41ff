"""LAN discovery with zeroconf (mDNS service ``_peerfarm._tcp.local.``).

With it a farm works with no bootstrap server at all: every node announces
itself and adds the nodes it hears about to its known-worker list. The threaded
``Zeroconf`` runs beside trio; its blocking calls (registering takes ~1.7 s) go
through ``trio.to_thread``, and what its browser thread finds comes back into
trio through ``trio.from_thread``.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from peerfarm.wire.messages import PROTOCOL_VERSION

if TYPE_CHECKING:
    from zeroconf import ServiceInfo, Zeroconf

log = logging.getLogger(__name__)

SERVICE_TYPE = "_peerfarm._tcp.local."
RESOLVE_TIMEOUT_MS = 3000


Found = Callable[[list[dict[str, str]]], None]  # known-worker-list entries


class LanDiscovery:
    """Announce this node (id, name, address, farm key id) and report the nodes of the
    same farm it hears about to ``found`` (called in trio)."""

    def __init__(self, node_id: str, name: str, address: str, farm: str, found: Found) -> None:
        self.node_id = node_id
        self.name = name
        self.address = address
        self.farm = farm
        self.found = found
        self._zeroconf: Zeroconf | None = None
        self._info: ServiceInfo | None = None

    async def run(self) -> None:
        try:
            await trio.to_thread.run_sync(self._start, trio.lowlevel.current_trio_token())
        except Exception as exc:  # no multicast on this network: the farm still works
            log.warning("LAN discovery (zeroconf) is off: %s", exc)
            return
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._stop)

    def _start(self, token: trio.lowlevel.TrioToken) -> None:
        from zeroconf import InterfaceChoice, ServiceBrowser, ServiceInfo, Zeroconf

        host, _, port = self.address.rpartition(":")
        host = host.strip("[]")
        ip = ipaddress.ip_address(host)
        # A node on loopback is only reachable from this machine: announce it there only.
        interfaces = [host] if ip.is_loopback else InterfaceChoice.All
        self._zeroconf = Zeroconf(interfaces=interfaces)
        instance = f"{self.name[:40]}-{self.node_id[:12]}"
        self._info = ServiceInfo(
            SERVICE_TYPE,
            f"{instance}.{SERVICE_TYPE}",
            addresses=[ip.packed],
            port=int(port),
            properties={
                "node_id": self.node_id,
                "name": self.name,
                "protocol": str(PROTOCOL_VERSION),
                # Which farm (the key's fingerprint, not the key): nodes dial only their own.
                "farm": self.farm,
            },
        )
        self._zeroconf.register_service(self._info)
        ServiceBrowser(self._zeroconf, SERVICE_TYPE, handlers=[self._make_handler(token)])
        log.info("announced on the LAN as %s (zeroconf)", instance)

    def _make_handler(self, token: trio.lowlevel.TrioToken):  # noqa: ANN202 - zeroconf callback
        from zeroconf import ServiceStateChange

        def on_change(zeroconf, service_type, name, state_change) -> None:  # noqa: ANN001
            if state_change not in (ServiceStateChange.Added, ServiceStateChange.Updated):
                return
            info = zeroconf.get_service_info(service_type, name, timeout=RESOLVE_TIMEOUT_MS)
            entry = _entry(info, self.farm)
            if entry is None:
                return
            try:
                trio.from_thread.run_sync(self.found, [entry], trio_token=token)
            except trio.RunFinishedError:
                pass

        return on_change

    def _stop(self) -> None:
        if self._zeroconf is None:
            return
        try:
            if self._info is not None:
                self._zeroconf.unregister_service(self._info)
        finally:
            self._zeroconf.close()


def _entry(info: ServiceInfo | None, farm: str) -> dict[str, str] | None:
    """A known-worker-list entry from a resolved service, or None if it is not of our
    farm (the handshake would refuse it anyway; this saves dialing it forever)."""
    if info is None or not info.port:
        return None
    props = {
        k.decode(errors="replace"): (v or b"").decode(errors="replace")
        for k, v in info.properties.items()
    }
    if props.get("protocol") != str(PROTOCOL_VERSION) or props.get("farm") != farm:
        return None
    addresses = info.parsed_addresses()
    if not addresses or len(props.get("node_id", "")) not in range(16, 65):
        return None
    host = addresses[0]
    address = f"[{host}]:{info.port}" if ":" in host else f"{host}:{info.port}"
    return {"node_id": props["node_id"], "address": address, "name": props.get("name", "")[:64]}
