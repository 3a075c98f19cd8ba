"""More of the kernel, proven: DNS over UDP, IPv6, a second interface, TPROXY's first packet.

:mod:`meshlab.live.differential` checks random ``istio-iptables`` configurations x random
TCP connections over IPv4. This module widens what is compared, with four *families* of
random cases, each reproducible from a seed (``MESHLAB_LIVE_SEED``), all run in one lab
(:func:`wide_lab`) that has:

* UDP catchers: the pod's DNS agent stand-in (UID 1337, like istio-agent) on UDP 15053,
  root's on UDP 53/5353 (ports below 1024 need root), the peer's DNS servers on UDP
  53/5353 (at 10.96.0.10, kube-dns's usual Service IP, among others);
* IPv6 on eth0 (``fd00:244::5/64`` in the pod, ``fd00:244::9/64`` at the peer; ``::1`` and
  Istio's ``::6/128`` on lo, the latter added by the capture rules' post-command);
* a second pod interface, ``net1`` (10.245.0.5/24), to a third namespace ``ext``;
* first-packet probes (:data:`meshlab.live.lab.GATE_TABLE`): a connection whose first
  packet is the only one any table counts, so ``iptables-save -c`` gives its path.

The families:

``dns``
    ``--redirect-dns`` (DNS servers from a pod's resolv.conf, or ``--capture-all-dns``);
    UDP datagrams to port 53 (and 5353) from the app (UID 1000), the agent/proxy (UID/GID
    1337), root; some from source port 53; DNS answers arriving from the peer. Compared:
    the query alone, as a probe: where the datagram ends (the UDP catcher records the
    address it *arrived* on with ``IP_RECVORIGDSTADDR``: ``SO_ORIGINAL_DST`` is TCP-only),
    its counters in every table and the conntrack zone the raw table's ``CT --zone`` rules
    gave the entry (``conntrack -L``). Then the whole exchange, against
    :meth:`Netns.answer`: does the answer reach the client from the address it asked, and
    what did query and answer count together - an answer in another zone than its query is
    a NEW connection, which nat may capture again.
``dns6``
    the same over IPv6 (``dns_servers_v6``; the catchers answer from the arrival address
    with ``IPV6_PKTINFO``).
``ipv6``
    the ``ip6tables-restore`` document and TCP over IPv6: the app's outbound, inbound from
    the peer, the proxy's own connections from ``::6``, against ``Netns`` for ``ipv6``.
``iface``
    ``-c net1`` (exclude) and ``-k net1`` (virtual interface: arriving traffic is outbound
    traffic), with connections arriving on net1 from ``ext`` and leaving by net1 to it.
``tproxy``
    TPROXY configurations where, besides nat, the first packet's counters in raw, mangle,
    nat and filter are compared, from a probe (raw and mangle count every packet of a
    connection, so only the first packet's can be set beside one model trace).
``ambient``, ``ambient6``
    istio-cni's in-pod rules for an ambient pod (:func:`meshlab.istio.ambient.inpod_rules`),
    with the agent's ``ip rule``/route, over IPv4 and IPv6: random agent settings (DNS
    capture on/off) and pod annotations (ingress mode, ``net1`` as a virtual interface, DNS
    capture per pod). Connections from the app, from ztunnel (a root socket with ``SO_MARK
    0x539``, also bound to a *peer's* address, as ztunnel's transparent connection to the
    app is: it completes only if the app's SYN-ACK comes back by connmark 0x111 and table
    100), from peers (HBONE on 15008, plaintext), kubelet probes from 169.254.7.127, traffic
    arriving on net1, DNS over UDP and TCP; every table's first-packet counters compared.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from meshlab.live.differential import (
    CLOSED_PORT,
    PEERS,
    PORTS,
    REMOTES,
    ConnResult,
    ConnSpec,
    DiffReport,
    random_connection,
    random_flags,
    run_connections,
    seed_from_env,
)
from meshlab.live.lab import (
    NET1_EXT_IP,
    NET1_POD_IP,
    PEER_IP6,
    POD_IP,
    POD_IP6,
    Lab,
    Server,
)

PROBE_SNAT = "169.254.7.127"
"""Kubelet probes' source in ambient mode (the node SNATs them): an address of the peer."""
ZTUNNEL_MARK = 0x539
DNS_SERVERS = ("10.96.0.10", "10.244.0.10")
"""Candidate resolv.conf nameservers (``dns_servers_v4``): kube-dns's VIP, a peer."""
DNS_DSTS = ("10.96.0.10", "10.244.0.10", "10.244.0.9", "192.168.10.20", "127.0.0.1",
            POD_IP)
PEERS6 = (PEER_IP6, "fd00:244::a")
REMOTES6 = ("fd00:96::a",)
UDP_PORTS = (53, 5353)


def interfaces() -> tuple[Any, ...]:
    """The pod's interfaces as the model sees them (both families; ``::6`` on lo)."""
    from ipaddress import ip_interface

    from meshlab.netfilter import Interface

    return (Interface("lo", (ip_interface("127.0.0.1/8"), ip_interface("::1/128"),
                             ip_interface("::6/128"))),
            Interface("eth0", (ip_interface(f"{POD_IP}/24"), ip_interface(f"{POD_IP6}/64"))),
            Interface("net1", (ip_interface(f"{NET1_POD_IP}/24"),)))


def wide_lab(**kwargs: Any) -> Lab:
    """Catchers everywhere (TCP :data:`PORTS`, UDP 53/5353/15053), IPv6, net1, tracing."""
    tcp = (*PORTS, 15053, 53)
    udp = tuple(f"udp/{p}" for p in UDP_PORTS)
    return Lab(rules=None,
               pod_servers=(Server("pod", (*tcp, *udp), transparent=True),
                            Server("pod-dns", ("udp/15053",), uid=1337)),
               peer_servers=(Server("peer", (*tcp, *udp)),), proxy=None,
               peer_addresses=(*PEERS[1:], PROBE_SNAT), remote_addresses=REMOTES, ipv6=True,
               net1=True,
               ext_servers=(Server("ext", (*tcp, *udp)),), **kwargs)


# -- the families: (flags, connections) generators --------------------------------------

@dataclass(frozen=True)
class Loaded:
    """What one configuration puts in the pod: restore documents, the ``ip`` commands run
    after them, and the ruleset of the family's IP version for the model."""

    restore_v4: str
    restore_v6: str | None
    post_commands: tuple[str, ...]
    ruleset: Any


def sidecar_rules(flags: Sequence[str], options: dict[str, Any], ipv6: bool) -> Loaded:
    """istio-iptables' rules for ``flags`` (``options``: CaptureConfig's other settings)."""
    from meshlab.istio.capture import CaptureConfig, generate

    rules = generate(CaptureConfig.from_args(list(flags), **options))
    return Loaded(rules.restore_v4, rules.restore_v6, tuple(rules.post_commands),
                  rules.ruleset_v6 if ipv6 else rules.ruleset_v4)


def ambient_rules(flags: Sequence[str], options: dict[str, Any], ipv6: bool) -> Loaded:
    """istio-cni's in-pod rules: ``options`` holds the agent's ``dns_capture`` and ``ipv6``
    and the pod's annotations (their keys, e.g. ``ambient.istio.io/dns-capture``)."""
    from meshlab.istio.ambient import AgentConfig, PodOverrides, inpod_rules

    agent = AgentConfig(dns_capture=options["dns_capture"], ipv6=options["ipv6"])
    annotations = {k: v for k, v in options.items() if "/" in k}
    rules = inpod_rules(agent, PodOverrides.from_annotations(annotations))
    return Loaded(rules.ipv4, rules.ipv6, rules.route_commands, rules.ruleset(6 if ipv6 else 4))


@dataclass(frozen=True)
class Family:
    """One kind of random case: how to draw a configuration and its connections."""

    name: str
    flags: Callable[[random.Random], tuple[list[str], dict[str, Any]]]
    connection: Callable[[random.Random], ConnSpec]
    ipv6: bool = False
    first_packet: tuple[str, ...] = ()
    rules: Callable[[Sequence[str], dict[str, Any], bool], Loaded] = sidecar_rules


def dns_flags(rng: random.Random) -> tuple[list[str], dict[str, Any]]:
    flags = [*random_flags(rng), "--redirect-dns"]
    if rng.random() < 0.4:
        flags.append("--capture-all-dns")
    servers = rng.sample(DNS_SERVERS, rng.randint(0, 2)) if rng.random() < 0.8 else []
    return flags, {"dns_servers_v4": servers}


def dns_connection(rng: random.Random) -> ConnSpec:
    port = rng.choice([53, 53, 53, 5353])
    if rng.random() < 0.2:  # a DNS answer (source port 53) or any datagram, from outside
        return ConnSpec("peer", POD_IP, rng.choice([5353, 53]), src=rng.choice(PEERS),
                        proto="udp", sport=rng.choice([53, None]))
    if rng.random() < 0.15:  # DNS over TCP goes to 15053 as well
        uid = rng.choice([1000, 1337])
        return ConnSpec("pod", rng.choice(DNS_DSTS[:4]), 53, uid=uid, gid=uid)
    return _query_from_pod(rng, port, DNS_DSTS, own=("127.0.0.1", POD_IP))


def _query_from_pod(rng: random.Random, port: int, dsts: tuple[str, ...],
                    own: tuple[str, str]) -> ConnSpec:
    """A UDP query from a process of the pod (random owner) to one of ``dsts``.

    Only root may bind port 53. Not toward the pod itself (``own``: loopback and the pod's
    address): a datagram from port 53 to the pod's own port 53 is addressed to its own socket,
    and the kernel hands it to that (connected) socket rather than to the server's - socket
    lookup, not netfilter.
    """
    uid = rng.choice([1000, 1000, 1337, 0, 1500])
    gid = rng.choice([uid, uid, 1337])
    dst = rng.choice(dsts)
    sport = 53 if uid == 0 and dst not in own and rng.random() < 0.4 else None
    return ConnSpec("pod", dst, port, uid=uid, gid=gid, proto="udp", sport=sport)


DNS_SERVERS6 = ("fd00:96::a", "fd00:244::a")
DNS_DSTS6 = (*DNS_SERVERS6, PEER_IP6, "::1", POD_IP6)


def dns6_flags(rng: random.Random) -> tuple[list[str], dict[str, Any]]:
    flags, _ = dns_flags(rng)
    servers = rng.sample(DNS_SERVERS6, rng.randint(0, 2)) if rng.random() < 0.8 else []
    return flags, {"enable_ipv6": True, "dns_servers_v6": servers}


def dns6_connection(rng: random.Random) -> ConnSpec:
    """DNS over IPv6 UDP: the same cases as :func:`dns_connection`, over the v6 rules."""
    port = rng.choice([53, 53, 53, 5353])
    if rng.random() < 0.2:
        return ConnSpec("peer", POD_IP6, rng.choice([5353, 53]), src=rng.choice(PEERS6),
                        proto="udp", sport=rng.choice([53, None]))
    return _query_from_pod(rng, port, DNS_DSTS6, own=("::1", POD_IP6))


def ipv6_flags(rng: random.Random) -> tuple[list[str], dict[str, Any]]:
    return random_flags(rng), {"enable_ipv6": True}


def ipv6_connection(rng: random.Random) -> ConnSpec:
    port = rng.choice([*PORTS, CLOSED_PORT])
    if rng.random() < 0.35:
        return ConnSpec("peer", POD_IP6, port, src=rng.choice(PEERS6))
    uid = rng.choice((0, 1000, 1337, 1500))
    gid = rng.choice([uid, uid, 1000, 1337])
    dst = rng.choice([*PEERS6, *REMOTES6, "::1", POD_IP6, "::6"])
    src = "::6" if dst in ("::1", POD_IP6, "::6") and rng.random() < 0.4 else None
    return ConnSpec("pod", dst, port, uid=uid, gid=gid, src=src)


def iface_flags(rng: random.Random) -> tuple[list[str], dict[str, Any]]:
    flags = random_flags(rng)
    choice = rng.choice(["c", "k", "ck", "k"])
    if "c" in choice:
        flags += ["-c", "net1"]
    if "k" in choice:
        flags += ["-k", "net1"]
    return flags, {}


def iface_connection(rng: random.Random) -> ConnSpec:
    port = rng.choice([*PORTS, CLOSED_PORT])
    roll = rng.random()
    if roll < 0.4:  # in on net1: to the pod (either address) or through it
        dst = rng.choice([NET1_POD_IP, POD_IP, NET1_POD_IP, REMOTES[0]])
        return ConnSpec("ext", dst, port, src=NET1_EXT_IP)
    if roll < 0.7:  # out by net1
        uid = rng.choice((0, 1000, 1337))
        return ConnSpec("pod", NET1_EXT_IP, port, uid=uid, gid=uid)
    return random_connection(rng)


def tproxy_flags(rng: random.Random) -> tuple[list[str], dict[str, Any]]:
    flags = random_flags(rng)
    at = flags.index("-m")
    flags[at + 1] = "TPROXY"
    return flags, {}


def ambient_flags(rng: random.Random) -> tuple[list[str], dict[str, Any]]:
    """A random agent setting and random pod annotations (IPv6 rules always written)."""
    from meshlab.istio import ambient

    options: dict[str, Any] = {"dns_capture": rng.random() < 0.6, "ipv6": True}
    if rng.random() < 0.3:
        options[ambient.ANNOTATION_DNS_CAPTURE] = rng.choice(["true", "false"])
    if rng.random() < 0.3:
        options[ambient.ANNOTATION_BYPASS_INBOUND_CAPTURE] = "true"
    if rng.random() < 0.4:
        options[ambient.ANNOTATION_REROUTE_VIRTUAL_INTERFACES] = "net1"
    return ["ambient"], options


AMBIENT_PORTS = (80, 443, 9080, 15001, 15006, 15008, 15053, 53, CLOSED_PORT)


def ambient_connection(rng: random.Random) -> ConnSpec:
    """One connection around an ambient pod (IPv4); see the module docstring."""
    port = rng.choice(AMBIENT_PORTS)
    roll = rng.random()
    if roll < 0.25:   # from a peer (its ztunnel's HBONE, a plaintext client) or a probe
        return ConnSpec("peer", POD_IP, port, src=rng.choice([*PEERS, PROBE_SNAT]))
    if roll < 0.35:   # arriving on net1 (a virtual interface in some configurations)
        return ConnSpec("ext", rng.choice([REMOTES[0], NET1_POD_IP, POD_IP]), port,
                        src=NET1_EXT_IP)
    if roll < 0.55:   # ztunnel: marked, sometimes on a client's behalf (transparent)
        dst = rng.choice([*PEERS, *REMOTES, POD_IP, "127.0.0.1"])
        src = rng.choice([*PEERS, PROBE_SNAT]) if dst == POD_IP and rng.random() < 0.6 \
            else None
        return ConnSpec("pod", dst, port, src=src, mark=ZTUNNEL_MARK)
    if roll < 0.65:   # DNS over UDP, from the app or from ztunnel
        mark = ZTUNNEL_MARK if rng.random() < 0.4 else 0
        return ConnSpec("pod", rng.choice(DNS_DSTS), 53, uid=0 if mark else 1000,
                        gid=0 if mark else 1000, proto="udp", mark=mark)
    uid = rng.choice([1000, 1000, 0, 1337])
    return ConnSpec("pod", rng.choice([*PEERS, *REMOTES, "127.0.0.1", POD_IP]), port,
                    uid=uid, gid=uid)


def ambient6_connection(rng: random.Random) -> ConnSpec:
    """The same over IPv6 (no probe SNAT, no net1: both are IPv4 in the lab)."""
    port = rng.choice(AMBIENT_PORTS)
    roll = rng.random()
    if roll < 0.3:
        return ConnSpec("peer", POD_IP6, port, src=rng.choice(PEERS6))
    if roll < 0.55:
        dst = rng.choice([*PEERS6, *REMOTES6, POD_IP6, "::1"])
        src = rng.choice(PEERS6) if dst == POD_IP6 and rng.random() < 0.6 else None
        return ConnSpec("pod", dst, port, src=src, mark=ZTUNNEL_MARK)
    if roll < 0.65:
        mark = ZTUNNEL_MARK if rng.random() < 0.4 else 0
        return ConnSpec("pod", rng.choice(DNS_DSTS6), 53, uid=0 if mark else 1000,
                        gid=0 if mark else 1000, proto="udp", mark=mark)
    uid = rng.choice([1000, 1000, 0, 1337])
    return ConnSpec("pod", rng.choice([*PEERS6, *REMOTES6, "::1", POD_IP6]), port,
                    uid=uid, gid=uid)


EVERY_TABLE = ("raw", "mangle", "nat", "filter")

FAMILIES = {
    "dns": Family("dns", dns_flags, dns_connection),
    "ipv6": Family("ipv6", ipv6_flags, ipv6_connection, ipv6=True),
    "dns6": Family("dns6", dns6_flags, dns6_connection, ipv6=True),
    "iface": Family("iface", iface_flags, iface_connection),
    "tproxy": Family("tproxy", tproxy_flags, random_connection, first_packet=EVERY_TABLE),
    "ambient": Family("ambient", ambient_flags, ambient_connection, first_packet=EVERY_TABLE,
                      rules=ambient_rules),
    "ambient6": Family("ambient6", ambient_flags, ambient6_connection, ipv6=True,
                       first_packet=EVERY_TABLE, rules=ambient_rules),
}


def run_case(lab: Lab, family: Family, flags: Sequence[str], options: dict[str, Any],
             specs: Sequence[ConnSpec]) -> list[ConnResult]:
    """Load one configuration into the lab and compare each connection."""
    rules = family.rules(flags, options, family.ipv6)
    lab.load(rules.restore_v4, rules.post_commands, rules_v6=rules.restore_v6)
    label = [*flags] + [f"{k}={v}" for k, v in options.items() if v]
    return run_connections(lab, rules.ruleset, _distinct(specs), label,
                           post_commands=rules.post_commands, interfaces=interfaces(),
                           first_packet=family.first_packet)


def _distinct(specs: Sequence[ConnSpec]) -> list[ConnSpec]:
    """Drop repeats of a fixed-source-port connection: the same five-tuple twice would meet
    the first one's conntrack entry (not NEW: nat is not consulted) in both worlds."""
    seen: set[tuple[Any, ...]] = set()
    out = []
    for spec in specs:
        key = (spec.side, spec.src, spec.sport, spec.dst, spec.dport, spec.proto)
        if spec.sport is not None and key in seen:
            continue
        seen.add(key)
        out.append(spec)
    return out


def randomized_families(seed: int | None = None, *, configs: int = 3, per_config: int = 18,
                        families: Sequence[str] = tuple(FAMILIES),
                        lab: Lab | None = None) -> dict[str, DiffReport]:
    """For each family: ``configs`` random configurations x ``per_config`` connections.

    One seed drives all families (each family gets its own generator derived from it, so
    adding a family does not change another's cases)."""
    seed = seed_from_env() if seed is None else seed
    if lab is None:
        with wide_lab() as fresh:
            return randomized_families(seed, configs=configs, per_config=per_config,
                                       families=families, lab=fresh)
    reports = {}
    for name in families:
        family = FAMILIES[name]
        rng = random.Random(f"{seed}-{name}")
        started = time.perf_counter()
        results: list[ConnResult] = []
        for _ in range(configs):
            flags, options = family.flags(rng)
            specs = [family.connection(rng) for _ in range(per_config)]
            results += run_case(lab, family, flags, options, specs)
        reports[name] = DiffReport(seed, tuple(results), time.perf_counter() - started,
                                   configs)
    return reports


# -- fixed, named cases -------------------------------------------------------------------

DEFAULT = ["-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*",
           "-b", "*", "-d", "15090,15021,15020"]

NAMED_CASES: dict[str, tuple[str, list[str], dict[str, Any], tuple[ConnSpec, ...]]] = {
    "dns-app-query-captured": ("dns", [*DEFAULT, "--redirect-dns"],
                               {"dns_servers_v4": ["10.96.0.10"]},
                               (ConnSpec("pod", "10.96.0.10", 53, uid=1000, gid=1000,
                                         proto="udp"),)),
    "dns-agent-query-not-captured": ("dns", [*DEFAULT, "--redirect-dns"],
                                     {"dns_servers_v4": ["10.96.0.10"]},
                                     (ConnSpec("pod", "10.96.0.10", 53, uid=1337, gid=1337,
                                               proto="udp"),)),
    "dns-capture-all": ("dns", [*DEFAULT, "--redirect-dns", "--capture-all-dns"], {},
                        (ConnSpec("pod", "192.168.10.20", 53, uid=1000, gid=1000,
                                  proto="udp"),
                         ConnSpec("pod", "10.244.0.9", 53, uid=1337, gid=1337,
                                  proto="udp"))),
    # The answer's own path (compared too: does it reach the client, what did it count):
    # the agent's query to a server resolv.conf does not list gets zone 1; the answer
    # matches no `ISTIO_INBOUND --sport 53 -s SERVER` rule, so it is looked up in zone 0,
    # finds nothing, and is a NEW connection (nat PREROUTING and INPUT count it).
    "dns-answer-new-in-zone-0": ("dns", [*DEFAULT, "--redirect-dns"],
                                 {"dns_servers_v4": ["10.96.0.10"]},
                                 (ConnSpec("pod", "192.168.10.20", 53, uid=1337, gid=1337,
                                           proto="udp"),)),
    # kube-dns itself asking the pod's port 53 (zone 1 on the way in): root's answer to
    # 10.96.0.10:53 gets zone 2, is NEW there, and is captured to 15053 like a query.
    "dns-answer-to-a-server-captured": ("dns", [*DEFAULT, "--redirect-dns"],
                                        {"dns_servers_v4": ["10.96.0.10"]},
                                        (ConnSpec("peer", POD_IP, 53, src="10.96.0.10",
                                                  proto="udp", sport=53),)),
    "ipv6-app-proxy-inbound": ("ipv6", DEFAULT, {"enable_ipv6": True},
                               (ConnSpec("pod", PEER_IP6, 80, uid=1000, gid=1000),
                                ConnSpec("pod", PEER_IP6, 80, uid=1337, gid=1337),
                                ConnSpec("peer", POD_IP6, 9080, src=PEER_IP6),
                                ConnSpec("pod", POD_IP6, 9080, uid=1337, gid=1337,
                                         src="::6"))),
    "iface-exclude-net1": ("iface", [*DEFAULT, "-c", "net1"], {},
                           (ConnSpec("ext", NET1_POD_IP, 9080, src=NET1_EXT_IP),
                            ConnSpec("pod", NET1_EXT_IP, 80, uid=1000, gid=1000))),
    "iface-virtual-net1": ("iface", [*DEFAULT, "-k", "net1"], {},
                           (ConnSpec("ext", REMOTES[0], 443, src=NET1_EXT_IP),
                            ConnSpec("ext", NET1_POD_IP, 9080, src=NET1_EXT_IP))),
    "tproxy-first-packet": ("tproxy", [*DEFAULT[:7], "TPROXY", *DEFAULT[8:]], {},
                            (ConnSpec("peer", POD_IP, 9080, src=PEERS[0]),
                             ConnSpec("pod", PEERS[0], 80, uid=1000, gid=1000),
                             ConnSpec("pod", POD_IP, 9080, uid=0, gid=1337))),
}


def named_cases(names: Sequence[str] = tuple(NAMED_CASES), *,
                lab: Lab | None = None) -> dict[str, list[ConnResult]]:
    """Run the fixed cases: {name: results}."""
    if lab is None:
        with wide_lab() as fresh:
            return named_cases(names, lab=fresh)
    out = {}
    for name in names:
        family, flags, options, specs = NAMED_CASES[name]
        out[name] = run_case(lab, FAMILIES[family], flags, options, specs)
    return out
