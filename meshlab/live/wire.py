"""The few bytes the lab's processes say to each other, and how to ask the kernel where a
redirected connection was going.

Every connection in the lab starts with one line of JSON, the *header*, sent by whoever
opens the connection::

    {"id": "c17", "hops": 0}\\n

``id`` ties the client's request, the proxy's log lines and the application's answer
together. ``hops`` counts how many times the real proxy has already relayed this request:
the proxy reads the header, adds one, and writes the new header on its upstream connection.
When a request arrives with ``hops`` at the proxy's limit, the proxy refuses it. That is how
a routing loop (for example the proxy's own traffic captured again because the UID 1337
exemption was removed) ends by itself after a known number of turns instead of exhausting
ports and file descriptors.

The server at the end of the path (the application, or a peer) answers with one line of JSON
saying what it saw: which listening port accepted, its local address, the peer address
(this is the "source the application sees", 127.0.0.6 behind the sidecar) and, when the
kernel has one, the original destination of the connection.

``SO_ORIGINAL_DST`` (``getsockopt(SOL_IP, 80)``) returns a ``struct sockaddr_in`` (16 bytes:
family, port in network order, IPv4 address, 8 bytes of padding) taken from the conntrack
entry of an accepted socket: the destination the client asked for before REDIRECT or DNAT
rewrote it. Without a conntrack entry (no nat rules loaded in the namespace) the call fails
with ``ENOENT``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
from typing import Any

from meshlab.netfilter.packet import endpoint

SO_ORIGINAL_DST = 80
"""``linux/netfilter_ipv4.h``: the getsockopt option that reads conntrack's original tuple."""

IP_TRANSPARENT = 19
"""``linux/in.h``: lets a listening socket accept connections TPROXY steers to it."""

IPV6_TRANSPARENT = 75
"""``linux/in6.h``: IP_TRANSPARENT's IPv6 twin."""

IP_RECVORIGDSTADDR = 20
"""``linux/in.h`` (``IP_ORIGDSTADDR``): a UDP socket asks for each datagram's destination
address and port as a control message - the address the datagram arrived on *after* any
REDIRECT/DNAT (TPROXY does not rewrite, so there it is the original one)."""

IP_PKTINFO = 8
"""``linux/in.h`` (Python's socket module lacks it): as a ``sendmsg`` control message
(``struct in_pktinfo``), picks the source address of a datagram sent from an unbound socket."""

IPV6_RECVORIGDSTADDR = 74
"""``linux/in6.h``: the same for IPv6 sockets."""

MAX_HEADER = 4096
"""A header longer than this is a protocol error (the reader stops there)."""


def header(request_id: str, hops: int = 0) -> bytes:
    """The first line a client writes on a new connection."""
    return (json.dumps({"id": request_id, "hops": hops}, separators=(",", ":")) + "\n").encode()


def read_line(sock: socket.socket, limit: int = MAX_HEADER) -> bytes:
    """Read one ``\\n``-terminated line byte by byte (so nothing after it is consumed).

    The socket's own timeout bounds the wait. Returns what was read, without the newline;
    an empty result means the peer closed before sending anything.
    """
    data = bytearray()
    while len(data) < limit:
        chunk = sock.recv(1)
        if not chunk or chunk == b"\n":
            break
        data += chunk
    return bytes(data)


def parse_header(line: bytes) -> dict[str, Any]:
    """Decode a header line; a malformed one becomes ``{"id": "?", "hops": 0}``."""
    try:
        value = json.loads(line.decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {"id": "?", "hops": 0}
    if not isinstance(value, dict):
        return {"id": "?", "hops": 0}
    return {"id": str(value.get("id", "?")), "hops": int(value.get("hops", 0))}


def socket_endpoint(address: tuple) -> str:
    """A socket address as :func:`meshlab.netfilter.packet.endpoint` writes it:
    ``("10.244.0.5", 9080)`` -> ``"10.244.0.5:9080"``; an IPv6 socket address
    ``("fd00:244::5", 9080, 0, 0)`` -> ``"[fd00:244::5]:9080"``."""
    return endpoint(str(address[0]), address[1])


def original_dst(sock: socket.socket) -> tuple[str, int] | None:
    """What conntrack says this accepted connection was originally sent to, or None.

    ``struct sockaddr_in`` is ``sa_family (2 bytes, host order) | sin_port (2, network
    order) | sin_addr (4) | zero (8)``. For an IPv6 socket the option is
    ``IP6T_SO_ORIGINAL_DST`` (also 80) at level ``SOL_IPV6``, returning a ``struct
    sockaddr_in6``: family (2) | port (2) | flowinfo (4) | address (16) | scope id (4).

    Only TCP (and SCTP) sockets can ask: on a UDP socket the kernel answers ENOPROTOOPT,
    so a UDP server learns where a REDIRECTed datagram arrived with
    :data:`IP_RECVORIGDSTADDR` instead (which reports the address *after* NAT).
    """
    if sock.family == socket.AF_INET6:
        try:
            raw = sock.getsockopt(socket.IPPROTO_IPV6, SO_ORIGINAL_DST, 28)
        except OSError:
            return None
        port, addr = struct.unpack("!2xH4x16s4x", raw)
        return socket.inet_ntop(socket.AF_INET6, addr), port
    try:
        raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    except OSError:
        return None
    port, addr = struct.unpack("!2xH4s8x", raw)
    return socket.inet_ntoa(addr), port


def send_json(sock: socket.socket, value: dict[str, Any]) -> None:
    """Write one JSON line (best effort: the peer may already be gone)."""
    with contextlib.suppress(OSError):
        sock.sendall((json.dumps(value, separators=(",", ":")) + "\n").encode())
