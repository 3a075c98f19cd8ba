"""A small real stand-in for ztunnel: the part of it that decides where bytes go.

In ambient mode no proxy runs in the pod. The node's ztunnel is handed the pod's network
namespace and opens its sockets *inside* it, so to the kernel they are local sockets of the
pod. This program does the same in the lab: it runs inside the pod's namespace (as root: it
needs CAP_NET_ADMIN for ``SO_MARK`` and ``IP_TRANSPARENT``) and

* marks **every** socket it makes with ``SO_MARK 0x539`` (1337). That mark, not a UID, is
  what the in-pod rules exempt (``-m mark ! --mark 0x539/0xfff``): without it ztunnel's
  own connections would be captured again;
* listens, with ``IP_TRANSPARENT``, on 15001 (the pod's outbound traffic, REDIRECTed there
  by nat OUTPUT), 15006 (plaintext inbound, REDIRECTed there by nat PREROUTING), 15008
  (HBONE inbound: the rules never redirect it) and 15053 (DNS, TCP and UDP);
* **outbound** (15001): reads the original destination (``SO_ORIGINAL_DST``), turns a
  Service VIP into an endpoint, and then either opens a *tunnel* to a mesh workload (a
  plain TCP connection to the workload's pod IP on 15008 whose first line names the real
  target, ``CONNECT 10.244.0.9:9080``: HBONE without its mTLS and HTTP/2, which are not
  modelled) or, for a destination outside the mesh, connects to it straight
  (passthrough);
* **inbound** (15008 after the ``CONNECT`` line, or 15006 with the original destination):
  connects to the application *from the client's own address*: ``IP_FREEBIND`` and
  ``IP_TRANSPARENT`` let it bind an address that is not the pod's (port 0: the kernel
  chooses). That packet leaves by ``lo``, mangle PREROUTING gives its connection connmark
  0x111, and the app's replies get mark 0x111 back in mangle OUTPUT, which the pod's ``ip
  rule fwmark 0x111/0xfff lookup 100`` routes to ``lo`` and so back to this socket. So the
  application sees the real client IP. When the client's address *is* the target's (a
  pod calling itself), it connects without binding, as ztunnel does;
* **DNS** (UDP 15053, where nat OUTPUT REDIRECTs the app's queries): forwards each query
  to ``--dns-upstream`` (the pod's resolver, kube-dns's VIP: a UDP socket cannot read the
  original destination) from a marked socket - raw OUTPUT gives that query conntrack zone 1,
  and raw PREROUTING the answer - and sends the answer back to the app from the address the
  query arrived on, so conntrack un-NATs it to the address the app asked. DNS over TCP
  (TCP 15053) goes on to the original destination, relayed like any connection (to
  ``--dns-upstream`` when the app called 15053 itself);
* **closes** what it cannot serve: a connection made to 15001 itself, an inbound one whose
  target is not this pod or is one of ztunnel's own ports, a Service port that does not
  exist, an HBONE connection without a ``CONNECT`` line;
* relays bytes both ways, each relay bounded in time.

Unlike the lab's sidecar proxy (which asks the model's Envoy what to do), these decisions
are the stand-in's own, written from ztunnel's behaviour, not taken from
:mod:`meshlab.istio.ztunnel`: when the lab and the model agree, they agree as two readings
of ztunnel, not by construction.

**Hop limit.** Every connection of the lab starts with the header line of
:mod:`meshlab.live.wire` (``{"id": ..., "hops": ...}``). ztunnel reads it, forwards it with
``hops + 1`` and refuses a request that arrives with ``hops`` at ``--hop-limit``. So a loop
(its own connections captured again, when the mark conditions are removed) stops after a
known number of turns.

**Log.** One JSON line per step in ``--log`` (``event``: ``accept`` | ``decide`` | ``open`` |
``upstream-error`` | ``close`` | ``hop-limit``; ``decide`` names the route: ``hbone``,
``passthrough``, ``inbound``, ``dns`` or ``close``), with the request id, as the lab's
sidecar proxy writes them, so the lab reads both the same way.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import select
import socket
import struct
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from meshlab.live import wire
from meshlab.live.app import Recorder, _arrival, _exit_when_stdin_closes, udp_socket
from meshlab.live.proxy import relay

MARK = 0x539
"""``SO_MARK`` on every socket ztunnel makes in a pod (istio-cni's ``InpodMark``, 1337)."""
OUTBOUND_PORT = 15001
INBOUND_PLAINTEXT_PORT = 15006
HBONE_PORT = 15008
DNS_PORT = 15053
OWN_PORTS = frozenset((OUTBOUND_PORT, INBOUND_PLAINTEXT_PORT, HBONE_PORT, DNS_PORT))
IP_FREEBIND = 15
"""``linux/in.h``: bind an address that is not (yet) configured on this host."""
CONNECT_TIMEOUT = 0.6
"""How long an upstream connect may take. Less than the lab client's own wait (2 s), so a
connection that cannot complete (the app's reply routed away) is reported, not hung; and
less than TCP's first SYN retransmission (1 s). When the app's SYN-ACK leaves by eth0 to the
client's real address, the client answers it with a RST that closes the conntrack entry
(its tuple is the one ztunnel's SYN used), so a retransmitted SYN would be a *second* NEW
connection, counted again by nat: one connection attempt must be one SYN."""


def marked_socket(family: socket.AddressFamily = socket.AF_INET) -> socket.socket:
    """A TCP socket carrying ztunnel's mark: the in-pod rules let its packets through."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, MARK)
    return sock


def listener(port: int, host: str = "0.0.0.0") -> socket.socket:
    """A marked, transparent listening socket on host:port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = marked_socket(family)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, wire.IPV6_TRANSPARENT, 1)
    else:
        sock.setsockopt(socket.SOL_IP, wire.IP_TRANSPARENT, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


def parse_endpoint(text: str) -> tuple[str, int]:
    """``"10.244.0.9:9080"`` or ``"[fd00::9]:9080"`` -> (host, port)."""
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class Route:
    """Where ztunnel sends one connection: the socket to open and what it carries."""

    kind: str                       # hbone | passthrough | inbound | dns | close
    target: tuple[str, int] | None  # the real destination (the app, the peer's app ...)
    connect_to: tuple[str, int] | None   # where the socket connects (a peer's 15008 ...)
    bind_source: str | None = None  # inbound: the client's address (transparent bind)

    def as_json(self) -> dict[str, Any]:
        return {"route": self.kind,
                "target": wire.socket_endpoint(self.target) if self.target else None,
                "upstream": wire.socket_endpoint(self.connect_to) if self.connect_to else None,
                "bind_source": self.bind_source, "mark": MARK}


class Ztunnel:
    """The decisions (:meth:`outbound`, :meth:`inbound`) and the plumbing around them."""

    def __init__(self, pod_ip: str, mesh: Sequence[str], services: Sequence[Mapping[str, Any]],
                 recorder: Recorder, hop_limit: int,
                 dns_upstream: tuple[str, int] | None = None) -> None:
        self.pod_ip = pod_ip
        self.mesh = {str(ipaddress.ip_address(a)) for a in mesh}
        self.services = services
        self.recorder = recorder
        self.hop_limit = hop_limit
        self.dns_upstream = dns_upstream

    # -- decisions ---------------------------------------------------------------------
    def resolve(self, dst: tuple[str, int]) -> tuple[str, int] | None:
        """A Service VIP:port becomes its first endpoint:targetPort (ztunnel load-balances
        itself; the lab's Services have one endpoint), None when the Service has no such
        port; anything else stays itself."""
        for svc in self.services:
            if svc["vip"] == dst[0]:
                for port, target in svc["ports"]:
                    if port == dst[1] and svc.get("endpoints"):
                        return str(svc["endpoints"][0]), int(target)
                return None
        return dst

    def outbound(self, odst: tuple[str, int], local: tuple[str, int]) -> Route:
        """The app's connection, captured to 15001: tunnel to a mesh workload, or straight."""
        if odst == local:   # made to 15001 itself, not redirected: nowhere to go
            return Route("close", None, None)
        target = self.resolve(odst)
        if target is None:
            return Route("close", odst, None)
        if target[1] in OWN_PORTS and (target[0] == self.pod_ip
                                       or ipaddress.ip_address(target[0]).is_loopback):
            return Route("close", target, None)   # to ztunnel itself
        if target[0] in self.mesh:
            return Route("hbone", target, (target[0], HBONE_PORT))
        return Route("passthrough", target, target)

    def inbound(self, target: tuple[str, int], client: tuple[str, int]) -> Route:
        """A connection for the app (from 15008 or 15006): to it, from the client's IP.
        Closed when its target is one of ztunnel's own ports or not this pod."""
        if target[1] in OWN_PORTS or target[0] != self.pod_ip:
            return Route("close", target, None)
        source = None if client[0] == target[0] else client[0]
        return Route("inbound", target, target, source)

    # -- one connection ------------------------------------------------------------------
    def handle(self, conn: socket.socket, port: int) -> None:
        with conn:
            conn.settimeout(2.0)
            local, peer = conn.getsockname()[:2], conn.getpeername()[:2]
            odst = wire.original_dst(conn) or local
            connect_line = ""
            try:
                # a tunnel starts with its CONNECT line, then the request's header; on 15008
                # that is expected, on 15001/15006 it is ztunnel's own tunnel captured again
                # (a loop: the hop count must survive it)
                first = wire.read_line(conn)
                if first.startswith(b"CONNECT "):
                    connect_line = first.decode(errors="replace")
                    first = wire.read_line(conn)
                head = wire.parse_header(first)
            except OSError:
                head = {"id": "?", "hops": 0}
            base = {"id": head["id"], "hops": head["hops"], "listener_port": port}
            self.recorder.record({"event": "accept", **base, "local": wire.socket_endpoint(local),
                                  "peer": wire.socket_endpoint(peer),
                                  "original_dst": wire.socket_endpoint(odst),
                                  **({"connect": connect_line} if connect_line else {})})
            if port == DNS_PORT:   # DNS over TCP: on to the server the app asked (its
                # own resolver when the app asked ztunnel itself, not redirected)
                upstream = self.dns_upstream if odst == local else odst
                route = (Route("dns", upstream, upstream) if upstream else
                         Route("close", None, None))
            elif port == OUTBOUND_PORT:
                route = self.outbound(odst, local)
            elif port == HBONE_PORT:
                target = self._connect_target(connect_line)
                route = (self.inbound(target, peer) if target else
                         Route("close", None, None))
            else:
                route = self.inbound(odst, peer)
            self.recorder.record({"event": "decide", **base, **route.as_json()})
            if head["hops"] >= self.hop_limit:
                self.recorder.record({"event": "hop-limit", **base})
                wire.send_json(conn, {"error": "hop limit", "id": head["id"],
                                      "hops": head["hops"]})
                return
            if route.connect_to is None:
                self.recorder.record({"event": "close", **base})
                return
            self.forward(conn, route, base)

    @staticmethod
    def _connect_target(line: str) -> tuple[str, int] | None:
        words = line.split()
        if len(words) != 2 or words[0] != "CONNECT":
            return None
        try:
            return parse_endpoint(words[1])
        except ValueError:
            return None

    def forward(self, conn: socket.socket, route: Route, base: dict[str, Any]) -> None:
        assert route.connect_to is not None and route.target is not None
        family = socket.AF_INET6 if ":" in route.connect_to[0] else socket.AF_INET
        with marked_socket(family) as upstream:
            upstream.settimeout(CONNECT_TIMEOUT)
            try:
                if route.bind_source:
                    level = socket.IPPROTO_IPV6 if family == socket.AF_INET6 else socket.SOL_IP
                    option = wire.IPV6_TRANSPARENT if family == socket.AF_INET6 else \
                        wire.IP_TRANSPARENT
                    upstream.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
                    upstream.setsockopt(level, option, 1)
                    upstream.bind((route.bind_source, 0))
                upstream.connect(route.connect_to)
            except OSError as error:
                reason = "timed out" if isinstance(error, TimeoutError) else (
                    error.strerror or str(error))
                self.recorder.record({"event": "upstream-error", **base,
                                      "upstream": wire.socket_endpoint(route.connect_to),
                                      "error": reason})
                wire.send_json(conn, {"error": f"upstream {reason}", "id": base["id"]})
                return
            self.recorder.record({"event": "open", **base,
                                  "local": wire.socket_endpoint(upstream.getsockname()),
                                  "upstream": wire.socket_endpoint(route.connect_to)})
            upstream.settimeout(2.0)
            if route.kind == "hbone":
                upstream.sendall(f"CONNECT {wire.socket_endpoint(route.target)}\n".encode())
            upstream.sendall(wire.header(base["id"], base["hops"] + 1))
            relay(conn, upstream)

    def dns(self, sock: socket.socket) -> None:
        """One UDP query on 15053: forward it upstream (marked), relay the answer back."""
        try:
            data, ancdata, _flags, client = sock.recvmsg(65536, socket.CMSG_SPACE(32))
        except OSError:
            return
        arrived = _arrival(ancdata, sock.getsockname())
        head = wire.parse_header(data.split(b"\n", 1)[0])
        base = {"id": head["id"], "hops": head["hops"], "listener_port": DNS_PORT}
        self.recorder.record({"event": "accept", **base, "proto": "udp",
                              "local": arrived, "peer": wire.socket_endpoint(client[:2]),
                              "original_dst": None})   # not readable from a UDP socket
        upstream = self.dns_upstream
        where = wire.socket_endpoint(upstream) if upstream else None
        self.recorder.record({"event": "decide", **base, "route": "dns" if upstream else
                              "close", "upstream": where, "mark": MARK})
        if upstream is None:
            return
        if head["hops"] >= self.hop_limit:
            self.recorder.record({"event": "hop-limit", **base})
            return
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as up:
            up.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, MARK)
            up.settimeout(CONNECT_TIMEOUT)
            try:
                up.connect(upstream)
                up.send(wire.header(base["id"], base["hops"] + 1))
                self.recorder.record({"event": "open", **base, "proto": "udp",
                                      "local": wire.socket_endpoint(up.getsockname()),
                                      "upstream": wire.socket_endpoint(upstream)})
                answer = up.recv(65536)
            except OSError as error:
                self.recorder.record({"event": "upstream-error", **base,
                                      "upstream": wire.socket_endpoint(upstream),
                                      "error": error.strerror or str(error)})
                return
        host = arrived.rsplit(":", 1)[0]
        info = struct.pack("=i4s4s", 0, socket.inet_aton(host), b"\0" * 4)
        try:   # from the arrival address (127.0.0.1 after REDIRECT): conntrack un-NATs it
            sock.sendmsg([answer], [(socket.SOL_IP, wire.IP_PKTINFO, info)], 0, client)
        except OSError as error:
            self.recorder.record({"event": "answer-dropped", **base,
                                  "error": error.strerror or str(error)})

    def serve(self, ports: Sequence[int], ipv6: bool = False) -> None:
        sockets = {}
        for port in ports:
            for host in ("0.0.0.0", "::") if ipv6 else ("0.0.0.0",):
                sockets[listener(port, host)] = port
        dns = dns_listener() if self.dns_upstream else None
        print("READY", flush=True)
        while True:
            readable, _, _ = select.select(list(sockets) + ([dns] if dns else []), [], [])
            for sock in readable:
                if sock is dns:
                    self.dns(sock)
                    continue
                try:
                    conn, _ = sock.accept()
                except OSError:
                    continue
                threading.Thread(target=self.handle, args=(conn, sockets[sock]),
                                 daemon=True).start()


def dns_listener() -> socket.socket:
    """UDP 0.0.0.0:15053, marked and transparent, learning each query's arrival address."""
    sock = udp_socket("0.0.0.0", DNS_PORT)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, MARK)
    sock.setsockopt(socket.SOL_IP, wire.IP_TRANSPARENT, 1)
    sock.setblocking(False)
    return sock


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pod-ip", required=True)
    parser.add_argument("--mesh", default="", help="comma-separated pod IPs of mesh workloads "
                        "(each served by a ztunnel listening on 15008)")
    parser.add_argument("--services", default="[]", help="JSON list of services "
                        '({"vip": ..., "ports": [[port, targetPort]], "endpoints": [...]})')
    parser.add_argument("--hop-limit", type=int, default=8)
    parser.add_argument("--dns-upstream", help="IP:PORT to forward DNS queries to (UDP "
                        "15053 is served only with it)")
    parser.add_argument("--ipv6", action="store_true", help="also listen on ::")
    parser.add_argument("--log")
    parser.add_argument("--ttl", type=float, default=900.0)
    args = parser.parse_args(argv)
    _exit_when_stdin_closes(args.ttl)
    ztunnel = Ztunnel(args.pod_ip, [a for a in args.mesh.split(",") if a],
                      json.loads(args.services), Recorder(args.log), args.hop_limit,
                      parse_endpoint(args.dns_upstream) if args.dns_upstream else None)
    try:
        ztunnel.serve([OUTBOUND_PORT, INBOUND_PLAINTEXT_PORT, HBONE_PORT, DNS_PORT],
                      ipv6=args.ipv6)
    except OSError as error:
        print(f"ERROR ztunnel cannot listen: {error}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
