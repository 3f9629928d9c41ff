"""HOST:PORT addresses as the CLI, the KWL and HELLO write them."""

from __future__ import annotations

import ipaddress


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
