"""The ambient lab: the model's ambient world, as network namespaces on the real kernel.

``meshlab.world.World.default()`` has two ambient pods, ``details`` (the pod under study)
and ``reviews-v2`` (a mesh peer), beside pods without ztunnel and hosts outside the
cluster. The lab builds each as a namespace of its own, joined by a node bridge::

    namespace      address          what runs there
    -------------  ---------------  --------------------------------------------------------
    pod            10.244.0.12      details: app (UID 1000) on 9080; ztunnel (root, SO_MARK
                   net1 10.0.2.1    0x539, 15001/15006/15008, UDP 15053); istio-cni's in-pod
                                    rules, the agent's ``ip rule`` and table-100 route
    peer           10.244.0.13      reviews-v2: the same (an ambient mesh peer)
    reviews        10.244.0.9       reviews on 9080: a pod outside the mesh (a plain client)
    productpage    10.244.0.5       a sidecar pod: istio-iptables' rules, the lab's Envoy
                                    stand-in (:mod:`meshlab.live.proxy`), app on 9080
    vm             10.0.2.2         a VM behind details' ``net1`` (a virtual interface)
    node           br0 10.244.0.1   the node: the bridge, kube-proxy's DNAT for kube-dns's
                                    VIP; on lo coredns 10.244.1.2 (53), legacy-db
                                    192.168.10.20 (5432) and the kubelet 169.254.7.127

Each pod's rules are loaded by ``iptables-restore`` *inside its own namespace*, and so are
the agent's ``ip rule add fwmark 0x111/0xfff pref 32764 lookup 100`` and ``ip route add
local 0.0.0.0/0 dev lo table 100``; the ztunnels' sockets live there too. Nothing is made in
the host namespace and every name starts with the lab's prefix (:mod:`meshlab.live.netns`).

:class:`AmbientLab` is a :class:`meshlab.live.lab.Lab`: the same lifecycle, cleanup,
agents, :meth:`~meshlab.live.lab.Lab.connect` and counters, all of the pod under study;
:meth:`AmbientLab.connect_all` adds every proxy's log (both ztunnels and the sidecar's
Envoy) and the peer's counters.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshlab.istio.ambient import INPOD_ROUTE_COMMANDS, inpod_rules
from meshlab.live import counters as ctr
from meshlab.live import netns, proc
from meshlab.live.lab import (
    APP_UID,
    FLUSH_DOCUMENT,
    PROXY_UID,
    KernelConnection,
    Lab,
    RestoreRenderable,
    Server,
    reserve_own_ports,
)

POD_IP = "10.244.0.12"
"""details, the ambient pod under study."""
PEER_IP = "10.244.0.13"
"""reviews-v2, a second ambient pod (a mesh peer)."""
CLIENT_IP = "10.244.0.9"
"""reviews, a pod outside the mesh."""
SIDECAR_IP = "10.244.0.5"
"""productpage, a pod with a sidecar (the lab's Envoy stand-in listens on 15001/15006)."""
NODE_IP = "10.244.0.1"
DNS_IP = "10.244.1.2"
"""coredns (53 UDP/TCP), an address on the node's ``lo``."""
DNS_VIP = "10.96.0.10"
"""kube-dns's Service VIP, which the node DNATs to :data:`DNS_IP` (kube-proxy)."""
EXTERNAL_IP = "192.168.10.20"
"""legacy-db (postgres on 5432), a host outside the cluster: on the node's ``lo``."""
PROBE_IP = "169.254.7.127"
"""The kubelet as the pods see it (istio-cni's ``HostProbeSNATAddress``): on the node."""
NET1_IP = "10.0.2.1"
VM_IP = "10.0.2.2"
MESH = (POD_IP, PEER_IP)
"""Pod IPs served by a ztunnel (HBONE on 15008)."""
SERVICES: tuple[Mapping[str, Any], ...] = (
    {"name": "productpage", "vip": "10.96.0.30", "ports": [[9080, 9080]],
     "endpoints": [SIDECAR_IP]},
    {"name": "reviews", "vip": "10.96.0.20", "ports": [[9080, 9080]], "endpoints": [CLIENT_IP]},
    {"name": "kube-dns", "namespace": "kube-system", "vip": DNS_VIP, "ports": [[53, 53]],
     "endpoints": [DNS_IP]},
    {"name": "details", "vip": "10.96.0.40", "ports": [[9080, 9080]], "endpoints": [POD_IP]},
    {"name": "reviews-v2", "vip": "10.96.0.50", "ports": [[9080, 9080]],
     "endpoints": [PEER_IP]},
)
"""The world's Services: ztunnel resolves a VIP itself (the first endpoint)."""

AGENT_COMMANDS = INPOD_ROUTE_COMMANDS[4]
"""What istio-cni's agent adds by netlink in the pod's namespace, beside the rules: ``ip route
add local 0.0.0.0/0 dev lo table 100`` and ``ip rule add fwmark 0x111/0xfff pref 32764
lookup 100``."""
IP_ROUTE, IP_RULE = AGENT_COMMANDS

POD_SERVERS = (Server("app", (9080,), uid=APP_UID),)
PEER_SERVERS = (Server("app", (9080,), uid=APP_UID),)
NODE_SERVERS = (Server("coredns", (f"{DNS_IP}:53", f"udp/{DNS_IP}:53")),
                Server("postgres", (f"{EXTERNAL_IP}:5432",)))
PLAIN_PODS = {"reviews": (CLIENT_IP, (Server("reviews", (9080,)),)),
              "productpage": (SIDECAR_IP, (Server("app", (9080, 8081), uid=APP_UID),))}
"""Pods on the bridge that ztunnel does not serve: (address, servers)."""


def restore_text(rules: str | RestoreRenderable) -> str:
    return rules if isinstance(rules, str) else rules.render_restore()


def _kube_dns_dnat() -> str:
    """kube-proxy's translation of kube-dns's VIP on the node: for packets arriving from the
    pods (PREROUTING) and for the node's own (OUTPUT: the kubelet's)."""
    lines = ["*nat", ":PREROUTING ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]"]
    for chain in ("PREROUTING", "OUTPUT"):
        for proto in ("udp", "tcp"):
            lines.append(f"-A {chain} -d {DNS_VIP}/32 -p {proto} --dport 53 "
                         f"-j DNAT --to-destination {DNS_IP}:53")
    return "\n".join([*lines, "COMMIT", ""])


@dataclass
class AmbientLab(Lab):
    """The ambient world; ``rules`` go to the pod under study, ``mesh_peer_rules`` to the peer.

    ``rules`` (and ``post_commands``, by default :data:`AGENT_COMMANDS`) are the pod's, as in
    :class:`~meshlab.live.lab.Lab`, and :meth:`load` replaces them. The peer keeps the rules
    it was built with (``mesh_peer_rules``; ``None``: what the agent writes by default,
    :func:`meshlab.istio.ambient.inpod_rules`). With
    ``sidecar_pod`` productpage runs the sidecar rules and the lab's Envoy stand-in.
    """

    post_commands: Sequence[str] = AGENT_COMMANDS
    pod_servers: Sequence[Server] = POD_SERVERS
    peer_servers: Sequence[Server] = PEER_SERVERS
    node_servers: Sequence[Server] = NODE_SERVERS
    proxy: Any = None
    mesh_peer_rules: str | RestoreRenderable | None = None
    sidecar_pod: bool = True
    hop_limit: int = 8
    proxy_logs: dict[str, Path] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.node = self.registry.name("node")
        self.vm = self.registry.name("vm")
        self.plain = {name: self.registry.name(name) for name in PLAIN_PODS}

    def build(self) -> None:
        """Namespaces, bridge, veths, addresses, routes, rules, processes (in that order)."""
        reg = self.registry
        self.workdir = reg.tempdir()
        for role in ("node", "pod", "peer", "vm", *PLAIN_PODS):
            reserve_own_ports(reg.add_namespace(role))
        node = self.node
        netns.in_ns(node, ["ip", "link", "add", "br0", "type", "bridge"])
        netns.in_ns(node, ["ip", "link", "set", "br0", "up"])
        netns.in_ns(node, ["ip", "addr", "add", f"{NODE_IP}/24", "dev", "br0"])
        for address in (DNS_IP, EXTERNAL_IP, PROBE_IP):
            netns.in_ns(node, ["ip", "addr", "add", f"{address}/32", "dev", "lo"])
        netns.in_ns(node, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])  # this namespace only
        netns.in_ns(node, ["iptables-restore"], input=_kube_dns_dnat())
        # a route to the Service range, so the node's own calls to a VIP (the kubelet's DNS
        # query) are routed at all before kube-proxy's OUTPUT DNAT rewrites them
        netns.in_ns(node, ["ip", "route", "add", "10.96.0.0/12", "dev", "br0"])
        pods = [(self.pod, POD_IP, "vpod"), (self.peer, PEER_IP, "vpeer")] + [
            (self.plain[name], ip, f"v{name[:8]}") for name, (ip, _) in PLAIN_PODS.items()]
        for ns, ip, port in pods:
            netns.veth(reg, ns, node, "eth0", port)
            netns.in_ns(node, ["ip", "link", "set", port, "master", "br0"])
            netns.in_ns(ns, ["ip", "addr", "add", f"{ip}/24", "dev", "eth0"])
            netns.in_ns(ns, ["ip", "route", "add", "default", "via", NODE_IP])
        netns.veth(reg, self.pod, self.vm, "net1", "eth0")
        netns.in_ns(self.pod, ["ip", "addr", "add", f"{NET1_IP}/24", "dev", "net1"])
        netns.in_ns(self.vm, ["ip", "addr", "add", f"{VM_IP}/24", "dev", "eth0"])
        netns.in_ns(self.vm, ["ip", "route", "add", "default", "via", NET1_IP])
        if self.rules is not None:
            self.load(self.rules, self.post_commands)
        self.load_peer(self.mesh_peer_rules if self.mesh_peer_rules is not None
                       else inpod_rules().ipv4)
        servers = [(self.pod, self.pod_servers), (self.peer, self.peer_servers),
                   (node, self.node_servers)] + [
            (self.plain[name], found) for name, (_, found) in PLAIN_PODS.items()]
        for ns, listed in servers:
            for server in listed:
                self.start_server(ns, server)
        self.start_ztunnel(self.pod, POD_IP)
        self.start_ztunnel(self.peer, PEER_IP)
        if self.sidecar_pod:
            self.start_sidecar()
        sides = {"pod": self.pod, "peer": self.peer, "node": node, "vm": self.vm,
                 "reviews": self.plain["reviews"]}
        for side, ns in sides.items():
            self.agents[side] = proc.start(reg, ns, "meshlab.live.agent", [],
                                           name=f"{side}-agent", workdir=self.workdir)

    def load_peer(self, rules: str | RestoreRenderable) -> None:
        """The peer's in-pod rules and the agent's ``ip rule`` and route (once, at build)."""
        netns.in_ns(self.peer, ["iptables-restore"], input=FLUSH_DOCUMENT)
        netns.in_ns(self.peer, ["iptables-restore", "--noflush"], input=restore_text(rules))
        for line in AGENT_COMMANDS:
            netns.in_ns(self.peer, line.split())

    def start_ztunnel(self, ns: str, pod_ip: str) -> None:
        role = ns.rsplit("-", 1)[-1]
        log = self._log_file(f"{role}-ztunnel", 0, 0)
        self.proxy_logs[f"{role}-ztunnel"] = log
        if role == "pod":
            self.proxy_log_path = log   # Lab.connect reads the pod's ztunnel as "the proxy"
        args = ["--pod-ip", pod_ip, "--mesh", ",".join(MESH),
                "--services", json.dumps(list(SERVICES)), "--dns-upstream", f"{DNS_VIP}:53",
                "--hop-limit", str(self.hop_limit), "--log", str(log)]
        self.channels.append(proc.start(self.registry, ns, "meshlab.live.ztunnel", args,
                                        name=f"{role}-ztunnel", workdir=self.workdir))

    def start_sidecar(self) -> None:
        """productpage: istio-iptables' default rules and the lab's Envoy (UID/GID 1337)."""
        from meshlab.istio.capture import CaptureConfig, generate
        from meshlab.istio.flags import DEFAULT_ISTIO_INIT_ARGS
        from meshlab.live.worldlab import INBOUND_PORTS
        from meshlab.live.worldlab import SERVICES as SIDECAR_SERVICES

        ns = self.plain["productpage"]
        rules = generate(CaptureConfig.from_args(list(DEFAULT_ISTIO_INIT_ARGS)))
        netns.in_ns(ns, ["iptables-restore"], input=FLUSH_DOCUMENT)
        netns.in_ns(ns, ["iptables-restore", "--noflush"], input=rules.restore_v4)
        log = self._log_file("productpage-envoy", PROXY_UID, PROXY_UID)
        self.proxy_logs["productpage-envoy"] = log
        args = ["--pod-ip", SIDECAR_IP, "--inbound-ports", ",".join(map(str, INBOUND_PORTS)),
                "--services", json.dumps(list(SIDECAR_SERVICES)), "--log", str(log)]
        self.channels.append(proc.start(self.registry, ns, "meshlab.live.proxy", args,
                                        name="productpage-envoy", uid=PROXY_UID,
                                        gid=PROXY_UID, workdir=self.workdir))

    # -- what the other pods saw ----------------------------------------------------------
    def peer_counters(self) -> ctr.Snapshot:
        return ctr.parse_counters(netns.in_ns(self.peer, ["iptables-save", "-c"]).stdout)

    def proxy_log(self, name: str, rid: str | None = None) -> list[dict[str, Any]]:
        """The log lines of one proxy ("pod-ztunnel", "peer-ztunnel", "productpage-envoy")
        for request ``rid`` (all when None), each with ``"proxy": name`` added."""
        path = self.proxy_logs.get(name)
        if path is None or not path.exists():
            return []
        events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [{**e, "proxy": name} for e in events if rid is None or e.get("id") == rid]

    def connect_all(self, dst: str, dport: int, **kwargs: Any) -> AmbientConnection:
        """:meth:`Lab.connect`, plus the peer's counters and every proxy's log lines."""
        before = self.peer_counters()
        seen = self.connect(dst, dport, **kwargs)
        events = [e for name in self.proxy_logs for e in self.proxy_log(name, seen.id)]
        events.sort(key=lambda e: float(e.get("t", 0)))
        return AmbientConnection(seen, self.peer_counters().minus(before), tuple(events))


@dataclass(frozen=True)
class AmbientConnection:
    """One connection in the ambient lab: the pod's view (``pod``), the peer's counters and
    every proxy's log lines for it, in time order (each names its ``proxy``)."""

    pod: KernelConnection
    peer_grew: Mapping[ctr.Key, int]
    events: tuple[Mapping[str, Any], ...]

    def of(self, proxy: str, event: str) -> list[Mapping[str, Any]]:
        return [e for e in self.events if e["proxy"] == proxy and e.get("event") == event]

    @property
    def listeners(self) -> list[tuple[str, int]]:
        """(proxy, port) of every accept, in time order: ("pod-ztunnel", 15001) ..."""
        return [(str(e["proxy"]), int(e["listener_port"])) for e in self.events
                if e.get("event") == "accept"]

    @property
    def routes(self) -> list[str]:
        """Each decision, in time order: ztunnel's route (hbone, inbound ...) or Envoy's
        cluster."""
        return [str(e.get("route") or e.get("cluster")) for e in self.events
                if e.get("event") == "decide"]


__all__ = ["AGENT_COMMANDS", "CLIENT_IP", "DNS_VIP", "EXTERNAL_IP", "MESH", "PEER_IP",
           "POD_IP", "PROBE_IP", "SERVICES", "SIDECAR_IP", "VM_IP", "AmbientConnection",
           "AmbientLab"]
