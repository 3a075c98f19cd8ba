"""What netfilter sees of one packet.

A :class:`Packet` is a value: the protocol, the two endpoints, the interfaces it came in by or
goes out by, the owner of the socket that sent it (only for packets made in this namespace), and
the packet mark. The traversal in :mod:`meshlab.netfilter.kernel` works on a faster, mutable
copy of these fields; a trace shows you the packet as each rule saw it, as a :class:`Packet`.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address

IPAddress = IPv4Address | IPv6Address

PROTOCOLS = ("tcp", "udp")


@dataclass(frozen=True, slots=True)
class Packet:
    """One packet as a rule sees it.

    ``uid``/``gid`` belong to the socket that generated the packet; they are ``None`` for a
    packet that arrived from outside (and for a looped-back packet once it re-enters, because
    the kernel orphans it from its socket on ``lo``). That is why ``-m owner`` can only match
    in OUTPUT and POSTROUTING.
    """

    proto: str
    src: IPAddress
    sport: int
    dst: IPAddress
    dport: int
    iif: str | None = None
    oif: str | None = None
    uid: int | None = None
    gid: int | None = None
    mark: int = 0

    def __str__(self) -> str:
        return f"{self.proto} {endpoint(self.src, self.sport)} -> {endpoint(self.dst, self.dport)}"


def endpoint(ip: IPAddress | str, port: int) -> str:
    """``10.0.0.1:80`` or ``[::1]:80``: an address and port as people write them.

    The one formatter of endpoints in meshlab. ``ip`` is an address, or its text as a socket
    address holds it (``"fd00::5"``)."""
    if isinstance(ip, str):
        return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


def parse_endpoint(text: str) -> tuple[IPAddress, int]:
    """Read ``IP:PORT`` (``[v6]:PORT`` for IPv6); raises ``ValueError`` with a readable reason."""
    text = text.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{text!r} is not IP:PORT (for example 10.244.0.9:8080 or [::1]:80)")
    ip = ip_address(host)
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"port {port!r} in {text!r} is not a number from 0 to 65535")
    return ip, int(port)
