"""The rules ``istio-iptables`` writes, in Istio's exact order and text.

Read this module top to bottom to learn why each rule of a sidecar pod exists. It is a
restatement of ``tools/istio-iptables/pkg/capture/run.go`` (Istio master, August 2026; the
output is identical for releases 1.25 to 1.30) following the numbered steps of section 1.2 of
``ISTIO-FACTS.md``, and it reproduces every upstream golden file byte for byte.

How Istio builds the text (and so how this module does):

* Every rule is *collected* first, by one builder (:class:`RuleBuilder`, Istio's
  ``IptablesRuleBuilder``), in two lists: one for IPv4 and one for IPv6. A rule is
  "append to chain C of table T" (``-A C ...``) or "insert at position N" (``-I C N ...``).
  Most rules go to both lists; a few exist for one family only (a v4 CIDR, a v6 nameserver),
  and "versioned" rules carry a family-specific address (``127.0.0.6/32`` vs ``::6/128``).
  The IPv6 list stays empty unless the pod has IPv6.
* Then each list is *assembled* into one ``iptables-restore`` document (section 1.3 of the
  facts): tables in alphabetical order (``filter``, ``mangle``, ``nat``, ``raw``), each with
  its ``-N CHAIN`` lines, its rules in collection order, and ``COMMIT``. Istio feeds the
  documents to ``iptables-restore --noflush`` and ``ip6tables-restore --noflush``.

The chains (all created by Istio, named ``ISTIO_*``):

==================== =========================================================================
``ISTIO_INBOUND``     nat (REDIRECT mode) or mangle (TPROXY): decides which arriving TCP
                      connections go to the sidecar's inbound listener; in raw: DNS zones.
``ISTIO_IN_REDIRECT`` nat: ``REDIRECT --to-ports 15006`` (the inbound listener).
``ISTIO_OUTPUT``      nat: decides which locally created connections go to the sidecar.
``ISTIO_REDIRECT``    nat: ``REDIRECT --to-ports 15001`` (the outbound listener).
``ISTIO_OUTPUT_DNS``  nat and raw: DNS capture to the agent on 15053 and conntrack zones.
``ISTIO_DIVERT``,     mangle, TPROXY mode only: mark packets so policy routing delivers
``ISTIO_TPROXY``      them locally, and hand new connections to the listener with TPROXY.
``ISTIO_DROP``        mangle: drop conntrack-INVALID packets (``--drop-invalid``).
==================== =========================================================================
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from ipaddress import IPv4Interface, IPv6Interface
from typing import NamedTuple

from meshlab.istio.flags import (
    DEFAULT_ISTIO_INIT_ARGS,
    WILDCARD,
    CaptureConfig,
    CaptureFlagError,
)
from meshlab.netfilter.parse import parse_ruleset
from meshlab.netfilter.ruleset import Ruleset

__all__ = [
    "DEFAULT_ISTIO_INIT_ARGS",
    "BuiltRule",
    "CaptureConfig",
    "CaptureFlagError",
    "CaptureRules",
    "RuleBuilder",
    "default_rules",
    "generate",
    "post_apply_commands",
]

# Chain and table names (Istio's constants.go).
ISTIO_INBOUND = "ISTIO_INBOUND"
ISTIO_IN_REDIRECT = "ISTIO_IN_REDIRECT"
ISTIO_OUTPUT = "ISTIO_OUTPUT"
ISTIO_OUTPUT_DNS = "ISTIO_OUTPUT_DNS"
ISTIO_REDIRECT = "ISTIO_REDIRECT"
ISTIO_DIVERT = "ISTIO_DIVERT"
ISTIO_TPROXY = "ISTIO_TPROXY"
ISTIO_DROP = "ISTIO_DROP"
NAT, MANGLE, RAW = "nat", "mangle", "raw"
PREROUTING, OUTPUT = "PREROUTING", "OUTPUT"

BUILT_IN_CHAINS = frozenset(
    {"INPUT", "OUTPUT", "FORWARD", "PREROUTING", "POSTROUTING", "ACCEPT", "RETURN", "DROP"}
)
"""Names that never get a ``-N`` line: the kernel's chains and the verdicts (Istio's
``BuiltInChainsMap``)."""

OUTBOUND_MARK = "1338"
"""TPROXY mode: the mark on packets the proxy sends to the pod's own address (not 1337)."""
AGENT_DNS_PORT = "15053"
"""The istio-agent's DNS proxy port."""
PASSTHROUGH_SOURCE = {"ipv4": "127.0.0.6/32", "ipv6": "::6/128"}
"""The source address Envoy binds when it forwards inbound traffic to the application."""
LOOPBACK_V6 = "::1/128"

_IP = object()  # placeholder for the family-specific address of a versioned rule


# ---------------------------------------------------------------------------------------------
# The builder: collect, then assemble.
# ---------------------------------------------------------------------------------------------


class BuiltRule(NamedTuple):
    """One collected rule: its table, the chain it belongs to, and its restore line."""

    table: str
    chain: str
    text: str
    """The restore line, e.g. ``-A ISTIO_OUTPUT -j RETURN`` or ``-I PREROUTING 1 -i eth1 ...``."""
    jump: str | None
    """The chain or verdict a rule ending in ``-j NAME`` jumps to (None for ``-j REDIRECT
    --to-ports 15001`` and other targets with options)."""


def _rule(table: str, chain: str, words: tuple[str, ...]) -> BuiltRule:
    jump = words[-1] if len(words) >= 2 and words[-2] == "-j" else None
    return BuiltRule(table, chain, " ".join(words), jump)


class RuleBuilder:
    """Collects rules per family in emission order, then assembles restore documents.

    This mirrors Istio's ``IptablesRuleBuilder``: ``append`` and ``insert`` add a rule to both
    families (the IPv6 list only when IPv6 is enabled), the ``_v4``/``_v6`` variants to one,
    and ``append_versioned`` substitutes a family-specific address.
    """

    __slots__ = ("enable_ipv6", "v4", "v6")

    def __init__(self, *, enable_ipv6: bool) -> None:
        self.enable_ipv6 = enable_ipv6
        self.v4: list[BuiltRule] = []
        self.v6: list[BuiltRule] = []

    # -- appending (-A) --

    def append(self, table: str, chain: str, *params: str) -> None:
        """``-A chain params`` in both families."""
        rule = _rule(table, chain, ("-A", chain, *params))
        self.v4.append(rule)
        if self.enable_ipv6:
            self.v6.append(rule)

    def append_v4(self, table: str, chain: str, *params: str) -> None:
        self.v4.append(_rule(table, chain, ("-A", chain, *params)))

    def append_v6(self, table: str, chain: str, *params: str) -> None:
        if self.enable_ipv6:
            self.v6.append(_rule(table, chain, ("-A", chain, *params)))

    def append_versioned(self, v4: str, v6: str, table: str, chain: str, *params: object) -> None:
        """Append in both families, with ``_IP`` in ``params`` replaced by ``v4`` or ``v6``."""
        self.append_v4(table, chain, *(v4 if p is _IP else str(p) for p in params))
        self.append_v6(table, chain, *(v6 if p is _IP else str(p) for p in params))

    # -- inserting (-I) --

    def insert(self, table: str, chain: str, position: int, *params: str) -> None:
        """``-I chain position params`` in both families."""
        rule = _rule(table, chain, ("-I", chain, str(position), *params))
        self.v4.append(rule)
        if self.enable_ipv6:
            self.v6.append(rule)

    def insert_v4(self, table: str, chain: str, position: int, *params: str) -> None:
        self.v4.append(_rule(table, chain, ("-I", chain, str(position), *params)))

    def insert_v6(self, table: str, chain: str, position: int, *params: str) -> None:
        if self.enable_ipv6:
            self.v6.append(_rule(table, chain, ("-I", chain, str(position), *params)))

    # -- assembling --

    def restore(self, family: str) -> str:
        """The ``iptables-restore`` document of one family (section 1.3 of the facts).

        ``-N`` lines come first in each table: every non-built-in chain that *owns* a rule, in
        order of first appearance; then every chain that is only *jumped to* (a rule ending in
        ``-j CHAIN``). Targets with options (``REDIRECT --to-ports``, ``MARK``, ``CT``...) are
        not chains and are never declared. Rules follow in collection order.
        """
        rules = self.v4 if family == "ipv4" else self.v6
        lines: dict[str, list[str]] = {"filter": [], MANGLE: [], NAT: []}
        declared: set[tuple[str, str]] = set()
        for table, chain, _, _ in rules:
            if (chain, table) not in declared:
                declared.add((chain, table))
                if chain not in BUILT_IN_CHAINS:
                    lines.setdefault(table, []).append(f"-N {chain}")
        for table, _, _, jump in rules:
            if jump is not None and (jump, table) not in declared:
                declared.add((jump, table))
                if jump not in BUILT_IN_CHAINS:
                    lines.setdefault(table, []).append(f"-N {jump}")
        for table, _, text, _ in rules:
            lines.setdefault(table, []).append(text)
        out: list[str] = []
        for table in sorted(lines):
            if lines[table]:
                out.append(f"* {table}")
                out += lines[table]
                out.append("COMMIT")
        return "\n".join(out) + "\n" if out else ""


# ---------------------------------------------------------------------------------------------
# The result.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaptureRules:
    """What ``istio-iptables`` does for one configuration.

    ``restore_v4``/``restore_v6`` are the exact documents fed to ``iptables-restore
    --noflush`` (``restore_v6`` is None when the pod has no IPv6). ``ruleset_v4`` and
    ``ruleset_v6`` are the same rules parsed by :mod:`meshlab.netfilter` (what the kernel holds
    after the ``-I`` lines are applied), computed on first use. ``post_commands`` are the
    routing commands Istio runs after the rules (TPROXY policy routing, the ``::6`` address).
    """

    restore_v4: str
    restore_v6: str | None
    post_commands: tuple[str, ...] = ()
    config: CaptureConfig = field(default_factory=CaptureConfig, compare=False, repr=False)
    rules_v4: tuple[BuiltRule, ...] = field(default=(), compare=False, repr=False)
    """The collected IPv4 rules, in emission order (what the restore document's lines are)."""
    rules_v6: tuple[BuiltRule, ...] = field(default=(), compare=False, repr=False)

    @cached_property
    def ruleset_v4(self) -> Ruleset:
        """The IPv4 rules as a :class:`meshlab.netfilter.ruleset.Ruleset`."""
        _check_numeric_groups(self.config)
        return parse_ruleset(self.restore_v4, family="ipv4")

    @cached_property
    def ruleset_v6(self) -> Ruleset | None:
        """The IPv6 rules as a Ruleset, or None when the pod has no IPv6."""
        if self.restore_v6 is None:
            return None
        _check_numeric_groups(self.config)
        return parse_ruleset(self.restore_v6, family="ipv6")

    def documents(self) -> tuple[str, ...]:
        """The restore documents in the order istio-iptables applies them: IPv4, then IPv6."""
        return (self.restore_v4,) if self.restore_v6 is None else (self.restore_v4, self.restore_v6)


def _check_numeric_groups(config: CaptureConfig) -> None:
    """Group *names* (``java``) are fine in restore text: iptables-restore looks them up in
    the pod's /etc/group. A Ruleset holds what the kernel holds, numbers, and meshlab cannot
    know the pod's /etc/group, so it asks for GIDs instead of guessing."""
    groups = config.owner_groups_exclude
    if config.owner_groups_include != WILDCARD:
        groups = groups + config.owner_groups_include
    for group in groups:
        if not group.isdigit():
            raise CaptureFlagError(
                f"owner group {group!r} is a name; the kernel keeps numeric GIDs and which GID "
                f"{group!r} is depends on the pod's /etc/group. The restore text is exact, but "
                "to model the rules give ISTIO_OUTBOUND_OWNER_GROUPS(_EXCLUDE) as numbers",
                source="environment ISTIO_OUTBOUND_OWNER_GROUPS",
                value=group,
            )


# ---------------------------------------------------------------------------------------------
# Generation, step by step (ISTIO-FACTS.md section 1.2).
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Ranges:
    """Step 0: ``-i``/``-x`` split into IPv4 and IPv6 lists (``*`` = wildcard in both).

    ``include_has_loopback`` is set when some ``-i`` CIDR starts with a loopback address
    (127.x.x.x or ``::1``): the user wants loopback traffic captured, which removes the
    "app to app over lo" RETURN rules of steps 11b/12b, in both families.
    """

    include_v4: tuple[str, ...] | None  # None = wildcard
    include_v6: tuple[str, ...] | None
    exclude_v4: tuple[str, ...]
    exclude_v6: tuple[str, ...]
    include_has_loopback: bool

    @classmethod
    def of(cls, config: CaptureConfig) -> _Ranges:
        include = config.outbound_ip_ranges_include
        exclude = config.outbound_ip_ranges_exclude
        if include == WILDCARD:
            inc_v4 = inc_v6 = None
            loopback = False
        else:
            inc_v4 = _cidr_texts(include, IPv4Interface)
            inc_v6 = _cidr_texts(include, IPv6Interface)
            loopback = any(cidr.ip.is_loopback for cidr in include)
        # "-x '*'" never gets here: CaptureConfig.validate() rejects it, as Istio does.
        return cls(inc_v4, inc_v6, _cidr_texts(exclude, IPv4Interface),
                   _cidr_texts(exclude, IPv6Interface), loopback)  # fmt: skip


def _cidr_texts(cidrs: Iterable[IPv4Interface | IPv6Interface], kind: type) -> tuple[str, ...]:
    # Go prints netip.Prefix as address/bits with host bits kept: "10.0.0.1/8" stays so.
    return tuple(str(cidr) for cidr in cidrs if isinstance(cidr, kind))


def generate(config: CaptureConfig) -> CaptureRules:
    """Generate the rules ``istio-iptables`` writes for ``config``.

    >>> rules = generate(CaptureConfig.from_args(DEFAULT_ISTIO_INIT_ARGS))
    >>> rules.restore_v4.splitlines()[-3:]
    ['-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN', '-A ISTIO_OUTPUT -j ISTIO_REDIRECT', 'COMMIT']
    """
    config.validate()
    b = RuleBuilder(enable_ipv6=config.enable_ipv6)
    ranges = _Ranges.of(config)
    dns = config.dns_capture_active

    _step1_exclude_interfaces(b, config)
    _step2_virtual_interfaces_return(b, config)
    _step3_drop_invalid(b, config)
    _steps4_6_base_chains(b, config)
    _step7_inbound(b, config)
    _steps8_9_output_jump_and_port_exclusions(b, config)
    _steps10_12_proxy_exemptions(b, config, ranges, dns)
    _step13_owner_groups(b, config)
    if dns:
        _step14_dns(b, config)
    _steps15_18_outbound_destinations(b, config, ranges)
    if config.is_tproxy:
        _step19_tproxy_marks(b, config)

    return CaptureRules(
        restore_v4=b.restore("ipv4"),
        restore_v6=b.restore("ipv6") if config.enable_ipv6 else None,
        post_commands=post_apply_commands(config),
        config=config,
        rules_v4=tuple(b.v4),
        rules_v6=tuple(b.v6),
    )


def _step1_exclude_interfaces(b: RuleBuilder, c: CaptureConfig) -> None:
    """Step 1 (``-c``, since 1.12): traffic on an excluded NIC is never captured.

    ``RETURN`` from a built-in chain ends the table's processing for the packet (the policy,
    ACCEPT, applies), so ``PREROUTING -i IF -j RETURN`` and ``OUTPUT -o IF -j RETURN`` come
    before any Istio jump. In TPROXY mode inbound capture lives in mangle, so the pair is
    repeated there, after all the nat pairs.
    """
    for interface in c.exclude_interfaces:
        b.append(NAT, PREROUTING, "-i", interface, "-j", "RETURN")
        b.append(NAT, OUTPUT, "-o", interface, "-j", "RETURN")
    if c.is_tproxy:
        for interface in c.exclude_interfaces:
            b.append(MANGLE, PREROUTING, "-i", interface, "-j", "RETURN")
            b.append(MANGLE, OUTPUT, "-o", interface, "-j", "RETURN")


def _step2_virtual_interfaces_return(b: RuleBuilder, c: CaptureConfig) -> None:
    """Step 2 (``-k``): arrivals on a "virtual" NIC (e.g. a KubeVirt VM's bridge) are not
    inbound traffic of this pod; they are treated as *outbound* in step 18.

    Each is ``-I PREROUTING 1`` (insert at the top), so with ``--noflush`` the *last*
    interface listed ends up first in the kernel.
    """
    for interface in c.kube_virt_interfaces:
        b.insert(NAT, PREROUTING, 1, "-i", interface, "-j", "RETURN")


def _step3_drop_invalid(b: RuleBuilder, c: CaptureConfig) -> None:
    """Step 3 (``--drop-invalid``, since 1.13): drop packets conntrack calls INVALID, e.g.
    out-of-window TCP segments, which would otherwise reach the app un-NATed and be answered
    with a reset."""
    if c.drop_invalid:
        b.append(MANGLE, PREROUTING, "-m", "conntrack", "--ctstate", "INVALID", "-j", ISTIO_DROP)
        b.append(MANGLE, ISTIO_DROP, "-j", "DROP")


def _steps4_6_base_chains(b: RuleBuilder, c: CaptureConfig) -> None:
    """Steps 4-6: the three chains every sidecar has, whatever the flags.

    4. ``ISTIO_INBOUND -p tcp --dport 15008 -j RETURN`` (since 1.7): the HBONE tunnel port is
       served by the proxy itself and must never be redirected.
    5. ``ISTIO_REDIRECT``: ``REDIRECT --to-ports 15001``, the outbound listener
       (``virtualOutbound``). Outbound rules jump here.
    6. ``ISTIO_IN_REDIRECT``: ``REDIRECT --to-ports 15006``, the inbound listener
       (``virtualInbound``). Before 1.3 inbound also went to 15001; the separate 15006 port
       became unconditional in 1.6 (PR #22686).
    """
    b.append(NAT, ISTIO_INBOUND, "-p", "tcp", "--dport", str(c.inbound_tunnel_port),
             "-j", "RETURN")  # fmt: skip
    b.append(NAT, ISTIO_REDIRECT, "-p", "tcp", "-j", "REDIRECT", "--to-ports", str(c.proxy_port))
    b.append(NAT, ISTIO_IN_REDIRECT, "-p", "tcp", "-j", "REDIRECT",
             "--to-ports", str(c.inbound_capture_port))  # fmt: skip


def _step7_inbound(b: RuleBuilder, c: CaptureConfig) -> None:
    """Step 7 (``-b``, ``-d``, ``-m``): which arriving connections go to the inbound listener.

    Nothing at all when ``-b`` is empty (then PREROUTING has no jump). Otherwise
    ``PREROUTING -p tcp -j ISTIO_INBOUND`` and then either

    * ``-b '*'``: a ``RETURN`` per ``-d`` port (in the order given: the proxy's own ports
      15090 Prometheus, 15021 health, 15020 agent must reach the proxy directly), then
      capture everything else; or
    * ``-b P1,P2``: capture exactly those ports (``-d`` is ignored).

    REDIRECT mode captures with ``-j ISTIO_IN_REDIRECT`` in nat. TPROXY mode works in mangle
    instead and keeps the original destination address: packets of established connections
    go to ``ISTIO_DIVERT`` (mark them so policy routing delivers them locally, and ACCEPT),
    new ones to ``ISTIO_TPROXY`` (``-j TPROXY --on-port 15006`` plus the mark), except those
    already addressed to localhost.
    """
    if not c.inbound_ports_include:
        return
    if c.is_tproxy:
        mark = str(c.tproxy_mark)
        b.append(MANGLE, ISTIO_DIVERT, "-j", "MARK", "--set-mark", mark)
        b.append(MANGLE, ISTIO_DIVERT, "-j", "ACCEPT")
        b.append_versioned(str(c.ipv4_loopback_cidr), LOOPBACK_V6, MANGLE, ISTIO_TPROXY,
                           "!", "-d", _IP, "-p", "tcp", "-j", "TPROXY",
                           "--tproxy-mark", f"{mark}/0xffffffff",
                           "--on-port", str(c.inbound_capture_port))  # fmt: skip
        table = MANGLE
    else:
        table = NAT
    b.append(table, PREROUTING, "-p", "tcp", "-j", ISTIO_INBOUND)

    if c.inbound_ports_include == WILDCARD:
        for port in c.inbound_ports_exclude:
            b.append(table, ISTIO_INBOUND, "-p", "tcp", "--dport", str(port), "-j", "RETURN")
        if c.is_tproxy:
            b.append(MANGLE, ISTIO_INBOUND, "-p", "tcp", "-m", "conntrack",
                     "--ctstate", "RELATED,ESTABLISHED", "-j", ISTIO_DIVERT)  # fmt: skip
            b.append(MANGLE, ISTIO_INBOUND, "-p", "tcp", "-j", ISTIO_TPROXY)
        else:
            b.append(NAT, ISTIO_INBOUND, "-p", "tcp", "-j", ISTIO_IN_REDIRECT)
        return
    for port in c.inbound_ports_include:
        dport = ("-p", "tcp", "--dport", str(port))
        if c.is_tproxy:
            b.append(MANGLE, ISTIO_INBOUND, *dport, "-m", "conntrack",
                     "--ctstate", "RELATED,ESTABLISHED", "-j", ISTIO_DIVERT)  # fmt: skip
            b.append(MANGLE, ISTIO_INBOUND, *dport, "-j", ISTIO_TPROXY)
        else:
            b.append(NAT, ISTIO_INBOUND, *dport, "-j", ISTIO_IN_REDIRECT)


def _steps8_9_output_jump_and_port_exclusions(b: RuleBuilder, c: CaptureConfig) -> None:
    """Steps 8-9: every locally created connection enters ``ISTIO_OUTPUT``.

    8. ``OUTPUT -j ISTIO_OUTPUT``: all protocols since 1.25 (up to 1.24 it was
       ``OUTPUT -p tcp -j ISTIO_OUTPUT``; UDP is needed now that DNS rules live under it).
    9. ``-o`` ports are let go first, TCP and UDP (e.g. the CNI's default ``-o 15020``),
       before anything that could redirect them back to the proxy.
    """
    b.append(NAT, OUTPUT, "-j", ISTIO_OUTPUT)
    for port in c.outbound_ports_exclude:
        b.append(NAT, ISTIO_OUTPUT, "-p", "tcp", "--dport", str(port), "-j", "RETURN")
        b.append(NAT, ISTIO_OUTPUT, "-p", "udp", "--dport", str(port), "-j", "RETURN")


def _steps10_12_proxy_exemptions(
    b: RuleBuilder, c: CaptureConfig, ranges: _Ranges, dns: bool
) -> None:
    """Steps 10-12: the rules that keep the proxy from capturing itself (no loops).

    10. ``-o lo -s 127.0.0.6/32 -j RETURN``: Envoy forwards inbound traffic to the app from
        source 127.0.0.6 (``::6`` in IPv6), so that connection leaves uncaptured. Born in 1.3
        (PR #15906, the "Infloop" fix); since 1.10 inbound clusters forward to the pod IP
        (ORIGINAL_DST) and rely on it too.

    Then, for each proxy UID (step 11) and then each proxy GID (step 12), three rules:

    a. ``-o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner U -j
       ISTIO_IN_REDIRECT``: the proxy connecting to *the pod's own address* (an app calling
       its own Service: app -> outbound Envoy -> this) is sent to the *inbound* listener, so
       inbound policy applies (Istio issue #37890). ``! --dport 15008`` since 1.18. With DNS
       capture the UID form excludes port 53 too (``-m multiport ! --dports 53,15008``): the
       istio-agent runs as the proxy UID, and its queries to a DNS server on the pod's own
       address must go straight there, not through Envoy's inbound listener. The GID form
       keeps ``! --dport 15008`` (an asymmetry visible in Istio's goldens).
    b. ``-o lo -m owner ! --uid-owner U -j RETURN``: *anyone else* talking to a local
       address over ``lo`` (app to app) is left alone. With DNS capture, TCP port 53 is
       excepted (``-p tcp ! --dport 53``) so that a local resolver can still be captured.
       Omitted when ``-i`` lists a loopback CIDR: the user asked to capture loopback
       traffic (PR #24143).
    c. ``-m owner --uid-owner U -j RETURN``: everything else the proxy sends goes out
       directly. Without this rule every upstream connection of Envoy would be redirected to
       Envoy again: the loop the lessons show.
    """
    b.append_versioned(PASSTHROUGH_SOURCE["ipv4"], PASSTHROUGH_SOURCE["ipv6"], NAT, ISTIO_OUTPUT,
                       "-o", "lo", "-s", _IP, "-j", "RETURN")  # fmt: skip
    loopback_v4 = str(c.ipv4_loopback_cidr)
    tunnel = str(c.inbound_tunnel_port)
    for owner, ids, dns_ports in (("--uid-owner", c.proxy_uid, dns),
                                  ("--gid-owner", c.proxy_gid, False)):  # fmt: skip
        for owner_id in ids:
            u = str(owner_id)
            if dns_ports:
                ports: tuple[str, ...] = ("-m", "multiport", "!", "--dports", f"53,{tunnel}")
            else:
                ports = ("!", "--dport", tunnel)
            b.append_versioned(loopback_v4, LOOPBACK_V6, NAT, ISTIO_OUTPUT,
                               "-o", "lo", "!", "-d", _IP, "-p", "tcp", *ports,
                               "-m", "owner", owner, u, "-j", ISTIO_IN_REDIRECT)  # fmt: skip
            if not ranges.include_has_loopback:
                if dns:
                    b.append(NAT, ISTIO_OUTPUT, "-o", "lo", "-p", "tcp", "!", "--dport", "53",
                             "-m", "owner", "!", owner, u, "-j", "RETURN")  # fmt: skip
                else:
                    b.append(NAT, ISTIO_OUTPUT, "-o", "lo", "-m", "owner", "!", owner, u,
                             "-j", "RETURN")  # fmt: skip
            b.append(NAT, ISTIO_OUTPUT, "-m", "owner", owner, u, "-j", "RETURN")


def _step13_owner_groups(b: RuleBuilder, c: CaptureConfig) -> None:
    """Step 13 (env ``ISTIO_OUTBOUND_OWNER_GROUPS[_EXCLUDE]``): capture only some groups.

    Include list ``*`` (the default): one ``-m owner --gid-owner G -j RETURN`` per excluded
    group. An explicit include list: one rule that RETURNs a packet whose owner is in *none*
    of the groups (``-m owner ! --gid-owner G1 -m owner ! --gid-owner G2 ... -j RETURN``).
    """
    if c.owner_groups_include == WILDCARD:
        for group in c.owner_groups_exclude:
            b.append(NAT, ISTIO_OUTPUT, "-m", "owner", "--gid-owner", group, "-j", "RETURN")
        return
    matches: list[str] = []
    for group in c.owner_groups_include:
        matches += ["-m", "owner", "!", "--gid-owner", group]
    b.append(NAT, ISTIO_OUTPUT, *matches, "-j", "RETURN")


def _step14_dns(b: RuleBuilder, c: CaptureConfig) -> None:
    """Step 14 (``--redirect-dns``, since 1.9): DNS to the istio-agent on port 15053.

    Only the nameservers of resolv.conf are captured (``-d S/32``), not all of port 53, so
    that an app -> agent -> local resolver -> upstream chain cannot loop (PR #30647); the
    CNI plugin captures all of port 53 (``--capture-all-dns``, 1.11). Since 1.25 the rules
    live in ``ISTIO_OUTPUT_DNS``, jumped to from nat ``ISTIO_OUTPUT`` (only in a family that
    has servers, or with capture-all) and from raw ``OUTPUT``.

    The raw rules put UDP DNS in two conntrack zones so the two legs of a query do not share
    conntrack entries: zone 1 = the agent's queries to upstream servers (proxy UID/GID, port
    53) and their answers (``--sport 53`` in raw ``ISTIO_INBOUND``); zone 2 = the app's
    queries and the agent's answers to the app (``--sport 15053``). Note the TCP redirect
    says ``--to-ports`` and the UDP one ``--to-port``: both spellings are iptables'.
    """
    v4, v6, all_dns = c.dns_servers_v4, c.dns_servers_v6, c.capture_all_dns
    b.append(RAW, OUTPUT, "-j", ISTIO_OUTPUT_DNS)
    if all_dns or v4:
        b.append_v4(NAT, ISTIO_OUTPUT, "-j", ISTIO_OUTPUT_DNS)
    if all_dns or v6:
        b.append_v6(NAT, ISTIO_OUTPUT, "-j", ISTIO_OUTPUT_DNS)

    for proto, to_ports in (("tcp", "--to-ports"), ("udp", "--to-port")):
        redirect = ("-j", "REDIRECT", to_ports, AGENT_DNS_PORT)
        if all_dns:
            b.append(NAT, ISTIO_OUTPUT_DNS, "-p", proto, "--dport", "53", *redirect)
            continue
        for server in v4:
            b.append_v4(NAT, ISTIO_OUTPUT_DNS, "-p", proto, "--dport", "53",
                        "-d", f"{server}/32", *redirect)  # fmt: skip
        for server in v6:
            b.append_v6(NAT, ISTIO_OUTPUT_DNS, "-p", proto, "--dport", "53",
                        "-d", f"{server}/128", *redirect)  # fmt: skip

    for owner, ids in (("--uid-owner", c.proxy_uid), ("--gid-owner", c.proxy_gid)):
        for owner_id in ids:
            u = str(owner_id)
            b.append(RAW, ISTIO_OUTPUT_DNS, "-p", "udp", "--dport", "53",
                     "-m", "owner", owner, u, "-j", "CT", "--zone", "1")  # fmt: skip
            b.append(RAW, ISTIO_OUTPUT_DNS, "-p", "udp", "--sport", AGENT_DNS_PORT,
                     "-m", "owner", owner, u, "-j", "CT", "--zone", "2")  # fmt: skip

    if all_dns:
        b.append(RAW, PREROUTING, "-j", ISTIO_INBOUND)
        b.append(RAW, ISTIO_OUTPUT_DNS, "-p", "udp", "--dport", "53", "-j", "CT", "--zone", "2")
        b.append(RAW, ISTIO_INBOUND, "-p", "udp", "--sport", "53", "-j", "CT", "--zone", "1")
        return
    for servers, bits, append in ((v4, "/32", b.append_v4), (v6, "/128", b.append_v6)):
        if servers:
            append(RAW, PREROUTING, "-j", ISTIO_INBOUND)
        for server in servers:
            append(RAW, ISTIO_OUTPUT_DNS, "-p", "udp", "--dport", "53", "-d", f"{server}{bits}",
                   "-j", "CT", "--zone", "2")  # fmt: skip
            append(RAW, ISTIO_INBOUND, "-p", "udp", "--sport", "53", "-s", f"{server}{bits}",
                   "-j", "CT", "--zone", "1")  # fmt: skip


def _steps15_18_outbound_destinations(b: RuleBuilder, c: CaptureConfig, ranges: _Ranges) -> None:
    """Steps 15-18: which destinations the app's connections are captured for.

    15. ``-d 127.0.0.1/32 -j RETURN``: talking to localhost (an Envoy-aware app, or
        container to container in the pod) is never captured (``::1/128`` in IPv6; the v4
        CIDR is the env knob ``ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR``).
    16. ``-x`` CIDRs: ``-d C -j RETURN`` (always emitted, although the help text says ``-x``
        only applies with ``-i '*'``).
    17. ``-q`` ports: ``-p tcp --dport P -j ISTIO_REDIRECT``, whatever the destination.
    18. ``-i``: ``*`` -> ``-j ISTIO_REDIRECT`` (capture the rest); a CIDR list -> one
        ``-d C -j ISTIO_REDIRECT`` each; empty -> nothing, so nothing else is captured. Each
        ``-k`` interface also gets ``-I PREROUTING 1 -i IF [-d C] -j ISTIO_REDIRECT``: traffic
        arriving from a virtual NIC is handled like the pod's own outbound traffic.
        The IPv4 list is handled before the IPv6 one.
    """
    b.append_versioned(str(c.ipv4_loopback_cidr), LOOPBACK_V6, NAT, ISTIO_OUTPUT,
                       "-d", _IP, "-j", "RETURN")  # fmt: skip
    for cidr in ranges.exclude_v4:
        b.append_v4(NAT, ISTIO_OUTPUT, "-d", cidr, "-j", "RETURN")
    for cidr in ranges.exclude_v6:
        b.append_v6(NAT, ISTIO_OUTPUT, "-d", cidr, "-j", "RETURN")
    for port in c.outbound_ports_include:
        b.append(NAT, ISTIO_OUTPUT, "-p", "tcp", "--dport", str(port), "-j", ISTIO_REDIRECT)
    for include, append, insert in ((ranges.include_v4, b.append_v4, b.insert_v4),
                                    (ranges.include_v6, b.append_v6, b.insert_v6)):  # fmt: skip
        if include is None:
            append(NAT, ISTIO_OUTPUT, "-j", ISTIO_REDIRECT)
            for interface in c.kube_virt_interfaces:
                insert(NAT, PREROUTING, 1, "-i", interface, "-j", ISTIO_REDIRECT)
            continue
        for cidr in include:
            for interface in c.kube_virt_interfaces:
                insert(NAT, PREROUTING, 1, "-i", interface, "-d", cidr, "-j", ISTIO_REDIRECT)
            append(NAT, ISTIO_OUTPUT, "-d", cidr, "-j", ISTIO_REDIRECT)


def _step19_tproxy_marks(b: RuleBuilder, c: CaptureConfig) -> None:
    """Step 19 (TPROXY mode only, all in mangle): marks that keep TPROXY from looping.

    * ``PREROUTING ... --mark 1337 -j CONNMARK --save-mark``: remember on the connection the
      mark Envoy's ``original_src`` filter put on packets, and ``OUTPUT ... -j CONNMARK
      --restore-mark`` puts it back on the connection's later packets (so replies are routed
      back to the proxy through the policy-routing table).
    * ``OUTPUT -p tcp -o lo -m mark --mark 1337 -j RETURN``: already marked, leave it.
    * per proxy UID/GID: ``OUTPUT ! -d 127.0.0.1/32 -p tcp -o lo -m owner ... -j MARK
      --set-mark 1338``: the proxy calling the pod's own address (app -> own Service VIP)
      is marked 1338 so the inbound side captures it (cf. step 11a in REDIRECT mode).
    * Inserted at the top of mangle ``ISTIO_INBOUND`` (positions 1, 2, 3): RETURN for
      packets marked 1337, for the proxy's 127.0.0.6 (``::6``) source on ``lo``, and for
      any ``lo`` packet not marked 1338 (app to app over the pod IP). Note that mangle
      ``ISTIO_INBOUND`` has no 15008 exemption, and nat ``ISTIO_INBOUND`` (which still gets
      it) has no jump from PREROUTING in this mode. In TPROXY mode Envoy runs as UID 0 with
      GID 1337, so it is the ``--gid-owner 1337`` rules that exempt it (PR #30306).
    """
    mark = str(c.tproxy_mark)
    b.append(MANGLE, PREROUTING, "-p", "tcp", "-m", "mark", "--mark", mark,
             "-j", "CONNMARK", "--save-mark")  # fmt: skip
    b.append(MANGLE, OUTPUT, "-p", "tcp", "-o", "lo", "-m", "mark", "--mark", mark, "-j", "RETURN")
    loopback_v4 = str(c.ipv4_loopback_cidr)
    for owner, ids in (("--uid-owner", c.proxy_uid), ("--gid-owner", c.proxy_gid)):
        for owner_id in ids:
            b.append_versioned(loopback_v4, LOOPBACK_V6, MANGLE, OUTPUT,
                               "!", "-d", _IP, "-p", "tcp", "-o", "lo",
                               "-m", "owner", owner, str(owner_id),
                               "-j", "MARK", "--set-mark", OUTBOUND_MARK)  # fmt: skip
    b.append(MANGLE, OUTPUT, "-p", "tcp", "-m", "connmark", "--mark", mark,
             "-j", "CONNMARK", "--restore-mark")  # fmt: skip
    b.insert(MANGLE, ISTIO_INBOUND, 1, "-p", "tcp", "-m", "mark", "--mark", mark, "-j", "RETURN")
    b.insert_v4(MANGLE, ISTIO_INBOUND, 2, "-p", "tcp", "-s", PASSTHROUGH_SOURCE["ipv4"],
                "-i", "lo", "-j", "RETURN")  # fmt: skip
    b.insert_v6(MANGLE, ISTIO_INBOUND, 2, "-p", "tcp", "-s", PASSTHROUGH_SOURCE["ipv6"],
                "-i", "lo", "-j", "RETURN")  # fmt: skip
    b.insert(MANGLE, ISTIO_INBOUND, 3, "-p", "tcp", "-i", "lo", "-m", "mark", "!",
             "--mark", OUTBOUND_MARK, "-j", "RETURN")  # fmt: skip


def post_apply_commands(config: CaptureConfig) -> tuple[str, ...]:
    """Step 20: what istio-iptables does after the rules (shown here, never run).

    * IPv6 pods: ``ip -6 addr add ::6/128 dev lo``. IPv4 needs nothing, since all of
      127.0.0.0/8 is local on ``lo``, but IPv6 loopback is only ``::1/128`` and Envoy must be
      able to bind the ``::6`` source of step 10.
    * TPROXY with inbound capture: packets marked in ``ISTIO_DIVERT``/``ISTIO_TPROXY`` are
      routed with table ``-r`` (133), whose one route delivers everything locally on ``lo``.

    Istio does these through netlink (``tools/common/tproxy``) and skips them in
    ``--dry-run``; these are the equivalent ``ip`` commands.
    """
    commands: list[str] = []
    if config.enable_ipv6:
        commands.append("ip -6 addr add ::6/128 dev lo")
    if config.inbound_ports_include and config.is_tproxy:
        mark, table = config.tproxy_mark, config.tproxy_route_table
        commands.append(f"ip rule add fwmark {mark} lookup {table}")
        if config.enable_ipv6:
            commands.append(f"ip -6 rule add fwmark {mark} lookup {table}")
        commands.append(f"ip route add local 0.0.0.0/0 dev lo table {table}")
        if config.enable_ipv6:
            commands.append(f"ip -6 route add local ::/0 dev lo table {table}")
    return tuple(commands)


@lru_cache(maxsize=1)
def default_rules() -> Ruleset:
    """The IPv4 rules of a default sidecar pod (``istio-init`` with DEFAULT_ISTIO_INIT_ARGS)."""
    return generate(CaptureConfig.from_args(DEFAULT_ISTIO_INIT_ARGS)).ruleset_v4
