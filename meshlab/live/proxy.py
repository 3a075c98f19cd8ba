"""A small real sidecar proxy: the part of Envoy that decides where bytes go.

It runs inside the pod namespace as Envoy does: UID/GID 1337 (the identity istio-iptables
exempts), or in TPROXY mode UID 0 with GID 1337 (Istio runs istio-proxy as root there, for
the NET_ADMIN that ``IP_TRANSPARENT`` needs; only the ``--gid-owner 1337`` rules recognise
it). It listens on 0.0.0.0:15001 (``virtualOutbound``) and 0.0.0.0:15006 (``virtualInbound``,
``IP_TRANSPARENT`` in TPROXY mode, where the original destination is the accepted socket's
own address: TPROXY does not rewrite it). For each connection it accepts it:

1. asks the kernel for the original destination (``SO_ORIGINAL_DST``; conntrack kept it when
   REDIRECT rewrote the destination to 15001/15006). Without a NAT entry the connection was
   made to the listener directly, and its own address is the original destination;
2. asks the *model's* simplified Envoy, :meth:`meshlab.istio.envoy.Sidecar.decide`, which
   listener, filter chain and cluster apply: ``BlackHoleCluster`` for a connection made
   straight to 15001/15006 (closed at once), an ``inbound|PORT||`` cluster (connect to the
   original destination from 127.0.0.6; in TPROXY mode from the *client's* address, as
   Envoy's ``original_src`` listener filter does: ``IP_TRANSPARENT`` to bind an address that
   is not ours, and ``SO_MARK`` 1337 so that the mangle rules and the ``ip rule fwmark 1337``
   route send the application's answers back to us) or a passthrough / ``outbound|...`` cluster
   (connect to the original destination or a service endpoint). The real proxy therefore
   cannot disagree with the model about Envoy; any disagreement the lab finds is about the
   kernel. (If that module cannot be imported, a built-in copy of the same three decisions is
   used and every log line says ``"decider": "builtin"``.);
3. opens the upstream connection, which the kernel sends through the nat OUTPUT chain
   again, exactly as it does for the real Envoy, and relays bytes both ways.

**Hop limit.** Each request starts with a one-line header carrying a hop counter (see
:mod:`meshlab.live.wire`). The proxy forwards ``hops + 1``; a request that arrives with
``hops >= --hop-limit`` is answered ``{"error": "hop limit"}`` and closed. So a loop (the
proxy's own upstream captured back to 15001) stops after exactly ``--hop-limit`` turns,
and the log shows each turn.

**Log.** Every accept, decision, upstream open, failure and hop-limit stop is one JSON line
in ``--log`` (``event``: ``accept`` | ``decide`` | ``open`` | ``upstream-error`` |
``blackhole`` | ``hop-limit``), with the request id and hop count.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import select
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from meshlab.live import wire
from meshlab.live.app import Recorder, _exit_when_stdin_closes, listen

RELAY_SECONDS = 10.0
"""Upper bound on how long one relayed connection may stay open."""


@dataclass(frozen=True)
class Decision:
    """What the proxy will do with one accepted connection (a flat ProxyDecision)."""

    listener: str
    filter_chain: str
    cluster: str
    upstream: tuple[str, int] | None
    bind_source: str | None
    decider: str
    mark: int = 0   # SO_MARK for the upstream socket (TPROXY's original_src: 1337)

    def as_json(self) -> dict[str, Any]:
        return {
            "listener": self.listener,
            "filter_chain": self.filter_chain,
            "cluster": self.cluster,
            "upstream": wire.socket_endpoint(self.upstream) if self.upstream else None,
            "bind_source": self.bind_source,
            "decider": self.decider,
            "mark": self.mark,
        }


Decider = Callable[[int, tuple[str, int], tuple[str, int]], Decision]
"""(listener port, original destination, downstream peer) -> Decision."""


def builtin_decider(outbound_port: int, inbound_port: int, inbound_ports: Sequence[int]) -> Decider:
    """The model's three decisions, for when :mod:`meshlab.istio.envoy` is not available."""

    def decide(listener_port: int, odst: tuple[str, int], peer: tuple[str, int]) -> Decision:
        port = odst[1]
        if listener_port == inbound_port:
            if port == inbound_port:
                return Decision("virtualInbound", "virtualInbound-blackhole", "BlackHoleCluster",
                                None, None, "builtin")
            cluster = f"inbound|{port}||" if port in inbound_ports else "InboundPassthroughCluster"
            return Decision("virtualInbound", f"0.0.0.0_{port}", cluster, odst, "127.0.0.6",
                            "builtin")
        if port == outbound_port:
            return Decision("virtualOutbound", "virtualOutbound-blackhole", "BlackHoleCluster",
                            None, None, "builtin")
        return Decision("virtualOutbound", "virtualOutbound-catchall-tcp", "PassthroughCluster",
                        odst, None, "builtin")

    return decide


def model_decider(args: argparse.Namespace) -> Decider | None:
    """Wrap ``Sidecar.decide`` from the model, or None when the module is missing."""
    try:
        from meshlab.istio import envoy
    except ImportError:
        return None
    services = []
    for spec in json.loads(args.services or "[]"):
        services.append(envoy.Service(
            name=spec["name"], namespace=spec.get("namespace", "default"),
            vip=ipaddress.ip_address(spec["vip"]),
            ports=tuple(envoy.ServicePort(port=p[0], target_port=p[1]) for p in spec["ports"]),
            endpoints=tuple(ipaddress.ip_address(e) for e in spec.get("endpoints", ())),
        ))
    sidecar = envoy.Sidecar.build(
        pod_ip=ipaddress.ip_address(args.pod_ip), inbound_ports=args.inbound_ports,
        services=services, interception_mode=args.mode,
        proxy_port=args.outbound_port, inbound_port=args.inbound_port)

    def decide(listener_port: int, odst: tuple[str, int], peer: tuple[str, int]) -> Decision:
        d = sidecar.decide(listener_port, (ipaddress.ip_address(odst[0]), odst[1]),
                           downstream=(ipaddress.ip_address(peer[0]), peer[1]))
        upstream = (str(d.upstream[0]), int(d.upstream[1])) if d.upstream else None
        bind = str(d.bind_source) if d.bind_source is not None else None
        return Decision(d.listener, d.filter_chain, d.cluster, upstream, bind,
                        "meshlab.istio.envoy", int(getattr(d, "mark", 0) or 0))

    return decide


class Proxy:
    """Accepts, decides, connects upstream, relays; logs every step."""

    def __init__(self, decide: Decider, recorder: Recorder, *, hop_limit: int,
                 transparent: bool) -> None:
        self.decide = decide
        self.recorder = recorder
        self.hop_limit = hop_limit
        self.transparent = transparent

    def handle(self, conn: socket.socket, listener_port: int) -> None:
        with conn:
            conn.settimeout(2.0)
            local, peer = conn.getsockname(), conn.getpeername()
            odst = wire.original_dst(conn) or local
            try:
                head = wire.parse_header(wire.read_line(conn))
            except OSError:
                head = {"id": "?", "hops": 0}
            rid, hops = head["id"], head["hops"]
            base = {"id": rid, "hops": hops, "listener_port": listener_port}
            self.recorder.record({"event": "accept", **base, "local": wire.socket_endpoint(local),
                                  "peer": wire.socket_endpoint(peer),
                                  "original_dst": wire.socket_endpoint(odst)})
            decision = self.decide(listener_port, odst, peer)
            self.recorder.record({"event": "decide", **base, **decision.as_json()})
            if hops >= self.hop_limit:
                self.recorder.record({"event": "hop-limit", **base})
                wire.send_json(conn, {"error": "hop limit", "id": rid, "hops": hops})
                return
            if decision.upstream is None:
                self.recorder.record({"event": "blackhole", **base})
                return
            self.forward(conn, decision, base)

    def forward(self, conn: socket.socket, decision: Decision, base: dict[str, Any]) -> None:
        upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with upstream:
            upstream.settimeout(2.0)
            try:
                if decision.mark:
                    upstream.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, decision.mark)
                if decision.bind_source:
                    if self.transparent:
                        upstream.setsockopt(socket.SOL_IP, wire.IP_TRANSPARENT, 1)
                    upstream.bind((decision.bind_source, 0))
                assert decision.upstream is not None
                upstream.connect(decision.upstream)
            except OSError as error:
                self.recorder.record({"event": "upstream-error", **base,
                                      "upstream": wire.socket_endpoint(
                                          decision.upstream or ("?", 0)),
                                      "error": error.strerror or str(error)})
                wire.send_json(conn, {"error": "upstream " + (error.strerror or str(error)),
                                      "id": base["id"]})
                return
            self.recorder.record({"event": "open", **base,
                                  "local": wire.socket_endpoint(upstream.getsockname()),
                                  "upstream": wire.socket_endpoint(decision.upstream)})
            upstream.sendall(wire.header(base["id"], base["hops"] + 1))
            relay(conn, upstream)

    def serve(self, ports: Sequence[int]) -> None:
        sockets = {listen("0.0.0.0", p, transparent=self.transparent): p for p in ports}
        print("READY", flush=True)
        while True:
            readable, _, _ = select.select(list(sockets), [], [])
            for sock in readable:
                try:
                    conn, _ = sock.accept()
                except OSError:
                    continue
                threading.Thread(target=self.handle, args=(conn, sockets[sock]),
                                 daemon=True).start()


def relay(a: socket.socket, b: socket.socket, limit: float = RELAY_SECONDS) -> None:
    """Copy bytes both ways until either side closes or ``limit`` seconds pass quietly."""
    peers = {a: b, b: a}
    while peers:
        readable, _, _ = select.select(list(peers), [], [], limit)
        if not readable:
            return
        for sock in readable:
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                return
            try:
                peers[sock].sendall(data)
            except OSError:
                return


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pod-ip", required=True)
    parser.add_argument("--inbound-ports", default="",
                        type=lambda s: [int(p) for p in s.split(",") if p])
    parser.add_argument("--services", default="[]", help="JSON list of services")
    parser.add_argument("--mode", default="REDIRECT")
    parser.add_argument("--outbound-port", type=int, default=15001)
    parser.add_argument("--inbound-port", type=int, default=15006)
    parser.add_argument("--hop-limit", type=int, default=8)
    parser.add_argument("--log")
    parser.add_argument("--ttl", type=float, default=900.0)
    args = parser.parse_args(argv)
    _exit_when_stdin_closes(args.ttl)
    decide: Decider | None
    try:
        decide = model_decider(args)
    except Exception as error:  # the model is young: say why, then use the built-in copy
        print(f"NOTE meshlab.istio.envoy could not decide ({error!r}); using builtin",
              flush=True)
        decide = None
    if decide is None:
        decide = builtin_decider(args.outbound_port, args.inbound_port, args.inbound_ports)
    proxy = Proxy(decide, Recorder(args.log), hop_limit=args.hop_limit,
                  transparent=args.mode == "TPROXY")
    try:
        proxy.serve([args.outbound_port, args.inbound_port])
    except OSError as error:
        print(f"ERROR proxy cannot listen: {error}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
