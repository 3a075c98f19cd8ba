"""How a loop grows, and where a real proxy gives out.

When the proxy's own connection is captured again, every turn of the loop holds one more
connection open (Envoy accepts a downstream and opens an upstream, and neither closes while the
loop runs). The numbers come from :meth:`meshlab.walk.LoopReport.after`, the model's cost of a
loop; this module only plots them:

* left: the first ``hops`` turns, on linear axes (straight lines: one more connection, two more
  Envoy sockets, one more ephemeral port per turn);
* right: the same on log axes, far enough to reach the limits: the ephemeral ports
  (``net.ipv4.ip_local_port_range``: ``connect()`` fails with EADDRNOTAVAIL) and Envoy's file
  descriptors (``nofile``: ``accept()`` fails with EMFILE).
"""

from __future__ import annotations

import math
import textwrap

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from meshlab.viz import style
from meshlab.walk import LoopReport

_SERIES = (
    ("connections", "TCP connections open", "-", "o"),
    ("proxy_sockets", "Envoy sockets (fds)", "--", "s"),
    ("ephemeral_ports", "ephemeral ports used", ":", "^"),
)


def loop_growth_figure(loop: LoopReport, *, hops: int = 1000) -> Figure:
    """Connections, Envoy sockets and ephemeral ports against the loop's turns (hops).

    ``hops`` is how far the left panel goes. Each series has its own line style and marker;
    the limits are labelled horizontal lines, and the turn at which each limit is reached is
    written beside it.
    """
    hops = max(1, int(hops))
    with style.styled():
        fig = style.new_figure(style.MAX_WIDTH_IN, 6.8)
        left, right = fig.subplots(1, 2)
        xs = [round(hops * i / 20) for i in range(21)]
        for attr, label, ls, marker in _SERIES:
            ys = [getattr(loop.after(x), attr) for x in xs]
            left.plot(xs, ys, linestyle=ls, marker=marker, markevery=4, color=style.INK,
                      label=label, lw=1.6, ms=5)
        left.set_xlabel("turns of the loop (hops)")
        left.set_ylabel("count")
        left.set_title(f"the first {hops} turns")
        left.grid(True, color="#dddddd", lw=0.6)
        left.legend(frameon=False, loc="upper left")

        far = max(loop.hops_until_fds_run_out * 2, hops * 10)
        xs_log = [1]
        while xs_log[-1] < far:
            xs_log.append(xs_log[-1] * 2)
        for attr, label, ls, marker in _SERIES:
            ys = [getattr(loop.after(x), attr) for x in xs_log]
            right.plot(xs_log, ys, linestyle=ls, marker=marker, markevery=3, color=style.INK,
                       label=label, lw=1.6, ms=5)
        right.set_xscale("log")
        right.set_yscale("log")
        for axis in (right.xaxis, right.yaxis):  # plain text: mathtext labels are slow to draw
            axis.set_major_formatter(FuncFormatter(_power_of_ten))
            axis.set_minor_formatter(NullFormatter())
        ports = loop.ephemeral_port_count
        right.axhline(ports, color=style.ACCENT, linestyle="-.", lw=1.2)
        right.text(1.3, ports * 1.25, f"ephemeral ports: {ports}\n-> EADDRNOTAVAIL after "
                   f"{loop.hops_until_ports_run_out} turns", fontsize=style.MIN_FONT_PT,
                   va="bottom", bbox={"fc": style.PAPER, "ec": "none", "pad": 1})
        right.axhline(loop.nofile, color=style.ACCENT, linestyle=(0, (6, 2)), lw=1.2)
        right.text(1.3, loop.nofile * 1.25, f"nofile: {loop.nofile} -> EMFILE after "
                   f"{loop.hops_until_fds_run_out} turns", fontsize=style.MIN_FONT_PT, va="bottom",
                   bbox={"fc": style.PAPER, "ec": "none", "pad": 1})
        right.set_ylim(1, loop.nofile * 12)
        right.set_xlabel("turns of the loop (log)")
        right.set_title("where a real proxy stops")
        right.grid(True, color="#dddddd", lw=0.6, which="major")
        fig.suptitle(f"loop: {loop.text}", x=0.01, ha="left", fontsize=10, fontweight="bold")
        note = textwrap.wrap(f"Detected by {loop.detected_by} after {loop.hops} hop(s). "
                             f"{loop.gives_out}", 112)
        fig.text(0.01, 0.01, "\n".join(note[:8]), fontsize=style.MIN_FONT_PT, ha="left",
                 va="bottom")
        fig.subplots_adjust(left=0.09, right=0.98, top=0.88, bottom=0.37, wspace=0.25)
    return fig


_SUPERSCRIPTS = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")


def _power_of_ten(value: float, _position: int | None = None) -> str:
    """A log axis' tick label as plain text: 1000 -> ``10³`` (1 and 10 stay as they are)."""
    if value <= 0:
        return ""
    exponent = round(math.log10(value))
    if abs(value - 10**exponent) > 1e-9 * value:
        return ""
    return {0: "1", 1: "10"}.get(exponent, "10" + str(exponent).translate(_SUPERSCRIPTS))
