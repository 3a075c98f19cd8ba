"""What a numbered step is, and how a step finds its event among a walk's events.

Shared by the article's steps (:mod:`meshlab.lesson`) and ambient mode's
(:mod:`meshlab.lesson_ambient`): a :class:`Step`, and the small predicates both use to find
"the rule that decided in this chain" or "the walk's last event" for one connection. Nothing
here decides anything about packets; it only reads events the model produced.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from meshlab.i18n import tr
from meshlab.walk import Event


@dataclass(frozen=True, slots=True)
class Step:
    """One numbered step: what the article says, and what this walk did there.

    ``n`` is the article's number (1-15), or for an ambient walk ``"A1"``, ``"A2"``...
    (:mod:`meshlab.lesson_ambient`).

    ``status`` is ``"ok"`` (the step happened as the article tells), ``"changed"`` (something
    else happened at this point: ``event`` is that, ``explanation`` says what) or ``"skipped"``
    (the walk never got here; ``event`` is ``None``).
    """

    n: int | str
    title: str
    explanation: str
    event: Event | None
    status: str


def first_event(events: list[Event], pred: Callable[[Event], bool]) -> Event | None:
    return next((e for e in events if pred(e)), None)


def is_hit(e: Event) -> bool:
    return e.kind == "rule" and bool(e.matched)


def jumps_to(e: Event, *chains: str) -> bool:
    return is_hit(e) and any(e.decision.startswith(f"jump {c}") or e.decision == c or
                           (e.text or "").endswith(f"-j {c}") for c in chains)


def is_nat_to(e: Event, target: str) -> bool:
    return is_hit(e) and (e.decision.startswith(target) or f"-j {target}" in (e.text or ""))


def decisive_rule(events: list[Event], conn: int, chain: str) -> Event | None:
    """The rule that decided in ``chain`` (a RETURN, a jump, a NAT target) for ``conn``."""
    return first_event(events, lambda e: e.connection == conn and is_hit(e) and e.chain == chain)


def final_event(events: list[Event], conn: int | None = None) -> Event | None:
    ends = ("deliver", "refused", "drop", "loop", "close", "timeout")
    for e in reversed(events):
        if e.kind in ends and (conn is None or e.connection >= conn):
            return e
    return None


def make_step(spec: tuple[int, str, str], found: Event | None, instead: Event | None,
          instead_text: str = "") -> Step:
    """The step ``spec`` (n, title, explanation marked translatable) as this walk did it.

    The explanation is put in the language the library speaks now (:func:`meshlab.i18n.tr`);
    ``instead_text``, when given, is already in it. The title stays as the article writes it.
    """
    n, title, explanation = spec
    explanation = tr(explanation)
    if found is not None:
        return Step(n, title, explanation, found, "ok")
    if instead is not None:
        what = instead_text or tr("instead: {decision}", decision=instead.decision)
        if instead.kind == "rule" and instead.text:
            what = instead_text or tr("instead, {chain} rule {rule} `{text}` matched: {decision}",
                                      chain=instead.chain, rule=instead.rule, text=instead.text,
                                      decision=instead.decision)
        return Step(n, title, what, instead, "changed")
    return Step(n, title, tr("skipped: the walk did not get here ({explanation})",
                             explanation=explanation), None, "skipped")
