"""A simplified Envoy sidecar: the listeners, filter chains and clusters that decide where
a captured connection goes.

The iptables rules only bring connections to the proxy: outbound ones to port 15001,
inbound ones to 15006. The proxy then asks the kernel for the connection's *original*
destination (``SO_ORIGINAL_DST``, kept by conntrack), picks a filter chain of the listener
by that destination, and the chain's ``tcp_proxy`` names a cluster that says where to
connect next:

``virtualOutbound`` (0.0.0.0:15001, ``use_original_dst``)
    * ``virtualOutbound-blackhole``: original destination port 15001 -> ``BlackHoleCluster``.
      A connection whose original destination *is* 15001 was sent to the proxy directly, not
      captured; forwarding it would connect to 15001 again, forever.
    * one chain per known service ``VIP:port`` -> ``outbound|PORT||HOST`` (an EDS cluster).
    * ``virtualOutbound-catchall-tcp``: anything else -> ``PassthroughCluster`` (connect to
      the original destination) under ``ALLOW_ANY``, or ``BlackHoleCluster`` under
      ``REGISTRY_ONLY``.

``virtualInbound`` (0.0.0.0:15006)
    * ``virtualInbound-blackhole``: original destination port 15006 -> ``BlackHoleCluster``.
    * ``0.0.0.0_PORT`` for each port a service exposes on this pod (``Addr: *:PORT``) ->
      ``inbound|PORT||`` (ORIGINAL_DST: connect to the original pod IP:port).
    * ``virtualInbound``: any other port -> ``InboundPassthroughCluster`` (also ORIGINAL_DST).

**Why 127.0.0.6.** Both inbound clusters bind their upstream socket to source 127.0.0.6.
Envoy (UID 1337) connects to the pod's own IP, so the connection leaves through ``lo`` and
meets ``ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -m owner --uid-owner 1337 -j
ISTIO_IN_REDIRECT`` - the rule that makes "a pod calling its own service" go through the
inbound path - and would be sent back to 15006, in a loop. The very first rule of
``ISTIO_OUTPUT``, ``-o lo -s 127.0.0.6/32 -j RETURN``, lets exactly these connections
through. 127.0.0.6 is local (all of 127/8 is on ``lo``); ``::6`` plays the role in IPv6
("6 is the magical number for inbound": 15006, 127.0.0.6, ::6). The application therefore
sees its inbound clients as 127.0.0.6.

**TPROXY.** In TPROXY mode ``virtualInbound`` also has the ``original_src`` listener filter:
the upstream socket is bound (``IP_TRANSPARENT``) to the *downstream client's* address and
marked 1337, so the application sees the real client, and the mangle rules recognise the
reply by its mark. :meth:`Sidecar.decide` reports that as ``original_src=True``,
``mark=1337`` and ``bind_source`` = the client's address when the caller passes it.

Simplifications, each documented where it matters: everything is TCP proxying (no HTTP
routes, TLS or mTLS chains); real Istio hands a connection for a service ``VIP:port`` to a
separate listener (``<VIP>_<port>``, ``bind_to_port: false``) - meshlab folds it into a
filter chain of ``virtualOutbound`` with the same name, chosen most-specific first; an
EDS cluster connects to the *first* endpoint at the service's target port (no load
balancing); the passthrough inbound chains that real Istio splits by TLS/HTTP are one
chain.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import TYPE_CHECKING, Any

from meshlab.errors import MeshlabError
from meshlab.netfilter.packet import IPAddress, endpoint

if TYPE_CHECKING:
    import pandas

IPNetwork = IPv4Network | IPv6Network

INBOUND_BIND_V4 = IPv4Address("127.0.0.6")
INBOUND_BIND_V6 = IPv6Address("::6")
TPROXY_MARK = 1337
BLACKHOLE = "BlackHoleCluster"
PASSTHROUGH = "PassthroughCluster"
INBOUND_PASSTHROUGH = "InboundPassthroughCluster"
TCP_PROXY = "envoy.filters.network.tcp_proxy"
OUTBOUND_POLICIES = ("ALLOW_ANY", "REGISTRY_ONLY")
INTERCEPTION_MODES = ("REDIRECT", "TPROXY")


def _ip(value: object, what: str) -> IPAddress:
    if isinstance(value, (IPv4Address, IPv6Address)):
        return value
    try:
        return ipaddress.ip_address(str(value))
    except ValueError:
        raise MeshlabError(f"{what} {value!r} is not an IP address. Write e.g. 10.244.0.5."
                           ) from None


def _port(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise MeshlabError(f"{what} {value!r} is not a port. Use a whole number from 1 to 65535.")
    return value


@dataclass(frozen=True, slots=True)
class ServicePort:
    """One port of a Kubernetes Service: clients call ``port``; pods listen on ``target_port``."""

    port: int
    target_port: int
    protocol: str = "TCP"
    name: str = ""


@dataclass(frozen=True, slots=True)
class Service:
    """A Kubernetes Service the sidecar knows: its virtual IP, ports and endpoint pod IPs."""

    name: str
    namespace: str
    vip: IPAddress
    ports: tuple[ServicePort, ...]
    endpoints: tuple[IPAddress, ...] = ()

    def __post_init__(self) -> None:
        # Accept strings and lists for convenience; store ipaddress values and tuples.
        object.__setattr__(self, "vip", _ip(self.vip, f"service {self.name} vip"))
        object.__setattr__(self, "ports", tuple(self.ports))
        object.__setattr__(self, "endpoints", tuple(
            _ip(e, f"service {self.name} endpoint") for e in self.endpoints))

    @property
    def host(self) -> str:
        return f"{self.name}.{self.namespace}.svc.cluster.local"


@dataclass(frozen=True, slots=True)
class FilterChainMatch:
    """The part of Envoy's ``filter_chain_match`` meshlab uses: destination port and prefixes.

    An empty match matches everything (istioctl prints ``ALL``).
    """

    destination_port: int | None = None
    prefix_ranges: tuple[IPNetwork, ...] = ()

    def matches(self, ip: IPAddress, port: int) -> bool:
        if self.destination_port is not None and self.destination_port != port:
            return False
        return not self.prefix_ranges or any(ip in net for net in self.prefix_ranges)

    def specificity(self, ip: IPAddress) -> tuple[int, int]:
        """Envoy prefers a chain with a destination port, then the longest matching prefix."""
        prefix = max((net.prefixlen for net in self.prefix_ranges if ip in net), default=-1)
        return (self.destination_port is not None, prefix)

    def describe(self) -> str:
        """The MATCH column of ``istioctl proxy-config listener``."""
        port = f":{self.destination_port}" if self.destination_port is not None else ""
        if self.prefix_ranges:
            return "Addr: " + ",".join(str(net) for net in self.prefix_ranges) + port
        if port:
            return f"Addr: *{port}"
        return "ALL"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.destination_port is not None:
            out["destination_port"] = self.destination_port
        if self.prefix_ranges:
            out["prefix_ranges"] = [{"address_prefix": str(net.network_address),
                                     "prefix_len": net.prefixlen} for net in self.prefix_ranges]
        return out


@dataclass(frozen=True, slots=True)
class FilterChain:
    """A filter chain whose only network filter is a ``tcp_proxy`` to ``cluster``."""

    name: str
    match: FilterChainMatch
    cluster: str

    def destination(self) -> str:
        """The DESTINATION column of ``istioctl proxy-config listener``."""
        if self.cluster == BLACKHOLE:
            return "Non-HTTP/Non-TCP"      # istioctl does not name a tcp_proxy to BlackHole
        if "Cluster" in self.cluster:
            return self.cluster
        return f"Cluster: {self.cluster}"


@dataclass(frozen=True, slots=True)
class Listener:
    """An Envoy listener: where it binds and how it chooses a filter chain."""

    name: str
    address: IPAddress
    port: int
    traffic_direction: str                  # "OUTBOUND" | "INBOUND"
    filter_chains: tuple[FilterChain, ...]
    use_original_dst: bool = False
    transparent: bool = False
    listener_filters: tuple[str, ...] = ()

    def select(self, ip: IPAddress, port: int) -> FilterChain | None:
        """The chain Envoy picks for original destination ``ip:port`` (None: none matches)."""
        candidates = [chain for chain in self.filter_chains if chain.match.matches(ip, port)]
        if not candidates:
            return None
        return max(candidates, key=lambda chain: chain.match.specificity(ip))


@dataclass(frozen=True, slots=True)
class Cluster:
    """An Envoy cluster: how the proxy finds and opens the upstream connection.

    ``ORIGINAL_DST`` clusters connect to the connection's original destination; ``EDS``
    clusters to one of ``endpoints``; a ``STATIC`` cluster with no endpoints
    (``BlackHoleCluster``) closes the connection.
    """

    name: str
    type: str                                # "ORIGINAL_DST" | "EDS" | "STATIC"
    lb_policy: str                           # "CLUSTER_PROVIDED" | "LEAST_REQUEST" | ...
    bind_source: IPAddress | None = None     # upstream_bind_config.source_address
    endpoints: tuple[tuple[IPAddress, int], ...] = ()
    connect_timeout: str = "10s"

    def name_parts(self) -> tuple[str, int | None, str, str] | None:
        """(direction, port, subset, host) for ``direction|port|subset|host`` names."""
        parts = self.name.split("|")
        if len(parts) < 4:
            return None
        return parts[0], int(parts[1]) if parts[1] else None, parts[2], parts[3]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            "name": self.name,
            "type": self.type,
            "connect_timeout": self.connect_timeout,
            "lb_policy": self.lb_policy,
        }
        if self.type == "EDS":
            out["eds_cluster_config"] = {"service_name": self.name,
                                         "eds_config": {"ads": {}, "resource_api_version": "V3"}}
        if self.type == "STATIC":
            out["load_assignment"] = {"cluster_name": self.name, "endpoints": []}
        if self.bind_source is not None:
            out["upstream_bind_config"] = {"source_address": {
                "address": str(self.bind_source), "port_value": 0}}
        return out


@dataclass(frozen=True, slots=True)
class ProxyDecision:
    """What the proxy does with one accepted connection.

    ``upstream`` is where it connects next (``None``: the connection is closed, as by
    ``BlackHoleCluster``, or an EDS cluster without endpoints). ``bind_source`` is the source
    address the upstream socket binds to (``None``: let the kernel choose from the route).
    With ``original_src`` the proxy binds the *downstream client's* address
    (``IP_TRANSPARENT``, TPROXY mode) and marks the socket with ``mark``.
    """

    listener: str
    filter_chain: str
    match: str
    cluster: str
    upstream: tuple[IPAddress, int] | None
    bind_source: IPAddress | None
    original_src: bool = False
    mark: int = 0

    @property
    def closed(self) -> bool:
        return self.upstream is None

    def describe(self) -> str:
        """One sentence for a learner."""
        head = f"{self.listener}: chain {self.filter_chain} ({self.match}) -> {self.cluster}"
        if self.upstream is None:
            return head + ": the proxy closes the connection"
        target = endpoint(*self.upstream)
        if self.original_src:
            source = str(self.bind_source) if self.bind_source else "the client's address"
            return head + f": connect to {target} from {source} (original_src, mark {self.mark})"
        if self.bind_source is not None:
            return head + f": connect to {target} from {self.bind_source}"
        return head + f": connect to {target}"


@dataclass(frozen=True)
class Sidecar:
    """The sidecar's Envoy configuration for one pod, and the decision it makes per connection.

    Build it with :meth:`build`; ask it with :meth:`decide`; show it with
    :meth:`listener_frame`, :meth:`cluster_frame` and :meth:`config_dump`.
    """

    pod_ip: IPAddress
    interception_mode: str
    outbound_policy: str
    listeners: tuple[Listener, ...]
    clusters: tuple[Cluster, ...]
    services: tuple[Service, ...] = field(default=())

    @classmethod
    def build(cls, *, pod_ip: IPAddress | str, inbound_ports: Iterable[int],
              services: Iterable[Service] = (), interception_mode: str = "REDIRECT",
              outbound_policy: str = "ALLOW_ANY", proxy_port: int = 15001,
              inbound_port: int = 15006) -> Sidecar:
        """The listeners and clusters istiod would send this pod's sidecar.

        ``inbound_ports`` are the target ports of the services that select this pod (each
        gets a ``0.0.0.0_PORT`` chain and an ``inbound|PORT||`` cluster); ``services`` are the
        services it may call (each port gets a ``VIP_PORT`` chain and an outbound cluster).
        """
        ip = _ip(pod_ip, "pod_ip")
        if interception_mode not in INTERCEPTION_MODES:
            raise MeshlabError(
                f"interception mode {interception_mode!r} has no virtual listeners. Use "
                "REDIRECT or TPROXY (with NONE, Istio builds no virtualOutbound/virtualInbound).")
        if outbound_policy not in OUTBOUND_POLICIES:
            raise MeshlabError(f"outbound traffic policy {outbound_policy!r} is unknown. Use "
                               "ALLOW_ANY or REGISTRY_ONLY.")
        proxy_port = _port(proxy_port, "proxy_port")
        inbound_port = _port(inbound_port, "inbound_port")
        ports = tuple(dict.fromkeys(_port(p, "inbound port") for p in inbound_ports))
        svcs = tuple(services)
        tproxy = interception_mode == "TPROXY"
        any_address: IPAddress = IPv4Address("0.0.0.0") if ip.version == 4 else IPv6Address("::")
        inbound_bind = INBOUND_BIND_V4 if ip.version == 4 else INBOUND_BIND_V6

        outbound_chains = [FilterChain("virtualOutbound-blackhole",
                                       FilterChainMatch(destination_port=proxy_port), BLACKHOLE)]
        clusters: list[Cluster] = []
        for svc in svcs:
            vip = _ip(svc.vip, f"service {svc.name} vip")
            for sp in svc.ports:
                name = f"outbound|{sp.port}||{svc.host}"
                outbound_chains.append(FilterChain(
                    f"{vip}_{sp.port}",
                    FilterChainMatch(destination_port=sp.port,
                                     prefix_ranges=(ipaddress.ip_network(vip),)),
                    name))
                clusters.append(Cluster(name, "EDS", "LEAST_REQUEST", endpoints=tuple(
                    (_ip(e, f"service {svc.name} endpoint"), sp.target_port)
                    for e in svc.endpoints)))
        outbound_chains.append(FilterChain(
            "virtualOutbound-catchall-tcp", FilterChainMatch(),
            PASSTHROUGH if outbound_policy == "ALLOW_ANY" else BLACKHOLE))

        inbound_chains = [FilterChain("virtualInbound-blackhole",
                                      FilterChainMatch(destination_port=inbound_port), BLACKHOLE),
                          FilterChain("virtualInbound", FilterChainMatch(), INBOUND_PASSTHROUGH)]
        for port in ports:
            inbound_chains.append(FilterChain(f"{any_address}_{port}",
                                              FilterChainMatch(destination_port=port),
                                              f"inbound|{port}||"))
            clusters.append(Cluster(f"inbound|{port}||", "ORIGINAL_DST", "CLUSTER_PROVIDED",
                                    bind_source=inbound_bind))
        clusters += [
            Cluster(BLACKHOLE, "STATIC", "ROUND_ROBIN"),
            Cluster(INBOUND_PASSTHROUGH, "ORIGINAL_DST", "CLUSTER_PROVIDED",
                    bind_source=inbound_bind),
            Cluster(PASSTHROUGH, "ORIGINAL_DST", "CLUSTER_PROVIDED"),
        ]
        inbound_filters = ["envoy.filters.listener.original_dst"]
        if tproxy:
            inbound_filters.append("envoy.filters.listener.original_src")
        listeners = (
            Listener("virtualOutbound", any_address, proxy_port, "OUTBOUND",
                     tuple(outbound_chains), use_original_dst=True, transparent=tproxy,
                     listener_filters=("envoy.filters.listener.original_dst",)),
            Listener("virtualInbound", any_address, inbound_port, "INBOUND",
                     tuple(inbound_chains), transparent=tproxy,
                     listener_filters=tuple(inbound_filters)),
        )
        return cls(ip, interception_mode, outbound_policy, listeners, tuple(clusters), svcs)

    # --- lookups ---------------------------------------------------------------------------

    def listener(self, port: int) -> Listener:
        for listener in self.listeners:
            if listener.port == port:
                return listener
        known = ", ".join(f"{lst.port} ({lst.name})" for lst in self.listeners)
        raise MeshlabError(
            f"the proxy has no listener on port {port}; it listens on {known}. A connection "
            f"to port {port} reaches the proxy only if the iptables rules redirect it there: "
            "check -p/-z and the REDIRECT targets.")

    def cluster(self, name: str) -> Cluster:
        for cluster in self.clusters:
            if cluster.name == name:
                return cluster
        raise MeshlabError(f"the proxy has no cluster {name!r}.")

    # --- the decision ---------------------------------------------------------------------

    def decide(self, listener_port: int, original_dst: tuple[IPAddress | str, int], *,
               downstream: tuple[IPAddress | str, int] | IPAddress | str | None = None
               ) -> ProxyDecision:
        """Which chain and cluster a connection accepted on ``listener_port`` takes, and the
        connection the proxy then opens.

        ``original_dst`` is what ``SO_ORIGINAL_DST`` returns for the accepted socket.
        ``downstream`` (the client's address, optional) is only used in TPROXY mode, where
        inbound upstream connections keep the client's source address (``original_src``).
        """
        listener = self.listener(listener_port)
        ip = _ip(original_dst[0], "original destination")
        port = _port(original_dst[1], "original destination port")
        chain = listener.select(ip, port)
        if chain is None:  # Envoy closes a connection no chain matches (build() always
            return ProxyDecision(listener.name, "", "", "", None, None)  # adds a catch-all)
        cluster = self.cluster(chain.cluster)
        upstream: tuple[IPAddress, int] | None
        if cluster.type == "ORIGINAL_DST":
            upstream = (ip, port)
        elif cluster.endpoints:
            upstream = cluster.endpoints[0]   # simplification: the first endpoint, no LB
        else:
            upstream = None                   # BlackHole, or a service with no endpoints
        bind = cluster.bind_source
        if bind is not None and bind.version != ip.version:
            bind = INBOUND_BIND_V4 if ip.version == 4 else INBOUND_BIND_V6
        original_src = False
        mark = 0
        if (upstream is not None and listener.traffic_direction == "INBOUND"
                and self.interception_mode == "TPROXY"):
            original_src, mark = True, TPROXY_MARK
            client = downstream[0] if isinstance(downstream, tuple) else downstream
            bind = _ip(client, "downstream address") if client is not None else None
        return ProxyDecision(listener.name, chain.name, chain.match.describe(), chain.cluster,
                             upstream, bind if upstream is not None else None, original_src,
                             mark)

    # --- views ----------------------------------------------------------------------------

    def listener_frame(self) -> pandas.DataFrame:
        """``istioctl proxy-config listener POD`` as a DataFrame.

        Columns ``ADDRESSES, PORT, MATCH, DESTINATION``; listeners by port then address, and
        within a listener the chains by DESTINATION, descending, as istioctl sorts them.
        """
        import pandas as pd

        rows = []
        for listener in sorted(self.listeners, key=lambda lst: (lst.port, str(lst.address))):
            chains = sorted(listener.filter_chains, key=lambda c: c.destination(), reverse=True)
            rows += [{"ADDRESSES": str(listener.address), "PORT": listener.port,
                      "MATCH": chain.match.describe(), "DESTINATION": chain.destination()}
                     for chain in chains]
        return pd.DataFrame(rows, columns=["ADDRESSES", "PORT", "MATCH", "DESTINATION"])

    def cluster_frame(self) -> pandas.DataFrame:
        """``istioctl proxy-config cluster POD`` as a DataFrame.

        Columns ``SERVICE FQDN, PORT, SUBSET, DIRECTION, TYPE, DESTINATION RULE``. Names of
        the form ``direction|port|subset|host`` are split (an empty subset prints ``-``);
        other clusters print their name as the FQDN and ``-`` elsewhere. Sorted by FQDN,
        subset, port, direction, as istioctl does. No DestinationRules here: ``-``.
        """
        import pandas as pd

        rows: list[tuple[tuple[str, str, int, str], dict[str, object]]] = []
        for cluster in self.clusters:
            parts = cluster.name_parts()
            if parts is None:
                rows.append(((cluster.name, "", 0, ""), {
                    "SERVICE FQDN": cluster.name, "PORT": "-", "SUBSET": "-",
                    "DIRECTION": "-", "TYPE": cluster.type, "DESTINATION RULE": "-"}))
            else:
                direction, port, subset, host = parts
                rows.append(((host, subset, port or 0, direction), {
                    "SERVICE FQDN": host, "PORT": port, "SUBSET": subset or "-",
                    "DIRECTION": direction, "TYPE": cluster.type, "DESTINATION RULE": "-"}))
        rows.sort(key=lambda row: row[0])
        return pd.DataFrame([row for _, row in rows],
                            columns=["SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE",
                                     "DESTINATION RULE"])

    def config_dump(self) -> dict[str, Any]:
        """A subset of Envoy's ``/config_dump`` (snake_case, as Envoy's admin prints it)."""
        listeners = []
        for listener in self.listeners:
            body: dict[str, Any] = {
                "@type": "type.googleapis.com/envoy.config.listener.v3.Listener",
                "name": listener.name,
                "address": {"socket_address": {"address": str(listener.address),
                                               "port_value": listener.port}},
                "filter_chains": [_chain_dict(chain) for chain in listener.filter_chains],
                "listener_filters": [{"name": name} for name in listener.listener_filters],
                "traffic_direction": listener.traffic_direction,
            }
            if listener.use_original_dst:
                body["use_original_dst"] = True
            if listener.transparent:
                body["transparent"] = True
            listeners.append({"name": listener.name, "active_state": {"listener": body}})
        return {"configs": [
            {"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
             "dynamic_listeners": listeners},
            {"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
             "dynamic_active_clusters": [{"cluster": cluster.to_dict()}
                                         for cluster in self.clusters]},
        ]}


def _chain_dict(chain: FilterChain) -> dict[str, Any]:
    out: dict[str, Any] = {"name": chain.name}
    match = chain.match.to_dict()
    if match:
        out["filter_chain_match"] = match
    out["filters"] = [{"name": TCP_PROXY, "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "stat_prefix": chain.cluster, "cluster": chain.cluster}}]
    return out

