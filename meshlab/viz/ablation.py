"""The ablation matrix as a picture: which rule matters for which scenario.

Rows are the rules taken out (one at a time, then the UID/GID twin pairs), columns the
scenarios, and each cell says what changed (:func:`meshlab.ablation.ablation` decided it). A
cell carries a word of up to four letters (the legend spells each out) *and* a hatch, so
the matrix reads the same in greyscale:

=====================  =========  ================
change                 word       hatch
=====================  =========  ================
loop                   LOOP       dense crosses
bypasses proxy         byp        diagonal lines
refused/dropped/...    ref, drop  dots
delivered elsewhere    else       back-diagonals
now proxied / other    prox, path horizontal lines
no change              (blank)    none
rule absent            n/a        light grey
=====================  =========  ================
"""

from __future__ import annotations

import pandas
from matplotlib.collections import PatchCollection
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from meshlab.viz import style

CELL_LOOK: dict[str, tuple[str, str | None, str]] = {
    # change -> (word in the cell, hatch, fill)
    "loop": ("LOOP", "xxx", "#c8c8c8"),
    "bypasses proxy": ("byp", "///", "#e4e4e4"),
    "refused": ("ref", "...", "#e4e4e4"),
    "dropped": ("drop", "...", "#e4e4e4"),
    "timeout": ("t/o", "...", "#e4e4e4"),
    "delivered elsewhere": ("else", "\\\\\\", "#f0f0f0"),
    "now proxied": ("prox", "---", "#f0f0f0"),
    "different path": ("path", "---", "#f7f7f7"),
    "no change": ("", None, "#ffffff"),
    "rule absent": ("n/a", None, "#f2f2f2"),
}

FONT = style.MIN_FONT_PT
CHAR_W = 0.62 * FONT / 72


def ablation_figure(frame: pandas.DataFrame) -> Figure:
    """Draw ``frame`` (rule x scenario -> change, as :func:`meshlab.ablation.ablation` gives).

    The figure's size follows the table's shape (so it is the same for the same table).
    Unknown change words are drawn as written, without hatch.
    """
    rows = [str(r).replace(" + ", "\n+ ") for r in frame.index]  # twin pairs on two lines
    lines = [r.count("\n") + 1 for r in rows]
    cols = [str(c) for c in frame.columns]
    label_w = max([len(part) for r in rows for part in r.split("\n")] + [10]) * CHAR_W + 0.4
    cell_w, cell_h = 0.42, 0.28  # a cell holds a word of four letters (the legend spells it)
    col_label_h = max([len(c) for c in cols] + [4]) * CHAR_W * 1.05 + 0.2
    width = label_w + cell_w * max(len(cols), 1) + 0.9  # the last column's label leans right
    height = col_label_h + cell_h * max(sum(lines), 1) + 1.5
    with style.styled():
        fig, ax = style.inch_canvas(max(width, 6.0), height)
        top = 0.45 + col_label_h
        ax.text(0.15, 0.25, "What each rule is for: remove it, run every scenario",
                fontsize=11, fontweight="bold", va="center")
        for j, col in enumerate(cols):
            ax.text(label_w + (j + 0.5) * cell_w, top - 0.08, col, rotation=60, ha="left",
                    va="bottom", fontsize=FONT, rotation_mode="anchor")
        y = top
        cells: dict[tuple[str | None, str], list[Rectangle]] = {}
        for i, row in enumerate(rows):
            row_h = cell_h * lines[i]
            ax.text(label_w - 0.1, y + row_h / 2, row, ha="right", va="center", fontsize=FONT,
                    family="DejaVu Sans Mono", linespacing=1.6)
            for j in range(len(cols)):
                value = str(frame.iloc[i, j])
                word, hatch, fill = CELL_LOOK.get(value, (value[:4], None, "#ffffff"))
                cells.setdefault((hatch, fill), []).append(
                    Rectangle((label_w + j * cell_w, y), cell_w, row_h))
                if word:
                    ax.text(label_w + (j + 0.5) * cell_w, y + row_h / 2, word, ha="center",
                            va="center", fontsize=FONT, zorder=3,
                            fontweight="bold" if word == "LOOP" else "normal")
            y += row_h
        for (hatch, fill), patches in cells.items():
            # One collection per look: hundreds of cells draw as fast as a handful.
            ax.add_collection(PatchCollection(patches, facecolor=fill, edgecolor="#999999",
                                              lw=0.5, hatch=hatch, zorder=1))
        handles = [Patch(facecolor=fill, edgecolor="#777777", hatch=hatch,
                         label=f"{change} ({word or 'blank'})")
                   for change, (word, hatch, fill) in CELL_LOOK.items()
                   if change in set(frame.to_numpy().ravel().tolist())]
        if handles:
            fig.legend(handles=handles, loc="lower left", ncol=min(len(handles), 3),
                       frameon=False, fontsize=FONT, bbox_to_anchor=(0.01, 0.0))
    return fig
