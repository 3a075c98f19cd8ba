"""Rules: what one iptables rule matches, and what it does when it matches.

A :class:`Rule` is an immutable value. Its fields follow the order in which the kernel stores
(and ``iptables-save`` prints) a rule: the addresses ``-s``/``-d``, the interfaces ``-i``/``-o``,
the protocol ``-p``, then the match modules (``-m tcp``, ``-m owner``, ...) in the order they were
loaded, then the target (``-j``). Because the parser builds every rule in this canonical shape,
two rules that the kernel would hold the same way are equal as Python values, whichever form
(restore input or save output) they were written in.

Each match knows how to test a packet: :meth:`compile` returns a small function of the packet
being traversed (integers only), built once when the rules are loaded. The *effects* of targets
(rewriting a destination, setting a mark) live in :mod:`meshlab.netfilter.kernel`, next to the
traversal, so that the whole rule decision can be read in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, ip_network
from socket import AF_INET6, inet_ntop
from typing import NamedTuple

from meshlab.netfilter.packet import IPAddress

Test = Callable[[object], bool]
"""A compiled match: takes the packet under traversal (see ``kernel.Skb``), says yes or no."""

ALL_ONES = 0xFFFFFFFF
ANY_V4 = IPv4Address(0)
CT_STATES = ("INVALID", "NEW", "RELATED", "ESTABLISHED", "UNTRACKED", "SNAT", "DNAT")
"""Connection-tracking states, in the order ``iptables-save`` prints them."""


def show_ip(ip: IPAddress) -> str:
    """An address as ``iptables-save`` prints it: IPv6 through ``inet_ntop``, which writes an
    IPv4-mapped address as ``::ffff:1.2.3.4`` (``ipaddress`` in Python 3.11 does not)."""
    if ip.version == 4:
        return str(ip)
    return inet_ntop(AF_INET6, ip.packed)


def _neg(negated: bool) -> str:
    return "! " if negated else ""


def _hex(value: int) -> str:
    return f"{value:#x}"


def _value_mask(value: int, mask: int) -> str:
    """Marks print as ``0x539`` when the mask is all ones, else ``0x10/0xff``."""
    return _hex(value) if mask == ALL_ONES else f"{_hex(value)}/{_hex(mask)}"


_BARE = frozenset("_-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def quote(text: str) -> str:
    """A string as ``iptables-save`` writes it (``xtables_save_string``): bare if it is made
    of letters, digits, ``_`` and ``-`` only, else in double quotes with ``"``, ``\\`` and
    ``'`` escaped by a backslash."""
    if text and _BARE.issuperset(text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("'", "\\'")
    return f'"{escaped}"'


# --------------------------------------------------------------------------- matches


@dataclass(frozen=True, slots=True)
class AddrMatch:
    """``[!] -s``/``-d ADDR[/LEN]``: the address masked to ``plen`` bits equals ``net``.

    Kept as integers (``net`` already masked, as the kernel stores it), so ``10.0.0.1/8``
    and ``10.0.0.0/255.0.0.0`` are the same value and both print as ``10.0.0.0/8``.
    """

    negated: bool
    version: int
    net: int
    plen: int

    @property
    def network(self):
        return ip_network((self.net, self.plen))

    def render(self, option: str) -> str:
        network = self.network
        return f"{_neg(self.negated)}{option} {show_ip(network.network_address)}/{self.plen}"

    def compile(self, field: str) -> Test:
        bits = 32 if self.version == 4 else 128
        mask = ((1 << bits) - 1) ^ ((1 << (bits - self.plen)) - 1)
        net, negated = self.net, self.negated
        if field == "src":
            return lambda p: ((p.src & mask) == net) != negated
        return lambda p: ((p.dst & mask) == net) != negated


@dataclass(frozen=True, slots=True)
class IfaceMatch:
    """``[!] -i``/``-o NAME``; a trailing ``+`` matches every name with that prefix (``eth+``)."""

    negated: bool
    name: str

    def render(self, option: str) -> str:
        return f"{_neg(self.negated)}{option} {self.name}"

    def compile(self, field: str) -> Test:
        negated = self.negated
        if self.name.endswith("+"):
            prefix = self.name[:-1]
            if field == "iif":
                return lambda p: (p.iif is not None and p.iif.startswith(prefix)) != negated
            return lambda p: (p.oif is not None and p.oif.startswith(prefix)) != negated
        name = self.name
        if field == "iif":
            return lambda p: (p.iif == name) != negated
        return lambda p: (p.oif == name) != negated


@dataclass(frozen=True, slots=True)
class ProtoMatch:
    """``[!] -p tcp|udp|icmp|...``."""

    negated: bool
    proto: str

    def render(self) -> str:
        return f"{_neg(self.negated)}-p {self.proto}"

    def compile(self) -> Test:
        proto, negated = self.proto, self.negated
        return lambda p: (p.proto == proto) != negated


@dataclass(frozen=True, slots=True)
class PortRange:
    """One port or an inclusive range ``lo:hi``, possibly negated."""

    negated: bool
    lo: int
    hi: int

    def render(self) -> str:
        ports = str(self.lo) if self.lo == self.hi else f"{self.lo}:{self.hi}"
        return f"{_neg(self.negated)}{ports}"


@dataclass(frozen=True, slots=True)
class PortMatch:
    """``-m tcp``/``-m udp [!] --sport P[:P] [!] --dport P[:P]``.

    ``iptables -p tcp --dport 80`` loads this module implicitly; the kernel then prints
    ``-p tcp -m tcp --dport 80``. Source port is printed before destination port.
    """

    module: str
    sport: PortRange | None = None
    dport: PortRange | None = None

    def render(self) -> str:
        out = f"-m {self.module}"
        if self.sport is not None:
            out += f" {_neg(self.sport.negated)}--sport {self.sport.render().lstrip('! ')}"
        if self.dport is not None:
            out += f" {_neg(self.dport.negated)}--dport {self.dport.render().lstrip('! ')}"
        return out

    def compile(self) -> Test | None:
        tests: list[Test] = []
        for field, rng in (("sport", self.sport), ("dport", self.dport)):
            if rng is not None:
                tests.append(_port_test(field, rng.lo, rng.hi, rng.negated))
        return _all(tests)


def _port_test(field: str, lo: int, hi: int, negated: bool) -> Test:
    if lo == hi:
        if field == "sport":
            return lambda p: (p.sport == lo) != negated
        return lambda p: (p.dport == lo) != negated
    if field == "sport":
        return lambda p: (lo <= p.sport <= hi) != negated
    return lambda p: (lo <= p.dport <= hi) != negated


def _all(tests: list[Test]) -> Test | None:
    """One test for all of ``tests`` (``None``: nothing to test, e.g. a bare ``-m tcp``)."""
    if not tests:
        return None
    if len(tests) == 1:
        return tests[0]
    first, second = tests
    return lambda p: first(p) and second(p)


@dataclass(frozen=True, slots=True)
class MultiportMatch:
    """``-m multiport [!] --dports|--sports|--ports a,b,c:d`` (``--ports``: either side)."""

    negated: bool
    option: str  # "dports" | "sports" | "ports"
    ports: tuple[tuple[int, int], ...]

    def render(self) -> str:
        listed = ",".join(str(lo) if lo == hi else f"{lo}:{hi}" for lo, hi in self.ports)
        return f"-m multiport {_neg(self.negated)}--{self.option} {listed}"

    def compile(self) -> Test:
        ports, negated, option = self.ports, self.negated, self.option

        def inside(port: int) -> bool:
            return any(lo <= port <= hi for lo, hi in ports)

        if option == "dports":
            return lambda p: inside(p.dport) != negated
        if option == "sports":
            return lambda p: inside(p.sport) != negated
        return lambda p: (inside(p.sport) or inside(p.dport)) != negated


@dataclass(frozen=True, slots=True)
class OwnerMatch:
    """``-m owner [!] --uid-owner N[-M] [!] --gid-owner N[-M]``: who owns the sending socket.

    Only packets generated in this namespace have an owner. Like ``xt_owner``, a packet
    without a socket matches only when every condition given is negated.
    """

    uid: PortRange | None = None
    gid: PortRange | None = None

    def render(self) -> str:
        out = "-m owner"
        for option, rng in (("--uid-owner", self.uid), ("--gid-owner", self.gid)):
            if rng is not None:
                ids = str(rng.lo) if rng.lo == rng.hi else f"{rng.lo}-{rng.hi}"
                out += f" {_neg(rng.negated)}{option} {ids}"
        return out

    def compile(self) -> Test:
        uid, gid = self.uid, self.gid
        no_socket = all(r.negated for r in (uid, gid) if r is not None)

        def test(p) -> bool:
            if p.uid is None:
                return no_socket
            if uid is not None and (uid.lo <= p.uid <= uid.hi) == uid.negated:
                return False
            return gid is None or (gid.lo <= p.gid <= gid.hi) != gid.negated

        return test


@dataclass(frozen=True, slots=True)
class MarkMatch:
    """``-m mark [!] --mark V[/M]`` (packet mark) or ``-m connmark`` (the connection's mark)."""

    module: str  # "mark" | "connmark"
    negated: bool
    value: int
    mask: int = ALL_ONES

    def render(self) -> str:
        return f"-m {self.module} {_neg(self.negated)}--mark {_value_mask(self.value, self.mask)}"

    def compile(self) -> Test:
        value, mask, negated = self.value, self.mask, self.negated
        if self.module == "mark":
            return lambda p: ((p.mark & mask) == value) != negated
        return lambda p: ((p.ctmark & mask) == value) != negated


@dataclass(frozen=True, slots=True)
class ConntrackMatch:
    """``-m conntrack [!] --ctstate NEW,ESTABLISHED,...``: the connection's tracking state."""

    negated: bool
    states: frozenset[str]

    def render(self) -> str:
        listed = ",".join(s for s in CT_STATES if s in self.states)
        return f"-m conntrack {_neg(self.negated)}--ctstate {listed}"

    def compile(self) -> Test:
        states, negated = self.states, self.negated
        return lambda p: (p.ctstate in states) != negated


@dataclass(frozen=True, slots=True)
class CommentMatch:
    """``-m comment --comment TEXT``: always matches; kept so the rule prints as written."""

    text: str

    def render(self) -> str:
        return f"-m comment --comment {quote(self.text)}"

    def compile(self) -> None:
        return None


Module = PortMatch | MultiportMatch | OwnerMatch | MarkMatch | ConntrackMatch | CommentMatch


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True, slots=True)
class Verdict:
    """``-j ACCEPT|DROP|RETURN``: stop here (ACCEPT/DROP) or go back to the calling chain."""

    name: str

    def render(self) -> str:
        return f"-j {self.name}"


@dataclass(frozen=True, slots=True)
class Jump:
    """``-j CHAIN``: continue in a user chain; come back here when it returns."""

    chain: str

    @property
    def name(self) -> str:
        return self.chain

    def render(self) -> str:
        return f"-j {self.chain}"


@dataclass(frozen=True, slots=True)
class Redirect:
    """``-j REDIRECT [--to-ports P[-P]]`` (nat): send the connection to this host, port P."""

    ports: tuple[int, int] | None = None
    name = "REDIRECT"

    def render(self) -> str:
        if self.ports is None:
            return "-j REDIRECT"
        lo, hi = self.ports
        return f"-j REDIRECT --to-ports {lo if lo == hi else f'{lo}-{hi}'}"


@dataclass(frozen=True, slots=True)
class Dnat:
    """``-j DNAT --to-destination IP[:P[-P]]`` (nat): rewrite the connection's destination."""

    ip: IPAddress
    ports: tuple[int, int] | None = None
    name = "DNAT"

    def render(self) -> str:
        host = f"[{show_ip(self.ip)}]" if self.ip.version == 6 and self.ports else show_ip(self.ip)
        if self.ports is None:
            return f"-j DNAT --to-destination {host}"
        lo, hi = self.ports
        return f"-j DNAT --to-destination {host}:{lo if lo == hi else f'{lo}-{hi}'}"


@dataclass(frozen=True, slots=True)
class SetMark:
    """``-j MARK``: new mark = (mark AND NOT mask) XOR value (``--set-xmark value/mask``).

    ``--set-mark V`` is stored as ``--set-xmark V/0xffffffff``, ``--or-mark V`` as ``V/V``,
    ``--and-mark V`` as ``0/~V``, ``--xor-mark V`` as ``V/0``: the kernel keeps only the xmark
    form, and ``iptables-save`` prints it.
    """

    value: int
    mask: int = ALL_ONES
    name = "MARK"

    def render(self) -> str:
        return f"-j MARK --set-xmark {_hex(self.value)}/{_hex(self.mask)}"


@dataclass(frozen=True, slots=True)
class Connmark:
    """``-j CONNMARK``: copy the packet mark into the connection (``--save-mark``), back
    (``--restore-mark``), or set the connection mark (``--set-xmark``)."""

    mode: str  # "save" | "restore" | "set"
    value: int = 0
    mask: int = ALL_ONES  # for "set"
    nfmask: int = ALL_ONES
    ctmask: int = ALL_ONES
    name = "CONNMARK"

    def render(self) -> str:
        if self.mode == "set":
            return f"-j CONNMARK --set-xmark {_hex(self.value)}/{_hex(self.mask)}"
        masks = f"--nfmask {_hex(self.nfmask)} --ctmask {_hex(self.ctmask)}"
        return f"-j CONNMARK --{self.mode}-mark {masks}"


@dataclass(frozen=True, slots=True)
class Tproxy:
    """``-j TPROXY --on-port P [--on-ip IP] [--tproxy-mark V/M]`` (mangle PREROUTING).

    Hands the packet to a local socket on ``on_port`` *without* changing its destination, and
    marks it so that policy routing (``ip rule fwmark``) delivers it locally.
    """

    on_port: int
    on_ip: IPAddress = ANY_V4
    mark: int = 0
    mask: int = 0
    name = "TPROXY"

    def render(self) -> str:
        return (f"-j TPROXY --on-port {self.on_port} --on-ip {show_ip(self.on_ip)} "
                f"--tproxy-mark {_hex(self.mark)}/{_hex(self.mask)}")


@dataclass(frozen=True, slots=True)
class Ct:
    """``-j CT --zone N`` / ``--notrack`` (raw): set up conntrack for the packet."""

    zone: int = 0
    notrack: bool = False
    name = "CT"

    def render(self) -> str:
        return "-j CT --notrack" if self.notrack else f"-j CT --zone {self.zone}"


@dataclass(frozen=True, slots=True)
class Log:
    """``-j LOG`` (or ``-j TRACE``): note the packet and carry on with the next rule."""

    name: str = "LOG"
    prefix: str | None = None
    level: int | None = None

    def render(self) -> str:
        out = f"-j {self.name}"
        if self.prefix is not None:
            out += f" --log-prefix {quote(self.prefix)}"
        if self.level is not None:
            out += f" --log-level {self.level}"
        return out


Target = Verdict | Jump | Redirect | Dnat | SetMark | Connmark | Tproxy | Ct | Log
NAT_TARGETS = ("REDIRECT", "DNAT")


# --------------------------------------------------------------------------- the rule


class Rule(NamedTuple):
    """One rule in the kernel's canonical shape. ``text`` is its restore/save form without
    ``-A CHAIN``, e.g. ``-p tcp -m tcp --dport 15008 -j RETURN``.

    A named tuple rather than a frozen dataclass like the parts: a 20,000-rule dump makes
    20,000 of them, and a tuple is made by one C call, ``tuple.__new__(Rule, fields)``."""

    target: Target
    src: AddrMatch | None = None
    dst: AddrMatch | None = None
    iif: IfaceMatch | None = None
    oif: IfaceMatch | None = None
    proto: ProtoMatch | None = None
    modules: tuple[Module, ...] = ()

    @property
    def text(self) -> str:
        parts = []
        if self.src is not None:
            parts.append(self.src.render("-s"))
        if self.dst is not None:
            parts.append(self.dst.render("-d"))
        if self.iif is not None:
            parts.append(self.iif.render("-i"))
        if self.oif is not None:
            parts.append(self.oif.render("-o"))
        if self.proto is not None:
            parts.append(self.proto.render())
        parts.extend(m.render() for m in self.modules)
        parts.append(self.target.render())
        return " ".join(parts)

    def __str__(self) -> str:
        return self.text

    @property
    def owner_match(self) -> bool:
        """Whether the rule reads the socket owner (only valid in OUTPUT/POSTROUTING)."""
        return any(isinstance(m, OwnerMatch) for m in self.modules)

    def compile(self) -> tuple[Test, ...]:
        """The rule's tests, cheapest and most selective first; all must pass to match."""
        tests: list[Test | None] = []
        if self.proto is not None:
            tests.append(self.proto.compile())
        if self.dst is not None:
            tests.append(self.dst.compile("dst"))
        if self.src is not None:
            tests.append(self.src.compile("src"))
        if self.iif is not None:
            tests.append(self.iif.compile("iif"))
        if self.oif is not None:
            tests.append(self.oif.compile("oif"))
        tests.extend(m.compile() for m in self.modules)
        return tuple(t for t in tests if t is not None)


__all__ = [
    "CT_STATES", "AddrMatch", "CommentMatch", "Connmark", "ConntrackMatch", "Ct", "Dnat",
    "IfaceMatch", "Jump", "Log", "MarkMatch", "Module", "MultiportMatch",
    "OwnerMatch", "PortMatch", "PortRange", "ProtoMatch", "Redirect", "Rule", "SetMark",
    "Target", "Tproxy", "Verdict",
]
