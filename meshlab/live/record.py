"""Recording a run of the real lab, for readers who cannot run it (Binder, a laptop).

Notebook 07 shows what the lab found on a real kernel. Where the lab cannot run (no root,
no iptables) it reads a *recorded run* instead: ``meshlab/data/live/recorded-run.json``
(package data, :mod:`meshlab.datafiles`), made by
``meshlab live record``, which calls :func:`record` and :func:`write`. One recording holds
everything the lab checks, each beside the model:

``verify``
    every catalog scenario (:func:`meshlab.live.verify.verify_catalog`): outcome, delivery,
    listeners, clusters and nat counters, model and kernel, and the differences;
``default_rules``
    one connection of each kind through the default rules, connection by connection
    (:func:`meshlab.live.differential.default_rules_check`);
``loop``
    the loop experiment without the UID/GID 1337 exemptions
    (:func:`meshlab.live.loop.loop_experiment`);
``randomized``
    random ``istio-iptables`` configurations x random connections, one run per seed
    (:func:`meshlab.live.differential.randomized`); a seed replays its run exactly;
``summary``
    the counts: scenarios, connections and loop turns that agreed.

**Deterministic on purpose.** Recording twice on the same machine should give the same file,
so that a diff of ``recorded-run.json`` shows what changed in the model or the kernel and
nothing else. So: keys sorted; the date only (``recorded``, UTC, no time of day); ephemeral
source ports, which the kernel picks at random, left out (the loop's hop log keeps the
client's address, not its port); and every duration moved to one place, ``timings``, whose
``note`` says it changes from run to run. The notebook never prints ``timings``.
"""

from __future__ import annotations

import datetime
import json
import platform
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from meshlab import datafiles
from meshlab.errors import MeshlabError

RECORDED_RUN = datafiles.data_file(datafiles.RECORDED_RUN)
"""Where notebook 07 reads the recording: ``meshlab/data/live/recorded-run.json``, shipped
with the package (in a checkout, ``meshlab live record`` rewrites it there)."""

SEEDS = (1, 2, 3, 4, 5)
"""The randomized check's seeds: 5 runs x 12 configurations x 20 connections = 1200."""

LOOP_LIMITS = (1, 2, 4, 8)

NOTEBOOK_KEYS: Mapping[str, tuple[str, ...]] = {
    # the paths notebook 07 reads; a recording must have each of them
    "recorded": (), "kernel": (), "iptables": (),
    "verify": ("agree", "scenarios"),
    "verify.scenarios[]": ("name", "agree", "model", "kernel", "diff"),
    "verify.scenarios[].model": ("outcome", "nat"),
    "verify.scenarios[].kernel": ("outcome", "nat", "delivered_to", "original_dst"),
    "default_rules[]": ("connection", "agree", "model", "kernel", "diff"),
    "loop": ("removed", "model", "kernel", "agree"),
    "loop.model": ("outcome", "loop"),
    "loop.model.loop": ("cycle",),
    "loop.kernel": ("runs",),
    "loop.kernel.runs[]": ("hop_limit", "hops", "redirects", "nat"),
    "randomized": ("runs",),
    "randomized.runs[]": ("seed", "agreed", "total"),
}
"""What a recording must contain: a path (``[]`` = each item of a list) -> its keys."""


class RecordError(MeshlabError):
    """A recording cannot be written or read (bad path, not JSON)."""


def tool_version(argv: Sequence[str]) -> str:
    """The first line a ``--version`` command prints, or ``"unknown"``."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=10,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if lines else "unknown"


def _scrub_loop(loop: dict[str, Any]) -> dict[str, Any]:
    """The loop result without ephemeral ports (``from`` keeps the address only)."""
    for run in loop["kernel"]["runs"]:
        for hop in run["hop_log"]:
            hop["from"] = str(hop["from"]).rsplit(":", 1)[0]
    return loop


def record(*, seeds: Sequence[int] = SEEDS, configs: int = 12, per_config: int = 20,
           limits: Sequence[int] = LOOP_LIMITS, today: datetime.date | None = None
           ) -> dict[str, Any]:
    """Run everything the lab checks, once, and return it as one JSON-ready document.

    Needs the lab (root, iptables, ``ip netns``): raises
    :class:`~meshlab.live.netns.LabUnavailable` otherwise. The whole catalog, the default
    rules' connections, the loop at each of ``limits`` and ``len(seeds) x configs x
    per_config`` random connections take about 25 s on a laptop-sized VM.
    """
    from meshlab.live.differential import default_rules_check, randomized
    from meshlab.live.lab import check_environment
    from meshlab.live.loop import loop_experiment
    from meshlab.live.verify import verify_catalog

    check_environment()
    timings: dict[str, Any] = {}
    started = time.perf_counter()

    report = verify_catalog()
    verified = report.to_json()
    timings["verify"] = verified.pop("seconds")
    timings["scenarios"] = {s["name"]: s.pop("seconds") for s in verified["scenarios"]}

    mark = time.perf_counter()
    default_rules = [r.to_json() for r in default_rules_check()]
    timings["default_rules"] = round(time.perf_counter() - mark, 3)

    mark = time.perf_counter()
    loop = _scrub_loop(loop_experiment(limits=tuple(limits)))
    timings["loop"] = round(time.perf_counter() - mark, 3)

    runs = []
    timings["randomized"] = {}
    for seed in seeds:
        result = randomized(seed, configs=configs, per_config=per_config)
        timings["randomized"][str(seed)] = round(result.seconds, 3)
        runs.append({"seed": seed, "configs": result.configs, "agreed": result.agreed,
                     "total": len(result.results),
                     "disagreements": [r.to_json() for r in result.disagreements]})
    timings["total"] = round(time.perf_counter() - started, 3)
    timings["note"] = ("wall-clock seconds of this recording; they change from run to run "
                       "and are not part of the comparison")

    agreed = {
        "scenarios": [sum(s["agree"] for s in verified["scenarios"]),
                      len(verified["scenarios"])],
        "default_rules_connections": [sum(r["agree"] for r in default_rules),
                                      len(default_rules)],
        "random_connections": [sum(r["agreed"] for r in runs), sum(r["total"] for r in runs)],
        "loop_runs": [sum(r["hops"] == r["hop_limit"] + 1 for r in loop["kernel"]["runs"]),
                      len(loop["kernel"]["runs"])],
    }
    day = today or datetime.datetime.now(datetime.timezone.utc).date()
    return {
        "about": "meshlab's live lab on a real kernel, each check beside the model; made by "
                 "`meshlab live record` (meshlab.live.record). 'recorded' is the UTC date; "
                 "durations are only under 'timings'.",
        "recorded": day.isoformat(),
        "kernel": platform.release(),
        "iptables": tool_version(["iptables", "--version"]),
        "agree": all(a == b for a, b in agreed.values()) and bool(loop["agree"]),
        "summary": {"agreed": agreed, "seeds": list(seeds)},
        "verify": verified,
        "default_rules": default_rules,
        "loop": loop,
        "randomized": {"runs": runs, "configs": configs, "per_config": per_config},
        "timings": timings,
    }


def dumps(document: Mapping[str, Any]) -> str:
    """The document as the file holds it: sorted keys, 1-space indent, a final newline."""
    return json.dumps(document, indent=1, sort_keys=True, default=str) + "\n"


def write(document: Mapping[str, Any], path: str | Path | None = None) -> Path:
    """Write ``document`` to ``path`` (default: :data:`RECORDED_RUN`; directories made as
    needed); returns the path."""
    target = Path(str(RECORDED_RUN if path is None else path))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(dumps(document))
    except OSError as error:
        raise RecordError(f"cannot write the recording to {target}: {error.strerror}; "
                          "choose another path with --output") from error
    return target


def load(path: str | Path | None = None) -> dict[str, Any]:
    """Read a recording back (default: the packaged one, :data:`RECORDED_RUN`)."""
    target = RECORDED_RUN if path is None else Path(path)
    try:
        value: dict[str, Any] = json.loads(target.read_text(encoding="utf-8"))
    except OSError as error:
        raise RecordError(f"cannot read the recording {target}: {error.strerror}; make one "
                          "with `meshlab live record` (as root)") from error
    except json.JSONDecodeError as error:
        raise RecordError(f"{target} line {error.lineno} column {error.colno}: not JSON "
                          f"({error.msg}); record it again with `meshlab live record`") from error
    return value


def missing_keys(document: Mapping[str, Any]) -> list[str]:
    """Each path of :data:`NOTEBOOK_KEYS` the document lacks, e.g. ``loop.kernel.runs[0].hops``."""
    missing: list[str] = []
    for path, keys in NOTEBOOK_KEYS.items():
        for where, value in _resolve(document, path):
            if value is None:
                missing.append(where)
                continue
            missing += [f"{where}.{k}" if where else k for k in keys
                        if not isinstance(value, Mapping) or k not in value]
    return missing


def _resolve(document: Any, path: str) -> list[tuple[str, Any]]:
    """The values at ``path`` (``a.b[].c``), with their concrete names; None where absent."""
    found: list[tuple[str, Any]] = [("", document)]
    for part in path.split("."):
        each = part.endswith("[]")
        name = part.removesuffix("[]")
        step: list[tuple[str, Any]] = []
        for where, value in found:
            here = f"{where}.{name}" if where else name
            inner = value.get(name) if isinstance(value, Mapping) else None
            if not each:
                step.append((here, inner))
            elif isinstance(inner, list):
                step += [(f"{here}[{i}]", item) for i, item in enumerate(inner)]
            else:
                step.append((f"{here}[]", None))
        found = step
    return found


def describe(document: Mapping[str, Any]) -> str:
    """A few lines: what was recorded where, and how much agreed."""
    summary = document.get("summary", {}).get("agreed", {})
    lines = [f"recorded {document.get('recorded')} on Linux {document.get('kernel')} with "
             f"{document.get('iptables')}: {'all agree' if document.get('agree') else 'DISAGREE'}"]
    words = {"scenarios": "catalog scenarios", "default_rules_connections":
             "connections through the default rules",
             "random_connections": "random connections", "loop_runs": "loop runs"}
    for key, (agreed, total) in summary.items():
        lines.append(f"  {agreed}/{total} {words.get(key, key)} agree")
    seeds = document.get("summary", {}).get("seeds")
    if seeds:
        lines.append(f"  seeds {', '.join(map(str, seeds))} (replay: meshlab live random --seed N)")
    total = document.get("timings", {}).get("total")
    if total is not None:
        lines.append(f"  took {total:.1f} s")
    return "\n".join(lines)
