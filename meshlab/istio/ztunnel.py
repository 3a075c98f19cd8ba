"""A simplified ztunnel: the node proxy of Istio's ambient mode, as seen from inside a pod.

In ambient mode a pod has no sidecar. The istio-cni node agent writes a few rules into the
pod's network namespace (:mod:`meshlab.istio.ambient`) and hands ztunnel - one process per
node - a handle on that namespace. ztunnel then opens its sockets *inside* it, so to the
pod's kernel they are local sockets like the application's:

* every socket ztunnel makes there carries ``SO_MARK`` :data:`INPOD_MARK` (0x539, 1337): the
  rules' ``-m mark ! --mark 0x539/0xfff`` conditions are how the kernel tells ztunnel's own
  traffic from the application's (where a sidecar pod uses the proxy's UID 1337);
* it listens on 15001 (the app's outbound connections, redirected there), 15006 (plaintext
  inbound from clients outside the mesh, redirected there), 15008 (HBONE: inbound from other
  mesh workloads, never redirected) and 15053 (DNS, UDP and TCP); the listeners are
  ``IP_TRANSPARENT``.

What it does with a connection (:meth:`Ztunnel.decide`):

``15001`` outbound
    It reads the original destination (``SO_ORIGINAL_DST``). A Service VIP is resolved to an
    endpoint (the first one: no load balancing in this model). A destination that is a mesh
    workload (a pod ztunnel also serves) is reached over **HBONE**: a connection to that
    pod's IP on port 15008 that carries the real target (``CONNECT ip:port``). Anything else
    gets a plain connection to the destination (**passthrough**).
``15008`` inbound HBONE / ``15006`` inbound plaintext
    It connects to the application *from the client's own address*: ``IP_FREEBIND`` and
    ``IP_TRANSPARENT`` let a socket bind an address that is not local. Only when the client's
    address is the pod's own does it let the kernel choose. The application therefore sees
    the real client, where behind a sidecar it sees 127.0.0.6; the in-pod rules and the
    ``ip rule fwmark 0x111/0xfff lookup 100`` make sure the application's answers come back
    to ztunnel instead of leaving by eth0 for that client (:data:`CONN_MARK`).
``15053`` DNS
    ztunnel's DNS proxy answers the query itself: from its own table of mesh names when it
    knows the name, otherwise by asking its upstream resolvers, which it reads, as any
    resolver library does, from the ``/etc/resolv.conf`` of *its* pod: the cluster's DNS
    Service (kube-dns's VIP, with the usual ``dnsPolicy: ClusterFirst``). The model carries
    no names, so every query goes upstream, simply: a query the app's rules redirected
    (made to some resolver's port 53) goes to the resolver the app asked; a query made
    straight to 15053 (``127.0.0.1:15053``, the pod's IP:15053: nothing is redirected, so
    the only address left is ztunnel's own) goes to :attr:`Ztunnel.resolver`, kube-dns's
    VIP on port 53 - never back to 15053, which would be ztunnel asking itself.

Not modelled, and said so wherever it matters: HBONE's mutual TLS and HTTP/2 (the tunnel is a
plain TCP connection that carries its target), authorization policy, waypoint proxies (where
ambient mode does L7), and HBONE to sidecar pods (the model's sidecars have no 15008
listener, so ztunnel reaches them by passthrough). A connection whose target is one of
ztunnel's own ports is closed, as ztunnel refuses to forward to itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from meshlab.errors import MeshlabError
from meshlab.istio import ambient

IPAddress = IPv4Address | IPv6Address

ZTUNNEL = "ztunnel"
"""The process name of ztunnel in an ambient pod's process list."""
ZTUNNEL_UID = 0
"""ztunnel runs as root (it needs NET_ADMIN for IP_TRANSPARENT); the rules never look at it."""

INPOD_MARK = ambient.INPOD_MARK
"""SO_MARK of every socket ztunnel opens in the pod (0x539, 1337): the rules exempt it by this."""
CONN_MARK = ambient.INPOD_TPROXY_MARK
"""The connection mark (0x111) the pod's mangle rules give ztunnel's connections to the app;
the app's answers get it back as their packet mark, and ``ip rule fwmark 0x111/0xfff`` routes
them by table 100 (``local 0.0.0.0/0 dev lo``) back to ztunnel."""
OUTBOUND_PORT = ambient.ZTUNNEL_OUTBOUND_PORT
INBOUND_PLAINTEXT_PORT = ambient.ZTUNNEL_INBOUND_PLAINTEXT_PORT
HBONE_PORT = ambient.ZTUNNEL_INBOUND_PORT
DNS_PORT = ambient.DNS_CAPTURE_PORT

LISTENERS: tuple[tuple[str, int, str], ...] = (
    ("tcp", OUTBOUND_PORT, "outbound"),
    ("tcp", INBOUND_PLAINTEXT_PORT, "inbound plaintext"),
    ("tcp", HBONE_PORT, "inbound HBONE"),
    ("tcp", DNS_PORT, "DNS"),
    ("udp", DNS_PORT, "DNS"),
)
"""ztunnel's listening sockets in the pod: (protocol, port, what for). All bound to 0.0.0.0
and IP_TRANSPARENT."""
OWN_PORTS = frozenset(port for _, port, _ in LISTENERS)
CLUSTER_DNS_SERVICE = "kube-dns"
"""The Service whose VIP a pod's resolv.conf names (``dnsPolicy: ClusterFirst``): where
ztunnel's DNS proxy sends what it cannot answer itself."""


@dataclass(frozen=True, slots=True)
class ZtunnelDecision:
    """What ztunnel does with one accepted connection.

    ``route`` is ``"hbone"`` (to ``upstream`` = the workload's IP:15008, carrying
    ``tunnel_target``), ``"passthrough"`` (a plain connection to ``upstream``), ``"inbound"``
    (to the app, ``upstream``, bound to ``bind_source``, the client's address: freebind and
    transparent), ``"dns"`` (the query forwarded to ``upstream``) or ``"close"`` (nothing
    opened). Every socket it opens carries ``mark``.
    """

    listener: str
    port: int
    original_dst: tuple[IPAddress, int]
    route: str
    upstream: tuple[IPAddress, int] | None
    bind_source: IPAddress | None = None
    tunnel_target: tuple[IPAddress, int] | None = None
    service: str | None = None
    mark: int = INPOD_MARK
    why: str = ""

    @property
    def transparent(self) -> bool:
        """True when the upstream socket binds a foreign address (IP_FREEBIND+IP_TRANSPARENT)."""
        return self.bind_source is not None

    def describe(self) -> str:
        """One sentence for the walk."""
        target = _ep(self.original_dst)
        via = f" (Service {self.service}, first endpoint)" if self.service else ""
        if self.route == "close":
            return f"ztunnel {self.listener} for {target}: {self.why}; it closes the connection"
        assert self.upstream is not None
        up = _ep(self.upstream)
        mark = f"mark {self.mark:#x}"
        if self.route == "hbone":
            assert self.tunnel_target is not None
            return (f"ztunnel {self.listener}: {target}{via} is a mesh workload, so HBONE: "
                    f"connect to {up} carrying the target {_ep(self.tunnel_target)} ({mark}; "
                    "mTLS and HTTP/2 not modelled)")
        if self.route == "passthrough":
            return (f"ztunnel {self.listener}: {target}{via} is not in the mesh, so "
                    f"passthrough: a plain connection to {up} ({mark})")
        if self.route == "dns":
            why = f"{self.why}: " if self.why else ""
            return (f"ztunnel's DNS proxy: {why}it forwards the query to {up} ({mark}; "
                    "answering mesh names itself is not modelled)")
        if self.bind_source is None:
            return (f"ztunnel {self.listener}: connect to the app at {up} without binding a "
                    f"source (the client is this pod itself; {mark})")
        return (f"ztunnel {self.listener}: connect to the app at {up} from the client's own "
                f"address {self.bind_source} (IP_FREEBIND + IP_TRANSPARENT, {mark})")


@dataclass(frozen=True)
class Ztunnel:
    """ztunnel as one pod sees it: its listeners there and how it forwards.

    ``pod_ip`` is the pod's address; ``mesh`` the IPs of the workloads ztunnel reaches over
    HBONE (the ambient pods); ``services`` the Services whose VIPs it resolves itself;
    ``resolver`` the upstream its DNS proxy asks (None: it has none).
    """

    pod_ip: IPAddress
    mesh: frozenset[IPAddress] = frozenset()
    services: tuple[object, ...] = ()
    resolver: tuple[IPAddress, int] | None = None

    @classmethod
    def build(cls, *, pod_ip: IPAddress, mesh: Iterable[IPAddress] = (),
              services: Iterable[object] = ()) -> Ztunnel:
        """The resolver is the cluster DNS Service's VIP, port 53 (what ztunnel's own pod's
        resolv.conf names): the Service called ``kube-dns``, when there is one."""
        services = tuple(services)
        dns = next((s for s in services if getattr(s, "name", None) == CLUSTER_DNS_SERVICE),
                   None)
        resolver = None if dns is None else (dns.vip, 53)  # type: ignore[attr-defined]
        return cls(pod_ip, frozenset(mesh), services, resolver)

    def listener_name(self, proto: str, port: int) -> str | None:
        """``"outbound"``, ``"inbound HBONE"``... for one of ztunnel's listeners, else None."""
        return next((name for p, n, name in LISTENERS if p == proto and n == port), None)

    def decide(self, proto: str, port: int, original_dst: tuple[IPAddress, int], *,
               client: IPAddress, tunnel_target: tuple[IPAddress, int] | None = None
               ) -> ZtunnelDecision:
        """What ztunnel does with a connection accepted on ``port``.

        ``original_dst`` is what ``SO_ORIGINAL_DST`` returns (for 15008: the socket's own
        address); ``client`` the connecting address; ``tunnel_target`` what an HBONE
        connection carries (``CONNECT ip:port``).
        """
        name = self.listener_name(proto, port)
        if name is None:
            raise MeshlabError(f"ztunnel does not listen on {proto} port {port}; its "
                               "listeners are 15001, 15006, 15008 and 15053 (udp and tcp)")
        if port == DNS_PORT:
            return self._dns(name, original_dst)
        if port == OUTBOUND_PORT:
            return self._outbound(name, original_dst)
        if port == HBONE_PORT:
            if tunnel_target is None:
                return ZtunnelDecision(name, port, original_dst, "close", None,
                                       why="the connection carries no HBONE target")
            target = tunnel_target
        else:
            target = original_dst
        if target[1] in OWN_PORTS:
            return ZtunnelDecision(name, port, original_dst, "close", None,
                                   why=f"the target port {target[1]} is one of ztunnel's own "
                                   "ports, which it refuses to forward to")
        if target[0] != self.pod_ip:
            return ZtunnelDecision(name, port, original_dst, "close", None,
                                   why=f"the target {_ep(target)} is not this pod")
        bind = None if client == target[0] else client
        return ZtunnelDecision(name, port, original_dst, "inbound", target, bind_source=bind)

    def _dns(self, name: str, original: tuple[IPAddress, int]) -> ZtunnelDecision:
        """A query to the DNS proxy: on to the resolver the app asked or, when the app asked
        ztunnel's 15053 itself, to ztunnel's own upstream resolver."""
        ip, port = original
        if not (port == DNS_PORT and (ip == self.pod_ip or ip.is_loopback)):
            return ZtunnelDecision(name, DNS_PORT, original, "dns", original)
        if self.resolver is None:
            return ZtunnelDecision(name, DNS_PORT, original, "close", None,
                                   why="the query was made to ztunnel's DNS proxy itself and "
                                   "ztunnel has no upstream resolver")
        return ZtunnelDecision(name, DNS_PORT, original, "dns", self.resolver,
                               why="the query was made to ztunnel's DNS proxy itself, so it "
                               "asks its own upstream resolver")

    def _outbound(self, name: str, original: tuple[IPAddress, int]) -> ZtunnelDecision:
        ip, port = original
        service = None
        for svc in self.services:
            if getattr(svc, "vip", None) != ip:
                continue
            match = next((p for p in svc.ports  # type: ignore[attr-defined]
                          if p.port == port and p.protocol.upper() == "TCP"), None)
            endpoints = svc.endpoints  # type: ignore[attr-defined]
            if match is None or not endpoints:
                return ZtunnelDecision(name, OUTBOUND_PORT, original, "close", None,
                                       service=svc.name,  # type: ignore[attr-defined]
                                       why="the Service has no endpoint for that port")
            service = svc.name  # type: ignore[attr-defined]
            ip, port = endpoints[0], match.target_port
            break
        if port in OWN_PORTS and (ip == self.pod_ip or ip.is_loopback):
            return ZtunnelDecision(name, OUTBOUND_PORT, original, "close", None,
                                   why="the destination is ztunnel itself")
        if ip in self.mesh:
            return ZtunnelDecision(name, OUTBOUND_PORT, original, "hbone", (ip, HBONE_PORT),
                                   tunnel_target=(ip, port), service=service)
        return ZtunnelDecision(name, OUTBOUND_PORT, original, "passthrough", (ip, port),
                               service=service)


def _ep(address: tuple[IPAddress, int]) -> str:
    ip, port = address
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
