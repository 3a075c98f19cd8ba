"""Every "predict, then check" checker, run against its solution and against wrong answers.

The solutions live apart from the exercises, in ``notebooks/solutions/NN-name.py`` (one
``ANSWERS`` dict per lesson). A checker must accept the solution, reject a plausible wrong
answer with feedback about *that* answer and the next hint of its ladder, never show the
right answer outside the collapsed "Show the answer" block, say "your turn" for the
notebook's placeholder ``None``, and turn unreadable input into an ``"invalid"`` result
instead of raising.
"""

from __future__ import annotations

import re
import runpy
from pathlib import Path
from typing import Any

import pytest

import meshlab
from meshlab import exercises
from meshlab.exercises import EXERCISES, CheckResult
from meshlab.exercises.answers import reset_tries
from meshlab.exercises.result import ANSWER_MARKER, answer_marker
from meshlab.i18n import tr

SOLUTIONS_DIR = Path(__file__).resolve().parent.parent / "notebooks" / "solutions"
NOTEBOOKS_DIR = SOLUTIONS_DIR.parent


def _solutions() -> dict[str, tuple[str, Any]]:
    """checker name -> (notebook, answer), from every solutions file."""
    found: dict[str, tuple[str, Any]] = {}
    for path in sorted(SOLUTIONS_DIR.glob("[0-9][0-9]-*.py")):
        answers = runpy.run_path(str(path))["ANSWERS"]
        for name, answer in answers.items():
            assert name not in found, f"{name} is solved twice"
            found[name] = (path.stem, answer)
    return found


SOLUTIONS = _solutions()

#: Plausible wrong answers: what a learner who half-understood would write.
WRONG: dict[str, list[Any]] = {
    "check_injection_labels": [{"istio-injection": "true"}, {}, {"sidecar.istio.io/inject": "true"}],
    "check_exclude_inbound_annotation": [
        {"traffic.sidecar.istio.io/includeInboundPorts": ""},
        {"traffic.sidecar.istio.io/excludeOutboundPorts": "9091"},
        {"sidecar.istio.io/inject": "false"},
    ],
    "check_proxy_port_flag": [15001, 15006, 9080],
    "check_first_chain": ["INPUT", "ISTIO_IN_REDIRECT", "ISTIO_OUTPUT", "istio_inbound"],
    "check_bypass_rule": ["-p tcp -j RETURN", "-p tcp --dport 8081 -j DROP",
                          "-p tcp --dport 9091 -j RETURN"],
    "check_reply_source": ["10.244.0.5:15006", "127.0.0.1:15006", "10.244.0.9:43210"],
    "check_inbound_capture_port": [15001, 9080, 15008],
    "check_app_sees_source": ["10.244.0.9", "127.0.0.1", "10.244.0.5"],
    "check_bypass_port": [9080, 8081, 15006],
    "check_proxy_exempt_rule": [1, 9, 3, 42],
    "check_outbound_cluster": ["PassthroughCluster", "inbound|9080||", "outbound|9080||reviews"],
    "check_loop_rules": [["-m owner --uid-owner 1337 -j RETURN"],
                         "-s 127.0.0.6/32 -o lo -j RETURN",
                         ["-m owner --gid-owner 1337 -j RETURN"]],
    "check_inbound_loop_rule": ["-m owner --uid-owner 1337 -j RETURN",
                                "-d 127.0.0.1/32 -j RETURN", "-j ISTIO_REDIRECT"],
    "check_loop_port_exhaustion": [65535, 1024, 60999],
    "check_exclude_cidr": ["10.0.0.0/8", "0.0.0.0/0", "192.168.10.21/32"],
    "check_uid_1337_proxied": [
        {"proxied": True, "rule": "-j ISTIO_REDIRECT"},
        {"proxied": False, "rule": "-o lo -m owner ! --uid-owner 1337 -j RETURN"},
        {"proxied": True, "rule": 9},
    ],
    "check_debug_dump": [9080, 3306, 15006],
    "check_upstream_counter": [4, 9, 2],
    "check_nat_counts_connections": [10, 0, 2],
    "check_ambient_outbound_port": [15008, 15006, 9080],
    "check_ambient_app_sees_source": ["127.0.0.6", "10.244.0.12", "127.0.0.1"],
    "check_ztunnel_loop_condition": ["! -d 127.0.0.1/32",
                                     "! -d 127.0.0.1/32 -p tcp -m mark ! --mark 0x539/0xfff "
                                     "-j REDIRECT --to-ports 15001",
                                     "-m mark --mark 0x111/0xfff"],
    "check_reply_path_piece": ["! -d 127.0.0.1/32 -o lo -j ACCEPT",
                               "-p tcp -m mark --mark 0x111/0xfff -j ACCEPT",
                               "! -d 127.0.0.1/32 -p tcp -m tcp ! --dport 15008 -m mark ! "
                               "--mark 0x539/0xfff -j REDIRECT --to-ports 15006"],
}

#: What each right answer looks like in text (regular expressions): none of it may appear
#: outside the answer block of a wrong answer's result, unless the learner wrote it.
ANSWER_TEXT: dict[str, list[str]] = {
    "check_injection_labels": [r"\benabled\b", r"istio\.io/rev"],
    "check_exclude_inbound_annotation": [r"excludeInboundPorts"],
    "check_proxy_port_flag": [r"15999"],
    "check_first_chain": [r"ISTIO_INBOUND\b"],
    "check_bypass_rule": [r"--dport 8081 -j RETURN"],
    "check_reply_source": [r"10\.244\.0\.5:9080"],
    "check_inbound_capture_port": [r"15006"],
    "check_app_sees_source": [r"127\.0\.0\.6"],
    "check_bypass_port": [r"15090", r"15021", r"15020", r"15008"],
    "check_proxy_exempt_rule": [r"\brule 4\b"],
    "check_outbound_cluster": [r"reviews\.default\.svc"],
    "check_loop_rules": [r"--uid-owner 1337 -j RETURN", r"--gid-owner 1337 -j RETURN"],
    "check_loop_port_exhaustion": [r"28232"],
    "check_inbound_loop_rule": [r"127\.0\.0\.6"],
    "check_exclude_cidr": [r"192\.168\.10\.0/24", r"192\.168\.0\.0/16",
                           r"192\.168\.10\.20/32"],
    "check_uid_1337_proxied": [r"--uid-owner 1337 -j RETURN", r"\brule 4\b"],
    "check_debug_dump": [r"15001"],
    "check_upstream_counter": [r"\brule 1\b"],
    "check_nat_counts_connections": [r"(?<![\w.])(?<!Hint )(?<!힌트 )1(?![\w.])"],
    "check_ambient_outbound_port": [r"15001"],
    "check_ambient_app_sees_source": [r"10\.244\.0\.13"],
    "check_ztunnel_loop_condition": [r"!\s*--mark 0x539"],
    "check_reply_path_piece": [r"CONNMARK", r"fwmark", r"ip rule", r"ip route", r"table 100"],
}

#: Answers of the wrong shape: each checker must say so, not raise.
UNREADABLE: dict[str, Any] = {
    "check_injection_labels": "istio-injection=enabled",
    "check_exclude_inbound_annotation": ["9091"],
    "check_proxy_port_flag": "fifteen thousand",
    "check_first_chain": 42,
    "check_bypass_rule": "-p tcp --dprt 8081 -j RETURN",
    "check_reply_source": "10.244.0.5",
    "check_inbound_capture_port": 70000,
    "check_app_sees_source": "localhost",
    "check_bypass_port": True,
    "check_proxy_exempt_rule": "four",
    "check_outbound_cluster": 9080,
    "check_loop_rules": ["-m owner --uid-owner 1337 -j RETURN", "-j NOPE"],
    "check_inbound_loop_rule": "-s 127.0.0.7/32 -o lo -j RETURN",
    "check_loop_port_exhaustion": "many",
    "check_exclude_cidr": "192.168.0.0/33",
    "check_uid_1337_proxied": True,
    "check_debug_dump": -1,
    "check_upstream_counter": 1.5,
    "check_nat_counts_connections": [1],
    "check_ambient_outbound_port": "15001/tcp",
    "check_ambient_app_sees_source": "reviews-v2",
    "check_ztunnel_loop_condition": "-m nomatch",
    "check_reply_path_piece": "-j NOPE",
}

NAMES = [e.checker.__name__ for e in EXERCISES]


@pytest.fixture(autouse=True)
def _fresh_hint_ladders() -> None:
    """Each test starts every exercise at the first rung of its hint ladder."""
    reset_tries()


def _outside_answer_block(result: CheckResult) -> tuple[str, str]:
    """(plain text, HTML) of what a learner sees without opening "Show the answer" (in the
    language the library speaks now)."""
    text = str(result).split(answer_marker())[0]
    html = re.sub(r"<details.*?</details>", "", result._repr_html_(), flags=re.S)
    return text, html


def _assert_the_answer_is_hidden(name: str, answer: Any, result: CheckResult) -> None:
    """Outside the collapsed answer block, nothing names the answer (unless the learner's own
    answer already did)."""
    text, html = _outside_answer_block(result)
    learner_wrote = str(answer)
    for pattern in ANSWER_TEXT[name]:
        if re.search(pattern, learner_wrote):
            continue
        for shown in (text, html):
            found = re.search(pattern, shown)
            assert found is None, f"{name}({answer!r}) shows {found.group()!r}:\n{shown}"


def test_every_exercise_has_a_solution_and_wrong_answers() -> None:
    assert set(SOLUTIONS) == set(NAMES)
    assert set(WRONG) == set(NAMES)
    assert set(UNREADABLE) == set(NAMES)
    assert set(ANSWER_TEXT) == set(NAMES)
    assert len(NAMES) >= 19
    assert len({e.id for e in EXERCISES}) == len(NAMES)


def test_every_notebook_from_01_has_two_exercises_and_uses_them() -> None:
    by_notebook: dict[str, list[str]] = {}
    for exercise in EXERCISES:
        by_notebook.setdefault(exercise.notebook, []).append(exercise.checker.__name__)
    assert sorted(by_notebook) == ["01-injection", "02-iptables-in-a-pod", "03-inbound",
                                   "04-outbound", "05-the-loop", "06-edge-cases",
                                   "07-real-kernel", "08-ambient"]
    for notebook, names in by_notebook.items():
        assert len(names) >= 2, notebook
        assert (SOLUTIONS_DIR / f"{notebook}.py").exists()
        path = NOTEBOOKS_DIR / f"{notebook}.ipynb"
        if path.exists():
            text = path.read_text(encoding="utf-8")
            for name in names:
                assert f"{name}(answer)" in text, f"{notebook} does not call {name}"
        for name in names:
            assert SOLUTIONS[name][0] == notebook, f"{name} is solved in the wrong file"


@pytest.mark.parametrize("name", NAMES)
def test_solution_is_correct(name: str) -> None:
    result = getattr(exercises, name)(SOLUTIONS[name][1])
    assert isinstance(result, CheckResult)
    assert result.status == "correct", str(result)
    assert result.correct
    assert result.feedback
    assert result.model, "a checker shows the model's evidence"
    assert result.exercise == getattr(exercises, name).exercise


@pytest.mark.parametrize(("name", "answer"),
                         [(n, a) for n in NAMES for a in WRONG[n]],
                         ids=lambda v: v if isinstance(v, str) and v.startswith("check_") else None)
def test_wrong_answer_gets_feedback_and_a_hint_but_not_the_answer(name: str, answer: Any) -> None:
    result = getattr(exercises, name)(answer)
    assert result.status == "incorrect", str(result)
    assert not result.correct
    assert result.feedback and result.hint and result.hint_number == 1
    assert result.solution, "the answer is there, in the collapsed block"
    text, html = _outside_answer_block(result)
    assert "Hint 1:" in text and "Hint 1:" in html
    assert ANSWER_MARKER in str(result)
    assert "<summary>Show the answer</summary>" in result._repr_html_()
    assert result.solution in str(result).split(ANSWER_MARKER)[1]
    _assert_the_answer_is_hidden(name, answer, result)


@pytest.mark.parametrize("name", NAMES)
def test_no_hint_names_the_answer(name: str) -> None:
    hints = getattr(exercises, name).hints
    assert len(hints) >= 2, "a ladder has more than one rung"
    assert len(set(hints)) == len(hints)
    for hint in hints:
        for pattern in ANSWER_TEXT[name]:
            assert re.search(pattern, hint) is None, f"{name}'s hint names the answer: {hint}"


@pytest.mark.parametrize("name", NAMES)
def test_each_wrong_try_climbs_the_hint_ladder(name: str) -> None:
    check = getattr(exercises, name)
    answers = WRONG[name]
    first = check(answers[0])
    second = check(answers[1 % len(answers)])
    assert second.hint != first.hint
    assert (first.hint_number, second.hint_number) == (1, 2)
    for _ in range(len(check.hints) + 2):  # the last rung stays
        last = check(answers[0])
    assert last.hint == check.hints[-1]
    reset_tries(check.exercise)
    assert check(answers[0]).hint == check.hints[0]


def test_ladders_are_kept_per_exercise() -> None:
    exercises.check_inbound_capture_port(15001)
    exercises.check_inbound_capture_port(9080)
    assert exercises.check_app_sees_source("10.244.0.9").hint_number == 1
    assert exercises.check_inbound_capture_port(15001).hint_number == 3


@pytest.mark.parametrize("name", NAMES)
def test_placeholder_none_asks_for_an_answer(name: str) -> None:
    result = getattr(exercises, name)(None)
    assert result.status == "unanswered"
    assert "Replace None" in result.feedback
    assert not result.solution and ANSWER_MARKER not in str(result)


@pytest.mark.parametrize("name", NAMES)
def test_unreadable_answer_is_a_message_not_a_traceback(name: str) -> None:
    result = getattr(exercises, name)(UNREADABLE[name])
    assert result.status == "invalid", str(result)
    assert result.feedback
    assert "Traceback" not in str(result)


def test_other_right_answers_are_accepted_because_the_model_decides() -> None:
    """No stored answer: every answer the model agrees with is right."""
    assert exercises.check_bypass_port(15090).correct
    assert exercises.check_bypass_port(15008).correct
    assert exercises.check_bypass_port("15020").correct
    assert exercises.check_injection_labels({"istio.io/rev": "default"}).correct
    assert exercises.check_exclude_cidr("192.168.10.20/32").correct
    assert exercises.check_bypass_rule("-A ISTIO_INBOUND -p tcp -m tcp --dport 8081 -j RETURN"
                                       ).correct
    assert exercises.check_uid_1337_proxied({"proxied": "no", "rule": 4}).correct


def test_chain_names_are_case_sensitive() -> None:
    result = exercises.check_first_chain("istio_inbound")
    assert not result.correct
    assert "case-sensitive" in result.feedback


def test_an_include_list_is_right_and_the_text_says_what_it_really_does() -> None:
    result = exercises.check_exclude_inbound_annotation(
        {"traffic.sidecar.istio.io/includeInboundPorts": "9080"})
    assert result.correct
    assert "RETURN" not in result.feedback, "no RETURN is written for 9091 with -b 9080"
    assert "falls through" in result.feedback and "trade-off" in result.note


def test_accept_instead_of_return_is_right_and_not_called_the_same_rule() -> None:
    result = exercises.check_bypass_rule("-p tcp --dport 8081 -j ACCEPT")
    assert result.correct
    assert "exactly" not in result.feedback
    assert "-p tcp -m tcp --dport 8081 -j RETURN" in result.feedback
    exact = exercises.check_bypass_rule("-p tcp --dport 8081 -j RETURN")
    assert "exactly the rule istio-iptables writes" in exact.feedback


def test_a_loop_with_a_rule_too_many_is_right_but_not_minimal() -> None:
    extra = [*SOLUTIONS["check_loop_rules"][1], "-s 127.0.0.6/32 -o lo -j RETURN"]
    result = exercises.check_loop_rules(extra)
    assert result.correct
    assert "not minimal" in result.note and "127.0.0.6" in result.note
    assert not exercises.check_loop_rules(SOLUTIONS["check_loop_rules"][1]).note


def test_a_bare_yes_or_no_is_not_enough_for_06_2() -> None:
    result = exercises.check_uid_1337_proxied(False)
    assert result.status == "invalid"
    assert "reason" in result.feedback


def test_multi_line_messages_keep_their_layout_in_html() -> None:
    caret = exercises.check_bypass_rule("-p tcp --dprt 8081 -j RETURN")
    assert caret.status == "invalid"
    html = caret._repr_html_()
    assert re.search(r"<pre[^>]*>[^<]*\^", html), "the caret sits under the token, in <pre>"
    rules = exercises.check_inbound_loop_rule("-s 127.0.0.7/32 -o lo -j RETURN")
    body = re.search(r"<pre[^>]*>(.*?)</pre>", rules._repr_html_(), re.S)
    assert body is not None and body.group(1).count("\n") >= 10, "one rule per line"


def test_no_python_reprs_in_feedback() -> None:
    for name in NAMES:
        for answer in WRONG[name]:
            result = getattr(exercises, name)(answer)
            shown, _ = _outside_answer_block(result)
            assert not re.search(r"\[\d+(, \d+)*\]", shown), shown


def test_result_renders_as_text_and_html_without_colour_alone() -> None:
    right = exercises.check_inbound_capture_port(15006)
    wrong = exercises.check_inbound_capture_port(15001)
    assert str(right).startswith("✔ Correct (exercise 03.1)")
    assert str(wrong).startswith("✘ Not quite (exercise 03.1)")
    html = wrong._repr_html_()
    assert "meshlab-check-incorrect" in html and "Hint 1:" in html and "dashed" in html
    assert "<script" not in html
    # deterministic once the ladder is reset: the stored outputs are compared by nbval
    reset_tries()
    assert exercises.check_inbound_capture_port(15001)._repr_html_() == html


HANGUL = re.compile(r"[\uac00-\ud7a3]")


@pytest.fixture
def korean() -> Any:
    """The checkers speak Korean for one test (``meshlab.set_language("ko")``)."""
    meshlab.set_language("ko")
    yield
    meshlab.set_language("en")


@pytest.mark.parametrize("name", NAMES)
def test_the_solution_is_confirmed_in_korean(name: str, korean: None) -> None:
    result = getattr(exercises, name)(SOLUTIONS[name][1])
    assert result.correct, str(result)
    assert str(result).startswith("✔ 맞았습니다") and HANGUL.search(result.feedback), str(result)


@pytest.mark.parametrize(("name", "answer"),
                         [(n, a) for n in NAMES for a in WRONG[n]],
                         ids=lambda v: v if isinstance(v, str) and v.startswith("check_") else None)
def test_a_wrong_answer_is_answered_in_korean_without_the_answer(name: str, answer: Any,
                                                                  korean: None) -> None:
    """The feedback, the hint and the answer block are Korean, and the answer stays in the
    collapsed block, as in English."""
    result = getattr(exercises, name)(answer)
    assert result.status == "incorrect", str(result)
    for part in (result.feedback, result.hint, result.solution):
        assert HANGUL.search(part), f"{name}({answer!r}) is not Korean: {part!r}"
    assert "힌트 1:" in str(result) and answer_marker() in str(result)
    assert "<summary>답 보기</summary>" in result._repr_html_()
    _assert_the_answer_is_hidden(name, answer, result)


@pytest.mark.parametrize("name", NAMES)
def test_korean_hints_do_not_name_the_answer_either(name: str, korean: None) -> None:
    for hint in getattr(exercises, name).hints:
        korean_hint = tr(hint)
        assert HANGUL.search(korean_hint), f"{name}: no Korean for the hint {hint!r}"
        for pattern in ANSWER_TEXT[name]:
            assert re.search(pattern, korean_hint) is None, (
                f"{name}'s Korean hint names the answer: {korean_hint}")


@pytest.mark.parametrize("name", NAMES)
def test_an_unreadable_answer_is_explained_in_korean(name: str, korean: None) -> None:
    result = getattr(exercises, name)(UNREADABLE[name])
    assert result.status == "invalid" and HANGUL.search(result.hint), str(result)
