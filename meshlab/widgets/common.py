"""Small helpers every meshlab widget shares: safe HTML, error messages, tables.

A widget must never show a traceback: whatever a learner types, the widget answers with a
sentence. :func:`guarded` runs a model call and turns a :class:`~meshlab.errors.MeshlabError`
(bad input, written for a person) into that sentence; any other exception is a bug in meshlab,
and is reported as one, still inside the widget.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from typing import TypeVar

import ipywidgets as widgets

from meshlab.errors import MeshlabError
from meshlab.i18n import tr, translatable

T = TypeVar("T")

TABLE_STYLE = (
    "<style>.meshlab-table{border-collapse:collapse;font-size:12px;font-family:monospace}"
    ".meshlab-table th,.meshlab-table td{border:1px solid #bbb;padding:2px 6px;text-align:left;"
    "vertical-align:top}.meshlab-table th{background:#eee}"
    ".meshlab-table tr.meshlab-hit td{font-weight:bold}"
    ".meshlab-changed{background:#eee;font-weight:bold}</style>"
)


def esc(text: object) -> str:
    """``text`` made safe to put inside HTML."""
    return html.escape(str(text), quote=True)


def error_widget() -> widgets.HTML:
    """An empty HTML widget with the ``meshlab-error`` class (the contract's error slot)."""
    return widgets.HTML("").add_class("meshlab-error")


def error_html(message: str) -> str:
    """A message a person can act on, marked so it is seen without colour (a bold label).

    A message of several lines (a parser's caret under the offending token, a list of rules)
    keeps its layout: the lines after the first are shown as they are, in monospace.
    """
    first, _, rest = message.partition("\n")
    more = (f"<pre style='margin:2px 0;font-family:monospace;white-space:pre'>{esc(rest)}</pre>"
            if rest.strip() else "")
    return ("<div style='border:2px solid #333;padding:4px 8px;margin:4px 0'>"
            f"<b>{tr('Problem:')}</b> {esc(first)}{more}</div>")


def guarded(call: Callable[[], T], error: widgets.HTML) -> T | None:
    """Run ``call``; on failure put the message in ``error`` and return None.

    On success the error slot is emptied, so an old message never stays after a fix.
    """
    try:
        result = call()
    except MeshlabError as exc:
        error.value = error_html(str(exc))
        return None
    except Exception as exc:  # a bug in meshlab: still no traceback in the notebook
        error.value = error_html(tr("meshlab could not do this ({kind}: {exc}); this is a bug "
                                    "in meshlab, please report it",
                                    kind=type(exc).__name__, exc=exc))
        return None
    error.value = ""
    return result


def html_table(header: Sequence[str], rows: Sequence[Sequence[object]],
               marked: Sequence[bool] | None = None) -> str:
    """A small HTML table; rows with ``marked[i]`` true are bold and start with a ``*``.

    The column names are shown in the learner's language (mark them with
    :func:`~meshlab.i18n.translatable` where they are written)."""
    head = "".join(f"<th>{esc(tr(h))}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        mark = bool(marked[i]) if marked is not None else False
        cells = "".join(f"<td>{esc(c)}</td>" for c in row)
        cls = " class='meshlab-hit'" if mark else ""
        body.append(f"<tr{cls}>{cells}</tr>")
    return (f"{TABLE_STYLE}<table class='meshlab-table'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


class LiveWidget:
    """Mixed into every meshlab widget: its plain-text form (what a page that cannot run
    widgets, or a notebook opened before its cells ran, shows in its place) says what it is
    and how to bring it to life, instead of a nest of ``VBox(children=...)``. ipywidgets cuts
    that text at 110 characters, so it stays short."""

    def __repr__(self) -> str:
        return tr("{name}: a live widget; run the lesson (Run -> Run All Cells) to use it.",
                  name=type(self).__name__)


#: One line for a lesson to show above its widgets (show it as ``tr(STORED_WIDGET_NOTE)``).
STORED_WIDGET_NOTE = translatable("The widgets in this lesson are saved copies until it runs: "
                                  "they do not answer clicks yet. Run -> Run All Cells, and "
                                  "they come alive.")
