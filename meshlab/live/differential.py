"""Connection by connection: the model's :class:`~meshlab.netfilter.Netns` against the kernel.

Each connection's first packet is traced by the model (``Netns.connect`` for a socket in the
pod, ``Netns.receive`` for a packet arriving on eth0) and made for real in the lab, where
*catchers* (plain answering servers, root, ``IP_TRANSPARENT``) listen on every port the
rules might send it to. Nothing relays, so each real connection ends at the first listening
socket - exactly what one model trace describes. Compared per connection:

* **where it went**: the model's ``Trace.delivered`` (after REDIRECT/DNAT/TPROXY) and
  ``Trace.local`` against the listening socket that accepted (its port) and the local
  address the kernel gave the accepted socket - in the pod or at the peer; a RST (refused)
  still means "delivered there, nobody listening"; a timeout means dropped;
* **which nat rules counted, and how often**: the model's per-rule counters against the
  growth of the kernel's ``iptables-save -c`` counters in the nat table, chain policies
  (rule 0) included. (nat sees one packet per connection, so the counts must be equal.
  mangle/raw/filter count every packet of the connection, so they are not compared.)

**Isolation.** A counter comparison is only fair if each connection starts from a state no
earlier connection touched: every connection gets a source port of its own
(:data:`meshlab.live.lab.OWN_PORTS`), never the kernel's ephemeral choice, which may repeat one
for another destination and, after NAT, meet the earlier connection's TIME_WAIT socket - then
the kernel counts one connection twice in nat (see there). No disagreement is re-measured:
each one is reported as measured.

:func:`default_rules_check` does this for the default rules and the connections a sidecar pod
meets every day (:data:`DEFAULT_RULES_CONNECTIONS`);
:func:`randomized` for random but valid ``istio-iptables`` configurations x random
connections, reproducible from a seed (``MESHLAB_LIVE_SEED``).
"""

from __future__ import annotations

import ipaddress
import os
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from meshlab.live.counters import Key, only_table
from meshlab.live.lab import POD_IP, KernelConnection, Lab, Server
from meshlab.netfilter.packet import endpoint

PEERS = ("10.244.0.9", "10.244.0.10")
REMOTES = ("10.96.0.10", "192.168.10.20")
PORTS = (80, 443, 3306, 8080, 9080, 15001, 15006, 15008, 15020, 15021, 15090, 16001, 16006)
CLOSED_PORT = 7070
"""A port nobody listens on: the kernel answers RST (refused) wherever it is delivered."""
UIDS = (0, 1000, 1337, 1500)
CIDRS = ("10.244.0.0/24", "10.244.0.9/32", "10.244.0.10/32", "10.96.0.0/12", "192.168.0.0/16",
         "10.0.0.0/8", "172.16.0.0/12")


@dataclass(frozen=True)
class ConnSpec:
    """One connection to make: from inside the pod (owner uid/gid) or from the peer."""

    side: str                 # "pod" | "peer" (arrives on eth0) | "ext" (arrives on net1)
    dst: str
    dport: int
    uid: int = 0
    gid: int = 0
    src: str | None = None
    proto: str = "tcp"        # "tcp" | "udp" (one datagram and its answer)
    sport: int | None = None  # a fixed source port (53: a DNS answer's port), else ephemeral
    mark: int = 0             # the pod socket's SO_MARK (0x539: ambient ztunnel's); root only

    def describe(self) -> str:
        who = f"uid {self.uid} gid {self.gid}" if self.side == "pod" else self.side
        if self.mark:
            who += f" mark {self.mark:#x}"
        src = f" from {self.src}" if self.src else ""
        sport = f" port {self.sport}" if self.sport else ""
        proto = f"{self.proto} " if self.proto != "tcp" else ""
        dst = f"[{self.dst}]" if ":" in self.dst else self.dst
        return f"{proto}{self.side}: {who}{src}{sport} -> {dst}:{self.dport}"


@dataclass(frozen=True)
class ConnResult:
    spec: ConnSpec
    config: tuple[str, ...]
    model: Mapping[str, Any]
    kernel: Mapping[str, Any]
    diff: tuple[str, ...]

    @property
    def agree(self) -> bool:
        return not self.diff

    def to_json(self) -> dict[str, Any]:
        return {"connection": self.spec.describe(), "flags": " ".join(self.config),
                "agree": self.agree, "model": dict(self.model), "kernel": dict(self.kernel),
                "diff": list(self.diff)}


@dataclass(frozen=True)
class DiffReport:
    seed: int | None
    results: tuple[ConnResult, ...]
    seconds: float
    configs: int = 0
    notes: tuple[str, ...] = field(default=())

    @property
    def agreed(self) -> int:
        return sum(r.agree for r in self.results)

    @property
    def disagreements(self) -> list[ConnResult]:
        return [r for r in self.results if not r.agree]


def catcher_lab(**kwargs: Any) -> Lab:
    """A lab whose pod and peer answer on every port of :data:`PORTS`, no proxy."""
    ports = tuple(PORTS)
    return Lab(rules=None, pod_servers=(Server("pod", ports, transparent=True),),
               peer_servers=(Server("peer", ports),), proxy=None, peer_addresses=PEERS[1:],
               remote_addresses=REMOTES, **kwargs)


SIDE_IFACE = {"peer": "eth0", "ext": "net1"}
"""Where a connection from outside the pod arrives: the peer is behind eth0, ext behind net1."""


def _model_side(ns: Any, spec: ConnSpec, sport: int) -> tuple[Any, dict[Key, int]]:
    from meshlab.netfilter import Packet

    before = dict(ns.counters)
    if spec.side == "pod":
        trace = ns.connect(proto=spec.proto, dst=spec.dst, dport=spec.dport, uid=spec.uid,
                           gid=spec.gid, src=spec.src, sport=sport, mark=spec.mark)
    else:
        packet = Packet(spec.proto, ipaddress.ip_address(spec.src or PEERS[0]), sport,
                        ipaddress.ip_address(spec.dst), spec.dport)
        trace = ns.receive(packet, SIDE_IFACE[spec.side])
    return trace, _grew(ns, before)


def _grew(ns: Any, before: Mapping[Key, int]) -> dict[Key, int]:
    return {k: v - before.get(k, 0) for k, v in ns.counters.items() if v - before.get(k, 0)}


SERVER_OWNERS = {15053: (1337, 1337)}
"""Who answers on a pod port, as (uid, gid): the DNS agent stand-in on 15053 runs as 1337
(like istio-agent); every other catcher in the pod runs as root."""


def _model_answer(ns: Any, trace: Any) -> tuple[bool, dict[Key, int]]:
    """The model's answer to a UDP datagram: (does it reach the client, its counters).

    The server answers from where the datagram arrived; the client (a connected UDP
    socket) takes the answer only if it reaches its own address and port *from the address
    it sent to* - which conntrack provides by un-NATing a reply, and nothing provides for an
    answer that became a NEW connection after a redirect."""
    if trace.verdict != "ACCEPT":
        return False, {}
    before = dict(ns.counters)
    if trace.local:
        uid, gid = SERVER_OWNERS.get(trace.delivered[1], (0, 0))
        answer = ns.answer(trace, uid=uid, gid=gid)
    else:
        answer = ns.answer(trace, iface=trace.out_iface)
    original = trace.connection.original
    reaches = (answer.verdict == "ACCEPT" and answer.delivered == (original.src, original.sport)
               and answer.reply_src == (original.dst, original.dport))
    return reaches, _grew(ns, before)


def _key(key: Key) -> str:
    return f"{key[1]} {key[2]}" if key[2] else f"{key[1]} policy"


ALL_TABLES = ("raw", "mangle", "nat", "filter")


def _counts(grew: Mapping[Key, int], tables: Sequence[str] = ALL_TABLES) -> dict[str, int]:
    return {f"{t} {_key(k)}": n for t in tables
            for k, n in sorted(only_table(grew, t, policies=True).items())}


def model_view(trace: Any, grew: Mapping[Key, int], *, zone: bool = False,
               first_packet: Sequence[str] = ()) -> dict[str, Any]:
    """What the model says: where the connection ends, its nat counters and, on request,
    the conntrack zone of its entry and the first packet's counters in other tables."""
    if trace.local:
        where = "pod"
    elif trace.verdict == "DROP":
        where = "dropped"
    else:
        where = "ext" if trace.out_iface == "net1" else "peer"
    view: dict[str, Any] = {"where": where, "delivered": endpoint(*trace.delivered),
                            "nat": {_key(k): n for k, n in
                                    sorted(only_table(grew, "nat", policies=True).items())}}
    if zone:
        view["zone"] = trace.connection.zone
    if first_packet:
        view["first_packet"] = _counts(grew, first_packet)
    return view


def trace_counts(events: Sequence[Mapping[str, Any]], tables: Sequence[str]) -> dict[str, int]:
    """The kernel's first-packet trace (``xtables-monitor --trace``) as counters: each
    matched rule and each applied policy counts once per time the packet met it."""
    counts: dict[str, int] = {}
    for event in events:
        if event["table"] not in tables or event["text"] == "return" or event["rule"] < 0:
            continue
        key = f"{event['table']} {_key((event['table'], event['chain'], event['rule']))}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def kernel_view(seen: KernelConnection, *, zone: int | None = None,
                first_packet: Sequence[str] = (),
                probe: KernelConnection | None = None,
                tables: Sequence[str] = ALL_TABLES) -> dict[str, Any]:
    """What the kernel did. ``probe`` is the same connection made as a first-packet probe
    (:meth:`Lab.connect` with ``first_only``): its counters are the first packet's, in
    ``first_packet``'s tables. A UDP probe also says where the datagram arrived (the
    catcher's log) and stands for the query alone: nat counters and the answer are then
    read from ``seen``, the ordinary exchange, separately (its counters in ``tables``: the
    lab creates all four tables, a ruleset without mangle has no mangle for the model)."""
    reply = seen.reply or {}
    arrived = next((e for e in (probe.arrivals if probe else ()) if e.get("event") ==
                    "datagram"), None)
    if probe is not None and seen.proto == "udp":
        if arrived is not None:
            ip = str(arrived["local"]).rsplit(":", 1)[0]
            where = str(arrived["server"]).split("-", 1)[0]
            delivered = f"{ip}:{arrived['listener']}"
        else:
            where, delivered = "dropped", None
    elif seen.outcome == "answered" and "server" in reply:
        ip = str(reply["local"]).rsplit(":", 1)[0]
        # "pod", "pod-dns" (the DNS agent stand-in) ... are all in the pod
        where = str(reply["server"]).split("-", 1)[0]
        delivered = f"{ip}:{reply['listener']}"
    elif seen.outcome == "refused":
        where, delivered = "refused", None
    elif seen.outcome == "timeout":
        where, delivered = "dropped", None
    else:
        where, delivered = seen.outcome, None
    nat_from = probe if probe is not None and seen.proto == "udp" else seen
    view = {"where": where, "delivered": delivered, "outcome": seen.outcome,
            "error": seen.error, "sender": seen.sender,
            "nat": {_key(k): n for k, n in sorted(only_table(nat_from.grew, "nat",
                                                             policies=True).items())}}
    if zone is not None:
        view["zone"] = zone
    if first_packet and probe is not None:
        view["first_packet"] = _counts(probe.grew, first_packet)
    elif first_packet and seen.trace is not None:
        view["first_packet"] = trace_counts(seen.trace, first_packet)
    if probe is not None and seen.proto == "udp":
        asked = endpoint(ipaddress.ip_address(seen.dst), seen.dport)
        view["answer"] = {"reaches_client": seen.outcome == "answered" and seen.sender == asked,
                          "exchange": _counts(seen.grew, tables)}
    return view


def _differ(what: str, model: Mapping[str, int], kernel: Mapping[str, int]) -> list[str]:
    return [f"{what}{key}: model counted {model.get(key, 0)}, kernel {kernel.get(key, 0)}"
            for key in sorted(set(model) | set(kernel)) if model.get(key, 0) != kernel.get(key, 0)]


def compare_views(spec: ConnSpec, model: Mapping[str, Any], kernel: Mapping[str, Any]
                  ) -> tuple[str, ...]:
    """Each way the two views differ, in words."""
    diff: list[str] = []
    if kernel["where"] == "refused":
        # RST: delivered where the model says, but no socket there. Only CLOSED_PORT may do so.
        port = int(str(model["delivered"]).rsplit(":", 1)[1])
        if model["where"] == "dropped" or port != CLOSED_PORT:
            diff.append(f"kernel refused the connection; model delivered it to "
                        f"{model['where']} {model['delivered']}")
    elif kernel["where"] != model["where"] or (kernel["delivered"] != model["delivered"]
                                               and kernel["where"] != "dropped"):
        diff.append(f"model: {model['where']} {model['delivered']}; "
                    f"kernel: {kernel['where']} {kernel['delivered']}"
                    + (f" ({kernel['error']})" if kernel.get("error") else ""))
    diff += _differ("nat ", model["nat"], kernel["nat"])
    if "zone" in model and "zone" in kernel and model["zone"] != kernel["zone"]:
        diff.append(f"conntrack zone: model {model['zone']}, kernel {kernel['zone']}")
    if "first_packet" in model and "first_packet" in kernel:
        diff += _differ("first packet, ", model["first_packet"], kernel["first_packet"])
    if "answer" in model and "answer" in kernel:
        m, k = model["answer"], kernel["answer"]
        if m["reaches_client"] != k["reaches_client"]:
            diff.append(f"answer: model says it {'reaches' if m['reaches_client'] else 'misses'}"
                        f" the client (from the address it asked), kernel: "
                        f"{kernel['outcome']} from {kernel.get('sender')}")
        diff += _differ("query and answer, ", m["exchange"], k["exchange"])
    return tuple(diff)



def _compressed(ip: str) -> str:
    return str(ipaddress.ip_address(ip))


PROBE_TIMEOUT = 0.05
"""How long a first-packet probe's client waits: its first packet crosses the pod in well
under a millisecond (loopback is synchronous; the veth hands it to the other namespace at
once), and nothing ever comes back through the gate."""


def run_connections(lab: Lab, ruleset: Any, specs: Sequence[ConnSpec], config: Sequence[str],
                    *, timeout: float = 0.6, post_commands: Sequence[str] = (),
                    interfaces: Sequence[Any] | None = None,
                    first_packet: Sequence[str] = ()) -> list[ConnResult]:
    """Make each connection for real and in a fresh model namespace; compare.

    ``post_commands`` are the ``ip rule``/``ip route`` commands the lab ran after the rules
    (TPROXY's fwmark routing); the model namespace gets the same policy routing.
    ``interfaces`` are the model namespace's (default: ``lo`` and ``eth0`` with the pod IP);
    ``ruleset.family`` decides which of their addresses count.

    ``first_packet`` names tables (``raw``, ``mangle``, ``nat``, ``filter``) whose counters
    for the connection's *first packet* are compared: the lab makes the connection once more
    as a probe (:data:`meshlab.live.lab.GATE_TABLE`), whose first packet is all any table
    counts, and the model traces that packet in a namespace of its own. A UDP datagram is
    always probed: the probe's counters are the query's (nat included) and the catcher's log
    says where it arrived; the conntrack zone of its entry is compared (``conntrack -L``);
    the ordinary exchange then shows whether the answer reached the client and what the
    query and answer counted together, against :meth:`Netns.answer`."""
    from meshlab.netfilter import Netns, pod_interfaces
    from meshlab.netfilter.kernel import fwmark_routes

    ifaces = pod_interfaces(POD_IP) if interfaces is None else interfaces
    # the lab's flush creates every table; a table the ruleset lacks is not the model's
    first_packet = tuple(t for t in first_packet if t in ruleset.tables)
    routes = fwmark_routes(post_commands)
    present = tuple(t for t in ALL_TABLES if t in ruleset.tables)
    results = []
    for spec in specs:
        probing = bool(first_packet) or spec.proto == "udp"
        tables = first_packet or (ALL_TABLES if spec.proto == "udp" else ())
        tables = tuple(t for t in tables if t in ruleset.tables)
        kwargs: dict[str, Any] = {"side": spec.side, "uid": spec.uid, "gid": spec.gid,
                                  "src": spec.src, "proto": spec.proto, "so_mark": spec.mark}
        probe = zone = None
        if probing:
            if spec.sport is not None:
                lab.forget_connections()  # an earlier exchange may have used this tuple
            probe = lab.connect(spec.dst, spec.dport, sport=spec.sport, timeout=PROBE_TIMEOUT,
                                first_only=True, trace=False, **kwargs)
            if spec.proto == "udp" and probe.sport is not None:
                local = str(probe.local or "").rsplit(":", 1)[0].strip("[]") or None
                zone = lab.conntrack_zone("udp", int(probe.sport), ruleset.family, src=local,
                                          dst=_compressed(spec.dst), dport=spec.dport)
            if spec.sport is not None:
                lab.forget_connections()  # the exchange below reuses the probe's tuple
        seen = lab.connect(spec.dst, spec.dport, sport=spec.sport, timeout=timeout,
                           trace=False, **kwargs)
        if seen.sport is None or (probe is not None and probe.sport is None):
            failed = probe if probe is not None and probe.sport is None else seen
            results.append(ConnResult(spec, tuple(config), {}, kernel_view(seen),
                                      (f"the lab could not make it: {failed.error}",)))
            continue
        model_probe = None
        if probe is not None:
            first_ns = Netns(ruleset, ifaces, fwmark_routes=routes)
            model_probe = _model_side(first_ns, spec, int(probe.sport))
        ns = Netns(ruleset, ifaces, fwmark_routes=routes)
        trace, grew = _model_side(ns, spec, int(seen.sport))
        if spec.proto == "udp" and model_probe is not None:
            # the query alone: where it went, its zone, nat and every table, from the probe
            model = model_view(model_probe[0], model_probe[1], zone=zone is not None,
                               first_packet=tables)
            reaches, answer_grew = _model_answer(ns, trace)
            exchange = dict(grew)
            for key, n in answer_grew.items():
                exchange[key] = exchange.get(key, 0) + n
            model["answer"] = {"reaches_client": reaches,
                               "exchange": _counts(exchange, present)}
        else:
            model = model_view(trace, grew)
            if model_probe is not None:
                model["first_packet"] = _counts(model_probe[1], tables)
        kernel = kernel_view(seen, zone=zone, first_packet=tables, probe=probe,
                             tables=present)
        results.append(ConnResult(spec, tuple(config), model, kernel,
                                  compare_views(spec, model, kernel)))
    return results


#: One of each kind of connection a pod with the default sidecar rules meets.
DEFAULT_RULES_CONNECTIONS = (
    ConnSpec("peer", POD_IP, 9080, src=PEERS[0]),                 # inbound to the app
    ConnSpec("peer", POD_IP, 15021, src=PEERS[0]),                # inbound, excluded port
    ConnSpec("pod", PEERS[0], 80, uid=1000, gid=1000),            # the app's outbound
    ConnSpec("pod", PEERS[0], 80, uid=1337, gid=1337),            # the proxy's own outbound
    ConnSpec("pod", POD_IP, 9080, uid=1337, gid=1337, src="127.0.0.6"),  # proxy -> app
    ConnSpec("pod", POD_IP, 9080, uid=1337, gid=1337),            # 1337 to its own pod IP
    ConnSpec("pod", "127.0.0.1", 9080, uid=1000, gid=1000),       # localhost
    ConnSpec("pod", POD_IP, 9080, uid=1000, gid=1000),            # the app to its own IP
    ConnSpec("pod", "127.0.0.1", 15001, uid=1000, gid=1000),      # straight to 15001
    ConnSpec("pod", REMOTES[0], 443, uid=1000, gid=1000),         # a remote address
    ConnSpec("peer", POD_IP, CLOSED_PORT, src=PEERS[0]),          # nobody listens
)


def default_rules_check(lab: Lab | None = None) -> list[ConnResult]:
    """The default sidecar rules and :data:`DEFAULT_RULES_CONNECTIONS`, model vs kernel."""
    from meshlab.istio.capture import CaptureConfig, generate
    from meshlab.istio.flags import DEFAULT_ISTIO_INIT_ARGS

    rules = generate(CaptureConfig.from_args(list(DEFAULT_ISTIO_INIT_ARGS)))
    if lab is None:
        with catcher_lab() as fresh:
            return default_rules_check(fresh)
    lab.load(rules.restore_v4, rules.post_commands)
    return run_connections(lab, rules.ruleset_v4, DEFAULT_RULES_CONNECTIONS,
                           DEFAULT_ISTIO_INIT_ARGS, post_commands=rules.post_commands)


# -- randomized --------------------------------------------------------------------------

def random_flags(rng: random.Random) -> list[str]:
    """A random but valid istio-iptables command line (ports, CIDRs, UIDs, GIDs, mode)."""
    def some(pool: Sequence[Any], most: int) -> list[str]:
        return [str(x) for x in rng.sample(list(pool), rng.randint(1, most))]

    flags = ["-p", rng.choice(["15001", "16001"]), "-z", rng.choice(["15006", "16006"])]
    uids = some(["1337", "1500", "1000"], 2) if rng.random() < 0.3 else ["1337"]
    flags += ["-u", ",".join(uids)]
    if rng.random() < 0.4:
        flags += ["-g", ",".join(some(["1337", "1500", "1000"], 2))]
    flags += ["-m", rng.choice(["REDIRECT", "REDIRECT", "TPROXY"])]
    inbound = rng.random()
    if inbound < 0.6:
        flags += ["-b", "*", "-d", ",".join(some([15090, 15021, 15020, 8080, 443], 3))]
    elif inbound < 0.85:
        flags += ["-b", ",".join(some([80, 8080, 9080, 3306], 3))]
    outbound = rng.random()
    if outbound < 0.5:
        flags += ["-i", "*"]
    elif outbound < 0.85:
        flags += ["-i", ",".join(some(CIDRS, 2))]
    if rng.random() < 0.4:
        flags += ["-x", ",".join(some(CIDRS, 2))]
    if rng.random() < 0.3:
        flags += ["-o", ",".join(some([80, 443, 3306, 9080], 2))]
    if rng.random() < 0.3:
        flags += ["-q", ",".join(some([80, 443, 3306, 8080], 2))]
    return flags


def random_connection(rng: random.Random) -> ConnSpec:
    port = rng.choice([*PORTS, CLOSED_PORT])
    if rng.random() < 0.35:
        return ConnSpec("peer", POD_IP, port, src=rng.choice(PEERS))
    uid = rng.choice(UIDS)
    gid = rng.choice([uid, uid, 1000, 1337])
    dst = rng.choice([*PEERS, *REMOTES, "127.0.0.1", POD_IP, "127.0.0.6"])
    local = dst in ("127.0.0.1", POD_IP, "127.0.0.6")
    src = "127.0.0.6" if local and rng.random() < 0.3 else None
    return ConnSpec("pod", dst, port, uid=uid, gid=gid, src=src)


def seed_from_env() -> int:
    value = os.environ.get("MESHLAB_LIVE_SEED")
    return int(value) if value else random.SystemRandom().randrange(2**31)


def randomized(seed: int | None = None, *, configs: int = 12, per_config: int = 20,
               lab: Lab | None = None) -> DiffReport:
    """``configs`` random configurations x ``per_config`` random connections, seeded."""
    from meshlab.istio.capture import CaptureConfig, generate

    seed = seed_from_env() if seed is None else seed
    rng = random.Random(seed)
    if lab is None:
        with catcher_lab() as fresh:
            return randomized(seed, configs=configs, per_config=per_config, lab=fresh)
    started = time.perf_counter()
    results: list[ConnResult] = []
    for _ in range(configs):
        flags = random_flags(rng)
        rules = generate(CaptureConfig.from_args(flags))
        lab.load(rules.restore_v4, rules.post_commands)
        specs = [random_connection(rng) for _ in range(per_config)]
        results += run_connections(lab, rules.ruleset_v4, specs, flags,
                                   post_commands=rules.post_commands)
    return DiffReport(seed, tuple(results), time.perf_counter() - started, configs)
