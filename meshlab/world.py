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

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from ipaddress import ip_address
from typing import TYPE_CHECKING

from meshlab.errors import MeshlabError
from meshlab.netfilter.packet import IPAddress, endpoint
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
    """

    pods: tuple[Pod, ...]
    services: tuple[Service, ...]
    subject: str = "productpage"
    hop_limit: int = 16
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
                           without_rules: Sequence[str] = ()) -> World:
        """This world with the subject pod's rules changed (each world keeps its variants)."""
        if flags is None and not without_rules:
            return self
        key = (None if flags is None else tuple(flags) if not isinstance(flags, str) else flags,
               tuple(without_rules))
        return _world_variant(self, key)

    # ---------------------------------------------------------------- running
    def run(self, request: Request, *, scenario: str = "",
            flags: Sequence[str] | str | None = None, without_rules: Sequence[str] = ()) -> Walk:
        """Run ``request`` to its outcome and return the :class:`Walk`."""
        world = self.with_subject_rules(flags=flags, without_rules=without_rules)
        subject = world.pod(world.subject)
        walk = _Run(world, subject).go(request)
        return Walk(
            scenario=scenario or f"{request.source} -> {request.to}:{request.port}",
            events=tuple(walk.events), outcome=walk.outcome, delivered_to=walk.delivery,
            loop=walk.loop, counters=walk.counters(), reason=walk.reason,
            flags=subject.flags or (), removed_rules=subject.removed_rules)

    def run_spec(self, request: Request, *, scenario: str = "",
                 flags: Sequence[str] | None = None, without_rules: Sequence[str] = ()) -> Walk:
        """:meth:`run` for a catalog entry's request (the catalog stores :class:`Request`)."""
        return self.run(request, scenario=scenario, flags=flags, without_rules=without_rules)


@lru_cache(maxsize=1)
def _default_world() -> World:
    services = default_services()
    pods = (
        Pod.default(services=services),
        Pod.plain("reviews", "10.244.0.9", [("tcp", "0.0.0.0", 9080)]),
        Pod.plain("coredns", "10.244.1.2", [("udp", "0.0.0.0", 53), ("tcp", "0.0.0.0", 53)],
                  namespace="kube-system"),
        Pod.plain("legacy-db", "192.168.10.20", [("tcp", "0.0.0.0", 5432)], process="postgres",
                  kind="host", prefix_len=24),
    )
    return World(pods, services)


def _world_variant(world: World, key: tuple[tuple[str, ...] | str | None, tuple[str, ...]]
                   ) -> World:
    found = world._variants.get(key)
    if found is not None:
        return found
    flags, without = key
    subject = world.pod(world.subject).with_rules(flags=flags, without_rules=without)
    pods = tuple(subject if p.name == world.subject else p for p in world.pods)
    return world._variants.keep(key, World(pods, world.services, world.subject, world.hop_limit))


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
        return self.open(pod, process, request.proto, dst, request.port, src=None, mark=0,
                         actor=self.actor_for(pod, process, self.subject))

    def open(self, pod: Pod, process: Process, proto: str, dst: IPAddress, dport: int, *,
             src: IPAddress | None, mark: int, actor: str) -> _Run:
        """``process`` in ``pod`` connects to ``dst:dport``: the kernel's OUTPUT path."""
        conn = self.next_connection
        self.next_connection += 1
        ns = self.netns(pod)
        trace = ns.connect(proto=proto, dst=dst, dport=dport, uid=process.uid,
                           gid=process.gid, src=src, mark=mark)
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
        svc = self.world.service_by_vip(dst)
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
        target = self.world._by_ip.get(dst)
        if target is None:
            self.add("node", "timeout", conn, endpoint(src, sport), endpoint(dst, dport), None,
                     f"nothing in this world has address {dst}: no answer", pod)
            return self.end("timeout", f"no pod or host has address {dst}")
        from meshlab.netfilter.packet import Packet

        arriving = Packet(proto, src, sport, dst, dport, iif="eth0")
        trace2 = self.netns(target).receive(arriving, "eth0")
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
                 f"{back.out_iface} instead of coming back to the proxy")
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

    def looped(self, pod: Pod, accept: Event, first: int, listener: str,
               original: tuple[IPAddress, int], owner: str, detected_by: str) -> _Run:
        cycle = _cycle(self.events[first:accept.index + 1], listener)
        report = LoopReport(
            cycle=cycle, hops=self.self_hops, detected_by=detected_by, listener=listener,
            original_dst=endpoint(*original), owner=owner,
            gives_out=_gives_out(listener, original))
        self.loop = report
        self.add("proxy", "loop", accept.connection, accept.src, accept.dst, accept.owner,
                 f"loop ({detected_by}): {report.text}", pod, listener=listener)
        return self.end("loop", f"the proxy's own connection came back to {listener} with the "
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
        has_rules = pod.sidecar is not None or bool(pod.removed_rules)
        events = self.events
        name = pod.name
        if has_rules:
            for ev in trace.evaluations:
                if not route_done and ev.hook in ("PREROUTING", "INPUT"):
                    self._route(pod, conn, flow, trace, route_text)
                    route_done = True
                p = ev.packet
                owner = None if p.uid is None else f"uid {p.uid} gid {p.gid}"
                matched = ev.matched
                events.append(Event(
                    len(events), "kernel", "policy" if ev.rule == 0 else "rule", conn,
                    endpoint(p.src, p.sport), endpoint(p.dst, p.dport), owner,
                    (ev.verdict or "match") if matched else "no match",
                    hook=ev.hook, table=ev.table, chain=ev.chain, rule=ev.rule, text=ev.text,
                    matched=matched, pod=name))
                if matched and nat_key == (ev.table, ev.chain, ev.rule):
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
    for cached in (pod_module._rules_for, pod_module._sidecar_for, pod_module._build_injected):
        cached.cache_clear()
