"""A real TCP server that answers every connection with what it sees.

Run inside a namespace, as the application's UID (1000 in the pod), or as a stand-in for a
peer. It listens on one or more ports and, for each connection it accepts, reads the
one-line header (see :mod:`meshlab.live.wire`) and writes back one line of JSON::

    {"server": "app", "listener": 9080, "local": "10.244.0.5:9080",
     "peer": "127.0.0.6:41235", "original_dst": "10.244.0.5:9080", "id": "c3", "hops": 1}

``peer`` is the source address the application sees: 127.0.0.6 when the sidecar relayed
the connection (Istio binds its inbound upstream connections there), the real client
otherwise. Every accepted connection is also appended to the ``--log`` file as a JSON line.

The same program is the "catcher" of the per-connection checks: listening on the proxy's
ports without relaying, it shows which listening socket the kernel delivered a connection
to. With ``--transparent`` its sockets carry ``IP_TRANSPARENT`` so that a TPROXY rule may
hand them connections addressed elsewhere (this needs CAP_NET_ADMIN).

The process ends when its standard input closes (the lab that started it went away, however
it ended) or after ``--ttl`` seconds, whichever comes first: it can never outlive the lab.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import selectors
import socket
import struct
import sys
import threading
import time
from collections.abc import Sequence

from meshlab.live import wire


def _exit_when_stdin_closes(ttl: float) -> None:
    """End the process when the parent's pipe closes, or when the time-to-live runs out."""

    def watch() -> None:
        try:
            sys.stdin.buffer.read()
        finally:
            os._exit(0)

    threading.Thread(target=watch, daemon=True).start()
    threading.Timer(ttl, lambda: os._exit(0)).start()


class Recorder:
    """Appends JSON lines to a log file, one per event, flushed at once (thread-safe)."""

    def __init__(self, path: str | None) -> None:
        self._lock = threading.Lock()
        self._file = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115

    def record(self, event: dict[str, object]) -> None:
        if self._file is None:
            return
        line = json.dumps({"t": round(time.time(), 6), **event}, separators=(",", ":"))
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def listen(host: str, port: int, *, transparent: bool = False) -> socket.socket:
    """A listening TCP socket on host:port (SO_REUSEADDR, optionally IP_TRANSPARENT).

    An IPv6 host (``"::"``) gets an IPv6-only socket (``IPV6_V6ONLY``), so IPv4 connections
    keep arriving on the IPv4 socket with plain IPv4 addresses."""
    family = _family(host)
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    if transparent:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, wire.IPV6_TRANSPARENT, 1)
        else:
            sock.setsockopt(socket.SOL_IP, wire.IP_TRANSPARENT, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


def answer(conn: socket.socket, name: str, listener: int, recorder: Recorder) -> None:
    """Read the header, say what this end of the connection sees, close."""
    with conn:
        conn.settimeout(2.0)
        local = conn.getsockname()
        peer = conn.getpeername()
        odst = wire.original_dst(conn)
        try:
            head = wire.parse_header(wire.read_line(conn))
        except OSError:
            head = {"id": "?", "hops": 0}
        seen = {
            "server": name,
            "listener": listener,
            "local": wire.socket_endpoint(local),
            "peer": wire.socket_endpoint(peer),
            "original_dst": wire.socket_endpoint(odst) if odst else None,
            "id": head["id"],
            "hops": head["hops"],
        }
        recorder.record({"event": "accept", **seen})
        wire.send_json(conn, seen)


def parse_spec(spec: str, host: str) -> tuple[str, str, int]:
    """``"9080"``, ``"127.0.0.1:15053"``, ``"udp/53"`` -> (proto, host, port)."""
    proto, _, rest = spec.rpartition("/")
    where, _, port = rest.rpartition(":")
    return proto or "tcp", where or host, int(port)


def udp_socket(host: str, port: int) -> socket.socket:
    """A UDP socket on host:port that learns each datagram's arrival address.

    ``SO_ORIGINAL_DST`` does not work on UDP sockets (ENOPROTOOPT), and ``getsockname`` on a
    socket bound to 0.0.0.0 says 0.0.0.0. ``IP_RECVORIGDSTADDR`` makes the kernel attach the
    datagram's destination (address and port, as the packet had them when it reached the
    socket: after a REDIRECT that is 127.0.0.1:15053, not the DNS server's address) to every
    ``recvmsg``. Replying with ``sendto`` from this socket still reaches the client as coming
    from the address it asked: conntrack un-NATs the answer.
    """
    family = _family(host)
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, wire.IPV6_RECVORIGDSTADDR, 1)
    else:
        sock.setsockopt(socket.SOL_IP, wire.IP_RECVORIGDSTADDR, 1)
    sock.bind((host, port))
    return sock


def _arrival(ancdata: list[tuple[int, int, bytes]], fallback: tuple) -> str:
    """The ``IP_ORIGDSTADDR`` control message as ``IP:PORT`` (a ``sockaddr_in``/``_in6``)."""
    for level, kind, data in ancdata:
        if level == socket.SOL_IP and kind == wire.IP_RECVORIGDSTADDR and len(data) >= 8:
            port, addr = struct.unpack("!2xH4s", data[:8])
            return wire.socket_endpoint((socket.inet_ntoa(addr), port))
        if (level == socket.IPPROTO_IPV6 and kind == wire.IPV6_RECVORIGDSTADDR
                and len(data) >= 24):
            port, addr = struct.unpack("!2xH4x16s", data[:24])
            return wire.socket_endpoint((socket.inet_ntop(socket.AF_INET6, addr), port))
    return wire.socket_endpoint(fallback)


def answer_datagram(sock: socket.socket, name: str, listener: int, recorder: Recorder) -> None:
    """UDP: read one datagram (a header line), send back what this socket sees.

    ``local`` is where the datagram arrived (see :func:`udp_socket`). A datagram that is
    itself an answer (another catcher's JSON, with ``"server"`` in it) is recorded and *not*
    answered, as a DNS server drops responses (the QR bit): otherwise an answer that rules
    redirect to another catcher would bounce between the two for ever."""
    data, ancdata, _flags, peer = sock.recvmsg(65536, socket.CMSG_SPACE(32))
    line = data.split(b"\n", 1)[0]
    head = wire.parse_header(line)
    seen = {"server": name, "listener": listener,
            "local": _arrival(ancdata, sock.getsockname()),
            "peer": wire.socket_endpoint(peer), "original_dst": None, "id": head["id"],
            "hops": head["hops"], "proto": "udp"}
    if b'"server"' in line:
        recorder.record({"event": "answer-received", **seen})
        return
    recorder.record({"event": "datagram", **seen})
    reply = json.dumps(seen).encode() + b"\n"
    # Answer FROM the address the datagram arrived on (IP_PKTINFO's ipi_spec_dst, or
    # IPV6_PKTINFO's ipi6_addr): an unbound reply would take the route's source (10.244.0.5
    # for a REDIRECTed query that arrived on 127.0.0.1), which matches no conntrack reply
    # tuple - the client would never see it. Real DNS proxies do the same.
    host = seen["local"].rsplit(":", 1)[0].strip("[]")
    try:
        if sock.family == socket.AF_INET and host != "0.0.0.0":
            info = struct.pack("=i4s4s", 0, socket.inet_aton(host), b"\0" * 4)
            sock.sendmsg([reply], [(socket.SOL_IP, wire.IP_PKTINFO, info)], 0, peer)
        elif sock.family == socket.AF_INET6 and host != "::":
            info = struct.pack("=16si", socket.inet_pton(socket.AF_INET6, host), 0)
            sock.sendmsg([reply], [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, info)], 0,
                          peer)
        else:
            sock.sendto(reply, peer)
    except OSError as error:
        # A rule (or the lab's first-packet gate) that drops the answer in OUTPUT makes
        # sendmsg fail with EPERM: the answer is lost, the server goes on serving.
        recorder.record({"event": "answer-dropped", "error": error.strerror or str(error),
                         **seen})


def serve(name: str, host: str, specs: Sequence[str], *, transparent: bool,
          recorder: Recorder, ipv6: bool = False) -> None:
    """Serve every port forever; each TCP connection is answered on its own thread.

    With ``ipv6`` every port bound to the wildcard is also served on ``::`` (IPv6 only)."""
    selector = selectors.DefaultSelector()
    for spec in specs:
        proto, where, port = parse_spec(spec, host)
        hosts = [where] + (["::"] if ipv6 and where == "0.0.0.0" else [])
        for address in hosts:
            if proto == "udp":
                sock = udp_socket(address, port)
            else:
                sock = listen(address, port, transparent=transparent)
            # non-blocking: a connection reset between select() and accept(), or a
            # datagram that vanished, must never stall the one loop that serves every port
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ, (proto, port))
    print("READY", flush=True)
    while True:
        for key, _ in selector.select():
            sock = key.fileobj  # type: ignore[assignment]
            proto, port = key.data
            if proto == "udp":
                # OSError: nothing to read after all (the socket is non-blocking)
                with contextlib.suppress(OSError):
                    answer_datagram(sock, name, port, recorder)
                continue
            try:
                conn, _peer = sock.accept()
            except OSError:
                continue
            threading.Thread(target=answer, args=(conn, name, port, recorder),
                             daemon=True).start()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="app")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--ports", required=True,
                        help="comma-separated [udp/][HOST:]PORT, e.g. 9080,127.0.0.1:15053,udp/53")
    parser.add_argument("--log")
    parser.add_argument("--transparent", action="store_true")
    parser.add_argument("--ipv6", action="store_true", help="also listen on :: (IPv6)")
    parser.add_argument("--ttl", type=float, default=900.0)
    args = parser.parse_args(argv)
    _exit_when_stdin_closes(args.ttl)
    specs = [p for p in args.ports.split(",") if p]
    try:
        serve(args.name, args.host, specs, transparent=args.transparent,
              recorder=Recorder(args.log), ipv6=args.ipv6)
    except OSError as error:
        print(f"ERROR {args.name} cannot listen on {args.host}:{args.ports}: {error}", flush=True)
        os._exit(1)  # not `return`: the time-to-live timer thread would keep the process
    return 0


if __name__ == "__main__":
    sys.exit(main())
