"""A small cluster, and a request run through it end to end, as the kernel and Envoy would.

:class:`World` holds pods (with or without a sidecar), hosts outside the cluster, and
Services (name, virtual IP, ports, endpoints). :meth:`World.run` takes a :class:`Request`
("this process connects to that address and port") and returns a :class:`~meshlab.walk.Walk`:

1. The process calls ``connect()``: :meth:`meshlab.netfilter.kernel.Netns.connect` routes the
   first packet and walks it through OUTPUT and POSTROUTING. Every rule decision comes from
   the kernel model; this module never looks at a rule itself.
2. If the (possibly rewritten) destination is local, the packet comes back in through ``lo``
   and is delivered to whichever socket listens there (a ``0.0.0.0`` bind accepts any local
   address, a ``127.0.0.1`` bind only that one). No listener: the kernel answers with a TCP
   RST, the walk ends **refused**.
3. If that socket is one of Envoy's virtual listeners (15001, 15006), the proxy asks conntrack
   for the original destination (``SO_ORIGINAL_DST``), :meth:`Sidecar.decide` picks a filter
   chain and cluster, and Envoy opens a **new** connection as its own UID/GID (bound to
   127.0.0.6 for inbound clusters), which goes through the kernel model again from step 1.
   ``BlackHoleCluster`` closes the connection (the client sees it accepted, then closed:
   the walk ends **refused**).
4. A packet leaving by ``eth0`` reaches the pod or host with that address, whose own
   namespace receives it (:meth:`Netns.receive`, PREROUTING/INPUT) and so on. A Service VIP
   that nobody in the pod translated is translated on the node by **kube-proxy**, modelled
   simply: the first endpoint, the Service port's target port (no iptables rules of the
   node are shown; real kube-proxy picks an endpoint at random with ``-m statistic``).

**Loops.** The walk remembers each state in which a proxy listener accepted a connection:
(pod, listener port, original destination, owner of the connecting socket). Meeting one again
means the proxy is talking to itself: the walk stops with outcome ``"loop"`` and a
:class:`~meshlab.walk.LoopReport`. A hop limit (``World.hop_limit`` proxy accepts) stops
anything else that would not end.

Assumptions of the loop cost (see :class:`~meshlab.walk.LoopReport`): a plain TCP
``tcp_proxy`` loop, where Envoy keeps each downstream and upstream socket open while the loop
grows; Istio raises Envoy's per-cluster circuit-breaker limits (``max_connections``,
``max_pending_requests``, ``max_requests``) to 2^32-1 by default, so they do not stop it; no
overload-manager connection limit below the numbers given; Linux defaults
``net.ipv4.ip_local_port_range = 32768 60999`` (28232 ports per source/destination pair) and a
container ``nofile`` limit of 1048576.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from ipaddress import IPv4Address, ip_address
from typing import TYPE_CHECKING, Any

from meshlab.errors import MeshlabError
from meshlab.istio.ztunnel import ZTUNNEL
from meshlab.netfilter.packet import IPAddress, Skb, address, endpoint
from meshlab.netfilter.trace import RuleEval
from meshlab.pod import AGENT, ENVOY, Pod, Process, default_services
from meshlab.variants import Variants
from meshlab.walk import Delivery, Event, LoopCost, LoopReport, Walk

if TYPE_CHECKING:
    from meshlab.istio.envoy import Service
    from meshlab.netfilter.conntrack import Connection
    from meshlab.netfilter.kernel import Netns
    from meshlab.netfilter.trace import Trace

__all__ = [
    "Delivery",
    "Event",
    "LoopCost",
    "LoopReport",
    "Request",
    "Walk",
    "World",
    "default_services",
]


@dataclass(frozen=True, slots=True)
class Request:
    """A process opens a connection (or sends a UDP datagram) to an address and port.

    ``source`` names a pod or host: ``pod/NAME``, ``host/NAME`` or just ``NAME``; the process is
    its first one unless ``process`` names another. ``uid``/``gid`` override the process's
    identity (e.g. an application wrongly running as UID 1337). ``to`` is ``pod/NAME``,
    ``svc/NAME``, ``host/NAME`` or a literal IP address.
    """

    source: str
    to: str
    port: int
    proto: str = "tcp"
    process: str | None = None
    uid: int | None = None
    gid: int | None = None


@dataclass(frozen=True)
class World:
    """Pods, hosts and Services; :meth:`run` sends a request through them.

    ``subject`` is the pod under study: ``flags`` and ``without_rules`` given to :meth:`run`
    change *its* rules, and :attr:`Walk.counters` are *its* rule counters.

    ``gateways`` are ``(host, pod, interface)``: every packet ``host`` sends arrives at
    ``pod`` on ``interface``, whatever its destination (a VM whose only link is a virtual
    interface of the pod that runs it).
    """

    pods: tuple[Pod, ...]
    services: tuple[Service, ...]
    subject: str = "productpage"
    hop_limit: int = 16
    gateways: tuple[tuple[str, str, str], ...] = ()
    _by_name: dict[str, Pod] = field(default_factory=dict, repr=False, compare=False)
    _by_ip: dict[IPAddress, Pod] = field(default_factory=dict, repr=False, compare=False)
    _variants: Variants[World] = field(default_factory=Variants, init=False, repr=False,
                                       compare=False)

    def __post_init__(self) -> None:
        for pod in self.pods:
            if pod.name in self._by_name:
                raise MeshlabError(f"two pods or hosts are called {pod.name!r}; names must "
                                   "be unique in a world")
            self._by_name[pod.name] = pod
            self._by_ip[pod.ip] = pod

    @classmethod
    def default(cls) -> World:
        """The world of the scenario catalog (built once, then shared).

        ``pod/productpage`` 10.244.0.5 (injected, default flags; app UID 1000 on 9080 and
        8081), ``pod/reviews`` 10.244.0.9 and ``pod/coredns`` 10.244.1.2 (no sidecar),
        ``host/legacy-db`` 192.168.10.20 (outside the cluster, postgres on 5432), and the
        Services productpage, reviews and kube-dns.

        Ambient mode beside them: ``pod/details`` 10.244.0.12 and ``pod/reviews-v2``
        10.244.0.13 (no sidecar; istio-cni's rules, ztunnel's sockets; app on 9080; Services
        details 10.96.0.40 and reviews-v2 10.96.0.50, which productpage's sidecar does not
        know); details also has ``net1`` 10.0.2.1/24, the virtual interface of ``host/vm``
        10.0.2.2 (a VM running in the pod: every packet it sends arrives on net1);
        ``host/kubelet`` 169.254.7.127 is the node's kubelet as the pods see it (the node
        rewrites its probes' source to that address).
        """
        return _default_world()

    # ---------------------------------------------------------------- lookups
    def pod(self, name: str) -> Pod:
        """The pod or host called ``name`` (``pod/`` or ``host/`` prefix allowed)."""
        bare = name.split("/", 1)[1] if name.startswith(("pod/", "host/")) else name
        found = self._by_name.get(bare)
        if found is None:
            names = ", ".join(f"{p.kind}/{p.name}" for p in self.pods)
            raise MeshlabError(f"no pod or host called {name!r}; the world has {names}")
        return found

    def service(self, name: str) -> Service:
        bare = name.split("/", 1)[1] if name.startswith("svc/") else name
        for svc in self.services:
            if svc.name == bare:
                return svc
        names = ", ".join(f"svc/{s.name}" for s in self.services)
        raise MeshlabError(f"no Service called {name!r}; the world has {names}")

    def service_by_vip(self, ip: IPAddress) -> Service | None:
        for svc in self.services:
            if svc.vip == ip:
                return svc
        return None

    def resolve(self, to: str) -> IPAddress:
        """``pod/NAME`` / ``host/NAME`` -> its IP, ``svc/NAME`` -> its VIP, or a literal IP."""
        if to.startswith("svc/"):
            return self.service(to).vip
        if to.startswith(("pod/", "host/")) or to in self._by_name:
            return self.pod(to).ip
        try:
            return ip_address(to)
        except ValueError:
            raise MeshlabError(f"cannot tell where {to!r} is: write pod/NAME, svc/NAME, "
                               "host/NAME or an IP address") from None

    def with_subject_rules(self, *, flags: Sequence[str] | str | None = None,
                           without_rules: Sequence[str] = (),
                           annotations: Mapping[str, str] | None = None,
                           without_matches: Sequence[str] = ()) -> World:
        """This world with the subject pod's rules changed (each world keeps its variants).

        ``annotations`` and ``without_matches`` apply to an ambient subject
        (:meth:`meshlab.pod.Pod.with_rules`)."""
        if flags is None and not without_rules and not annotations and not without_matches:
            return self
        key = (None if flags is None else tuple(flags) if not isinstance(flags, str) else flags,
               tuple(without_rules))
        if annotations or without_matches:
            key += (tuple(sorted((annotations or {}).items())), tuple(without_matches))
        return _world_variant(self, key)

    def with_subject(self, name: str) -> World:
        """This world with ``name`` as the pod under study (kept, so it is built once)."""
        bare = self.pod(name).name
        if bare == self.subject:
            return self
        found = self._variants.get(("subject", bare))
        if found is None:
            found = self._variants.keep(("subject", bare), World(
                self.pods, self.services, bare, self.hop_limit, self.gateways))
        return found

    def gateway(self, host: str) -> tuple[Pod, str] | None:
        """The pod and interface every packet of ``host`` arrives at, if it has one."""
        for name, pod, iface in self.gateways:
            if name == host:
                return self.pod(pod), iface
        return None

    # ---------------------------------------------------------------- running
    def run(self, request: Request, *, scenario: str = "",
            flags: Sequence[str] | str | None = None, without_rules: Sequence[str] = (),
            subject: str | None = None, annotations: Mapping[str, str] | None = None,
            without_matches: Sequence[str] = ()) -> Walk:
        """Run ``request`` to its outcome and return the :class:`Walk`.

        ``subject`` names another pod under study (an ambient one, say); ``annotations`` and
        ``without_matches`` change an ambient subject's rules."""
        world = self if subject is None else self.with_subject(subject)
        world = world.with_subject_rules(flags=flags, without_rules=without_rules,
                                         annotations=annotations,
                                         without_matches=without_matches)
        subject_pod = world.pod(world.subject)
        walk = _Run(world, subject_pod).go(request)
        ambient = subject_pod.ambient
        return Walk(
            scenario=scenario or f"{request.source} -> {request.to}:{request.port}",
            events=tuple(walk.events), outcome=walk.outcome, delivered_to=walk.delivery,
            loop=walk.loop, counters=walk.counters(), reason=walk.reason,
            flags=subject_pod.flags or (), removed_rules=subject_pod.removed_rules,
            subject=subject_pod.name, mode="sidecar" if ambient is None else "ambient",
            annotations=() if ambient is None else ambient.annotations,
            removed_matches=() if ambient is None else ambient.removed_matches)

    def run_spec(self, request: Request, *, scenario: str = "",
                 flags: Sequence[str] | None = None, without_rules: Sequence[str] = (),
                 subject: str | None = None, annotations: Mapping[str, str] | None = None,
                 without_matches: Sequence[str] = ()) -> Walk:
        """:meth:`run` for a catalog entry's request (the catalog stores :class:`Request`)."""
        return self.run(request, scenario=scenario, flags=flags, without_rules=without_rules,
                        subject=subject, annotations=annotations,
                        without_matches=without_matches)


@lru_cache(maxsize=1)
def _default_world() -> World:
    services = default_services()
    everything = services + _ambient_services()
    mesh = (AMBIENT_PODS["details"], AMBIENT_PODS["reviews-v2"])
    pods = (
        Pod.default(services=services),
        Pod.plain("reviews", "10.244.0.9", [("tcp", "0.0.0.0", 9080)]),
        Pod.plain("coredns", "10.244.1.2", [("udp", "0.0.0.0", 53), ("tcp", "0.0.0.0", 53)],
                  namespace="kube-system"),
        Pod.plain("legacy-db", "192.168.10.20", [("tcp", "0.0.0.0", 5432)], process="postgres",
                  kind="host", prefix_len=24),
        Pod.ambient_pod("details", AMBIENT_PODS["details"], mesh=mesh, services=everything,
                        extra_interfaces=(("net1", "10.0.2.1/24"),)),
        Pod.ambient_pod("reviews-v2", AMBIENT_PODS["reviews-v2"], mesh=mesh, services=everything),
        Pod.plain("kubelet", "169.254.7.127", [], kind="host", prefix_len=16),
        Pod.plain("vm", "10.0.2.2", [], process="vm-app", kind="host", prefix_len=24),
    )
    return World(pods, everything, gateways=(("vm", "details", "net1"),))


AMBIENT_PODS = {"details": IPv4Address("10.244.0.12"), "reviews-v2": IPv4Address("10.244.0.13")}
"""The default world's ambient pods (namespace labelled ``istio.io/dataplane-mode=ambient``)."""


@lru_cache(maxsize=1)
def _ambient_services() -> tuple[Any, ...]:
    """The Services of the ambient pods (the sidecar of productpage does not know them)."""
    from meshlab.istio.envoy import Service, ServicePort

    return tuple(Service(name, "default", IPv4Address(vip), (ServicePort(9080, 9080, "TCP",
                                                                         "http"),),
                         (AMBIENT_PODS[name],))
                 for name, vip in (("details", "10.96.0.40"), ("reviews-v2", "10.96.0.50")))


def _world_variant(world: World, key: tuple[Any, ...]) -> World:
    found = world._variants.get(key)
    if found is not None:
        return found
    flags, without = key[:2]
    annotations, matches = key[2:] if len(key) > 2 else ((), ())
    subject = world.pod(world.subject).with_rules(flags=flags, without_rules=without,
                                                  annotations=dict(annotations),
                                                  without_matches=matches)
    pods = tuple(subject if p.name == world.subject else p for p in world.pods)
    return world._variants.keep(key, World(pods, world.services, world.subject,
                                           world.hop_limit, world.gateways))


_ENDPOINTS: dict[tuple[int, int, int], str] = {}


def _endpoint_of(number: int, port: int, version: int) -> str:
    """:func:`~meshlab.netfilter.packet.endpoint` of an address given as its number (as the
    kernel model's packet snapshots hold it), remembered by value (at most 4096): a walk
    writes the same few endpoints for each of its rule events, and writing an address as
    text is slow."""
    key = (number, port, version)
    text = _ENDPOINTS.get(key)
    if text is None:
        if len(_ENDPOINTS) >= 4096:
            _ENDPOINTS.clear()
        text = _ENDPOINTS[key] = endpoint(address(number, version), port)
    return text


_Row = tuple[str, str, str, int, str, bool, str, str, str, str | None, str | None]


def _rule_rows(trace: Trace) -> Iterator[_Row]:
    """Each rule ``trace`` tried, and each chain policy it applied, as (hook, table, chain,
    rule number (0: the policy), text, matched, verdict, source, destination, owner,
    why_not), the packet written as text as that rule saw it.

    It reads the record the traversal left: the reference traversal's :class:`RuleEval` s,
    or the fast path's runs of rules (``netfilter._fast.record.Run``: the rules of one chain
    visit and the packet's snapshot), read without expanding them into a RuleEval and a
    Packet per rule, which would cost a walk a third more time. The reasons are the same
    :meth:`Rule.why_not` gives, on the same packet."""
    for record in trace.segments:
        if isinstance(record, RuleEval):
            p = record.packet
            owner = None if p.uid is None else f"uid {p.uid} gid {p.gid}"
            yield (record.hook, record.table, record.chain, record.rule, record.text,
                   record.matched, record.verdict, endpoint(p.src, p.sport),
                   endpoint(p.dst, p.dport), owner, record.why_not)
            continue
        snap, v = record.snap, record.version
        src, dst = _endpoint_of(snap[1], snap[2], v), _endpoint_of(snap[3], snap[4], v)
        owner = None if snap[7] is None else f"uid {snap[7]} gid {snap[8]}"
        chain = record.chain
        if record.stop < 0:
            policy = chain.policy or "ACCEPT"
            yield (record.hook, record.table, chain.name, 0, f"-P {chain.name} {policy}", True,
                   policy, src, dst, owner, None)
            continue
        skb = None
        for i in range(record.start, record.stop + 1):
            matched = record.matched and i == record.stop
            why_not = None
            if not matched:
                skb = skb or Skb.from_snapshot(snap)
                why_not = chain.rules[i].why_not(skb)
            yield (record.hook, record.table, chain.name, i + 1, chain.text(i), matched,
                   record.verdict if matched else "", src, dst, owner, why_not)


class _Run:
    """The mutable state of one walk: events so far, namespaces, seen proxy states."""

    def __init__(self, world: World, subject: Pod) -> None:
        self.world = world
        self.subject = subject
        self.events: list[Event] = []
        self.namespaces: dict[str, Netns] = {}
        # One ephemeral-port allocator (32768-60999) for every namespace of the walk: each
        # machine picks its own ports in reality, but Envoy's original_src connections reuse
        # a client's address inside the pod, so ports must not repeat across namespaces.
        from meshlab.netfilter.kernel import EphemeralPorts

        self.ports = EphemeralPorts()
        self.next_connection = 0
        # proxy state (pod, listener port, original destination, owner) -> its accept event
        self.seen: dict[tuple[str, int, tuple[IPAddress, int], str], int] = {}
        self.proxy_accepts = 0
        self.self_hops = 0  # connections the proxy opened that came back to a proxy listener
        self.outcome = ""
        self.reason = ""
        self.delivery: Delivery | None = None
        self.loop: LoopReport | None = None
        # ambient mode: what each HBONE connection carries, who opened each connection (and
        # its trace), the connections a socket accepted, and each connection ztunnel
        # accepted (pod, downstream trace, downstream connection, the upstream connection it
        # opened or None), so that the answers can be traced back once the walk ends
        self.tunnels: dict[int, tuple[IPAddress, int]] = {}
        self.traces: dict[int, tuple[Pod, Any]] = {}
        self.accepted: set[int] = set()
        self.hops: list[tuple[Pod, Any, int, int | None]] = []

    # ------------------------------------------------------------ helpers
    def netns(self, pod: Pod) -> Netns:
        ns = self.namespaces.get(pod.name)
        if ns is None:
            ns = self.namespaces[pod.name] = pod.netns(ports=self.ports)
        return ns

    def counters(self) -> dict[tuple[str, str, int], int]:
        ns = self.namespaces.get(self.subject.name)
        if ns is None:
            return {}
        return {k: v for k, v in dict(ns.counters).items() if v}

    def add(self, actor: str, kind: str, connection: int, src: str, dst: str,
            owner: str | None, decision: str, pod: Pod,
            **where: str | int | bool | None) -> Event:
        event = Event(len(self.events), actor, kind, connection, src, dst, owner, decision,
                      pod=pod.name, **where)
        self.events.append(event)
        return event

    def end(self, outcome: str, reason: str) -> _Run:
        self.outcome = outcome
        self.reason = reason
        return self

    @staticmethod
    def actor_for(pod: Pod, process: Process, subject: Pod) -> str:
        if pod.name != subject.name:
            return "peer"
        if process.name == ENVOY:
            return "proxy"
        if process.name == AGENT:
            return "agent"
        if process.name == ZTUNNEL:
            return "proxy"
        return "app"

    # ------------------------------------------------------------ the walk
    def go(self, request: Request) -> _Run:
        pod = self.world.pod(request.source)
        process = pod.process(request.process) if request.process else pod.app
        if request.uid is not None or request.gid is not None:
            process = Process(process.name,
                              process.uid if request.uid is None else request.uid,
                              process.gid if request.gid is None else request.gid,
                              process.container)
        if request.proto not in ("tcp", "udp"):
            raise MeshlabError(f"proto must be tcp or udp, not {request.proto!r}")
        dst = self.world.resolve(request.to)
        self.open(pod, process, request.proto, dst, request.port, src=None, mark=0,
                  actor=self.actor_for(pod, process, self.subject))
        if self.hops and self.outcome != "loop":
            self.replies()
        return self

    def open(self, pod: Pod, process: Process, proto: str, dst: IPAddress, dport: int, *,
             src: IPAddress | None, mark: int, actor: str,
             tunnel: tuple[IPAddress, int] | None = None) -> _Run:
        """``process`` in ``pod`` connects to ``dst:dport``: the kernel's OUTPUT path.
        ``tunnel`` is the target an HBONE connection carries."""
        conn = self.next_connection
        self.next_connection += 1
        ns = self.netns(pod)
        trace = ns.connect(proto=proto, dst=dst, dport=dport, uid=process.uid,
                           gid=process.gid, src=src, mark=mark)
        self.traces[conn] = (pod, trace)
        if tunnel is not None:
            self.tunnels[conn] = tunnel
        src_ep, dst_ep = self._endpoints(trace)
        verb = "sends a datagram" if proto == "udp" else "connect()"
        bind = f" bound to {src}" if src is not None else ""
        mark_text = f", socket mark {mark}" if mark else ""
        self.add(actor, "connect", conn, src_ep, dst_ep, process.owner,
                 f"{process.name} ({process.owner}{mark_text}) {verb} to "
                 f"{endpoint(dst, dport)}{bind}",
                 pod, process=process.name)
        self.record(pod, trace, conn, local=True)
        if trace.verdict != "ACCEPT":
            return self.dropped(pod, trace, conn)
        if trace.local:
            return self.arrive(pod, trace, conn, owner=process.owner, from_proxy=actor == "proxy")
        return self.leave(pod, trace, conn)

    def leave(self, pod: Pod, trace: Trace, conn: int) -> _Run:
        """The packet left ``pod`` by eth0: the node (kube-proxy), then the destination."""
        packet = self._last_packet(trace)
        proto = packet.proto
        src, sport = packet.src, packet.sport
        dst, dport = trace.delivered
        gateway = self.world.gateway(pod.name)
        svc = None if gateway is not None else self.world.service_by_vip(dst)
        if svc is not None:
            port = next((p for p in svc.ports if p.port == dport and p.protocol.lower() == proto),
                        None)
            if port is None or not svc.endpoints:
                why = "has no endpoints" if port is not None else f"has no {proto} port {dport}"
                self.add("node", "refused", conn, endpoint(src, sport), endpoint(dst, dport), None,
                         f"kube-proxy: Service {svc.name} {why}; the node rejects it", pod)
                return self.end("refused", f"Service {svc.name} {why}")
            chosen = svc.endpoints[0]
            self.add("node", "dnat", conn, endpoint(src, sport),
                     endpoint(chosen, port.target_port), None,
                     f"kube-proxy on the node: Service VIP {endpoint(dst, dport)} -> endpoint "
                     f"{endpoint(chosen, port.target_port)} (DNAT; modelled simply: first "
                     "endpoint)", pod)
            dst, dport = chosen, port.target_port
        target = self.world._by_ip.get(dst) if gateway is None else gateway[0]
        iface = "eth0" if gateway is None else gateway[1]
        if target is None:
            self.add("node", "timeout", conn, endpoint(src, sport), endpoint(dst, dport), None,
                     f"nothing in this world has address {dst}: no answer", pod)
            return self.end("timeout", f"no pod or host has address {dst}")
        from meshlab.netfilter.packet import Packet

        arriving = Packet(proto, src, sport, dst, dport, iif=iface)
        trace2 = self.netns(target).receive(arriving, iface)
        self.record(target, trace2, conn, local=False)
        if trace2.verdict != "ACCEPT":
            return self.dropped(target, trace2, conn)
        if not trace2.local:
            self.add("kernel", "timeout", conn, endpoint(src, sport), endpoint(dst, dport), None,
                     f"{target.name} does not own {dst}; it does not forward: no answer", target)
            return self.end("timeout", f"{target.name} does not forward")
        return self.arrive(target, trace2, conn, owner=None, from_proxy=False)

    def arrive(self, pod: Pod, trace: Trace, conn: int, *, owner: str | None,
               from_proxy: bool) -> _Run:
        """The connection reached a local address of ``pod``: find the socket."""
        packet = self._last_packet(trace)
        proto = packet.proto
        ip, port = trace.delivered
        src, sport = packet.src, packet.sport
        here = endpoint(ip, port)
        sock = pod.listener(proto, ip, port)
        if sock is None:
            answer = ("the kernel answers the SYN with RST: connection refused" if proto == "tcp"
                      else "the kernel answers with ICMP port unreachable")
            self.add("kernel", "refused", conn, endpoint(src, sport), here, owner,
                     f"no socket listens on {proto} {here}; {answer}", pod)
            return self.end("refused", f"nothing listens on {proto} {here} in {pod.name}")
        process = pod.process(sock.process)
        if (owner is not None and proto == "tcp"
                and not self.netns(pod).is_local(src)
                and not self.answer(pod, trace, conn, process, here)):
            return self
        self.accepted.add(conn)
        if pod.ambient is not None and sock.process == ZTUNNEL:
            return self.ztunnel(pod, trace, conn, sock.port, (src, sport), here, owner)
        if not (pod.is_proxy_listener(sock) and proto == "tcp"):
            self.delivery = Delivery(process.name, sock.port, str(src), pod.name, proto)
            actor = self.actor_for(pod, process, self.subject)
            self.add(actor, "deliver", conn, endpoint(src, sport), here, process.owner,
                     f"delivered to {process.name} on {sock}; it sees the client as "
                     f"{endpoint(src, sport)}", pod, process=process.name)
            return self.end("delivered", f"{process.name} in {pod.name} accepted it on "
                            f"{sock.proto} {sock.address}:{sock.port}")
        return self.proxy(pod, trace, conn, sock.port, (src, sport), here, owner, from_proxy)

    def answer(self, pod: Pod, trace: Trace, conn: int, server: Process, here: str) -> bool:
        """A connection made in this pod *from a foreign address* (Envoy's ``original_src``:
        the client's IP, bound with IP_TRANSPARENT) reached ``server``: does the server's
        answer (the SYN-ACK) find its way back to the connecting socket?

        An answer to a local address always comes back by ``lo``. This one is addressed to
        the client's address, which the routing table sends out by ``eth0`` - unless a mark
        on the answer (restored from the connection by ``CONNMARK --restore-mark``) meets an
        ``ip rule fwmark`` whose table makes every address local. If it leaves, the real
        client gets a SYN-ACK for a connection it never opened (it answers RST) and the
        proxy's connect() times out: the walk ends **timeout**. Returns True when it is back.
        """
        back = self.netns(pod).answer(trace, uid=server.uid, gid=server.gid)
        self.record(pod, back, conn, local=False)
        reply = back.connection.reply
        src_ep, dst_ep = endpoint(reply.src, reply.sport), endpoint(reply.dst, reply.dport)
        if back.local:
            how = "; ".join(back.notes) or "the address is local"
            self.add("kernel", "route", conn, src_ep, dst_ep, server.owner,
                     f"{server.name}'s answer (SYN-ACK) to the foreign address {dst_ep}: {how}; "
                     "it reaches the proxy's transparent socket", pod)
            return True
        if back.verdict != "ACCEPT":
            self.add("kernel", "drop", conn, src_ep, dst_ep, server.owner,
                     f"{server.name}'s answer (SYN-ACK) to {dst_ep} is dropped", pod)
            self.end("dropped", f"the answer of {server.name} in {pod.name} was dropped")
            return False
        self.add("kernel", "timeout", conn, src_ep, dst_ep, server.owner,
                 f"{server.name}'s answer (SYN-ACK) to {dst_ep} leaves by "
                 f"{back.out_iface}: no mark routes it back by lo, so the real {reply.dst} gets "
                 "a SYN-ACK for a connection it never opened (it answers RST) and the proxy's "
                 f"connect() to {here} times out", pod)
        self.end("timeout", f"the answer of {server.name} to {dst_ep} left {pod.name} by "
                 f"{back.out_iface} instead of coming back to the proxy: the connection never "
                 "completes")
        return False

    def proxy(self, pod: Pod, trace: Trace, conn: int, port: int,
              client: tuple[IPAddress, int], here: str, owner: str | None,
              from_proxy: bool) -> _Run:
        """Envoy accepted on a virtual listener: original destination, decision, upstream."""
        assert pod.sidecar is not None
        envoy = pod.process(ENVOY)
        ns = self.netns(pod)
        original = self._original_dst(ns, trace)
        listener = f"proxy:{port}"
        who = owner if owner is not None else f"remote {client[0]}"
        if trace.nat is not None and trace.nat.target == "TPROXY":
            # Nothing was rewritten: the accepted socket's own address is the destination.
            here = endpoint(*original)
            said = (f"Envoy's transparent socket on {port} accepts it; the socket's local "
                    f"address (getsockname) is the original destination {endpoint(*original)}, "
                    "since TPROXY rewrote nothing")
        else:
            said = f"Envoy accepts on {port}; SO_ORIGINAL_DST = {endpoint(*original)}"
        accept = self.add("proxy", "accept", conn, endpoint(*client), here, envoy.owner, said, pod,
                          listener=listener, process=envoy.name)
        if from_proxy:
            self.self_hops += 1
        state = (pod.name, port, original, who)
        if state in self.seen:
            return self.looped(pod, accept, self.seen[state], listener, original, who,
                               "repeated state")
        self.seen[state] = accept.index
        self.proxy_accepts += 1
        if self.proxy_accepts > self.world.hop_limit:
            return self.looped(pod, accept, accept.index, listener, original, who, "hop limit")
        decision = pod.sidecar.decide(port, original, downstream=client)
        self.add("proxy", "proxy", conn, endpoint(*client), endpoint(*original), envoy.owner,
                 decision.describe(), pod, listener=decision.listener,
                 filter_chain=decision.filter_chain, cluster=decision.cluster,
                 process=envoy.name)
        if decision.upstream is None:
            self.add("proxy", "close", conn, endpoint(*client), endpoint(*original), envoy.owner,
                     f"{decision.cluster} has no endpoint: Envoy closes the connection (the "
                     "client sees it accepted, then closed)", pod, cluster=decision.cluster,
                     process=envoy.name)
            return self.end("refused", f"Envoy sent it to {decision.cluster} and closed it")
        up_ip, up_port = decision.upstream
        return self.open(pod, envoy, "tcp", up_ip, up_port, src=decision.bind_source,
                         mark=decision.mark, actor="proxy")

    # ------------------------------------------------------------ ambient mode
    def ztunnel(self, pod: Pod, trace: Any, conn: int, port: int,
                client: tuple[IPAddress, int], here: str, owner: str | None) -> _Run:
        """ztunnel accepted on one of its listeners in an ambient pod: its original
        destination (or the target the HBONE connection carries), its decision, its upstream.

        Loops are recognised as for Envoy: the same listener, the same original destination
        (and HBONE target), the same owner of the connecting socket, seen twice."""
        from meshlab.istio.ztunnel import HBONE_PORT

        assert pod.ambient is not None
        ztunnel = pod.process(ZTUNNEL)
        proto = trace.connection.proto
        original = self._original_dst(self.netns(pod), trace)
        listener = f"{ZTUNNEL}:{port}"
        tunnel = self.tunnels.get(conn) if port == HBONE_PORT else None
        name = pod.ambient.ztunnel.listener_name(proto, port)
        if tunnel is not None:
            said = (f"ztunnel accepts on {port} ({name}); the tunnel carries the target "
                    f"{endpoint(*tunnel)}")
        elif original == trace.delivered:
            said = f"ztunnel accepts on {port} ({name}); nothing was redirected"
        else:
            said = f"ztunnel accepts on {port} ({name}); SO_ORIGINAL_DST = {endpoint(*original)}"
        accept = self.add("proxy", "accept", conn, endpoint(*client), here, ztunnel.owner, said,
                          pod, listener=listener, process=ZTUNNEL)
        who = owner if owner is not None else f"remote {client[0]}"
        if owner == ztunnel.owner:
            self.self_hops += 1
        state = (pod.name, listener, original, tunnel, who)
        if state in self.seen:
            return self.looped(pod, accept, self.seen[state], listener, original, who,
                               "repeated state", ambient=True)
        self.seen[state] = accept.index
        self.proxy_accepts += 1
        if self.proxy_accepts > self.world.hop_limit:
            return self.looped(pod, accept, accept.index, listener, original, who, "hop limit",
                               ambient=True)
        decision = pod.ambient.ztunnel.decide(proto, port, original, client=client[0],
                                              tunnel_target=tunnel)
        self.add("proxy", "proxy", conn, endpoint(*client), endpoint(*original), ztunnel.owner,
                 decision.describe(), pod, listener=listener, cluster=decision.route,
                 process=ZTUNNEL)
        if decision.upstream is None:
            self.hops.append((pod, trace, conn, None))
            self.add("proxy", "close", conn, endpoint(*client), endpoint(*original), ztunnel.owner,
                     f"ztunnel closes the connection ({decision.why}): the client sees it "
                     "accepted, then closed", pod, process=ZTUNNEL)
            return self.end("refused", f"ztunnel closed it: {decision.why}")
        self.hops.append((pod, trace, conn, self.next_connection))
        up_ip, up_port = decision.upstream
        return self.open(pod, ztunnel, proto, up_ip, up_port, src=decision.bind_source,
                         mark=decision.mark, actor="proxy", tunnel=decision.tunnel_target)

    def replies(self) -> None:
        """The answers of every connection the subject's ztunnel took part in, last first,
        traced once the walk has ended, however it ended (but in a loop, which the walk cuts
        short where the kernel goes round on).

        For each connection ztunnel accepted: the answer of its upstream, when that
        connection left the pod and a socket accepted it (it arrives on eth0 and must be
        recognised by conntrack, in the right zone, and reach ztunnel's socket), then
        ztunnel's own answer to its downstream client (back by lo to the app, which sees it
        come from the address it asked, or out by eth0 to a remote client). A TCP connection
        is answered whatever ztunnel then does with it: the kernel sends the SYN-ACK of an
        accepted socket before ztunnel reads anything, with the listener's mark 0x539 (an
        accepted socket keeps its listener's ``SO_MARK``), so a walk that ends refused -
        ztunnel closed it, or its upstream was refused or never answered - still has that
        SYN-ACK. A datagram is answered only with the upstream's answer: only when the walk
        was delivered. The answer of ztunnel's connection to the app was traced when it was
        made (:meth:`answer`). A reply that goes astray ends the walk."""
        from meshlab.istio.ztunnel import INPOD_MARK

        delivered = self.outcome == "delivered"
        for pod, down_trace, down_conn, up_conn in reversed(self.hops):
            if pod.name != self.subject.name:
                continue  # the answers that matter are the subject's
            if not delivered and down_trace.connection.proto != "tcp":
                continue  # no answer came back for ztunnel to pass on
            opened = self.traces.get(up_conn) if up_conn in self.accepted else None
            if opened is not None and not opened[1].local:
                up_pod, up_trace = opened
                back = self.netns(up_pod).answer(up_trace, iface=up_trace.out_iface)
                if not self.reply(up_pod, back, up_conn, "the server", must_be_local=True):
                    return
            ztunnel = pod.process(ZTUNNEL)
            back = self.netns(pod).answer(down_trace, uid=ztunnel.uid, gid=ztunnel.gid,
                                          mark=INPOD_MARK)
            client_local = down_trace.direction == "outbound"  # a process of this pod
            if not self.reply(pod, back, down_conn, "ztunnel", must_be_local=client_local):
                return

    def reply(self, pod: Pod, back: Any, conn: int, who: str, *, must_be_local: bool) -> bool:
        """Record one traced answer; False (and the walk ends) when it goes astray."""
        self.record(pod, back, conn, local=False)
        what = "SYN-ACK" if back.connection.proto == "tcp" else "answer"
        src_ep = endpoint(*back.reply_src) if back.reply_src else "?"
        dst_ep = endpoint(*back.delivered)
        notes = "; ".join(back.notes)
        if back.verdict != "ACCEPT":
            self.add("kernel", "drop", conn, src_ep, dst_ep, None,
                     f"{who}'s {what} to {dst_ep} is dropped" + (f" ({notes})" if notes else ""),
                     pod)
            self.end("dropped", f"the {what} of {who} in {pod.name} was dropped")
            return False
        if back.local:
            text = (f"{who}'s {what} comes back in and reaches {dst_ep}, seen from {src_ep}")
        else:
            text = f"{who}'s {what} leaves {pod.name} by {back.out_iface} for {dst_ep}"
        self.add("kernel", "reply", conn, src_ep, dst_ep, None,
                 text + (f" ({notes})" if notes else ""), pod)
        if back.local != must_be_local:
            self.end("timeout", f"the {what} of {who} in {pod.name} went to the wrong place: "
                     "the connection never completes")
            return False
        return True

    def looped(self, pod: Pod, accept: Event, first: int, listener: str,
               original: tuple[IPAddress, int], owner: str, detected_by: str, *,
               ambient: bool = False) -> _Run:
        """The proxy's own connection was captured and came back to it: Envoy's in a sidecar
        pod, ztunnel's (``ambient``) in an ambient pod, whose cycle is read off the nat rules
        only (raw and mangle have rules of their own on every packet there)."""
        events = self.events[first:accept.index + 1]
        cycle = _nat_cycle(events, listener) if ambient else _cycle(events, listener)
        gives_out = (_ztunnel_gives_out if ambient else _gives_out)(listener, original)
        report = LoopReport(
            cycle=cycle, hops=self.self_hops, detected_by=detected_by, listener=listener,
            original_dst=endpoint(*original), owner=owner, gives_out=gives_out)
        self.loop = report
        self.add("proxy", "loop", accept.connection, accept.src, accept.dst, accept.owner,
                 f"loop ({detected_by}): {report.text}", pod, listener=listener)
        who = "ztunnel's" if ambient else "the proxy's"
        return self.end("loop", f"{who} own connection came back to {listener} with the "
                        f"same original destination {endpoint(*original)} ({owner})")

    def dropped(self, pod: Pod, trace: Trace, conn: int) -> _Run:
        packet = self._last_packet(trace)
        last = trace.evaluations[-1] if trace.evaluations else None
        where = f" in {last.table} {last.chain}" if last is not None else ""
        self.add("kernel", "drop", conn, endpoint(packet.src, packet.sport),
                 endpoint(packet.dst, packet.dport), None, f"DROP{where}: the packet is discarded",
                 pod)
        return self.end("dropped", f"dropped{where} in {pod.name}")

    # ------------------------------------------------------------ trace -> events
    def record(self, pod: Pod, trace: Trace, conn: int, *, local: bool) -> None:
        """Turn the kernel's trace into events, in the order things happened.

        One event per rule (or chain policy) evaluated; right after the rule that rewrote the
        destination, a ``nat`` event saying what conntrack now remembers (after a TPROXY rule,
        which rewrites nothing, a ``tproxy`` event saying which socket gets it); at the end of
        POSTROUTING (``local=True``: a packet this pod sent), a ``route`` event saying whether
        it leaves by eth0 or comes back in by lo. Pods without rules show no rule events.
        """
        nat = trace.nat
        flow = self._last_packet(trace)
        route_text = ("local destination: out by lo and back in through PREROUTING/INPUT"
                      if trace.local else
                      f"leaves {pod.kind} {pod.name} by {trace.out_iface or '?'}")
        route_done = not local
        nat_key = None if nat is None else (nat.table, nat.chain, nat.rule)
        # an ambient pod other than the subject shows its NAT and routing, not each rule: the
        # subject's rules are the ones under study (and its counters the ones compared)
        has_rules = ((pod.sidecar is not None or bool(pod.removed_rules))
                     or (pod.ambient is not None and pod.name == self.subject.name))
        events = self.events
        name = pod.name
        if has_rules:
            for row in _rule_rows(trace):
                hook, table, chain, rule, text, matched, verdict, src, dst, owner, why_not = row
                if not route_done and hook in ("PREROUTING", "INPUT"):
                    self._route(pod, conn, flow, trace, route_text)
                    route_done = True
                events.append(Event(
                    len(events), "kernel", "policy" if rule == 0 else "rule", conn, src, dst,
                    owner, (verdict or "match") if matched else "no match", hook=hook,
                    table=table, chain=chain, rule=rule, text=text, matched=matched, pod=name,
                    why_not=why_not))
                if matched and nat_key == (table, chain, rule):
                    self._nat(pod, conn, flow, trace)
                    nat_key = None
        if nat_key is not None:
            self._nat(pod, conn, flow, trace)
        if not route_done:
            self._route(pod, conn, flow, trace, route_text)

    def _nat(self, pod: Pod, conn: int, flow: _Flow, trace: Trace) -> None:
        if trace.nat.target == "TPROXY":
            self._tproxy(pod, conn, flow, trace)
            return
        self.add("kernel", "nat", conn, endpoint(flow.src, flow.sport),
                 endpoint(*trace.delivered), None,
                 f"{trace.nat.target}: the connection now goes to {endpoint(*trace.delivered)}; "
                 f"conntrack keeps the original destination {endpoint(*trace.original_dst)}", pod)

    def _tproxy(self, pod: Pod, conn: int, flow: _Flow, trace: Trace) -> None:
        """TPROXY is no NAT: the packet keeps its destination; the kernel assigns it to the
        transparent listening socket on ``--on-port`` and marks it (the mark's ``ip rule``
        keeps the connection's packets local)."""
        nat = trace.nat
        port = trace.delivered[1]
        rule = next((e for e in trace.evaluations if e.matched and
                     (e.table, e.chain, e.rule) == (nat.table, nat.chain, nat.rule)), None)
        mark = rule.verdict.rpartition(" mark ")[2] if rule and " mark " in rule.verdict else ""
        marked = f" and marks it {mark}" if mark else ""
        self.add("kernel", "tproxy", conn, endpoint(flow.src, flow.sport),
                 endpoint(*trace.original_dst),
                 None, f"TPROXY rewrites nothing: the packet keeps its destination "
                 f"{endpoint(*trace.original_dst)}; the kernel assigns it to the transparent "
                 f"listening socket on port {port}{marked}", pod)

    def _route(self, pod: Pod, conn: int, flow: _Flow, trace: Trace, text: str) -> None:
        self.add("kernel", "route", conn, endpoint(flow.src, flow.sport),
                 endpoint(*trace.delivered),
                 None, text, pod)

    @staticmethod
    def _last_packet(trace: Trace) -> _Flow:
        """The connection as conntrack holds it, as a small packet-like record."""
        return _Flow(trace.connection)

    def _endpoints(self, trace: Trace) -> tuple[str, str]:
        original = trace.connection.original
        return endpoint(original.src, original.sport), endpoint(original.dst, original.dport)

    @staticmethod
    def _original_dst(ns: Netns, trace: Trace) -> tuple[IPAddress, int]:
        """What ``getsockopt(SO_ORIGINAL_DST)`` returns on the accepted socket: conntrack looks
        the socket's own tuple up in the reply direction (the reply tuple names both ends)."""
        conn = trace.connection
        reply = conn.reply
        return ns.conntrack.original_dst(
            conn.proto, (reply.src, reply.sport), (reply.dst, reply.dport), conn.zone)


class _Flow:
    """proto/src/sport/dst/dport of a connection as the accepting socket sees it."""

    __slots__ = ("dport", "dst", "proto", "sport", "src")

    def __init__(self, conn: Connection) -> None:
        self.proto = conn.proto
        # the peer as the socket sees it is the reply tuple's destination (after any SNAT)
        self.src, self.sport = conn.reply.dst, conn.reply.dport
        self.dst, self.dport = conn.original.dst, conn.original.dport


def _cycle(events: Iterable[Event], listener: str) -> tuple[str, ...]:
    """``proxy:15001 -> OUTPUT -> ISTIO_OUTPUT -> ISTIO_REDIRECT -> proxy:15001`` as strings."""
    path = [listener]
    for event in events:
        if event.kind != "rule" or not event.matched:
            continue
        if event.hook and event.hook != path[-1] and event.hook not in path[1:]:
            path.append(event.hook)
        if event.chain and event.chain != event.hook and event.chain != path[-1]:
            path.append(event.chain)
    path.append(listener)
    return tuple(path)


def _nat_cycle(events: Iterable[Event], listener: str) -> tuple[str, ...]:
    """:func:`_cycle` over the nat table's rules only: in an ambient pod raw and mangle have
    rules of their own on every packet, but only nat decides where a connection goes."""
    return _cycle((e for e in events if e.table == "nat"), listener)


def _ztunnel_gives_out(listener: str, original: tuple[IPAddress, int]) -> str:
    report = LoopReport((), 0, "", listener, endpoint(*original), "", "")
    ports = report.ephemeral_port_count
    return (
        f"Each turn is one more connection from ztunnel to ztunnel ({listener}), each holding "
        f"a socket at both ends and one more local port towards {endpoint(*original)}. Nothing in "
        f"the pod's rules stops it: only the socket mark 0x539 told ztunnel's traffic apart. "
        f"The first hard limit is the ephemeral ports: ip_local_port_range 32768-60999 gives "
        f"{ports} source ports per source/destination pair, so after about {ports} turns "
        "connect() fails with EADDRNOTAVAIL. In practice the application's connection times "
        "out first, while ztunnel's CPU and memory climb."
    )


def _gives_out(listener: str, original: tuple[IPAddress, int]) -> str:
    report = LoopReport((), 0, "", listener, endpoint(*original), "", "")
    ports = report.ephemeral_port_count
    cost = report.after(ports)
    return (
        f"Each turn holds two more sockets in Envoy (the upstream it opened and the downstream "
        f"it accepted from itself) and one more local port towards {endpoint(*original)}. Istio "
        "sets Envoy's circuit-breaker limits to 2^32-1 by default, so they do not stop it. "
        f"The first hard limit is the ephemeral ports: ip_local_port_range 32768-60999 gives "
        f"{ports} source ports per source/destination pair, so after about {ports} turns "
        f"({cost.proxy_sockets} Envoy sockets) connect() fails with EADDRNOTAVAIL; Envoy's "
        f"nofile limit (1048576 in a typical container) would allow about "
        f"{report.hops_until_fds_run_out} turns before EMFILE. In practice the client times out "
        "first and Envoy logs upstream connect errors, with CPU and memory climbing."
    )


def clear_caches() -> None:
    """Forget every cached pod, ruleset, Sidecar and world variant (for cold-start timing)."""
    from meshlab import pod as pod_module

    _default_world.cache_clear()
    default_services.cache_clear()
    _ambient_services.cache_clear()
    for cached in (pod_module._rules_for, pod_module._sidecar_for, pod_module._build_injected,
                   pod_module._ambient_rules, pod_module._build_ambient):
        cached.cache_clear()
