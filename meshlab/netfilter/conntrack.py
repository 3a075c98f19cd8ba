"""Connection tracking: what the kernel remembers about each connection.

The first packet of a connection creates an entry with two tuples: the *original* one (as the
client sent it) and the *reply* one (what the answer will look like). NAT is recorded by making
the reply tuple differ: after ``REDIRECT --to-ports 15001`` a connection
``10.244.0.5:40000 -> 10.244.0.9:8080`` has reply tuple ``127.0.0.1:15001 -> 10.244.0.5:40000``.
Two things follow, and both are modelled here:

* later packets and replies are translated by this table, never by the nat rules again;
* the proxy that accepts the redirected connection asks for the original destination with
  ``getsockopt(SOL_IP, SO_ORIGINAL_DST)``, which looks the socket's own tuple up in the reply
  direction and returns the original tuple's destination (:meth:`ConntrackTable.original_dst`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

from meshlab.errors import MeshlabError
from meshlab.netfilter.packet import IPAddress, endpoint


class FlowTuple(NamedTuple):
    """One direction of a connection: source and destination address and port."""

    src: IPAddress
    sport: int
    dst: IPAddress
    dport: int

    def __str__(self) -> str:
        return f"{endpoint(self.src, self.sport)} -> {endpoint(self.dst, self.dport)}"

    def inverted(self) -> FlowTuple:
        return FlowTuple(self.dst, self.dport, self.src, self.sport)


@dataclass(frozen=True)
class Connection:
    """A conntrack entry as ``conntrack -L`` shows it: protocol, both tuples, zone and mark."""

    proto: str
    original: FlowTuple
    reply: FlowTuple
    zone: int = 0
    mark: int = 0

    @property
    def original_dst(self) -> tuple[IPAddress, int]:
        return self.original.dst, self.original.dport

    @property
    def natted(self) -> bool:
        """Whether NAT changed the connection (the reply is not just the original reversed)."""
        return self.reply != self.original.inverted()

    def __str__(self) -> str:
        zone = f" zone={self.zone}" if self.zone else ""
        mark = f" mark={self.mark}" if self.mark else ""
        return f"{self.proto} src/dst {self.original}  reply {self.reply}{zone}{mark}"


class ConntrackTable:
    """All connections of one namespace, found by either direction's tuple (and zone)."""

    def __init__(self) -> None:
        self._by_tuple: dict[tuple[str, int, FlowTuple], Connection] = {}
        self._entries: list[Connection] = []

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Connection]:
        return iter(self._entries)

    def add(self, conn: Connection) -> None:
        """Confirm a new entry (the kernel does this when the first packet leaves POSTROUTING
        or INPUT). A clash with an existing tuple is refused, as the kernel drops the packet."""
        keys = ((conn.proto, conn.zone, conn.original), (conn.proto, conn.zone, conn.reply))
        for key in keys:
            if key in self._by_tuple:
                raise MeshlabError(
                    f"conntrack already has a connection using {key[2]}; pick another source "
                    "port (sport) for the new connection")
        for key in keys:
            self._by_tuple[key] = conn
        self._entries.append(conn)

    def find(self, proto: str, flow: FlowTuple, zone: int = 0) -> Connection | None:
        """The connection a packet with this tuple belongs to, in either direction."""
        return self._by_tuple.get((proto, zone, flow))

    def original_dst(self, proto: str, local: tuple[IPAddress, int],
                     peer: tuple[IPAddress, int], zone: int = 0) -> tuple[IPAddress, int]:
        """What ``getsockopt(SOL_IP, SO_ORIGINAL_DST)`` returns on an accepted socket whose own
        address is ``local`` and whose peer is ``peer``."""
        reply = FlowTuple(local[0], local[1], peer[0], peer[1])
        conn = self._by_tuple.get((proto, zone, reply))
        if conn is None or conn.reply != reply:
            raise MeshlabError(
                f"no {proto} connection from {endpoint(*peer)} to {endpoint(*local)} in "
                "conntrack (SO_ORIGINAL_DST fails with ENOENT); trace the connection first")
        return conn.original_dst

    def reply_for(self, conn: Connection) -> FlowTuple:
        """How the server's answer looks once conntrack has translated it for the client: it
        comes from the address the client dialled, not from where NAT sent the connection."""
        return conn.original.inverted()
