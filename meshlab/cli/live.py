"""``meshlab live``: run the scenarios on the real kernel and compare them with the model.

::

    meshlab live verify [--scenario NAME]... [--json] [--trace]
    meshlab live run SCENARIO [--without-rule "TEXT"]... [--without-match "TEXT"]...
                              [--keep] [--json]
    meshlab live loop                       # the 1337-exemption loop, real proxy, hop limit
    meshlab live random [--seed N]          # randomized model-vs-kernel connections
    meshlab live random --ambient [--seed N] [--cases N]   # random requests, ambient world
    meshlab live record [--output PATH] [--seed N]...   # all of the above, into one JSON file
    meshlab live clean [--all]              # remove what a killed run left behind

The ``ambient-*`` scenarios run in the ambient lab (:mod:`meshlab.live.ambient_lab`: two
ambient pods with istio-cni's rules and a ztunnel stand-in each, beside the rest of the
model's world); ``--without-match`` takes a condition out of every rule of the ambient pod
(``-m mark ! --mark 0x539/0xfff``), in the model and in the kernel alike.

``verify`` exits 0 when every scenario agrees, 1 when any disagrees, and 2 when the lab
cannot run here (not root, no iptables, no ``ip netns``), saying why.

``record`` runs verify (the whole catalog), the default rules' connections, the loop
experiment and
the randomized check (seeds 1-5 unless ``--seed`` is given) and writes what they found to
``meshlab/data/live/recorded-run.json`` (package data), the file notebook 07 shows where the
lab cannot run (see :mod:`meshlab.live.record`). Same exit statuses as ``verify``; the file
is written either way, so a disagreement is recorded too.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from meshlab.errors import MeshlabError


def _count(low: int, high: int):
    """argparse type: a whole number from ``low`` to ``high`` (bounds keep a run finite)."""
    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; write e.g. "
                                             f"{min(max(low, 12), high)}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range; give {low} to {high}")
        return value
    return parse


_CONFIGS = _count(1, 1000)      # 1000 configurations x 20 connections: about 15 minutes
_PER_CONFIG = _count(1, 1000)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "live", help="prove the model on the real kernel (network namespaces, needs root)",
        description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="live_command", metavar="ACTION", required=True)

    v = sub.add_parser("verify", help="run catalog scenarios for real and compare with the model")
    v.add_argument("--scenario", action="append", metavar="NAME", help="only this scenario "
                   "(repeatable); default: the whole catalog")
    v.add_argument("--json", action="store_true", help="print one JSON object")
    v.add_argument("--trace", action="store_true",
                   help="also record the kernel's rule trace (xtables-monitor --trace)")
    v.set_defaults(func=run_verify)

    r = sub.add_parser("run", help="run one scenario for real and show what happened")
    r.add_argument("scenario", metavar="SCENARIO")
    r.add_argument("--without-rule", action="append", default=[], metavar="TEXT",
                   help='remove a rule first, e.g. "-m owner --uid-owner 1337 -j RETURN"')
    r.add_argument("--without-match", action="append", default=[], metavar="TEXT",
                   help='ambient scenarios: take a condition out of every rule, e.g. '
                        '"-m mark ! --mark 0x539/0xfff"')
    r.add_argument("--keep", action="store_true",
                   help="leave the namespaces in place to look around (then `meshlab live "
                        "clean --all`)")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=run_run)

    lo = sub.add_parser("loop", help="the loop experiment: no UID/GID 1337 exemption")
    lo.add_argument("--json", action="store_true")
    lo.set_defaults(func=run_loop)

    rd = sub.add_parser("random", help="random istio-iptables configs x random connections")
    rd.add_argument("--seed", type=int, help="replay a run (default: MESHLAB_LIVE_SEED or new)")
    rd.add_argument("--configs", type=_CONFIGS, default=12,
                    help="random configurations (1-1000, default 12)")
    rd.add_argument("--per-config", type=_PER_CONFIG, default=20,
                    help="random connections per configuration (1-1000, default 20)")
    rd.add_argument("--ambient", action="store_true",
                    help="random requests in the ambient world instead (sources, targets, "
                         "ports, pod annotations), each compared as a scenario is")
    rd.add_argument("--cases", type=_PER_CONFIG, default=40,
                    help="with --ambient: how many random requests (1-1000, default 40)")
    rd.add_argument("--json", action="store_true")
    rd.set_defaults(func=run_random)

    rec = sub.add_parser("record", help="run every check and write the recording notebook 07 "
                         "shows (meshlab/data/live/recorded-run.json)")
    rec.add_argument("--output", metavar="PATH", help="where to write it (default: "
                     "the recording shipped in the package, meshlab/data/live/"
                     "recorded-run.json)")
    rec.add_argument("--seed", type=int, action="append", metavar="N",
                     help="a seed of the randomized check (repeatable; default: 1 2 3 4 5)")
    rec.add_argument("--configs", type=_CONFIGS, default=12,
                     help="random configurations per seed (1-1000, default 12)")
    rec.add_argument("--per-config", type=_PER_CONFIG, default=20,
                     help="random connections per configuration (1-1000, default 20)")
    rec.set_defaults(func=run_record)

    c = sub.add_parser("clean", help="remove namespaces, processes and temp dirs left behind")
    c.add_argument("--all", action="store_true",
                   help="also those of runs still going (any meshlab- namespace)")
    c.set_defaults(func=run_clean)


def _require_lab() -> None:
    from meshlab.live.lab import check_environment

    check_environment()  # raises LabUnavailable (a MeshlabError: exit 2 with the reason)


def run_verify(args: argparse.Namespace) -> int:
    from meshlab.live.verify import side_by_side, verify_catalog
    from meshlab.scenarios import get_scenario

    for name in args.scenario or ():
        get_scenario(name)  # an unknown name is reported before the lab is built
    _require_lab()
    report = verify_catalog(args.scenario, trace=args.trace)
    if args.json:
        print(json.dumps(report.to_json(), indent=2, default=str))
    else:
        for comparison in report.comparisons:
            status = "agree" if comparison.agree else "DISAGREE"
            print(f"{status:9} {comparison.name}")
            if not comparison.agree:
                print(side_by_side(comparison))
        agreed = sum(c.agree for c in report.comparisons)
        print(f"{agreed}/{len(report.comparisons)} scenarios agree "
              f"({report.seconds:.1f} s)")
    return 0 if report.agree else 1


def run_run(args: argparse.Namespace) -> int:
    from meshlab.live.verify import run_one, side_by_side
    from meshlab.live.worldlab import world_lab
    from meshlab.scenarios import get_scenario, run_scenario

    scenario = get_scenario(args.scenario)
    if scenario.name.startswith("ambient-"):
        return _run_ambient(args, scenario)
    if args.without_match:
        raise MeshlabError(f"--without-match applies to the ambient scenarios only; "
                           f"{scenario.name} studies a sidecar pod (use --without-rule)")
    run_scenario(scenario, without_rules=args.without_rule)  # bad rule texts: said before the lab
    _require_lab()
    with world_lab(trace=True, keep=args.keep, deadline=60.0) as lab:
        _walk, seen, comparison = run_one(lab, scenario, without_rules=args.without_rule)
        names = (lab.pod, lab.peer)
    if args.json:
        print(json.dumps({**comparison.to_json(), "connection": seen.to_json()}, indent=2,
                         default=str))
    else:
        print(side_by_side(comparison))
        print("\nproxy log:")
        for event in seen.proxy_log:
            print("  " + " ".join(f"{k}={v}" for k, v in event.items() if k != "t"))
        if seen.trace:
            print("\nkernel trace of the first packet (xtables-monitor --trace):")
            for step in seen.trace:
                rule = "policy" if step["rule"] == 0 else f"rule {step['rule']}"
                print(f"  {step['table']:7} {step['chain']:18} {rule:8} {step['verdict']}")
        if args.keep:
            print(f"\nkept: ip netns exec {names[0]} iptables-save -c   "
                  f"(remove with `meshlab live clean --all`)")
    return 0 if comparison.agree else 1


def _run_ambient(args: argparse.Namespace, scenario: Any) -> int:
    """``live run`` for an ambient scenario: the ambient lab, every proxy's log."""
    from meshlab.live.ambient_lab import AmbientLab
    from meshlab.live.ambient_verify import run_one
    from meshlab.live.verify import side_by_side
    from meshlab.scenarios import run_scenario

    # bad rule or condition texts: said before the lab is built
    run_scenario(scenario, without_rules=args.without_rule, without_matches=args.without_match)
    _require_lab()
    with AmbientLab(keep=args.keep, deadline=60.0) as lab:
        _walk, seen, comparison = run_one(lab, scenario, without_rules=args.without_rule,
                                          without_matches=args.without_match)
        pod = lab.pod
    if args.json:
        print(json.dumps({**comparison.to_json(), "connection": seen.pod.to_json(),
                          "proxy_log": list(seen.events)}, indent=2, default=str))
        return 0 if comparison.agree else 1
    print(side_by_side(comparison))
    print("\nproxy logs (both ztunnels, the sidecar's Envoy), in time order:")
    for event in seen.events:
        print("  " + " ".join(f"{k}={v}" for k, v in event.items() if k != "t"))
    if args.keep:
        print(f"\nkept: ip netns exec {pod} iptables-save -c   "
              f"(remove with `meshlab live clean --all`)")
    return 0 if comparison.agree else 1


def run_loop(args: argparse.Namespace) -> int:
    from meshlab.live.loop import describe, loop_experiment

    _require_lab()
    result = loop_experiment()
    print(json.dumps(result, indent=2, default=str) if args.json else describe(result))
    return 0 if result["agree"] else 1


def run_random(args: argparse.Namespace) -> int:
    from meshlab.live.differential import randomized, seed_from_env

    _require_lab()
    seed = args.seed if args.seed is not None else seed_from_env()
    if args.ambient:
        return _random_ambient(args, seed)
    report = randomized(seed, configs=args.configs, per_config=args.per_config)
    if args.json:
        print(json.dumps({"seed": seed, "agreed": report.agreed, "total": len(report.results),
                          "disagreements": [r.to_json() for r in report.disagreements]},
                         indent=2))
    else:
        for r in report.disagreements:
            print(f"DISAGREE {r.spec.describe()}\n  flags: {' '.join(r.config)}")
            for line in r.diff:
                print(f"  {line}")
        print(f"{report.agreed}/{len(report.results)} connections agree "
              f"({report.configs} configurations, {report.seconds:.1f} s, seed {seed}; "
              f"replay with MESHLAB_LIVE_SEED={seed})")
    return 0 if not report.disagreements else 1


def _random_ambient(args: argparse.Namespace, seed: int) -> int:
    from meshlab.live.ambient_verify import randomized_ambient

    results = randomized_ambient(seed, cases=args.cases)
    bad = [(case, c) for case, c in results if not c.agree]
    if args.json:
        print(json.dumps({"seed": seed, "agreed": len(results) - len(bad),
                          "total": len(results),
                          "disagreements": [{"request": case.describe(), **c.to_json()}
                                            for case, c in bad]}, indent=2, default=str))
    else:
        for case, c in bad:
            print(f"DISAGREE {case.describe()}")
            for item in c.diff:
                print("  " + ", ".join(f"{k}={v}" for k, v in item.items()))
        print(f"{len(results) - len(bad)}/{len(results)} ambient requests agree (seed {seed}; "
              f"replay with --seed {seed})")
    return 0 if not bad else 1


def run_record(args: argparse.Namespace) -> int:
    from meshlab.live.record import SEEDS, describe, record, write

    _check_output(args.output)
    _require_lab()
    document = record(seeds=tuple(args.seed or SEEDS), configs=args.configs,
                      per_config=args.per_config)
    path = write(document, args.output)
    print(describe(document))
    print(f"wrote {path}")
    return 0 if document["agree"] else 1


def _check_output(path: str | None) -> None:
    """Say before a long run, not after it, that ``--output`` cannot be written."""
    import os

    if path is None:
        return
    if os.path.isdir(path):
        raise MeshlabError(f"--output {path!r} is a directory; give a file path, e.g. "
                           f"{os.path.join(path, 'recorded-run.json')}")
    ancestor = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(ancestor):  # missing directories are made by the writer
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor) or not os.access(ancestor, os.W_OK):
        raise MeshlabError(f"--output {path!r}: cannot write under {ancestor!r} (not a "
                           "directory, or no permission); choose another path")


def run_clean(args: argparse.Namespace) -> int:
    from meshlab.live.netns import clean

    try:
        removed = clean(everything=args.all)
    except MeshlabError as error:
        print(f"meshlab live clean: {error}", file=sys.stderr)
        return 2
    for item in removed:
        print(f"removed {item}")
    if not removed:
        print("nothing to clean")
    return 0
