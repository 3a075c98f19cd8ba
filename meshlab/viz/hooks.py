"""The netfilter hooks of one pod, with a walk's path drawn on them.

Read the picture as a **U**:

* the top row is what *arrives*: from ``eth0`` (or back in from ``lo``) through PREROUTING
  (tables raw -> mangle -> nat), the routing decision, and INPUT (mangle -> filter -> nat), up
  to a socket in the pod;
* the right column holds the sockets: the app, Envoy's two virtual listeners (15006 inbound,
  15001 outbound), Envoy's other ports and pilot-agent;
* the bottom row is what a process *sends*, right to left: the routing decision, OUTPUT
  (raw -> mangle -> nat -> filter) and POSTROUTING (mangle -> nat), then out by ``eth0`` or,
  for a local destination, round through ``lo`` and in again at the top;
* in the middle hang the Istio chains that nat PREROUTING and nat OUTPUT jump to.

A walk is drawn as a line through the places it passes, one line style and marker per
connection (the app's connection, then each connection Envoy opens). Circled numbers are the
article's steps (1-15). With ``step=n`` the picture stops at step ``n``: that place is
hatched and outlined, the road ahead is faded, and the step is written under the picture.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Polygon
from matplotlib.path import Path

from meshlab.viz import style
from meshlab.viz.path import Stop, stops, subject_pod
from meshlab.viz.steps import StepInfo, step_infos
from meshlab.walk import Walk

WIDTH, HEIGHT = 9.0, 6.5
"""Figure size in inches (fixed, so the PNG is always the same size): narrow enough that
its smallest text (``style.MIN_FONT_PT``) stays readable in a narrow notebook."""


@dataclass(frozen=True, slots=True)
class Place:
    """A box on the picture: centre (x, y), size (w, h) in axis units, and its label."""

    x: float
    y: float
    w: float
    h: float
    label: str
    kind: str  # "table" | "chain" | "route" | "socket" | "wire" | "peer"


def _tables(hook: str, names: tuple[str, ...], left: float, right_to_left: bool,
            y: float) -> dict[str, Place]:
    width, gap = 7.2, 1.0
    order = list(reversed(names)) if right_to_left else list(names)
    found = {}
    for i, name in enumerate(order):
        x = left + 1.5 + width / 2 + i * (width + gap)
        found[f"{hook}/{name}"] = Place(x, y, width, 5.0, name, "table")
    return found


TOP, BOTTOM = 50.0, 11.0
ROUTE_OUT_X = 82.0
IN_LANE_X = 78.8
"""Vertical lanes beside the sockets: arrivals go up/down at IN_LANE_X, departures at
ROUTE_OUT_X, so no line crosses a socket box."""
HOOKS: Mapping[str, tuple[float, float, float, tuple[str, ...]]] = {
    # hook: (left, right, y, tables in the order a packet meets them)
    "PREROUTING": (13.0, 40.0, TOP, ("raw", "mangle", "nat")),
    "INPUT": (50.0, 77.0, TOP, ("mangle", "filter", "nat")),
    "OUTPUT": (41.0, 77.0 - 0.2, BOTTOM, ("raw", "mangle", "nat", "filter")),
    "POSTROUTING": (13.0, 32.0, BOTTOM, ("mangle", "nat")),
}
"""Each hook's frame on the picture; the bottom row runs right to left."""


def _places() -> dict[str, Place]:
    places: dict[str, Place] = {}
    for hook, (left, _right, y, names) in HOOKS.items():
        places.update(_tables(hook, names, left, y == BOTTOM, y))
    places.update({
        "ISTIO_INBOUND": Place(35.9, 37.5, 15.0, 4.2, "ISTIO_INBOUND", "chain"),
        "ISTIO_IN_REDIRECT": Place(47.5, 30.5, 17.0, 4.2, "ISTIO_IN_REDIRECT\nREDIRECT :15006",
                                   "chain"),
        "ISTIO_OUTPUT": Place(55.0, 22.0, 14.0, 4.2, "ISTIO_OUTPUT", "chain"),
        "ISTIO_REDIRECT": Place(71.0, 26.5, 15.5, 4.2, "ISTIO_REDIRECT\nREDIRECT :15001",
                                "chain"),
        "route_in": Place(45.0, TOP, 5.0, 6.0, "routing", "route"),
        "route_out": Place(ROUTE_OUT_X, BOTTOM, 5.0, 6.0, "routing", "route"),
        "app": Place(92.3, 50.0, 13.4, 5.0, "app\n:9080, :8081", "socket"),
        "envoy15006": Place(92.3, 41.0, 13.4, 5.0, "Envoy :15006\nvirtualInbound", "socket"),
        "envoy15001": Place(92.3, 32.0, 13.4, 5.0, "Envoy :15001\nvirtualOutbound", "socket"),
        "envoy_other": Place(92.3, 23.0, 13.4, 5.0, "Envoy :15021,\n:15090, :15000", "socket"),
        "agent": Place(92.3, 14.0, 13.4, 5.0, "pilot-agent\n:15020, :15053", "socket"),
        "lo": Place(5.5, 30.5, 7.0, 5.0, "lo\n(local dst)", "wire"),
        "eth0_in": Place(5.5, TOP, 7.0, 5.0, "eth0\nin", "wire"),
        "eth0_out": Place(5.5, BOTTOM, 7.0, 5.0, "eth0\nout", "wire"),
        "peer_in": Place(5.5, 59.0, 9.6, 3.4, "from peer", "peer"),
        "peer_out": Place(5.5, 2.3, 9.6, 3.4, "to peer", "peer"),
    })
    for hook, (left, right, y, _names) in HOOKS.items():
        # A hook passed without any rule for this packet: the line crosses its frame low down.
        edge_y = y - 3.7 if y == TOP else y + 3.7
        places[f"{hook}/-"] = Place((left + right) / 2, edge_y, right - left - 1.0, 0.6, "",
                                    "pass")
    return places


PLACES: Mapping[str, Place] = _places()
"""Every box of the picture by key (``"OUTPUT/nat"``, ``"ISTIO_OUTPUT"``, ``"lo"``...)."""

AMBIENT_LABELS: Mapping[str, str] = {
    "ISTIO_INBOUND": "ISTIO_PRERT\nREDIRECT :15006",
    "ISTIO_OUTPUT": "ISTIO_OUTPUT\nREDIRECT :15001",
    "app": "app\n:9080",
    "envoy15006": "ztunnel :15006\ninbound plaintext",
    "envoy15001": "ztunnel :15001\noutbound",
    "envoy_other": "ztunnel :15008\nHBONE, :15053 DNS",
    "agent": "no sidecar:\nno Envoy, no agent",
}
"""An ambient pod on the same map: istio-cni's two chains, ztunnel's sockets (marked 0x539);
the sidecar's ISTIO_IN_REDIRECT and ISTIO_REDIRECT are not there (:data:`AMBIENT_ABSENT`)."""
AMBIENT_ABSENT = frozenset({"ISTIO_IN_REDIRECT", "ISTIO_REDIRECT"})

_STATIC_EDGES = (
    ("peer_in", "eth0_in"), ("eth0_in", "PREROUTING/raw"), ("PREROUTING/raw", "PREROUTING/mangle"),
    ("PREROUTING/mangle", "PREROUTING/nat"), ("PREROUTING/nat", "route_in"),
    ("route_in", "INPUT/mangle"), ("INPUT/mangle", "INPUT/filter"), ("INPUT/filter", "INPUT/nat"),
    ("route_out", "OUTPUT/raw"), ("OUTPUT/raw", "OUTPUT/mangle"), ("OUTPUT/mangle", "OUTPUT/nat"),
    ("OUTPUT/nat", "OUTPUT/filter"), ("OUTPUT/filter", "POSTROUTING/mangle"),
    ("POSTROUTING/mangle", "POSTROUTING/nat"), ("POSTROUTING/nat", "eth0_out"),
    ("eth0_out", "peer_out"), ("POSTROUTING/nat", "lo"), ("lo", "PREROUTING/raw"),
)
_JUMPS = (
    ("PREROUTING/nat", "ISTIO_INBOUND"), ("ISTIO_INBOUND", "ISTIO_IN_REDIRECT"),
    ("OUTPUT/nat", "ISTIO_OUTPUT"), ("ISTIO_OUTPUT", "ISTIO_REDIRECT"),
    ("ISTIO_OUTPUT", "ISTIO_IN_REDIRECT"),
)


def hooks_figure(walk: Walk | None = None, *, step: int | str | None = None) -> Figure:
    """The netfilter hooks and tables of a sidecar pod, with ``walk``'s path drawn on them.

    Without a walk you get the empty map: the hooks, their tables in the order the kernel
    consults them, the routing decisions, the ``lo`` re-entry, the sockets in the pod and the
    Istio chains. With a walk, every place it passes is outlined and joined by a line (one
    style per connection), and the article's step numbers are written in circles. ``step``
    (1-15) shows the walk *up to* that step and highlights it (hatched, with a caption).
    A step the walk does not have (skipped by the configuration) is named in the caption.
    An ambient walk (steps ``"A1"``...) is drawn on the same map with istio-cni's chains and
    ztunnel's sockets in place of the sidecar's.
    """
    with style.styled():
        fig = style.new_figure(WIDTH, HEIGHT)
        ax = fig.add_axes((0.0, 0.09, 1.0, 0.84))
        # Fixed limits: shapes are added with add_artist, not add_patch, which would work out
        # how far each one widens the data limits (a sixth of the time of a step's frame)
        ax.set_xlim(0, 100)
        ax.set_ylim(-1, 63)
        ax.set_axis_off()
        _draw_frames(ax)
        infos = step_infos(walk) if walk is not None else []
        path = stops(walk) if walk is not None else []
        cut = _cut(path, infos, step)
        _draw_static(ax, used={s.place for s in path[:cut]},
                     ambient=walk is not None and walk.mode == "ambient")
        if walk is not None:
            _draw_path(ax, path, cut)
            _draw_badges(ax, path, infos, step, cut, ambient=walk.mode == "ambient")
        fig.suptitle(_title(walk), x=0.01, ha="left", fontsize=12, fontweight="bold")
        fig.text(0.01, 0.008, _caption(walk, infos, step), ha="left", va="bottom", fontsize=10.5)
        if walk is not None:
            _legend(fig, path)
    return fig


# ----------------------------------------------------------------------------- the map


def _box(ax: Axes, p: Place, *, used: bool, current: bool = False) -> None:
    edge = style.INK if used else style.GREY
    lw = 2.6 if current else (1.4 if used else 0.7)
    hatch = "////" if current else None
    if p.kind == "route":
        dx, dy = p.w / 2, p.h / 2
        shape = Polygon([(p.x - dx, p.y), (p.x, p.y + dy), (p.x + dx, p.y), (p.x, p.y - dy)],
                        closed=True, facecolor=style.LIGHT if used else style.PAPER,
                        edgecolor=style.ACCENT if current else edge, lw=lw, hatch=hatch,
                        zorder=2)
        ax.add_artist(shape)
    else:
        rounding = 1.2 if p.kind in ("socket", "peer", "wire") else 0.4
        ax.add_artist(FancyBboxPatch(
            (p.x - p.w / 2, p.y - p.h / 2), p.w, p.h, boxstyle=f"round,pad=0,rounding_size="
            f"{rounding}", facecolor=style.LIGHT if used else style.PAPER,
            edgecolor=style.ACCENT if current else edge, lw=lw, hatch=hatch, zorder=2,
            linestyle="-" if p.kind != "wire" else (0, (3, 2))))
    size = style.MIN_FONT_PT
    weight = "bold" if used and p.kind in ("table", "chain") else "normal"
    text = p.label if p.kind != "route" else "route"
    y, va = (p.y + p.h / 2 - 0.35, "top") if p.kind == "table" else (p.y, "center")
    ax.text(p.x, y, text, ha="center", va=va, fontsize=size, zorder=6,
            color=style.INK if used or p.kind != "table" else "#555555", fontweight=weight,
            bbox={"boxstyle": "round,pad=0.1", "fc": style.PAPER, "ec": "none", "alpha": 0.85}
            if current else None)


def _draw_frames(ax: Axes) -> None:
    for hook, (left, right, y, _names) in HOOKS.items():
        ax.add_artist(FancyBboxPatch((left, y - 4.6), right - left, 9.6,
                                    boxstyle="round,pad=0,rounding_size=0.8",
                                    facecolor=style.PAPER, edgecolor=style.INK, lw=1.0, zorder=1))
        label_y = y + 5.9 if y == TOP else y - 5.9
        ax.text(left + 0.6, label_y, hook, ha="left", va="center", fontsize=10.5,
                fontweight="bold")
    ax.add_artist(FancyBboxPatch((85.0, 9.5), 14.6, 45.0, boxstyle="round,pad=0,rounding_size=1",
                                facecolor=style.PAPER, edgecolor=style.INK, lw=1.0, zorder=1))
    ax.text(99.6, 56.3, "sockets in the pod", ha="right", va="center", fontsize=10.5,
            fontweight="bold")
    ax.text(45.0, TOP - 5.2, "routing\ndecision", ha="center", va="top",
            fontsize=style.MIN_FONT_PT)
    ax.text(ROUTE_OUT_X, BOTTOM - 5.2, "routing\ndecision", ha="center", va="top",
            fontsize=style.MIN_FONT_PT)
    ax.text(12.0, 25.5, "nat jumps to the Istio chains\n(dotted arrows)", ha="left",
            va="center", fontsize=style.MIN_FONT_PT, style="italic", color="#444444")


def _draw_static(ax: Axes, used: set[str], *, ambient: bool = False) -> None:
    for key, place in PLACES.items():
        if ambient and key in AMBIENT_ABSENT:
            continue
        if ambient and key in AMBIENT_LABELS:
            place = replace(place, label=AMBIENT_LABELS[key])
        if place.kind != "pass":
            _box(ax, place, used=key in used)
    if "PREROUTING/-" in used and "lo" in used:
        p = PLACES["PREROUTING/-"]
        ax.text(p.x, 44.4, "nat not consulted again (conntrack)", ha="center", va="top",
                fontsize=style.MIN_FONT_PT, style="italic", zorder=7,
                bbox={"boxstyle": "round,pad=0.1", "fc": style.PAPER, "ec": "none"})
    for a, b in _STATIC_EDGES:
        _arrow(ax, PLACES[a], PLACES[b], color=style.GREY, lw=0.8, ls="-", z=1.5)
    for a, b in _JUMPS:
        if ambient and b in AMBIENT_ABSENT:
            continue
        _arrow(ax, PLACES[a], PLACES[b], color="#666666", lw=0.9, ls=":", z=1.5)
    _arrow(ax, PLACES["INPUT/nat"], PLACES["app"], color=style.GREY, lw=0.8, ls="-", z=1.5)
    _arrow(ax, PLACES["agent"], PLACES["route_out"], color=style.GREY, lw=0.8, ls="-", z=1.5)


def _anchor(p: Place, toward: Place) -> tuple[float, float]:
    """The point on ``p``'s border facing ``toward`` (so arrows start and end at edges)."""
    dx, dy = toward.x - p.x, toward.y - p.y
    if dx == 0 and dy == 0:
        return p.x, p.y
    sx = (p.w / 2) / abs(dx) if dx else float("inf")
    sy = (p.h / 2) / abs(dy) if dy else float("inf")
    s = min(sx, sy)
    return p.x + dx * s, p.y + dy * s


def _arrow(ax: Axes, a: Place, b: Place, *, color: str, lw: float, ls: object, z: float,
           shift: float = 0.0, alpha: float = 1.0, rad: float = 0.0) -> None:
    start = _anchor(a, b)
    end = _anchor(b, a)
    start = (start[0], start[1] + shift)
    end = (end[0], end[1] + shift)
    ax.add_artist(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=9, color=color,
                                 lw=lw, linestyle=ls, zorder=z, alpha=alpha, shrinkA=0,
                                 shrinkB=0, connectionstyle=f"arc3,rad={rad}"))


# ----------------------------------------------------------------------------- the walk


def _cut(path: list[Stop], infos: list[StepInfo], step: int | None) -> int:
    """How many stops to draw in full: all of them, or up to the stop of ``step``."""
    if step is None:
        return len(path)
    info = next((i for i in infos if i.n == step), None)
    if info is None or info.event is None:
        return 0
    for k, s in enumerate(path):
        if s.event is not None and s.event >= info.event:
            return k + 1
    return len(path)


def _ends(p: Place) -> tuple[tuple[float, float], tuple[float, float]]:
    """Where a line enters and leaves a hook it passes without a rule (``"HOOK/-"``)."""
    left, right = p.x - p.w / 2, p.x + p.w / 2
    return ((left, p.y), (right, p.y)) if p.y > 30 else ((right, p.y), (left, p.y))


def _route(a_key: str, b_key: str, off: float) -> list[tuple[float, float]]:
    """The points of the line from place ``a_key`` to ``b_key`` (``off``: this connection's
    offset, so two connections on the same road run side by side)."""
    a, b = PLACES[a_key], PLACES[b_key]
    if b.kind == "socket" and a.kind != "socket":
        start = _ends(a)[1] if a.kind == "pass" else (a.x + a.w / 2, a.y + off)
        lane = IN_LANE_X + off
        end_x = b.x - b.w / 2
        return [(start[0], start[1] + (off if a.kind == "pass" else 0)), (lane, start[1]),
                (lane, b.y + off), (end_x, b.y + off)]
    if a.kind == "socket" and b_key == "route_out":
        lane = ROUTE_OUT_X + off
        return [(a.x - a.w / 2, a.y + off), (lane, a.y + off), (lane, b.y + b.h / 2)]
    start = _ends(a)[1] if a.kind == "pass" else _anchor(a, b)
    end = _ends(b)[0] if b.kind == "pass" else _anchor(b, a)
    if abs(end[0] - start[0]) >= abs(end[1] - start[1]):  # mostly across: shift up/down
        return [(start[0], start[1] + off), (end[0], end[1] + off)]
    return [(start[0] + off, start[1]), (end[0] + off, end[1])]


def _line(ax: Axes, points: list[tuple[float, float]], *, color: str, lw: float, ls: object,
          alpha: float, arrow: bool = True) -> None:
    codes = [Path.MOVETO] + [Path.LINETO] * (len(points) - 1)
    ax.add_artist(FancyArrowPatch(path=Path(points, codes), arrowstyle="-|>" if arrow else "-",
                                 mutation_scale=10, color=color, lw=lw, linestyle=ls, zorder=4,
                                 alpha=alpha, shrinkA=0, shrinkB=0, joinstyle="miter"))


def _draw_path(ax: Axes, path: list[Stop], cut: int) -> None:
    for k in range(len(path)):
        b = path[k]
        conn = b.connection
        st = style.connection_style(conn)
        ahead = k >= cut
        look = {"color": style.GREY if ahead else st["color"], "lw": 1.0 if ahead else 2.2,
                "ls": st["linestyle"], "alpha": 0.5 if ahead else 1.0}
        off = -1.6 + 0.8 * (conn % 3)
        if PLACES[b.place].kind == "pass":  # the line across a hook with no rule for it
            (x0, y0), (x1, y1) = _ends(PLACES[b.place])
            _line(ax, [(x0, y0 + off), (x1, y1 + off)], arrow=False, **look)
        if k == 0 or path[k - 1].place == b.place:
            continue
        _line(ax, _route(path[k - 1].place, b.place, off), **look)


def _draw_badges(ax: Axes, path: list[Stop], infos: list[StepInfo], step: int | str | None,
                 cut: int, *, ambient: bool = False) -> None:
    """Circled step numbers beside the places where the article's steps happen."""
    where = {s.event: s for s in path if s.event is not None}
    per_place: dict[str, int] = {}
    visible_events = {s.event for s in path[:cut]}
    current_place = None
    for info in infos:
        if info.event is None:
            continue
        stop = where.get(info.event) or _nearest(path, info.event)
        if stop is None:
            continue
        place = PLACES[stop.place]
        k = per_place.get(stop.place, 0)
        per_place[stop.place] = k + 1
        x = place.x - place.w / 2 + 1.3 + k * 2.6
        if stop.place == "ISTIO_IN_REDIRECT":  # its top-left corner is where lines arrive
            x = place.x + place.w / 2 - 1.3 - k * 2.6
        y = place.y + place.h / 2 + 1.4
        if place.kind == "socket":
            x, y = place.x - place.w / 2 - 1.6 - k * 2.6, place.y + place.h / 2 - 0.6
        is_current = step is not None and info.n == step
        faded = step is not None and info.event not in visible_events and not is_current
        ax.text(x, y, str(info.n), ha="center", va="center", fontsize=style.MIN_FONT_PT, zorder=8,
                fontweight="bold", color=style.PAPER if is_current else style.INK,
                alpha=0.35 if faded else 1.0,
                bbox={"boxstyle": "circle,pad=0.2", "fc": style.ACCENT if is_current
                      else style.PAPER, "ec": style.INK, "lw": 1.4 if is_current else 0.8})
        if is_current:
            current_place = stop.place
    if current_place is not None:
        place = PLACES[current_place]
        if ambient and current_place in AMBIENT_LABELS:
            place = replace(place, label=AMBIENT_LABELS[current_place])
        _box(ax, place, used=True, current=True)


def _nearest(path: list[Stop], event: int) -> Stop | None:
    """The last stop at or before ``event`` (a step on an event without a box of its own)."""
    found = None
    for s in path:
        if s.event is not None and s.event <= event:
            found = s
    return found


def _title(walk: Walk | None) -> str:
    if walk is None:
        return "netfilter hooks and tables in a sidecar pod"
    pod = subject_pod(walk) or "the pod"
    mode = " (ambient: no sidecar)" if walk.mode == "ambient" else ""
    return f"walk {walk.scenario!r} in pod {pod}{mode}: {walk.outcome}"


def _caption(walk: Walk | None, infos: list[StepInfo], step: int | None) -> str:
    if walk is None:
        return ("Arriving packets: PREROUTING -> routing -> INPUT -> socket.  Sent packets: "
                "routing -> OUTPUT -> POSTROUTING -> eth0, or lo and back in.")
    if step is None:
        return f"Outcome: {walk.outcome}" + (f" ({walk.reason})" if walk.reason else "")
    info = next((i for i in infos if i.n == step), None)
    if info is None:
        return f"Step {step}: not part of this walk."
    status = "" if info.status == "ok" else f" [{info.status}]"
    return f"Step {info.n}{status}: {info.title}"


def _legend(fig: Figure, path: list[Stop]) -> None:
    connections = sorted({s.connection for s in path})
    handles = []
    for conn in connections:
        st = style.connection_style(conn)
        who = "first connection" if conn == 0 else f"connection {conn} (the proxy's)"
        handles.append(Line2D([], [], color=st["color"], linestyle=st["linestyle"], lw=2.2,
                              label=who))
    handles.append(Line2D([], [], color=style.GREY, lw=1.0, alpha=0.6, label="not reached yet"))
    fig.legend(handles=handles, loc="lower right", ncol=len(handles), fontsize=style.MIN_FONT_PT,
               frameon=False, bbox_to_anchor=(0.995, 0.035), handlelength=2.4,
               columnspacing=1.0)
