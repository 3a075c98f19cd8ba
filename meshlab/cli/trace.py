"""``meshlab trace``: trace one connection through a pod's iptables rules.

::

    meshlab trace --rules FILE --from-pod --pod-ip IP --uid U [--gid G] --dst IP:PORT
                  [--proto tcp|udp] [--src IP[:PORT]] [--json]
    meshlab trace --rules FILE --to-pod --pod-ip IP --src IP:PORT --dst IP:PORT
                  [--iface eth0] [--proto tcp|udp] [--json]

``FILE`` is ``iptables-save`` output, an ``iptables-restore`` document or ``iptables`` command
lines (``-`` reads standard input). The pod has ``lo`` (127.0.0.1/8, ::1) and ``eth0`` with the
pod IP as ``--pod-ip``/``--pod-prefix`` (24 by default; with 32 every other address is reached
by the default route through eth0, which traces the same way).
"""

from __future__ import annotations

import argparse
import json
import sys
from ipaddress import ip_address

from meshlab.errors import MeshlabError
from meshlab.netfilter import Netns, Packet, Trace, endpoint, parse_endpoint, parse_ruleset
from meshlab.netfilter.kernel import pod_interfaces

NAME = "trace"


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        NAME, help="trace one connection through a pod's iptables rules",
        description=__doc__.split("\n\n")[0] + " Prints every rule that matched, where the "
        "connection ends up, and the original destination conntrack keeps.",
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
    p.add_argument("--uid", type=int, help="uid of the connecting process (--from-pod)")
    p.add_argument("--gid", type=int, help="its gid (default: the uid)")
    p.add_argument("--src", help="--to-pod: the peer IP:PORT; --from-pod: bind to IP[:PORT]")
    p.add_argument("--dst", required=True, help="destination IP:PORT")
    p.add_argument("--iface", default="eth0", help="--to-pod: interface it arrives on")
    p.add_argument("--proto", choices=("tcp", "udp"), default="tcp")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--all", action="store_true",
                   help="list every rule evaluated, not only the ones that matched")
    p.set_defaults(func=run)
    return p


def _read(path: str) -> str:
    try:
        if path == "-":
            return sys.stdin.read()
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as error:
        raise MeshlabError(f"cannot read rules file {path!r}: {error.strerror}; give a path to "
                           "a file (or - for standard input)") from None
    except UnicodeDecodeError:
        raise MeshlabError(f"rules file {path!r} is not UTF-8 text") from None


def _endpoint(text: str, option: str):
    try:
        return parse_endpoint(text)
    except ValueError as error:
        raise MeshlabError(f"{option}: {error}") from None


def trace_from_args(args: argparse.Namespace) -> Trace:
    """Build the pod namespace from the arguments and trace the connection."""
    try:
        pod_ip = ip_address(args.pod_ip)
    except ValueError:
        raise MeshlabError(f"--pod-ip: {args.pod_ip!r} is not an IP address") from None
    family = "ipv6" if pod_ip.version == 6 else "ipv4"
    ruleset = parse_ruleset(_read(args.rules), family=family)
    ns = Netns(ruleset, pod_interfaces(pod_ip, args.pod_prefix))
    dst, dport = _endpoint(args.dst, "--dst")
    if args.from_pod:
        if args.uid is None:
            raise MeshlabError("--from-pod needs --uid (the connecting process's uid, e.g. "
                               "1000 for the app or 1337 for the proxy)")
        src = sport = None
        if args.src:
            if ":" in args.src and (args.src.count(":") == 1 or args.src.startswith("[")):
                src, sport = _endpoint(args.src, "--src")
            else:
                src = args.src
        gid = args.uid if args.gid is None else args.gid
        return ns.connect(proto=args.proto, dst=dst, dport=dport, uid=args.uid, gid=gid,
                          src=src, sport=sport)
    if not args.src:
        raise MeshlabError("--to-pod needs --src IP:PORT (the peer that connects)")
    src, sport = _endpoint(args.src, "--src")
    return ns.receive(Packet(args.proto, src, sport, dst, dport), args.iface)


def run(args: argparse.Namespace) -> int:
    trace = trace_from_args(args)
    if args.json:
        print(json.dumps(trace.to_json(), indent=2))
        return 0
    print(render_text(trace, every_rule=args.all))
    return 0


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
    lines.append(f"{trace.direction} {trace.connection.proto} connection: {trace.verdict}")
    lines.append(f"  original destination: {endpoint(*trace.original_dst)}")
    where = "a socket in the pod" if trace.local else f"out via {trace.out_iface}"
    lines.append(f"  delivered to:         {endpoint(*trace.delivered)} ({where})"
                 if trace.verdict == "ACCEPT" else "  dropped")
    if trace.nat is not None:
        lines.append(f"  rewritten by:         {trace.nat.target} in {trace.nat.table} "
                     f"{trace.nat.chain} rule {trace.nat.rule}")
    lines.append(f"  conntrack:            {trace.connection}")
    lines.extend(f"  note: {note}" for note in trace.notes)
    return "\n".join(lines)
