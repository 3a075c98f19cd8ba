"""What each rule is for: take it out, run every scenario, and see what changes.

The rules ``istio-iptables`` writes are short, and every one of them is there for a reason
that is hard to see by reading it. The ablation makes the reason visible: for every rule of the
default rules (:func:`meshlab.istio.capture.default_rules`), remove that rule alone, run the
whole scenario catalog, and compare each walk with the walk under the full rules::

    >>> from meshlab.ablation import ablation
    >>> table = ablation()
    >>> table.loc["-A ISTIO_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN", "inbound"]
    'loop'

Each cell says how the scenario changed:

``"loop"``                the proxy's own connection came back to it (see ``Walk.loop``);
``"bypasses proxy"``      delivered, but no longer through Envoy (no mTLS, no policy);
``"now proxied"``         delivered, and now through Envoy where it was not before;
``"refused"`` / ``"dropped"`` / ``"timeout"``   the request no longer gets through;
``"delivered elsewhere"`` a different process, port or visible source address;
``"different path"``      same delivery, another route through the proxy;
``"no change"``           the rule played no part in this scenario;
``"rule absent"``         the scenario's own flags produce rules without this one.

The same for an ambient pod (``ablation(mode="ambient")``): every in-pod rule of istio-cni,
the ``ip rule fwmark 0x111/0xfff lookup 100`` and its table-100 route, and the condition
``-m mark ! --mark 0x539/0xfff`` taken out of every rule (ztunnel captures itself: a loop).
Without the connmark rules or the ``ip rule`` an inbound walk times out: the app's answer
leaves by eth0 for the client's real address and the connection never completes.

Some rules only matter in pairs: the UID and the GID exemptions of the proxy back each other
up (removing ``-m owner --uid-owner 1337 -j RETURN`` alone changes nothing, because its GID
twin still lets Envoy through). :data:`TWIN_GROUPS` adds a row for each such pair; removing
both shows the outbound loop.

Speed: rulesets, Sidecars and pods are cached per variant and every walk reuses the compiled
rules (see ``benchmarks/bench_walk.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from meshlab.errors import MeshlabError
from meshlab.scenarios import Scenario, catalog, proxy_listeners
from meshlab.walk import Walk

if TYPE_CHECKING:
    import pandas

CHANGES = ("loop", "bypasses proxy", "now proxied", "refused", "dropped", "timeout",
           "delivered elsewhere", "different path", "no change", "rule absent")


@dataclass(frozen=True, slots=True)
class RuleGroup:
    """Rules removed together: ``label`` names the row, ``specs`` are ``-t T -A C text`` (or
    ``ip rule ...``/``ip route ...`` for policy routing); ``matches`` are conditions taken out
    of every rule that has them (ambient: ``-m mark ! --mark 0x539/0xfff``)."""

    label: str
    specs: tuple[str, ...]
    matches: tuple[str, ...] = ()


def _label(chain: str, text: str) -> str:
    return f"-A {chain} {text}"


def default_rule_groups(*, twins: bool = True) -> list[RuleGroup]:
    """One group per rule of the default rules, then the UID/GID twin pairs.

    A twin pair is a ``--uid-owner`` rule and the rule that is identical except for
    ``--gid-owner`` (Istio writes the three proxy exemptions once per UID, then once per GID).
    """
    from meshlab.istio.capture import default_rules

    ruleset = default_rules()
    groups: list[RuleGroup] = []
    refs = list(ruleset.rules())
    for ref in refs:
        groups.append(RuleGroup(_label(ref.chain, ref.rule.text),
                                (f"-t {ref.table} -A {ref.chain} {ref.rule.text}",)))
    if twins:
        for ref in refs:
            text = ref.rule.text
            if "--uid-owner" not in text:
                continue
            twin_text = text.replace("--uid-owner", "--gid-owner")
            twin = next((r for r in refs if r.rule.text == twin_text and r.chain == ref.chain
                         and r.table == ref.table), None)
            if twin is None:
                continue
            groups.append(RuleGroup(
                f"{_label(ref.chain, text)} + {_label(twin.chain, twin_text)}",
                (f"-t {ref.table} -A {ref.chain} {text}",
                 f"-t {twin.table} -A {twin.chain} {twin_text}")))
    return groups


TWIN_GROUPS = "uid/gid twin pairs (see default_rule_groups)"

ZTUNNEL_EXEMPTION = "-m mark ! --mark 0x539/0xfff"
"""The condition every capturing rule of an ambient pod carries: "not ztunnel's packet"."""


def ambient_rule_groups() -> list[RuleGroup]:
    """One group per rule of an ambient pod's default rules (istio-cni's, DNS capture on),
    then the ``ip rule`` and the table-100 route, then the ztunnel exemption
    (:data:`ZTUNNEL_EXEMPTION`) taken out of every rule at once - the ambient counterpart of
    removing the sidecar's UID/GID exemptions."""
    from meshlab.istio.ambient import INPOD_ROUTE_COMMANDS, inpod_rules

    ruleset = inpod_rules().ruleset_v4
    groups = [RuleGroup(f"-t {ref.table} {_label(ref.chain, ref.rule.text)}",
                        (f"-t {ref.table} -A {ref.chain} {ref.rule.text}",))
              for ref in ruleset.rules()]
    groups += [RuleGroup(command, (command,)) for command in reversed(INPOD_ROUTE_COMMANDS[4])]
    groups.append(RuleGroup(f"{ZTUNNEL_EXEMPTION} (from every rule)", (),
                            (ZTUNNEL_EXEMPTION,)))
    return groups


def classify(baseline: Walk, changed: Walk) -> str:
    """How ``changed`` differs from ``baseline``, in one of :data:`CHANGES`."""
    if changed.outcome == "loop":
        if baseline.loop is not None and changed.loop is not None and \
                baseline.loop.cycle == changed.loop.cycle:
            return "no change"
        return "loop"
    same_delivery = _delivery(baseline) == _delivery(changed)
    same_path = (proxy_listeners(baseline) == proxy_listeners(changed)
                 and _clusters(baseline) == _clusters(changed))
    if changed.outcome == baseline.outcome and same_delivery and same_path:
        return "no change"
    if changed.outcome in ("refused", "dropped", "timeout"):
        return changed.outcome
    if baseline.proxied and not changed.proxied:
        return "bypasses proxy"
    if changed.proxied and not baseline.proxied:
        return "now proxied"
    if not same_delivery or baseline.outcome != changed.outcome:
        return "delivered elsewhere"
    return "different path"


def _delivery(walk: Walk) -> object:
    return None if walk.delivered_to is None else walk.delivered_to.to_json()


def _clusters(walk: Walk) -> tuple[str | None, ...]:
    return tuple(e.cluster for e in walk.events if e.kind == "proxy")


def _run(scenario: Scenario, without: Sequence[str], matches: Sequence[str] = ()
         ) -> Walk | None:
    from meshlab.scenarios import run_scenario

    try:
        return run_scenario(scenario, without_rules=without, without_matches=matches)
    except MeshlabError as error:
        if "no rule" in str(error) or "no policy routing" in str(error):
            return None
        raise


def ablation_detail(scenarios: Iterable[str] | None = None,
                    groups: Sequence[RuleGroup] | None = None, *,
                    mode: str = "sidecar") -> pandas.DataFrame:
    """The long form: one row per (rule group, scenario) with outcomes before and after.

    ``mode`` chooses the defaults: ``"sidecar"`` (the sidecar scenarios x
    :func:`default_rule_groups`) or ``"ambient"`` (the ``ambient-`` scenarios x
    :func:`ambient_rule_groups`)."""
    import pandas

    if mode not in ("sidecar", "ambient"):
        raise MeshlabError(f"mode must be 'sidecar' or 'ambient', not {mode!r}")
    chosen = _scenarios(scenarios, mode)
    if groups is None:
        groups = default_rule_groups() if mode == "sidecar" else ambient_rule_groups()
    groups = list(groups)
    baselines = {s.name: _run(s, ()) for s in chosen}
    rows = _rows(chosen, groups, baselines)
    return pandas.DataFrame(rows, columns=["rule", "scenario", "change", "outcome_before",
                                           "outcome_after", "delivered_to", "loop"])


def _rows(chosen: Sequence[Scenario], groups: Sequence[RuleGroup],
          baselines: Mapping[str, Walk | None]) -> list[tuple[object, ...]]:
    rows = []
    for group in groups:
        for scenario in chosen:
            base = baselines[scenario.name]
            assert base is not None
            walk = _run(scenario, group.specs, group.matches)
            if walk is None:
                rows.append((group.label, scenario.name, "rule absent", base.outcome, None,
                             None, None))
                continue
            rows.append((group.label, scenario.name, classify(base, walk), base.outcome,
                         walk.outcome,
                         None if walk.delivered_to is None else
                         f"{walk.delivered_to.process}:{walk.delivered_to.port} sees "
                         f"{walk.delivered_to.sees_source}",
                         None if walk.loop is None else walk.loop.text))
    return rows


def ablation(scenarios: Iterable[str] | None = None,
             groups: Sequence[RuleGroup] | None = None, *,
             mode: str = "sidecar") -> pandas.DataFrame:
    """Rule (row, ``-A CHAIN text``) x scenario (column) -> what removing the rule changes.

    ``scenarios`` defaults to the sidecar scenarios of the catalog, ``groups`` to
    :func:`default_rule_groups` (every default rule alone, then the UID/GID twin pairs).
    ``mode="ambient"``: the ``ambient-`` scenarios and :func:`ambient_rule_groups` (every
    in-pod rule alone, the ``ip rule`` and route, and the ztunnel exemption everywhere).
    """
    detail = ablation_detail(scenarios, groups, mode=mode)
    order = list(dict.fromkeys(detail["rule"]))
    columns = list(dict.fromkeys(detail["scenario"]))
    table = detail.pivot(index="rule", columns="scenario", values="change")
    table = table.loc[order, columns]
    table.index.name = "rule removed"
    table.columns.name = "scenario"
    return table


def summary(table: pandas.DataFrame) -> Mapping[str, str]:
    """For each rule row: the scenarios that change, in words (``"no scenario changes"``)."""
    out: dict[str, str] = {}
    for label, row in table.iterrows():
        changed = [f"{name}: {value}" for name, value in row.items()
                   if value not in ("no change", "rule absent")]
        out[str(label)] = "; ".join(changed) if changed else "no scenario changes"
    return out


def _scenarios(names: Iterable[str] | None, mode: str = "sidecar") -> list[Scenario]:
    everything = catalog()
    if names is None:
        return [s for s in everything.values() if s.ambient == (mode == "ambient")]
    chosen = []
    for name in names:
        if name not in everything:
            raise MeshlabError(f"unknown scenario {name!r}; choose from {', '.join(everything)}")
        chosen.append(everything[name])
    return chosen
