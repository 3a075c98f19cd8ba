"""Does the model tell the truth? Each catalog scenario, once in the model and once for real.

For every scenario :func:`verify_catalog` runs the model (:func:`meshlab.scenarios.run_scenario` ->
a :class:`~meshlab.walk.Walk`) and the same request in the lab, with the rules
:mod:`meshlab.istio.capture` generates for the scenario's flags, and compares:

``outcome``
    delivered / refused / dropped / timeout / loop. The kernel's words are translated
    (:func:`kernel_outcome`): a connection the proxy accepted and closed because its decision
    was ``BlackHoleCluster`` is "refused", as the model defines it; a request the proxy
    stopped at its hop limit is a "loop"; a timeout with a DROP rule counted is "dropped".
``delivered_to``
    which process, on which port, and the source address it saw (127.0.0.6 behind the proxy).
``listeners``
    the proxy listening ports that accepted, in order (15006; 15001; 15001 then 15006 ...).
``nat``
    every nat rule that counted, with how many connections it counted: the model's
    ``Walk.counters`` against the growth of the kernel's ``iptables-save -c`` counters.
    In a loop the kernel goes round until the proxy's hop limit and the model stops when it
    recognises the repeated state, so there only *which* rules counted is compared.

A disagreement lists each differing item in ``diff`` and :func:`side_by_side` prints the
nat rules in one table, model beside kernel, rule by rule.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from meshlab.live.comparison import (
    Comparison,
    Report,
    compare,
    compared_or_error,
    kernel_outcome,
    key_name,
    model_facts,
)
from meshlab.live.counters import Key
from meshlab.live.lab import KernelConnection, Lab, ProxySpec


def kernel_facts(seen: KernelConnection,
                 texts: Mapping[Key, str] | None = None) -> dict[str, Any]:
    """The comparable facts of one real connection (and its proxy log)."""
    return {
        "outcome": kernel_outcome(seen, texts),
        "raw_outcome": seen.outcome,
        "delivered_to": list(seen.delivered_to) if seen.delivered_to else None,
        "listeners": [int(e["listener_port"]) for e in seen.accepts],
        "clusters": [e["cluster"] for e in seen.proxy_log if e.get("event") == "decide"],
        "original_dst": seen.original_dst,
        "hops": seen.hops,
        "nat": {key_name(k): n for k, n in sorted(seen.nat.items())},
        "trace": list(seen.trace) if seen.trace is not None else None,
    }


# -- running -----------------------------------------------------------------------------

def scenario_rules(scenario: Any, without_rules: Sequence[str] = ()) -> tuple[str, tuple[str, ...],
                                                                             str]:
    """(restore document, post-commands, interception mode) for a scenario's flags."""
    from meshlab.istio.capture import CaptureConfig, generate
    from meshlab.istio.flags import DEFAULT_ISTIO_INIT_ARGS

    flags = scenario.flags if scenario.flags is not None else DEFAULT_ISTIO_INIT_ARGS
    config = CaptureConfig.from_args(list(flags))
    rules = generate(config)
    text = rules.restore_v4
    if without_rules:
        from meshlab.netfilter.parse import parse_rule_spec

        ruleset = rules.ruleset_v4
        for text in without_rules:
            table, chain, rule = parse_rule_spec(text)
            ruleset = ruleset.without_rule(rule, table=table, chain=chain)
        text = ruleset.render_restore()
    mode = "TPROXY" if config.interception_mode == "TPROXY" else "REDIRECT"
    return text, tuple(rules.post_commands), mode


def run_one(lab: Lab, scenario: Any, *, without_rules: Sequence[str] = (),
            state: dict[str, Any] | None = None) -> tuple[Any, KernelConnection, Comparison]:
    """Run one scenario in the model and in ``lab`` (reloading rules/proxy only on change)."""
    from meshlab.live.worldlab import live_request, proxy_spec
    from meshlab.scenarios import run_scenario

    started = time.perf_counter()
    walk = run_scenario(scenario.name, without_rules=tuple(without_rules))
    text, post, mode = scenario_rules(scenario, without_rules)
    state = {} if state is None else state
    if state.get("rules") != (text, post):
        lab.load(text, post)
        state["rules"] = (text, post)
    current = lab.proxy.mode if isinstance(lab.proxy, ProxySpec) else None
    if current != mode:
        hop_limit = lab.proxy.hop_limit if isinstance(lab.proxy, ProxySpec) else 8
        lab.restart_proxy(proxy_spec(mode, hop_limit))
    request = live_request(scenario.request)
    seen = lab.connect(request.dst, request.dport, **request.kwargs())
    raw_texts = lab.counters().texts
    texts = {key_name(k): v for k, v in raw_texts.items()}
    comparison = compare(scenario.name, model_facts(walk), kernel_facts(seen, raw_texts), texts)
    return walk, seen, Comparison(comparison.name, comparison.model, comparison.kernel,
                                  comparison.diff, comparison.texts,
                                  time.perf_counter() - started)


def verify_catalog(names: Iterable[str] | None = None, *, trace: bool = False,
                   deadline: float | None = 120.0) -> Report:
    """Run the scenarios (all when ``names`` is None) in the model and on the kernel."""
    from meshlab.live.ambient_verify import is_ambient, verify_ambient
    from meshlab.live.worldlab import world_lab
    from meshlab.scenarios import catalog, get_scenario

    chosen = [get_scenario(n) for n in names] if names else list(catalog().values())
    ambient = [s for s in chosen if is_ambient(s)]
    sidecar = [s for s in chosen if not is_ambient(s)]
    started = time.perf_counter()
    results: list[Comparison] = []
    notes: tuple[str, ...] = ()
    if ambient:   # the ambient world is a lab of its own (meshlab.live.ambient_verify)
        found, said = verify_ambient(ambient, deadline=deadline)
        results += found
        notes += tuple(said)
    if not sidecar:
        return Report(tuple(results), time.perf_counter() - started, notes)
    with world_lab(trace=trace, deadline=deadline) as lab:
        state: dict[str, Any] = {}
        for scenario in sidecar:
            results.append(compared_or_error(
                scenario.name, lambda s=scenario: run_one(lab, s, state=state)[2]))
        notes += tuple(lab.notes)
    return Report(tuple(results), time.perf_counter() - started, notes)
