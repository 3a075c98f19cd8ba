"""The record of one request's journey through a pod: a :class:`Walk` of :class:`Event` values.

A walk is what :meth:`meshlab.world.World.run` returns. It is a plain, immutable record: every
lesson, picture, widget and the ``meshlab walk`` command are drawn from it, and none of them
decides anything on its own. Read it like a story told by several actors:

``app``
    a process in the pod calls ``connect()`` (or sends a UDP datagram);
``kernel``
    the pod's network namespace routes the packet and walks it through the netfilter hooks,
    tables, chains and rules (one :class:`Event` per rule evaluated, matched or not);
``proxy`` / ``agent``
    Envoy (or pilot-agent) accepts a connection, asks for its original destination and picks a
    listener, filter chain and cluster;
``node``
    the Kubernetes node outside the pod (kube-proxy translating a Service VIP);
``peer``
    whatever sits outside the pod at the other end (another pod, a host).

Each connection of the walk has a number: ``0`` is the one the first process opens, ``1`` the
one the proxy opens upstream, and so on. A walk ends in one :attr:`Walk.outcome`:

* ``"delivered"``: a socket accepted the bytes (:attr:`Walk.delivered_to` says which);
* ``"refused"``: nothing listens there (the kernel answers a TCP SYN with RST), or the proxy
  accepted and closed the connection (``BlackHoleCluster``);
* ``"dropped"``: a DROP rule or policy discarded the packet;
* ``"timeout"``: the packet left for an address where nothing answers;
* ``"loop"``: the connection came back to the same listener with the same original destination
  and the same owner (:attr:`Walk.loop` describes the cycle and its cost).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas

ACTORS = ("app", "kernel", "proxy", "agent", "node", "peer")
KINDS = (
    "connect",  # a process opens a connection / sends a datagram
    "route",  # the kernel's routing decision (which interface, which source address)
    "rule",  # one netfilter rule evaluated (matched or not)
    "policy",  # the end of a built-in chain: its policy applies
    "nat",  # REDIRECT/DNAT rewrote the destination; conntrack keeps the original one
    "tproxy",  # TPROXY (no NAT): the packet keeps its destination, is assigned to a
    #            transparent listening socket on --on-port and marked
    "accept",  # a listening socket accepted the connection
    "proxy",  # Envoy's choice: listener, filter chain, cluster, upstream
    "dnat",  # kube-proxy on the node rewrote a Service VIP to an endpoint
    "deliver",  # the bytes reached an application socket
    "close",  # the proxy closed the connection (BlackHoleCluster)
    "refused",  # no socket listens: TCP RST
    "drop",  # a DROP verdict
    "timeout",  # nothing answers
    "loop",  # a repeated state was recognised
    "reply",  # an answer (SYN-ACK, DNS response) on its way back: where it went
)
OUTCOMES = ("delivered", "refused", "dropped", "timeout", "loop")


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened in a walk, in order.

    ``src``/``dst`` are the connection's addresses *as they are at that moment* (before a NAT
    rule they show the original destination, after it the rewritten one). ``owner`` is the
    socket's owner (``"uid 1000 gid 1000"``) for locally generated packets, ``None`` for packets
    arriving from outside. The "where" fields are filled as they apply: ``hook``/``table``/
    ``chain``/``rule``/``text``/``matched`` for a rule, ``listener``/``filter_chain``/
    ``cluster`` for a proxy decision, ``process`` for an accept or a delivery. ``pod`` names
    the pod (or host) whose kernel or process acted.
    """

    index: int
    actor: str
    kind: str
    connection: int
    src: str
    dst: str
    owner: str | None
    decision: str
    hook: str | None = None
    table: str | None = None
    chain: str | None = None
    rule: int | None = None
    text: str | None = None
    listener: str | None = None
    filter_chain: str | None = None
    cluster: str | None = None
    matched: bool | None = None
    process: str | None = None
    pod: str = ""
    why_not: str | None = None  # a rule that did not match: its first failing condition

    @property
    def is_hit(self) -> bool:
        """True for everything except a rule that was evaluated and did not match."""
        return self.kind != "rule" or bool(self.matched)


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where the bytes arrived: which process, on which port, and the source address it sees.

    ``sees_source`` is what ``accept()``/``getpeername()`` returns to that process: for an
    application behind the sidecar it is ``127.0.0.6`` (Envoy binds its inbound upstream
    connections there), for a peer outside the pod it is the pod's IP. ``host`` names the pod or
    host the process runs in.
    """

    process: str
    port: int
    sees_source: str
    host: str = ""
    proto: str = "tcp"

    def to_json(self) -> dict[str, Any]:
        return {"process": self.process, "port": self.port, "sees_source": self.sees_source}


@dataclass(frozen=True, slots=True)
class LoopCost:
    """What a loop holds after ``hops`` turns (see :meth:`LoopReport.after`)."""

    hops: int
    connections: int  # TCP connections open at once (the first one included)
    proxy_sockets: int  # file descriptors Envoy holds (downstream + upstream per hop)
    sockets: int  # every socket in the pod's namespace (both ends of each local connection)
    ephemeral_ports: int  # local ports used towards the looping destination


@dataclass(frozen=True, slots=True)
class LoopReport:
    """A loop: the proxy's own connection was captured again and came back to it.

    ``cycle`` is the path of one turn as readable strings, e.g.
    ``("proxy:15001", "OUTPUT", "ISTIO_OUTPUT", "ISTIO_REDIRECT", "proxy:15001")``; ``hops`` is
    how many connections the proxy had opened that came back to itself when the walk stopped;
    ``detected_by`` is ``"repeated state"`` (same listener, same original destination, same
    owner) or ``"hop limit"``. ``gives_out`` says, in words, where a real proxy stops.

    The cost model (:meth:`after`) assumes what a real Envoy does for a plain TCP loop: every
    turn accepts one downstream connection and opens one upstream connection, and neither is
    closed while the loop runs, so each turn holds two more sockets in Envoy (both ends live in
    the same process, because the proxy talks to itself over ``lo``) and one more ephemeral port
    towards the same destination.
    """

    cycle: tuple[str, ...]
    hops: int
    detected_by: str
    listener: str  # "proxy:15001"
    original_dst: str  # "10.244.0.9:9080"
    owner: str  # "uid 1337 gid 1337"
    gives_out: str
    port_range: tuple[int, int] = (32768, 60999)
    nofile: int = 1048576

    @property
    def text(self) -> str:
        """The cycle on one line: ``proxy:15001 -> OUTPUT -> ... -> proxy:15001``."""
        return " -> ".join(self.cycle)

    @property
    def ephemeral_port_count(self) -> int:
        """How many local ports ``net.ipv4.ip_local_port_range`` offers (28232 by default)."""
        return self.port_range[1] - self.port_range[0] + 1

    def after(self, hops: int) -> LoopCost:
        """The connections and sockets the loop holds after ``hops`` turns.

        Connection 0 (the application's) is accepted by Envoy: one socket in the app, one in
        Envoy. Each turn adds one connection from Envoy to Envoy: two more Envoy sockets (the
        upstream it opened and the downstream it accepted) and one ephemeral port.
        """
        if hops < 0:
            raise ValueError("hops must be >= 0")
        return LoopCost(
            hops=hops,
            connections=1 + hops,
            proxy_sockets=1 + 2 * hops,
            sockets=2 + 2 * hops,
            ephemeral_ports=hops,
        )

    @property
    def hops_until_ports_run_out(self) -> int:
        """Turns after which ``connect()`` fails with EADDRNOTAVAIL (no free local port)."""
        return self.ephemeral_port_count

    @property
    def hops_until_fds_run_out(self) -> int:
        """Turns after which Envoy hits its file-descriptor limit (``nofile``) (EMFILE)."""
        return (self.nofile - 1) // 2

    def to_json(self) -> dict[str, Any]:
        return {"cycle": list(self.cycle), "hops": self.hops}


@dataclass(frozen=True, slots=True)
class Walk:
    """A request run end to end: its events in order, how it ended, and per-rule counters.

    ``counters`` maps ``(table, chain, rule number)`` to the packets that rule matched during
    the whole walk (all connections), as ``iptables -t nat -L -v`` would count them. ``reason``
    says in one line why the walk ended as it did. ``flags`` are the istio-iptables flags that
    produced the rules, ``removed_rules`` the rules taken out (``--without-rule``).
    ``subject`` names the pod under study; ``mode`` is ``"sidecar"`` or ``"ambient"`` (the
    subject has no sidecar; ztunnel and istio-cni's rules capture its traffic), for which
    ``annotations`` are the pod-level overrides given to the agent and ``removed_matches``
    the conditions taken out of its rules (``--without-match``).
    """

    scenario: str
    events: tuple[Event, ...]
    outcome: str
    delivered_to: Delivery | None
    loop: LoopReport | None
    counters: Mapping[tuple[str, str, int], int] = field(default_factory=dict)
    reason: str = ""
    flags: tuple[str, ...] = ()
    removed_rules: tuple[str, ...] = ()
    subject: str = ""
    mode: str = "sidecar"
    annotations: tuple[tuple[str, str], ...] = ()
    removed_matches: tuple[str, ...] = ()

    @property
    def hits(self) -> tuple[Event, ...]:
        """The events without the rules that were evaluated but did not match."""
        return tuple(e for e in self.events if e.is_hit)

    @property
    def proxied(self) -> bool:
        """True when a proxy (the sidecar's Envoy, or ztunnel) handled any connection."""
        return any(e.actor == "proxy" and e.kind == "proxy" for e in self.events)

    @property
    def connections(self) -> int:
        """How many connections the walk opened (the first one and each proxy upstream)."""
        return 1 + max((e.connection for e in self.events), default=0)

    def to_frame(self) -> pandas.DataFrame:
        """Every event as one row of a pandas DataFrame (columns = the :class:`Event` fields)."""
        import pandas

        columns = list(Event.__slots__)  # type: ignore[attr-defined]
        rows = [[getattr(e, c) for c in columns] for e in self.events]
        frame = pandas.DataFrame(rows, columns=columns)
        return frame.set_index("index")

    def to_json(self, *, numbers: Mapping[int, int | str] | None = None,
                detailed: bool = False) -> dict[str, Any]:
        """The walk as one JSON object (``meshlab walk --json`` prints it with the article's
        step numbers: :func:`meshlab.lesson.walk_json`).

        ``steps`` lists every event except rules that did not match, each with exactly the
        keys ``n, actor, hook, table, chain, rule, text, decision``; ``n`` is
        ``numbers[event index]`` (the article's step number, 1-15, or for an ambient walk the
        ambient step ``"A1"``, ``"A2"``...) when given, else ``None``. With ``detailed=True``
        each step also carries ``kind, connection, src, dst, owner, pod, listener,
        filter_chain, cluster``.
        """
        numbers = numbers or {}
        steps = []
        for event in self.events:
            if not event.is_hit:
                continue
            step: dict[str, Any] = {
                "n": numbers.get(event.index),
                "actor": event.actor,
                "hook": event.hook,
                "table": event.table,
                "chain": event.chain,
                "rule": event.rule,
                "text": event.text,
                "decision": event.decision,
            }
            if detailed:
                step.update(kind=event.kind, connection=event.connection, src=event.src,
                            dst=event.dst, owner=event.owner, pod=event.pod,
                            listener=event.listener, filter_chain=event.filter_chain,
                            cluster=event.cluster)
            steps.append(step)
        return {
            "scenario": self.scenario,
            "outcome": self.outcome,
            "delivered_to": None if self.delivered_to is None else self.delivered_to.to_json(),
            "loop": None if self.loop is None else self.loop.to_json(),
            "steps": steps,
        }
