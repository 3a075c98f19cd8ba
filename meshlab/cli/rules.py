"""``meshlab rules``: print the rules ``istio-iptables`` writes for the flags you give it.

Usage::

    meshlab rules [--format restore|save] [--ipv6] [--dns-server IP]... [--env NAME=VALUE]...
                  [--] [ISTIO_FLAGS...]

``ISTIO_FLAGS`` are ``istio-iptables``' own flags, written as in the ``istio-init``
container (``-p 15001 -b '*' ...``, a leading ``istio-iptables`` word allowed). With none,
the default ``istio-init`` arguments are used. meshlab's options may stand anywhere before a
``--``; everything after ``--`` is passed to istio-iptables as is.

Output (stdout): ``--format restore`` (default) prints the ``iptables-restore`` document(s)
exactly as istio-iptables feeds them to ``iptables-restore --noflush`` (IPv4, then IPv6 when
``--ipv6``); ``--format save`` prints what ``iptables-save``/``ip6tables-save`` would then
show in the pod. Notes and the routing commands Istio runs after the rules go to stderr as
``#`` comments, so stdout stays exact.

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
from meshlab.istio.capture import CaptureRules, generate
from meshlab.istio.flags import (
    DEFAULT_ISTIO_INIT_ARGS,
    FLAGS,
    CaptureConfig,
    CaptureFlagError,
    split_dns_servers,
)

NAME = "rules"
_OWN_WITH_VALUE = ("--format", "--dns-server", "--env")
_OWN_SWITCHES = ("-h", "--help", "--ipv6")

_DESCRIPTION = """\
Print the iptables rules istio-iptables writes for the given flags, exactly as it feeds
them to iptables-restore (IPv4, then IPv6 with --ipv6), or with --format save as
iptables-save would then show them in the pod. With no flags: the default istio-init
arguments (-p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x '' -b '*' -d 15090,15021,15020).
Write `meshlab rules istio-iptables` to see what istio-iptables does with no flag at all."""


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
        "[--env NAME=VALUE] [--] [ISTIO_FLAGS ...]",
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


__all__ = ["NAME", "CaptureFlagError", "build", "register", "run", "split_arguments"]
