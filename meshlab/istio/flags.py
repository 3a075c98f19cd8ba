"""Every input of ``istio-iptables``, and its command line parsed the way Istio parses it.

``istio-iptables`` (run as ``pilot-agent istio-iptables`` by the ``istio-init`` container,
or called as a library by the Istio CNI plugin) decides which rules to write from three
kinds of input:

1. **Flags** such as ``-p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*'``. Each long
   flag is also read from an environment variable: upper-case it and replace ``-`` by ``_``
   (``--istio-inbound-ports`` <- ``ISTIO_INBOUND_PORTS``). The environment value is applied
   first and an explicit flag overrides it. ``-p`` has no environment variable, and three
   flags read a legacy variable as well (``REDIRECT_DNS`` also ``ISTIO_META_DNS_CAPTURE``,
   ``DROP_INVALID`` also ``INVALID_DROP``, ``DUAL_STACK`` also ``ISTIO_DUAL_STACK``).
2. **Environment-only knobs** without a flag: ``ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR``,
   ``ISTIO_OUTBOUND_OWNER_GROUPS``, ``ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE`` and ``ENVOY_USER``
   (the user whose UID is the default of ``-u``).
3. **Facts about the pod**: whether it has an IPv6 address (Istio looks at the pod's first
   non-loopback address) and the nameservers of ``/etc/resolv.conf`` (read only when DNS
   capture is on and ``--capture-all-dns`` is off). meshlab does not look at your machine
   for these: you pass them as keyword inputs (``enable_ipv6=``, ``dns_servers_v4=``,
   ``dns_servers_v6=``).

:class:`CaptureConfig` holds all of them as typed values; :meth:`CaptureConfig.from_args`
parses a command line (with ``--flag=value``, ``--flag value``, ``-f value``, ``-fvalue`` and
``-f=value`` as the Go ``pflag`` library accepts them) and rejects what Istio rejects, with a
message that says what to write instead. The flag table :data:`FLAGS` follows section 1.1 of
``ISTIO-FACTS.md`` (Istio master, August 2026).
"""

from __future__ import annotations

import difflib
import re
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv6Address,
    IPv6Interface,
    ip_address,
    ip_interface,
)
from typing import Any, Literal, TypeVar

from meshlab.errors import MeshlabError

__all__ = [
    "DEFAULT_ISTIO_INIT_ARGS",
    "ENV_ONLY",
    "FLAGS",
    "WILDCARD",
    "CaptureConfig",
    "CaptureFlagError",
    "EnvKnob",
    "FlagSpec",
    "split_command_line",
    "split_dns_servers",
]

WILDCARD: Literal["*"] = "*"
"""The value ``*`` of ``-b`` (every inbound port) and ``-i`` (every outbound destination)."""

IPInterface = IPv4Interface | IPv6Interface
Wildcard = Literal["*"]
T = TypeVar("T")

# fmt: off
DEFAULT_ISTIO_INIT_ARGS: tuple[str, ...] = (
    "-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT",
    "-i", "*", "-x", "", "-b", "*", "-d", "15090,15021,15020",
)
# fmt: on
"""The ``istio-init`` arguments the injection template renders for a default pod (after the
leading ``istio-iptables`` word, without ``--log_output_level=default:info``)."""

# Users that exist in Istio's proxyv2 image. Istio defaults ``-u`` to the UID of $ENVOY_USER
# ("istio-proxy") when that user exists, else to 1337; in the image istio-proxy *is* 1337.
_PROXYV2_IMAGE_USERS: Mapping[str, int] = {"root": 0, "istio-proxy": 1337}
_DEFAULT_PROXY_UID = 1337

# pilot-agent's shared logging flags: accepted and ignored (they do not change any rule).
_LOGGING_FLAGS_WITH_VALUE = frozenset(
    {"log_output_level", "log_caller", "log_stacktrace_level", "log_target"}
)
_LOGGING_FLAGS_BOOL = frozenset({"log_as_json"})

_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})
_MAX_OWNER_GROUPS_INCLUDE = 64  # Istio's limit: all groups go into one iptables rule
_LOOPBACK_CIDR = IPv4Interface("127.0.0.1/32")  # ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR's default


class CaptureFlagError(MeshlabError):
    """An ``istio-iptables`` flag, environment variable or pod input that Istio would not take.

    ``source`` says where the value came from (``"flag -b (word 3)"``,
    ``"environment ISTIO_INBOUND_PORTS"``), ``value`` is the offending text.
    """

    def __init__(self, message: str, *, source: str = "", value: str | None = None) -> None:
        super().__init__(f"{source}: {message}" if source else message)
        self.source = source
        self.value = value


# ---------------------------------------------------------------------------------------------
# Value parsers: text -> typed value, or CaptureFlagError saying how to fix it.
# ---------------------------------------------------------------------------------------------


def _split(text: str) -> list[str]:
    """Istio's ``config.Split``: split on commas and drop empty items (``"80,,90,"`` -> 2)."""
    return [item for item in text.split(",") if item]


def _port(text: str, source: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise CaptureFlagError(
            f"{text!r} is not a port number; write a decimal number from 1 to 65535",
            source=source,
            value=text,
        )
    port = int(text)
    if not 1 <= port <= 65535:
        raise CaptureFlagError(
            f"port {text} is out of range; TCP/UDP ports go from 1 to 65535",
            source=source,
            value=text,
        )
    return port


def _ports(text: str, source: str) -> tuple[int, ...]:
    if text.strip() == WILDCARD:
        raise CaptureFlagError(
            "'*' is not accepted here; list the ports, e.g. 15090,15021,15020",
            source=source,
            value=text,
        )
    return tuple(_port(item, source) for item in _split(text))


def _uint32(text: str, source: str, what: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) > 0xFFFFFFFF:
        raise CaptureFlagError(
            f"{text!r} is not a valid {what}; write a decimal number from 0 to 4294967295",
            source=source,
            value=text,
        )
    return int(text)


def _ids(text: str, source: str) -> tuple[int, ...]:
    """A comma list of numeric UIDs or GIDs (``-u 1337``, ``-g 1,2``)."""
    return tuple(_uint32(item, source, "numeric user or group id") for item in _split(text))


def _mark(text: str, source: str) -> int:
    return _uint32(text, source, "firewall mark")


def _route_table(text: str, source: str) -> int:
    table = _uint32(text, source, "routing table number")
    if table == 0 or 253 <= table <= 255:
        raise CaptureFlagError(
            f"routing table {table} is reserved by the kernel (0 unspec, 253 default, 254 main, "
            "255 local); pick another number such as 133",
            source=source,
            value=text,
        )
    return table


def _cidr(text: str, source: str) -> IPInterface:
    """One CIDR as Go's ``netip.ParsePrefix`` takes it: ``ADDRESS/BITS``, host bits allowed."""
    address, slash, bits = text.partition("/")
    if not slash or not bits.isascii() or not bits.isdigit():
        try:
            hint = f"{ip_address(text)}/{32 if ':' not in text else 128}"
        except ValueError:  # not an address either: show a CIDR of each family
            hint = "10.0.0.0/8 or 2001:db8::/32"
        raise CaptureFlagError(
            f"{text!r} is not a CIDR; write an address and a prefix length, e.g. {hint}",
            source=source,
            value=text,
        )
    try:
        return ip_interface(f"{address}/{int(bits)}")
    except ValueError as error:
        raise CaptureFlagError(
            f"{text!r} is not a CIDR ({error}); write e.g. 10.0.0.0/8 or 2001:db8::/32",
            source=source,
            value=text,
        ) from None


def _cidrs(text: str, source: str) -> tuple[IPInterface, ...]:
    if text == WILDCARD or WILDCARD in _split(text):
        raise CaptureFlagError(
            "'*' is rejected by istio-iptables (\"invalid value for OUTBOUND_IP_RANGES_EXCLUDE\"): "
            "excluding every destination would make -i meaningless; list CIDRs instead, or "
            "leave -x empty and -i empty to capture nothing",
            source=source,
            value=text,
        )
    return tuple(_cidr(item, source) for item in _split(text))


def _list_or_wildcard(read: Callable[[str, str], tuple[T, ...]], items: str, example: str
                      ) -> Callable[[str, str], tuple[T, ...] | Wildcard]:
    """A reader of ``'*'`` alone, or of a comma list read by ``read``; ``'*'`` inside a list
    (``80,*``) is refused, saying which of the two to give."""
    def read_list_or_wildcard(text: str, source: str) -> tuple[T, ...] | Wildcard:
        if text == WILDCARD:
            return WILDCARD
        if WILDCARD in _split(text):
            raise CaptureFlagError(
                f"{text!r} mixes '*' with {items}; give either {example}",
                source=source,
                value=text,
            )
        return read(text, source)

    return read_list_or_wildcard


_ports_or_wildcard = _list_or_wildcard(_ports, "ports", "'*' (every port) or a list like 80,8080")
_cidrs_or_wildcard = _list_or_wildcard(_cidrs, "CIDRs", "'*' or a list like 10.0.0.0/8,fd00::/8")


_IFNAME = re.compile(r"[^\s/:]{1,15}")


def _interfaces(text: str, source: str) -> tuple[str, ...]:
    names = _split(text)
    for name in names:
        if not _IFNAME.fullmatch(name) or name in (".", ".."):
            raise CaptureFlagError(
                f"{name!r} is not a Linux interface name (1-15 characters, no '/', ':' or "
                "spaces), e.g. eth1",
                source=source,
                value=text,
            )
    return tuple(names)


_GROUP = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\$?")


def _groups(text: str, source: str) -> tuple[str, ...]:
    groups = _split(text)
    for group in groups:
        if not _GROUP.fullmatch(group):
            raise CaptureFlagError(
                f"{group!r} is not a group name or numeric GID, e.g. java or 202",
                source=source,
                value=text,
            )
    return tuple(groups)


def _groups_or_wildcard(text: str, source: str) -> tuple[str, ...] | Wildcard:
    if text == WILDCARD:
        return WILDCARD
    return _groups(text, source)


def _bool(text: str, source: str) -> bool:
    """A boolean as Go's ``strconv.ParseBool`` reads it (``true``, ``1``, ``F``, ...)."""
    if text in _GO_TRUE:
        return True
    if text in _GO_FALSE:
        return False
    raise CaptureFlagError(
        f"{text!r} is not a boolean; write true or false",
        source=source,
        value=text,
    )


def _string(text: str, source: str) -> str:
    return text


_DURATION = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|ms|s|m|h)")


def _duration(text: str, source: str) -> str:
    """A Go duration (``5s``, ``1m30s``, ``500ms``), kept as written."""
    body = text[1:] if text[:1] in "+-" else text
    if body != "0" and not (body and re.fullmatch(f"(?:{_DURATION.pattern})+", body)):
        raise CaptureFlagError(
            f"{text!r} is not a Go duration; write e.g. 5s, 500ms or 1m30s",
            source=source,
            value=text,
        )
    return text


# ---------------------------------------------------------------------------------------------
# The flag table.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FlagSpec:
    """One ``istio-iptables`` flag: its names, environment variables and the field it sets."""

    long: str
    """Long name without dashes, e.g. ``istio-inbound-ports``."""
    short: str | None
    """One-letter name, e.g. ``b``, or None."""
    field: str
    """The :class:`CaptureConfig` field it sets."""
    parse: Callable[[str, str], Any]
    env: tuple[str, ...]
    """Environment variables read when the flag is absent, first non-empty wins."""
    help: str
    since: str
    """First Istio release whose istio-iptables has the flag (``<=1.4`` = the Go rewrite)."""
    is_bool: bool = False

    @property
    def names(self) -> str:
        """``-b/--istio-inbound-ports`` (for messages and help)."""
        return f"-{self.short}/--{self.long}" if self.short else f"--{self.long}"


def _env(long: str) -> tuple[str, ...]:
    return (long.upper().replace("-", "_"),)


def _flag(
    long: str,
    short: str | None,
    field: str,
    parse: Callable[[str, str], Any],
    help: str,
    since: str,
    *,
    env: tuple[str, ...] | None = None,
    is_bool: bool = False,
) -> FlagSpec:
    return FlagSpec(
        long, short, field, parse, _env(long) if env is None else env, help, since, is_bool
    )


# fmt: off
FLAGS: tuple[FlagSpec, ...] = (
    _flag("envoy-port", "p", "proxy_port", _port,
          "outbound capture port: target of ISTIO_REDIRECT", "<=1.4", env=()),
    _flag("inbound-capture-port", "z", "inbound_capture_port", _port,
          "inbound capture port: target of ISTIO_IN_REDIRECT and of TPROXY --on-port", "<=1.4"),
    _flag("inbound-tunnel-port", "e", "inbound_tunnel_port", _port,
          "HBONE tunnel port, always RETURNed in nat ISTIO_INBOUND", "1.7"),
    _flag("proxy-uid", "u", "proxy_uid", _ids,
          "comma list of UIDs whose outbound traffic is not captured (the proxy's); "
          "except their calls to the pod's own IP via lo (not 127.0.0.1), which go to "
          "ISTIO_IN_REDIRECT (inbound)", "<=1.4"),
    _flag("proxy-gid", "g", "proxy_gid", _ids,
          "comma list of GIDs treated like -u's UIDs (default: the -u list); the same "
          "exception: calls to the pod's own IP via lo go to ISTIO_IN_REDIRECT", "<=1.4"),
    _flag("istio-inbound-interception-mode", "m", "interception_mode", _string,
          "REDIRECT or TPROXY; only the exact text TPROXY changes anything", "<=1.4"),
    _flag("istio-inbound-tproxy-mark", "t", "tproxy_mark", _mark,
          "firewall mark used in TPROXY mode", "<=1.4"),
    _flag("istio-inbound-tproxy-route-table", "r", "tproxy_route_table", _route_table,
          "policy-routing table used in TPROXY mode", "<=1.4"),
    _flag("istio-inbound-ports", "b", "inbound_ports_include", _ports_or_wildcard,
          "inbound ports to capture, or '*'; empty = no inbound capture", "<=1.4"),
    _flag("istio-local-exclude-ports", "d", "inbound_ports_exclude", _ports,
          "inbound ports never captured; only used when -b is '*'", "<=1.4"),
    _flag("istio-exclude-interfaces", "c", "exclude_interfaces", _interfaces,
          "interfaces whose traffic is never captured", "1.12 (-c since 1.15)"),
    _flag("istio-service-cidr", "i", "outbound_ip_ranges_include", _cidrs_or_wildcard,
          "outbound CIDRs to capture, or '*'; empty = no outbound capture", "<=1.4"),
    _flag("istio-service-exclude-cidr", "x", "outbound_ip_ranges_exclude", _cidrs,
          "outbound CIDRs never captured ('*' is rejected)", "<=1.4"),
    _flag("istio-outbound-ports", "q", "outbound_ports_include", _ports,
          "outbound TCP ports always captured, whatever the destination", "1.7"),
    _flag("istio-local-outbound-ports-exclude", "o", "outbound_ports_exclude", _ports,
          "outbound ports never captured (TCP and UDP)", "<=1.4"),
    _flag("kube-virt-interfaces", "k", "kube_virt_interfaces", _interfaces,
          "interfaces whose inbound traffic is treated as outbound", "<=1.4"),
    _flag("dry-run", "n", "dry_run", _bool,
          "do not run iptables (rules are the same)", "<=1.4", is_bool=True),
    _flag("iptables-probe-port", None, "iptables_probe_port", _port,
          "port dialled by --run-validation", "1.5"),
    _flag("probe-timeout", None, "probe_timeout", _duration,
          "validation timeout (a Go duration)", "1.5"),
    _flag("skip-rule-apply", None, "skip_rule_apply", _bool,
          "do not program rules (used with CNI)", "1.5", is_bool=True),
    _flag("run-validation", None, "run_validation", _bool,
          "check that redirection works (exit code 126 when not)", "1.5", is_bool=True),
    _flag("redirect-dns", None, "redirect_dns", _bool,
          "capture DNS to the agent on 15053", "1.9",
          env=("REDIRECT_DNS", "ISTIO_META_DNS_CAPTURE"), is_bool=True),
    _flag("capture-all-dns", None, "capture_all_dns", _bool,
          "capture all port-53 traffic, not only the resolv.conf nameservers", "1.11",
          is_bool=True),
    _flag("network-namespace", None, "network_namespace", _string,
          "network namespace to program", "1.11"),
    _flag("cni-mode", None, "cni_mode", _bool,
          "running inside the CNI plugin", "1.11", is_bool=True),
    _flag("drop-invalid", None, "drop_invalid", _bool,
          "drop conntrack-INVALID packets in mangle PREROUTING", "1.13",
          env=("DROP_INVALID", "INVALID_DROP"), is_bool=True),
    _flag("dual-stack", None, "dual_stack", _bool,
          "look at every pod IP when deciding whether IPv6 is on", "1.20",
          env=("DUAL_STACK", "ISTIO_DUAL_STACK"), is_bool=True),
    _flag("reconcile", None, "reconcile", _bool,
          "clean up drifted Istio rules before applying", "1.24", is_bool=True),
    _flag("cleanup-only", None, "cleanup_only", _bool,
          "only remove Istio chains and rules", "1.24", is_bool=True),
    _flag("force-apply", None, "force_apply", _bool,
          "apply even if the rules look present", "1.24", is_bool=True),
    _flag("native-nftables", None, "native_nftables", _bool,
          "use the nftables backend instead of iptables", "1.27", is_bool=True),
    _flag("force-iptables-binary", None, "force_iptables_binary", _string,
          "force a specific iptables binary", "1.28"),
)
# fmt: on
"""Every flag of ``istio-iptables`` at Istio master (ISTIO-FACTS.md section 1.1)."""

_BY_LONG: Mapping[str, FlagSpec] = {spec.long: spec for spec in FLAGS}
_BY_SHORT: Mapping[str, FlagSpec] = {spec.short: spec for spec in FLAGS if spec.short}


@dataclass(frozen=True, slots=True)
class EnvKnob:
    """An input read only from the environment (no flag)."""

    name: str
    field: str
    parse: Callable[[str, str], Any]
    default: str
    help: str


def _loopback_cidr(text: str, source: str) -> IPv4Interface:
    """Istio's ``ValidateIPv4LoopbackCidr``: an IPv4 loopback CIDR with a /8../32 mask."""
    cidr = _cidr(text, source)
    if not isinstance(cidr, IPv4Interface) or not cidr.ip.is_loopback:
        raise CaptureFlagError(
            f"expected an IPv4 loopback CIDR (inside 127.0.0.0/8), got {text!r}; e.g. 127.0.0.1/32",
            source=source,
            value=text,
        )
    if not 8 <= cidr.network.prefixlen <= 32:
        raise CaptureFlagError(
            f"the mask of {text!r} must be between /8 and /32",
            source=source,
            value=text,
        )
    return cidr


# fmt: off
ENV_ONLY: tuple[EnvKnob, ...] = (
    EnvKnob("ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR", "ipv4_loopback_cidr", _loopback_cidr,
            "127.0.0.1/32", "the IPv4 'localhost' CIDR of the ! -d / -d ... RETURN rules"),
    EnvKnob("ISTIO_OUTBOUND_OWNER_GROUPS", "owner_groups_include", _groups_or_wildcard,
            "*", "groups whose outbound traffic is captured (names or GIDs), or '*'"),
    EnvKnob("ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE", "owner_groups_exclude", _groups,
            "", "groups whose outbound traffic is not captured (when the include list is '*')"),
)
# fmt: on
"""Environment-only knobs (ISTIO-FACTS.md section 1.1). ``ENVOY_USER`` is handled apart: it
only chooses the default of ``-u``."""


# ---------------------------------------------------------------------------------------------
# The configuration.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaptureConfig:
    """Every input of ``istio-iptables``; the defaults are Istio's own (no inbound capture,
    no outbound capture: what ``istio-iptables`` does with no flags at all).

    Build one from a command line with :meth:`from_args`, or directly with keywords
    (``CaptureConfig(inbound_ports_include="*", outbound_ip_ranges_include="*")``); lists are
    tuples, ``"*"`` is the wildcard. :meth:`to_args` and :meth:`to_env` give the command line
    and environment back.
    """

    # --- flags (section 1.1 of the facts, in the table's order) ---
    proxy_port: int = 15001
    inbound_capture_port: int = 15006
    inbound_tunnel_port: int = 15008
    proxy_uid: tuple[int, ...] = (1337,)
    proxy_gid: tuple[int, ...] = (1337,)
    interception_mode: str = ""
    tproxy_mark: int = 1337
    tproxy_route_table: int = 133
    inbound_ports_include: tuple[int, ...] | Wildcard = ()
    inbound_ports_exclude: tuple[int, ...] = ()
    exclude_interfaces: tuple[str, ...] = ()
    outbound_ip_ranges_include: tuple[IPInterface, ...] | Wildcard = ()
    outbound_ip_ranges_exclude: tuple[IPInterface, ...] = ()
    outbound_ports_include: tuple[int, ...] = ()
    outbound_ports_exclude: tuple[int, ...] = ()
    kube_virt_interfaces: tuple[str, ...] = ()
    dry_run: bool = False
    iptables_probe_port: int = 15002
    probe_timeout: str = "5s"
    skip_rule_apply: bool = False
    run_validation: bool = False
    redirect_dns: bool = False
    capture_all_dns: bool = False
    network_namespace: str = ""
    cni_mode: bool = False
    drop_invalid: bool = False
    dual_stack: bool = False
    reconcile: bool = False
    cleanup_only: bool = False
    force_apply: bool = False
    native_nftables: bool = False
    force_iptables_binary: str = ""
    # --- environment-only knobs ---
    ipv4_loopback_cidr: IPv4Interface = _LOOPBACK_CIDR
    owner_groups_include: tuple[str, ...] | Wildcard = WILDCARD
    owner_groups_exclude: tuple[str, ...] = ()
    # --- facts about the pod (Istio detects them; meshlab takes them as inputs) ---
    enable_ipv6: bool = False
    dns_servers_v4: tuple[str, ...] = ()
    dns_servers_v6: tuple[str, ...] = ()

    # ---- derived views used by the generator ----

    @property
    def is_tproxy(self) -> bool:
        """True only for the exact mode text ``TPROXY``; anything else means nat REDIRECT."""
        return self.interception_mode == "TPROXY"

    @property
    def dns_capture_active(self) -> bool:
        """``--redirect-dns`` as the generator applies it: Istio silently turns DNS capture off
        when ``--capture-all-dns`` is off and resolv.conf listed no nameserver."""
        return self.redirect_dns and (
            self.capture_all_dns or bool(self.dns_servers_v4) or bool(self.dns_servers_v6)
        )

    # ---- parsing ----

    @classmethod
    def from_args(
        cls,
        argv: Sequence[str] | str,
        env: Mapping[str, str] | None = None,
        *,
        enable_ipv6: bool = False,
        dns_servers_v4: Iterable[str] = (),
        dns_servers_v6: Iterable[str] = (),
    ) -> CaptureConfig:
        """Parse an ``istio-iptables`` command line the way Istio does.

        ``argv`` is a list of words, or one string split as a shell would (``-i '*' -x ""``
        works, see :func:`split_command_line`). A leading ``istio-iptables`` word is
        skipped; pilot-agent's logging flags (``--log_output_level=...``, ``--log_as_json``)
        are accepted and ignored. ``env`` is the container's environment; None means an empty
        one (your shell's environment is not the pod's). Environment values apply first and
        flags override them; empty environment values count as unset.

        ``enable_ipv6`` and the nameservers are what Istio reads from the pod (its addresses
        and ``/etc/resolv.conf``). Raises :class:`CaptureFlagError` for anything Istio would
        reject, or that would not give a working rule.
        """
        words = split_command_line(argv) if isinstance(argv, str) else list(argv)
        env = {} if env is None else env
        given = _scan(words)
        values: dict[str, Any] = {}
        for spec in FLAGS:
            if spec.field in given:
                text, source = given[spec.field]
            else:
                found = _lookup_env(env, spec.env)
                if found is None:
                    continue
                name, text = found
                source = f"environment {name}"
            values[spec.field] = spec.parse(text, source)
        for knob in ENV_ONLY:
            found = _lookup_env(env, (knob.name,))
            if found is not None:
                values[knob.field] = knob.parse(found[1], f"environment {knob.name}")

        # -u empty: the UID of $ENVOY_USER in the proxy image, else 1337. -g empty: the -u list.
        if not values.get("proxy_uid"):
            user = (_lookup_env(env, ("ENVOY_USER",)) or ("", "istio-proxy"))[1]
            values["proxy_uid"] = (_PROXYV2_IMAGE_USERS.get(user, _DEFAULT_PROXY_UID),)
        if not values.get("proxy_gid"):
            values["proxy_gid"] = values["proxy_uid"]

        v4, v6 = _dns_servers(dns_servers_v4, dns_servers_v6)
        config = cls(**values, enable_ipv6=bool(enable_ipv6), dns_servers_v4=v4, dns_servers_v6=v6)
        config.validate()
        return config

    def validate(self) -> None:
        """Istio's ``Config.Validate`` checks that are not tied to one value's syntax."""
        include = self.owner_groups_include
        if include != WILDCARD and len(include) > _MAX_OWNER_GROUPS_INCLUDE:
            raise CaptureFlagError(
                f"at most {_MAX_OWNER_GROUPS_INCLUDE} owner groups can be captured (they all go "
                f"into one iptables rule), got {len(include)}; use "
                "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE with ISTIO_OUTBOUND_OWNER_GROUPS='*' instead",
                source="environment ISTIO_OUTBOUND_OWNER_GROUPS",
            )
        if self.outbound_ip_ranges_exclude == WILDCARD:
            _cidrs(WILDCARD, "-x/--istio-service-exclude-cidr")

    # ---- back to text ----

    def to_args(self) -> list[str]:
        """The ``istio-iptables`` flags that give this configuration back (with ``env={}``).

        ``-p -z -u -g`` are always written; other flags only when they differ from Istio's
        default. Environment-only knobs are in :meth:`to_env`; ``enable_ipv6`` and the
        nameservers are pod facts with no flag.
        """
        args: list[str] = []
        defaults = _DEFAULT
        for spec in FLAGS:
            value = getattr(self, spec.field)
            always = spec.short in ("p", "z", "u", "g")
            if not always and value == getattr(defaults, spec.field):
                continue
            if spec.is_bool:
                args.append(f"--{spec.long}" if value else f"--{spec.long}=false")
                continue
            flag = f"-{spec.short}" if spec.short else f"--{spec.long}"
            args += [flag, _render(value)]
        return args

    def to_env(self) -> dict[str, str]:
        """The environment-only knobs that differ from their defaults, as variables."""
        env: dict[str, str] = {}
        for knob in ENV_ONLY:
            value = getattr(self, knob.field)
            if value != getattr(_DEFAULT, knob.field):
                env[knob.name] = _render(value)
        return env


_DEFAULT = CaptureConfig()


def _render(value: object) -> str:
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value)
    return str(value)


def _lookup_env(env: Mapping[str, str], names: Iterable[str]) -> tuple[str, str] | None:
    for name in names:
        text = env.get(name)
        if text:
            return name, text
    return None


def _dns_servers(v4: Iterable[str], v6: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Check each nameserver's family; keep the text as given (Istio prints ``S + "/32"``)."""
    checked: list[tuple[str, ...]] = []
    for servers, family, kind in ((v4, 4, IPv4Address), (v6, 6, IPv6Address)):
        out = []
        for server in servers:
            text = str(server)
            try:
                address = ip_address(text)
            except ValueError:
                raise CaptureFlagError(
                    f"{text!r} is not an IP address; a nameserver is written like 10.96.0.10",
                    source=f"DNS servers (IPv{family})",
                    value=text,
                ) from None
            if not isinstance(address, kind):
                raise CaptureFlagError(
                    f"{text!r} is not an IPv{family} address; pass it with the IPv"
                    f"{10 - family} nameservers (or use split_dns_servers)",
                    source=f"DNS servers (IPv{family})",
                    value=text,
                )
            out.append(text)
        checked.append(tuple(out))
    return checked[0], checked[1]


def split_command_line(text: str) -> list[str]:
    """Split a command line typed as one string into words, with shell quoting rules."""
    try:
        return shlex.split(text)
    except ValueError as error:  # e.g. "No closing quotation"
        raise CaptureFlagError(
            f"cannot split the command line: {error}; close every quote, e.g. -i '*' -x ''",
            source="command line",
            value=text,
        ) from None


def split_dns_servers(servers: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split resolv.conf-style nameservers into (IPv4, IPv6) lists, as Istio does."""
    v4: list[str] = []
    v6: list[str] = []
    for server in servers:
        text = str(server)
        try:
            address = ip_address(text)
        except ValueError:
            raise CaptureFlagError(
                f"{text!r} is not an IP address; a nameserver is written like 10.96.0.10",
                source="DNS servers",
                value=text,
            ) from None
        (v4 if address.version == 4 else v6).append(text)
    return tuple(v4), tuple(v6)


# ---------------------------------------------------------------------------------------------
# The command-line scanner (pflag's rules).
# ---------------------------------------------------------------------------------------------


def _all_flag_names() -> list[str]:
    names = [f"--{spec.long}" for spec in FLAGS]
    names += [f"--{name}" for name in sorted(_LOGGING_FLAGS_WITH_VALUE | _LOGGING_FLAGS_BOOL)]
    return names


def _unknown(word: str, position: int) -> CaptureFlagError:
    name = word.split("=", 1)[0]
    if len(name) == 2 and name[0] == "-":
        shorts = " ".join(f"-{letter}" for letter in _BY_SHORT)
        return CaptureFlagError(
            f"unknown shorthand flag {name}; the one-letter flags are {shorts}",
            source=f"word {position}",
            value=word,
        )
    guesses = difflib.get_close_matches(name, _all_flag_names(), n=1, cutoff=0.6)
    if not guesses and not name.startswith("--"):
        guesses = difflib.get_close_matches("-" + name, _all_flag_names(), n=1, cutoff=0.6)
    hint = (
        f"; did you mean {guesses[0]}?"
        if guesses
        else "; see `meshlab rules --help` for the istio-iptables flags"
    )
    return CaptureFlagError(f"unknown flag {name}{hint}", source=f"word {position}", value=word)


def _looks_like_flag(word: str) -> bool:
    if word.startswith("--"):
        return word[2:].split("=", 1)[0] in _BY_LONG
    return len(word) >= 2 and word[0] == "-" and word[1] in _BY_SHORT


def _scan(words: list[str]) -> dict[str, tuple[str, str]]:
    """Walk the words as pflag would; return ``field -> (value text, source)``; last one wins."""
    given: dict[str, tuple[str, str]] = {}
    i = 0
    if words[:2] == ["pilot-agent", "istio-iptables"]:
        i = 2
    elif words[:1] == ["istio-iptables"]:
        i = 1

    def take_value(spec: FlagSpec, shown: str, position: int) -> str:
        nonlocal i
        if i >= len(words):
            raise CaptureFlagError(
                f"flag {shown} needs a value ({spec.help}); to give an empty value write "
                f"{shown}=''",
                source=f"word {position}",
            )
        value = words[i]
        if _looks_like_flag(value):
            raise CaptureFlagError(
                f"flag {shown} needs a value, but the next word {value!r} is a flag; to give an "
                f"empty value write {shown} '' (or {shown}=)",
                source=f"word {position}",
                value=value,
            )
        i += 1
        return value

    while i < len(words):
        word = words[i]
        position = i + 1
        i += 1
        if word == "--":
            if i < len(words):
                raise _positional(words[i], i + 1)
            break
        if word.startswith("--"):
            name, eq, inline = word[2:].partition("=")
            if name in _LOGGING_FLAGS_BOOL:
                continue
            if name in _LOGGING_FLAGS_WITH_VALUE:
                if not eq:
                    i += 1  # its value is the next word
                continue
            spec = _BY_LONG.get(name)
            if spec is None:
                raise _unknown(word, position)
            shown = f"--{name}"
            if spec.is_bool:
                value = inline if eq else "true"
            else:
                value = inline if eq else take_value(spec, shown, position)
            given[spec.field] = (value, f"flag {shown} (word {position})")
            continue
        if word.startswith("-") and len(word) > 2 and word[1:].split("=", 1)[0] in _BY_LONG:
            raise CaptureFlagError(
                f"long flags take two dashes: write -{word}",
                source=f"word {position}",
                value=word,
            )
        if word.startswith("-") and len(word) > 1:
            # Shorthands: -b VALUE, -bVALUE, -b=VALUE; booleans (-n) may be grouped: -nb '*'.
            letters = word[1:]
            while letters:
                letter, letters = letters[0], letters[1:]
                spec = _BY_SHORT.get(letter)
                if spec is None:
                    raise _unknown(f"-{letter}", position)
                shown = f"-{letter}"
                if spec.is_bool:
                    if letters.startswith("="):
                        given[spec.field] = (letters[1:], f"flag {shown} (word {position})")
                        letters = ""
                    else:
                        given[spec.field] = ("true", f"flag {shown} (word {position})")
                    continue
                if letters:
                    value = letters[1:] if letters.startswith("=") else letters
                    letters = ""
                else:
                    value = take_value(spec, shown, position)
                given[spec.field] = (value, f"flag {shown} (word {position})")
            continue
        raise _positional(word, position)
    return given


def _positional(word: str, position: int) -> CaptureFlagError:
    hint = ""
    if word in _GO_TRUE | _GO_FALSE:
        hint = "; a boolean flag takes its value after '=', e.g. --redirect-dns=false"
    elif word == "":
        hint = "; an empty word can only be the value of a flag such as -x ''"
    return CaptureFlagError(
        f"unexpected argument {word!r}: istio-iptables takes only flags{hint}",
        source=f"word {position}",
        value=word,
    )
