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

Speed: a line without quotes is split with :meth:`str.split`; options are dispatched through a
dict; repeated values (addresses, targets) are built once and shared.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import ip_address, ip_network

from meshlab.errors import MeshlabError
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

__all__ = ["RulesParseError", "parse_rule", "parse_rule_spec", "parse_ruleset"]


class RulesParseError(MeshlabError):
    """Rules text that iptables would refuse (or that this model does not know).

    ``line`` and ``column`` are 1-based; ``token`` is the offending word ("" at end of input).
    """

    def __init__(self, message: str, *, line: int, column: int, token: str, hint: str,
                 source: str = "") -> None:
        self.line, self.column, self.token, self.hint = line, column, token, hint
        self.reason = message
        text = f"line {line}, column {column}: {message}"
        if source:
            text += f"\n    {source}\n    {' ' * (column - 1)}^"
        text += f"\n  fix: {hint}"
        super().__init__(text)


_END = 1 << 30  # a token index past the end of any line: the error points after the last word


class _Bad(Exception):
    """Raised inside a rule with the index of the offending token; turned into a
    :class:`RulesParseError` by the caller, which knows the line."""

    def __init__(self, index: int, message: str, hint: str, column: int | None = None) -> None:
        super().__init__(message)
        self.index, self.message, self.hint, self.column = index, message, hint, column


# --------------------------------------------------------------------------- tokens


def _split(line: str) -> list[str]:
    """Words of a line. Fast paths: no quotes at all, or simple ``"..."`` strings standing
    alone (what ``iptables-save`` prints for comments); anything else takes the slow path."""
    if '"' not in line and "'" not in line:
        return line.split()
    if "'" not in line and "\\" not in line:
        parts = line.split('"')
        last = len(parts) - 1
        if last % 2 == 0:
            out: list[str] = []
            for k, part in enumerate(parts):
                if k % 2:
                    out.append(part)
                elif (0 < k < last and not part) or (
                        part and ((k > 0 and part[0] not in _BLANK)
                                  or (k < last and part[-1] not in _BLANK))):
                    break  # a quote glued to other characters: let the slow path decide
                else:
                    out.extend(part.split())
            else:
                return out
    return [tok for tok, _ in _tokens_with_columns(line)]


_BLANK = " \t\r\v\f"


def _tokens_with_columns(line: str) -> list[tuple[str, int]]:
    """Shell-like words with their 1-based start columns (double quotes with ``\\`` escapes,
    single quotes verbatim). An unterminated quote raises ``_Bad``."""
    out: list[tuple[str, int]] = []
    i, n = 0, len(line)
    while i < n:
        if line[i] in _BLANK:
            i += 1
            continue
        start, word = i, []
        while i < n and line[i] not in _BLANK:
            ch = line[i]
            if ch in "\"'":
                close = i + 1
                while close < n and line[close] != ch:
                    if ch == '"' and line[close] == "\\" and close + 1 < n:
                        word.append(line[close + 1])
                        close += 2
                        continue
                    word.append(line[close])
                    close += 1
                if close >= n:
                    raise _Bad(len(out), f"unterminated {ch} quote", f"close the quote with {ch}",
                               column=i + 1)
                i = close + 1
            else:
                word.append(ch)
                i += 1
        out.append(("".join(word), start + 1))
    return out


# --------------------------------------------------------------------------- values


def _port(tok: str, i: int) -> int:
    if tok.isdigit() and tok.isascii() and int(tok) <= 65535:
        return int(tok)
    raise _Bad(i, f"bad port {tok!r}", "give a port number from 0 to 65535 (names like "
               "'http' are not read)")


def _port_range(tok: str, i: int, sep: str = ":") -> tuple[int, int]:
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


_ADDR_CACHE: dict[str, tuple[int, int, int]] = {}
_OCTET = {str(n): n for n in range(256)}  # "010" is not an octet here, as in iptables
_PLEN = {str(n): n for n in range(129)}
_ADDR_HINT = ("give an IP address or CIDR such as 10.0.0.0/8 or fd00::/64 (host names and "
              "lists are not read; write one rule per address)")


def _address(tok: str, i: int) -> tuple[int, int, int]:
    """``ADDR[/LEN]`` or ``ADDR/NETMASK`` -> (version, masked network int, prefix length)."""
    cached = _ADDR_CACHE.get(tok)
    if cached is not None:
        return cached
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
    result = (version, value & mask, plen)
    if len(_ADDR_CACHE) < 200_000:
        _ADDR_CACHE[tok] = result
    return result


# --------------------------------------------------------------------------- one rule


class _Builder:
    """A rule being read: plain attributes, turned into a frozen :class:`Rule` at the end."""

    __slots__ = ("counters", "dst", "family", "iif", "modules", "oif", "proto", "src",
                 "target", "target_opts", "where")

    def __init__(self, family: str | None) -> None:
        self.family = family
        self.src = self.dst = self.iif = self.oif = self.proto = self.target = None
        self.modules: list[list] = []  # [name, option dict, token index]
        self.target_opts: dict[str, tuple[str, int]] = {}
        self.counters: tuple[int, int] | None = None
        self.where: dict[str, int] = {}


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
    version, net, plen = _address(_need(toks, i, opt), i + 1)
    family = "ipv4" if version == 4 else "ipv6"
    if b.family is None:
        b.family = family
    elif b.family != family:
        raise _Bad(i + 1, f"{toks[i + 1]} is an {family} address in {b.family} rules",
                   "keep IPv4 and IPv6 rules in separate files (iptables / ip6tables)")
    setattr(b, field, AddrMatch(neg, version, net, plen))
    return i + 2


def _opt_iface(b: _Builder, toks: list[str], i: int, neg: bool) -> int:
    opt = toks[i]
    field = "iif" if opt in ("-i", "--in-interface") else "oif"
    name = _need(toks, i, opt)
    if len(name) > 15 or "/" in name:
        raise _Bad(i + 1, f"bad interface name {name!r}", "interface names have at most 15 "
                   "characters, e.g. eth0, lo or eth+")
    setattr(b, field, IfaceMatch(neg, name))
    b.where[field] = i
    return i + 2


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
_TARGET_TABLES = {"REDIRECT": ("nat",), "DNAT": ("nat",), "TPROXY": ("mangle",),
                  "CT": ("raw",)}
_TARGET_HOOKS = {"REDIRECT": ("PREROUTING", "OUTPUT"), "DNAT": ("PREROUTING", "OUTPUT"),
                 "TPROXY": ("PREROUTING",)}


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
    return Rule(_target(b), b.src, b.dst, b.iif, b.oif, b.proto, modules)


def _module(name: str, opts: dict, at: int):
    if name in ("tcp", "udp"):
        ranges = {}
        for key in ("--sport", "--dport"):
            if key in opts:
                neg, value, i = opts[key]
                lo, hi = _port_range(value, i)
                ranges[key] = PortRange(neg, lo, hi)
        return PortMatch(name, ranges.get("--sport"), ranges.get("--dport"))
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


_SIMPLE_TARGETS = {name: Verdict(name) for name in ("ACCEPT", "DROP", "RETURN")}
_SIMPLE_TARGETS["TRACE"] = Log("TRACE")


def _target(b: _Builder):
    name, opts = b.target, b.target_opts
    simple = _SIMPLE_TARGETS.get(name)
    if simple is not None:
        return simple
    if name not in _TARGET_OPTIONS:
        return Jump(name)  # checked against the table's chains once the table is complete
    at = b.where["target"]
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
            return Dnat(ip_address(host), ports)
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
        on_ip = ip_address("::" if b.family == "ipv6" else "0.0.0.0")
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


@dataclass
class _Where:
    """Where a rule was written, to point at it if a later check fails."""

    line: int
    text: str
    tokens: dict[str, int]
    offset: int  # index of the rule's first option in the line's tokens
    counters: tuple[int, int] | None = None


class _Doc:
    """The state while reading a document: tables -> chains -> [policy, rules, places]."""

    def __init__(self, family: str | None) -> None:
        self.family = family
        self.tables: dict[str, dict[str, list]] = {}
        self.policy_counters: dict[tuple[str, str, int], tuple[int, int]] = {}
        self.open: tuple[str, int] | None = None  # table and the line that opened it

    def table(self, name: str) -> dict[str, list]:
        chains = self.tables.get(name)
        if chains is None:
            chains = self.tables[name] = {c: ["ACCEPT", [], []] for c in BUILTIN_CHAINS[name]}
        return chains


def _error(bad: _Bad, lineno: int, raw: str, offset: int = 0) -> RulesParseError:
    try:
        cols = _tokens_with_columns(raw)
    except _Bad:
        cols = []
    index = bad.index + offset
    if bad.column is not None:
        token, column = raw[bad.column - 1:].split(None, 1)[0], bad.column
    elif index < len(cols):
        token, column = cols[index]
    else:
        token, column = "", len(raw.rstrip(_BLANK)) + 1
    return RulesParseError(bad.message, line=lineno, column=column, token=token, hint=bad.hint,
                           source=raw.rstrip(_BLANK))


def parse_ruleset(text: str, *, family: str | None = None) -> Ruleset:
    """Read ``iptables-save`` output, an ``iptables-restore`` document, or ``iptables``
    command lines (or a mix) into a :class:`Ruleset`. Raises :class:`RulesParseError`."""
    if family not in (None, "ipv4", "ipv6"):
        raise MeshlabError(f"family must be 'ipv4' or 'ipv6', not {family!r}")
    if not isinstance(text, str):
        raise MeshlabError("rules must be text (str); decode bytes first")
    doc = _Doc(family)
    lines = text.split("\n")  # iptables-restore splits on newlines only
    if lines and lines[-1] == "":
        lines.pop()
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip(_BLANK)
        if not line or line[0] == "#":
            continue
        try:
            _line(doc, line, lineno, raw)
        except _Bad as bad:
            raise _error(bad, lineno, raw) from None
    if doc.open is not None:
        tname, opened = doc.open
        last = len(lines)
        raise RulesParseError(
            f"the *{tname} section opened on line {opened} has no COMMIT (is the file cut short?)",
            line=last, column=len(lines[-1].rstrip(_BLANK)) + 1, token="",
            hint="end every table section with a line COMMIT", source=lines[-1].rstrip(_BLANK))
    return _check_and_build(doc)


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
    if toks and toks[0].rsplit("/", 1)[-1] in ("iptables", "ip6tables", "iptables-legacy",
                                               "iptables-nft", "ip6tables-legacy",
                                               "ip6tables-nft"):
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
    chains[name] = [None, [], []]


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
    b = _read_rule(toks, start, doc.family)
    rule = _finish(b)
    if doc.family is None:
        doc.family = b.family
    where = _Where(lineno, raw, b.where, offset, counters or b.counters)
    if cmd in ("-A", "--append"):
        chain[1].append(rule)
        chain[2].append(where)
    else:
        chain[1].insert(position, rule)
        chain[2].insert(position, where)


def _check_and_build(doc: _Doc) -> Ruleset:
    """The kernel's load-time checks, then the immutable :class:`Ruleset`."""
    counters: dict[tuple[str, str, int], tuple[int, int]] = dict(doc.policy_counters)
    for tname, chains in doc.tables.items():
        for cname, (_, rules, places) in chains.items():
            for index, (rule, where) in enumerate(zip(rules, places, strict=True), 1):
                _check_target(tname, chains, rule, where)
                if where.counters is not None:
                    counters[(tname, cname, index)] = where.counters
        hooks = _reaching_hooks(tname, chains)
        for cname, (_, rules, places) in chains.items():
            for rule, where in zip(rules, places, strict=True):
                _check_hooks(tname, cname, hooks.get(cname, frozenset()), rule, where)
    family = doc.family or "ipv4"
    return Ruleset.from_chains(
        family, {t: {c: (p, r) for c, (p, r, _) in chains.items()}
                 for t, chains in doc.tables.items()}, counters)


def _fail(where: _Where, key: str, message: str, hint: str) -> RulesParseError:
    index = where.tokens.get(key, 0)
    return _error(_Bad(index, message, hint), where.line, where.text, where.offset)


def _check_target(tname: str, chains: dict, rule: Rule, where: _Where) -> None:
    target = rule.target
    if isinstance(target, Jump):
        if target.chain not in chains:
            raise _fail(where, "target", f"chain or target {target.chain!r} does not exist in "
                        f"table {tname}", f"declare it with :{target.chain} - [0:0] (or -N), or "
                        "check the spelling of the target")
        if chains[target.chain][0] is not None:
            raise _fail(where, "target", f"cannot jump to the built-in chain {target.chain}",
                        "jump to a user chain instead")
    allowed = _TARGET_TABLES.get(target.name)
    if allowed is not None and tname not in allowed:
        raise _fail(where, "target", f"{target.name} is only valid in the {allowed[0]} table, "
                    f"not {tname}", f"move the rule to *{allowed[0]}")


def _reaching_hooks(tname: str, chains: dict) -> dict[str, frozenset[str]]:
    """Which built-in hooks can reach each chain; refuses loops (A -> B -> A) as the kernel."""
    reach: dict[str, set[str]] = {}
    for hook in BUILTIN_CHAINS[tname]:
        stack = [(hook, (hook,))]
        while stack:
            cname, path = stack.pop()
            reach.setdefault(cname, set()).add(hook)
            for rule, where in zip(chains[cname][1], chains[cname][2], strict=True):
                if isinstance(rule.target, Jump) and rule.target.chain in chains:
                    nxt = rule.target.chain
                    if nxt in path:
                        raise _fail(where, "target", "chain loop: " + " -> ".join(
                            (*path[path.index(nxt):], nxt)) + " (the kernel refuses it)",
                            f"remove the jump from {cname} to {nxt}")
                    stack.append((nxt, (*path, nxt)))
    # user chains that no hook reaches are still checked for loops
    for cname in chains:
        if cname not in reach:
            _loop_check(cname, chains, (cname,), set())
    return {c: frozenset(h) for c, h in reach.items()}


def _loop_check(cname: str, chains: dict, path: tuple[str, ...], done: set[str]) -> None:
    for rule, where in zip(chains[cname][1], chains[cname][2], strict=True):
        if isinstance(rule.target, Jump) and rule.target.chain in chains:
            nxt = rule.target.chain
            if nxt in path:
                raise _fail(where, "target", "chain loop: " + " -> ".join(
                    (*path[path.index(nxt):], nxt)) + " (the kernel refuses it)",
                    f"remove the jump from {cname} to {nxt}")
            if nxt not in done:
                _loop_check(nxt, chains, (*path, nxt), done)
    done.add(cname)


def _check_hooks(tname: str, cname: str, hooks: frozenset[str], rule: Rule,
                 where: _Where) -> None:
    incoming = hooks & {"PREROUTING", "INPUT", "FORWARD"}
    if rule.owner_match and incoming:
        reached = "" if cname in incoming else (
            f", which is reached from {'/'.join(sorted(incoming))}")
        raise _fail(where, "owner", f"-m owner cannot be used in {tname} {cname}{reached}: "
                    "only locally generated packets have an owner, and iptables refuses the "
                    "rule", "move the owner match to an OUTPUT or "
                    "POSTROUTING chain")
    if rule.iif is not None and cname in ("OUTPUT", "POSTROUTING"):
        raise _fail(where, "iif", f"cannot use -i in {cname}: packets there have no input "
                    "interface yet", "use -o here, or move the rule to PREROUTING/INPUT")
    if rule.oif is not None and cname in ("PREROUTING", "INPUT"):
        raise _fail(where, "oif", f"cannot use -o in {cname}: packets there have no output "
                    "interface yet", "use -i here, or move the rule to OUTPUT/POSTROUTING")
    allowed = _TARGET_HOOKS.get(rule.target.name)
    if allowed is not None and hooks - set(allowed):
        raise _fail(where, "target", f"{rule.target.name} is only valid in "
                    f"{' and '.join(allowed)}, but {tname} {cname} is reached from "
                    f"{'/'.join(sorted(hooks - set(allowed)))}",
                    f"move the rule to a chain reached from {' or '.join(allowed)}")


def parse_rule_spec(text: str) -> tuple[str | None, str | None, Rule]:
    """``[-t TABLE] [-A CHAIN] OPTIONS`` -> (table or None, chain or None, rule)."""
    if not isinstance(text, str):
        raise MeshlabError("a rule must be text (str)")
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
