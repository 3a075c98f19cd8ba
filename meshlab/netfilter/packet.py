"""What netfilter sees of one packet.

A :class:`Packet` is a value: the protocol, the two endpoints, the interfaces it came in by or
goes out by, the owner of the socket that sent it (only for packets made in this namespace), and
the packet mark. The traversal in :mod:`meshlab.netfilter.kernel` works on a mutable copy of
these fields with addresses as integers, an :class:`Skb` (the kernel's ``sk_buff``), which also
carries what conntrack knows of the packet; a trace shows you the packet as each rule saw it,
as a :class:`Packet`.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

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


class Skb:
    """The packet under traversal (the kernel's ``sk_buff``): mutable, addresses as integers.

    Rules read it (:meth:`meshlab.netfilter.rules.Rule.matches`); targets change it.
    ``ctstate`` is ``INVALID`` until conntrack has seen the packet (raw runs before it), then
    ``NEW`` for a connection's first packet; ``ctmark`` is the connection's mark. ``ct_set``
    says a ``CT`` rule already gave the packet its conntrack template: later ``CT`` rules leave
    it alone.
    """

    __slots__ = ("ct_set", "ctmark", "ctstate", "dport", "dst", "gid", "iif", "mark", "oif",
                 "proto", "sport", "src", "tproxy", "tproxy_any", "uid", "zone")

    def __init__(self, proto: str, src: int, sport: int, dst: int, dport: int, *,
                 iif: str | None = None, oif: str | None = None, uid: int | None = None,
                 gid: int | None = None, mark: int = 0, ctstate: str = "INVALID",
                 ctmark: int = 0) -> None:
        self.proto, self.src, self.sport, self.dst, self.dport = proto, src, sport, dst, dport
        self.iif, self.oif, self.uid, self.gid, self.mark = iif, oif, uid, gid, mark
        self.ctmark, self.ctstate, self.zone = ctmark, ctstate, 0
        self.ct_set = False  # a CT rule already attached a template (zone / notrack)
        self.tproxy: tuple[int, int] | None = None
        self.tproxy_any = False  # TPROXY without --on-ip: the socket sees the packet's dst

    @classmethod
    def of(cls, packet: Packet, *, ctstate: str = "NEW", ctmark: int = 0) -> Skb:
        """The packet under traversal for a :class:`Packet` (a connection's first packet,
        unless ``ctstate`` says otherwise): to ask a rule about a packet of your own."""
        return cls(packet.proto, int(packet.src), packet.sport, int(packet.dst), packet.dport,
                   iif=packet.iif, oif=packet.oif, uid=packet.uid, gid=packet.gid,
                   mark=packet.mark, ctstate=ctstate, ctmark=ctmark)

    def snapshot(self) -> tuple[Any, ...]:
        """Everything a rule reads, as it is now (see :meth:`from_snapshot`)."""
        return (self.proto, self.src, self.sport, self.dst, self.dport, self.iif, self.oif,
                self.uid, self.gid, self.mark, self.ctstate, self.ctmark)

    @classmethod
    def from_snapshot(cls, snap: tuple[Any, ...]) -> Skb:
        proto, src, sport, dst, dport, iif, oif, uid, gid, mark, ctstate, ctmark = snap
        return cls(proto, src, sport, dst, dport, iif=iif, oif=oif, uid=uid, gid=gid, mark=mark,
                   ctstate=ctstate, ctmark=ctmark)

    def packet(self, version: int) -> Packet:
        """The packet as a rule sees it now, as a :class:`Packet` value."""
        return Packet(self.proto, address(self.src, version), self.sport,
                      address(self.dst, version), self.dport, self.iif, self.oif, self.uid,
                      self.gid, self.mark)


_ADDRESSES: tuple[dict[int, IPAddress], dict[int, IPAddress]] = ({}, {})  # IPv4, IPv6


def address(value: int, version: int) -> IPAddress:
    """The address object for the number ``value``: one shared object per address, as
    ``ipaddress`` objects are immutable and slow to make (a walk shows the same few dozens)."""
    made = _ADDRESSES[version == 6]
    ip = made.get(value)
    if ip is None:
        if len(made) > 4096:
            made.clear()
        ip = made[value] = IPv4Address(value) if version == 4 else IPv6Address(value)
    return ip
