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
from dataclasses import dataclass, field
from typing import Any

from meshlab.errors import MeshlabError
from meshlab.live.counters import Key
from meshlab.live.lab import KernelConnection, Lab, ProxySpec
from meshlab.live.netns import LabError


@dataclass(frozen=True)
class Comparison:
    """One scenario: what the model said, what the kernel did, and where they differ."""

    name: str
    model: Mapping[str, Any]
    kernel: Mapping[str, Any]
    diff: tuple[Mapping[str, Any], ...]
    texts: Mapping[str, str] = field(default_factory=dict)   # "nat CHAIN N" -> rule text
    seconds: float = 0.0

    @property
    def agree(self) -> bool:
        return not self.diff

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "agree": self.agree, "model": dict(self.model),
                "kernel": dict(self.kernel), "diff": [dict(d) for d in self.diff],
                "seconds": round(self.seconds, 4)}


@dataclass(frozen=True)
class Report:
    comparisons: tuple[Comparison, ...]
    seconds: float
    notes: tuple[str, ...] = ()

    @property
    def agree(self) -> bool:
        return all(c.agree for c in self.comparisons)

    def to_json(self) -> dict[str, Any]:
        return {"agree": self.agree, "scenarios": [c.to_json() for c in self.comparisons],
                "seconds": round(self.seconds, 3), "notes": list(self.notes)}


def _key_name(key: Key) -> str:
    return f"{key[0]} {key[1]} {key[2]}"


def kernel_outcome(seen: KernelConnection, texts: Mapping[Key, str] | None = None) -> str:
    """The kernel's result in the model's words (see the module docstring)."""
    events = {e.get("event") for e in seen.proxy_log}
    reply = seen.reply or {}
    if "hop-limit" in events:
        return "loop"
    if seen.outcome == "answered" and "server" in reply:
        return "delivered"
    if seen.outcome == "answered" and str(reply.get("error", "")).startswith("upstream"):
        return "refused" if "refused" in str(reply["error"]).lower() else "timeout"
    if seen.outcome in ("closed", "reset", "refused"):
        return "refused"
    if seen.outcome == "timeout":
        texts = texts or {}
        dropped = any(texts.get(key, "").endswith(("-j DROP", "policy DROP"))
                      for key in seen.grew)
        return "dropped" if dropped else "timeout"
    return seen.outcome


def model_facts(walk: Any) -> dict[str, Any]:
    """The comparable facts of a model :class:`~meshlab.walk.Walk`."""
    from meshlab.scenarios import proxy_listeners

    delivered = walk.delivered_to
    nat = {k: int(v) for k, v in walk.counters.items() if k[0] == "nat" and k[2] > 0 and v}
    return {
        "outcome": walk.outcome,
        "delivered_to": None if delivered is None else
        [delivered.process, delivered.port, delivered.sees_source],
        "listeners": list(proxy_listeners(walk)),
        "clusters": [e.cluster for e in walk.events if e.kind == "proxy" and e.cluster],
        "nat": {_key_name(k): n for k, n in sorted(nat.items())},
    }


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
        "nat": {_key_name(k): n for k, n in sorted(seen.nat.items())},
        "trace": list(seen.trace) if seen.trace is not None else None,
    }


def compare(name: str, model: Mapping[str, Any], kernel: Mapping[str, Any],
            texts: Mapping[str, str] | None = None) -> Comparison:
    """Line up the facts; each difference becomes one ``diff`` item."""
    diff: list[dict[str, Any]] = []
    for what in ("outcome", "delivered_to", "listeners"):
        if model[what] != kernel[what] and not (what == "listeners" and model["outcome"]
                                                == kernel["outcome"] == "loop"):
            diff.append({"what": what, "model": model[what], "kernel": kernel[what]})
    loop = model["outcome"] == kernel["outcome"] == "loop"
    for key in sorted(set(model["nat"]) | set(kernel["nat"])):
        m, k = model["nat"].get(key, 0), kernel["nat"].get(key, 0)
        if (bool(m) != bool(k)) if loop else m != k:
            diff.append({"what": "nat rule", "rule": key,
                         "text": (texts or {}).get(key, ""), "model": m, "kernel": k})
    return Comparison(name, model, kernel, tuple(diff), dict(texts or {}))


def side_by_side(c: Comparison) -> str:
    """The comparison as a table a person reads: facts, then nat rules model | kernel."""
    rows = [f"scenario {c.name}: {'AGREE' if c.agree else 'DISAGREE'}"]
    if "nat" not in c.model or "nat" not in c.kernel:
        return "\n".join(rows + [f"  {d['what']}: model={d['model']} kernel={d['kernel']}"
                                 for d in c.diff])
    rows.append(f"  {'':34} {'model':>24}   {'kernel':>24}")
    for what in ("outcome", "delivered_to", "listeners", "clusters"):
        m, k = c.model.get(what), c.kernel.get(what)
        mark = " " if m == k or what == "clusters" else "!"
        rows.append(f"{mark} {what:34} {_short(m):>24}   {_short(k):>24}")
    keys = sorted(set(c.model["nat"]) | set(c.kernel["nat"]))
    for key in keys:
        m, k = c.model["nat"].get(key, 0), c.kernel["nat"].get(key, 0)
        mark = "!" if any(d.get("rule") == key for d in c.diff) else " "
        text = c.texts.get(key, "")
        rows.append(f"{mark} {key:22} {text[:40]:40} {m:>6}   {k:>6}")
    return "\n".join(rows)


def _short(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "-"
    return "-" if value is None else str(value)


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
        ruleset = rules.ruleset_v4
        for rule in without_rules:
            ruleset = ruleset.without_rule(rule)
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
    texts = {_key_name(k): v for k, v in raw_texts.items()}
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
            try:
                results.append(run_one(lab, scenario, state=state)[2])
            except LabError as error:
                results.append(Comparison(scenario.name, {}, {"error": str(error)},
                                          ({"what": "error", "model": None,
                                            "kernel": str(error)},)))
            except MeshlabError as error:  # the model could not run this scenario
                results.append(Comparison(scenario.name, {"error": str(error)}, {},
                                          ({"what": "model error", "model": str(error),
                                            "kernel": None},)))
        notes += tuple(lab.notes)
    return Report(tuple(results), time.perf_counter() - started, notes)
