"""The article's numbered steps of a walk, as the pictures and widgets need them.

:func:`meshlab.lesson.numbered_steps` decides which event is which step (1-8 inbound, 9-15
outbound) and how it is explained; this module only copies what the pictures need into a
small value (:class:`StepInfo`), so a picture never re-decides a step.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshlab.walk import Walk


@dataclass(frozen=True, slots=True)
class StepInfo:
    """One numbered step: ``event`` is the index of its event in the walk (None if it has
    none, e.g. a step the configuration skipped); ``status`` is ``"ok"``, ``"skipped"`` or
    ``"changed"``."""

    n: int | str
    title: str
    explanation: str
    event: int | None
    status: str


def step_infos(walk: Walk) -> list[StepInfo]:
    """The walk's steps from :func:`meshlab.lesson.numbered_steps`, in order."""
    from meshlab.lesson import numbered_steps

    infos = []
    for step in numbered_steps(walk):
        event = getattr(step, "event", None)
        infos.append(StepInfo(
            n=step.n,
            title=str(getattr(step, "title", "")),
            explanation=str(getattr(step, "explanation", "")),
            event=None if event is None else int(event.index),
            status=str(getattr(step, "status", "ok")),
        ))
    return infos
