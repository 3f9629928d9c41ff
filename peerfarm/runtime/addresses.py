"""HOST:PORT addresses as the CLI, the KWL and HELLO write them."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence

WILDCARDS = ("", "0.0.0.0", "::")
# TEST-NET-1 (RFC 5737): never a real host. Connecting a UDP socket to it sends nothing;
# it only asks the routing table which local address the default route (the LAN) uses.
LAN_PROBE = "192.0.2.1"


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_address(text: str) -> tuple[str, int]:
    """'HOST:PORT' (or '[v6]:PORT') -> (host, port), with a clear error."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{text!r} is not an address: expected HOST:PORT, e.g. 127.0.0.1:7100")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def from_this_machine(remote: str) -> bool:
    """A connection's far end ('HOST:PORT') is on this machine (loopback)."""
    try:
        return is_loopback(parse_address(remote)[0])
    except ValueError:
        return False


def route_source(host: str) -> str | None:
    """The local address this machine would send from to reach `host` (an IP address),
    from the routing table: a UDP socket is connected, no packet is sent. None when
    there is no route."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((host, 9))
            return str(s.getsockname()[0]).split("%")[0]
    except (OSError, ValueError):
        return None


def _resolve(host: str) -> list[str]:
    """The IP addresses of a host name (blocking: DNS)."""
    try:
        return list(dict.fromkeys(str(info[4][0]) for info in socket.getaddrinfo(host, None)))
    except OSError:
        return []


def _usable(address: str | None) -> bool:
    """An address peers on other machines can dial: not loopback, link-local or wildcard."""
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return not (ip.is_loopback or ip.is_link_local or ip.is_unspecified)


def advertised_host(
    listen_host: str,
    bootstrap_hosts: Sequence[str] = (),
    *,
    route: Callable[[str], str | None] = route_source,
    resolve: Callable[[str], list[str]] = _resolve,
) -> tuple[str, str]:
    """The host peers should dial, and why it was chosen (blocking: it may look names up).

    A node listening on one address gives that one. Listening on all of them, it gives
    the address of the interface that routes to the first bootstrap server it can route
    to, else the interface of the default route (the LAN), else loopback, which only
    this machine can dial (and only then: a VPN, Hyper-V, WSL or VirtualBox adapter, or
    the host name's own lookup, never decides). `--advertise` overrides all this.
    """
    if listen_host not in WILDCARDS:
        return listen_host, "the listen address"
    for name in bootstrap_hosts:
        for ip in resolve(name):
            if not _usable(ip):
                continue  # a bootstrap server on this machine says nothing of the LAN
            source = route(ip)
            if _usable(source):
                assert source is not None
                return source, f"the interface that reaches bootstrap server {name}"
    source = route(LAN_PROBE)
    if _usable(source):
        assert source is not None
        return source, "the interface of the default route (the LAN)"
    return "127.0.0.1", "no network interface routes anywhere: loopback, this machine only"
