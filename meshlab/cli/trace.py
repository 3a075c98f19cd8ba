"""``meshlab trace``: trace one connection through a pod's iptables rules.

::

    meshlab trace --rules FILE --from-pod --pod-ip IP --uid U [--gid G] --dst IP:PORT
                  [--proto tcp|udp] [--src IP[:PORT]] [--mark N] [--ambient] [--json]
    meshlab trace --rules FILE --to-pod --pod-ip IP --src IP:PORT --dst IP:PORT
                  [--iface eth0] [--proto tcp|udp] [--json]

Both print the rules that matched and, under each chain, the rules the connection passed over
with the first condition that failed ("rule 2 (-j RETURN): `-o lo`: the packet leaves by
eth0"). ``--all`` lists every rule evaluated; with ``--json`` it adds ``"evaluated"``: every
rule tried, in order, as ``{"table", "chain", "rule", "text", "matched", "why_not"}``.

``FILE`` is ``iptables-save`` output, an ``iptables-restore`` document or ``iptables`` command
lines (``-`` reads standard input). The pod has ``lo`` (127.0.0.1/8, ::1) and ``eth0`` with the
pod IP as ``--pod-ip``/``--pod-prefix`` (24 by default; with 32 every other address is reached
by the default route through eth0, which traces the same way).

``--mark`` is the connecting socket's ``SO_MARK`` (ztunnel's 0x539, Envoy's 1337 in TPROXY
mode): ``-m mark`` rules and the routing decision read it. ``--ambient`` gives the pod the
istio-cni agent's policy routing: ``ip rule add fwmark 0x111/0xfff lookup 100`` and ``ip route
add local 0.0.0.0/0 dev lo table 100`` (:func:`meshlab.istio.ambient.inpod_routes`).
"""

from __future__ import annotations

import argparse
import json
from ipaddress import ip_address

from meshlab.cli._input import read_text
from meshlab.errors import MeshlabError
from meshlab.istio.ambient import inpod_routes
from meshlab.netfilter import Netns, Packet, Trace, endpoint, parse_endpoint, parse_ruleset
from meshlab.netfilter.kernel import pod_interfaces
from meshlab.netfilter.parse import RulesParseError
from meshlab.netfilter.ruleset import Ruleset
from meshlab.netfilter.trace import passed_over_by_chain, reason_line

NAME = "trace"


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        NAME, help="trace one connection through a pod's iptables rules",
        description=__doc__.split("\n\n")[0] + " Prints every rule that matched, why the "
        "others did not, where the connection ends up, and the original destination "
        "conntrack keeps.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rules", required=True, metavar="FILE",
                   help="iptables-save output, a restore document or iptables commands; - = stdin")
    way = p.add_mutually_exclusive_group(required=True)
    way.add_argument("--from-pod", action="store_true",
                     help="a process in the pod connects out (OUTPUT, POSTROUTING)")
    way.add_argument("--to-pod", action="store_true",
                     help="a connection arrives at the pod from outside (PREROUTING, INPUT)")
    p.add_argument("--pod-ip", required=True, help="the pod's address on eth0")
    p.add_argument("--pod-prefix", type=int, default=24, metavar="N",
                   help="prefix length of eth0's subnet (default 24)")
    p.add_argument("--uid", type=_id, help="uid of the connecting process (--from-pod)")
    p.add_argument("--gid", type=_id, help="its gid (default: the uid)")
    p.add_argument("--src", help="--to-pod: the peer IP:PORT; --from-pod: bind to IP[:PORT]")
    p.add_argument("--dst", required=True, help="destination IP:PORT")
    p.add_argument("--iface", default="eth0", help="--to-pod: interface it arrives on")
    p.add_argument("--mark", type=_mark, metavar="N",
                   help="--from-pod: the socket's SO_MARK, decimal or 0x hex (ztunnel: 0x539)")
    p.add_argument("--ambient", action="store_true",
                   help="an ambient pod: add the agent's `ip rule fwmark 0x111/0xfff lookup "
                   "100` and table 100's local route")
    p.add_argument("--proto", choices=("tcp", "udp"), default="tcp")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--all", action="store_true",
                   help="list every rule evaluated, not only the ones that matched "
                   "(with --json: add \"evaluated\")")
    p.set_defaults(func=run)
    return p


#: The most bytes ``--rules`` reads. A pod's Istio rules are a few KB and even 20,000 rules
#: are under 2 MB; 8 MiB parses in a few seconds, so a wrong file (a disk image, a node's
#: whole dump, /dev/zero) gets a message instead of minutes of waiting.
MAX_RULES_BYTES = 8 * 1024 * 1024
#: The longest line read: a rule with a long comment and port lists is a few hundred
#: characters; the parser quotes a bad line in its message, so a megabyte line is refused.
MAX_LINE = 10_000
_RULES_HINT = ("the pod's rules as iptables-save prints them (e.g. kubectl debug, or "
               "nsenter -t PID -n iptables-save), or `meshlab rules --format save` output")
#: uid_t is 32 bits and (uid_t)-1 means "no uid", so real ids go from 0 to 2**32 - 2.
MAX_ID = 2**32 - 2


def _read(path: str) -> str:
    return read_text(path, what="rules file", limit=MAX_RULES_BYTES, hint=_RULES_HINT,
                     max_line=MAX_LINE)


def _id(text: str) -> int:
    """argparse type of --uid/--gid: a numeric id from 0 to 4294967294."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a numeric id; write a decimal number such as 1000 (the app) or "
            "1337 (the proxy), not a user name") from None
    if not 0 <= value <= MAX_ID:
        raise argparse.ArgumentTypeError(
            f"{value} is out of range; ids go from 0 to {MAX_ID}")
    return value


def _mark(text: str) -> int:
    """argparse type of --mark: a 32-bit mark, decimal (1337) or hexadecimal (0x539)."""
    try:
        value = int(text, 16) if text.lower().startswith("0x") else int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number; write the mark in decimal (1337) or hex (0x539)"
        ) from None
    if not 0 <= value <= 0xFFFFFFFF:
        raise argparse.ArgumentTypeError(
            f"{value} is out of range; a mark goes from 0 to 0xffffffff")
    return value


def _ip(text: str, option: str, example: str):
    try:
        return ip_address(text.strip())
    except ValueError:
        extra = (f" (no /prefix here{'; use --pod-prefix' if option == '--pod-ip' else ''})"
                 if "/" in text else "")
        raise MeshlabError(f"{option}: {text!r} is not an IP address{extra}; write e.g. "
                           f"{example}") from None


def _endpoint(text: str, option: str):
    example = "10.244.0.9:8080, or [fd00::9]:8080 for IPv6"
    stripped = text.strip()
    if stripped.count(":") > 1 and not stripped.startswith("["):
        raise MeshlabError(f"{option}: {text!r} is ambiguous: write an IPv6 address in "
                           f"brackets before the port, e.g. [fd00::9]:8080")
    try:
        ip, port = parse_endpoint(stripped)
    except ValueError as error:
        reason = str(error).split(" (for example")[0]
        if "does not appear to be" in reason or "invalid literal" in reason:
            host = stripped[1:].partition("]")[0] if stripped.startswith("[") \
                else stripped.rpartition(":")[0]
            reason = f"{host!r} in {text!r} is not an IP address (names are not resolved)"
        raise MeshlabError(f"{option}: {reason}; write IP:PORT, e.g. {example}") from None
    return ip, port


def _check_options(args: argparse.Namespace, pod_ip) -> None:
    """Options that contradict each other or the pod: say so instead of ignoring them."""
    if args.to_pod:
        for option, value in (("--uid", args.uid), ("--gid", args.gid), ("--mark", args.mark)):
            if value is not None:
                raise MeshlabError(f"{option} applies to --from-pod only (a connection from "
                                   "outside has no local socket, so no owner and no socket "
                                   "mark); drop it, or use --from-pod")
    if args.from_pod:
        if args.iface != "eth0":
            raise MeshlabError("--iface applies to --to-pod only (with --from-pod routing "
                               "chooses the interface); drop it, or use --to-pod")
        if args.gid is not None and args.uid is None:
            raise MeshlabError("--gid needs --uid too; give the connecting process's uid")
    limit = 32 if pod_ip.version == 4 else 128
    if not 0 <= args.pod_prefix <= limit:
        raise MeshlabError(f"--pod-prefix {args.pod_prefix}: an IPv{pod_ip.version} prefix "
                           f"length goes from 0 to {limit}; e.g. --pod-prefix 24")


def _same_family(pod_ip, ip, option: str, text: str) -> None:
    if ip.version != pod_ip.version:
        raise MeshlabError(
            f"{option} {text} is IPv{ip.version} but --pod-ip {pod_ip} is IPv{pod_ip.version}; "
            f"a connection stays in one family: give an IPv{pod_ip.version} address (or, for "
            f"IPv{ip.version}, an IPv{ip.version} --pod-ip and ip{'6' if ip.version == 6 else ''}"
            "tables-save rules)")


def _parse(text: str, pod_ip) -> Ruleset:
    """The rules, read in the pod IP's family; a file of the other family is named as such."""
    family = "ipv6" if pod_ip.version == 6 else "ipv4"
    try:
        return parse_ruleset(text, family=family)
    except RulesParseError as error:
        other = "ipv4" if family == "ipv6" else "ipv6"
        try:
            parse_ruleset(text, family=other)
        except MeshlabError:
            raise error from None
        tool = "ip6tables-save" if family == "ipv6" else "iptables-save"
        raise MeshlabError(
            f"the rules are {other.replace('ip', 'IP')} rules but --pod-ip {pod_ip} is "
            f"{family.replace('ip', 'IP')}; give the pod's {tool} output, or its "
            f"{other.replace('ip', 'IP')} address as --pod-ip") from None


def trace_from_args(args: argparse.Namespace) -> Trace:
    """Build the pod namespace from the arguments and trace the connection."""
    pod_ip = _ip(args.pod_ip, "--pod-ip", "10.244.0.5 (or fd00::5 with ip6tables rules)")
    _check_options(args, pod_ip)
    dst, dport = _endpoint(args.dst, "--dst")
    _same_family(pod_ip, dst, "--dst", args.dst)
    src = sport = None
    if args.from_pod:
        if args.uid is None:
            raise MeshlabError("--from-pod needs --uid (the connecting process's uid, e.g. "
                               "1000 for the app or 1337 for the proxy)")
        if args.src:
            text = args.src.strip()
            if text.startswith("[") or text.count(":") == 1:
                src, sport = _endpoint(text, "--src")
            else:
                src = _ip(text, "--src", "10.244.0.5, or 10.244.0.5:40000 with a port")
            _same_family(pod_ip, src, "--src", args.src)
    else:
        if not args.src:
            raise MeshlabError("--to-pod needs --src IP:PORT (the peer that connects)")
        src, sport = _endpoint(args.src, "--src")
        _same_family(pod_ip, src, "--src", args.src)
        if args.iface != "lo" and (src.is_loopback or src == pod_ip):
            raise MeshlabError(
                f"--src {args.src}: a packet from {src} arriving on {args.iface} is a martian "
                "the kernel drops (that address belongs to the pod itself); give the peer's "
                "address, or --iface lo for a connection from inside the pod")
    ruleset = _parse(_read(args.rules), pod_ip)
    routes = inpod_routes(pod_ip.version) if args.ambient else ()
    ns = Netns(ruleset, pod_interfaces(pod_ip, args.pod_prefix), fwmark_routes=routes)
    if args.from_pod:
        if src is not None and not ns.is_local(src):
            raise MeshlabError(
                f"--src {args.src}: {src} is not an address of the pod, so a process in it "
                f"cannot bind it (EADDRNOTAVAIL); give {pod_ip}, 127.0.0.1, or leave --src out")
        gid = args.uid if args.gid is None else args.gid
        return ns.connect(proto=args.proto, dst=dst, dport=dport, uid=args.uid, gid=gid,
                          src=src, sport=sport, mark=args.mark or 0)
    return ns.receive(Packet(args.proto, src, sport, dst, dport), args.iface)


def run(args: argparse.Namespace) -> int:
    trace = trace_from_args(args)
    if args.json:
        print(json.dumps(trace_json(trace, every_rule=args.all), indent=2))
        return 0
    print(render_text(trace, every_rule=args.all))
    return 0


def trace_json(trace: Trace, *, every_rule: bool = False) -> dict:
    """The ``--json`` object: :meth:`Trace.to_json`, the rules passed over with their
    reasons (``"passed_over"``), and with ``every_rule`` every rule tried (``"evaluated"``)."""
    out = trace.to_json()
    evaluated = trace.evaluated_json()
    out["passed_over"] = [{k: e[k] for k in ("table", "chain", "rule", "text", "why_not")}
                          for e in evaluated if not e["matched"]]
    if every_rule:
        out["evaluated"] = evaluated
    return out


#: Without --all, the text lists this many passed-over rules per chain (a 20,000-rule chain
#: would fill the screen); the rest are counted.
REASONS_PER_CHAIN = 12


def reasons_text(trace: Trace, *, every_rule: bool = False) -> list[str]:
    """The rules passed over, one per line, under the chain they belong to."""
    groups = passed_over_by_chain(trace.evaluations)
    if not groups:
        return []
    lines = ["passed over (the first condition that failed):"]
    for title, evaluations in groups:
        lines.append(f"  {title}")
        shown = evaluations if every_rule else evaluations[:REASONS_PER_CHAIN]
        lines.extend(f"    {reason_line(e)}" for e in shown)
        if len(shown) < len(evaluations):
            lines.append(f"    ... and {len(evaluations) - len(shown)} more (--all lists "
                         "every one)")
    return lines


def render_text(trace: Trace, *, every_rule: bool = False) -> str:
    """A readable report: the rules (matched ones, or all), then the outcome."""
    import pandas as pd

    rows = trace.evaluations if every_rule else trace.hits
    frame = pd.DataFrame(
        [{"hook": e.hook, "table": e.table, "chain": e.chain, "rule": e.rule,
          "matched": "yes" if e.matched else "no", "verdict": e.verdict or "-",
          "text": e.text} for e in rows],
        columns=["hook", "table", "chain", "rule", "matched", "verdict", "text"])
    lines = [frame.to_string(index=False) if len(frame) else "(no rule matched)", ""]
    reasons = reasons_text(trace, every_rule=every_rule)
    if reasons:
        lines += [*reasons, ""]
    lines.append(f"{trace.direction} {trace.connection.proto} connection: {trace.verdict}")
    lines.append(f"  original destination: {endpoint(*trace.original_dst)}")
    where = "a socket in the pod" if trace.local else f"out via {trace.out_iface}"
    tproxy = trace.nat is not None and trace.nat.target == "TPROXY"
    if trace.verdict != "ACCEPT":
        lines.append("  dropped")
    elif tproxy:
        lines.append(f"  delivered to:         the socket listening on port {trace.delivered[1]} "
                     f"in the pod (the packet still says {endpoint(*trace.original_dst)})")
    else:
        lines.append(f"  delivered to:         {endpoint(*trace.delivered)} ({where})")
    if tproxy:
        lines.append(f"  handed over by:       TPROXY in {trace.nat.table} {trace.nat.chain} "
                     f"rule {trace.nat.rule} (no NAT: nothing is rewritten)")
    elif trace.nat is not None:
        lines.append(f"  rewritten by:         {trace.nat.target} in {trace.nat.table} "
                     f"{trace.nat.chain} rule {trace.nat.rule}")
    lines.append(f"  conntrack:            {trace.connection}")
    lines.extend(f"  note: {note}" for note in trace.notes)
    return "\n".join(lines)
