"""Reading a learner's answer, and the :func:`checker` decorator every exercise wears.

A learner types an answer in a notebook cell: a number, a string, a list, a dict, sometimes
a number in quotes. The ``read_*`` functions accept the reasonable spellings and raise
:class:`Unreadable`, with the shape they expected, for anything else. :func:`checker` turns
that, and any :class:`~meshlab.errors.MeshlabError` the model raises for a bad answer (a rule
that does not parse, a flag istio-iptables would refuse), into an ``"invalid"``
:class:`~meshlab.exercises.result.CheckResult` -- never a traceback -- the placeholder
``None`` into a friendly "your turn", and each wrong try into the next hint of a ladder.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from meshlab.errors import MeshlabError
from meshlab.exercises.result import CheckResult, Verdict, invalid, unanswered
from meshlab.i18n import tr


class Unreadable(Exception):
    """The learner's answer has the wrong shape; the message says which shape is expected."""


def read_port(answer: Any) -> int:
    if isinstance(answer, bool):
        raise Unreadable(tr("{answer} is a truth value; write a port number such as 8080",
                            answer=repr(answer)))
    if isinstance(answer, str) and answer.strip().isdigit():
        answer = int(answer.strip())
    if not isinstance(answer, int) or not 1 <= answer <= 65535:
        raise Unreadable(tr("{answer} is not a port; write a whole number from 1 to 65535",
                            answer=repr(answer)))
    return answer


def read_whole(answer: Any) -> int:
    if isinstance(answer, bool):
        raise Unreadable(tr("{answer} is a truth value; write a whole number", answer=repr(answer)))
    if isinstance(answer, str) and answer.strip().lstrip("-").isdigit():
        answer = int(answer.strip())
    if isinstance(answer, float) and answer.is_integer():
        answer = int(answer)
    if not isinstance(answer, int):
        raise Unreadable(tr("{answer} is not a whole number", answer=repr(answer)))
    return answer


def read_bool(answer: Any) -> bool:
    if isinstance(answer, bool):
        return answer
    if isinstance(answer, str) and answer.strip().lower() in ("true", "yes", "false", "no"):
        return answer.strip().lower() in ("true", "yes")
    raise Unreadable(tr("{answer} is not True or False", answer=repr(answer)))


def read_string(answer: Any, what: str) -> str:
    if not isinstance(answer, str) or not answer.strip():
        raise Unreadable(tr("{answer} is not {what}; write it as a string in quotes",
                            answer=repr(answer), what=tr(what)))
    return answer.strip()


def read_strings(answer: Any, what: str) -> tuple[str, ...]:
    if isinstance(answer, str):
        return (read_string(answer, what),)
    if isinstance(answer, Iterable) and not isinstance(answer, Mapping):
        items = tuple(read_string(a, what) for a in answer)
        if items:
            return items
    raise Unreadable(tr("{answer} is not {what} (a string) or a list of them",
                        answer=repr(answer), what=tr(what)))


def strip_append(text: str) -> str:
    """``-A ISTIO_OUTPUT -m owner ... -j RETURN`` -> ``-m owner ... -j RETURN``."""
    words = text.split()
    if len(words) > 2 and words[0] in ("-A", "--append"):
        return " ".join(words[2:])
    return text


#: How many wrong tries each exercise has had in this Python process (this kernel): the
#: next wrong try gets the next hint of the exercise's ladder.
_wrong_tries: dict[str, int] = {}


def reset_tries(exercise: str | None = None) -> None:
    """Forget the wrong tries of ``exercise`` (of every exercise when None): the hint ladder
    starts again from its first rung."""
    if exercise is None:
        _wrong_tries.clear()
    else:
        _wrong_tries.pop(exercise, None)


def checker(exercise: str, what: str, hints: Sequence[str]
            ) -> Callable[[Callable[[Any], Verdict]], Callable[..., CheckResult]]:
    """Make ``fn`` the checker of exercise ``exercise`` (the only place its id is written).

    ``fn`` takes the learner's answer and returns a :class:`Verdict`. The wrapper turns the
    placeholder ``None`` into "your turn", unreadable input and model errors into
    "invalid" (never a traceback), and a wrong verdict into a result with the next rung of
    ``hints`` (the last rung stays once reached). ``what`` names the expected answer.
    Hints help the learner think; none of them names the answer. ``what`` and the hints are
    English message templates, shown through :func:`~meshlab.i18n.tr` (the message test reads
    them from each ``checker(...)`` call).
    """
    ladder = tuple(hints)
    if not ladder:
        raise ValueError(f"exercise {exercise} needs at least one hint")

    def wrap(fn: Callable[[Any], Verdict]) -> Callable[..., CheckResult]:
        def check(answer: Any = None) -> CheckResult:
            if answer is None:
                return unanswered(exercise, tr(what))
            try:
                verdict = fn(answer)
            except Unreadable as bad:
                return invalid(exercise, answer, f"{bad}.", tr("Expected {what}.", what=tr(what)))
            except MeshlabError as error:
                return invalid(exercise, answer,
                               tr("The model could not use this answer: {error}", error=error),
                               tr("Expected {what}.", what=tr(what)))
            if verdict.correct:
                return CheckResult(exercise, "correct", answer, verdict.feedback,
                                   model=verdict.evidence, note=verdict.note)
            tries = _wrong_tries.get(exercise, 0)
            _wrong_tries[exercise] = tries + 1
            rung = min(tries, len(ladder) - 1)
            return CheckResult(exercise, "incorrect", answer, verdict.feedback, tr(ladder[rung]),
                               verdict.evidence, verdict.solution, hint_number=rung + 1)

        check.__name__ = fn.__name__
        check.__qualname__ = fn.__qualname__
        check.__doc__ = fn.__doc__
        check.exercise = exercise  # type: ignore[attr-defined]
        check.hints = ladder  # type: ignore[attr-defined]
        return check

    return wrap
