"""Every "predict, then check" checker, run against its solution and against wrong answers.

The solutions live apart from the exercises, in ``notebooks/solutions/NN-name.py`` (one
``ANSWERS`` dict per lesson). A checker must accept the solution, reject a plausible wrong
answer with feedback and a hint, say "your turn" for the notebook's placeholder ``None``, and
turn unreadable input into an ``"invalid"`` result instead of raising.
"""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

import pytest

from meshlab import exercises
from meshlab.exercises import EXERCISES, CheckResult

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
    "check_injection_labels": [{"istio-injection": "true"}, {}],
    "check_exclude_inbound_annotation": [
        {"traffic.sidecar.istio.io/includeInboundPorts": ""},
        {"traffic.sidecar.istio.io/excludeOutboundPorts": "9091"},
    ],
    "check_proxy_port_flag": [15001, 15006],
    "check_first_chain": ["INPUT", "ISTIO_IN_REDIRECT"],
    "check_bypass_rule": ["-p tcp -j RETURN", "-p tcp --dport 8081 -j DROP",
                          "-p tcp --dport 9091 -j RETURN"],
    "check_reply_source": ["10.244.0.5:15006", "127.0.0.1:15006"],
    "check_inbound_capture_port": [15001, 9080],
    "check_app_sees_source": ["10.244.0.9", "127.0.0.1"],
    "check_bypass_port": [9080, 8081],
    "check_proxy_exempt_rule": [1, 9],
    "check_outbound_cluster": ["PassthroughCluster", "inbound|9080||"],
    "check_loop_rules": [["-m owner --uid-owner 1337 -j RETURN"],
                         "-s 127.0.0.6/32 -o lo -j RETURN"],
    "check_inbound_loop_rule": ["-m owner --uid-owner 1337 -j RETURN",
                                "-d 127.0.0.1/32 -j RETURN"],
    "check_loop_port_exhaustion": [65535, 1024],
    "check_exclude_cidr": ["10.0.0.0/8", "0.0.0.0/0"],
    "check_uid_1337_proxied": [True],
    "check_debug_dump": [9080, 3306],
    "check_upstream_counter": [4, 9],
    "check_nat_counts_connections": [10, 0],
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
    "check_uid_1337_proxied": "maybe",
    "check_debug_dump": -1,
    "check_upstream_counter": 1.5,
    "check_nat_counts_connections": [1],
}

NAMES = [e.checker.__name__ for e in EXERCISES]


def test_every_exercise_has_a_solution_and_wrong_answers() -> None:
    assert set(SOLUTIONS) == set(NAMES)
    assert set(WRONG) == set(NAMES)
    assert set(UNREADABLE) == set(NAMES)


def test_every_notebook_from_01_has_two_exercises_and_uses_them() -> None:
    by_notebook: dict[str, list[str]] = {}
    for exercise in EXERCISES:
        by_notebook.setdefault(exercise.notebook, []).append(exercise.checker.__name__)
    assert sorted(by_notebook) == ["01-injection", "02-iptables-in-a-pod", "03-inbound",
                                   "04-outbound", "05-the-loop", "06-edge-cases",
                                   "07-real-kernel"]
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


@pytest.mark.parametrize(("name", "answer"),
                         [(n, a) for n in NAMES for a in WRONG[n]],
                         ids=lambda v: v if isinstance(v, str) and v.startswith("check_") else None)
def test_wrong_answer_is_rejected_with_feedback_and_hint(name: str, answer: Any) -> None:
    result = getattr(exercises, name)(answer)
    assert result.status == "incorrect", str(result)
    assert not result.correct
    assert result.feedback and result.hint
    assert "Hint:" in str(result)


@pytest.mark.parametrize("name", NAMES)
def test_placeholder_none_asks_for_an_answer(name: str) -> None:
    result = getattr(exercises, name)(None)
    assert result.status == "unanswered"
    assert "Replace None" in result.feedback
    assert result.hint


@pytest.mark.parametrize("name", NAMES)
def test_unreadable_answer_is_a_message_not_a_traceback(name: str) -> None:
    result = getattr(exercises, name)(UNREADABLE[name])
    assert result.status == "invalid", str(result)
    assert result.feedback


def test_other_right_answers_are_accepted_because_the_model_decides() -> None:
    """No stored answer: every answer the model agrees with is right."""
    assert exercises.check_bypass_port(15090).correct
    assert exercises.check_bypass_port(15008).correct
    assert exercises.check_bypass_port("15020").correct
    assert exercises.check_injection_labels({"istio.io/rev": "default"}).correct
    assert exercises.check_exclude_cidr("192.168.10.20/32").correct
    assert exercises.check_bypass_rule("-A ISTIO_INBOUND -p tcp -m tcp --dport 8081 -j RETURN"
                                       ).correct
    assert exercises.check_first_chain("istio_inbound").correct


def test_result_renders_as_text_and_html_without_colour_alone() -> None:
    right = exercises.check_inbound_capture_port(15006)
    wrong = exercises.check_inbound_capture_port(15001)
    assert str(right).startswith("✔ Correct (exercise 03.1)")
    assert str(wrong).startswith("✘ Not quite (exercise 03.1)")
    html = wrong._repr_html_()
    assert "meshlab-check-incorrect" in html and "Hint:" in html and "dashed" in html
    assert "<script" not in html
    # deterministic: the stored notebook outputs are compared by nbval
    assert exercises.check_inbound_capture_port(15001)._repr_html_() == html
