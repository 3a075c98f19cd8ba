"""Reading one rule's options (``-p tcp -m tcp --dport 80 -j REDIRECT --to-ports 15001``)
into its matches and target: the rule decision, in one place.

This is where iptables' option grammar lives. :func:`read_rule` walks the words of one rule
like ``getopt``: each basic option (``-s``, ``-d``, ``-i``, ``-o``, ``-p``, ``-m``, ``-j``,
``-c``) is dispatched through a dict to a small handler; an option of a loaded ``-m`` module
(``--dport`` after ``-m tcp``, ``--uid-owner`` after ``-m owner``, ...) or of the chosen
target (``--to-ports`` after ``-j REDIRECT``) is collected with its word; anything else is an
error that says which options were known at that point. The words are gathered on a
:class:`RuleDraft` (a rule being read); :func:`finish_rule` then turns it into a frozen
:class:`~meshlab.netfilter.rules.Rule`, reading each collected value with
:mod:`meshlab.netfilter.values` (:func:`make_module`, :func:`make_target`). Like iptables,
it keeps what the kernel keeps: ``-p tcp --dport`` loads ``-m tcp`` implicitly, a second
``-m tcp`` adds nothing, the five ``MARK`` spellings become one xor form.

Errors are raised as :class:`~meshlab.netfilter.source.Bad` with the offending word's index;
the document reader (:mod:`meshlab.netfilter.parse`) knows the line and turns them into a
:class:`~meshlab.netfilter.source.RulesParseError`.
"""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import ip_address

from meshlab.netfilter.packet import IPAddress
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
    Module,
    MultiportMatch,
    OwnerMatch,
    PortMatch,
    PortRange,
    ProtoMatch,
    Redirect,
    Rule,
    SetMark,
    Target,
    Tproxy,
    Verdict,
)
from meshlab.netfilter.source import END, Bad
from meshlab.netfilter.values import (
    read_address,
    read_decimal_port,
    read_id_range,
    read_ip,
    read_number,
    read_port_range,
    read_value_mask,
)


class RuleDraft:
    """A rule being read: what its options said so far, in plain attributes, turned into a
    frozen :class:`Rule` by :func:`finish_rule` once every word is read."""

    __slots__ = ("counters", "dst", "family", "iif", "modules", "oif",
                 "proto", "src", "target", "target_opts", "where")

    def __init__(self, family: str | None) -> None:
        self.family = family  # the document's so far; the rule's once an address says so
        self.src: AddrMatch | None = None
        self.dst: AddrMatch | None = None
        self.iif: IfaceMatch | None = None
        self.oif: IfaceMatch | None = None
        self.proto: ProtoMatch | None = None
        self.modules: list[list] = []  # [name, {option: (negated, value, index)}, index of -m]
        self.target: str | None = None  # the word after -j
        self.target_opts: dict[str, tuple[str, int]] = {}  # {option: (value, index of value)}
        self.counters: tuple[int, int] | None = None  # -c PACKETS BYTES
        self.where: dict[str, int] = {}
        """Token index of each part given, by role: "src", "dst", "iif", "oif" (the option;
        given even where the kernel keeps no match, as for -d 0/0), "owner" (-m owner),
        "target" (the word after -j). Errors found later point at these."""


def need_value(toks: list[str], i: int, option: str) -> str:
    """The value after an option: like getopt, the next word, whatever it looks like."""
    try:
        return toks[i + 1]
    except IndexError:
        raise Bad(i + 1, f"option {option} needs a value", f"write {option} VALUE (the line "
                  "may be cut short)") from None


def _opt_addr(b: RuleDraft, toks: list[str], i: int, neg: bool) -> int:
    """``[!] -s|-d ADDR[/LEN]`` at ``toks[i]``; like every handler here, returns the index
    of the next option."""
    opt = toks[i]
    field = "src" if opt in ("-s", "--source", "--src") else "dst"
    if field in b.where:
        raise Bad(i, f"{opt} given twice", "keep one; use two rules for two addresses")
    b.where[field] = i
    match = AddrMatch(neg, *read_address(need_value(toks, i, opt), i + 1))
    family = "ipv4" if match.version == 4 else "ipv6"
    if b.family is None:
        b.family = family
    elif b.family != family:
        raise Bad(i + 1, f"{toks[i + 1]} is an {family} address in {b.family} rules",
                  "keep IPv4 and IPv6 rules in separate files (iptables / ip6tables)")
    if match.plen == 0:  # every address: the kernel keeps no address match at all
        if neg:
            raise Bad(i + 1, f"! {opt} {toks[i + 1]} would never match: iptables refuses it",
                      "remove the rule, or the '!'")
        return i + 2
    setattr(b, field, match)
    return i + 2


def _opt_iface(b: RuleDraft, toks: list[str], i: int, neg: bool) -> int:
    """``[!] -i|-o NAME``."""
    opt = toks[i]
    field = "iif" if opt in ("-i", "--in-interface") else "oif"
    if field in b.where:  # iptables: "multiple -i flags not allowed"
        raise Bad(i, f"{opt} given twice", "keep one; use two rules for two interfaces")
    b.where[field] = i  # the load-time checks refuse -i and -o where packets have none
    name = need_value(toks, i, opt)
    if not 0 < len(name) <= 15:  # iptables takes any such name (a "/" only gets a warning)
        raise Bad(i + 1, f"bad interface name {name!r}", "interface names have 1 to 15 "
                  "characters, e.g. eth0, lo or eth+")
    if name != "+" or neg:  # -i + (every name): iptables keeps no interface match at all
        setattr(b, field, IfaceMatch(neg, name))
    return i + 2


_PROTO_NAMES = {"tcp": "tcp", "6": "tcp", "udp": "udp", "17": "udp", "icmp": "icmp",
                "1": "icmp", "icmpv6": "ipv6-icmp", "ipv6-icmp": "ipv6-icmp", "58": "ipv6-icmp",
                "sctp": "sctp", "132": "sctp", "all": "all", "0": "all"}
_PROTOS = {(negated, name): ProtoMatch(negated, name)
           for name in set(_PROTO_NAMES.values()) - {"all"} for negated in (False, True)}
"""Every ``[!] -p`` match there is: immutable values, so one of each serves every rule."""


def _opt_proto(b: RuleDraft, toks: list[str], i: int, neg: bool) -> int:
    """``[!] -p PROTO`` (a name or a number; ``all`` is no match at all)."""
    if b.proto is not None:  # iptables: "multiple -p flags not allowed"
        raise Bad(i, f"{toks[i]} given twice", "keep one; use two rules for two protocols")
    value = need_value(toks, i, toks[i])
    name = _PROTO_NAMES.get(value.lower())
    if name is None:
        raise Bad(i + 1, f"unknown protocol {value!r}", "use tcp, udp, icmp or all")
    if name == "all" and neg:
        raise Bad(i + 1, f"! {toks[i]} {value} would never match: iptables refuses it",
                  "remove the rule, or the '!'")
    b.proto = None if name == "all" else _PROTOS[(neg, name)]
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


def _opt_match(b: RuleDraft, toks: list[str], i: int, neg: bool) -> int:
    """``-m MODULE``: its options (``--dport`` ...) follow and are collected on it."""
    name = need_value(toks, i, toks[i])
    if name not in _MODULE_OPTIONS:
        raise Bad(i + 1, f"unknown match module {name!r}",
                  "this model reads -m " + ", ".join(_MODULE_OPTIONS))
    if name in ("tcp", "udp") and any(m[0] == name for m in b.modules):
        return i + 2  # the kernel keeps one tcp/udp match (-p is checked in finish_rule)
    b.modules.append([name, {}, i])
    if name == "owner":
        b.where["owner"] = i
    return i + 2


def _opt_jump(b: RuleDraft, toks: list[str], i: int, neg: bool) -> int:
    """``-j TARGET``: its options (``--to-ports`` ...) follow."""
    if b.target is not None:
        raise Bad(i, "a rule has one target; -j given twice", "keep one -j")
    b.target = need_value(toks, i, toks[i])
    b.where["target"] = i + 1
    return i + 2


def _opt_counters(b: RuleDraft, toks: list[str], i: int, neg: bool) -> int:
    """``-c PACKETS BYTES``."""
    if i + 2 >= len(toks) or not (toks[i + 1].isdigit() and toks[i + 2].isdigit()):
        raise Bad(i + 1, "-c needs two numbers", "write -c PACKETS BYTES, e.g. -c 0 0")
    b.counters = (int(toks[i + 1]), int(toks[i + 2]))
    return i + 3


_BASIC: dict[str, Callable[[RuleDraft, list[str], int, bool], int]] = {
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

TARGET_OPTIONS: dict[str, tuple[str, ...]] = {
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
FLAG_OPTIONS = ("--save-mark", "--restore-mark", "--notrack")


def read_rule(toks: list[str], start: int, family: str | None) -> RuleDraft:
    """Read rule options ``toks[start:]`` into a draft (then :func:`finish_rule`)."""
    b = RuleDraft(family)
    i, n = start, len(toks)
    while i < n:
        tok = toks[i]
        neg = False
        if tok == "!":
            neg, i = True, i + 1
            if i >= n:
                raise Bad(i, "'!' at the end of the rule", "put '!' before the option it negates")
            tok = toks[i]
            if tok in _NO_NEGATION:
                raise Bad(i, f"{tok} cannot be negated", "remove the '!'")
        handler = _BASIC.get(tok)
        if handler is not None:
            i = handler(b, toks, i, neg)
            continue
        if b.target in TARGET_OPTIONS and tok in TARGET_OPTIONS[b.target]:
            if neg:
                raise Bad(i - 1, f"{tok} cannot be negated", "remove the '!'")
            if tok in b.target_opts:
                raise Bad(i, f"{tok} given twice", "keep one")
            if tok in FLAG_OPTIONS:
                b.target_opts[tok] = ("", i)
                i += 1
            else:
                b.target_opts[tok] = (need_value(toks, i, tok), i + 1)
                i += 2
            continue
        if tok in _OPTION_MODULE:
            i = _module_option(b, toks, i, neg)
            continue
        if tok.startswith("-"):
            known = ["-s", "-d", "-i", "-o", "-p", "-m", "-j"]
            for name, _, _ in b.modules:
                known.extend(_MODULE_OPTIONS[name][:3])
            known.extend(TARGET_OPTIONS.get(b.target or "", ()))
            hint = "check the spelling; options known at this point: " + " ".join(known)
            module = _OPTION_MODULE.get(tok)
            if module is not None:
                hint = f"load its module first: -m {module} {tok} ..."
            elif any(tok in opts for opts in TARGET_OPTIONS.values()):
                hint = f"{tok} is a target option; put it after the -j TARGET it belongs to"
            full = _spelled_out(tok)
            if full:  # getopt takes a word that starts only one long option as that option
                raise Bad(i, f"{tok} may be short for {' or '.join(full)}: iptables takes "
                          "such abbreviations, this model reads options spelled out",
                          f"write {full[0]}", model_limit=True)
            raise Bad(i, f"unknown option {tok!r}", hint)
        raise Bad(i, f"unexpected word {tok!r}", "options start with '-'; quote values that "
                  "contain spaces")
    return b


_LONG_NAMES = {"--destination-port": "--dport", "--source-port": "--sport",
               "--destination-ports": "--dports", "--source-ports": "--sports"}


_LONG_OPTIONS = sorted({opt for opt in (*_BASIC, *_OPTION_MODULE,
                                        *(o for opts in TARGET_OPTIONS.values() for o in opts))
                        if opt.startswith("--")})


def _spelled_out(tok: str) -> list[str]:
    """The long options that ``tok`` (``--dpo``) starts, for the error about it."""
    return [opt for opt in _LONG_OPTIONS if opt.startswith(tok)] if tok[:2] == "--" else []


def _module_option(b: RuleDraft, toks: list[str], i: int, neg: bool) -> int:
    """``[!] --OPTION VALUE`` of a loaded ``-m`` module, collected on the module it belongs
    to (the last loaded one that has it)."""
    tok = toks[i]
    value = need_value(toks, i, tok)
    key = _LONG_NAMES.get(tok, tok)
    if key in ("--dport", "--sport"):
        entry, key = _port_option(b, key, i)
    else:
        for entry in reversed(b.modules):
            if tok in _MODULE_OPTIONS[entry[0]]:
                break
        else:
            raise Bad(i, f"unknown option {tok!r} here",
                      f"load its module first: -m {_OPTION_MODULE[tok]} {tok} ...")
    if entry[0] == "multiport" and (b.proto is None or b.proto.negated
                                    or b.proto.proto not in ("tcp", "udp", "sctp")):
        raise Bad(i, "-m multiport needs -p tcp, udp or sctp before it (iptables: multiport "
                  "only works with TCP, UDP, UDPLITE, SCTP and DCCP)",
                  "put -p tcp (or udp, sctp) before -m multiport, without '!'")
    opts = entry[1]
    if key in opts or (entry[0] == "multiport" and opts):
        raise Bad(i, f"{tok} given twice in one -m {entry[0]}", "keep one, or add another -m "
                  f"{entry[0]}")
    opts[key] = (neg, value, i + 1)
    return i + 2


def _port_option(b: RuleDraft, key: str, i: int) -> tuple[list, str]:
    """The match that takes ``--dport``/``--sport`` (``key``) here, as iptables decides it
    (with ``getopt``, which also takes a word that starts a longer option name): a ``-m
    tcp``/``-m udp`` already loaded, whose own option it is; else a ``-m multiport``, whose
    ``--dports``/``--sports`` it abbreviates; else ``[!] -p tcp|udp`` loads that match now.
    Returns the match's entry and the option's name there."""
    for entry in reversed(b.modules):
        if entry[0] in ("tcp", "udp"):
            return entry, key
    for entry in reversed(b.modules):
        if entry[0] == "multiport":
            return entry, key + "s"
    if b.proto is not None and b.proto.proto in ("tcp", "udp"):
        entry = [b.proto.proto, {}, i]
        b.modules.append(entry)
        return entry, key
    raise Bad(i, f"unknown option {key!r} here", f"add -p tcp (or -p udp) before {key}")


def finish_rule(b: RuleDraft) -> Rule:
    """Turn the draft into the canonical :class:`Rule` (raises ``Bad``), with the checks
    iptables makes once the whole rule is read: ``-m tcp`` (or udp) needs ``-p tcp`` anywhere
    in the rule (even ``! -p tcp``); a port given to REDIRECT or DNAT needs a protocol with
    ports; TPROXY needs ``-p tcp`` or ``-p udp``."""
    proto = None if b.proto is None else b.proto.proto
    for name, _, at in b.modules:
        if name in ("tcp", "udp") and proto != name:
            raise Bad(at + 1, f"-m {name} needs -p {name} (iptables: {name.upper()} match "
                      f"requires '-p {name}')", f"add -p {name}")
    modules = tuple([make_module(name, opts, at) for name, opts, at in b.modules])
    if b.target is None:
        raise Bad(END, "the rule has no target", "end the rule with -j TARGET "
                  "(ACCEPT, DROP, RETURN, a chain name, REDIRECT, ...)")
    at = b.where.get("target", 0)
    target = make_target(b.target, b.target_opts, at, b.family)
    check_target_proto(target, b.proto, at)
    if b.family is None:  # an address given to DNAT or TPROXY says which family
        if type(target) is Dnat:
            b.family = f"ipv{target.ip.version}"
        elif type(target) is Tproxy and "--on-ip" in b.target_opts:
            b.family = f"ipv{target.on_ip.version}"
    return Rule(target, b.src, b.dst, b.iif, b.oif, b.proto, modules)


PORT_PROTOS = ("tcp", "udp", "sctp", "dccp", "icmp")
"""The protocols a REDIRECT or DNAT port can be given for (``! -p tcp`` counts too; ICMP's
query id is NAT's "port", so iptables takes ``-p icmp`` here as well)."""


def check_target_proto(target: object, proto: ProtoMatch | None, at: int) -> None:
    """Refuse, as iptables and the kernel do, a REDIRECT/DNAT port without a protocol that
    has ports, and a TPROXY without ``-p tcp`` or ``-p udp`` (``at``: the target's index)."""
    if isinstance(target, Redirect | Dnat) and target.ports is not None and (
            proto is None or proto.proto not in PORT_PROTOS):
        raise Bad(at, f"{target.name} with a port needs -p tcp, udp, sctp, dccp or icmp "
                  "(iptables: Need TCP, UDP, SCTP or DCCP with port specification)",
                  "add -p tcp before the target, or drop the port")
    if isinstance(target, Tproxy) and (proto is None or proto.negated
                                       or proto.proto not in ("tcp", "udp")):
        raise Bad(at, "TPROXY works only with -p tcp or -p udp: the kernel refuses it",
                  "add -p tcp (or -p udp), without '!'")


def make_module(name: str, opts: dict[str, tuple[bool, str, int]], at: int) -> Module:
    """The match ``-m name`` from its options ``{option: (negated, value, token index)}``
    (``at``: the index of ``-m``)."""
    if name in ("tcp", "udp"):
        return make_port_match(name, opts.get("--sport"), opts.get("--dport"))
    if not opts:
        wanted = " or ".join(_MODULE_OPTIONS[name][:2])
        raise Bad(at, f"-m {name} without its option", f"add {wanted} after -m {name}")
    if name == "multiport":
        (key, (neg, value, i)), = opts.items()
        ports = tuple(read_port_range(p, i) for p in value.split(","))
        if len(ports) > 15:
            raise Bad(i, "multiport takes at most 15 ports", "split the list over two rules")
        return MultiportMatch(neg, key[2:], ports)
    if name == "owner":
        ids = {}
        for key in ("--uid-owner", "--gid-owner"):
            if key in opts:
                neg, value, i = opts[key]
                lo, hi = read_id_range(value, i, key[2:5])
                ids[key] = PortRange(neg, lo, hi)
        return OwnerMatch(ids.get("--uid-owner"), ids.get("--gid-owner"))
    if name in ("mark", "connmark"):
        neg, value, i = opts["--mark"]
        return MarkMatch(name, neg, *read_value_mask(value, i))
    if name == "conntrack":
        neg, value, i = opts["--ctstate"]
        states = frozenset(value.upper().split(","))
        if not states <= set(CT_STATES):
            raise Bad(i, f"unknown conntrack state in {value!r}", "use NEW, ESTABLISHED, "
                      "RELATED, INVALID, UNTRACKED, SNAT or DNAT, separated by commas")
        return ConntrackMatch(neg, states)
    neg, value, i = opts["--comment"]
    if neg:
        raise Bad(i - 2, "--comment cannot be negated", "remove the '!'")
    return CommentMatch(value)


def dnat_target(value: str, i: int, family: str | None) -> Dnat:
    """``-j DNAT --to-destination value`` (the word at index ``i``): ``IP``, ``IP:PORT``,
    ``IP:LO-HI``, or ``[IPv6]:PORT``. ``family`` is the rule's, if known: like iptables, an
    IPv6 address is refused in IPv4 rules and the other way round."""
    host, ports = value, None
    if value.startswith("["):
        host, _, port_s = value[1:].partition("]")
        ports = read_port_range(port_s[1:], i, "-") if port_s.startswith(":") else None
    elif value.count(":") == 1:
        host, port_s = value.split(":")
        ports = read_port_range(port_s, i, "-")
    ip = read_ip(host, strict=True)
    if ip is None:
        if "-" in host:
            raise Bad(i, f"a range of addresses ({host}): iptables takes it, but this model "
                      "only DNATs to one address", "give one address, e.g. 10.0.0.1:8080",
                      model_limit=True)
        raise Bad(i, f"bad address {host!r}", "write --to-destination 10.0.0.1:8080 (four "
                  "decimal numbers: DNAT reads no octal or hex)")
    _check_family(ip, family, i)
    return Dnat(ip, ports)


def _check_family(ip: IPAddress, family: str | None, i: int) -> None:
    """Refuse a target's address (the word at ``i``) of the other family than the rule's."""
    version = 4 if family == "ipv4" else 6
    if family is not None and ip.version != version:
        raise Bad(i, f"{ip} is an ipv{ip.version} address in {family} rules",
                  f"give an IPv{version} address here (iptables and ip6tables rules are "
                  "kept apart)")


def settle_tproxy_defaults(rules: list[Rule]) -> None:
    """Give the TPROXY rules of an IPv6 document the IPv6 default ``--on-ip ::``, in place.

    A TPROXY rule without ``--on-ip`` listens on the "any" address of its family (0.0.0.0 or
    ::; ``ip6tables-save`` prints ``--on-ip ::``). A rule read before anything said which
    family the document is got 0.0.0.0; in a document that turns out to be IPv6, that can
    only be such a default, since an IPv4 address given explicitly puts the document in
    IPv4 (:func:`finish_rule`) and is refused in IPv6 rules."""
    for k, rule in enumerate(rules):
        target = rule.target
        if type(target) is Tproxy and target.on_ip.version == 4:
            rules[k] = rule._replace(target=Tproxy(
                target.on_port, ip_address("::"), target.mark, target.mask))


def make_port_match(name: str, sport: tuple[bool, str, int] | None,
                    dport: tuple[bool, str, int] | None) -> PortMatch:
    """``-m tcp|udp`` from its ``--sport``/``--dport`` as (negated, word, token index)."""
    base = PORT_BASE[name]

    def ports(given: tuple[bool, str, int] | None) -> PortRange | None:
        if given is None:
            return None
        negated, word, i = given
        return PortRange(negated, *read_port_range(word, i, ":", base))

    return PortMatch(name, ports(sport), ports(dport))


PORT_BASE = {"tcp": 0, "udp": 10}
"""How ``-m tcp`` and ``-m udp`` read port numbers
(:func:`~meshlab.netfilter.values.c_unsigned`): iptables 1.8.9 reads ``--dport 010`` as 8 for
TCP but as 10 for UDP."""


_SIMPLE_TARGETS: dict[str, Target] = {"ACCEPT": Verdict("ACCEPT"), "DROP": Verdict("DROP"),
                                      "RETURN": Verdict("RETURN"), "TRACE": Log("TRACE")}
"""The targets without options: immutable values, so one of each serves every rule."""


def make_target(name: str, opts: dict[str, tuple[str, int]], at: int,
                family: str | None) -> Target:
    """The target ``-j name`` with its options ``{option: (value, token index)}``; ``at`` is
    the index of the target's name, ``family`` the rule's (TPROXY's default --on-ip)."""
    simple = _SIMPLE_TARGETS.get(name)
    if simple is not None:
        return simple
    if name not in TARGET_OPTIONS:
        return Jump(name)  # checked against the table's chains once the table is complete
    if name == "REDIRECT":
        value, i = opts.get("--to-ports") or opts.get("--to-port") or ("", at)
        return Redirect(read_port_range(value, i, "-") if value else None)
    if name == "DNAT":
        if "--to-destination" not in opts:
            raise Bad(at, "DNAT needs --to-destination", "add --to-destination IP[:PORT]")
        return dnat_target(*opts["--to-destination"], family)
    if name == "MARK":
        if len(opts) != 1:
            raise Bad(at, "MARK needs exactly one of --set-mark, --set-xmark, --or-mark, "
                      "--and-mark, --xor-mark", "e.g. -j MARK --set-mark 1337")
        (opt, (value, i)), = opts.items()
        return _mark_target(opt, value, i, SetMark)
    if name == "CONNMARK":
        return _connmark(opts, at)
    if name == "TPROXY":
        if "--on-port" not in opts:
            raise Bad(at, "TPROXY needs --on-port", "add --on-port 15006")
        port = read_decimal_port(*opts["--on-port"])
        on_ip = ip_address("::" if family == "ipv6" else "0.0.0.0")
        if "--on-ip" in opts:
            value, i = opts["--on-ip"]
            on_ip = read_ip(value)
            if on_ip is None:
                name = value[:1].isalpha()  # iptables would look a host name up
                raise Bad(i, f"bad address {value!r}" + (": iptables would look the name up, "
                                                         "which this model does not do"
                                                         if name else ""),
                          "write --on-ip 0.0.0.0", model_limit=name)
            _check_family(on_ip, family, i)
        mark, mask = read_value_mask(*opts["--tproxy-mark"]) if "--tproxy-mark" in opts else (0, 0)
        return Tproxy(port, on_ip, mark, mask)
    if name == "CT":
        if "--notrack" in opts:
            return Ct(notrack=True)
        value, i = opts.get("--zone", ("0", at))
        return Ct(read_number(value, i, "zone", 0xFFFF))
    prefix = opts["--log-prefix"][0] if "--log-prefix" in opts else None
    level = None
    if "--log-level" in opts:
        value, i = opts["--log-level"]
        names = ("emerg", "alert", "crit", "error", "warning", "notice", "info", "debug")
        level = names.index(value) if value in names else read_number(value, i, "log level", 7)
        level = None if level == 4 else level  # warning is the default; the kernel omits it
    return Log("LOG", prefix, level)


def _mark_target(opt: str, value: str, i: int,
                 make: Callable[[int, int], SetMark | Connmark]) -> SetMark | Connmark:
    """The five MARK spellings, all stored as the kernel's xor form ``(value, mask)``."""
    if opt in ("--set-xmark", "--set-mark"):
        v, m = read_value_mask(value, i)
        return make(v, m) if opt == "--set-xmark" else make(v, m | v)
    bits = read_number(value, i, "mark")
    if opt == "--or-mark":
        return make(bits, bits)
    if opt == "--and-mark":
        return make(0, ALL_ONES ^ bits)
    return make(bits, 0)  # --xor-mark


def _connmark(opts: dict, at: int) -> Connmark:
    modes = [o for o in ("--save-mark", "--restore-mark", "--set-mark", "--set-xmark")
             if o in opts]
    if len(modes) != 1:
        raise Bad(at, "CONNMARK needs exactly one of --save-mark, --restore-mark, --set-mark",
                  "e.g. -j CONNMARK --save-mark")
    mode = modes[0]
    if mode in ("--set-mark", "--set-xmark"):
        value, i = opts[mode]
        return _mark_target(mode, value, i, lambda v, m: Connmark("set", v, m))
    mask = read_number(*opts["--mask"], "mask") if "--mask" in opts else ALL_ONES
    nfmask = read_number(*opts["--nfmask"], "mask") if "--nfmask" in opts else mask
    ctmask = read_number(*opts["--ctmask"], "mask") if "--ctmask" in opts else mask
    return Connmark(mode[2:-5], nfmask=nfmask, ctmask=ctmask)
