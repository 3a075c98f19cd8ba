"""``meshlab walk``: run a catalog scenario end to end and show every step.

::

    meshlab walk SCENARIO [--without-rule "TEXT"]... [--flags "istio-iptables flags"] [--json]
    meshlab walk ambient-... [--without-rule "TEXT"]... [--without-match "TEXT"]... [--json]
    meshlab walk --list

``SCENARIO`` is a name from ``meshlab/data/scenarios.yaml`` (``inbound`` and ``outbound`` are the
article's two cases; names starting with ``ambient-`` are ambient mode's, with no sidecar).
``--without-rule`` removes each rule whose restore-form text, without the ``-A CHAIN``
prefix, equals TEXT (e.g. ``-m owner --uid-owner 1337 -j RETURN``), or the policy routing
an ``ip rule ...``/``ip route ...`` TEXT names (``ip rule add fwmark 0x111/0xfff pref 32764
lookup 100``); it may be repeated. ``--without-match`` (ambient) takes a condition out of
every rule that has it (``-m mark ! --mark 0x539/0xfff``: ztunnel no longer exempt).
``--flags`` replaces the scenario's ``istio-init`` flags. ``--json`` prints the object:
scenario, outcome, delivered_to, loop and steps (``n`` is the article's step 1-15, or an
ambient step ``"A1"``...).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from typing import Any

from meshlab.errors import MeshlabError

NAME = "walk"


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        NAME,
        help="run a scenario through the pod, rule by rule, proxy and all",
        description=__doc__.split("::")[0].strip() if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("scenario", nargs="?", metavar="SCENARIO",
                   help="a scenario name (see --list); 'inbound' and 'outbound' are the "
                        "article's two cases")
    p.add_argument("--without-rule", action="append", default=[], metavar="TEXT",
                   help="remove the rule with this text (restore form without '-A CHAIN'); "
                        "may be repeated")
    p.add_argument("--without-match", action="append", default=[], metavar="TEXT",
                   help="ambient scenarios: take this condition out of every rule that has "
                        "it, e.g. '-m mark ! --mark 0x539/0xfff'; may be repeated")
    p.add_argument("--flags", metavar="FLAGS",
                   help='istio-iptables flags replacing the default istio-init ones, e.g. '
                        '"-p 15001 -z 15006 -u 1337 -m REDIRECT -i * -x \'\' -b * '
                        '-d 15090,15021,15020"')
    p.add_argument("--json", action="store_true", help="print the walk as one JSON object")
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    p.set_defaults(func=run)
    _accept_dash_values(p, ("--flags", "--without-rule", "--without-match"))


def _accept_dash_values(parser: argparse.ArgumentParser, options: tuple[str, ...]) -> None:
    """Let ``--flags -p`` and ``--without-rule -j DROP``-like values through.

    argparse takes a lone word starting with '-' (``--flags --redirect-dns``) for an option
    and then complains that ``--flags`` "expected one argument". The values of these options
    *are* dash-words, so each is glued to its option (``--flags=--redirect-dns``) first."""
    parse = parser.parse_known_args

    def parse_known_args(args=None, namespace=None):  # type: ignore[no-untyped-def]
        words = list(sys.argv[1:] if args is None else args)
        glued: list[str] = []
        i = 0
        while i < len(words):
            if words[i] == "--":
                glued += words[i:]
                break
            if words[i] in options and i + 1 < len(words):
                glued.append(f"{words[i]}={words[i + 1]}")
                i += 2
                continue
            glued.append(words[i])
            i += 1
        return parse(glued, namespace)

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign]


def run(args: argparse.Namespace) -> int:
    from meshlab.scenarios import catalog, get_scenario, run_scenario

    if args.list:
        if args.scenario or args.without_rule or args.without_match or args.flags is not None:
            raise MeshlabError("--list lists the scenarios and takes nothing else; drop "
                               "--list to walk a scenario")
        scenarios = catalog()
        if args.json:
            print(json.dumps([{"name": s.name, "title": s.title, "expected": s.expect.outcome,
                               "article": s.article} for s in scenarios.values()], indent=2))
            return 0
        width = max(len(name) for name in scenarios)
        for scenario in scenarios.values():
            print(f"{scenario.name:<{width}}  {scenario.expect.outcome:<9}  {scenario.title}")
        return 0
    if not args.scenario:
        names = ", ".join(catalog())
        raise MeshlabError(f"name a scenario (one of: {names}), or use --list")
    scenario = get_scenario(args.scenario)
    flags = None
    if args.flags is not None:
        try:
            flags = shlex.split(args.flags)
        except ValueError as error:
            raise MeshlabError(f"--flags {args.flags!r}: {error}; close the quotes") from None
    walk = run_scenario(scenario, without_rules=args.without_rule, flags=flags,
                        without_matches=args.without_match)
    if args.json:
        from meshlab.lesson import walk_json

        print(json.dumps(walk_json(walk), indent=2))
        return 0
    print(render_text(walk, scenario.title))
    return 0


def render_text(walk: Any, title: str = "") -> str:
    """The walk as lines a person reads: numbered steps, each hit, the outcome."""
    from meshlab.lesson import numbered_steps, step_numbers

    numbers = step_numbers(walk)
    lines = [f"scenario {walk.scenario}: {title}".rstrip(": ")]
    if walk.flags:
        lines.append(f"istio-iptables {shlex.join(walk.flags)}")
    if walk.mode == "ambient":
        lines.append(f"ambient pod {walk.subject}: istio-cni's rules, ztunnel (mark 0x539); "
                     "HBONE's mTLS and HTTP/2 are not modelled")
        for key, value in walk.annotations:
            lines.append(f"annotation {key}: {value}")
    for text in walk.removed_rules:
        lines.append(f"without rule: {text}")
    for text in walk.removed_matches:
        lines.append(f"without condition: {text}")
    lines.append("")
    for event in walk.hits:
        n = numbers.get(event.index)
        mark = f"{n:>2}" if n is not None else "  "
        where = ""
        if event.kind in ("rule", "policy"):
            where = f"{event.hook} {event.table} {event.chain}"
            where += f" #{event.rule}" if event.rule else " policy"
            if event.text and event.rule:
                where += f" `{event.text}`"
            where += ": "
        elif event.listener:
            where = f"{event.listener}: "
        lines.append(f"{mark} [{event.pod}] {event.actor:<6} {where}{event.decision}")
    lines.append("")
    if walk.outcome == "delivered" and walk.delivered_to is not None:
        d = walk.delivered_to
        lines.append(f"outcome: delivered to {d.process} on port {d.port} in {d.host}; it sees "
                     f"the client as {d.sees_source}")
    else:
        lines.append(f"outcome: {walk.outcome}: {walk.reason}")
    if walk.loop is not None:
        lines.append(f"loop ({walk.loop.detected_by}, {walk.loop.hops} hops): {walk.loop.text}")
        lines.append(walk.loop.gives_out)
    lines.append("")
    lines.append("the ambient steps:" if walk.mode == "ambient" else "the article's steps:")
    for step in numbered_steps(walk):
        lines.append(f"  {step.n:>2} {step.status:<8} {step.title}"
                     + ("" if step.status == "ok" else f" - {step.explanation}"))
    return "\n".join(lines)
