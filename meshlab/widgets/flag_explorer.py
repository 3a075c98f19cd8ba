"""The flag explorer: type ``istio-iptables`` flags and read the rules they produce.

The text box holds the flags ``istio-init`` runs with (the default ones to start with). On
every change the model generates the rules (:func:`meshlab.istio.capture.generate`) and the
widget shows the ``iptables-restore`` document, with each line that differs from the default
rules marked: ``+`` (added, bold) or ``-`` (gone, struck through), so the change is visible
without colour. A flag Istio would reject shows the flag parser's own message in
``meshlab-error``, and the last valid rules stay on screen.

A list flag given again *replaces* its list, it does not add to it: appending ``-d 8080`` to the
default flags drops ``15090,15021,15020`` (so Envoy's own ports are captured again). The widget
says so above the rules (:func:`replaced_lists`). The rules follow the text box when you press
Enter or leave the box, not at every keystroke.

Flags are split like a shell would (``-x ''`` is an empty value; so is ``-x=``).
"""

from __future__ import annotations

import difflib
import shlex
from functools import lru_cache

import ipywidgets as widgets

from meshlab.errors import MeshlabError
from meshlab.i18n import tr
from meshlab.istio.flags import DEFAULT_ISTIO_INIT_ARGS
from meshlab.widgets.common import LiveWidget, error_widget, esc, guarded

DEFAULT_FLAGS = shlex.join(DEFAULT_ISTIO_INIT_ARGS)
"""The default flags as one shell-quoted line (``-x ''`` keeps the empty value)."""


@lru_cache(maxsize=256)
def _restore(words: tuple[str, ...]) -> str:
    from meshlab.istio.capture import CaptureConfig, generate

    return generate(CaptureConfig.from_args(list(words))).restore_v4


def split_flags(text: str) -> tuple[str, ...]:
    """Split a flags line like a shell; unbalanced quotes -> MeshlabError saying where."""
    try:
        return tuple(shlex.split(text))
    except ValueError as exc:
        raise MeshlabError(tr("cannot split the flags ({problem}); close the quote you opened",
                              problem=exc)) from None


def diff_lines(default: str, current: str) -> list[tuple[str, str]]:
    """(mark, line) for every line of either document: ``" "`` same, ``"+"`` new, ``"-"``
    gone."""
    a, b = default.splitlines(), current.splitlines()
    out: list[tuple[str, str]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            out += [(" ", line) for line in a[i1:i2]]
            continue
        out += [("-", line) for line in a[i1:i2]]
        out += [("+", line) for line in b[j1:j2]]
    return out


#: The flags whose value is a comma list (ports, address ranges, IDs).
_LIST_FLAGS = ("-b", "-d", "-i", "-x", "-o", "-q", "-u", "-g")


def replaced_lists(words: tuple[str, ...],
                   default: tuple[str, ...] = tuple(DEFAULT_ISTIO_INIT_ARGS)) -> list[str]:
    """One sentence for each list flag whose last value drops items of its default list
    (``-d 8080`` after the default ``-d 15090,15021,15020``)."""
    def last_values(ws: tuple[str, ...]) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for i, w in enumerate(ws[:-1]):
            if w in _LIST_FLAGS:
                found.setdefault(w, []).append(ws[i + 1])
        return found

    defaults, given = last_values(default), last_values(words)
    notes = []
    for flag, values in given.items():
        old = defaults.get(flag, [""])[-1]
        kept = set(values[-1].split(","))
        lost = [item for item in old.split(",") if item and item not in kept]
        if lost:
            twice = (" " + tr("(the flag is given twice: the last one counts)")
                     if len(values) > 1 else "")
            words = {"flag": flag, "value": values[-1] or repr(""), "old": old, "twice": twice,
                     "lost": ", ".join(lost), "more": values[-1] or "..."}
            notes.append(tr("{flag} {value} replaces the default list {old}, it does not add "
                            "to it{twice}: {lost} is no longer in it. To add an item, write "
                            "{flag} {old},{more}.", **words) if len(lost) == 1 else
                         tr("{flag} {value} replaces the default list {old}, it does not add "
                            "to it{twice}: {lost} are no longer in it. To add an item, write "
                            "{flag} {old},{more}.", **words))
    return notes


class FlagExplorer(LiveWidget, widgets.VBox):
    """A text box of istio-iptables flags and the rules they generate, changes marked."""

    def __init__(self, flags: str = DEFAULT_FLAGS) -> None:
        self.error = error_widget()
        self.flags = widgets.Text(value="", description="istio-iptables",
                                  layout=widgets.Layout(width="100%"),
                                  style={"description_width": "initial"},
                                  placeholder="-p 15001 -z 15006 -u 1337 ...",
                                  continuous_update=False)
        self.flags.add_class("meshlab-flags-input")
        self.rules_text = widgets.HTML("").add_class("meshlab-rules-text")
        self.summary = widgets.HTML("")
        self.notes = widgets.HTML("").add_class("meshlab-flag-notes")
        self._lines: list[tuple[str, str]] = []
        self._default = guarded(lambda: _restore(DEFAULT_ISTIO_INIT_ARGS), self.error) or ""
        super().__init__([self.flags, self.error, self.notes, self.summary, self.rules_text])
        self.add_class("meshlab-flag-explorer")
        self.flags.observe(self._update, names="value")
        self.flags.value = flags if isinstance(flags, str) else shlex.join(flags)
        if self.flags.value == "":
            self._update()

    def _update(self, change: object = None) -> None:
        text = self.flags.value
        restore = guarded(lambda: _restore(split_flags(text)), self.error)
        notes = guarded(lambda: replaced_lists(split_flags(text)), widgets.HTML()) or []
        note = tr("Note:")
        self.notes.value = "".join(f"<p style='margin:2px 0'><b>{note}</b> {esc(n)}</p>"
                                   for n in notes)
        if restore is None:
            self.summary.value = f"<i>{tr('Showing the rules of the last valid flags.')}</i>"
            return
        self._lines = diff_lines(self._default, restore)
        added = sum(1 for m, _ in self._lines if m == "+")
        gone = sum(1 for m, _ in self._lines if m == "-")
        self.summary.value = (f"<i>{tr('Same rules as the default flags.')}</i>"
                              if not added + gone else
                              tr("{counts} against the default flags.",
                                 counts=f"<b>{_counts(added, gone)}</b>"))
        self.rules_text.value = _render(self._lines)

    def static(self) -> str:
        """The rules as plain text, each line prefixed by ``+``, ``-`` or a space."""
        return "\n".join(f"{mark} {line}" for mark, line in self._lines)


def _counts(added: int, gone: int) -> str:
    """How many rule lines differ: ``"2 line(s) added (+), 1 removed (-)"``."""
    return tr("{added} line(s) added (+), {gone} removed (-)", added=added, gone=gone)


def _render(lines: list[tuple[str, str]]) -> str:
    out = []
    for mark, line in lines:
        if mark == "+":
            out.append(f"<span class='meshlab-added' style='font-weight:bold;background:#e8e8e8'>"
                       f"+ {esc(line)}</span>")
        elif mark == "-":
            out.append(f"<span class='meshlab-removed' style='text-decoration:line-through'>"
                       f"- {esc(line)}</span>")
        else:
            out.append(f"  {esc(line)}")
    return "<pre style='font-size:12px;line-height:1.3'>" + "\n".join(out) + "</pre>"
