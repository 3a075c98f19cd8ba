"""What the model said beside what the kernel did: the comparison both labs share.

:func:`compare` lines up the facts of one scenario (outcome, delivery, listeners, nat
counters) from the model (:func:`model_facts`) and from a lab, and :func:`side_by_side`
prints them for a person. The sidecar lab (:mod:`meshlab.live.verify`) and the ambient lab
(:mod:`meshlab.live.ambient_verify`) each gather their kernel's facts and hand them here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from meshlab.errors import MeshlabError
from meshlab.live.counters import Key
from meshlab.live.lab import KernelConnection
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


def key_name(key: Key) -> str:
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
        "nat": {key_name(k): n for k, n in sorted(nat.items())},
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


def compared_or_error(name: str, run: Callable[[], Comparison]) -> Comparison:
    """``run()``'s comparison, or, when the lab or the model could not run scenario ``name``,
    a comparison that says which of the two failed and why (never an exception)."""
    try:
        return run()
    except LabError as error:
        return Comparison(name, {}, {"error": str(error)},
                          ({"what": "error", "model": None, "kernel": str(error)},))
    except MeshlabError as error:  # the model could not run this scenario
        return Comparison(name, {"error": str(error)}, {},
                          ({"what": "model error", "model": str(error), "kernel": None},))
