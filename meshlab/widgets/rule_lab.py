"""The rule lab: untick a rule of a sidecar pod and see which requests break, and how.

One checkbox per rule of the default rules (what ``istio-init`` writes with its default
flags), written as ``iptables-save`` shows it (``-A CHAIN ...``). Untick some: the lab asks the
model to run every scenario of the catalog without them (:func:`meshlab.scenarios.run_scenario`
with ``without_rules``) and compares each walk with the walk under the full rules
(:func:`meshlab.ablation.classify`): "loop", "bypasses proxy", "refused", ... The lab decides
nothing itself.

Try the proxy's exemptions: untick ``-m owner --uid-owner 1337 -j RETURN`` alone and nothing
changes, because its twin ``--gid-owner 1337`` still lets Envoy's own connections out; untick
both and the outbound request loops through Envoy.

``RuleLab(ambient=True)`` is the same lab for an ambient pod: one checkbox per rule the
istio-cni agent writes, and one for each of its two ``ip`` commands (the ``ip rule`` and the
table-100 route), over the ambient scenarios. Untick the connmark rules or the ``ip rule``
and the inbound calls never complete.

Speed: results are cached per set of unticked rules, so going back to a set is instant.
"""

from __future__ import annotations

from collections.abc import Sequence

import ipywidgets as widgets
import pandas

from meshlab.i18n import tr, translatable
from meshlab.widgets.common import LiveWidget, error_widget, esc, guarded, html_table

#: The result table's columns (the frame's names; the HTML table shows them translated).
_COLUMNS = [translatable("scenario"), translatable("before"), translatable("after"),
            translatable("change"), translatable("detail")]
#: Whose rules the lab shows, by ``ambient``.
_PODS = {True: translatable("an ambient pod (istio-cni's rules)"),
         False: translatable("a default sidecar pod")}


def _outcome(walk: object) -> str:
    delivered = getattr(walk, "delivered_to", None)
    outcome = str(getattr(walk, "outcome", "?"))
    if delivered is not None:
        return tr("{outcome}: {process}:{port} sees {source}", outcome=outcome,
                  process=delivered.process, port=delivered.port,
                  source=delivered.sees_source)
    return outcome


class RuleLab(LiveWidget, widgets.VBox):
    """A checkbox per default rule; the catalog re-runs without the unticked ones.

    ``scenarios`` limits the catalog (default: every scenario of the pod's kind). The result
    table (HTML, ``meshlab-rule-lab-result``) lists the scenarios that changed first, marked
    with ``*``. ``ambient``: the rules of an ambient pod, over the ambient scenarios.
    """

    def __init__(self, scenarios: Sequence[str] | None = None, *, ambient: bool = False) -> None:
        self.ambient = ambient
        self._pod = tr(_PODS[ambient])
        self.error = error_widget()
        self.result = widgets.HTML("").add_class("meshlab-rule-lab-result")
        self.toggles: list[widgets.Checkbox] = []
        self._specs: dict[str, str] = {}  # description -> "-t TABLE -A CHAIN text"
        self._cache: dict[tuple[str, ...], pandas.DataFrame] = {}
        self._baseline: dict[str, object] = {}
        self._names: list[str] = []
        self._frame = pandas.DataFrame(columns=_COLUMNS)
        reset = widgets.Button(description=tr("Tick all"), icon="undo",
                               tooltip=tr("put every rule back"))
        reset.on_click(lambda _: self.reset())
        ok = guarded(lambda: self._setup(scenarios), self.error)
        box = widgets.VBox(self.toggles, layout=widgets.Layout(width="100%"))
        heading = tr("Rules of {pod}", pod=esc(self._pod))
        untick = tr("(untick to remove):")
        super().__init__([widgets.HTML(f"<b>{heading}</b> {untick}"), box, reset, self.error,
                          self.result])
        self.add_class("meshlab-rule-lab")
        if ok:
            self._update()

    def _setup(self, scenarios: Sequence[str] | None) -> bool:
        from meshlab.scenarios import catalog, get_scenario, run_scenario

        names = list(scenarios) if scenarios is not None else [
            n for n, s in catalog().items() if bool(s.ambient) == self.ambient]  # this pod's kind
        for name in names:
            get_scenario(name)  # an unknown name -> ScenarioError listing the choices
        self._names = names
        for description, spec in _toggles(self.ambient):
            self._specs[description] = spec
            box = widgets.Checkbox(value=True, description=description, indent=False,
                                   layout=widgets.Layout(width="100%"),
                                   style={"description_width": "initial"})
            box.add_class("meshlab-rule-toggle")
            box.observe(self._update, names="value")
            self.toggles.append(box)
        self._baseline = {name: run_scenario(name) for name in names}
        return True

    # ------------------------------------------------------------------ state
    @property
    def removed(self) -> tuple[str, ...]:
        """The unticked rules (``-A CHAIN text``), in the order of the rules."""
        return tuple(box.description for box in self.toggles if not box.value)

    def reset(self) -> None:
        """Tick every rule again (one update at the end)."""
        with self.hold_sync():
            for box in self.toggles:
                box.unobserve(self._update, names="value")
                box.value = True
                box.observe(self._update, names="value")
        self._update()

    def _run(self, removed: tuple[str, ...]) -> pandas.DataFrame:
        from meshlab.ablation import classify
        from meshlab.errors import MeshlabError
        from meshlab.scenarios import run_scenario

        specs = [self._specs[r] for r in removed]
        rows = []
        for name in self._names:
            before = self._baseline[name]
            try:
                walk = run_scenario(name, without_rules=specs)
            except MeshlabError as exc:
                rows.append((name, _outcome(before), "error", "error", str(exc)))
                continue
            change = classify(before, walk) if removed else "no change"  # type: ignore[arg-type]
            detail = walk.loop.text if walk.loop is not None else walk.reason
            rows.append((name, _outcome(before), _outcome(walk), change, detail))
        return pandas.DataFrame(rows, columns=_COLUMNS)

    def _update(self, change: object = None) -> None:
        removed = self.removed
        frame = self._cache.get(removed)
        if frame is None:
            frame = guarded(lambda: self._run(removed), self.error)
            if frame is None:
                return
            self._cache[removed] = frame
        self._frame = frame
        self.result.value = self._render(removed, frame)

    def _render(self, removed: tuple[str, ...], frame: pandas.DataFrame) -> str:
        changed = frame[frame["change"] != "no change"]
        loops = list(frame.loc[frame["change"] == "loop", "scenario"])
        parts = []
        if not removed:
            parts.append("<p>" + tr("All rules are in place: every scenario behaves as in "
                                    "{pod}. Untick a rule to see what it is for.",
                                    pod=esc(self._pod)) + "</p>")
        else:
            gone = tr("{n} rule(s) removed.", n=len(removed))
            parts.append(f"<p><b>{gone}</b> " + tr("{changed} of {total} scenarios change.",
                                                   changed=len(changed), total=len(frame))
                         + "</p>")
        if loops:
            parts.append("<p>" + tr("{loop} in: {names}: the proxy's own connection is "
                                    "captured again and comes back to it.",
                                    loop=f"<b>{tr('loop')}</b>", names=esc(", ".join(loops)))
                         + "</p>")
        for note in _twin_notes(removed, [b.description for b in self.toggles]):
            parts.append(f"<p><b>{tr('Note:')}</b> {esc(note)}</p>")
        ordered = pandas.concat([changed, frame[frame["change"] == "no change"]])
        rows = ordered[_COLUMNS].itertuples(index=False)
        marked = [c != "no change" for c in ordered["change"]]
        table_rows = [(("* " if m else "") + r[0], *r[1:]) for r, m in
                      zip(rows, marked, strict=True)]
        parts.append(html_table(_COLUMNS, table_rows, marked))
        return "".join(parts)

    # ------------------------------------------------------------------ fallback
    def static(self) -> pandas.DataFrame:
        """The current result (scenario, before, after, change, detail) as a DataFrame."""
        return self._frame.set_index("scenario") if len(self._frame) else self._frame


def _toggles(ambient: bool) -> list[tuple[str, str]]:
    """(checkbox text, what ``run_scenario(without_rules=...)`` is given) for every rule of the
    pod: ``-A CHAIN text`` and ``-t TABLE -A CHAIN text``; an ambient pod's ``ip`` commands
    as they are."""
    if not ambient:
        from meshlab.istio.capture import default_rules

        return [(f"-A {ref.chain} {ref.rule.text}", f"-t {ref.table} -A {ref.chain} "
                 f"{ref.rule.text}") for ref in default_rules().rules()]
    from meshlab.istio.ambient import inpod_rules

    rules = inpod_rules()
    toggles = [(f"-t {ref.table} -A {ref.chain} {ref.rule.text}",
                f"-t {ref.table} -A {ref.chain} {ref.rule.text}")
               for ref in rules.ruleset_v4.rules()]
    return toggles + [(command, command) for command in rules.route_commands]


def _twin_notes(removed: Sequence[str], all_rules: Sequence[str]) -> list[str]:
    """Say when a removed ``--uid-owner`` rule still has its ``--gid-owner`` twin (or back)."""
    notes = []
    gone = set(removed)
    for rule in removed:
        for mine, other in (("--uid-owner", "--gid-owner"), ("--gid-owner", "--uid-owner")):
            if mine in rule:
                twin = rule.replace(mine, other)
                if twin in all_rules and twin not in gone:
                    notes.append(tr("'{rule}' is removed, but its twin '{twin}' is still "
                                    "there and matches the proxy too (Envoy runs as UID and "
                                    "GID 1337), so the proxy is still exempted; untick both to "
                                    "see the difference.", rule=rule, twin=twin))
    return notes
