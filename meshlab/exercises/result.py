"""What a checker returns: :class:`CheckResult`, shown as text or as a small HTML box.

A result says whether the answer is right (``status``), what the model shows and why
(``feedback``, ``model``) and a hint for the next try. In a notebook its rich display
(``_repr_html_``) is a bordered box whose first words and border style carry the meaning,
never colour alone; in a test or a terminal it prints as plain text.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: The first words of a result: meaning in words and symbols, never by colour alone.
_LABELS: Mapping[str, str] = {
    "correct": "✔ Correct",
    "incorrect": "✘ Not quite",
    "unanswered": "✎ Your turn",
    "invalid": "⚠ Cannot read this answer",
}


@dataclass(frozen=True)
class CheckResult:
    """What a checker found.

    ``status`` is ``"correct"``, ``"incorrect"``, ``"unanswered"`` (the placeholder ``None``
    is still there) or ``"invalid"`` (the answer could not be read). ``feedback`` says what
    the model shows and why; ``hint`` helps the next try; ``model`` lists the model's own
    evidence (a trace, a walk's steps) line by line.
    """

    exercise: str
    status: str
    answer: Any
    feedback: str
    hint: str = ""
    model: tuple[str, ...] = field(default=())

    @property
    def correct(self) -> bool:
        return self.status == "correct"

    def _title(self) -> str:
        return f"{_LABELS.get(self.status, self.status)} (exercise {self.exercise})"

    def __str__(self) -> str:
        lines = [self._title(), self.feedback]
        if self.model:
            lines.append("What the model shows:")
            lines += [f"  {line}" for line in self.model]
        if self.hint and not self.correct:
            lines.append(f"Hint: {self.hint}")
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
            f"<p style='margin:4px 0'>{html.escape(self.feedback)}</p>",
        ]
        if self.model:
            body = html.escape("\n".join(self.model))
            parts.append("<details><summary>What the model shows</summary>"
                         f"<pre style='margin:2px 0'>{body}</pre></details>")
        if self.hint and not self.correct:
            parts.append(f"<p style='margin:4px 0'><i>Hint:</i> {html.escape(self.hint)}</p>")
        parts.append("</div>")
        return "".join(parts)


def unanswered(exercise: str, what: str, hint: str) -> CheckResult:
    return CheckResult(exercise, "unanswered", None,
                       f"Replace None with your answer ({what}), then run the cell again.",
                       hint)


def invalid(exercise: str, answer: Any, problem: str, hint: str) -> CheckResult:
    return CheckResult(exercise, "invalid", answer, problem, hint)
