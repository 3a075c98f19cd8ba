"""A walk as a sequence diagram: who does what, in order, one lane per actor.

Lanes, left to right: the **app** (the process that starts it), the pod's **kernel**
(netfilter and routing), the **proxy** (Envoy, and pilot-agent when it appears) and the
**peer** (another pod, a host, the node's kube-proxy). Time runs downwards, one row per event
that did something (rules that did not match are left out; the hooks picture and the step
player show them). An arrow is a hand-over between actors (``connect()``, a socket accepting,
bytes delivered); a marker on a lane is something that actor decided there:

* ``o`` a rule that matched, ``s`` a chain's policy, ``D`` a NAT binding, ``^`` routing,
* ``P`` the proxy's choice of listener and cluster, ``X`` the end (refused, dropped, loop).

Each connection of the walk has its own line style (the app's first connection solid, the
proxy's upstream dashed, ...). Circled numbers in the margin are the article's steps; a
number in a dashed square with a ``!`` is a step that did *not* happen as the article tells
(the walk was changed, e.g. a rule removed): it marks what happened in its place.
"""

from __future__ import annotations

import textwrap

from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch

from meshlab.viz import style
from meshlab.viz.path import subject_pod
from meshlab.walk import Event, Walk

LANES = ("app", "kernel", "proxy", "peer")
LANE_X = {"app": 0.95, "kernel": 1.95, "proxy": 2.95, "peer": 3.95}
TEXT_X = 4.35
WIDTH = style.MAX_WIDTH_IN
"""9 in: shown in a narrow notebook, its smallest text stays 12 px or more."""
LINE_H = 0.175
"""The height of one line of an event's text (inches); a row is one to three lines."""
WRAP = 62
"""Characters per line of an event's text (about 4.6 in at 9.5 pt)."""
_MARKERS = {"rule": "o", "policy": "s", "nat": "D", "tproxy": "d", "route": "^", "proxy": "P",
            "dnat": "D", "refused": "X", "drop": "X", "timeout": "X", "loop": "X", "close": "X"}


def _lane(event: Event, subject: str) -> str:
    if event.actor in ("proxy", "agent"):
        return "proxy"
    if event.actor in ("peer", "node") or (event.pod and subject and event.pod != subject):
        return "peer"
    if event.actor == "kernel":
        return "kernel"
    return "app"


def _words(event: Event) -> str:
    if event.kind in ("rule", "policy") and event.chain:
        where = f"{event.table} {event.chain}" + (f" #{event.rule}" if event.rule else "")
        what = event.text or "policy"
        return f"{where}: {what}  ->  {event.decision}"
    return event.decision


def sequence_figure(walk: Walk) -> Figure:
    """The events of ``walk`` that did something, as a sequence diagram with four lanes."""
    from meshlab.viz.steps import step_infos

    subject = subject_pod(walk)
    events = [e for e in walk.events if e.is_hit]
    numbers = {info.event: info for info in step_infos(walk) if info.event is not None}
    texts = [_wrapped(f"c{e.connection}  {_words(e)}") for e in events]
    heights = [0.14 + LINE_H * t.count("\n") + LINE_H for t in texts] or [LINE_H]
    top = 1.05
    height = top + sum(heights) + 0.35
    width = WIDTH
    with style.styled():
        fig, ax = style.inch_canvas(width, height)
        ax.text(0.2, 0.3, f"walk {walk.scenario!r}: {walk.outcome} (sequence of events)",
                fontsize=11, fontweight="bold", va="center")
        for name in LANES:
            x = LANE_X[name]
            label = {"proxy": "proxy\n(Envoy)", "peer": "peer /\nnode"}.get(name, name)
            ax.text(x, top - 0.12, label, ha="center", va="bottom", fontsize=10,
                    fontweight="bold", bbox={"boxstyle": "round,pad=0.25", "fc": style.LIGHT,
                                             "ec": style.INK, "lw": 0.8})
            ax.plot([x, x], [top, height - 0.15], color=style.GREY, lw=0.8, zorder=1)
        subject_note = f"kernel of pod {subject}" if subject else "kernel"
        ax.text(LANE_X["kernel"], height - 0.08, subject_note, ha="center", va="bottom",
                fontsize=style.MIN_FONT_PT, style="italic")
        y_top = top
        for event, text, row_h in zip(events, texts, heights, strict=True):
            y = y_top + row_h / 2
            y_top += row_h
            st = style.connection_style(event.connection)
            lane = _lane(event, subject)
            if event.kind in ("connect", "accept", "deliver"):
                src = lane if event.kind == "connect" else "kernel"
                dst = "kernel" if event.kind == "connect" else lane
                if event.kind == "connect" and lane == "peer":
                    src, dst = "peer", "kernel"
                if src == dst:
                    dst = "kernel" if src != "kernel" else "app"
                ax.add_patch(FancyArrowPatch(
                    (LANE_X[src], y), (LANE_X[dst], y), arrowstyle="-|>", mutation_scale=11,
                    color=st["color"], lw=1.6, linestyle=st["linestyle"], zorder=3,
                    shrinkA=0, shrinkB=0))
            else:
                ax.plot([LANE_X[lane]], [y], marker=_MARKERS.get(event.kind, "o"), ms=7,
                        color=st["color"], mfc=style.PAPER if event.kind == "policy"
                        else st["color"], zorder=4, linestyle="none")
            info = numbers.get(event.index)
            if info is not None:
                _step_badge(ax, 0.3, y, info.n, changed=info.status == "changed")
            ax.text(TEXT_X, y, text, ha="left", va="center", fontsize=style.MIN_FONT_PT,
                    linespacing=1.25)
    return fig


def _step_badge(ax, x: float, y: float, n: int | str, *, changed: bool) -> None:
    """The article's step number: in a circle when the step happened as told, in a dashed
    square with ``!`` when something else happened in its place (shape, not colour, says it)."""
    if changed:
        box = {"boxstyle": "square,pad=0.2", "fc": style.PAPER, "ec": style.INK,
               "linestyle": "--"}
        label = f"{n}!"
    else:
        box = {"boxstyle": "circle,pad=0.2", "fc": style.PAPER, "ec": style.INK}
        label = str(n)
    ax.text(x, y, label, ha="center", va="center", fontsize=style.MIN_FONT_PT,
            fontweight="bold", bbox=box)


def _wrapped(text: str) -> str:
    """An event's text in lines of at most :data:`WRAP` characters, three lines at most."""
    lines = textwrap.wrap(text, WRAP, subsequent_indent="    ", break_on_hyphens=False)
    if len(lines) > 3:
        lines = [*lines[:2], lines[2][: WRAP - 3] + "..."]
    return "\n".join(lines)
