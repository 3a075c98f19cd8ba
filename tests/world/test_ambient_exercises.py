"""Lesson 08's predict-then-check checkers: the model decides, several answers may be right."""

from __future__ import annotations

from typing import Any

import pytest

from meshlab.exercises import reset_tries
from meshlab.exercises.ambient import (
    check_ambient_app_sees_source,
    check_reply_path_piece,
    check_ztunnel_loop_condition,
)

SOLUTIONS: list[tuple[Any, Any]] = [
    (check_ambient_app_sees_source, "10.244.0.13"),
    (check_ztunnel_loop_condition, "-m mark ! --mark 0x539/0xfff"),
    (check_reply_path_piece, "ip rule add fwmark 0x111/0xfff pref 32764 lookup 100"),
    (check_reply_path_piece, "-m connmark --mark 0x111/0xfff -j CONNMARK --restore-mark "
                            "--nfmask 0xffffffff --ctmask 0xffffffff"),
    (check_reply_path_piece, "-m mark --mark 0x539/0xfff -j CONNMARK --set-xmark 0x111/0xfff"),
    (check_reply_path_piece, "ip route add local 0.0.0.0/0 dev lo table 100"),
]
WRONG: list[tuple[Any, Any]] = [
    (check_ambient_app_sees_source, "127.0.0.6"),
    (check_ambient_app_sees_source, "10.244.0.12"),
    (check_ztunnel_loop_condition, "-m owner --uid-owner 1337"),
    (check_ztunnel_loop_condition, "! -d 127.0.0.1/32"),
    (check_reply_path_piece, "-p tcp -m mark --mark 0x111/0xfff -j ACCEPT"),
    (check_reply_path_piece, "-s 169.254.7.127/32 -p tcp -m tcp -j ACCEPT"),
]
UNREADABLE: list[tuple[Any, Any]] = [
    (check_ambient_app_sees_source, "localhost"),
    (check_ztunnel_loop_condition, 1337),
    (check_reply_path_piece, "-j NOPE"),
]


@pytest.fixture(autouse=True)
def _fresh_hint_ladders() -> None:
    reset_tries()


@pytest.mark.parametrize(("check", "answer"), SOLUTIONS)
def test_right_answers(check, answer) -> None:  # type: ignore[no-untyped-def]
    result = check(answer)
    assert result.correct, str(result)
    assert result.feedback and result.model


@pytest.mark.parametrize(("check", "answer"), WRONG)
def test_wrong_answers_get_feedback_and_a_hint(check, answer) -> None:  # type: ignore[no-untyped-def]
    result = check(answer)
    assert result.status == "incorrect", str(result)
    assert result.feedback and result.hint and "Hint 1:" in str(result)


@pytest.mark.parametrize(("check", "answer"), UNREADABLE)
def test_unreadable_answers_are_messages(check, answer) -> None:  # type: ignore[no-untyped-def]
    assert check(answer).status == "invalid"


@pytest.mark.parametrize("check", [check_ambient_app_sees_source, check_ztunnel_loop_condition,
                                   check_reply_path_piece])
def test_the_placeholder_asks_for_an_answer(check) -> None:  # type: ignore[no-untyped-def]
    result = check(None)
    assert result.status == "unanswered" and "Replace None" in result.feedback
