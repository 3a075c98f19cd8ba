"""Rules: what one iptables rule matches, and what it does when it matches.

A :class:`Rule` is an immutable value. Its fields follow the order in which the kernel stores
(and ``iptables-save`` prints) a rule: the addresses ``-s``/``-d``, the interfaces ``-i``/``-o``,
the protocol ``-p``, then the match modules (``-m tcp``, ``-m owner``, ...) in the order they were
loaded, then the target (``-j``). Because the parser builds every rule in this canonical shape,
two rules that the kernel would hold the same way are equal as Python values, whichever form
(restore input or save output) they were written in.

Each match is a small value that both tests a packet and explains a failed test, from one
definition: its ``_fails(packet)`` reads the field the match looks at, applies the match's
predicate, and returns ``None`` when the packet passes, or what it saw when it does not.
``matches(packet)`` is "``_fails`` found nothing"; ``why_not(packet)`` turns what ``_fails``
saw into a sentence a learner reads, the condition in backticks as ``iptables-save`` prints
it: "`-m owner --uid-owner 1337`: the socket's owner is UID 1000" (in the language the
library speaks, :mod:`meshlab.i18n`; the condition stays as iptables writes it). The two
cannot disagree.
The packet is the one under traversal, :class:`meshlab.netfilter.packet.Skb` (addresses as
integers; ``Skb.of(packet)`` makes one from a :class:`~meshlab.netfilter.packet.Packet`).

The *effects* of targets (rewriting a destination, setting a mark) live in
:mod:`meshlab.netfilter.kernel`, next to the traversal, so that the whole rule decision can be
read in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, ip_network
from socket import AF_INET6, inet_ntop
from typing import Any, NamedTuple

from meshlab.errors import MeshlabError
from meshlab.i18n import tr
from meshlab.netfilter.packet import IPAddress, Skb, address

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


class _Explained:
    """``matches`` and ``why_not``, both from the match's one ``_fails``.

    ``_fails(packet, option)`` returns ``None`` when the packet passes, else a small tuple of
    what it saw; ``_say(seen, option)`` puts that into words. ``option`` is which side an
    address or interface match stands for (``-s``/``-d``, ``-i``/``-o``); other matches
    ignore it.
    """

    __slots__ = ()

    def _fails(self, packet: Skb, option: str | None = None) -> tuple[Any, ...] | None:
        raise NotImplementedError

    def _say(self, seen: tuple[Any, ...], option: str | None = None) -> str:
        raise NotImplementedError

    def matches(self, packet: Skb, option: str | None = None) -> bool:
        """Whether ``packet`` passes this match."""
        return self._fails(packet, option) is None

    def why_not(self, packet: Skb, option: str | None = None) -> str | None:
        """``None`` if ``packet`` passes, else why not, in words."""
        seen = self._fails(packet, option)
        return None if seen is None else self._say(seen, option)


def _side_error(what: str, options: str, given: object) -> MeshlabError:
    return MeshlabError(f"{what} match tests one side of the packet: give option={options}, "
                        f"not {given!r} (Rule.matches does this for you)")


def _ports(lo: int, hi: int, sep: str = ":") -> str:
    return str(lo) if lo == hi else f"{lo}{sep}{hi}"


@dataclass(frozen=True, slots=True)
class AddrMatch(_Explained):
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
        net = show_ip(address(self.net, self.version))
        return f"{_neg(self.negated)}{option} {net}/{self.plen}"

    def _fails(self, packet: Skb, option: str | None = None) -> tuple[int] | None:
        """``option`` ``-s`` reads the source, ``-d`` the destination."""
        if option == "-d":
            value = packet.dst
        elif option == "-s":
            value = packet.src
        else:
            raise _side_error("an address", "'-s' (source) or '-d' (destination)", option)
        inside = (value ^ self.net) >> ((32 if self.version == 4 else 128) - self.plen) == 0
        return None if inside != self.negated else (value,)

    def _say(self, seen: tuple[int], option: str | None = None) -> str:
        ip = show_ip(address(seen[0], self.version))
        fact = (tr("the source is {ip}", ip=ip) if option == "-s" else
                tr("the destination is {ip}", ip=ip))
        return f"`{self.render(str(option))}`: {fact}"


@dataclass(frozen=True, slots=True)
class IfaceMatch(_Explained):
    """``[!] -i``/``-o NAME``; a trailing ``+`` matches every name with that prefix (``eth+``)."""

    negated: bool
    name: str

    def render(self, option: str) -> str:
        return f"{_neg(self.negated)}{option} {self.name}"

    def _fails(self, packet: Skb, option: str | None = None) -> tuple[str | None] | None:
        """``option`` ``-i`` reads the interface the packet came in by, ``-o`` the one it
        leaves by (``None``: it has none, as a packet made here has no ``-i``)."""
        if option == "-o":
            value = packet.oif
        elif option == "-i":
            value = packet.iif
        else:
            raise _side_error("an interface", "'-i' (in) or '-o' (out)", option)
        name = self.name
        if value is None:
            same = False
        elif name.endswith("+"):
            same = value.startswith(name[:-1])
        else:
            same = value == name
        return None if same != self.negated else (value,)

    def _say(self, seen: tuple[str | None], option: str | None = None) -> str:
        value = seen[0]
        if option == "-i":
            fact = (tr("the packet was made here: it came in by no interface") if value is None
                    else tr("the packet came in by {iface}", iface=value))
        else:
            fact = (tr("the packet has no out interface (it is coming in, not going out)")
                    if value is None else tr("the packet leaves by {iface}", iface=value))
        return f"`{self.render(str(option))}`: {fact}"


@dataclass(frozen=True, slots=True)
class ProtoMatch(_Explained):
    """``[!] -p tcp|udp|icmp|...``."""

    negated: bool
    proto: str

    def render(self) -> str:
        return f"{_neg(self.negated)}-p {self.proto}"

    def _fails(self, packet: Skb, option: str | None = None) -> tuple[str] | None:
        return None if (packet.proto == self.proto) != self.negated else (packet.proto,)

    def _say(self, seen: tuple[str], option: str | None = None) -> str:
        return f"`{self.render()}`: " + tr("the packet is {proto}", proto=seen[0])


@dataclass(frozen=True, slots=True)
class PortRange:
    """One port or an inclusive range ``lo:hi``, possibly negated."""

    negated: bool
    lo: int
    hi: int

    def render(self) -> str:
        return f"{_neg(self.negated)}{_ports(self.lo, self.hi)}"

    def holds(self, value: int) -> bool:
        """Whether ``value`` is in the range (outside it, when negated)."""
        return (self.lo <= value <= self.hi) != self.negated


@dataclass(frozen=True, slots=True)
class PortMatch(_Explained):
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

    def _fails(self, packet: Skb, option: str | None = None) -> tuple[str, int] | None:
        """The source port is tested first, as the kernel's ``tcp_mt`` does."""
        if self.sport is not None and not self.sport.holds(packet.sport):
            return ("sport", packet.sport)
        if self.dport is not None and not self.dport.holds(packet.dport):
            return ("dport", packet.dport)
        return None

    def _say(self, seen: tuple[str, int], option: str | None = None) -> str:
        side, value = seen
        if side == "sport":
            failed = PortMatch(self.module, sport=self.sport)
            fact = tr("the source port is {port}", port=value)
        else:
            failed = PortMatch(self.module, dport=self.dport)
            fact = tr("the destination port is {port}", port=value)
        return f"`{failed.render()}`: {fact}"


@dataclass(frozen=True, slots=True)
class MultiportMatch(_Explained):
    """``-m multiport [!] --dports|--sports|--ports a,b,c:d`` (``--ports``: either side)."""

    negated: bool
    option: str  # "dports" | "sports" | "ports"
    ports: tuple[tuple[int, int], ...]

    def render(self) -> str:
        listed = ",".join(_ports(lo, hi) for lo, hi in self.ports)
        return f"-m multiport {_neg(self.negated)}--{self.option} {listed}"

    def _listed(self, port: int) -> bool:
        return any(lo <= port <= hi for lo, hi in self.ports)

    def _fails(self, packet: Skb, option: str | None = None) -> tuple[int, int] | None:
        if self.option == "dports":
            listed = self._listed(packet.dport)
        elif self.option == "sports":
            listed = self._listed(packet.sport)
        else:
            listed = self._listed(packet.sport) or self._listed(packet.dport)
        return None if listed != self.negated else (packet.sport, packet.dport)

    def _say(self, seen: tuple[int, int], option: str | None = None) -> str:
        sport, dport = seen
        if self.option == "dports":
            fact = tr("the destination port is {port}", port=dport)
        elif self.option == "sports":
            fact = tr("the source port is {port}", port=sport)
        else:
            fact = tr("the source port is {sport} and the destination port {dport}",
                      sport=sport, dport=dport)
        return f"`{self.render()}`: {fact}"


@dataclass(frozen=True, slots=True)
class OwnerMatch(_Explained):
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
                out += f" {_neg(rng.negated)}{option} {_ports(rng.lo, rng.hi, '-')}"
        return out

    def _fails(self, packet: Skb, option: str | None = None) -> tuple[str, int | None] | None:
        """The owner is tested before the group, as ``xt_owner`` does."""
        if packet.uid is None:
            every_negated = all(r.negated for r in (self.uid, self.gid) if r is not None)
            return None if every_negated else ("socket", None)
        if self.uid is not None and not self.uid.holds(packet.uid):
            return ("uid", packet.uid)
        if self.gid is not None and not self.gid.holds(packet.gid):
            return ("gid", packet.gid)
        return None

    def _say(self, seen: tuple[str, int | None], option: str | None = None) -> str:
        what, value = seen
        if what == "socket":
            return f"`{self.render()}`: " + tr("the packet has no socket (it was not sent by "
                                                "a process here), so it has no owner to match")
        if what == "uid":
            return (f"`{OwnerMatch(uid=self.uid).render()}`: "
                    + tr("the socket's owner is UID {uid}", uid=value))
        return (f"`{OwnerMatch(gid=self.gid).render()}`: "
                + tr("the socket's group is GID {gid}", gid=value))


@dataclass(frozen=True, slots=True)
class MarkMatch(_Explained):
    """``-m mark [!] --mark V[/M]`` (packet mark) or ``-m connmark`` (the connection's mark)."""

    module: str  # "mark" | "connmark"
    negated: bool
    value: int
    mask: int = ALL_ONES

    def render(self) -> str:
        return f"-m {self.module} {_neg(self.negated)}--mark {_value_mask(self.value, self.mask)}"

    def _fails(self, packet: Skb, option: str | None = None) -> tuple[int] | None:
        """``mark`` reads the packet's mark, ``connmark`` the connection's."""
        mark = packet.mark if self.module == "mark" else packet.ctmark
        return None if ((mark & self.mask) == self.value) != self.negated else (mark,)

    def _say(self, seen: tuple[int], option: str | None = None) -> str:
        mark = seen[0]
        masked = mark & self.mask
        under = ("" if masked == mark else
                 tr(" ({masked} under the mask {mask})", masked=_hex(masked), mask=_hex(self.mask)))
        fact = (tr("the packet's mark is {mark}{under}", mark=_hex(mark), under=under)
                if self.module == "mark" else
                tr("the connection's mark is {mark}{under}", mark=_hex(mark), under=under))
        return f"`{self.render()}`: {fact}"


@dataclass(frozen=True, slots=True)
class ConntrackMatch(_Explained):
    """``-m conntrack [!] --ctstate NEW,ESTABLISHED,...``: the connection's tracking state."""

    negated: bool
    states: frozenset[str]

    def render(self) -> str:
        listed = ",".join(s for s in CT_STATES if s in self.states)
        return f"-m conntrack {_neg(self.negated)}--ctstate {listed}"

    def _fails(self, packet: Skb, option: str | None = None) -> tuple[str] | None:
        return None if (packet.ctstate in self.states) != self.negated else (packet.ctstate,)

    def _say(self, seen: tuple[str], option: str | None = None) -> str:
        state = seen[0]
        why = (tr(" (conntrack has not seen it yet: the raw table runs first)")
               if state == "INVALID" else "")
        return f"`{self.render()}`: " + tr("the packet's conntrack state is {state}{why}",
                                            state=state, why=why)


@dataclass(frozen=True, slots=True)
class CommentMatch(_Explained):
    """``-m comment --comment TEXT``: always matches; kept so the rule prints as written."""

    text: str

    def render(self) -> str:
        return f"-m comment --comment {quote(self.text)}"

    def _fails(self, packet: Skb, option: str | None = None) -> None:
        return None  # a comment matches every packet


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

    def matches(self, packet: Skb) -> bool:
        """Whether every condition of the rule holds for ``packet``."""
        return self._first_failure(packet) is None

    def why_not(self, packet: Skb) -> str | None:
        """``None`` if the rule matches ``packet``, else its first failing condition, in
        words: "`-o lo`: the packet leaves by eth0"."""
        failure = self._first_failure(packet)
        if failure is None:
            return None
        match, option, seen = failure
        return match._say(seen, option)

    def conditions(self) -> tuple[tuple[_Explained, str | None], ...]:
        """The rule's matches with the side each tests, in the order the kernel tests them
        (``ip_packet_match``: addresses, interfaces, protocol; then the match modules)."""
        found: list[tuple[_Explained, str | None]] = []
        if self.src is not None:
            found.append((self.src, "-s"))
        if self.dst is not None:
            found.append((self.dst, "-d"))
        if self.iif is not None:
            found.append((self.iif, "-i"))
        if self.oif is not None:
            found.append((self.oif, "-o"))
        if self.proto is not None:
            found.append((self.proto, None))
        for module in self.modules:
            found.append((module, None))
        return tuple(found)

    def _first_failure(self, packet: Skb) -> tuple[_Explained, str | None, tuple] | None:
        """The first condition that fails, with what it saw."""
        for match, option in self.conditions():
            seen = match._fails(packet, option)
            if seen is not None:
                return match, option, seen
        return None


__all__ = [
    "CT_STATES", "AddrMatch", "CommentMatch", "Connmark", "ConntrackMatch", "Ct", "Dnat",
    "IfaceMatch", "Jump", "Log", "MarkMatch", "Module", "MultiportMatch",
    "OwnerMatch", "PortMatch", "PortRange", "ProtoMatch", "Redirect", "Rule", "SetMark",
    "Target", "Tproxy", "Verdict",
]
