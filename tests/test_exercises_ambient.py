"""Lesson 08's checkers: right and wrong answers judged by the ambient walks.

``tests/test_exercises.py`` runs every checker of the catalog (these four included) against
its solution, wrong answers, the placeholder and unreadable input. Here: what is particular
to ambient mode -- several right answers where the model allows them, feedback that speaks to
the learner's own answer, and no answer shown outside the "Show the answer" block.
"""

from __future__ import annotations

import re

import pytest

from meshlab.exercises import (
    check_ambient_app_sees_source,
    check_ambient_outbound_port,
    check_reply_path_piece,
    check_ztunnel_loop_condition,
    reset_tries,
)
from meshlab.exercises.result import ANSWER_MARKER, CheckResult
from meshlab.scenarios import run_scenario

REPLY_PATH = (
    "-m mark --mark 0x539/0xfff -j CONNMARK --set-xmark 0x111/0xfff",
    "-m connmark --mark 0x111/0xfff -j CONNMARK --restore-mark --nfmask 0xffffffff "
    "--ctmask 0xffffffff",
    "ip rule add fwmark 0x111/0xfff pref 32764 lookup 100",
    "ip route add local 0.0.0.0/0 dev lo table 100",
)


@pytest.fixture(autouse=True)
def _fresh_hint_ladders() -> None:
    reset_tries()


def shown(result: CheckResult) -> str:
    """What a learner reads without opening "Show the answer" (text and HTML)."""
    html = re.sub(r"<details.*?</details>", "", result._repr_html_(), flags=re.S)
    return str(result).split(ANSWER_MARKER)[0] + "\n" + html


def test_the_outbound_port_is_the_first_listener_of_the_walk() -> None:
    first = next(e.listener for e in run_scenario("ambient-outbound").events
                 if e.kind == "accept")
    assert check_ambient_outbound_port(int(first.split(":")[1])).correct
    assert check_ambient_outbound_port("15001").correct


@pytest.mark.parametrize(("port", "says"), [(15008, "HBONE"), (15006, "nat PREROUTING"),
                                            (9080, "rewrites the destination"),
                                            (15053, "DNS"), (8080, "no rule")])
def test_a_wrong_port_is_told_what_that_port_is(port: int, says: str) -> None:
    result = check_ambient_outbound_port(port)
    assert result.status == "incorrect"
    assert says in result.feedback
    assert "15001" not in shown(result)
    assert "15001" in result.solution


def test_the_app_sees_the_real_client_not_127_0_0_6() -> None:
    assert check_ambient_app_sees_source("10.244.0.13").correct
    sidecar = check_ambient_app_sees_source("127.0.0.6")
    assert not sidecar.correct and "sidecar" in sidecar.feedback
    own = check_ambient_app_sees_source("10.244.0.12")
    assert "details' own address" in own.feedback
    for result in (sidecar, own):
        assert "10.244.0.13" not in shown(result)
        assert "10.244.0.13" in result.answer_block


def test_the_loop_condition_is_judged_by_walking_without_it() -> None:
    right = check_ztunnel_loop_condition("-m mark ! --mark 0x539/0xfff")
    assert right.correct and "ztunnel:15001 -> OUTPUT -> ISTIO_OUTPUT -> ztunnel:15001" in \
        right.feedback
    assert check_ztunnel_loop_condition("-A ISTIO_OUTPUT -m mark ! --mark 0x539/0xfff").correct
    other = check_ztunnel_loop_condition("! -d 127.0.0.1/32")
    assert other.status == "incorrect" and "still leaves" in other.feedback
    assert "0x539" not in shown(other)


def test_removing_the_whole_redirect_rule_is_no_loop_and_says_why() -> None:
    rule = "! -d 127.0.0.1/32 -p tcp -m mark ! --mark 0x539/0xfff -j REDIRECT --to-ports 15001"
    result = check_ztunnel_loop_condition(rule)
    assert result.status == "incorrect"
    assert "whole rule" in result.feedback and "not through ztunnel" in result.feedback


def test_a_condition_no_rule_has_is_refused_without_naming_the_answer() -> None:
    result = check_ztunnel_loop_condition("-m foo")
    assert result.status == "invalid"
    assert "0x539" not in str(result)


@pytest.mark.parametrize("piece", REPLY_PATH)
def test_every_piece_of_the_reply_path_is_a_right_answer(piece: str) -> None:
    result = check_reply_path_piece(piece)
    assert result.correct, str(result)
    assert "leaves by eth0" in result.feedback
    assert "'delivered'" in result.feedback  # the outbound call does not need it


def test_the_ip_rule_without_its_preference_is_the_same_rule() -> None:
    assert check_reply_path_piece("ip rule add fwmark 0x111/0xfff lookup 100").correct


def test_a_rule_off_the_reply_path_still_completes_and_hides_the_answer() -> None:
    result = check_reply_path_piece("! -d 127.0.0.1/32 -o lo -j ACCEPT")
    assert result.status == "incorrect"
    assert "still completes" in result.feedback
    text = shown(result)
    for word in ("CONNMARK", "fwmark", "ip rule", "table 100"):
        assert word not in text
    assert all(piece in result.solution for piece in REPLY_PATH)


def test_the_hint_ladder_climbs_on_each_wrong_try() -> None:
    first = check_reply_path_piece("! -d 127.0.0.1/32 -o lo -j ACCEPT")
    second = check_reply_path_piece("! -d 127.0.0.1/32 -o lo -j ACCEPT")
    assert (first.hint_number, second.hint_number) == (1, 2)
    assert first.hint != second.hint

