"""The rules a packet passed over, and why, as the widgets show them.

One small function per question, so that the step player and the packet builder show the
reasons the same way (the words come from the model: :attr:`RuleEval.why_not`, copied into a
walk's rule events):

* :func:`passed_over_before`: in a walk, the rules tried and passed over on the way to one
  event (a step);
* :func:`reasons_html`: those rules (or a trace's evaluations), one per line, under the chain
  they belong to.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from meshlab.i18n import tr
from meshlab.netfilter.trace import passed_over_by_chain, reason_line
from meshlab.walk import Event, Walk
from meshlab.widgets.common import esc


def passed_over_before(walk: Walk, event: Event | None) -> list[Event]:
    """The rule events that did not match just before ``event`` (same pod and connection,
    back to the previous rule that matched): why the packet got to this step and not to an
    earlier rule."""
    if event is None:
        return []
    out: list[Event] = []
    for before in reversed(walk.events[:event.index]):
        if (before.kind != "rule" or before.matched or before.pod != event.pod
                or before.connection != event.connection):
            break
        out.append(before)
    return out[::-1]


def reasons_html(evaluations: Iterable[Any], *, limit: int = 12) -> str:
    """The rules that did not match, one per line under their chain, as HTML (empty when
    none did). At most ``limit`` per chain; the rest are counted."""
    groups = passed_over_by_chain(evaluations)
    if not groups:
        return ""
    parts = [f"<div class='meshlab-reasons'><b>{tr('Passed over')}</b> "
             f"{tr('(the first condition that failed):')}"]
    for title, rules in groups:
        lines = "".join(f"<li>{esc(reason_line(e))}</li>" for e in rules[:limit])
        if len(rules) > limit:
            more = tr("... and {n} more", n=len(rules) - limit)
            lines += f"<li>{more}</li>"
        parts.append(f"<div style='margin-top:4px'>{esc(title)}<ul style='margin:0;"
                     f"font-family:monospace'>{lines}</ul></div>")
    parts.append("</div>")
    return "".join(parts)
