"""The chains of a ruleset as a graph: who jumps where, and which rule does it.

Each chain is a box that lists its rules, numbered as ``iptables -L --line-numbers`` numbers
them. A built-in chain is where a netfilter *hook* enters the table (PREROUTING, OUTPUT, ...),
so those boxes sit in the first column and say "hook" and their policy; every user chain
(Istio's ``ISTIO_*``) sits one column to the right of the chain that first jumps to it. An
arrow leaves from the very rule that jumps (``-j ISTIO_OUTPUT``) and ends at the chain it
enters; the arrow's line style says how: a solid line is a jump, a dashed line a ``-g`` goto.
Rules that end the walk through the table (RETURN, REDIRECT, ACCEPT...) have no arrow: their
target is written at the end of their line.

The picture is drawn from a :class:`~meshlab.netfilter.ruleset.Ruleset`; nothing is decided
here. Boxes are sized from the text, so the figure's size depends only on the rules.
"""

from __future__ import annotations

from dataclasses import dataclass

from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from meshlab.netfilter.ruleset import TABLE_ORDER, Chain, Ruleset
from meshlab.viz import style

FONT = 7.5
CHAR_W = 0.6 * FONT / 72  # inches per character of DejaVu Sans Mono
LINE_H = 0.175
PAD = 0.08
COL_GAP = 0.7
ROW_GAP = 0.3
TABLE_GAP = 0.45
MARGIN = 0.3
_DRAW_ORDER = ("raw", "mangle", "nat", "filter")


@dataclass(frozen=True, slots=True)
class _Box:
    table: str
    chain: Chain
    x: float
    y: float  # top, in inches from the top of the figure
    w: float
    lines: tuple[str, ...]

    @property
    def h(self) -> float:
        return len(self.lines) * LINE_H + 2 * PAD

    def line_y(self, i: int) -> float:
        """The centre of line ``i`` (0 = the header)."""
        return self.y + PAD + (i + 0.5) * LINE_H


def _target(rule: object) -> tuple[str | None, bool]:
    """The chain a rule jumps (or goes) to, and whether it is a goto."""
    target = getattr(rule, "target", None)
    chain = getattr(target, "chain", None)
    if isinstance(chain, str):
        return chain, bool(getattr(target, "goto", False))
    return None, False


def _lines(chain: Chain) -> tuple[str, ...]:
    head = (f"{chain.name}   (hook; policy {chain.policy})" if chain.builtin
            else f"{chain.name}   (user chain)")
    rules = tuple(f"{i:>2}  {rule.text}" for i, rule in enumerate(chain.rules, 1))
    return (head, *(rules or ("    (no rules: the policy applies)" if chain.builtin
                              else "    (no rules: RETURN to the caller)",)))


def _depths(chains: dict[str, Chain]) -> dict[str, int]:
    """Column of each chain: built-ins 0, then one more than the first chain jumping to it."""
    depth = {name: 0 for name, chain in chains.items() if chain.builtin}
    frontier = list(depth)
    while frontier:
        nxt = []
        for name in frontier:
            for rule in chains[name].rules:
                target, _ = _target(rule)
                if target in chains and target not in depth:
                    depth[target] = depth[name] + 1
                    nxt.append(target)
        frontier = nxt
    for name in chains:
        depth.setdefault(name, 1)
    return depth


def _layout(ruleset: Ruleset) -> tuple[list[_Box], list[tuple[str, float]], float, float]:
    boxes: list[_Box] = []
    headers: list[tuple[str, float]] = []
    y = MARGIN + 0.35  # room for the title
    width = 0.0
    for tname in _DRAW_ORDER:
        if tname not in TABLE_ORDER:
            continue
        table = ruleset.tables.get(tname)
        if table is None or table.untouched:
            continue
        chains = {c.name: c for c in table.ordered_chains()}
        depth = _depths(chains)
        columns: dict[int, list[Chain]] = {}
        for chain in chains.values():
            columns.setdefault(depth[chain.name], []).append(chain)
        headers.append((tname, y))
        y += 0.3
        x = MARGIN
        bottom = y
        for col in sorted(columns):
            lines_per = [_lines(c) for c in columns[col]]
            col_w = max(len(line) for lines in lines_per for line in lines) * CHAR_W + 2 * PAD
            cy = y
            for chain, lines in zip(columns[col], lines_per, strict=True):
                box = _Box(tname, chain, x, cy, col_w, lines)
                boxes.append(box)
                cy += box.h + ROW_GAP
            bottom = max(bottom, cy)
            x += col_w + COL_GAP
        width = max(width, x - COL_GAP + MARGIN)
        y = bottom + TABLE_GAP
    return boxes, headers, max(width, 6.0), y + MARGIN


def chains_figure(ruleset: Ruleset | None = None) -> Figure:
    """The chains of ``ruleset`` (default: a default sidecar's rules) as a jump graph.

    Every table that holds rules gets a band; in each band the hooks' built-in chains are on
    the left and the chains they jump to follow to the right. Read a rule's arrow as "a packet
    matching this rule continues in that chain".
    """
    if ruleset is None:
        from meshlab.istio.capture import default_rules

        ruleset = default_rules()
    boxes, headers, width, height = _layout(ruleset)
    with style.styled():
        fig, ax = style.inch_canvas(width, height)
        ax.text(MARGIN, MARGIN, f"{ruleset.family} chains: each arrow is a rule that jumps "
                "(solid: -j, dashed: -g goto)", fontsize=11, fontweight="bold", va="center")
        for tname, y in headers:
            ax.text(MARGIN, y + 0.12, f"table {tname}", fontsize=10, fontweight="bold",
                    va="center", style="italic")
        where = {(b.table, b.chain.name): b for b in boxes}
        for box in boxes:
            _draw_box(ax, box)
        for box in boxes:
            for i, rule in enumerate(box.chain.rules, 1):
                target, goto = _target(rule)
                dest = where.get((box.table, target)) if target else None
                if dest is not None:
                    _edge(ax, box, i, dest, goto)
    return fig


def _draw_box(ax: object, box: _Box) -> None:
    ax.add_patch(FancyBboxPatch(  # type: ignore[attr-defined]
        (box.x, box.y), box.w, box.h, boxstyle="round,pad=0,rounding_size=0.05",
        facecolor=style.LIGHT if box.chain.builtin else style.PAPER, edgecolor=style.INK,
        lw=1.4 if box.chain.builtin else 1.0, zorder=2,
        linestyle="-" if box.chain.builtin or box.chain.rules else "--"))
    for i, line in enumerate(box.lines):
        ax.text(box.x + PAD, box.line_y(i), line, fontsize=FONT,  # type: ignore[attr-defined]
                family="DejaVu Sans Mono", va="center", ha="left", zorder=3,
                fontweight="bold" if i == 0 else "normal")


def _edge(ax: object, src: _Box, rule: int, dest: _Box, goto: bool) -> None:
    start = (src.x + src.w, src.line_y(rule))
    end = (dest.x, dest.line_y(0))
    if dest.x <= src.x:  # a jump back or sideways: leave from the right, enter from the right
        end = (dest.x + dest.w, dest.line_y(0))
        rad = -0.5
    else:
        rad = 0.0
    ax.add_patch(FancyArrowPatch(  # type: ignore[attr-defined]
        start, end, arrowstyle="-|>", mutation_scale=10, color=style.INK, lw=1.1,
        linestyle="--" if goto else "-", zorder=4, shrinkA=1, shrinkB=1,
        connectionstyle=f"arc3,rad={rad}"))
    ax.plot([start[0]], [start[1]], marker="o", ms=3.5, color=style.INK,  # type: ignore[attr-defined]
            zorder=5)
