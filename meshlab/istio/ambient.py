"""The rules the istio-cni node agent writes into an ambient pod, in Istio's exact text.

Read this module top to bottom to learn how ambient mode captures a pod's traffic with no
sidecar. It restates ``cni/pkg/iptables/iptables.go`` (Istio master, August 2026: the default
case's output is the same from release 1.25 to 1.31; ingress mode keeps the connmark rule
since 1.29) and reproduces Istio's 14 golden files byte for byte.

**Who does what.** In ambient mode no container of the pod touches iptables. The istio-cni
*node agent* (a DaemonSet) enters the pod's network namespace, loads the rules below with
``iptables-restore --noflush`` (and ``ip6tables-restore`` when IPv6 is on), adds one ``ip
rule`` and one route (:data:`INPOD_ROUTE_COMMANDS`), then hands the namespace to the node's
*ztunnel*, which opens its listening sockets inside it. So ztunnel's sockets are the pod's own
local sockets, and the rules only have to tell ztunnel's packets from the app's.

**The mark, not the UID.** A sidecar is exempted from capture by its UID (1337); ztunnel is
not a process of the pod, so it puts ``SO_MARK`` :data:`INPOD_MARK` (``0x539``, which is
1337) on every socket it makes in the pod, and every redirect rule here says ``-m mark !
--mark 0x539/0xfff``. Only the low 12 bits (:data:`INPOD_MASK`) are Istio's: other software
may use the rest of the 32-bit mark.

**The reply path.** ztunnel connects to the app *from the real client's address* (so the app
sees who called it). The app's answer is addressed to that foreign address and would leave by
``eth0``; instead, mangle gives every connection ztunnel opens the connection mark
:data:`INPOD_TPROXY_MARK` (``0x111``), mangle OUTPUT copies it onto the app's answers, and
the ``ip rule`` sends packets marked ``0x111`` to table :data:`ROUTE_TABLE_INBOUND` (100),
whose one route makes every address local: the answer goes back in by ``lo`` to ztunnel.

The rules, in the order the agent writes them (each table's document lists ``-N`` lines
first, then the rules in this order; tables alphabetically: mangle, nat, raw):

1. Jumps from the kernel's chains into Istio's own: mangle ``PREROUTING``/``OUTPUT``, nat
   ``OUTPUT``, raw ``PREROUTING``/``OUTPUT`` (DNS capture only), nat ``PREROUTING``. Istio's
   chains are ``ISTIO_PRERT`` and ``ISTIO_OUTPUT``; removing the jumps and chains undoes it all.
2. Virtual interfaces (annotation ``istio.io/reroute-virtual-interfaces``): TCP arriving on
   one (a VM or a nested container behind the pod) is *outbound* traffic: REDIRECT to 15001,
   then RETURN, before any inbound rule sees it.
3. mangle ``ISTIO_PRERT``: a packet carrying ztunnel's mark (ztunnel connecting to the app,
   in again by ``lo``) gives its connection the connmark ``0x111``.
4. Kubelet probes: the node SNATs them to :data:`HOST_PROBE_SNAT_V4` (see
   :func:`node_rules`); nat ``ISTIO_PRERT`` ACCEPTs TCP from that address (no ztunnel in
   between; not in ingress mode), and nat ``ISTIO_OUTPUT`` ACCEPTs TCP to it. Istio's comment
   says the latter is for the probes' answers, but an answer belongs to the probe's
   connection and nat never sees it (nat sees a connection's first packet only); the rule
   matters only for a connection the pod itself opens to that address.
5. Inbound plaintext (not in ingress mode): TCP to anything but 127.0.0.1, except HBONE on
   :data:`ZTUNNEL_INBOUND_PORT` (15008, where ztunnel itself listens), without ztunnel's mark,
   is redirected to :data:`ZTUNNEL_INBOUND_PLAINTEXT_PORT` (15006).
6. mangle ``ISTIO_OUTPUT``: copy the connection's mark onto each packet the pod sends
   (``CONNMARK --restore-mark``): the app's answers to ztunnel now carry ``0x111``.
7. DNS capture: the app's UDP port 53 not sent over ``lo`` and TCP port 53 not to 127.0.0.1
   go to ztunnel's DNS proxy on :data:`DNS_CAPTURE_PORT` (15053); raw gives ztunnel's own
   upstream queries and their answers conntrack zone 1, so that a query of ztunnel's that
   happens to use the app's source port is not taken for the app's query (the redirected
   connection in zone 0) and sent to 15053 again.
8. nat ``ISTIO_OUTPUT``: TCP marked ``0x111`` is accepted (a new connection on a socket
   whose packets already carry it); so is anything leaving by ``lo`` to an address other
   than 127.0.0.1 (the app calling its own pod IP, ztunnel connecting to the app).
9. Outbound capture: TCP to anything but 127.0.0.1 without ztunnel's mark is redirected to
   :data:`ZTUNNEL_OUTBOUND_PORT` (15001). ztunnel's own connections carry the mark and leave.

IPv6 gets the same rules with ``::1/128`` for ``127.0.0.1/32`` and the v6 probe address.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Literal

from meshlab.errors import MeshlabError
from meshlab.istio.capture import MANGLE, NAT, OUTPUT, PREROUTING, RAW, RuleBuilder
from meshlab.netfilter.kernel import FwmarkRoute, fwmark_routes
from meshlab.netfilter.parse import parse_ruleset
from meshlab.netfilter.ruleset import Ruleset

__all__ = [
    "ANNOTATION_BYPASS_INBOUND_CAPTURE",
    "ANNOTATION_DNS_CAPTURE",
    "ANNOTATION_REROUTE_VIRTUAL_INTERFACES",
    "DNS_CAPTURE_PORT",
    "HOST_PROBE_SNAT_V4",
    "HOST_PROBE_SNAT_V6",
    "INPOD_MARK",
    "INPOD_MASK",
    "INPOD_RESTORE_MASK",
    "INPOD_ROUTE_COMMANDS",
    "INPOD_RULE_PRIORITY",
    "INPOD_TPROXY_MARK",
    "INPOD_TPROXY_MASK",
    "PROBE_COMMANDS",
    "PROBE_IPSET",
    "ROUTE_TABLE_INBOUND",
    "ZTUNNEL_INBOUND_PLAINTEXT_PORT",
    "ZTUNNEL_INBOUND_PORT",
    "ZTUNNEL_OUTBOUND_PORT",
    "AgentConfig",
    "AmbientInputError",
    "AmbientRules",
    "PodOverrides",
    "inpod_routes",
    "inpod_rules",
    "node_rules",
]

# ---------------------------------------------------------------------------------------------
# The constants (cni/pkg/config/config.go), each defined once.
# ---------------------------------------------------------------------------------------------

INPOD_MARK = 0x539
"""``SO_MARK`` on every socket ztunnel makes in the pod (1337 in decimal; it must match
ztunnel's own setting). Packets carrying it are ztunnel's and are never redirected."""
INPOD_MASK = 0xFFF
"""The bits of the packet mark :data:`INPOD_MARK` is compared in (the low 12)."""
INPOD_TPROXY_MARK = 0x111
"""The connection mark (connmark) of connections ztunnel opens towards the app; restored onto
the app's answers so that the ``ip rule`` routes them back to ztunnel by ``lo``. (The name is
Istio's, from when inbound used TPROXY; since 1.24 it is REDIRECT.)"""
INPOD_TPROXY_MASK = 0xFFF
"""The bits :data:`INPOD_TPROXY_MARK` is set and compared in."""
INPOD_RESTORE_MASK = 0xFFFFFFFF
"""``--nfmask``/``--ctmask`` of the restore rule: the whole connmark is copied."""
ROUTE_TABLE_INBOUND = 100
"""The routing table packets marked :data:`INPOD_TPROXY_MARK` are looked up in."""
INPOD_RULE_PRIORITY = 32764
"""The ``ip rule``'s preference: before the ``main`` table's rule (32766)."""

ZTUNNEL_OUTBOUND_PORT = 15001
"""ztunnel's listener for the app's outgoing TCP (redirected by nat OUTPUT)."""
ZTUNNEL_INBOUND_PLAINTEXT_PORT = 15006
"""ztunnel's listener for plaintext TCP arriving at the pod (redirected by nat PREROUTING)."""
ZTUNNEL_INBOUND_PORT = 15008
"""ztunnel's HBONE listener (mTLS tunnels from other mesh workloads); never redirected."""
DNS_CAPTURE_PORT = 15053
"""ztunnel's DNS proxy, UDP and TCP."""

HOST_PROBE_SNAT_V4 = IPv4Address("169.254.7.127")
"""The link-local address the node rewrites the source of kubelet's probes to, so that the
pod's rules can let them bypass ztunnel (``HOST_PROBE_SNAT_ADDRESS``)."""
HOST_PROBE_SNAT_V6 = IPv6Address("fd16:9254:7127:1337:ffff:ffff:ffff:ffff")
"""The same for IPv6 (``HOST_PROBE_V6_SNAT_ADDRESS``)."""
PROBE_IPSET = "istio-inpod-probes"
"""The node's ipset of ambient pod IPs (``-v4``/``-v6`` appended per family)."""

ISTIO_PRERT = "ISTIO_PRERT"
ISTIO_OUTPUT = "ISTIO_OUTPUT"
ISTIO_POSTRT = "ISTIO_POSTRT"
"""The node's chain (nat POSTROUTING) for the probe SNAT."""
POSTROUTING = "POSTROUTING"

PROBE_COMMANDS = ("iptables-save", "ip6tables-save")
"""What the agent runs before the rules: it reads the current state of both families, to
find rules a previous run left (reconciliation). Istio's golden logs start with these."""

ANNOTATION_BYPASS_INBOUND_CAPTURE = "ambient.istio.io/bypass-inbound-capture"
"""``"true"``: ingress mode (no inbound capture; for gateways and such, which take non-mesh
traffic in and send to the mesh out)."""
ANNOTATION_DNS_CAPTURE = "ambient.istio.io/dns-capture"
"""``"true"``/``"false"``: this pod's DNS capture, whatever the agent's setting."""
ANNOTATION_REROUTE_VIRTUAL_INTERFACES = "istio.io/reroute-virtual-interfaces"
"""Comma-separated interfaces whose inbound TCP is treated as the pod's outbound traffic."""


def _mark(mark: int, mask: int) -> str:
    """A mark as iptables' options take it and Istio writes it: ``0x539/0xfff``."""
    return f"{mark:#x}/{mask:#x}"


ZTUNNEL_MARK_TEXT = _mark(INPOD_MARK, INPOD_MASK)
"""``0x539/0xfff``, as the rules write ztunnel's mark."""
CONNECTION_MARK_TEXT = _mark(INPOD_TPROXY_MARK, INPOD_TPROXY_MASK)
"""``0x111/0xfff``, as the rules and the ``ip rule`` write the connection mark."""


def _route_commands(ip: str, everything: str) -> tuple[str, str]:
    return (f"{ip} route add local {everything} dev lo table {ROUTE_TABLE_INBOUND}",
            f"{ip} rule add fwmark {CONNECTION_MARK_TEXT} pref {INPOD_RULE_PRIORITY} "
            f"lookup {ROUTE_TABLE_INBOUND}")  # fmt: skip


INPOD_ROUTE_COMMANDS: Mapping[int, tuple[str, str]] = {
    4: _route_commands("ip", "0.0.0.0/0"),
    6: _route_commands("ip -6", "::/0"),
}
"""The pod's routing setup per IP version, as ``ip`` commands (the agent makes them through
netlink, before the rules): table 100 gets one route, "every address is local, via ``lo``",
and an ``ip rule`` sends packets whose mark has ``0x111`` in its low 12 bits to that table.
(The agent *replaces* the route, so a second run is harmless, and skips the IPv6 route when
the pod's ``lo`` has IPv6 disabled.)"""


# ---------------------------------------------------------------------------------------------
# The inputs.
# ---------------------------------------------------------------------------------------------


class AmbientInputError(MeshlabError):
    """An agent setting or pod annotation Istio's ambient mode would not take as given.

    ``source`` names where the value came from (an annotation key, an option), ``value`` is
    the offending text, ``reason`` the message without the source."""

    def __init__(self, message: str, *, source: str, value: str) -> None:
        super().__init__(f"{source}: {message}")
        self.source = source
        self.value = value
        self.reason = message


def _address(value: object, version: int, source: str) -> IPv4Address | IPv6Address:
    try:
        address = ip_address(value.strip() if isinstance(value, str) else value)  # type: ignore[arg-type]
    except ValueError:
        raise AmbientInputError(
            f"{value!r} is not an IP address; write an IPv{version} address such as "
            f"{HOST_PROBE_SNAT_V4 if version == 4 else HOST_PROBE_SNAT_V6}",
            source=source, value=str(value)) from None
    if address.version != version:
        raise AmbientInputError(
            f"{address} is IPv{address.version}; this address must be IPv{version} "
            f"(the default is {HOST_PROBE_SNAT_V4 if version == 4 else HOST_PROBE_SNAT_V6})",
            source=source, value=str(value))
    return address


PROBE_SNAT_V4_SOURCE = "probe SNAT address (IPv4)"
PROBE_SNAT_V6_SOURCE = "probe SNAT address (IPv6)"


@dataclass(frozen=True)
class AgentConfig:
    """The node agent's own settings, the same for every pod of the node.

    ``dns_capture`` is the chart's ``cni.ambient.dnsCapture`` (``REDIRECT_DNS``; on by
    default), ``ipv6`` the agent's ``ENABLE_INBOUND_IPV6`` (also write the ip6tables rules;
    the istio-cni chart turns it on, ``ambient.ipv6: true``, and meshlab leaves it off, as
    Istio's own config type does, since the lessons are IPv4), and the probe addresses are
    ``HOST_PROBE_SNAT_ADDRESS``/``HOST_PROBE_V6_SNAT_ADDRESS`` (addresses may be given as
    text; they are checked and kept as address objects).
    """

    dns_capture: bool = True
    ipv6: bool = False
    probe_snat_v4: IPv4Address = HOST_PROBE_SNAT_V4
    probe_snat_v6: IPv6Address = HOST_PROBE_SNAT_V6

    def __post_init__(self) -> None:
        object.__setattr__(self, "probe_snat_v4",
                           _address(self.probe_snat_v4, 4, PROBE_SNAT_V4_SOURCE))
        object.__setattr__(self, "probe_snat_v6",
                           _address(self.probe_snat_v6, 6, PROBE_SNAT_V6_SOURCE))


_GO_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_GO_FALSE = ("0", "f", "F", "FALSE", "false", "False")
_IFNAME_FORBIDDEN = re.compile(r"[/:\s]")


def _boolean(annotations: Mapping[str, str], key: str) -> bool | None:
    """A boolean annotation as Go's ``strconv.ParseBool`` reads it; None when absent.

    Istio's agent logs a warning and *ignores* an annotation it cannot read (the pod then
    silently gets the agent's setting). meshlab refuses it instead: a typo should not quietly
    change what is captured."""
    if key not in annotations:
        return None
    value = annotations[key]
    if value in _GO_TRUE:
        return True
    if value in _GO_FALSE:
        return False
    raise AmbientInputError(
        f"{value!r} is not a boolean; write \"true\" or \"false\" (Istio also takes "
        f"{', '.join(v for v in _GO_TRUE + _GO_FALSE if v not in ('true', 'false'))}). "
        "Istio's agent would ignore this annotation with a warning",
        source=f"annotation {key}", value=value)


def _check_interface(name: str, source: str, value: str) -> None:
    """A Linux interface name, as the kernel's ``dev_valid_name`` takes it: 1 to 15
    characters, not ``.`` or ``..``, no ``/``, ``:`` or white space."""
    if not 1 <= len(name) <= 15 or name in (".", "..") or _IFNAME_FORBIDDEN.search(name) \
            or not name.isprintable():
        raise AmbientInputError(
            f"{name!r} is not a Linux interface name (1 to 15 characters, not '.' or '..', "
            "no '/', ':' or spaces); write names separated by commas, e.g. \"eth1,net1\"",
            source=source, value=value)


def _interfaces(annotations: Mapping[str, str]) -> tuple[str, ...]:
    """``istio.io/reroute-virtual-interfaces``: split on commas, blanks trimmed and empty
    items dropped (as the agent does), each a Linux interface name."""
    key = ANNOTATION_REROUTE_VIRTUAL_INTERFACES
    if key not in annotations:
        return ()
    value = annotations[key]
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    for name in names:
        _check_interface(name, f"annotation {key}", value)
    return names


@dataclass(frozen=True)
class PodOverrides:
    """What one pod changes, read from its annotations (Istio's ``PodLevelOverrides``).

    ``ingress_mode``: no inbound capture (and no probe bypass, which only matters with it);
    ``virtual_interfaces``: interfaces whose inbound TCP goes to ztunnel's outbound listener;
    ``dns_capture``: True or False for this pod, None to use the agent's setting.
    """

    ingress_mode: bool = False
    virtual_interfaces: tuple[str, ...] = ()
    dns_capture: bool | None = None

    def __post_init__(self) -> None:
        names = self.virtual_interfaces
        if isinstance(names, str):  # one name, or "a,b": a str is not a tuple of names
            raise AmbientInputError("give a tuple of names, e.g. ('net1', 'net2')",
                                    source="PodOverrides.virtual_interfaces", value=names)
        object.__setattr__(self, "virtual_interfaces", tuple(names))
        for name in self.virtual_interfaces:
            _check_interface(name, "PodOverrides.virtual_interfaces", name)

    @classmethod
    def from_annotations(cls, annotations: Mapping[str, str]) -> PodOverrides:
        """Read ``ambient.istio.io/bypass-inbound-capture``, ``ambient.istio.io/dns-capture``
        and ``istio.io/reroute-virtual-interfaces``; other annotations are not looked at.

        >>> PodOverrides.from_annotations({"ambient.istio.io/dns-capture": "false"})
        PodOverrides(ingress_mode=False, virtual_interfaces=(), dns_capture=False)
        """
        ingress = _boolean(annotations, ANNOTATION_BYPASS_INBOUND_CAPTURE)
        return cls(ingress_mode=bool(ingress),
                   virtual_interfaces=_interfaces(annotations),
                   dns_capture=_boolean(annotations, ANNOTATION_DNS_CAPTURE))


# ---------------------------------------------------------------------------------------------
# The result.
# ---------------------------------------------------------------------------------------------


_VERSIONS: Mapping[int | str, int] = {4: 4, 6: 6, "ipv4": 4, "ipv6": 6}


def _version(version: int | str) -> int:
    """4 or 6, from 4, 6, "ipv4" or "ipv6" (the netfilter family's name)."""
    number = _VERSIONS.get(version) if isinstance(version, int | str) else None
    if number is None:
        raise MeshlabError(f"IP version must be 4 or 6 (or 'ipv4'/'ipv6'), not {version!r}")
    return number


@dataclass(frozen=True)
class AmbientRules:
    """What the agent loads for one configuration: a pod's rules, or the node's.

    ``ipv4``/``ipv6`` are the exact documents fed to ``iptables-restore --noflush`` and
    ``ip6tables-restore --noflush`` (``ipv6`` is None without IPv6). ``route_commands`` are
    the pod's ``ip`` route and rule (none for the node).
    """

    ipv4: str
    ipv6: str | None
    where: Literal["pod", "node"]
    route_commands: tuple[str, ...] = ()
    config: AgentConfig = field(default_factory=AgentConfig, compare=False, repr=False)
    overrides: PodOverrides = field(default_factory=PodOverrides, compare=False, repr=False)

    def documents(self) -> tuple[str, ...]:
        """The restore documents in the order the agent applies them: IPv4, then IPv6."""
        return (self.ipv4,) if self.ipv6 is None else (self.ipv4, self.ipv6)

    def golden_text(self) -> str:
        """The agent's log as Istio's golden files hold it: the probe commands, then each
        restore document, joined by newlines, with no newline at the end."""
        return "\n".join((*PROBE_COMMANDS, *(doc.rstrip("\n") for doc in self.documents())))

    def document(self, version: int | str) -> str:
        """The restore document of one IP version (4 or 6)."""
        number = _version(version)
        text = self.ipv4 if number == 4 else self.ipv6
        if text is None:
            raise MeshlabError("these rules have no IPv6 document: the agent's IPv6 is off "
                               "(AgentConfig(ipv6=True) writes one)")
        return text

    @cached_property
    def ruleset_v4(self) -> Ruleset:
        """The IPv4 document read by :mod:`meshlab.netfilter` (what the kernel holds after
        it is loaded), for the kernel model to trace."""
        return parse_ruleset(self.ipv4, family="ipv4")

    @cached_property
    def ruleset_v6(self) -> Ruleset:
        """The IPv6 document as a Ruleset (an error when IPv6 is off)."""
        return parse_ruleset(self.document(6), family="ipv6")

    def ruleset(self, version: int | str = 4) -> Ruleset:
        """:attr:`ruleset_v4` or :attr:`ruleset_v6`, by IP version (4, 6, "ipv4", "ipv6").

        Only a pod's rules: the node's SNAT through an ipset (``-m set``, ``-m owner
        --socket-exists``, ``-j SNAT``) is outside what :mod:`meshlab.netfilter` models."""
        number = _version(version)
        if self.where == "node":
            raise MeshlabError(
                "the node's rules (nat POSTROUTING: -m set, --socket-exists, SNAT) are not "
                "modelled by meshlab.netfilter; trace the pod's rules (inpod_rules), whose "
                "probe rules see the SNATed source, or read the node's restore text")
        return self.ruleset_v4 if number == 4 else self.ruleset_v6

    def fwmark_routes(self, version: int | str = 4) -> tuple[FwmarkRoute, ...]:
        """The pod's ``ip rule`` and table-100 route of one IP version, as the kernel model's
        :class:`~meshlab.netfilter.kernel.FwmarkRoute` (give it to ``Netns``)."""
        number = _version(version)
        family = INPOD_ROUTE_COMMANDS[number]
        return fwmark_routes([c for c in self.route_commands if c in family])


def inpod_routes(version: int | str = 4) -> tuple[FwmarkRoute, ...]:
    """Every ambient pod's policy routing for one IP version: mark ``0x111/0xfff`` -> table
    100, where every address is local."""
    return fwmark_routes(INPOD_ROUTE_COMMANDS[_version(version)])


# ---------------------------------------------------------------------------------------------
# Generation.
# ---------------------------------------------------------------------------------------------

Add = Callable[..., None]
"""``add(table, chain, *params)``: append ``-A chain params`` to one family's rules."""


@dataclass(frozen=True)
class _Family:
    """What differs between the IPv4 and the IPv6 rules."""

    version: int
    localhost: str
    probe_snat: str


def _families(config: AgentConfig) -> list[_Family]:
    families = [_Family(4, "127.0.0.1/32", str(config.probe_snat_v4))]
    if config.ipv6:
        families.append(_Family(6, "::1/128", str(config.probe_snat_v6)))
    return families


def inpod_rules(config: AgentConfig | None = None,
                overrides: PodOverrides | None = None) -> AmbientRules:
    """The rules, route and ``ip rule`` the agent sets up in one ambient pod.

    >>> rules = inpod_rules(AgentConfig(dns_capture=False))
    >>> print(rules.ipv4.splitlines()[-2].replace(" -j", "\\n    -j"))
    -A ISTIO_OUTPUT ! -d 127.0.0.1/32 -p tcp -m mark ! --mark 0x539/0xfff
        -j REDIRECT --to-ports 15001
    >>> rules.fwmark_routes(4)
    (FwmarkRoute(mark=273, table=100, mask=4095),)
    """
    config = AgentConfig() if config is None else config
    overrides = PodOverrides() if overrides is None else overrides
    dns = config.dns_capture if overrides.dns_capture is None else overrides.dns_capture
    builder = RuleBuilder(enable_ipv6=config.ipv6)
    routes: list[str] = []
    for family in _families(config):
        add = builder.append_v4 if family.version == 4 else builder.append_v6
        _pod_family(add, family, dns, overrides)
        routes.append(INPOD_ROUTE_COMMANDS[family.version][0])
    routes += [INPOD_ROUTE_COMMANDS[family.version][1] for family in _families(config)]
    return AmbientRules(ipv4=builder.restore("ipv4"),
                        ipv6=builder.restore("ipv6") if config.ipv6 else None,
                        where="pod", route_commands=tuple(routes), config=config,
                        overrides=overrides)


def _pod_family(add: Add, f: _Family, dns: bool, pod: PodOverrides) -> None:
    """One family's rules, in the agent's order (the numbers are the module's list)."""
    ztunnel = ("-m", "mark", "--mark", ZTUNNEL_MARK_TEXT)
    not_ztunnel = ("-m", "mark", "!", "--mark", ZTUNNEL_MARK_TEXT)
    not_localhost = ("!", "-d", f.localhost)
    # 1. jumps into Istio's chains
    add(MANGLE, PREROUTING, "-j", ISTIO_PRERT)
    add(MANGLE, OUTPUT, "-j", ISTIO_OUTPUT)
    add(NAT, OUTPUT, "-j", ISTIO_OUTPUT)
    if dns:
        add(RAW, PREROUTING, "-j", ISTIO_PRERT)
        add(RAW, OUTPUT, "-j", ISTIO_OUTPUT)
    add(NAT, PREROUTING, "-j", ISTIO_PRERT)
    # 2. virtual interfaces: their inbound TCP is outbound traffic (TCP only: ztunnel cannot
    #    proxy arbitrary UDP); RETURN leaves Istio's chain, not all of PREROUTING
    for interface in pod.virtual_interfaces:
        add(NAT, ISTIO_PRERT, "-i", interface, "-p", "tcp",
            "-j", "REDIRECT", "--to-ports", str(ZTUNNEL_OUTBOUND_PORT))  # fmt: skip
        add(NAT, ISTIO_PRERT, "-i", interface, "-p", "tcp", "-j", "RETURN")
    # 3. ztunnel's packets give their connection the connmark 0x111
    add(MANGLE, ISTIO_PRERT, *ztunnel, "-j", "CONNMARK", "--set-xmark", CONNECTION_MARK_TEXT)
    # 4. kubelet probes (SNATed by the node) and their answers bypass ztunnel
    if not pod.ingress_mode:
        add(NAT, ISTIO_PRERT, "-s", f.probe_snat, "-p", "tcp", "-m", "tcp", "-j", "ACCEPT")
    add(NAT, ISTIO_OUTPUT, "-d", f.probe_snat, "-p", "tcp", "-m", "tcp", "-j", "ACCEPT")
    # 5. inbound plaintext to ztunnel's 15006; HBONE (15008) and ztunnel's own packets pass
    if not pod.ingress_mode:
        add(NAT, ISTIO_PRERT, *not_localhost, "-p", "tcp", "!", "--dport",
            str(ZTUNNEL_INBOUND_PORT), *not_ztunnel,
            "-j", "REDIRECT", "--to-ports", str(ZTUNNEL_INBOUND_PLAINTEXT_PORT))  # fmt: skip
    # 6. the connection's mark onto every packet the pod sends (the app's answers)
    restore_mask = f"{INPOD_RESTORE_MASK:#x}"
    add(MANGLE, ISTIO_OUTPUT, "-m", "connmark", "--mark", CONNECTION_MARK_TEXT,
        "-j", "CONNMARK", "--restore-mark", "--nfmask", restore_mask,
        "--ctmask", restore_mask)  # fmt: skip
    # 7. DNS to ztunnel's 15053 (note --to-port for UDP, --to-ports for TCP: Istio's text),
    #    and conntrack zone 1 for ztunnel's upstream queries and their answers
    if dns:
        add(NAT, ISTIO_OUTPUT, "!", "-o", "lo", "-p", "udp", *not_ztunnel,
            "-m", "udp", "--dport", "53", "-j", "REDIRECT", "--to-port", str(DNS_CAPTURE_PORT))
        add(NAT, ISTIO_OUTPUT, *not_localhost, "-p", "tcp", "--dport", "53", *not_ztunnel,
            "-j", "REDIRECT", "--to-ports", str(DNS_CAPTURE_PORT))  # fmt: skip
        add(RAW, ISTIO_OUTPUT, "-p", "udp", *ztunnel, "-m", "udp", "--dport", "53",
            "-j", "CT", "--zone", "1")  # fmt: skip
        add(RAW, ISTIO_PRERT, "-p", "udp", *not_ztunnel, "-m", "udp", "--sport", "53",
            "-j", "CT", "--zone", "1")  # fmt: skip
    # 8. answers going back to ztunnel, and the pod talking to itself over lo, are left alone
    add(NAT, ISTIO_OUTPUT, "-p", "tcp", "-m", "mark", "--mark", CONNECTION_MARK_TEXT,
        "-j", "ACCEPT")
    add(NAT, ISTIO_OUTPUT, *not_localhost, "-o", "lo", "-j", "ACCEPT")
    # 9. everything else the app sends over TCP goes to ztunnel's outbound listener
    add(NAT, ISTIO_OUTPUT, *not_localhost, "-p", "tcp", *not_ztunnel,
        "-j", "REDIRECT", "--to-ports", str(ZTUNNEL_OUTBOUND_PORT))  # fmt: skip


def node_rules(config: AgentConfig | None = None) -> AmbientRules:
    """The rules the agent writes in the *node's* namespace (``CreateHostRulesForHealthChecks``).

    Kubelet probes an ambient pod from the node; so does kube-proxy forward outside traffic
    to it, from the same node address. To tell them apart, nat POSTROUTING SNATs TCP to a pod
    in the ipset ``istio-inpod-probes-v4`` (``-v6``) *that a local socket sent*
    (``--socket-exists``: kubelet; forwarded packets have no socket) to
    :data:`HOST_PROBE_SNAT_V4`, which the pod's rules let bypass ztunnel. The jump is
    inserted at the top of POSTROUTING (``-I POSTROUTING 1``).
    """
    config = AgentConfig() if config is None else config
    builder = RuleBuilder(enable_ipv6=config.ipv6)
    for family in _families(config):
        if family.version == 4:
            insert, add = builder.insert_v4, builder.append_v4
        else:
            insert, add = builder.insert_v6, builder.append_v6
        insert(NAT, POSTROUTING, 1, "-j", ISTIO_POSTRT)
        add(NAT, ISTIO_POSTRT, "-m", "owner", "--socket-exists", "-p", "tcp",
            "-m", "set", "--match-set", f"{PROBE_IPSET}-v{family.version}", "dst",
            "-j", "SNAT", "--to-source", family.probe_snat)  # fmt: skip
    return AmbientRules(ipv4=builder.restore("ipv4"),
                        ipv6=builder.restore("ipv6") if config.ipv6 else None,
                        where="node", config=config)
