"""The Linux netfilter path of one network namespace, as a model you can read and trace.

Read this file top to bottom to learn how the kernel steers a connection.

**Hooks and tables.** A packet meets netfilter at five *hooks*. At each hook the tables are
consulted in a fixed order, and each table starts at its built-in chain of the hook's name:

* a packet made by a local socket: routing decision, then OUTPUT (raw -> mangle -> nat ->
  filter), then POSTROUTING (mangle -> nat);
* a packet arriving on an interface: PREROUTING (raw -> mangle -> nat), routing decision, then
  INPUT (mangle -> filter -> nat) if it is for this namespace, FORWARD otherwise.

**Chains.** Rules are tried in order. A rule whose matches all pass *hits*: its counter goes up
and its target acts. ``-j CHAIN`` continues in a user chain; ``RETURN``, or running off the end
of a user chain, goes back to the rule after the jump; running off the end of a built-in chain
applies its policy. ACCEPT ends the table (the next table of the hook still runs); DROP ends
everything. MARK, CONNMARK, CT, LOG and TRACE do their work and let the next rule run.

**nat sees a connection once.** Conntrack gives the first packet of a connection the state NEW
and the nat table only ever sees NEW packets: REDIRECT or DNAT change the destination there,
conntrack remembers the change, and every later packet and every reply is translated by
conntrack alone (:mod:`meshlab.netfilter.conntrack`).

**Local destinations leave via lo.** A packet to 127.0.0.0/8 or to any address of the
namespace is routed out through ``lo`` (so ``-o lo`` matches in OUTPUT) and comes straight back
in through PREROUTING and INPUT on ``lo``. It is still the connection's first packet and still
NEW, but its conntrack entry already exists (it was confirmed at POSTROUTING), so nat PREROUTING
and nat INPUT are *not* consulted again. On its way through ``lo`` the packet is orphaned from
its socket: owner matches only ever work in OUTPUT and POSTROUTING.

**Where REDIRECT sends a connection.** In OUTPUT: to 127.0.0.1 (``::1``) and the given port;
the route is looked up again, so the packet now leaves by ``lo``. In PREROUTING: to the primary
address of the interface the packet came in on.

**Marks, TPROXY and policy routing.** Every packet carries a 32-bit *mark* (``skb->mark``).
A socket can give all its packets one (``setsockopt(SO_MARK)``), rules can set it (``-j MARK``)
or copy it to and from the connection's own mark (``-j CONNMARK --save-mark`` /
``--restore-mark``; the conntrack entry keeps it for every later packet, both ways). The mark
changes nothing by itself; it matters because routing can read it. ``ip rule add fwmark 1337
lookup 133`` says "look packets marked 1337 up in routing table 133", and ``ip route add local
default dev lo table 133`` makes *every* address local in that table. So a packet marked 1337
is delivered to a socket of this namespace whatever its destination, and one this namespace
sends leaves by ``lo`` instead of ``eth0``. Istio adds exactly that pair after loading its TPROXY
rules (:class:`FwmarkRoute`; a :class:`Netns` has it only when you give it).

TPROXY (mangle PREROUTING) hands the packet to a local socket on ``--on-port`` without changing
the destination (no NAT: the proxy's accepted socket has the client's original destination as
its own address), sets the mark, and ends the table like ACCEPT. Envoy then connects to the
application *from the client's address* (``original_src``: ``IP_TRANSPARENT`` lets it bind an
address that is not its own, ``SO_MARK`` 1337 marks the socket). That connection goes out by
``lo`` and in again; PREROUTING saves its mark 1337 into the connection; the application's
answer, addressed to the client's (foreign) address, would leave by ``eth0``, but mangle
OUTPUT restores mark 1337 from the connection, the route is looked up again
(a changed mark re-routes, as a changed destination does), and the fwmark rule sends the answer
back in by ``lo`` to Envoy. :meth:`Netns.answer` traces that answer.

Ephemeral source ports come from Linux's default ``net.ipv4.ip_local_port_range``,
32768-60999 (:class:`EphemeralPorts`), deterministically, in order.

**Why a rule did not match.** The traversal (:meth:`Netns._chain`) tries a chain's rules in
order with :meth:`Rule.matches`; for every rule it passes over, the trace keeps the first
condition that failed, in words (:meth:`Rule.why_not`: "`-o lo`: the packet leaves by eth0").
That loop is the reference; :mod:`meshlab.netfilter._fast` gives the same answer faster, for
long chains, behind one switch (``meshlab.netfilter._fast.ENABLED``, on by default).

Everything here is pure computation: no sockets, no namespaces, no I/O.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv6Interface, ip_address, ip_interface
from types import MappingProxyType
from typing import Any

from meshlab.errors import MeshlabError
from meshlab.netfilter import _fast
from meshlab.netfilter.conntrack import Connection, ConntrackTable, FlowTuple
from meshlab.netfilter.packet import IPAddress, Packet, Skb, endpoint
from meshlab.netfilter.packet import address as _addr
from meshlab.netfilter.rules import (
    Connmark,
    Ct,
    Dnat,
    Jump,
    Log,
    Redirect,
    SetMark,
    Target,
    Tproxy,
    Verdict,
)
from meshlab.netfilter.ruleset import Chain, Ruleset
from meshlab.netfilter.trace import NatDecision, RuleEval, Trace

OUTPUT_PATH = (("OUTPUT", ("raw", "mangle", "nat", "filter")), ("POSTROUTING", ("mangle", "nat")))
PREROUTING_PATH = (("PREROUTING", ("raw", "mangle", "nat")),)
INPUT_PATH = (("INPUT", ("mangle", "filter", "nat")),)
FORWARD_PATH = (("FORWARD", ("mangle", "filter")),)

EPHEMERAL_PORTS = range(32768, 61000)
"""Linux's default ``net.ipv4.ip_local_port_range`` (32768 60999): connect() picks from here."""


class EphemeralPorts:
    """Hands out source ports for connect() from :data:`EPHEMERAL_PORTS`, in order.

    Linux picks a port pseudo-randomly; the model picks the next one, so that traces are
    reproducible. Namespaces that share one instance never hand out the same port twice, which
    keeps connection tuples apart when one namespace sends with another one's address
    (Envoy's ``original_src`` connects *from the client's address*, so its tuple lands next to
    the client's own in the pod's conntrack table).
    """

    def __init__(self, ports: range = EPHEMERAL_PORTS) -> None:
        if not ports or ports.start < 1 or ports.stop > 65536:
            raise MeshlabError(f"ephemeral ports must be a non-empty range within 1-65535, "
                               f"not {ports!r}")
        self.ports = ports
        self._next = 0

    def next(self) -> int:
        port = self.ports[self._next]
        self._next = (self._next + 1) % len(self.ports)
        return port


@dataclass(frozen=True)
class FwmarkRoute:
    """Policy routing by mark: ``ip rule add fwmark MARK lookup TABLE`` together with
    ``ip route add local default dev lo table TABLE``.

    A packet whose mark matches (``mark & mask == self.mark``) is routed by table ``table``,
    whose only route says "every address is local": arriving packets are delivered to a
    socket here whatever their destination, and packets this namespace sends leave by ``lo``.
    """

    mark: int
    table: int
    mask: int = 0xFFFFFFFF

    def matches(self, mark: int) -> bool:
        return (mark & self.mask) == self.mark

    @property
    def commands(self) -> tuple[str, str]:
        mark = str(self.mark) if self.mask == 0xFFFFFFFF else f"{self.mark}/{self.mask:#x}"
        return (f"ip rule add fwmark {mark} lookup {self.table}",
                f"ip route add local default dev lo table {self.table}")


def fwmark_routes(commands: Sequence[str]) -> tuple[FwmarkRoute, ...]:
    """The :class:`FwmarkRoute` s a list of ``ip`` commands sets up (Istio's
    ``CaptureRules.post_commands``): an ``ip rule ... fwmark M lookup T`` counts only when some
    ``ip route add local default|0.0.0.0/0|::/0 dev lo table T`` command makes table T local.
    Other commands are ignored."""
    rules: list[tuple[int, int, int]] = []
    local_tables: set[int] = set()
    for command in commands:
        words = command.split()
        if words[:2] == ["ip", "-6"] or words[:2] == ["ip", "-4"]:
            words = ["ip", *words[2:]]
        if words[:3] == ["ip", "rule", "add"] and "fwmark" in words and "lookup" in words:
            value = words[words.index("fwmark") + 1]
            mark, _, mask = value.partition("/")
            try:
                rules.append((int(mark, 0), int(mask, 0) if mask else 0xFFFFFFFF,
                              int(words[words.index("lookup") + 1])))
            except (ValueError, IndexError):
                raise MeshlabError(f"cannot read the fwmark rule {command!r}; write "
                                   "'ip rule add fwmark 1337 lookup 133'") from None
        elif (words[:4] == ["ip", "route", "add", "local"] and len(words) > 4
              and words[4] in ("default", "0.0.0.0/0", "::/0", "0::0/0")
              and "table" in words and words[words.index("dev") + 1:][:1] == ["lo"]):
            local_tables.add(int(words[words.index("table") + 1]))
    return tuple(FwmarkRoute(mark, table, mask) for mark, mask, table in rules
                 if table in local_tables)


@dataclass(frozen=True)
class Interface:
    """A network interface and its addresses; the first address of a family is its primary."""

    name: str
    addresses: tuple[IPv4Interface | IPv6Interface, ...]

    def primary(self, version: int) -> IPAddress | None:
        return next((a.ip for a in self.addresses if a.version == version), None)


def pod_interfaces(pod_ip: str | IPAddress, prefixlen: int = 24) -> tuple[Interface, Interface]:
    """A pod's two interfaces: ``lo`` (127.0.0.1/8 and ::1/128) and ``eth0`` with the pod IP
    (``/24`` by default for IPv4, ``/64`` for IPv6; ``/32`` also works: everything not local
    then leaves through eth0 by the default route)."""
    ip = ip_address(pod_ip)
    plen = prefixlen if ip.version == 4 else (64 if prefixlen == 24 else prefixlen)
    lo = Interface("lo", (IPv4Interface("127.0.0.1/8"), IPv6Interface("::1/128")))
    return lo, Interface("eth0", (ip_interface(f"{ip}/{plen}"),))


# --------------------------------------------------------------------------- the namespace


class Netns:
    """One network namespace: its rules, interfaces, routes, conntrack table and counters.

    :meth:`connect` and :meth:`receive` trace the first packet of a new connection; the
    namespace remembers the connection (conntrack) and counts the rules it hit.
    """

    def __init__(self, ruleset: Ruleset, interfaces: Sequence[Interface], *,
                 fwmark_routes: Sequence[FwmarkRoute] = (),
                 ports: EphemeralPorts | None = None) -> None:
        self.ruleset = ruleset
        self.interfaces = tuple(interfaces)
        self.fwmark_routes = tuple(fwmark_routes)
        self.conntrack = ConntrackTable()
        self.version = 6 if ruleset.family == "ipv6" else 4
        _check_jumps(ruleset)
        self._fast = _fast.compile_ruleset(ruleset) if _fast.ENABLED else None
        self._counters: defaultdict[tuple[str, str, int], int] = defaultdict(int)
        self.ports = ports if ports is not None else EphemeralPorts()
        self._local: set[int] = set()
        self._lo_nets: list[tuple[int, int]] = []
        for iface in self.interfaces:
            for addr in iface.addresses:
                if addr.version != self.version:
                    continue
                self._local.add(int(addr.ip))
                if iface.name == "lo":  # the whole lo prefix is local (table local)
                    self._lo_nets.append((int(addr.network.network_address),
                                          int(addr.network.netmask)))

    @property
    def counters(self) -> Mapping[tuple[str, str, int], int]:
        """(table, chain, rule) -> packets matched so far; rule 0 counts a chain's policy."""
        return MappingProxyType(self._counters)

    def is_local(self, ip: IPAddress | str) -> bool:
        """Whether packets to ``ip`` are for this namespace (and so are routed via ``lo``)."""
        return self._is_local(int(ip_address(ip)))

    def _is_local(self, value: int) -> bool:
        return value in self._local or any((value & mask) == net for net, mask in self._lo_nets)

    def interface(self, name: str) -> Interface:
        for iface in self.interfaces:
            if iface.name == name:
                return iface
        raise MeshlabError(f"no interface {name!r} in this namespace; it has "
                           + ", ".join(i.name for i in self.interfaces))

    # ---------------------------------------------------------------- routing
    def route(self, dst: int, mark: int = 0) -> tuple[str | None, int | None]:
        """The routing decision for a locally generated packet: (out interface, source).

        First the policy rules: a packet whose ``mark`` an :class:`FwmarkRoute` matches is
        looked up in that table, where every address is local, so it leaves by ``lo``. Then
        the main tables: local destinations go via ``lo``; the source is 127.0.0.1 for the
        loopback range and the destination itself for the namespace's other addresses (the
        kernel's ``local`` routes carry ``src`` so). Others go to the interface whose subnet
        holds them, else by the default route through the first other interface."""
        if self._is_local(dst) or (mark and self._fwmark_local(mark)):
            if self.version == 6 and self._is_local(dst):
                # IPv6 source address selection, rule 1: prefer the destination itself
                # (a connection to ::6 comes from ::6; IPv4's lo routes say src 127.0.0.1)
                return "lo", dst
            lo_src = next((net | 1 for net, mask in self._lo_nets if dst & mask == net), None)
            if lo_src is None and not self._is_local(dst):  # local only by the fwmark table
                lo_src = next((net | 1 for net, _ in self._lo_nets), dst)
            return "lo", (lo_src if lo_src is not None else dst)
        fallback: tuple[str | None, int | None] = (None, None)
        for iface in self.interfaces:
            if iface.name == "lo":
                continue
            for addr in iface.addresses:
                if addr.version != self.version:
                    continue
                if dst & int(addr.network.netmask) == int(addr.network.network_address):
                    return iface.name, int(addr.ip)
                if fallback[0] is None:
                    fallback = (iface.name, int(addr.ip))
        return fallback

    def _fwmark_local(self, mark: int) -> bool:
        """Whether an ``ip rule fwmark`` sends packets with this mark to a local-only table."""
        return any(r.matches(mark) for r in self.fwmark_routes)

    def _local_delivery(self, skb: Skb) -> bool:
        """The routing decision for an arriving packet: is it for a socket here?"""
        return self._is_local(skb.dst) or (skb.mark != 0 and self._fwmark_local(skb.mark))

    # ---------------------------------------------------------------- entry points
    def connect(self, *, proto: str, dst: IPAddress | str, dport: int, uid: int, gid: int,
                src: IPAddress | str | None = None, sport: int | None = None,
                mark: int = 0) -> Trace:
        """A local socket owned by ``uid``/``gid`` sends the first packet of a new connection.

        ``src`` is the address the socket was bound to (``None``: the route chooses), ``mark``
        the socket's ``SO_MARK`` (every packet of the socket carries it; the routing decision
        reads it, and so do ``-m mark`` rules).
        """
        dst_ip = self._check(proto, dst, dport, "dst")
        mark = self._mark(mark)
        oif, route_src = self.route(int(dst_ip), mark)
        notes: list[str] = []
        if oif is None:
            raise MeshlabError(f"no route to {dst_ip}: the namespace has no interface for "
                               f"IPv{self.version}; add one")
        src_int = int(self._check(proto, src, 0, "src")) if src is not None else route_src
        sport = self.ports.next() if sport is None else self._port(sport, "sport")
        skb = Skb(proto, src_int, sport, int(dst_ip), dport, oif=oif, uid=uid, gid=gid,
                  mark=mark)
        log: list[Any] = []
        verdict, nat = self._hooks(OUTPUT_PATH, skb, log, nat_allowed=True)
        # The kernel confirms the conntrack entry here, at the end of POSTROUTING; the model
        # builds it after the loopback re-entry below so that it holds the connection mark
        # PREROUTING may save (CONNMARK --save-mark) on the way in.
        out_iface = skb.oif
        tuple_src, tuple_sport, tuple_dst, tuple_dport = skb.src, skb.sport, skb.dst, skb.dport
        if verdict == "ACCEPT" and out_iface == "lo":
            verdict, tnat, _ = self._loop_back(skb, log, notes)
            nat = nat or tnat
            notes.append("local destination: out through lo and back in (nat not consulted "
                         "again: the conntrack entry exists)")
            if mark and self._fwmark_local(mark) and not self._is_local(int(dst_ip)):
                notes.append(f"socket mark {mark:#x}: the fwmark rule routes it by a table "
                             "where every address is local, so it leaves by lo")
        conn = self._confirm_tuple(skb, tuple_src, tuple_sport, tuple_dst, tuple_dport,
                                   int(dst_ip), dport)
        return self._trace("outbound", verdict, skb, int(dst_ip), dport, out_iface, nat, conn,
                           notes, log, local=out_iface == "lo")

    def receive(self, packet: Packet, iface: str) -> Trace:
        """The first packet of a new connection arrives from outside on ``iface``."""
        self.interface(iface)
        self._check(packet.proto, packet.dst, packet.dport, "dst")
        self._check(packet.proto, packet.src, packet.sport, "src")
        skb = Skb(packet.proto, int(packet.src), packet.sport, int(packet.dst), packet.dport,
                  iif=iface, mark=packet.mark)
        log: list[Any] = []
        notes: list[str] = []
        verdict, nat = self._hooks(PREROUTING_PATH, skb, log, nat_allowed=True)
        local = False
        if verdict == "ACCEPT":
            if self._local_delivery(skb):
                if iface != "lo" and any((skb.dst & m) == n for n, m in self._lo_nets):
                    verdict = "DROP"
                    notes.append("martian: a loopback destination arriving on " + iface)
                else:
                    local = True
                    if skb.tproxy is not None and not self._is_local(skb.dst):
                        notes.append(f"mark {skb.mark:#x}: the fwmark rule makes "
                                     f"{_addr(skb.dst, self.version)} local for this packet")
                    verdict, _ = self._hooks(INPUT_PATH, skb, log, nat_allowed=True)
            else:
                verdict = "DROP"
                why = ("; TPROXY marked it, but no `ip rule fwmark` routes that mark to a "
                       "local table" if skb.tproxy is not None else "")
                notes.append(f"{endpoint(_addr(skb.dst, self.version), skb.dport)} is not an "
                             "address of this namespace and pods do not forward "
                             f"(net.ipv4.ip_forward=0): dropped at the routing decision{why}")
        conn = self._confirm(skb, int(packet.dst), packet.dport)
        return self._trace("inbound", verdict, skb, int(packet.dst), packet.dport, None, nat,
                           conn, notes, log, local=local)

    def answer(self, trace: Trace, *, uid: int | None = None, gid: int | None = None,
               mark: int = 0, iface: str | None = None) -> Trace:
        """The server's first answer to a connection traced here (a TCP SYN-ACK, a DNS
        response): where does it go?

        The server answers from its own address to the client as it sees it (the connection's
        reply tuple). With ``iface=None`` the server is a socket of this namespace (owned by
        ``uid``/``gid``, socket mark ``mark``): the answer starts in OUTPUT. With ``iface``
        (``"eth0"``) the server is outside (the connection left by that interface): the answer
        arrives in PREROUTING.

        **Is it a reply at all?** Conntrack decides right after raw: it looks the answer up
        *in the zone the raw rules gave it* (``CT --zone``; 0 without one). Found: the packet
        belongs to the connection (state ESTABLISHED), it carries the connection's mark, and
        nat is *not* consulted; if the connection was NATed (REDIRECT), conntrack un-NATs the
        answer's source at the end of POSTROUTING (INPUT for an answer from outside), so the
        client sees it come from the address it asked. Not found - for instance the query got
        zone 1 and the answer zone 0 - the answer is the first packet of a NEW connection:
        nat sees it like any new connection and may redirect it somewhere else entirely, and
        nothing un-NATs it. (Istio's DNS capture gives the agent's queries and their answers
        the same zone for exactly this reason.)

        An answer to a local address leaves by ``lo`` and comes back in (``Trace.local``); one
        to a foreign address leaves by ``eth0`` - unless an fwmark rule makes it local, as a
        mark restored with ``CONNMARK --restore-mark`` can. That is how Envoy's
        ``original_src`` connections get their answers. ``Trace.reply_src`` is the source the
        receiver sees; ``Trace.connection`` the entry the answer belongs to (a new one when it
        was NEW).
        """
        first = trace.connection
        conn = self.conntrack.find(first.proto, first.reply, first.zone) or first
        back = conn.reply
        mark = self._mark(mark)
        log: list[Any] = []
        notes: list[str] = []
        client = conn.original.src, conn.original.sport
        v = self.version
        if iface is None:
            oif, _ = self.route(int(back.dst), mark)
            skb = Skb(conn.proto, int(back.src), back.sport, int(back.dst), back.dport,
                      oif=oif, uid=uid, gid=gid, mark=mark)
        else:
            self.interface(iface)
            skb = Skb(conn.proto, int(back.src), back.sport, int(back.dst), back.dport,
                      iif=iface, mark=mark)
        sent = FlowTuple(_addr(skb.src, v), skb.sport, _addr(skb.dst, v), skb.dport)
        found: list[Connection] = []

        def lookup(skb: Skb) -> None:  # conntrack, right after raw
            flow = FlowTuple(_addr(skb.src, v), skb.sport, _addr(skb.dst, v), skb.dport)
            entry = self.conntrack.find(skb.proto, flow, skb.zone)
            if entry is None:
                skb.ctstate = "NEW"
                where = f"zone {skb.zone}" if skb.zone else "zone 0"
                notes.append(f"conntrack has no entry for the answer {flow} in {where} "
                             f"(the connection is in zone {conn.zone}): a NEW connection, "
                             "so nat sees it")
                return
            skb.ctstate, skb.ctmark = "ESTABLISHED", entry.mark
            found.append(entry)

        def unnat(skb: Skb) -> None:  # the reverse NAT of a reply, as conntrack does it
            if found and found[0].reply == sent and found[0].natted:
                skb.src, skb.sport = int(found[0].original.dst), found[0].original.dport

        local = False
        if iface is None:
            verdict, nat = self._hooks(OUTPUT_PATH, skb, log, nat_allowed=True, lookup=lookup)
            unnat(skb)  # POSTROUTING: the source is put back
            out_iface = skb.oif
            if verdict == "ACCEPT" and out_iface == "lo":
                verdict, _, local = self._loop_back(skb, log, notes)
                if skb.mark and self._fwmark_local(skb.mark) and not self._is_local(skb.dst):
                    notes.append(f"mark {skb.mark:#x} (restored from the connection): the "
                                 f"fwmark rule routes the answer to {_addr(skb.dst, v)} back "
                                 "in by lo")
            elif verdict == "ACCEPT":
                notes.append(f"the answer to {endpoint(_addr(skb.dst, v), skb.dport)} leaves "
                             f"by {out_iface}: the address is not local here")
        else:
            out_iface = None
            verdict, nat = self._hooks(PREROUTING_PATH, skb, log, nat_allowed=True,
                                       lookup=lookup)
            if verdict == "ACCEPT" and self._local_delivery(skb):
                local = True
                verdict, _ = self._hooks(INPUT_PATH, skb, log, nat_allowed=True)
                unnat(skb)  # INPUT: the source is put back
            elif verdict == "ACCEPT":
                verdict = "DROP"
                notes.append(f"{_addr(skb.dst, v)} is not an address of this namespace: "
                             "dropped at the routing decision")
        if found:
            entry = found[0]
        else:  # NEW: conntrack confirms an entry of its own
            entry = conn if skb.ctstate != "NEW" else self._confirm_tuple(
                skb, int(sent.src), sent.sport, skb.dst, skb.dport, int(sent.dst), sent.dport)
        if skb.tproxy is not None:
            delivered = (_addr(skb.tproxy[0], v), skb.tproxy[1])
        else:
            delivered = (_addr(skb.dst, v), skb.dport)
        if verdict == "ACCEPT" and found and delivered == client:
            notes.append(f"a reply of the connection (zone {entry.zone}): it reaches "
                         f"{endpoint(*client)} from "
                         f"{endpoint(_addr(skb.src, v), skb.sport)}")
        return Trace("reply", verdict, (sent.dst, sent.dport), delivered,
                     local and verdict == "ACCEPT", out_iface, nat if not found else None,
                     entry, tuple(notes), tuple(log),
                     reply_src=(_addr(skb.src, v), skb.sport))

    def reply(self, trace: Trace) -> Packet:
        """The server's answer as the client receives it, after conntrack translated it back."""
        back = self.conntrack.reply_for(trace.connection)
        if trace.direction == "outbound":
            return Packet(trace.connection.proto, back.src, back.sport, back.dst, back.dport,
                          iif=trace.out_iface)
        return Packet(trace.connection.proto, back.src, back.sport, back.dst, back.dport)

    # ---------------------------------------------------------------- the walk
    def _loop_back(self, skb: Skb, log: list[Any],
                   notes: list[str]) -> tuple[str, NatDecision | None, bool]:
        """A packet this namespace sent out by ``lo`` comes straight back in: the same skb
        (the mark stays), the same conntrack entry (so nat is not consulted again), and no
        socket any more (owner matches cannot match from here on). PREROUTING, the routing
        decision, INPUT. Returns (verdict, what PREROUTING decided - a TPROXY -, whether it
        was delivered to a socket here)."""
        skb.iif, skb.oif, skb.uid, skb.gid = "lo", None, None, None
        verdict, nat = self._hooks(PREROUTING_PATH, skb, log, nat_allowed=False)
        if verdict != "ACCEPT":
            return verdict, nat, False
        if not self._local_delivery(skb):
            notes.append("came back in by lo for an address that is not local here and no "
                         "fwmark rule makes it local: dropped at the routing decision")
            return "DROP", nat, False
        verdict, _ = self._hooks(INPUT_PATH, skb, log, nat_allowed=False)
        return verdict, nat, True

    def _hooks(self, path, skb: Skb, log: list[Any], *, nat_allowed: bool,
               lookup=None):
        """Run the hooks of ``path`` in order; stop at DROP. Returns (verdict, nat decision).

        Conntrack runs right after raw: a packet it has not seen yet becomes NEW, or, with
        ``lookup``, whatever that finds (an answer may belong to a known connection)."""
        nat: NatDecision | None = None
        for hook, tables in path:
            for table in tables:
                if table == "nat" and (not nat_allowed or skb.ctstate in ("UNTRACKED",
                                                                          "ESTABLISHED")):
                    continue  # nat sees only a connection's first, tracked packet, once
                if table in self.ruleset.tables:
                    before = (skb.dst, skb.mark)
                    verdict, decided = self._chain(hook, table, skb, log)
                    nat = nat or decided
                    if verdict == "DROP":
                        return "DROP", nat
                    if hook == "OUTPUT" and (skb.dst, skb.mark) != before:
                        # ip_route_me_harder: a new destination (nat) or a new mark (mangle)
                        # means the routing decision is taken again
                        skb.oif, _ = self.route(skb.dst, skb.mark)
                if table == "raw" and skb.ctstate == "INVALID":
                    if lookup is None:
                        skb.ctstate = "NEW"  # conntrack runs right after raw: a first packet
                    else:
                        lookup(skb)
        return "ACCEPT", nat

    def _chain(self, hook: str, table: str, skb: Skb,
               log: list[Any]) -> tuple[str, NatDecision | None]:
        """Traverse the built-in chain ``hook`` of ``table`` (and the user chains it jumps
        to): the rule decision. Returns ("ACCEPT" | "DROP", NatDecision | None).

        Rules are tried in order. One that does not match is recorded with the reason; one
        that matches counts the packet and acts (:meth:`_hit`): a jump enters a user chain,
        RETURN or the end of a user chain goes back to the rule after the jump, the end of the
        built-in chain (or RETURN in it) applies its policy.
        """
        if self._fast is not None:
            return _fast.traverse(self._fast[table], hook, table, skb, log, self._counters,
                                  self._hit, self.version)
        chains = self.ruleset.tables[table].chains
        chain = chains.get(hook) or Chain(hook, "ACCEPT")
        callers: list[tuple[Chain, int]] = []  # where to go back to: chain, next rule
        i = 0
        while True:
            if i == len(chain.rules):  # fell off the end of the chain
                if callers:
                    chain, i = callers.pop()
                    continue
                return self._policy(hook, table, chain, skb, log), None
            rule = chain.rules[i]
            packet = skb.packet(self.version)  # as the rule sees it, before it acts
            if not rule.matches(skb):
                log.append(RuleEval(hook, table, chain.name, i + 1, rule.text, False, "",
                                    packet, rule.target.name, rule.why_not(skb)))
                i += 1
                continue
            self._counters[(table, chain.name, i + 1)] += 1
            step, words, nat = self._hit(hook, table, chain.name, i, rule.target, skb)
            log.append(RuleEval(hook, table, chain.name, i + 1, rule.text, True, words,
                                packet, rule.target.name))
            if step == "jump":
                callers.append((chain, i + 1))
                chain, i = chains[rule.target.name], 0
            elif step == "RETURN":
                if not callers:  # RETURN in a built-in chain: its policy
                    return self._policy(hook, table, chain, skb, log), None
                chain, i = callers.pop()
            elif step == "next":
                i += 1
            else:
                return step, nat

    def _policy(self, hook: str, table: str, chain: Chain, skb: Skb, log: list[Any]) -> str:
        """The end of a built-in chain: its policy decides, and counts the packet."""
        self._counters[(table, chain.name, 0)] += 1
        policy = chain.policy or "ACCEPT"
        log.append(RuleEval(hook, table, chain.name, 0, f"-P {chain.name} {policy}", True,
                            policy, skb.packet(self.version), policy))
        return policy

    def _hit(self, hook: str, table: str, chain: str, index: int, target: Target,
             skb: Skb) -> tuple[str, str, NatDecision | None]:
        """What rule ``index`` (0-based) of ``chain`` does, now that it matched.

        Returns (what comes next, words for the trace, NAT decision). What comes next is
        ``"jump"`` (into the target chain), ``"RETURN"``, ``"ACCEPT"`` or ``"DROP"`` (the
        table's verdict; REDIRECT, DNAT and TPROXY end the table with ACCEPT), or ``"next"``
        (the next rule: MARK, CONNMARK, CT, LOG do their work and carry on).
        """
        if isinstance(target, Jump):
            return "jump", f"jump {target.chain}", None
        if isinstance(target, Verdict):
            return target.name, target.name, None
        words, nat = self._target(hook, table, chain, index, target, skb)
        return ("next" if nat is None else "ACCEPT"), words, nat

    def _target(self, hook: str, table: str, chain: str, index: int, target, skb: Skb):
        """What a target does to the packet. Returns (words for the trace, NatDecision|None)."""
        if isinstance(target, Redirect | Dnat):
            if isinstance(target, Dnat):
                to_ip = int(target.ip)
            elif hook == "OUTPUT":
                to_ip = 1 if self.version == 6 else 0x7F000001  # ::1 / 127.0.0.1
            else:
                primary = self.interface(skb.iif).primary(self.version)
                if primary is None:
                    return f"REDIRECT: {skb.iif} has no address, dropped", None
                to_ip = int(primary)
            to_port = skb.dport if target.ports is None else target.ports[0]
            skb.dst, skb.dport = to_ip, to_port
            if skb.tproxy is not None and skb.tproxy_any:
                # TPROXY (mangle) already handed the packet to its listener; nat still
                # rewrites the address, and the accepted socket's own address is the
                # rewritten one (the listener stays TPROXY's --on-port)
                skb.tproxy = (to_ip, skb.tproxy[1])
            to = (_addr(to_ip, self.version), to_port)
            return (f"{target.name} {endpoint(*to)}",
                    NatDecision(target.name, table, chain, index + 1, to))
        if isinstance(target, Tproxy):
            on_ip = int(target.on_ip) or skb.dst
            skb.tproxy_any = not int(target.on_ip)
            skb.mark = (skb.mark & ~target.mask) ^ target.mark
            skb.tproxy = (on_ip, target.on_port)
            to = (_addr(on_ip, self.version), target.on_port)
            return (f"TPROXY to the socket listening on port {target.on_port}, destination "
                    f"kept, mark {skb.mark:#x}",
                    NatDecision("TPROXY", table, chain, index + 1, to))
        if isinstance(target, SetMark):
            skb.mark = (skb.mark & ~target.mask & 0xFFFFFFFF) ^ target.value
            return f"MARK set {skb.mark:#x}", None
        if isinstance(target, Connmark):
            if target.mode == "save":
                skb.ctmark = (skb.ctmark & ~target.ctmask & 0xFFFFFFFF) ^ (
                    skb.mark & target.nfmask)
                return f"CONNMARK save {skb.ctmark:#x}", None
            if target.mode == "restore":
                skb.mark = (skb.mark & ~target.nfmask & 0xFFFFFFFF) ^ (
                    skb.ctmark & target.ctmask)
                return f"CONNMARK restore {skb.mark:#x}", None
            skb.ctmark = (skb.ctmark & ~target.mask & 0xFFFFFFFF) ^ target.value
            return f"CONNMARK set {skb.ctmark:#x}", None
        if isinstance(target, Ct):
            if skb.ct_set or skb.ctstate != "INVALID":
                # xt_CT: "previously seen (loopback)? ignore." A packet that already has a
                # conntrack template (an earlier CT rule) or entry (it looped back through
                # lo) keeps it: the FIRST matching CT rule decides the zone, later ones only
                # count. (Istio relies on it: UID 1337's DNS gets zone 1 before the catch-all
                # `--dport 53 -j CT --zone 2` rule.)
                return "CT (ignored: the packet already has conntrack)", None
            skb.ct_set = True
            if target.notrack:
                skb.ctstate = "UNTRACKED"
                return "CT notrack", None
            skb.zone = target.zone
            return f"CT zone {target.zone}", None
        assert isinstance(target, Log)
        return target.name, None

    # ---------------------------------------------------------------- helpers
    def _confirm(self, skb: Skb, orig_dst: int, orig_dport: int) -> Connection:
        return self._confirm_tuple(skb, skb.src, skb.sport, skb.dst, skb.dport, orig_dst,
                                   orig_dport)

    def _confirm_tuple(self, skb: Skb, src: int, sport: int, dst: int, dport: int,
                       orig_dst: int, orig_dport: int) -> Connection:
        """Enter the connection in conntrack: original tuple as sent, reply tuple as NAT made
        it (TPROXY does no NAT: the reply comes from the original destination)."""
        v = self.version
        original = FlowTuple(_addr(src, v), sport, _addr(orig_dst, v), orig_dport)
        reply_dst = skb.tproxy[0] if skb.tproxy else dst
        reply = FlowTuple(_addr(reply_dst, v), dport, _addr(src, v), sport)
        conn = Connection(skb.proto, original, reply, skb.zone, skb.ctmark)
        if skb.ctstate != "UNTRACKED":
            self.conntrack.add(conn)
        return conn

    def _trace(self, direction, verdict, skb, orig_dst, orig_dport, out_iface, nat, conn,
               notes, log, *, local: bool) -> Trace:
        v = self.version
        if skb.tproxy is not None:
            delivered = (_addr(skb.tproxy[0], v), skb.tproxy[1])
        else:
            delivered = (_addr(skb.dst, v), skb.dport)
        return Trace(direction, verdict, (_addr(orig_dst, v), orig_dport), delivered,
                     local and verdict == "ACCEPT", out_iface, nat, conn, tuple(notes),
                     tuple(log))

    def _mark(self, mark: int) -> int:
        if not isinstance(mark, int) or not 0 <= mark <= 0xFFFFFFFF:
            raise MeshlabError(f"mark must be a number from 0 to 4294967295 (0xffffffff), "
                               f"not {mark!r}")
        return mark

    def _port(self, port: int, what: str) -> int:
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise MeshlabError(f"{what} must be a port number from 0 to 65535, not {port!r}")
        return port

    def _check(self, proto: str, ip, port: int, what: str) -> IPAddress:
        if proto not in ("tcp", "udp"):
            raise MeshlabError(f"proto must be 'tcp' or 'udp', not {proto!r}")
        try:
            addr = ip_address(ip)
        except ValueError:
            raise MeshlabError(f"{what} {ip!r} is not an IP address") from None
        if addr.version != self.version:
            raise MeshlabError(f"{what} {addr} is IPv{addr.version} but the rules are "
                               f"{self.ruleset.family}; trace it with the other family's rules")
        self._port(port, what + " port")
        return addr



def _check_jumps(ruleset: Ruleset) -> None:
    """Every ``-j CHAIN`` must name a chain of its table (``iptables-restore`` refuses the
    rules otherwise)."""
    for tname, table in ruleset.tables.items():
        for chain in table.chains.values():
            for i, rule in enumerate(chain.rules):
                if isinstance(rule.target, Jump) and rule.target.chain not in table.chains:
                    raise MeshlabError(f"{tname} {chain.name} rule {i + 1} jumps to "
                                       f"{rule.target.chain}, which does not exist")
