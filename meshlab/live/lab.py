"""The real lab: a pod and the world around it, as network namespaces on the real kernel.

::

    peer namespace (the rest of the cluster)          pod namespace
    eth0 10.244.0.9/24 (+ .10, .11 ...)   <-- veth -->  eth0 10.244.0.5/24, lo 127.0.0.1/8
    lo   extra addresses (10.96.0.10 ...)               default via 10.244.0.9
    servers: "peer" (answers on 80, 8080, 9080 ...)     servers: "app" (UID 1000, 9080),
    agent (makes inbound connections)                   "istio-agent" (UID 1337, 15020/15021/15090),
                                                        "proxy" (UID/GID 1337, 15001/15006;
                                                        TPROXY: UID 0, GID 1337),
                                                        agent (makes the pod's connections)

:class:`Lab` builds that, loads a ruleset into the *pod namespace only* (``iptables-restore``:
first an empty document that flushes the four tables, then the rules with ``--noflush``, as
istio-iptables does, so ``-I CHAIN N`` lines apply in order), runs its post-commands (the
``ip rule``/``ip route`` pair TPROXY needs), and starts the processes. Then
:meth:`Lab.connect` makes one real connection from a chosen namespace, UID, GID and source,
and reports what the kernel did with it (:class:`KernelConnection`): the outcome, who
accepted it on which listening port, the original destination that listener read, the
source address the final server saw, every counter that grew (``iptables-save -c`` before
and after) and every step of the proxy's log for that request.

With ``proxy="catch"`` the proxy's ports are served by a plain answering server (run as UID
1337 too) instead of the relaying proxy: then each connection ends at the first listening
socket, which is what a per-connection comparison with one model trace needs.

Use it as a context manager; everything is removed at the end, however it ends::

    with Lab(rules=capture.generate(config).restore_v4) as lab:
        seen = lab.connect("10.244.0.5", 9080, side="peer")
        seen.listener, seen.original_dst, seen.source_seen, seen.nat

Privileges: the lab needs root (CAP_SYS_ADMIN for ``ip netns add``, CAP_NET_ADMIN for rules)
and iptables, iproute2 and util-linux's ``setpriv``. See :mod:`meshlab.live` for running it
in an unprivileged user namespace instead.
"""

from __future__ import annotations

import itertools
import json
import os
import shlex
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from meshlab.live import counters as ctr
from meshlab.live import netns, proc
from meshlab.live.netns import LabError, LabUnavailable, Registry
from meshlab.netfilter.ruleset import BUILTIN_CHAINS

POD_IP = "10.244.0.5"
PEER_IP = "10.244.0.9"
PREFIX_LEN = 24
POD_IP6 = "fd00:244::5"
PEER_IP6 = "fd00:244::9"
PREFIX_LEN6 = 64
"""With ``Lab(ipv6=True)`` both ends of eth0 also get these (``nodad``: usable at once,
without the second or so of duplicate address detection)."""
NET1_POD_IP = "10.245.0.5"
NET1_EXT_IP = "10.245.0.9"
"""With ``Lab(net1=True)`` the pod has a second interface, ``net1`` (as a Multus network
would add), joined to a third namespace, ``ext``, whose default route points back at the
pod: the lab for istio-iptables' ``-c`` (exclude interfaces) and ``-k`` (virtual
interfaces, whose arriving traffic is treated as outbound)."""
APP_UID = 1000
PROXY_UID = 1337
TPROXY_PROXY_UID = 0
"""In TPROXY mode istio-proxy runs as UID 0 (GID 1337): it needs NET_ADMIN for IP_TRANSPARENT."""

FLUSH_DOCUMENT = "".join(
    f"*{table}\n" + "".join(f":{chain} ACCEPT [0:0]\n" for chain in chains) + "COMMIT\n"
    for table, chains in BUILTIN_CHAINS.items()
)
"""Fed to ``iptables-restore`` and ``ip6tables-restore`` (each family has its own tables;
without --noflush): empties the four tables, deletes user chains and resets policies and
counters - a clean slate before each ruleset."""


FIRST_TOS = 0x20
"""The TOS byte (DSCP CS1; the IPv6 traffic class alike) that marks a first-packet probe."""
FIRST_PORTS = range(20000, 30000)
"""Source ports for TCP first-packet probes: outside Linux's ephemeral range (32768-60999), so
no ordinary connection of the lab ever uses one (see :data:`GATE_TABLE`)."""
OWN_PORTS = range(40000, 60000)
"""Source ports for every other connection :meth:`Lab.connect` makes without a fixed one: each
lab hands them out in turn, so no two of its connections share a source port (the cycle comes
round only after 20000 connections, minutes later). The range is reserved in every lab
namespace (``net.ipv4.ip_local_reserved_ports``, per namespace: the host is untouched), so
the kernel never picks one of them for a socket of its own choosing (the proxy's upstream).

Why not let the kernel choose: it picks an ephemeral port per *destination*, so two
connections to different destinations may get the same port. When rules REDIRECT both to
the same listener, the second one's five-tuple *after* NAT is the first one's, whose server
socket still lingers in TIME_WAIT (60 s; ``conntrack -F`` does not touch sockets). That
socket answers the new SYN with an ACK for the old connection when neither the new initial
sequence number nor the new timestamp is above the old one's (both are random per original
tuple, so this happens often); the
client answers that ACK with a RST, which puts the conntrack entry into CLOSE, and resends its
SYN at once (``TCP_TIMEOUT_MIN``: "previous FIN/ACK or RST/ACK might be ignored"); conntrack
re-opens a CLOSEd tuple as a NEW connection, so nat counts the one connection twice. A rare,
unreproducible disagreement that says nothing about the rules: each connection of a
measurement must start from a state no earlier connection touched."""

GATE_TABLE = """\
table inet meshlab_gate {
    set first4 { type ipv4_addr . inet_proto . inet_service; flags dynamic, timeout; timeout 120s; }
    set first6 { type ipv6_addr . inet_proto . inet_service; flags dynamic, timeout; timeout 120s; }
    chain gate {
        icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, \
                      nd-neighbor-advert, nd-redirect, mld-listener-query, \
                      mld-listener-report, mld-listener-done, mld2-listener-report } drop
        meta l4proto { tcp, udp } ip daddr . meta l4proto . th dport @first4 drop
        meta l4proto { tcp, udp } ip6 daddr . meta l4proto . th dport @first6 drop
        ip dscp cs1 meta l4proto { tcp, udp } \\
            update @first4 { ip saddr . meta l4proto . th sport } accept
        ip6 dscp cs1 meta l4proto { tcp, udp } \\
            update @first6 { ip6 saddr . meta l4proto . th sport } accept
    }
    chain pre { type filter hook prerouting priority -350; policy accept; jump gate; }
    chain out { type filter hook output priority -350; policy accept; jump gate; }
}
"""
"""The *first-packet gate*: how the lab measures one packet with ``iptables-save -c``.

raw and mangle count every packet of a connection (SYN, SYN-ACK, ACK, data, FIN ...), so
their counters after a whole connection cannot be set beside a model trace of its first
packet. A *probe* is a connection whose socket marks its packets with :data:`FIRST_TOS`.
This nftables table (``inet``: IPv4 and IPv6) runs before everything else (priority -350;
raw is -300, conntrack -200, mangle -150, nat -100) at PREROUTING and OUTPUT. It remembers the
source (address, protocol, port) of every marked packet and drops, *before any iptables
table sees it*, every packet addressed back to one: the SYN-ACK, an RST, a DNS answer, and
the SYN-ACK retransmissions of a half-open connection. So the probe's first packet is the
only packet of it that any counter counts: ``iptables-save -c`` before and after is exactly
that packet's path, in all four tables, deterministically (no trace to parse, no timing).
``iptables-save`` does not list the table; nothing of it shows in the rules under test.
The drop comes *before* the remembering: the RST the kernel answers a SYN to a closed port
with copies the SYN's TOS (``tcp_v4_send_reset``), so an answer may carry the mark too.
TCP probes use :data:`FIRST_PORTS`; a UDP probe's entry is deleted right after it, so an
ordinary datagram to the same port later is not dropped.

The gate also keeps IPv6's own control packets away from every table: neighbour discovery,
router solicitations and multicast listener reports, which a host sends by itself now and
then (IPv4's ARP is not IP: iptables never sees it). raw and mangle would count one in the
middle of a measured connection. None is needed: the lab gives the pod and the peer each
other's link-layer addresses as permanent neighbours."""


class RestoreRenderable(Protocol):
    def render_restore(self) -> str: ...


@dataclass(frozen=True)
class Server:
    """A real answering server (:mod:`meshlab.live.app`) run in a namespace."""

    name: str
    ports: tuple[int | str, ...]   # 9080, "127.0.0.1:15000", "udp/53", "udp/127.0.0.1:15053"
    uid: int = 0
    gid: int | None = None
    transparent: bool = False


@dataclass(frozen=True)
class ProxySpec:
    """How to run the real proxy (:mod:`meshlab.live.proxy`) in the pod.

    ``uid``/``gid``: 1337/1337 as Istio runs Envoy by default; for TPROXY use UID 0 / GID 1337
    (:data:`TPROXY_PROXY_UID`), as the injector does (see :func:`meshlab.live.worldlab.proxy_spec`).
    """

    inbound_ports: tuple[int, ...] = (9080,)
    services: tuple[Mapping[str, Any], ...] = ()
    mode: str = "REDIRECT"
    outbound_port: int = 15001
    inbound_port: int = 15006
    hop_limit: int = 8
    uid: int = PROXY_UID
    gid: int = PROXY_UID


DEFAULT_POD_SERVERS = (
    Server("app", (9080,), uid=APP_UID),
    Server("istio-agent", (15020, 15021, 15090), uid=PROXY_UID),
)
DEFAULT_PEER_SERVERS = (Server("peer", (80, 443, 8080, 9080)),)


@dataclass(frozen=True)
class KernelConnection:
    """What the real kernel (and the real processes) did with one connection."""

    id: str
    side: str                      # "pod" (made inside the pod) | "peer" (arrived from outside)
    proto: str
    uid: int
    gid: int
    src: str | None                # requested source address (None = the kernel chose)
    dst: str
    dport: int
    outcome: str                   # answered | closed | refused | timeout | reset | error
    sport: int | None
    local: str | None              # the client's local address after connect
    reply: Mapping[str, Any] | None    # what the answering server saw
    grew: Mapping[ctr.Key, int]    # every counter that grew, all tables, policies as index 0
    proxy_log: tuple[Mapping[str, Any], ...] = ()
    trace: tuple[Mapping[str, Any], ...] | None = None
    error: str | None = None
    arrivals: tuple[Mapping[str, Any], ...] = ()   # servers' log lines (first-packet probes)
    sender: str | None = None      # UDP: who the answer came from, as the client saw it

    @property
    def nat(self) -> dict[ctr.Key, int]:
        """nat-table rules that counted (policies left out): one per connection that hit it."""
        return ctr.only_table(self.grew, "nat")

    @property
    def accepts(self) -> list[Mapping[str, Any]]:
        return [e for e in self.proxy_log if e.get("event") == "accept"]

    @property
    def listener(self) -> tuple[str, int] | None:
        """(process, port) of the listening socket that accepted the *first* connection."""
        if self.accepts:
            return ("proxy", int(self.accepts[0]["listener_port"]))
        if self.reply and "server" in self.reply:
            return (str(self.reply["server"]), int(self.reply["listener"]))
        return None

    @property
    def original_dst(self) -> str | None:
        """SO_ORIGINAL_DST as the first accepting listener read it."""
        if self.accepts:
            return str(self.accepts[0]["original_dst"])
        return None if not self.reply else self.reply.get("original_dst")

    @property
    def delivered_to(self) -> tuple[str, int, str] | None:
        """(process, port, source it sees) of the server that finally answered."""
        if not self.reply or "server" not in self.reply:
            return None
        return (str(self.reply["server"]), int(self.reply["listener"]),
                str(self.reply["peer"]).rsplit(":", 1)[0])

    @property
    def source_seen(self) -> str | None:
        return self.delivered_to[2] if self.delivered_to else None

    @property
    def hops(self) -> int:
        """How many times the real proxy accepted this request."""
        return len(self.accepts)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "side": self.side, "proto": self.proto, "uid": self.uid, "gid": self.gid,
            "src": self.src, "dst": f"{self.dst}:{self.dport}", "outcome": self.outcome,
            "sport": self.sport, "local": self.local, "reply": self.reply,
            "listener": list(self.listener) if self.listener else None,
            "original_dst": self.original_dst,
            "delivered_to": list(self.delivered_to) if self.delivered_to else None,
            "hops": self.hops,
            "grew": [{"table": t, "chain": c, "rule": i, "packets": n}
                     for (t, c, i), n in sorted(self.grew.items())],
            "proxy_log": list(self.proxy_log), "error": self.error,
        }


def check_environment() -> None:
    """Raise :class:`LabUnavailable` saying why the lab cannot run here, if it cannot."""
    if os.geteuid() != 0:
        raise LabUnavailable(
            "the live lab needs root (to create network namespaces and load iptables rules); "
            "run it with sudo, or inside `unshare --map-users=auto --map-groups=auto -rnm` "
            "(see `meshlab.live`)")
    for tool, package in (("ip", "iproute2"), ("iptables-restore", "iptables"),
                          ("iptables-save", "iptables"), ("setpriv", "util-linux")):
        if shutil.which(tool) is None:
            raise LabUnavailable(f"`{tool}` is not installed; install the {package} package")
    done = netns.run(["ip", "netns", "list"], check=False)
    if done.returncode != 0:
        raise LabUnavailable(f"`ip netns` does not work here: {done.stderr.strip()}")


def reserve_own_ports(ns: str) -> None:
    """Keep :data:`OWN_PORTS` out of the kernel's automatic choice in namespace ``ns``."""
    netns.in_ns(ns, ["sysctl", "-qw", "net.ipv4.ip_local_reserved_ports="
                     f"{OWN_PORTS.start}-{OWN_PORTS.stop - 1}"])


def interface_mac(ns: str, device: str) -> str:
    """The link-layer address of ``device`` in namespace ``ns``."""
    (link,) = json.loads(netns.in_ns(ns, ["ip", "-j", "link", "show", device]).stdout)
    return link["address"]


@dataclass
class Lab:
    """A pod namespace with real rules and processes, and a peer namespace around it."""

    rules: str | RestoreRenderable | None = None
    post_commands: Sequence[str] = ()
    pod_servers: Sequence[Server] = DEFAULT_POD_SERVERS
    peer_servers: Sequence[Server] = DEFAULT_PEER_SERVERS
    proxy: ProxySpec | str | None = field(default_factory=ProxySpec)  # or "catch" or None
    peer_addresses: Sequence[str] = ("10.244.0.10", "10.244.0.11")
    remote_addresses: Sequence[str] = ("10.96.0.10",)
    peer_rules: str | None = None   # e.g. kube-proxy-like DNAT for Service VIPs (peer side)
    trace: bool = False
    deadline: float | None = None
    keep: bool = False
    ipv6: bool = False              # also IPv6 on eth0 (POD_IP6 / PEER_IP6), servers on ::
    net1: bool = False              # a second pod interface to a third namespace, "ext"
    ext_servers: Sequence[Server] = ()
    peer_addresses6: Sequence[str] = ("fd00:244::a",)
    remote_addresses6: Sequence[str] = ("fd00:96::a",)
    gate: bool = field(default=False, init=False)   # GATE_TABLE loaded: probes possible

    def __post_init__(self) -> None:
        self._first_ports = itertools.cycle(FIRST_PORTS)
        self._own_ports = itertools.cycle(OWN_PORTS)
        self._server_logs: dict[Path, int] = {}
        self._server_events: dict[str, list[dict[str, Any]]] = {}
        self.registry = Registry()
        self.pod = self.registry.name("pod")
        self.peer = self.registry.name("peer")
        self.ext = self.registry.name("ext")
        self._ids = itertools.count(1)
        self._post_undo: list[list[str]] = []
        self._guard: Any = None
        self.notes: list[str] = []
        self.agents: dict[str, proc.LineChannel] = {}
        self.channels: list[proc.LineChannel] = []
        self.proxy_log_path: Path | None = None
        self._proxy_log_offset = 0
        self.tracer: Any = None

    # -- lifecycle ---------------------------------------------------------------------
    def __enter__(self) -> Lab:
        check_environment()
        self._guard = netns.guarded(self.registry, self.deadline)
        self._guard.__enter__()
        try:
            self.build()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.keep:
            self.notes.append(f"kept namespaces {self.pod} and {self.peer}; remove them with "
                              "`meshlab live clean --all`")
            self.registry.namespaces.clear()
            self.registry.tempdirs.clear()
        if self._guard is not None:
            guard, self._guard = self._guard, None
            guard.__exit__(None, None, None)

    def build(self) -> None:
        """Namespaces, veth, addresses, routes, rules, processes (in that order)."""
        reg = self.registry
        self.workdir = reg.tempdir()
        reg.add_namespace("pod")
        reg.add_namespace("peer")
        for ns in (self.pod, self.peer):
            reserve_own_ports(ns)
        netns.veth(reg, self.pod, self.peer)
        pod, peer = self.pod, self.peer
        netns.in_ns(pod, ["ip", "addr", "add", f"{POD_IP}/{PREFIX_LEN}", "dev", "eth0"])
        netns.in_ns(peer, ["ip", "addr", "add", f"{PEER_IP}/{PREFIX_LEN}", "dev", "eth0"])
        for address in self.peer_addresses:
            netns.in_ns(peer, ["ip", "addr", "add", f"{address}/32", "dev", "eth0"])
        for address in self.remote_addresses:
            netns.in_ns(peer, ["ip", "addr", "add", f"{address}/32", "dev", "lo"])
        netns.in_ns(pod, ["ip", "route", "add", "default", "via", PEER_IP])
        if self.ipv6:
            netns.in_ns(pod, ["ip", "-6", "addr", "add", f"{POD_IP6}/{PREFIX_LEN6}", "dev",
                              "eth0", "nodad"])
            netns.in_ns(peer, ["ip", "-6", "addr", "add", f"{PEER_IP6}/{PREFIX_LEN6}", "dev",
                               "eth0", "nodad"])
            for address in self.peer_addresses6:
                netns.in_ns(peer, ["ip", "-6", "addr", "add", f"{address}/128", "dev", "eth0",
                                   "nodad"])
            for address in self.remote_addresses6:
                netns.in_ns(peer, ["ip", "-6", "addr", "add", f"{address}/128", "dev", "lo"])
            netns.in_ns(pod, ["ip", "-6", "route", "add", "default", "via", PEER_IP6])
            # Known neighbours: no neighbour discovery is needed (the first-packet gate drops
            # IPv6's control packets before any table counts them: see GATE_TABLE).
            pod_mac, peer_mac = interface_mac(pod, "eth0"), interface_mac(peer, "eth0")
            for address in (PEER_IP6, *self.peer_addresses6):
                netns.in_ns(pod, ["ip", "-6", "neigh", "replace", address, "lladdr", peer_mac,
                                  "dev", "eth0", "nud", "permanent"])
            netns.in_ns(peer, ["ip", "-6", "neigh", "replace", POD_IP6, "lladdr", pod_mac,
                               "dev", "eth0", "nud", "permanent"])
        if self.net1:
            reg.add_namespace("ext")
            reserve_own_ports(self.ext)
            netns.veth(reg, pod, self.ext, "net1", "eth0")
            netns.in_ns(pod, ["ip", "addr", "add", f"{NET1_POD_IP}/24", "dev", "net1"])
            netns.in_ns(self.ext, ["ip", "addr", "add", f"{NET1_EXT_IP}/24", "dev", "eth0"])
            netns.in_ns(self.ext, ["ip", "route", "add", "default", "via", NET1_POD_IP])
        if self.peer_rules:
            # The peer plays the node too: it forwards (a Service VIP DNATed back to the pod)
            # and holds kube-proxy-like rules. Per-namespace sysctl: the host is untouched.
            netns.in_ns(peer, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
            netns.in_ns(peer, ["iptables-restore"], input=self.peer_rules)
        if self.rules is not None:
            self.load(self.rules, self.post_commands)
        if shutil.which("nft"):
            gate = netns.in_ns(pod, ["nft", "-f", "-"], input=GATE_TABLE, check=False)
            self.gate = gate.returncode == 0
        if not self.gate:
            self.notes.append("nft is not available: first-packet probes are not possible")
        for server in self.pod_servers:
            self.start_server(pod, server)
        for server in self.peer_servers:
            self.start_server(peer, server)
        for server in self.ext_servers if self.net1 else ():
            self.start_server(self.ext, server)
        self.start_proxy(self.proxy)
        self.agents["pod"] = proc.start(reg, pod, "meshlab.live.agent", [], name="pod-agent",
                                        workdir=self.workdir)
        self.agents["peer"] = proc.start(reg, peer, "meshlab.live.agent", [],
                                         name="peer-agent", workdir=self.workdir)
        if self.net1:
            self.agents["ext"] = proc.start(reg, self.ext, "meshlab.live.agent", [],
                                            name="ext-agent", workdir=self.workdir)
        if self.trace:
            from meshlab.live.xtrace import Tracer
            self.tracer = Tracer.start(reg, pod, self.workdir)
            if self.tracer is None:
                self.notes.append("xtables-monitor --trace is not available here; "
                                  "kernel traces are left out (counters are still compared)")

    def _log_file(self, name: str, uid: int, gid: int) -> Path:
        path = self.workdir / f"{name}.log"
        path.touch()
        os.chown(path, uid, gid)
        return path

    def start_server(self, ns: str, server: Server) -> proc.LineChannel:
        gid = server.gid if server.gid is not None else server.uid
        log = self._log_file(f"{ns.rsplit('-', 1)[-1]}-{server.name}", server.uid, gid)
        self._server_logs[log] = 0
        args = ["--name", server.name, "--ports", ",".join(map(str, server.ports)),
                "--log", str(log)]
        if server.transparent:
            args.append("--transparent")
        if self.ipv6:
            args.append("--ipv6")
        return proc.start(self.registry, ns, "meshlab.live.app", args, name=server.name,
                          uid=server.uid if server.uid else None, gid=gid,
                          caps=("net_admin",) if server.transparent and server.uid else (),
                          workdir=self.workdir)

    def restart_proxy(self, spec: ProxySpec | str | None) -> None:
        """Stop the running proxy (if any) and start one for ``spec``."""
        for channel in [c for c in self.channels if c.name == "proxy"]:
            netns.stop_process(channel.proc)
            self.registry.processes.remove(channel.proc)
            self.channels.remove(channel)
        self.proxy = spec
        self.start_proxy(spec)

    def start_proxy(self, spec: ProxySpec | str | None) -> None:
        """Start the relaying proxy (a ProxySpec), a catcher on 15001/15006 ("catch"), or none."""
        if spec is None:
            return
        if isinstance(spec, str):
            self.channels.append(self.start_server(
                self.pod, Server("proxy", (15001, 15006), uid=PROXY_UID, transparent=True)))
            return
        log = self._log_file("proxy", spec.uid, spec.gid)
        self.proxy_log_path = log
        args = ["--pod-ip", POD_IP, "--inbound-ports", ",".join(map(str, spec.inbound_ports)),
                "--services", json.dumps(list(spec.services)), "--mode", spec.mode,
                "--outbound-port", str(spec.outbound_port),
                "--inbound-port", str(spec.inbound_port),
                "--hop-limit", str(spec.hop_limit), "--log", str(log)]
        channel = proc.start(self.registry, self.pod, "meshlab.live.proxy", args, name="proxy",
                             uid=spec.uid, gid=spec.gid,
                             # a non-root TPROXY proxy needs NET_ADMIN for IP_TRANSPARENT;
                             # root (Istio's choice in TPROXY mode) has it already
                             caps=("net_admin",) if spec.mode == "TPROXY" and spec.uid else (),
                             workdir=self.workdir)
        self.channels.append(channel)
        self.notes += channel.notes

    # -- rules and counters ------------------------------------------------------------
    def load(self, rules: str | RestoreRenderable, post_commands: Sequence[str] = (), *,
             rules_v6: str | RestoreRenderable | None = None) -> None:
        """Replace the pod's rules: flush, restore with --noflush, run post-commands.

        ``rules_v6`` (an ``ip6tables-restore`` document, e.g. ``CaptureRules.restore_v6``)
        goes to the IPv6 tables the same way; the IPv6 tables are flushed in any case when
        the lab has IPv6. Also forgets old conntrack entries (``conntrack -F`` when
        installed), so that a connection of the previous configuration cannot be mistaken
        for a new one.
        """
        text = rules if isinstance(rules, str) else rules.render_restore()
        for argv in reversed(self._post_undo):
            netns.in_ns(self.pod, argv, check=False)
        self._post_undo.clear()
        netns.in_ns(self.pod, ["iptables-restore"], input=FLUSH_DOCUMENT)
        netns.in_ns(self.pod, ["iptables-restore", "--noflush"], input=text)
        if self.ipv6 or rules_v6 is not None:
            netns.in_ns(self.pod, ["ip6tables-restore"], input=FLUSH_DOCUMENT)
        if rules_v6 is not None:
            text6 = rules_v6 if isinstance(rules_v6, str) else rules_v6.render_restore()
            netns.in_ns(self.pod, ["ip6tables-restore", "--noflush"], input=text6)
        for line in post_commands:
            argv = shlex.split(line)
            netns.in_ns(self.pod, argv)
            if len(argv) > 2 and argv[0] == "ip" and "add" in argv:
                at = argv.index("add")
                self._post_undo.append([*argv[:at], "del", *argv[at + 1:]])
        if shutil.which("conntrack"):
            netns.in_ns(self.pod, ["conntrack", "-F"], check=False)

    def zero(self) -> None:
        """``iptables -Z`` in every table of the pod: all counters back to 0."""
        for table in ("raw", "mangle", "nat", "filter"):
            netns.in_ns(self.pod, ["iptables", "-t", table, "-Z"], check=False)

    def save(self, *, counters: bool = True, family: str = "ipv4") -> str:
        """The pod's ``iptables-save [-c]`` output (``ip6tables-save`` for ``"ipv6"``)."""
        tool = "ip6tables-save" if family == "ipv6" else "iptables-save"
        argv = [tool, "-c"] if counters else [tool]
        return netns.in_ns(self.pod, argv).stdout

    def counters(self, family: str = "ipv4") -> ctr.Snapshot:
        return ctr.parse_counters(self.save(family=family))

    def forget_connections(self) -> None:
        """``conntrack -F`` in the pod: the next packet of any five-tuple is NEW again."""
        if shutil.which("conntrack"):
            netns.in_ns(self.pod, ["conntrack", "-F"], check=False)

    def conntrack_zone(self, proto: str, sport: int, family: str = "ipv4", *,
                       src: str | None = None, dst: str | None = None,
                       dport: int | None = None) -> int | None:
        """The conntrack zone of the pod's entry whose original tuple has source port
        ``sport`` (and, when given, source ``src``, destination ``dst`` and ``dport``: a fixed
        source port such as 53 is in many entries). ``conntrack -L`` prints ``zone=N`` for a
        zone other than 0. ``None`` when there is no such entry or no ``conntrack`` tool."""
        if not shutil.which("conntrack"):
            return None
        done = netns.in_ns(self.pod, ["conntrack", "-L", "-f", family, "-p", proto,
                                      "--orig-port-src", str(sport)], check=False)
        want = [f"sport={sport}"] + ([f"src={src}"] if src else []) + (
            [f"dst={dst}"] if dst else []) + ([f"dport={dport}"] if dport is not None else [])
        for line in done.stdout.splitlines():
            words = line.split()
            # the original tuple is the first src=/dst=/sport=/dport= of the line
            first = {w.split("=", 1)[0]: w for w in reversed(words) if "=" in w}
            if all(first.get(w.split("=", 1)[0]) == w for w in want):
                return next((int(w[5:]) for w in words if w.startswith("zone=")), 0)
        return None

    # -- connections ---------------------------------------------------------------------
    def connect(self, dst: str, dport: int, *, side: str = "pod", uid: int = APP_UID,
                gid: int | None = None, src: str | None = None, sport: int | None = None,
                proto: str = "tcp", timeout: float = 2.0,
                count: bool = True, trace: bool | None = None,
                first_only: bool = False, so_mark: int = 0) -> KernelConnection:
        """Make one real connection and report what the kernel did with it.

        ``side="pod"`` connects from inside the pod as ``uid``/``gid`` (the owner match sees
        them); ``side="peer"`` connects from the peer namespace (an inbound connection; the
        owner is irrelevant there). ``src`` binds a source address first (127.0.0.6 to act
        as the proxy's inbound upstream; a peer address for inbound).

        ``first_only=True`` makes a *probe* (see :data:`GATE_TABLE`): only the first packet
        (the SYN, the query datagram) gets through, so ``grew`` counts that one packet in
        every table; the client waits ``timeout`` (keep it short) and sees a timeout.
        ``arrivals`` says which server socket, if any, received it (a UDP catcher logs each
        datagram; a TCP SYN is never accepted, so TCP probes have none).

        ``so_mark`` is the client socket's ``SO_MARK`` (needs ``uid=0``): 0x539 makes it look
        like ztunnel's own socket to the ambient rules.

        Without ``sport`` the source port is the lab's next one of :data:`OWN_PORTS` (a TCP
        probe's, of :data:`FIRST_PORTS`), never the kernel's choice: so no connection meets
        what an earlier one left behind (a TIME_WAIT socket, a conntrack entry).
        """
        if first_only and not self.gate:
            raise LabError("first-packet probes need the gate table (nft is not installed)")
        if first_only and proto == "tcp" and sport is None:
            sport = next(self._first_ports)
        elif sport is None:
            sport = next(self._own_ports)  # never one an earlier connection used
        if side not in self.agents:
            raise LabError(f"unknown side {side!r}: use 'pod' or 'peer' (or 'ext' with "
                           "net1=True)")
        gid = uid if gid is None else gid
        rid = f"c{next(self._ids)}"
        family = "ipv6" if ":" in dst else "ipv4"
        before = self.counters(family) if count else None
        # the kernel's own trace (an nftables `ip` table tracing TCP): IPv4 TCP only
        tracing = (self.tracer is not None and proto == "tcp" and family == "ipv4"
                   and trace is not False)
        mark = self.tracer.mark() if tracing else None
        result = self.agents[side].request(
            {"id": rid, "uid": uid, "gid": gid, "src": src, "sport": sport, "dst": dst,
             "dport": dport, "proto": proto, "timeout": timeout,
             "tos": FIRST_TOS if first_only else 0, "mark": so_mark},
            timeout=timeout * 2 + 3)
        grew = self.counters(family).minus(before) if before is not None else {}
        arrivals: tuple[Mapping[str, Any], ...] = ()
        if first_only and proto == "udp":
            arrivals = tuple(self.server_events(rid, wait=0.2))
            if result.get("local"):
                host, _, port = str(result["local"]).rpartition(":")
                table = "first6" if family == "ipv6" else "first4"
                netns.in_ns(self.pod, ["nft", "delete", "element", "inet", "meshlab_gate",
                                       table, f"{{ {host.strip('[]')} . udp . {port} }}"],
                            check=False)
        trace = None
        if tracing and result.get("sport"):
            trace = tuple(self.tracer.first_packet(mark, int(result["sport"]), self.save(
                counters=False)))
            if self.tracer.failure and self.tracer.failure not in self.notes:
                self.notes.append(self.tracer.failure)
        return KernelConnection(
            id=rid, side=side, proto=proto, uid=uid, gid=gid, src=src, dst=dst, dport=dport,
            outcome=str(result.get("outcome")), sport=result.get("sport"),
            local=result.get("local"), reply=result.get("reply"), grew=grew,
            proxy_log=tuple(self.proxy_events(rid)), trace=trace, error=result.get("error"),
            arrivals=arrivals, sender=result.get("from"))

    def server_events(self, rid: str, *, wait: float = 0.0) -> list[dict[str, Any]]:
        """What the answering servers logged for request ``rid`` (each datagram or
        connection they received), waiting up to ``wait`` seconds for a first one."""
        deadline = time.monotonic() + wait
        while True:
            for path, offset in list(self._server_logs.items()):
                with open(path, "rb") as f:
                    f.seek(offset)
                    data = f.read()
                end = data.rfind(b"\n") + 1
                self._server_logs[path] = offset + end
                for line in data[:end].splitlines():
                    if line.strip():
                        event = json.loads(line)
                        self._server_events.setdefault(str(event.get("id")), []).append(event)
            if rid in self._server_events or time.monotonic() >= deadline:
                return self._server_events.pop(rid, [])
            time.sleep(0.005)

    def proxy_events(self, rid: str | None = None) -> list[dict[str, Any]]:
        """The proxy's log lines (for one request id, or all)."""
        if self.proxy_log_path is None or not self.proxy_log_path.exists():
            return []
        events = [json.loads(line) for line in self.proxy_log_path.read_text().splitlines()
                  if line.strip()]
        return [e for e in events if rid is None or e.get("id") == rid]
