"""``meshlab rules``: print the rules ``istio-iptables`` writes for the flags you give it.

Usage::

    meshlab rules [--format restore|save] [--ipv6] [--dns-server IP]... [--env NAME=VALUE]...
                  [--] [ISTIO_FLAGS...]
    meshlab rules --ambient [--no-dns-capture] [--ipv6] [--annotation KEY=VALUE]...
                  [--probe-snat IP] [--probe-snat-v6 IP] [--node] [--format restore|save]

``ISTIO_FLAGS`` are ``istio-iptables``' own flags, written as in the ``istio-init``
container (``-p 15001 -b '*' ...``, a leading ``istio-iptables`` word allowed). With none,
the default ``istio-init`` arguments are used. meshlab's options may stand anywhere before a
``--``; everything after ``--`` is passed to istio-iptables as is.

Output (stdout): ``--format restore`` (default) prints the ``iptables-restore`` document(s)
exactly as istio-iptables feeds them to ``iptables-restore --noflush`` (IPv4, then IPv6 when
``--ipv6``); ``--format save`` prints what ``iptables-save``/``ip6tables-save`` would then
show in the pod. Notes and the routing commands Istio runs after the rules go to stderr as
``#`` comments, so stdout stays exact.

``--ambient`` prints instead what the istio-cni node agent loads into an *ambient* pod
(:mod:`meshlab.istio.ambient`): its agent settings are options here (DNS capture on unless
``--no-dns-capture``, the probe SNAT addresses), the pod's own overrides are its annotations
(``--annotation ambient.istio.io/bypass-inbound-capture=true``...), and ``--node`` prints the
node's rules (the kubelet probe SNAT) instead of the pod's.

Why the hand-made split: argparse would take ``-b``/``-x``... for its own (unknown)
options, so the ``rules`` sub-parser picks out meshlab's four options itself and leaves every
other word, untouched, to :meth:`meshlab.istio.flags.CaptureConfig.from_args`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from meshlab.errors import MeshlabError
from meshlab.istio.ambient import (
    ANNOTATION_BYPASS_INBOUND_CAPTURE,
    ANNOTATION_DNS_CAPTURE,
    ANNOTATION_REROUTE_VIRTUAL_INTERFACES,
    PROBE_SNAT_V4_SOURCE,
    AgentConfig,
    AmbientInputError,
    AmbientRules,
    PodOverrides,
    inpod_rules,
    node_rules,
)
from meshlab.istio.capture import CaptureRules, generate
from meshlab.istio.flags import (
    DEFAULT_ISTIO_INIT_ARGS,
    FLAGS,
    CaptureConfig,
    CaptureFlagError,
    split_dns_servers,
)

NAME = "rules"
_OWN_WITH_VALUE = ("--format", "--dns-server", "--env", "--annotation", "--probe-snat",
                   "--probe-snat-v6")
_OWN_SWITCHES = ("-h", "--help", "--ipv6", "--ambient", "--no-dns-capture", "--node")

_DESCRIPTION = """\
Print the iptables rules istio-iptables writes for the given flags, exactly as it feeds
them to iptables-restore (IPv4, then IPv6 with --ipv6), or with --format save as
iptables-save would then show them in the pod. With no flags: the default istio-init
arguments (-p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x '' -b '*' -d 15090,15021,15020).
Write `meshlab rules istio-iptables` to see what istio-iptables does with no flag at all.
With --ambient: the rules the istio-cni node agent loads into an ambient pod (no sidecar)."""


def _flag_table() -> str:
    rows = [f"  {spec.names:<38} {spec.help}" for spec in FLAGS]
    return "istio-iptables flags:\n" + "\n".join(rows)


def split_arguments(words: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate meshlab's own options from the istio-iptables flags (order kept in each)."""
    own: list[str] = []
    istio: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--":
            istio += words[i + 1 :]
            break
        name = word.split("=", 1)[0]
        if word in _OWN_SWITCHES:
            own.append(word)
        elif name in _OWN_WITH_VALUE:
            own.append(word)
            if "=" not in word and i + 1 < len(words):
                own.append(words[i + 1])
                i += 1
        else:
            istio.append(word)
        i += 1
    return own, istio


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``rules`` sub-command to the ``meshlab`` parser."""
    p = subparsers.add_parser(
        NAME,
        help="print the iptables rules istio-iptables writes for given flags",
        description=_DESCRIPTION,
        epilog=_flag_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="meshlab rules [--format {restore,save}] [--ipv6] [--dns-server IP] "
        "[--env NAME=VALUE] [--] [ISTIO_FLAGS ...]\n"
        "       meshlab rules --ambient [--no-dns-capture] [--ipv6] [--annotation KEY=VALUE] "
        "[--probe-snat IP] [--probe-snat-v6 IP] [--node] [--format {restore,save}]",
    )
    p.add_argument(
        "--format",
        choices=("restore", "save"),
        default="restore",
        help="restore: the documents fed to iptables-restore (default); "
        "save: what iptables-save shows afterwards",
    )
    p.add_argument(
        "--ipv6",
        action="store_true",
        help="the pod has an IPv6 address: also print the ip6tables document",
    )
    p.add_argument(
        "--dns-server",
        action="append",
        default=[],
        metavar="IP",
        help="a nameserver of the pod's /etc/resolv.conf (repeatable); used by --redirect-dns",
    )
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable of the istio-init container (repeatable), e.g. "
        "ISTIO_OUTBOUND_OWNER_GROUPS=1000",
    )
    ambient = p.add_argument_group(
        "ambient mode", "the istio-cni node agent's rules for a pod without a sidecar")
    ambient.add_argument(
        "--ambient",
        action="store_true",
        help="print the agent's in-pod rules instead of istio-iptables' (no ISTIO_FLAGS then)",
    )
    ambient.add_argument(
        "--no-dns-capture",
        action="store_true",
        help="the agent's DNS capture is off (the chart's default is on)",
    )
    ambient.add_argument(
        "--annotation",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"a pod annotation (repeatable): {ANNOTATION_BYPASS_INBOUND_CAPTURE}=true, "
        f"{ANNOTATION_DNS_CAPTURE}=true|false, {ANNOTATION_REROUTE_VIRTUAL_INTERFACES}=IF,IF",
    )
    ambient.add_argument(
        "--probe-snat",
        metavar="IP",
        help="the node's SNAT address for kubelet probes (default 169.254.7.127)",
    )
    ambient.add_argument(
        "--probe-snat-v6",
        metavar="IP",
        help="the same for IPv6 (default fd16:9254:7127:1337:ffff:ffff:ffff:ffff)",
    )
    ambient.add_argument(
        "--node",
        action="store_true",
        help="print the node's rules (the kubelet probe SNAT) instead of the pod's",
    )
    p.add_argument(
        "istio_flags",
        nargs="*",
        metavar="ISTIO_FLAGS",
        help="istio-iptables flags (default: the istio-init arguments)",
    )
    parse_own = p.parse_known_args

    def parse_known_args(
        args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        own, istio = split_arguments(list(sys.argv[1:] if args is None else args))
        parsed, rest = parse_own(own, namespace)
        parsed.istio_flags = [*rest, *istio]
        return parsed, []

    p.parse_known_args = parse_known_args  # type: ignore[method-assign]
    p.set_defaults(func=run)
    return p


def _environment(pairs: Sequence[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        name, eq, value = pair.partition("=")
        if not eq or not name:
            raise MeshlabError(
                f"--env {pair!r}: write NAME=VALUE, e.g. --env ISTIO_OUTBOUND_OWNER_GROUPS=1000"
            )
        env[name] = value
    return env


def build(args: argparse.Namespace) -> CaptureRules:
    """The rules for parsed ``meshlab rules`` arguments (used by :func:`run` and the tests)."""
    v4, v6 = split_dns_servers(args.dns_server)
    flags = args.istio_flags if args.istio_flags else list(DEFAULT_ISTIO_INIT_ARGS)
    config = CaptureConfig.from_args(
        flags,
        _environment(args.env),
        enable_ipv6=args.ipv6,
        dns_servers_v4=v4,
        dns_servers_v6=v6,
    )
    return generate(config)


def _notes(config: CaptureConfig) -> list[str]:
    notes = []
    if config.interception_mode not in ("", "REDIRECT", "TPROXY"):
        notes.append(f"-m {config.interception_mode!r} is neither REDIRECT nor TPROXY; "
                     "istio-iptables treats anything but the exact text TPROXY as REDIRECT")
    if config.cleanup_only:
        notes.append("with --cleanup-only istio-iptables removes its rules and writes none")
    if config.skip_rule_apply:
        notes.append("with --skip-rule-apply istio-iptables does not program these rules")
    if config.native_nftables:
        notes.append("with --native-nftables Istio writes the equivalent nftables rules instead")
    if config.redirect_dns and not config.dns_capture_active:
        notes.append(
            "--redirect-dns without --capture-all-dns and without nameservers: Istio turns DNS "
            "capture off (give the pod's nameservers with --dns-server IP)"
        )
    return notes


def run(args: argparse.Namespace) -> int:
    """Print the rules; exit status 0, or a MeshlabError for bad input."""
    _check_mode(args)
    if args.ambient:
        return run_ambient(args)
    rules = build(args)
    if args.format == "restore":
        sys.stdout.write("".join(rules.documents()))
    else:
        rulesets = [rules.ruleset_v4]
        if rules.ruleset_v6 is not None:
            rulesets.append(rules.ruleset_v6)
        sys.stdout.write("".join(ruleset.render_save() for ruleset in rulesets))
    sys.stdout.flush()
    comments = [f"# note: {note}" for note in _notes(rules.config)]
    if rules.post_commands:
        comments.append("# after the rules, istio-iptables configures routing:")
        comments += [f"#   {command}" for command in rules.post_commands]
    if comments:
        print("\n".join(comments), file=sys.stderr)
    return 0


# ---- --ambient ---------------------------------------------------------------------------------

_AMBIENT_ONLY = (("--no-dns-capture", "no_dns_capture"), ("--annotation", "annotation"),
                 ("--probe-snat", "probe_snat"), ("--probe-snat-v6", "probe_snat_v6"),
                 ("--node", "node"))
_SIDECAR_ONLY = (("--dns-server", "dns_server"), ("--env", "env"))
_ANNOTATIONS = (ANNOTATION_BYPASS_INBOUND_CAPTURE, ANNOTATION_DNS_CAPTURE,
                ANNOTATION_REROUTE_VIRTUAL_INTERFACES)


def _check_mode(args: argparse.Namespace) -> None:
    """Options of one mode given in the other: say so rather than ignore them."""
    if not args.ambient:
        for option, name in _AMBIENT_ONLY:
            if getattr(args, name):
                raise MeshlabError(f"{option} is an ambient-mode option; add --ambient, or "
                                   "drop it for istio-iptables' sidecar rules")
        return
    for option, name in _SIDECAR_ONLY:
        if getattr(args, name):
            raise MeshlabError(f"{option} applies to istio-iptables' sidecar rules, not to "
                               "--ambient; drop it (ambient DNS capture is --no-dns-capture "
                               f"or --annotation {ANNOTATION_DNS_CAPTURE}=false)")
    if args.istio_flags:
        raise MeshlabError(f"--ambient takes no istio-iptables flags ({' '.join(args.istio_flags)}"
                           "); the agent's settings are --no-dns-capture, --ipv6 and "
                           "--probe-snat(-v6), the pod's are --annotation KEY=VALUE")
    if args.node and args.format == "save":
        raise MeshlabError("--format save shows the rules as meshlab's kernel model reads them, "
                           "and it models the pod's rules, not the node's (-m set, "
                           "--socket-exists, SNAT); use --format restore with --node")
    if args.node and args.annotation:
        raise MeshlabError("--annotation sets a pod's overrides, and --node prints the node's "
                           "rules, which no pod changes; drop one of them")


def _annotations(pairs: Sequence[str]) -> dict[str, str]:
    annotations: dict[str, str] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise MeshlabError(f"--annotation {pair!r}: write KEY=VALUE, e.g. --annotation "
                               f"{ANNOTATION_BYPASS_INBOUND_CAPTURE}=true")
        if key not in _ANNOTATIONS:
            raise MeshlabError(f"--annotation {key!r}: the agent reads only "
                               f"{', '.join(_ANNOTATIONS)}")
        if key in annotations:
            raise MeshlabError(f"--annotation {key} is given twice; a pod has one value per "
                               "annotation")
        annotations[key] = value
    return annotations


def build_ambient(args: argparse.Namespace) -> AmbientRules:
    """The ambient rules for parsed ``meshlab rules --ambient`` arguments."""
    addresses = {name: value for name, value in (("probe_snat_v4", args.probe_snat),
                                                 ("probe_snat_v6", args.probe_snat_v6))
                 if value is not None}  # fmt: skip
    try:
        config = AgentConfig(dns_capture=not args.no_dns_capture, ipv6=args.ipv6,
                             **addresses)  # type: ignore[arg-type]
    except AmbientInputError as error:
        option = "--probe-snat" if error.source == PROBE_SNAT_V4_SOURCE else "--probe-snat-v6"
        raise MeshlabError(f"{option}: {error.reason}") from None
    if args.node:
        return node_rules(config)
    return inpod_rules(config, PodOverrides.from_annotations(_annotations(args.annotation)))


def run_ambient(args: argparse.Namespace) -> int:
    """Print the agent's restore documents (or their save form); notes go to stderr."""
    rules = build_ambient(args)
    if args.format == "restore":
        sys.stdout.write("".join(rules.documents()))
    else:
        versions = (4, 6) if rules.ipv6 is not None else (4,)
        sys.stdout.write("".join(rules.ruleset(v).render_save() for v in versions))
    sys.stdout.flush()
    if rules.route_commands:
        comments = ["# the agent also sets up the pod's routing (through netlink, before the "
                    "rules):", *(f"#   {command}" for command in rules.route_commands)]
    else:
        comments = ["# note: the node's rules; the ipset istio-inpod-probes-v4 (-v6) holds the "
                    "IPs of the node's ambient pods"]
    print("\n".join(comments), file=sys.stderr)
    return 0


__all__ = ["NAME", "CaptureFlagError", "build", "build_ambient", "register", "run",
           "run_ambient", "split_arguments"]
