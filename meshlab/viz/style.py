"""The one look every meshlab picture shares: white paper, greys, and meaning carried by shape.

A learner may print a figure, read it on a projector, or not tell red from green. So a picture
never says something with colour alone: each kind of thing has its own **line style**,
**marker** or **hatching**, and every box has a text label. Colours here are greys plus one
accent, used only to *repeat* what a line style or a hatch already says.

Everything is deterministic: fixed figure sizes, fixed fonts and no dates, so the same walk
always gives the same pixels (the notebooks store their outputs and compare them).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure

INK = "#222222"
"""Text and outlines."""
GREY = "#8a8a8a"
"""Things that exist but that the walk does not use."""
LIGHT = "#efefef"
"""The fill of boxes."""
PAPER = "#ffffff"
ACCENT = "#1f5fa8"
"""One accent (a dark blue that stays dark in greyscale), always doubled by a shape."""

# One style per connection of a walk: connection 0 is the first process's, 1 the proxy's
# upstream, and so on. Line style + marker tell them apart without colour.
LINESTYLES: tuple[Any, ...] = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)))
MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v")
SHADES: tuple[str, ...] = (INK, ACCENT, "#555555", "#1f5fa8", "#777777")
HATCHES: tuple[str, ...] = ("//", "\\\\", "xx", "..", "++")

RC: dict[str, Any] = {
    "figure.facecolor": PAPER,
    "axes.facecolor": PAPER,
    "savefig.facecolor": PAPER,
    "font.family": "DejaVu Sans",
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "legend.fontsize": 10,
    "axes.edgecolor": INK,
    "text.color": INK,
    "axes.labelcolor": INK,
    "xtick.color": INK,
    "ytick.color": INK,
    "hatch.linewidth": 0.6,
    "svg.hashsalt": "meshlab",
    "path.simplify": True,
}


#: The width, in CSS pixels, a figure is shown at in the narrowest layout the lessons support:
#: JupyterLab 1280 px wide with the file browser open leaves about 860 px for a cell's output.
SHOWN_WIDTH_PX = 860
#: The smallest text a figure may show at that width: 9 pt at 96 dpi, 12 px.
MIN_TEXT_PX = 12.0
#: The smallest font size (points) the figures use. With a figure at most
#: :data:`MAX_WIDTH_IN` wide drawn at 100 dpi, it is at least :data:`MIN_TEXT_PX` when shown.
MIN_FONT_PT = 9.5
#: The widest figure (inches): 9 in at 100 dpi is 900 px, shown at 860 px (x 0.96).
MAX_WIDTH_IN = 9.0


def shown_text_px(fig: Figure, size_pt: float, shown_width_px: float = SHOWN_WIDTH_PX) -> float:
    """How tall ``size_pt`` text of ``fig`` is on screen, in CSS pixels, when the figure's PNG
    (``fig.dpi`` pixels per inch) is shown scaled down to fit ``shown_width_px``."""
    natural = fig.get_figwidth() * fig.dpi
    return size_pt * fig.dpi / 72 * min(1.0, shown_width_px / natural)


def smallest_text_px(fig: Figure, shown_width_px: float = SHOWN_WIDTH_PX) -> float:
    """The smallest text of ``fig`` (titles, labels, legends, ticks) as shown, in CSS px."""
    from matplotlib.text import Text

    sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_text().strip()
             and t.get_visible()]
    return shown_text_px(fig, min(sizes), shown_width_px) if sizes else float("inf")


def connection_style(connection: int) -> dict[str, Any]:
    """Line style, marker and shade for connection number ``connection`` (0, 1, 2, ...)."""
    i = connection % len(LINESTYLES)
    return {"linestyle": LINESTYLES[i], "marker": MARKERS[i], "color": SHADES[i]}


@contextmanager
def styled() -> Iterator[None]:
    """Apply the meshlab look for the figures built inside the ``with`` block."""
    with matplotlib.rc_context(RC):
        yield


def new_figure(width: float, height: float, *, dpi: int = 100) -> Figure:
    """A white figure of a fixed size that is *not* registered with pyplot.

    Building :class:`~matplotlib.figure.Figure` directly (instead of ``plt.figure``) means
    nothing is kept in pyplot's global list: the caller owns the figure, Jupyter shows it
    when it is the value of a cell, and it is freed when no longer referenced.
    """
    fig = Figure(figsize=(width, height), dpi=dpi, facecolor=PAPER)
    return fig


def inch_canvas(width: float, height: float) -> tuple[Figure, Axes]:
    """A white figure with one axes over all of it, measured in inches from the top left.

    The diagrams (chains, sequence, ablation matrix) place boxes and text by inches, with y
    growing downwards as a page is read; there are no axis lines or ticks to show.
    """
    fig = new_figure(width, height)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_axis_off()
    return fig, ax


def png_bytes(fig: Figure, *, dpi: int | None = None) -> bytes:
    """The figure as PNG bytes (no timestamp or software metadata, so the bytes are stable)."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi or fig.dpi, metadata={"Software": None})
    return buffer.getvalue()


def svg_bytes(fig: Figure) -> bytes:
    """The figure as SVG bytes, its text kept as text (about twice as fast to write as a PNG,
    and sharp at any width the notebook shows it). No date in it, and ids salted with a fixed
    string, so the bytes are stable. The font list falls back to any sans-serif font where
    DejaVu Sans is not installed."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "meshlab"}):
        fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    return buffer.getvalue().replace(b"'DejaVu Sans'", b"'DejaVu Sans', Verdana, sans-serif")


def figure_texts(fig: Figure) -> list[str]:
    """Every text drawn on ``fig`` (titles, labels, annotations, tick labels), for tests."""
    from matplotlib.text import Text

    found: list[str] = []
    for artist in fig.findobj(Text):
        text = artist.get_text()
        if text:
            found.append(text)
    return found
