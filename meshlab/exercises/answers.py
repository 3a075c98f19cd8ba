"""Reading a learner's answer, and the :func:`checker` decorator every exercise wears.

A learner types an answer in a notebook cell: a number, a string, a list, a dict, sometimes
a number in quotes. The ``read_*`` functions accept the reasonable spellings and raise
:class:`Unreadable`, with the shape they expected, for anything else. :func:`checker` turns
that, and any :class:`~meshlab.errors.MeshlabError` the model raises for a bad answer (a rule
that does not parse, a flag istio-iptables would refuse), into an ``"invalid"``
:class:`~meshlab.exercises.result.CheckResult` -- never a traceback -- and the placeholder
``None`` into a friendly "your turn".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from meshlab.errors import MeshlabError
from meshlab.exercises.result import CheckResult, invalid, unanswered


class Unreadable(Exception):
    """The learner's answer has the wrong shape; the message says which shape is expected."""


def read_port(answer: Any) -> int:
    if isinstance(answer, bool):
        raise Unreadable(f"{answer!r} is a truth value; write a port number such as 8080")
    if isinstance(answer, str) and answer.strip().isdigit():
        answer = int(answer.strip())
    if not isinstance(answer, int) or not 1 <= answer <= 65535:
        raise Unreadable(f"{answer!r} is not a port; write a whole number from 1 to 65535")
    return answer


def read_whole(answer: Any) -> int:
    if isinstance(answer, bool):
        raise Unreadable(f"{answer!r} is a truth value; write a whole number")
    if isinstance(answer, str) and answer.strip().lstrip("-").isdigit():
        answer = int(answer.strip())
    if isinstance(answer, float) and answer.is_integer():
        answer = int(answer)
    if not isinstance(answer, int):
        raise Unreadable(f"{answer!r} is not a whole number")
    return answer


def read_bool(answer: Any) -> bool:
    if isinstance(answer, bool):
        return answer
    if isinstance(answer, str) and answer.strip().lower() in ("true", "yes", "false", "no"):
        return answer.strip().lower() in ("true", "yes")
    raise Unreadable(f"{answer!r} is not True or False")


def read_text(answer: Any, what: str) -> str:
    if not isinstance(answer, str) or not answer.strip():
        raise Unreadable(f"{answer!r} is not {what}; write it as a string in quotes")
    return answer.strip()


def read_texts(answer: Any, what: str) -> tuple[str, ...]:
    if isinstance(answer, str):
        return (read_text(answer, what),)
    if isinstance(answer, Iterable) and not isinstance(answer, Mapping):
        items = tuple(read_text(a, what) for a in answer)
        if items:
            return items
    raise Unreadable(f"{answer!r} is not {what} (a string) or a list of them")


def strip_append(text: str) -> str:
    """``-A ISTIO_OUTPUT -m owner ... -j RETURN`` -> ``-m owner ... -j RETURN``."""
    words = text.split()
    if len(words) > 2 and words[0] in ("-A", "--append"):
        return " ".join(words[2:])
    return text


def checker(exercise: str, what: str, hint: str
            ) -> Callable[[Callable[..., CheckResult]], Callable[..., CheckResult]]:
    """Make ``fn`` the checker of exercise ``exercise``: ``None`` -> "your turn"; unreadable
    input / model errors -> "invalid". ``what`` names the expected answer, ``hint`` helps."""

    def wrap(fn: Callable[..., CheckResult]) -> Callable[..., CheckResult]:
        def check(answer: Any = None) -> CheckResult:
            if answer is None:
                return unanswered(exercise, what, hint)
            try:
                return fn(answer)
            except Unreadable as bad:
                return invalid(exercise, answer, f"{bad}.", f"Expected {what}.")
            except MeshlabError as error:
                return invalid(exercise, answer, f"The model could not use this answer: "
                               f"{error}", hint)

        check.__name__ = fn.__name__
        check.__qualname__ = fn.__qualname__
        check.__doc__ = fn.__doc__
        check.exercise = exercise  # type: ignore[attr-defined]
        return check

    return wrap
