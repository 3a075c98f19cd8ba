"""The chains of a ruleset as a graph: who jumps where, and which rule does it.

Each chain is a box that lists its rules, numbered as ``iptables -L --line-numbers`` numbers
them. A built-in chain is where a netfilter *hook* enters the table (PREROUTING, OUTPUT, ...),
so those boxes sit in the left column and say "hook" and their policy; the user chains
(Istio's ``ISTIO_*``) sit in the right column, in the order the table lists them, and a rule
too long for the column is wrapped onto a second line (indented). An
arrow leaves from the very rule that jumps (``-j ISTIO_OUTPUT``) and ends at the chain it
enters; the arrow's line style says how: a solid line is a jump, a dashed line a ``-g`` goto.
Rules that end the walk through the table (RETURN, REDIRECT, ACCEPT...) have no arrow: their
target is written at the end of their line.

The picture is drawn from a :class:`~meshlab.netfilter.ruleset.Ruleset`; nothing is decided
here. Boxes are sized from the text; the figure is never wider than ``style.MAX_WIDTH_IN``, so
its text (9.5 pt) stays readable in a narrow notebook, and only its height depends on the rules.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from meshlab.netfilter.ruleset import TABLE_ORDER, Chain, Ruleset
from meshlab.viz import style

FONT = style.MIN_FONT_PT
CHAR_W = 0.61 * FONT / 72  # inches per character of DejaVu Sans Mono
LINE_H = 0.2
PAD = 0.08
COL_GAP = 0.6
ARC_ROOM = 0.45  # right of the user chains, where the jumps between them curve
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
    rule_lines: tuple[int, ...]  # the line each rule starts on (rule 1 -> rule_lines[0])

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


def _lines(chain: Chain, width: int | None = None) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """A chain's box text (header, then its numbered rules, each wrapped to ``width``
    characters) and the line each rule starts on."""
    head = (f"{chain.name}   (hook; policy {chain.policy})" if chain.builtin
            else f"{chain.name}   (user chain)")
    lines, starts = [head], []
    for i, rule in enumerate(chain.rules, 1):
        starts.append(len(lines))
        text = f"{i:>2}  {rule.text}"
        lines += (textwrap.wrap(text, width, subsequent_indent="        ",
                                break_on_hyphens=False) if width else [text])
    if not chain.rules:
        lines.append("    (no rules: the policy applies)" if chain.builtin
                     else "    (no rules: RETURN to the caller)")
    return tuple(lines), tuple(starts)


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
        chains = table.ordered_chains()
        columns = ([c for c in chains if c.builtin], [c for c in chains if not c.builtin])
        headers.append((tname, y))
        y += 0.3
        x = MARGIN
        bottom = y
        left_w = 0.0
        for col, members in enumerate(columns):
            if not members:
                continue
            room = style.MAX_WIDTH_IN - MARGIN - ARC_ROOM - x - 2 * PAD
            texts = [_lines(c, int(room / CHAR_W) if col else None) for c in members]
            col_w = max(len(line) for lines, _ in texts for line in lines) * CHAR_W + 2 * PAD
            cy = y
            for chain, (lines, starts) in zip(members, texts, strict=True):
                box = _Box(tname, chain, x, cy, col_w, lines, starts)
                boxes.append(box)
                cy += box.h + ROW_GAP
            bottom = max(bottom, cy)
            left_w = col_w if col == 0 else left_w
            x += col_w + COL_GAP
        width = max(width, x - COL_GAP + ARC_ROOM + MARGIN)
        y = bottom + TABLE_GAP
    return boxes, headers, min(max(width, 6.0), style.MAX_WIDTH_IN), y + MARGIN


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
    start = (src.x + src.w, src.line_y(src.rule_lines[rule - 1]))
    end = (dest.x, dest.line_y(0))
    if dest.x <= src.x:  # a jump within the column: leave from the right, enter from the right
        end = (dest.x + dest.w, dest.line_y(0))
        rad = -0.5 if end[1] > start[1] else 0.5  # bulge to the right, outside the boxes
    else:
        rad = 0.0
    ax.add_patch(FancyArrowPatch(  # type: ignore[attr-defined]
        start, end, arrowstyle="-|>", mutation_scale=10, color=style.INK, lw=1.1,
        linestyle="--" if goto else "-", zorder=4, shrinkA=1, shrinkB=1,
        connectionstyle=f"arc3,rad={rad}"))
    ax.plot([start[0]], [start[1]], marker="o", ms=3.5, color=style.INK,  # type: ignore[attr-defined]
            zorder=5)
