"""What a checker returns: :class:`CheckResult`, shown as text or as a small HTML box.

A result says whether the answer is right (``status``), what the model does with *this*
answer (``feedback``) and, for a wrong one, the next hint of the exercise's ladder. The
answer itself and the model's evidence (a trace, a walk, counters: they usually show the
answer) are kept apart, in :attr:`CheckResult.answer_block`. It is never shown unasked:

* in a notebook (``_repr_html_``) it is a collapsed ``<details>`` block whose summary reads
  "Show the answer" (for a right answer: "What the model shows");
* as plain text (``str``) it comes last, after a line that starts with
  :data:`ANSWER_MARKER`, so a reader (or a test) knows where the answer begins.

The box's first words and border style carry the meaning, never colour alone.
A checker builds its verdict with :func:`right` or :func:`wrong`; the ``checker`` decorator
(:mod:`meshlab.exercises.answers`) adds the exercise id and the hint.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from meshlab.i18n import tr, translatable

#: The first words of a result: meaning in words and symbols, never by colour alone.
_LABELS: Mapping[str, str] = {
    "correct": translatable("✔ Correct"),
    "incorrect": translatable("✘ Not quite"),
    "unanswered": translatable("✎ Your turn"),
    "invalid": translatable("⚠ Cannot read this answer"),
}

#: The line that opens the answer in the plain-text form; nothing after it is a hint.
ANSWER_MARKER = translatable("▸ Show the answer")


def answer_marker() -> str:
    """:data:`ANSWER_MARKER` in the language the library speaks now."""
    return tr(ANSWER_MARKER)


@dataclass(frozen=True)
class Verdict:
    """What a checker's body decides: right or not, what the model did with the answer,
    the solution in words and the model's evidence (both kept for the answer block), and an
    optional note (e.g. "right, but not minimal")."""

    correct: bool
    feedback: str
    solution: str = ""
    evidence: tuple[str, ...] = ()
    note: str = ""


def right(feedback: str, *, evidence: tuple[str, ...] = (), note: str = "") -> Verdict:
    """The model agrees with the answer; ``feedback`` says why."""
    return Verdict(True, feedback, "", tuple(evidence), note)


def wrong(feedback: str, *, solution: str, evidence: tuple[str, ...] = ()) -> Verdict:
    """The model disagrees. ``feedback`` is about the learner's answer and must not name the
    right one; ``solution`` and ``evidence`` go into the collapsed answer block."""
    return Verdict(False, feedback, solution, tuple(evidence))


@dataclass(frozen=True)
class CheckResult:
    """What a checker found.

    ``status`` is ``"correct"``, ``"incorrect"``, ``"unanswered"`` (the placeholder ``None``
    is still there) or ``"invalid"`` (the answer could not be read). ``feedback`` is about the
    learner's answer; ``hint`` helps the next try (``hint_number`` is its rung on the
    ladder, from 1); ``solution`` and ``model`` (the evidence, line by line) form the answer
    block; ``note`` adds a remark to a right answer.
    """

    exercise: str
    status: str
    answer: Any
    feedback: str
    hint: str = ""
    model: tuple[str, ...] = field(default=())
    solution: str = ""
    note: str = ""
    hint_number: int = 0

    @property
    def correct(self) -> bool:
        return self.status == "correct"

    @property
    def answer_block(self) -> str:
        """The solution and the model's evidence, as plain text ("" when there is none)."""
        lines = [tr("The answer: {solution}", solution=self.solution)] if self.solution else []
        if self.model:
            lines.append(tr("What the model shows:"))
            lines += [f"  {line}" for line in self.model]
        return "\n".join(lines)

    def _title(self) -> str:
        label = tr(_LABELS[self.status]) if self.status in _LABELS else self.status
        return tr("{label} (exercise {exercise})", label=label, exercise=self.exercise)

    def _hint_label(self) -> str:
        return tr("Hint {n}", n=self.hint_number) if self.hint_number else tr("Hint")

    def __str__(self) -> str:
        lines = [self._title(), self.feedback]
        if self.note:
            lines.append(self.note)
        if self.hint and not self.correct:
            lines.append(f"{self._hint_label()}: {self.hint}")
        block = self.answer_block
        if block and self.correct:
            lines.append(block)
        elif block:
            lines += [tr("{marker} (read it when you are done trying)", marker=answer_marker()),
                      block]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        border = {"correct": "solid", "incorrect": "dashed", "unanswered": "dotted",
                  "invalid": "double"}.get(self.status, "solid")
        parts = [
            f'<div class="meshlab-check meshlab-check-{self.status}" style="border:2px '
            f'{border} #555;padding:6px 10px;margin:4px 0;background:#fff;color:#111">',
            f"<b>{html.escape(self._title())}</b>",
            _html_text(self.feedback),
        ]
        if self.note:
            parts.append(_html_text(self.note))
        if self.hint and not self.correct:
            parts.append(f"<p style='margin:4px 0'><i>{self._hint_label()}:</i> "
                         f"{html.escape(self.hint)}</p>")
        if self.solution or self.model:
            summary = tr("What the model shows") if self.correct else tr("Show the answer")
            inner = []
            if self.solution:
                inner.append(f"<p style='margin:4px 0'><b>{html.escape(tr('The answer:'))}</b> "
                             f"{html.escape(self.solution)}</p>")
            if self.model:
                shows = html.escape(tr("What the model shows:"))
                inner.append(f"<p style='margin:4px 0 0'>{shows}</p>"
                             f"<pre style='margin:2px 0;white-space:pre-wrap'>"
                             f"{html.escape(chr(10).join(self.model))}</pre>")
            parts.append(f"<details class='meshlab-answer'><summary>{summary}</summary>"
                         f"{''.join(inner)}</details>")
        parts.append("</div>")
        return "".join(parts)


def _html_text(text: str) -> str:
    """A message as HTML: its first line a paragraph, any further lines (a caret under a
    rule, a list of rules one per line) kept as they are, in monospace."""
    first, _, rest = text.partition("\n")
    out = f"<p style='margin:4px 0'>{html.escape(first)}</p>"
    if rest.strip():
        out += (f"<pre style='margin:2px 0;font-family:monospace;white-space:pre'>"
                f"{html.escape(rest)}</pre>")
    return out


def unanswered(exercise: str, what: str) -> CheckResult:
    return CheckResult(exercise, "unanswered", None,
                       tr("Replace None with your answer ({what}), then run the cell again.",
                          what=what))


def invalid(exercise: str, answer: Any, problem: str, hint: str) -> CheckResult:
    return CheckResult(exercise, "invalid", answer, problem, hint)
