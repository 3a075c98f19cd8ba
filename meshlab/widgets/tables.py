"""Readable tables and sentences for the lessons: what a walk or a recorded run found,
with no Python lists or tuples left in them.

A lesson shows a person a table, not ``[15001, 15006]`` or ``['app', 9080, '127.0.0.6']``:

* :func:`delivery_text` -- ``"app on port 9080 (it sees the client as 127.0.0.6)"``;
* :func:`listing` -- ``"15001, 15006"`` (``"none"`` for an empty list);
* :func:`scenario_overview` -- one row per scenario of the catalog: outcome, through Envoy or
  not, Envoy's listeners and clusters, who got the connection (lesson 06);
* :func:`recorded_scenarios` and :func:`recorded_scenario` -- the recorded live run, the
  model beside the kernel (lesson 07; :class:`~meshlab.widgets.RecordedRunBrowser` is its
  live form).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas

from meshlab.i18n import tr


def listing(items: Iterable[object], empty: str | None = None) -> str:
    """``[15001, 15006]`` -> ``"15001, 15006"``; an empty list -> ``empty`` (default:
    ``"none"``, in the learner's language)."""
    words = [str(item) for item in items]
    if words:
        return ", ".join(words)
    return tr("none") if empty is None else empty


def delivery_text(delivered_to: Any) -> str:
    """Who got the connection, in words: ``("app", 9080, "127.0.0.6")`` (or a walk's
    ``delivered_to``) -> ``"app on port 9080 (it sees the client as 127.0.0.6)"``."""
    if delivered_to is None:
        return tr("nobody (not delivered)")
    if isinstance(delivered_to, Sequence) and not isinstance(delivered_to, str):
        process, port, *seen = [*delivered_to, None]
        source = seen[0]
    else:
        process = getattr(delivered_to, "process", delivered_to)
        port = getattr(delivered_to, "port", None)
        source = getattr(delivered_to, "sees_source", None)
    text = (tr("{process} on port {port}", process=process, port=port) if port is not None
            else f"{process}")
    return tr("{who} (it sees the client as {source})", who=text, source=source) if source \
        else text


def scenario_overview(names: Iterable[str]) -> pandas.DataFrame:
    """One row per catalog scenario: what the model did with it, in words (lesson 06)."""
    from meshlab.scenarios import proxy_listeners, run_scenario

    rows = []
    for name in names:
        walk = run_scenario(name)
        clusters = [e.cluster for e in walk.events if e.kind == "proxy" and e.cluster]
        rows.append((name, walk.outcome, "yes" if walk.proxied else "no",
                     listing(proxy_listeners(walk)), listing(clusters),
                     delivery_text(walk.delivered_to)))
    frame = pandas.DataFrame(rows, columns=["scenario", "outcome", "through Envoy",
                                            "Envoy listeners", "Envoy clusters",
                                            "delivered to"])
    return frame.set_index("scenario")


def _rule_name(key: str) -> str:
    """A recorded counter's key, ``"nat ISTIO_INBOUND 5"``, in words: ``"nat ISTIO_INBOUND
    rule 5"`` (number 0 is the chain's policy)."""
    table, chain, number = [*key.split(), "", "", ""][:3]
    return f"{table} {chain} " + ("policy" if number == "0" else f"rule {number}")


def _counter_rows(model: Mapping[str, int], kernel: Mapping[str, int]
                  ) -> list[tuple[str, str, str, str]]:
    rows = []
    for key in sorted(set(model) | set(kernel)):
        m, k = model.get(key, 0), kernel.get(key, 0)
        rows.append((f"counter of {_rule_name(key)}", str(m), str(k), "yes" if m == k else "NO"))
    return rows


def recorded_scenario(document: Mapping[str, Any], name: str) -> pandas.DataFrame:
    """One scenario of a recorded live run: what the model and the real kernel found, side
    by side (outcome, delivery, listeners, clusters, every nat counter), and whether they
    agree. ``document`` is :func:`meshlab.live.record.load`'s result."""
    from meshlab.errors import MeshlabError

    found = [s for s in document["verify"]["scenarios"] if s["name"] == name]
    if not found:
        names = listing(s["name"] for s in document["verify"]["scenarios"])
        raise MeshlabError(tr("the recorded run has no scenario {name}; it has: {names}",
                              name=repr(name), names=names))
    model, kernel = found[0]["model"], found[0]["kernel"]

    def row(what: str, m: str, k: str) -> tuple[str, str, str, str]:
        return (what, m, k, "yes" if m == k else "NO")

    rows = [
        row("outcome", str(model.get("outcome")), str(kernel.get("outcome"))),
        row("delivered to", delivery_text(model.get("delivered_to")),
            delivery_text(kernel.get("delivered_to"))),
        row("Envoy listeners", listing(model.get("listeners", ())),
            listing(kernel.get("listeners", ()))),
        row("Envoy clusters", listing(model.get("clusters", ())),
            listing(kernel.get("clusters", ()))),
        *_counter_rows(model.get("nat", {}), kernel.get("nat", {})),
    ]
    frame = pandas.DataFrame(rows, columns=["", "model", "real kernel", "agree"])
    return frame.set_index("")


def recorded_scenarios(document: Mapping[str, Any]) -> pandas.DataFrame:
    """Every scenario of a recorded live run in one table: outcome and nat counters of the
    model and of the kernel, and whether they agree."""
    rows = []
    for scenario in document["verify"]["scenarios"]:
        model, kernel = scenario["model"], scenario["kernel"]
        rows.append((scenario["name"], model.get("outcome"), kernel.get("outcome"),
                     sum(model.get("nat", {}).values()), sum(kernel.get("nat", {}).values()),
                     "yes" if scenario["agree"] else "NO"))
    frame = pandas.DataFrame(rows, columns=["scenario", "model outcome", "kernel outcome",
                                            "model nat counts", "kernel nat counts", "agree"])
    return frame.set_index("scenario")


def recorded_caption(document: Mapping[str, Any]) -> str:
    """Where the numbers come from: recorded as root on a real kernel, which, and when."""
    return tr("Recorded as root on a real Linux kernel ({kernel}, {iptables}) on {recorded} "
              "(UTC) by `meshlab live record`; the model's columns were computed in the same "
              "run. Re-run it yourself with `sudo meshlab live record` (lesson 07).",
              kernel=document.get("kernel", "unknown"),
              iptables=document.get("iptables", "iptables unknown"),
              recorded=document.get("recorded"))
