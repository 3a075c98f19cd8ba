"""The scenario catalog's world, built for real: who lives where in the lab.

``meshlab.world.World.default()`` (the model) has a pod ``productpage`` with a sidecar, a pod
``reviews`` and ``coredns`` without one, a host ``legacy-db`` outside the cluster, and three
Services. The lab builds the same world with two namespaces:

=================  ===========================================  ============================
who                model                                        lab
=================  ===========================================  ============================
pod/productpage    10.244.0.5; app (UID 1000) 9080, 8081;       the pod namespace, same
                   envoy (1337) 15001/15006/15021/15090,        addresses, ports and UIDs;
                   127.0.0.1:15000; pilot-agent (1337) 15020,   15001/15006 are the real
                   127.0.0.1:15053 tcp+udp                      relaying proxy
pod/reviews        10.244.0.9, reviews on 9080                  the peer namespace's eth0
pod/coredns        10.244.1.2, coredns on 53 tcp+udp            an address on the peer's lo
host/legacy-db     192.168.10.20, postgres on 5432              an address on the peer's lo
svc/...            VIP -> endpoint (kube-proxy on the node)      DNAT rules in the peer
                                                                namespace (it plays the node)
=================  ===========================================  ============================

The pod's default route points at the peer, so every address outside the pod is reached
through the veth, exactly as the model's routing decision (``eth0``) says.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from meshlab.live.lab import APP_UID, POD_IP, PROXY_UID, TPROXY_PROXY_UID, Lab, ProxySpec, Server
from meshlab.live.netns import LabError

PODS = {"productpage": POD_IP, "reviews": "10.244.0.9", "coredns": "10.244.1.2"}
HOSTS = {"legacy-db": "192.168.10.20"}
SERVICES: tuple[Mapping[str, Any], ...] = (
    {"name": "productpage", "namespace": "default", "vip": "10.96.0.30",
     "ports": [[9080, 9080]], "endpoints": [POD_IP]},
    {"name": "reviews", "namespace": "default", "vip": "10.96.0.20",
     "ports": [[9080, 9080]], "endpoints": ["10.244.0.9"]},
    {"name": "kube-dns", "namespace": "kube-system", "vip": "10.96.0.10",
     "ports": [[53, 53]], "endpoints": ["10.244.1.2"]},
)
INBOUND_PORTS = (9080,)
"""Target ports of the Services that select productpage (8081 is declared by none)."""

POD_SERVERS = (
    Server("app", (9080, 8081), uid=APP_UID),
    Server("envoy", (15021, 15090, "127.0.0.1:15000"), uid=PROXY_UID),
    Server("pilot-agent", (15020, "127.0.0.1:15053", "udp/127.0.0.1:15053"), uid=PROXY_UID),
)
PEER_SERVERS = (
    Server("reviews", ("10.244.0.9:9080",)),
    Server("coredns", ("10.244.1.2:53", "udp/10.244.1.2:53")),
    Server("postgres", ("192.168.10.20:5432",)),
)


def _kube_proxy_rules() -> str:
    lines = ["*nat", ":PREROUTING ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]"]
    for svc in SERVICES:
        for port, target in svc["ports"]:
            for proto in ("tcp", "udp"):
                lines.append(f"-A PREROUTING -d {svc['vip']}/32 -p {proto} --dport {port} "
                             f"-j DNAT --to-destination {svc['endpoints'][0]}:{target}")
    return "\n".join([*lines, "COMMIT", ""])


def proxy_spec(mode: str = "REDIRECT", hop_limit: int = 8) -> ProxySpec:
    """The relaying proxy as the injector runs Envoy: UID/GID 1337, or in TPROXY mode UID 0
    and GID 1337 (istio-proxy needs NET_ADMIN for IP_TRANSPARENT there, so it runs as root and
    only its GID is left for the ``--gid-owner 1337`` rules to recognise)."""
    uid = TPROXY_PROXY_UID if mode == "TPROXY" else PROXY_UID
    return ProxySpec(inbound_ports=INBOUND_PORTS, services=SERVICES, mode=mode,
                     hop_limit=hop_limit, uid=uid, gid=PROXY_UID)


def world_lab(*, trace: bool = False, deadline: float | None = None, keep: bool = False,
              mode: str = "REDIRECT", hop_limit: int = 8) -> Lab:
    """A :class:`Lab` holding the default world (rules are loaded per scenario)."""
    return Lab(rules=None, pod_servers=POD_SERVERS, peer_servers=PEER_SERVERS,
               proxy=proxy_spec(mode, hop_limit), peer_addresses=(),
               remote_addresses=(PODS["coredns"], HOSTS["legacy-db"]),
               peer_rules=_kube_proxy_rules(), trace=trace, deadline=deadline, keep=keep)


def address_of(name: str) -> str:
    """``pod/reviews`` -> ``10.244.0.9``; ``svc/kube-dns`` -> its VIP; an IP stays itself."""
    kind, _, short = name.partition("/")
    if kind == "pod" and short in PODS:
        return PODS[short]
    if kind == "host" and short in HOSTS:
        return HOSTS[short]
    if kind == "svc":
        for svc in SERVICES:
            if svc["name"] == short:
                return str(svc["vip"])
    if not short:
        return name
    raise LabError(f"the lab does not know {name!r}; it knows pod/{', pod/'.join(PODS)}, "
                   f"host/{', host/'.join(HOSTS)} and the services "
                   f"{', '.join(s['name'] for s in SERVICES)}")


@dataclass(frozen=True)
class LiveRequest:
    """The arguments of :meth:`Lab.connect` for one catalog request."""

    side: str
    uid: int
    gid: int
    src: str | None
    dst: str
    dport: int
    proto: str

    def kwargs(self) -> dict[str, Any]:
        return {"side": self.side, "uid": self.uid, "gid": self.gid, "src": self.src,
                "proto": self.proto}


def live_request(request: Any) -> LiveRequest:
    """Translate a :class:`meshlab.scenarios.RequestSpec` into where the lab connects from."""
    source = request.source
    if source == "pod/productpage":
        default = {None: APP_UID, "app": APP_UID, "envoy": PROXY_UID,
                   "pilot-agent": PROXY_UID}.get(request.process, APP_UID)
        uid = request.uid if request.uid is not None else default
        gid = request.gid if request.gid is not None else uid
        side, src = "pod", None
    else:
        side, uid, gid, src = "peer", 0, 0, address_of(source)
    return LiveRequest(side, uid, gid, src, address_of(request.to), request.port,
                       request.proto)
