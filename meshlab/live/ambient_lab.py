"""The ambient lab: an ambient pod, a mesh peer and the node, as network namespaces.

::

      pod namespace (ambient)          node namespace                peer namespace (ambient)
      eth0 10.244.0.5/24  <-- veth --> br0 10.244.0.1/24 <-- veth --> eth0 10.244.0.9/24
      app "app" (UID 1000) 9080,       10.244.0.20 (a non-mesh       app "reviews" 9080
      8081                             client), lo: 192.168.10.20    ztunnel (root, mark 0x539)
      ztunnel (root, mark 0x539)       (legacy-db, outside the       in-pod rules, ip rule,
      15001/15006/15008                mesh), 169.254.7.127 (the     table 100
      in-pod rules, ip rule, table 100 kubelet probes' SNAT address)

The node namespace is a bridge (``br0``) joining the pods, as a node's CNI bridge does; it
also plays everything outside the mesh: a client that is not in the mesh, an external host
and the kubelet, whose probes the node SNATs to 169.254.7.127. Both pods are ambient: each
gets the in-pod rules by ``iptables-restore`` *inside its own namespace*, the agent's ``ip
rule add fwmark 0x111/0xfff pref 32764 lookup 100`` and ``ip route add local 0.0.0.0/0 dev
lo table 100`` (also inside), and a :mod:`meshlab.live.ztunnel` whose sockets live there.

:class:`AmbientLab` is a :class:`meshlab.live.lab.Lab` (the same lifecycle, cleanup, agents,
:meth:`~meshlab.live.lab.Lab.connect` and counters of the pod namespace); it builds this
world instead, and reads the peer's counters and ztunnel log too. Nothing is created in the
host namespace and every name starts with the lab's own prefix (see :mod:`meshlab.live.netns`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshlab.istio.ambient import INPOD_ROUTE_COMMANDS
from meshlab.live import counters as ctr
from meshlab.live import netns, proc
from meshlab.live.lab import (
    APP_UID,
    FLUSH_DOCUMENT,
    KernelConnection,
    Lab,
    RestoreRenderable,
    Server,
    reserve_own_ports,
)

POD_IP = "10.244.0.5"
PEER_IP = "10.244.0.9"
NODE_IP = "10.244.0.1"
CLIENT_IP = "10.244.0.20"
"""A client outside the mesh (an address of the node namespace on the bridge)."""
EXTERNAL_IP = "192.168.10.20"
"""A host outside the cluster (legacy-db, postgres on 5432): on the node's ``lo``."""
PROBE_IP = "169.254.7.127"
"""Where the node SNATs kubelet's probes to (istio-cni's ``HostProbeSNATAddress``)."""
MESH = (POD_IP, PEER_IP)
"""Pod IPs served by a ztunnel (HBONE on 15008)."""

AGENT_COMMANDS = INPOD_ROUTE_COMMANDS[4]
"""What istio-cni's agent adds by netlink in the pod's namespace, beside the rules: ``ip route
add local 0.0.0.0/0 dev lo table 100`` and ``ip rule add fwmark 0x111/0xfff pref 32764
lookup 100``."""
IP_ROUTE, IP_RULE = AGENT_COMMANDS

POD_SERVERS = (Server("app", (9080, 8081), uid=APP_UID),)
PEER_SERVERS = (Server("reviews", (9080,), uid=APP_UID),)
NODE_SERVERS = (Server("legacy-db", (f"{EXTERNAL_IP}:5432", f"{EXTERNAL_IP}:80")),)


def restore_text(rules: str | RestoreRenderable) -> str:
    return rules if isinstance(rules, str) else rules.render_restore()


@dataclass
class AmbientLab(Lab):
    """Two ambient pods and a node; ``rules`` go to the pod, ``mesh_peer_rules`` to the peer.

    ``rules`` (and ``post_commands``, by default :data:`AGENT_COMMANDS`) are the pod's, as in
    :class:`~meshlab.live.lab.Lab`, and :meth:`load` replaces them. The peer keeps the rules
    it was built with (``mesh_peer_rules``; ``None``: the same as the pod's). ``services``
    are the Service VIPs ztunnel resolves itself (no kube-proxy is needed for a pod in the
    mesh: ztunnel connects to the endpoint).
    """

    post_commands: Sequence[str] = AGENT_COMMANDS
    pod_servers: Sequence[Server] = POD_SERVERS
    peer_servers: Sequence[Server] = PEER_SERVERS
    node_servers: Sequence[Server] = NODE_SERVERS
    proxy: Any = None
    mesh_peer_rules: str | RestoreRenderable | None = None
    services: Sequence[Mapping[str, Any]] = ()
    hop_limit: int = 8
    ztunnel_logs: dict[str, Path] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.node = self.registry.name("node")

    def build(self) -> None:
        """Namespaces, bridge, veths, addresses, routes, rules, processes (in that order)."""
        reg = self.registry
        self.workdir = reg.tempdir()
        for role in ("node", "pod", "peer"):
            reserve_own_ports(reg.add_namespace(role))
        node = self.node
        netns.in_ns(node, ["ip", "link", "add", "br0", "type", "bridge"])
        netns.in_ns(node, ["ip", "link", "set", "br0", "up"])
        netns.in_ns(node, ["ip", "addr", "add", f"{NODE_IP}/24", "dev", "br0"])
        netns.in_ns(node, ["ip", "addr", "add", f"{CLIENT_IP}/32", "dev", "br0"])
        for address in (EXTERNAL_IP, PROBE_IP):
            netns.in_ns(node, ["ip", "addr", "add", f"{address}/32", "dev", "lo"])
        for ns, ip, port in ((self.pod, POD_IP, "vpod"), (self.peer, PEER_IP, "vpeer")):
            netns.veth(reg, ns, node, "eth0", port)
            netns.in_ns(node, ["ip", "link", "set", port, "master", "br0"])
            netns.in_ns(ns, ["ip", "addr", "add", f"{ip}/24", "dev", "eth0"])
            netns.in_ns(ns, ["ip", "route", "add", "default", "via", NODE_IP])
        if self.rules is not None:
            self.load(self.rules, self.post_commands)
        self.load_peer(self.mesh_peer_rules if self.mesh_peer_rules is not None
                       else self.rules)
        for ns, servers in ((self.pod, self.pod_servers), (self.peer, self.peer_servers),
                            (node, self.node_servers)):
            for server in servers:
                self.start_server(ns, server)
        self.start_ztunnel(self.pod, POD_IP)
        self.start_ztunnel(self.peer, PEER_IP)
        for side, ns in (("pod", self.pod), ("peer", self.peer), ("node", node)):
            self.agents[side] = proc.start(reg, ns, "meshlab.live.agent", [],
                                           name=f"{side}-agent", workdir=self.workdir)

    def load_peer(self, rules: str | RestoreRenderable | None) -> None:
        """The peer's in-pod rules and the agent's ``ip rule`` and route (once, at build)."""
        if rules is None:
            return
        netns.in_ns(self.peer, ["iptables-restore"], input=FLUSH_DOCUMENT)
        netns.in_ns(self.peer, ["iptables-restore", "--noflush"], input=restore_text(rules))
        for line in AGENT_COMMANDS:
            netns.in_ns(self.peer, line.split())

    def start_ztunnel(self, ns: str, pod_ip: str) -> None:
        role = ns.rsplit("-", 1)[-1]
        log = self._log_file(f"{role}-ztunnel", 0, 0)
        self.ztunnel_logs[role] = log
        if role == "pod":
            self.proxy_log_path = log   # Lab.connect reads the pod's ztunnel as "the proxy"
        args = ["--pod-ip", pod_ip, "--mesh", ",".join(MESH),
                "--services", json.dumps(list(self.services)),
                "--hop-limit", str(self.hop_limit), "--log", str(log)]
        channel = proc.start(self.registry, ns, "meshlab.live.ztunnel", args,
                             name=f"{role}-ztunnel", workdir=self.workdir)
        self.channels.append(channel)

    # -- what the peer saw ----------------------------------------------------------------
    def peer_counters(self) -> ctr.Snapshot:
        return ctr.parse_counters(netns.in_ns(self.peer, ["iptables-save", "-c"]).stdout)

    def ztunnel_events(self, role: str, rid: str | None = None) -> list[dict[str, Any]]:
        """The log lines of the ztunnel of ``role`` ("pod" or "peer"), for one request id."""
        path = self.ztunnel_logs.get(role)
        if path is None or not path.exists():
            return []
        events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [e for e in events if rid is None or e.get("id") == rid]

    def connect_both(self, dst: str, dport: int, **kwargs: Any) -> AmbientConnection:
        """:meth:`Lab.connect`, plus the peer's counters and its ztunnel's log."""
        before = self.peer_counters()
        seen = self.connect(dst, dport, **kwargs)
        return AmbientConnection(seen, self.peer_counters().minus(before),
                                 tuple(self.ztunnel_events("peer", seen.id)))


@dataclass(frozen=True)
class AmbientConnection:
    """One connection in the ambient lab: the pod's view (``pod``) and the peer's."""

    pod: KernelConnection
    peer_grew: Mapping[ctr.Key, int]
    peer_log: tuple[Mapping[str, Any], ...]

    @property
    def ztunnel_listeners(self) -> list[tuple[str, int]]:
        """(which ztunnel, port) of every accept, in time order: ("pod", 15001), ("peer", 15008)."""
        events = [("pod", e) for e in self.pod.accepts] + [
            ("peer", e) for e in self.peer_log if e.get("event") == "accept"]
        events.sort(key=lambda pair: float(pair[1].get("t", 0)))
        return [(who, int(e["listener_port"])) for who, e in events]


__all__ = ["AGENT_COMMANDS", "CLIENT_IP", "EXTERNAL_IP", "MESH", "PEER_IP",
           "POD_IP", "PROBE_IP", "AmbientConnection", "AmbientLab"]
