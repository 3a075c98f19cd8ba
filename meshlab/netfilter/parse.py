"""Read iptables rules in any of the three forms people meet, into a :class:`Ruleset`.

1. ``iptables-save`` output, as the kernel prints it: ``*nat``, ``:CHAIN POLICY [p:b]``
   headers, ``-A`` lines (``[p:b] -A`` with ``-c``), ``-m tcp`` before ``--dport``, hex marks,
   ``MARK --set-xmark``, ``CONNMARK ... --nfmask --ctmask``, ``TPROXY --on-ip --tproxy-mark``.
2. ``iptables-restore`` documents as ``istio-iptables`` writes them: ``* nat``, ``-N CHAIN``,
   ``-A``, ``-I CHAIN N``, ``COMMIT``.
3. Command lines: ``iptables -t nat -A OUTPUT -p tcp -j REDIRECT --to-ports 15001``.

Anything it does not understand is an error that names the line, the column, the token and a
way to fix it: an option is never silently ignored, because an ignored match would make a rule
match more than the kernel's. After reading, the rules are checked the way the kernel checks
them on load: jumps lead to chains that exist, chains do not loop, owner matches and nat
targets sit only where their hooks allow.

Speed (a 20,000-rule dump is read in well under the time of ``shlex.split`` on each line):
a line without quotes is split with :meth:`str.split`; options are dispatched through a dict;
the first rule of each *shape* is read option by option and the rest of that shape reuse
what it taught (see "rule shapes" below); equal matches and targets are one shared object,
made once (see "shared values"); frozen values are made with the fast constructors of
:mod:`meshlab.netfilter.fastnew`; the load-time checks are linear and mostly work from what
the parser noted (:mod:`meshlab.netfilter.validate`); columns for error messages are only
worked out when there is an error (:mod:`meshlab.netfilter.source`).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from ipaddress import IPv4Address, ip_address, ip_network
from operator import itemgetter

from meshlab.errors import MeshlabError
from meshlab.netfilter.fastnew import new_addr as _new_addr
from meshlab.netfilter.fastnew import new_ports as _new_ports
from meshlab.netfilter.fastnew import new_range as _new_range
from meshlab.netfilter.fastnew import new_rule as _new_rule
from meshlab.netfilter.rules import (
    ALL_ONES,
    CT_STATES,
    AddrMatch,
    CommentMatch,
    Connmark,
    ConntrackMatch,
    Ct,
    Dnat,
    IfaceMatch,
    Jump,
    Log,
    MarkMatch,
    MultiportMatch,
    OwnerMatch,
    PortMatch,
    PortRange,
    ProtoMatch,
    Redirect,
    Rule,
    SetMark,
    Tproxy,
    Verdict,
)
from meshlab.netfilter.ruleset import BUILTIN_CHAINS, Ruleset
from meshlab.netfilter.source import (
    BLANK,
    END,
    Bad,
    RulesParseError,
    error_at,
    split,
)
from meshlab.netfilter.validate import LIMITED_TARGETS, Notes, check_and_build

__all__ = ["RulesParseError", "parse_rule", "parse_rule_spec", "parse_ruleset"]


# Short local names for the helpers of meshlab.netfilter.source, used throughout this module.
_END = END  # a token index past the end of any line: the error points after the last word
_BLANK = BLANK
_Bad = Bad
_split = split
_error = error_at


# --------------------------------------------------------------------------- values


def _port(tok: str, i: int) -> int:
    if tok.isdigit() and tok.isascii():
        port = int(tok)
        if port <= 65535:
            return port
    raise _Bad(i, f"bad port {tok!r}", "give a port number from 0 to 65535 (names like "
               "'http' are not read)")


def _port_range(tok: str, i: int, sep: str = ":") -> tuple[int, int]:
    if tok.isdigit() and tok.isascii():  # one port, by far the most common: no range to split
        port = int(tok)
        if port <= 65535:
            return port, port
    lo_s, found, hi_s = tok.partition(sep)
    lo = _port(lo_s, i) if lo_s else 0
    hi = (_port(hi_s, i) if hi_s else 65535) if found else lo
    if lo > hi:
        raise _Bad(i, f"port range {tok!r} runs backwards", f"write it as {hi}{sep}{lo}")
    return lo, hi


def _number(tok: str, i: int, what: str, limit: int = ALL_ONES) -> int:
    try:
        value = int(tok, 0)
    except ValueError:
        value = -1
    if not 0 <= value <= limit:
        raise _Bad(i, f"bad {what} {tok!r}", f"give a number from 0 to {limit} (hex like 0x539 "
                   "is fine)")
    return value


def _value_mask(tok: str, i: int, default_mask: int = ALL_ONES) -> tuple[int, int]:
    value, found, mask = tok.partition("/")
    return _number(value, i, "mark"), (_number(mask, i, "mask") if found else default_mask)


def _id_range(tok: str, i: int, what: str) -> tuple[int, int]:
    lo_s, found, hi_s = tok.partition("-")
    if not lo_s.isdigit() or (found and not hi_s.isdigit()):
        raise _Bad(i, f"bad {what} {tok!r}", f"give a numeric {what} (names are not looked up "
                   "here), e.g. 1337 or 1000-1999")
    lo = int(lo_s)
    return lo, (int(hi_s) if found else lo)


_OCTET = {str(n): n for n in range(256)}  # "010" is not an octet here, as in iptables
_PLEN = {str(n): n for n in range(129)}
_ADDR_HINT = ("give an IP address or CIDR such as 10.0.0.0/8 or fd00::/64 (host names and "
              "lists are not read; write one rule per address)")


def _ipv4(text: str) -> IPv4Address | None:
    """A plain dotted IPv4 address, read faster than ``ip_address`` (which checks each octet
    in a loop of its own); None for anything else, which ``ip_address`` then reads (or
    refuses) as usual."""
    octets = text.split(".")
    if len(octets) != 4:
        return None
    try:
        a, b, c, d = (_OCTET[o] for o in octets)
    except KeyError:
        return None
    return IPv4Address((a << 24) | (b << 16) | (c << 8) | d)


def _address(tok: str, i: int) -> tuple[int, int, int]:
    """``ADDR[/LEN]`` or ``ADDR/NETMASK`` -> (version, masked network int, prefix length)."""
    addr, found, plen_s = tok.partition("/")
    try:
        a, b, c, d = addr.split(".")
        value = (_OCTET[a] << 24) | (_OCTET[b] << 16) | (_OCTET[c] << 8) | _OCTET[d]
        version, bits = 4, 32
    except (ValueError, KeyError):
        try:
            parsed = ip_address(addr)
        except ValueError:
            raise _Bad(i, f"bad address {tok!r}", _ADDR_HINT) from None
        version, bits, value = parsed.version, parsed.max_prefixlen, int(parsed)
    if not found:
        plen = bits
    elif plen_s in _PLEN and _PLEN[plen_s] <= bits:
        plen = _PLEN[plen_s]
    else:
        try:
            plen = ip_network(f"0.0.0.0/{plen_s}" if version == 4 else f"::/{plen_s}").prefixlen
        except ValueError:
            raise _Bad(i, f"bad address {tok!r}", _ADDR_HINT) from None
    mask = ((1 << bits) - 1) ^ ((1 << (bits - plen)) - 1)
    return version, value & mask, plen


# --------------------------------------------------------------------------- shared values
#
# Matches and targets are immutable, so one object can stand for every equal one: a dump
# names the same port, comment, DNAT destination or chain again and again, and a program
# that parses the same rules again (a notebook re-run, a widget) names every one of them
# again. So the parts of a rule are made through *memos*: tables from the words that give a
# part to the object already made from them. A memo lives as long as this module; a memo that
# has grown past _MEMO_LIMIT entries is emptied before the next document is read, so memory
# stays bounded (by the limit plus one document's values). Only values are kept, never
# errors: a word that does not read is read again, and refused again, each time.

_MEMO_LIMIT = 100_000
_MEMOS: dict[tuple, dict] = {}


def _memo(kind: tuple) -> dict:
    """The memo for one kind of part (e.g. ``("module", "tcp", (("--dport", False),))``:
    a ``-m tcp`` with one plain ``--dport``), from its words to the part made from them."""
    memo = _MEMOS.get(kind)
    if memo is None:
        memo = _MEMOS[kind] = {}
    return memo


def _trim_memos() -> None:
    """Empty the memos that have grown too big (before a document is read)."""
    for memo in _MEMOS.values():
        if len(memo) > _MEMO_LIMIT:
            memo.clear()


_ADDR_MEMOS = (_memo(("address", False)), _memo(("address", True)))  # by negation


def _addr_match(negated: bool, tok: str, i: int) -> AddrMatch:
    """``[!] -s|-d tok`` (``i``: the token's index, for errors), shared through a memo."""
    memo = _ADDR_MEMOS[negated]
    match = memo.get(tok)
    if match is None:
        match = _new_addr(negated, *_address(tok, i))
        memo[tok] = match
    return match


_JUMPS = _memo(("jump",))


def _jump(chain: str) -> Jump:
    """``-j CHAIN``, shared through a memo."""
    target = _JUMPS.get(chain)
    if target is None:
        target = Jump(chain)
        _JUMPS[chain] = target
    return target


# --------------------------------------------------------------------------- one rule


class _Builder:
    """A rule being read: plain attributes, turned into a frozen :class:`Rule` at the end."""

    __slots__ = ("addr_at", "counters", "dst", "family", "iif", "modules", "oif", "proto",
                 "src", "target", "target_opts", "where")

    def __init__(self, family: str | None) -> None:
        self.family = family
        self.src = self.dst = self.iif = self.oif = self.proto = self.target = None
        self.modules: list[list] = []  # [name, option dict, token index]
        self.target_opts: dict[str, tuple[str, int]] = {}
        self.counters: tuple[int, int] | None = None
        self.where: dict[str, int] = {}  # token index of the parts later checks point at
        self.addr_at: list[tuple[str, int]] = []  # ("src"|"dst", token index of the address)


def _need(toks: list[str], i: int, option: str) -> str:
    """The value after an option: like getopt, the next word, whatever it looks like."""
    if i + 1 >= len(toks):
        raise _Bad(i + 1, f"option {option} needs a value", f"write {option} VALUE (the line "
                   "may be cut short)")
    return toks[i + 1]


def _opt_addr(b: _Builder, toks: list[str], i: int, neg: bool) -> int:
    opt = toks[i]
    field = "src" if opt in ("-s", "--source", "--src") else "dst"
    if getattr(b, field) is not None:
        raise _Bad(i, f"{opt} given twice", "keep one; use two rules for two addresses")
    match = _addr_match(neg, _need(toks, i, opt), i + 1)
    family = "ipv4" if match.version == 4 else "ipv6"
    if b.family is None:
        b.family = family
    elif b.family != family:
        raise _Bad(i + 1, f"{toks[i + 1]} is an {family} address in {b.family} rules",
                   "keep IPv4 and IPv6 rules in separate files (iptables / ip6tables)")
    setattr(b, field, match)
    b.addr_at.append((field, i + 1))
    return i + 2


def _opt_iface(b: _Builder, toks: list[str], i: int, neg: bool) -> int:
    opt = toks[i]
    field = "iif" if opt in ("-i", "--in-interface") else "oif"
    setattr(b, field, _iface_match(_need(toks, i, opt), neg, i + 1))
    b.where[field] = i
    return i + 2


_IFACE_MEMOS = (_memo(("interface", False)), _memo(("interface", True)))  # by negation


def _iface_match(name: str, neg: bool, i: int) -> IfaceMatch:
    """``[!] -i|-o name``, shared through a memo."""
    match = _IFACE_MEMOS[neg].get(name)
    if match is None:
        if len(name) > 15 or "/" in name:
            raise _Bad(i, f"bad interface name {name!r}", "interface names have at most 15 "
                       "characters, e.g. eth0, lo or eth+")
        match = IfaceMatch(neg, name)
        _IFACE_MEMOS[neg][name] = match
    return match


_PROTO_NAMES = {"tcp": "tcp", "6": "tcp", "udp": "udp", "17": "udp", "icmp": "icmp",
                "1": "icmp", "icmpv6": "ipv6-icmp", "ipv6-icmp": "ipv6-icmp", "58": "ipv6-icmp",
                "sctp": "sctp", "132": "sctp", "all": "all", "0": "all"}


def _opt_proto(b: _Builder, toks: list[str], i: int, neg: bool) -> int:
    value = _need(toks, i, toks[i])
    name = _PROTO_NAMES.get(value.lower())
    if name is None:
        raise _Bad(i + 1, f"unknown protocol {value!r}", "use tcp, udp, icmp or all")
    b.proto = None if name == "all" and not neg else ProtoMatch(neg, name)
    return i + 2


_MODULE_OPTIONS: dict[str, tuple[str, ...]] = {
    "tcp": ("--dport", "--sport", "--destination-port", "--source-port"),
    "udp": ("--dport", "--sport", "--destination-port", "--source-port"),
    "multiport": ("--dports", "--sports", "--ports", "--destination-ports", "--source-ports"),
    "owner": ("--uid-owner", "--gid-owner"),
    "mark": ("--mark",),
    "connmark": ("--mark",),
    "conntrack": ("--ctstate",),
    "comment": ("--comment",),
}
_OPTION_MODULE = {opt: mod for mod, opts in reversed(_MODULE_OPTIONS.items()) for opt in opts}


def _opt_match(b: _Builder, toks: list[str], i: int, neg: bool) -> int:
    name = _need(toks, i, toks[i])
    if name not in _MODULE_OPTIONS:
        raise _Bad(i + 1, f"unknown match module {name!r}",
                   "this model reads -m " + ", ".join(_MODULE_OPTIONS))
    if name in ("tcp", "udp"):
        proto = b.proto.proto if b.proto is not None and not b.proto.negated else None
        if proto != name:
            raise _Bad(i + 1, f"-m {name} needs -p {name} before it", f"add -p {name}")
        if any(m[0] == name for m in b.modules):  # the kernel keeps one tcp/udp match
            return i + 2
    b.modules.append([name, {}, i])
    if name == "owner":
        b.where["owner"] = i
    return i + 2


def _opt_jump(b: _Builder, toks: list[str], i: int, neg: bool) -> int:
    if b.target is not None:
        raise _Bad(i, "a rule has one target; -j given twice", "keep one -j")
    b.target = _need(toks, i, toks[i])
    b.where["target"] = i + 1
    return i + 2


def _opt_counters(b: _Builder, toks: list[str], i: int, neg: bool) -> int:
    if i + 2 >= len(toks) or not (toks[i + 1].isdigit() and toks[i + 2].isdigit()):
        raise _Bad(i + 1, "-c needs two numbers", "write -c PACKETS BYTES, e.g. -c 0 0")
    b.counters = (int(toks[i + 1]), int(toks[i + 2]))
    return i + 3


_BASIC: dict[str, Callable[[_Builder, list[str], int, bool], int]] = {
    "-s": _opt_addr, "--source": _opt_addr, "--src": _opt_addr,
    "-d": _opt_addr, "--destination": _opt_addr, "--dst": _opt_addr,
    "-i": _opt_iface, "--in-interface": _opt_iface,
    "-o": _opt_iface, "--out-interface": _opt_iface,
    "-p": _opt_proto, "--protocol": _opt_proto,
    "-m": _opt_match, "--match": _opt_match,
    "-j": _opt_jump, "--jump": _opt_jump,
    "-c": _opt_counters, "--set-counters": _opt_counters,
}
_NO_NEGATION = ("-m", "--match", "-j", "--jump", "-c", "--set-counters")

_TARGET_OPTIONS: dict[str, tuple[str, ...]] = {
    "ACCEPT": (), "DROP": (), "RETURN": (), "TRACE": (),
    "REDIRECT": ("--to-ports", "--to-port"),
    "DNAT": ("--to-destination",),
    "MARK": ("--set-mark", "--set-xmark", "--or-mark", "--and-mark", "--xor-mark"),
    "CONNMARK": ("--save-mark", "--restore-mark", "--set-mark", "--set-xmark", "--nfmask",
                 "--ctmask", "--mask"),
    "TPROXY": ("--on-port", "--on-ip", "--tproxy-mark"),
    "CT": ("--zone", "--notrack"),
    "LOG": ("--log-prefix", "--log-level"),
}
_FLAG_OPTIONS = ("--save-mark", "--restore-mark", "--notrack")


def _read_rule(toks: list[str], start: int, family: str | None) -> _Builder:
    """Read rule options ``toks[start:]`` into a builder (then :func:`_finish`)."""
    b = _Builder(family)
    i, n = start, len(toks)
    while i < n:
        tok = toks[i]
        neg = False
        if tok == "!":
            neg, i = True, i + 1
            if i >= n:
                raise _Bad(i, "'!' at the end of the rule", "put '!' before the option it negates")
            tok = toks[i]
            if tok in _NO_NEGATION:
                raise _Bad(i, f"{tok} cannot be negated", "remove the '!'")
        handler = _BASIC.get(tok)
        if handler is not None:
            i = handler(b, toks, i, neg)
            continue
        if b.target in _TARGET_OPTIONS and tok in _TARGET_OPTIONS[b.target]:
            if neg:
                raise _Bad(i - 1, f"{tok} cannot be negated", "remove the '!'")
            if tok in b.target_opts:
                raise _Bad(i, f"{tok} given twice", "keep one")
            if tok in _FLAG_OPTIONS:
                b.target_opts[tok] = ("", i)
                i += 1
            else:
                b.target_opts[tok] = (_need(toks, i, tok), i + 1)
                i += 2
            continue
        if tok in _OPTION_MODULE:
            i = _module_option(b, toks, i, neg)
            continue
        if tok.startswith("-"):
            known = ["-s", "-d", "-i", "-o", "-p", "-m", "-j"]
            for name, _, _ in b.modules:
                known.extend(_MODULE_OPTIONS[name][:3])
            known.extend(_TARGET_OPTIONS.get(b.target or "", ()))
            hint = "check the spelling; options known at this point: " + " ".join(known)
            module = _OPTION_MODULE.get(tok)
            if module is not None:
                hint = f"load its module first: -m {module} {tok} ..."
            elif any(tok in opts for opts in _TARGET_OPTIONS.values()):
                hint = f"{tok} is a target option; put it after the -j TARGET it belongs to"
            raise _Bad(i, f"unknown option {tok!r}", hint)
        raise _Bad(i, f"unexpected word {tok!r}", "options start with '-'; quote values that "
                   "contain spaces")
    return b


def _module_option(b: _Builder, toks: list[str], i: int, neg: bool) -> int:
    tok = toks[i]
    value = _need(toks, i, tok)
    for entry in reversed(b.modules):
        if tok in _MODULE_OPTIONS[entry[0]]:
            break
    else:
        if tok in ("--dport", "--sport", "--destination-port", "--source-port") and (
                b.proto is not None and not b.proto.negated and b.proto.proto in ("tcp", "udp")):
            entry = [b.proto.proto, {}, i]  # `-p tcp --dport` loads -m tcp implicitly
            b.modules.append(entry)
        else:
            module = _OPTION_MODULE[tok]
            hint = (f"add -p tcp (or -p udp) before {tok}" if module in ("tcp", "udp")
                    else f"load its module first: -m {module} {tok} ...")
            raise _Bad(i, f"unknown option {tok!r} here", hint)
    key = {"--destination-port": "--dport", "--source-port": "--sport",
           "--destination-ports": "--dports", "--source-ports": "--sports"}.get(tok, tok)
    opts = entry[1]
    if key in opts or (entry[0] == "multiport" and opts):
        raise _Bad(i, f"{tok} given twice in one -m {entry[0]}", "keep one, or add another -m "
                   f"{entry[0]}")
    opts[key] = (neg, value, i + 1)
    return i + 2


def _finish(b: _Builder) -> Rule:
    """Turn the builder into the canonical :class:`Rule` (raises ``_Bad``)."""
    modules = tuple(_module(name, opts, at) for name, opts, at in b.modules)
    if b.target is None:
        raise _Bad(_END, "the rule has no target", "end the rule with -j TARGET "
                   "(ACCEPT, DROP, RETURN, a chain name, REDIRECT, ...)")
    target = _target(b.target, b.target_opts, b.where.get("target", 0), b.family)
    return Rule(target, b.src, b.dst, b.iif, b.oif, b.proto, modules)


def _module(name: str, opts: dict, at: int):
    if name in ("tcp", "udp"):
        return _port_match(name, opts.get("--sport"), opts.get("--dport"))
    if not opts:
        wanted = " or ".join(_MODULE_OPTIONS[name][:2])
        raise _Bad(at, f"-m {name} without its option", f"add {wanted} after -m {name}")
    if name == "multiport":
        (key, (neg, value, i)), = opts.items()
        ports = tuple(_port_range(p, i) for p in value.split(","))
        if len(ports) > 15:
            raise _Bad(i, "multiport takes at most 15 ports", "split the list over two rules")
        return MultiportMatch(neg, key[2:], ports)
    if name == "owner":
        ids = {}
        for key in ("--uid-owner", "--gid-owner"):
            if key in opts:
                neg, value, i = opts[key]
                lo, hi = _id_range(value, i, key[2:5])
                ids[key] = PortRange(neg, lo, hi)
        return OwnerMatch(ids.get("--uid-owner"), ids.get("--gid-owner"))
    if name in ("mark", "connmark"):
        neg, value, i = opts["--mark"]
        return MarkMatch(name, neg, *_value_mask(value, i))
    if name == "conntrack":
        neg, value, i = opts["--ctstate"]
        states = frozenset(value.upper().split(","))
        if not states <= set(CT_STATES):
            raise _Bad(i, f"unknown conntrack state in {value!r}", "use NEW, ESTABLISHED, "
                       "RELATED, INVALID, UNTRACKED, SNAT or DNAT, separated by commas")
        return ConntrackMatch(neg, states)
    neg, value, i = opts["--comment"]
    if neg:
        raise _Bad(i - 2, "--comment cannot be negated", "remove the '!'")
    return CommentMatch(value)


def _port_match(name: str, sport: tuple[bool, str, int] | None,
                dport: tuple[bool, str, int] | None) -> PortMatch:
    """``-m tcp|udp`` from its ``--sport``/``--dport`` as (negated, word, token index)."""
    if sport is not None:
        sport = _new_range(sport[0], *_port_range(sport[1], sport[2]))
    if dport is not None:
        dport = _new_range(dport[0], *_port_range(dport[1], dport[2]))
    return _new_ports(name, sport, dport)


_SIMPLE_TARGETS = {name: Verdict(name) for name in ("ACCEPT", "DROP", "RETURN")}
_SIMPLE_TARGETS["TRACE"] = Log("TRACE")


def _target(name: str, opts: dict[str, tuple[str, int]], at: int, family: str | None):
    """The target ``-j name`` with its options ``{option: (value, token index)}``; ``at`` is
    the index of the target's name, ``family`` the rule's (TPROXY's default --on-ip)."""
    simple = _SIMPLE_TARGETS.get(name)
    if simple is not None:
        return simple
    if name not in _TARGET_OPTIONS:
        return _jump(name)  # checked against the table's chains once the table is complete
    if name == "REDIRECT":
        value, i = opts.get("--to-ports") or opts.get("--to-port") or ("", at)
        return Redirect(_port_range(value, i, "-") if value else None)
    if name == "DNAT":
        if "--to-destination" not in opts:
            raise _Bad(at, "DNAT needs --to-destination", "add --to-destination IP[:PORT]")
        value, i = opts["--to-destination"]
        host, ports = value, None
        if value.startswith("["):
            host, _, port_s = value[1:].partition("]")
            ports = _port_range(port_s[1:], i, "-") if port_s.startswith(":") else None
        elif value.count(":") == 1:
            host, port_s = value.split(":")
            ports = _port_range(port_s, i, "-")
        try:
            return Dnat(_ipv4(host) or ip_address(host), ports)
        except ValueError:
            raise _Bad(i, f"bad address {host!r}", "write --to-destination 10.0.0.1:8080") from None
    if name == "MARK":
        if len(opts) != 1:
            raise _Bad(at, "MARK needs exactly one of --set-mark, --set-xmark, --or-mark, "
                       "--and-mark, --xor-mark", "e.g. -j MARK --set-mark 1337")
        (opt, (value, i)), = opts.items()
        return _mark_target(opt, value, i, SetMark)
    if name == "CONNMARK":
        return _connmark(opts, at)
    if name == "TPROXY":
        if "--on-port" not in opts:
            raise _Bad(at, "TPROXY needs --on-port", "add --on-port 15006")
        port = _port(*opts["--on-port"])
        on_ip = ip_address("::" if family == "ipv6" else "0.0.0.0")
        if "--on-ip" in opts:
            value, i = opts["--on-ip"]
            try:
                on_ip = ip_address(value)
            except ValueError:
                raise _Bad(i, f"bad address {value!r}", "write --on-ip 0.0.0.0") from None
        mark, mask = _value_mask(*opts["--tproxy-mark"]) if "--tproxy-mark" in opts else (0, 0)
        return Tproxy(port, on_ip, mark, mask)
    if name == "CT":
        if "--notrack" in opts:
            return Ct(notrack=True)
        value, i = opts.get("--zone", ("0", at))
        return Ct(_number(value, i, "zone", 0xFFFF))
    prefix = opts["--log-prefix"][0] if "--log-prefix" in opts else None
    level = None
    if "--log-level" in opts:
        value, i = opts["--log-level"]
        names = ("emerg", "alert", "crit", "error", "warning", "notice", "info", "debug")
        level = names.index(value) if value in names else _number(value, i, "log level", 7)
        level = None if level == 4 else level  # warning is the default; the kernel omits it
    return Log("LOG", prefix, level)


def _mark_target(opt: str, value: str, i: int, make):
    """The five MARK spellings, all stored as the kernel's xor form ``(value, mask)``."""
    if opt in ("--set-xmark", "--set-mark"):
        v, m = _value_mask(value, i)
        return make(v, m) if opt == "--set-xmark" else make(v, m | v)
    bits = _number(value, i, "mark")
    if opt == "--or-mark":
        return make(bits, bits)
    if opt == "--and-mark":
        return make(0, ALL_ONES ^ bits)
    return make(bits, 0)  # --xor-mark


def _connmark(opts: dict, at: int) -> Connmark:
    modes = [o for o in ("--save-mark", "--restore-mark", "--set-mark", "--set-xmark")
             if o in opts]
    if len(modes) != 1:
        raise _Bad(at, "CONNMARK needs exactly one of --save-mark, --restore-mark, --set-mark",
                   "e.g. -j CONNMARK --save-mark")
    mode = modes[0]
    if mode in ("--set-mark", "--set-xmark"):
        value, i = opts[mode]
        return _mark_target(mode, value, i, lambda v, m: Connmark("set", v, m))
    mask = _number(*opts["--mask"], "mask") if "--mask" in opts else ALL_ONES
    nfmask = _number(*opts["--nfmask"], "mask") if "--nfmask" in opts else mask
    ctmask = _number(*opts["--ctmask"], "mask") if "--ctmask" in opts else mask
    return Connmark(mode[2:-5], nfmask=nfmask, ctmask=ctmask)


# --------------------------------------------------------------------------- documents


class _Doc:
    """The state while reading a document: tables -> chains -> [policy, rules, places, jumps].

    ``places`` runs beside ``rules``: for each rule a plain tuple (see
    :data:`meshlab.netfilter.validate.Place`) saying where it was written, read only if a
    load-time check fails. ``jumps`` lists the chains that the rules jump to, noted as they
    are read so that the load-time checks need not look at every rule again. ``plans``
    holds one :class:`_Plan` per rule shape met so far.
    """

    def __init__(self, family: str | None) -> None:
        self.family = family
        self.tables: dict[str, dict[str, list]] = {}
        self.policy_counters: dict[tuple[str, str, int], tuple[int, int]] = {}
        self.notes = Notes()  # what the load-time checks will want to know
        self.open: tuple[str, int] | None = None  # table and the line that opened it
        self.plans: dict[tuple, list[_Plan]] = {}  # hint -> plans (see "rule shapes")

    def table(self, name: str) -> dict[str, list]:
        chains = self.tables.get(name)
        if chains is None:
            chains = self.tables[name] = {c: ["ACCEPT", [], [], []] for c in BUILTIN_CHAINS[name]}
        return chains


# --------------------------------------------------------------------------- rule shapes
#
# Dumps repeat themselves. The 20,000 rules of a kube-proxy dump come in four shapes, e.g.
#     -A KUBE-SEP-X -s 10.244.0.7/32 -m comment --comment "ns/svc:http" -j KUBE-MARK-MASQ
# where only the chain, the address and the comment change from one rule to the next. Reading
# each rule option by option (:func:`_read_rule`) takes the same decisions 20,000 times. So
# the first rule of each shape is read the slow way, and what it taught us is kept as a
# *plan*: which words are values (an address, a port, a comment, the chain jumped to) and
# which part of the rule each one makes. A plan applies to another line when that line has
# the same number of words and the same words everywhere else; the parser's decisions only
# ever depend on those other words, so the line then reads exactly as the first one did,
# with its own values. Each value is still checked by the same functions as on the slow
# path, and identical values (the same port, the same DNAT target) are converted once.
# Anything unusual (a bad value, a mixed family) falls back to the slow reader, which gives
# the exact error.
#
# Plans are found by a cheap hint -- (first option's index, number of words, first option)
# -- and the few plans sharing a hint are tried in turn; the check of the other words is
# what makes a plan apply, so a hint that collides only costs time, never correctness.

_PLANS_PER_HINT = 8  # enough for any real dump; more shapes per hint just read slowly


class _Plan:
    """How to read every rule of one shape, learnt from the first one (:meth:`learn`).

    Each part of the rule is either a constant (the same object for every rule of the shape)
    or made from value words at known token indexes, through a memo (see "shared values"):
    the words already met give the part already made.
    """

    __slots__ = ("counters", "dst", "iif", "jump_at", "kind", "literals", "modules", "oif",
                 "proto", "src", "target", "version", "where", "words")

    @classmethod
    def learn(cls, toks: list[str], start: int, b: _Builder, rule: Rule) -> _Plan:
        plan = cls()
        slots: set[int] = set()  # the token indexes this plan reads as values
        plan.proto, plan.where, plan.counters = b.proto, b.where, b.counters
        plan.src = plan.dst = plan.iif = plan.oif = plan.version = None
        for field, k in b.addr_at:
            match = getattr(b, field)
            setattr(plan, field, (match.negated, k))
            plan.version = match.version
            slots.add(k)
        for field in ("iif", "oif"):
            match = getattr(b, field)
            if match is not None:
                k = b.where[field] + 1  # the option is at where[field], its value follows
                setattr(plan, field, (match.negated, k))
                slots.add(k)
        modules = []
        for (name, opts, at), made in zip(b.modules, rule.modules, strict=True):
            specs = tuple((key_, neg, k) for key_, (neg, _, k) in opts.items())
            if not specs:
                modules.append((made, None, None, None))
                continue
            values = itemgetter(*(k for _, _, k in specs))
            memo = _memo(("module", name, tuple((key_, neg) for key_, neg, _ in specs)))
            memo[values(toks)] = made
            modules.append((None, values, memo, _module_maker(name, at, specs)))
            slots.update(k for _, _, k in specs)
        plan.modules = tuple(modules)
        target = rule.target
        plan.kind, plan.jump_at = type(target), None  # a shape keeps its kind of target
        if isinstance(target, Jump):
            k = plan.jump_at = b.where["target"]
            plan.target = (None, k, None, None, None, ())
            slots.add(k)
        elif not any(opt not in _FLAG_OPTIONS for opt in b.target_opts):
            plan.target = (target, None, None, None, None, ())
        else:
            specs = tuple((opt, k, opt in _FLAG_OPTIONS) for opt, (_, k) in b.target_opts.items())
            ks = [k for _, k, flag in specs if not flag]
            slots.update(ks)
            values = itemgetter(*ks)
            memo = _memo(("target", b.target, tuple((opt, flag) for opt, _, flag in specs)))
            memo[(values(toks), b.family)] = target
            plan.target = (None, values, memo, b.target, b.where["target"], specs)
        # Every word that is not a value must be the same in each rule of the shape.
        # (itemgetter picks them all out in one C call; with one index it returns the word
        # itself rather than a 1-tuple, which compares just as well.)
        plan.words = itemgetter(*(k for k in range(start, len(toks)) if k not in slots))
        plan.literals = plan.words(toks)
        return plan

    def read(self, toks: list[str], family: str | None) -> Rule:
        """The rule on a line of this shape (``family``: the document's so far). Raises
        ``_Bad`` for any value it cannot take; the caller then reads the line the slow way."""
        src = dst = iif = oif = None
        # Addresses: a memo hit costs no call (a match is never false, so `or` falls through
        # only on a miss). Both must be of the family the plan was learnt in, which is the
        # document's: a plan with addresses is only learnt once the family is known.
        if self.src is not None:
            negated, k = self.src
            src = _ADDR_MEMOS[negated].get(toks[k]) or _addr_match(negated, toks[k], k)
            if src.version != self.version:
                raise _Bad(k, "mixed families", "")  # the slow reader words this error
        if self.dst is not None:
            negated, k = self.dst
            dst = _ADDR_MEMOS[negated].get(toks[k]) or _addr_match(negated, toks[k], k)
            if dst.version != self.version:
                raise _Bad(k, "mixed families", "")
        if self.iif is not None:
            iif = _iface_match(toks[self.iif[1]], self.iif[0], self.iif[1])
        if self.oif is not None:
            oif = _iface_match(toks[self.oif[1]], self.oif[0], self.oif[1])
        modules = []
        for made, values, memo, make in self.modules:
            if made is None:
                key = values(toks)
                made = memo.get(key)
                if made is None:
                    made = make(toks)
                    memo[key] = made
            modules.append(made)
        target, values, memo, name, at, specs = self.target
        if target is None:
            if name is None:  # a jump: ``values`` is the index of the chain's name
                chain = toks[values]
                target = _JUMPS.get(chain)
                if target is None:
                    if chain in _TARGET_OPTIONS:  # -j ACCEPT where the first rule had -j CHAIN
                        raise _Bad(values, "a built-in target, not a chain", "")
                    target = _jump(chain)
            else:
                key = (values(toks), family)  # family: TPROXY's default --on-ip
                target = memo.get(key)
                if target is None:
                    opts = {opt: ("", k) if flag else (toks[k], k) for opt, k, flag in specs}
                    target = _target(name, opts, at, family)
                    memo[key] = target
        return _new_rule(target, src, dst, iif, oif, self.proto, tuple(modules))


def _module_maker(name: str, at: int, specs: tuple) -> Callable[[list[str]], object]:
    """A function making the module ``-m name`` from a line's words, for a plan; ``specs``
    lists its options as (option, negated, token index of the value)."""
    if name in ("tcp", "udp"):  # the most common module, made without the option dict
        where = {opt: (neg, k) for opt, neg, k in specs}
        sport, dport = where.get("--sport"), where.get("--dport")
        if sport is None and dport is not None:  # just --dport: the usual rule
            negated, k = dport

            def make_dport(toks: list[str]) -> PortMatch:
                return _new_ports(name, None, _new_range(negated, *_port_range(toks[k], k)))
            return make_dport

        def make_ports(toks: list[str]) -> PortMatch:
            return _port_match(name, sport and (sport[0], toks[sport[1]], sport[1]),
                               dport and (dport[0], toks[dport[1]], dport[1]))
        return make_ports

    if name == "comment":  # kube-proxy comments every rule; a plan never has "! --comment"
        (_, _, k), = specs

        def make_comment(toks: list[str]) -> CommentMatch:
            return CommentMatch(toks[k])
        return make_comment

    def make(toks: list[str]):
        return _module(name, {opt: (neg, toks[k], k) for opt, neg, k in specs}, at)
    return make


def _read_with_plan(doc: _Doc, toks: list[str], start: int):
    """Read the rule in ``toks[start:]``: with the plan for its shape when there is one,
    else the slow way (and learn a plan). Returns (rule, family, token roles, counters)."""
    if start < len(toks):
        hint = (start, len(toks), toks[start])
        plans = doc.plans.get(hint)
        if plans is None:
            plans = doc.plans[hint] = []
        for plan in plans:
            if plan.words(toks) == plan.literals:
                try:
                    rule = plan.read(toks, doc.family)
                except _Bad:
                    break  # a value the plan cannot take: the slow reader names the problem
                return rule, doc.family, plan.where, plan.counters
    b = _read_rule(toks, start, doc.family)
    rule = _finish(b)
    if start < len(toks) and len(plans) < _PLANS_PER_HINT:
        plans.append(_Plan.learn(toks, start, b, rule))
    return rule, b.family, b.where, b.counters


def parse_ruleset(text: str, *, family: str | None = None) -> Ruleset:
    """Read ``iptables-save`` output, an ``iptables-restore`` document, or ``iptables``
    command lines (or a mix) into a :class:`Ruleset`. Raises :class:`RulesParseError`."""
    if family not in (None, "ipv4", "ipv6"):
        raise MeshlabError(f"family must be 'ipv4' or 'ipv6', not {family!r}")
    if not isinstance(text, str):
        raise MeshlabError("rules must be text (str); decode bytes first")
    _trim_memos()
    with _gc_paused():
        return _parse_document(text, _Doc(family))


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause Python's cycle collector while a document is read.

    Reading 20,000 rules makes ~100,000 small objects (rules, matches, tuples) that point at
    each other but never in a cycle, so the cycle collector can free nothing among them. It
    still runs every few hundred new objects, and ever more often re-scans *all* of them as
    they pile up: about a third of the parse time for a big dump. Reference counting frees
    everything as usual; any cycles made meanwhile (there are none here) wait for the next
    collection. The collector is switched back on only if it was on before.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _parse_document(text: str, doc: _Doc) -> Ruleset:
    lines = text.split("\n")  # iptables-restore splits on newlines only
    if lines and lines[-1] == "":
        lines.pop()
    chains = None  # the open table's chains (doc.open changes only in _line)
    for lineno, raw in enumerate(lines, 1):
        try:
            if raw[:3] == "-A " and chains is not None:
                # The usual line, a rule appended in an open *table section: none of
                # _line's other cases can apply, and splitting needs no stripping first.
                toks = raw.split() if '"' not in raw and "'" not in raw else _split(raw)
                if not _append(doc, doc.open[0], chains, toks, lineno, raw):
                    _command(doc, doc.open[0], toks, 0, lineno, raw, None, 0)
                continue
            line = raw.strip(_BLANK)
            if not line or line[0] == "#":
                continue
            if line[0] == ":":  # a chain header (10,000 of them in a kube-proxy dump)
                _header(doc, line, lineno)
                continue
            _line(doc, line, lineno, raw)
            chains = None if doc.open is None else doc.tables[doc.open[0]]
        except _Bad as bad:
            raise _error(bad, lineno, raw) from None
    if doc.open is not None:
        tname, opened = doc.open
        last = len(lines)
        raise RulesParseError(
            f"the *{tname} section opened on line {opened} has no COMMIT (is the file cut short?)",
            line=last, column=len(lines[-1].rstrip(_BLANK)) + 1, token="",
            hint="end every table section with a line COMMIT", source=lines[-1].rstrip(_BLANK))
    return check_and_build(doc.family or "ipv4", doc.tables, doc.policy_counters, doc.notes)


def _line(doc: _Doc, line: str, lineno: int, raw: str) -> None:
    first = line[0]
    if first == "*":
        name = line[1:].strip()
        if doc.open is not None:
            raise _Bad(0, f"*{name} starts before the *{doc.open[0]} section (line "
                       f"{doc.open[1]}) was committed", "add a COMMIT line before it")
        if name not in BUILTIN_CHAINS:
            raise _Bad(0 if line[1:2].strip() else 1, f"unknown table {name!r}",
                       "use one of " + ", ".join(BUILTIN_CHAINS))
        doc.table(name)
        doc.open = (name, lineno)
        return
    if line == "COMMIT":
        if doc.open is None:
            raise _Bad(0, "COMMIT without a table", "start the section with *nat (or another "
                       "table) first")
        doc.open = None
        return
    if first == ":":
        _header(doc, line, lineno)
        return
    toks = _split(line)
    if first == "[":
        counters = _counters_prefix(toks[0])
        toks = toks[1:]
        offset = 1
    else:
        counters, offset = None, 0
    # "tables" in ...: a cheap test first, as almost every line is a rule, not a command
    if toks and "tables" in toks[0] and toks[0].rsplit("/", 1)[-1] in _COMMANDS:
        if doc.open is not None:
            raise _Bad(0, "an iptables command line inside a *table section",
                       "commit the section first, or write the rule as -A CHAIN ...")
        _command_line(doc, toks, lineno, raw)
        return
    if doc.open is None:
        raise _Bad(offset, "a rule outside any table section",
                   "put *nat (or *filter, *mangle, *raw) before it and COMMIT after it, or "
                   "write it as a command: iptables -t nat -A ...")
    try:
        _command(doc, doc.open[0], toks, 0, lineno, raw, counters, offset)
    except _Bad as bad:
        raise _error(bad, lineno, raw, offset) from None


_COMMANDS = ("iptables", "ip6tables", "iptables-legacy", "iptables-nft", "ip6tables-legacy",
             "ip6tables-nft")


def _counters_prefix(tok: str) -> tuple[int, int]:
    packets, _, nbytes = tok[1:-1].partition(":")
    if not (tok.endswith("]") and packets.isdigit() and nbytes.isdigit()):
        raise _Bad(0, f"bad counters {tok!r}", "write counters as [PACKETS:BYTES], e.g. [0:0]")
    return int(packets), int(nbytes)


def _header(doc: _Doc, line: str, lineno: int) -> None:
    if doc.open is None:
        raise _Bad(0, "a chain header outside any table section", "put *TABLE before it")
    toks = line[1:].split()
    tname = doc.open[0]
    chains = doc.table(tname)
    if len(toks) < 2:
        raise _Bad(0, f"chain header {line!r} is incomplete",
                   "write :CHAIN POLICY [0:0], e.g. :ISTIO_OUTPUT - [0:0]")
    name, policy = toks[0], toks[1]
    if name in BUILTIN_CHAINS[tname]:
        if policy not in ("ACCEPT", "DROP"):
            raise _Bad(1, f"built-in chain {name} needs policy ACCEPT or DROP, not {policy!r}",
                       f"write :{name} ACCEPT [0:0]")
        chains[name][0] = policy
        if len(toks) > 2:
            doc.policy_counters[(tname, name, 0)] = _counters_prefix(toks[2])
        return
    if policy != "-":
        raise _Bad(1, f"user chain {name} cannot have a policy ({policy!r})",
                   f"write :{name} - [0:0]; only built-in chains have policies")
    _new_chain(chains, name, tname, 0)


def _new_chain(chains: dict, name: str, tname: str, index: int) -> None:
    if name in chains:
        raise _Bad(index, f"chain {name} already exists in table {tname}",
                   "declare each chain once")
    if not name or len(name) > 28 or name.startswith("-") or name == "!":
        raise _Bad(index, f"bad chain name {name!r}", "chain names have 1 to 28 characters and "
                   "do not start with '-'")
    chains[name] = [None, [], [], []]


def _command_line(doc: _Doc, toks: list[str], lineno: int, raw: str) -> None:
    """``iptables [-t TABLE] -A|-I|-N|-P ...``: a command as a person types it."""
    family = "ipv6" if "ip6tables" in toks[0] else "ipv4"
    if doc.family is None:
        doc.family = family
    elif doc.family != family:
        raise _error(_Bad(0, f"{toks[0]} in {doc.family} rules",
                          "keep iptables and ip6tables rules apart"), lineno, raw)
    rest, table, i = [], "filter", 1
    while i < len(toks):
        if toks[i] in ("-t", "--table"):
            if i + 1 >= len(toks):
                raise _error(_Bad(i + 1, "-t needs a table name", "write -t nat"), lineno, raw)
            table = toks[i + 1]
            if table not in BUILTIN_CHAINS:
                raise _error(_Bad(i + 1, f"unknown table {table!r}",
                                  "use one of " + ", ".join(BUILTIN_CHAINS)), lineno, raw)
            i += 2
            continue
        if toks[i] in ("-w", "--wait") and not rest:
            i += 1
            continue
        rest.append(i)
        i += 1
    if not rest:
        raise _error(_Bad(1, "the command does nothing", "add -A CHAIN ... -j TARGET"), lineno, raw)
    # keep token indexes of the original line for error columns: re-index via a mapping
    sub = [toks[j] for j in rest]
    try:
        _command(doc, table, sub, 0, lineno, raw, None, 0)
    except _Bad as bad:
        index = rest[bad.index] if bad.index < len(rest) else len(toks)
        raise _error(_Bad(index, bad.message, bad.hint), lineno, raw) from None


def _command(doc: _Doc, tname: str, toks: list[str], i: int, lineno: int, raw: str,
             counters: tuple[int, int] | None, offset: int) -> None:
    chains = doc.table(tname)
    cmd = toks[i] if toks else ""
    if cmd == "-A":  # by far the most common: straight to the rule
        name = _need(toks, i, cmd)
        chain = chains.get(name)
        if chain is not None:
            _store(doc, tname, chain, None, toks, i + 2, lineno, raw, counters, offset)
            return
    if cmd in ("-N", "--new-chain"):
        _new_chain(chains, _need(toks, i, cmd), tname, i + 1)
        if len(toks) > i + 2:
            raise _Bad(i + 2, f"unexpected {toks[i + 2]!r} after -N CHAIN", "remove it")
        return
    if cmd in ("-P", "--policy"):
        name = _need(toks, i, cmd)
        if name not in BUILTIN_CHAINS[tname]:
            raise _Bad(i + 1, f"{name} is not a built-in chain of {tname}",
                       "only built-in chains have a policy")
        policy = toks[i + 2] if len(toks) > i + 2 else ""
        if policy not in ("ACCEPT", "DROP"):
            raise _Bad(i + 2, f"policy must be ACCEPT or DROP, not {policy!r}",
                       f"write -P {name} ACCEPT")
        chains[name][0] = policy
        return
    if cmd not in ("-A", "--append", "-I", "--insert"):
        raise _Bad(i, f"unknown command {cmd!r}" if cmd else "empty rule",
                   "this model reads -A CHAIN, -I CHAIN [N], -N CHAIN and -P CHAIN POLICY")
    name = _need(toks, i, cmd)
    chain = chains.get(name)
    if chain is None:
        raise _Bad(i + 1, f"chain {name} does not exist in table {tname}",
                   f"declare it first with :{name} - [0:0] (or -N {name})")
    start, position = i + 2, len(chain[1])
    if cmd in ("-I", "--insert"):
        position = 0
        if start < len(toks) and toks[start].isdigit():
            position = int(toks[start]) - 1
            if not 0 <= position <= len(chain[1]):
                raise _Bad(start, f"cannot insert at {toks[start]}: {name} has "
                           f"{len(chain[1])} rules", f"use a number from 1 to {len(chain[1]) + 1}")
            start += 1
    _store(doc, tname, chain, None if cmd in ("-A", "--append") else position, toks, start,
           lineno, raw, counters, offset)


def _append(doc: _Doc, tname: str, chains: dict[str, list], toks: list[str], lineno: int,
            raw: str) -> bool:
    """``-A CHAIN ...`` in the open table (``tname``, ``chains``), read with the plan for its
    shape: the path of almost every line of a dump, kept free of other calls. False when this
    is not that simple case (no such chain, no plan yet, an odd value): :func:`_command` then
    reads it."""
    n = len(toks)
    if n < 3:
        return False
    chain = chains.get(toks[1])
    plans = doc.plans.get((2, n, toks[2]))
    if chain is None or plans is None:
        return False
    for plan in plans:
        if plan.words(toks) == plan.literals:
            try:
                rule = plan.read(toks, doc.family)
            except _Bad:
                return False
            chain[1].append(rule)
            chain[2].append((lineno, raw, plan.where, 0, plan.counters))  # a validate.Place
            # (the plan's roles and counters were noted when its first rule was stored)
            if plan.jump_at is not None:
                chain[3].append(toks[plan.jump_at])
            elif plan.kind in LIMITED_TARGETS:
                doc.notes.limited.add((tname, plan.kind))
            return True
    return False


def _store(doc: _Doc, tname: str, chain: list, position: int | None, toks: list[str],
           start: int, lineno: int, raw: str, counters: tuple[int, int] | None,
           offset: int) -> None:
    """Read the rule in ``toks[start:]`` and put it in ``chain`` (of table ``tname``) at
    ``position`` (None: append), with where it was written; note what the checks want."""
    rule, family, roles, rule_counters = _read_with_plan(doc, toks, start)
    if doc.family is None:
        doc.family = family
    where = (lineno, raw, roles, offset, counters or rule_counters)  # a validate.Place
    if position is None:
        chain[1].append(rule)
        chain[2].append(where)
    else:
        chain[1].insert(position, rule)
        chain[2].insert(position, where)
    kind = type(rule.target)
    if kind is Jump:
        chain[3].append(rule.target.chain)  # the checks only need which, not in what order
    elif kind in LIMITED_TARGETS:
        doc.notes.limited.add((tname, kind))
    if where[4] is not None:
        doc.notes.counters = True
    if "owner" in roles or "iif" in roles or "oif" in roles:
        doc.notes.roles = True


def parse_rule_spec(text: str) -> tuple[str | None, str | None, Rule]:
    """``[-t TABLE] [-A CHAIN] OPTIONS`` -> (table or None, chain or None, rule)."""
    if not isinstance(text, str):
        raise MeshlabError("a rule must be text (str)")
    _trim_memos()
    try:
        toks = _split(text.strip())
        table = chain = None
        i = 0
        if toks and toks[0] in ("iptables", "ip6tables"):
            i = 1
        while i + 1 < len(toks) and toks[i] in ("-t", "--table", "-A", "--append"):
            if toks[i] in ("-t", "--table"):
                table = toks[i + 1]
                if table not in BUILTIN_CHAINS:
                    raise _Bad(i + 1, f"unknown table {table!r}",
                               "use one of " + ", ".join(BUILTIN_CHAINS))
            else:
                chain = toks[i + 1]
            i += 2
        return table, chain, _finish(_read_rule(toks, i, None))
    except _Bad as bad:
        raise _error(bad, 1, text) from None


def parse_rule(text: str) -> Rule:
    """One rule in restore form, e.g. ``-p tcp --dport 80 -j RETURN`` (an ``-A CHAIN``
    prefix is accepted and ignored)."""
    return parse_rule_spec(text)[2]
