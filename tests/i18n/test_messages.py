"""Every message the library shows a learner has a Korean translation that says the same.

The messages are found in the source, not listed by hand: the literal first argument of each
``tr(...)`` and ``translatable(...)`` call, and the arguments that are messages by their place
(:data:`MESSAGE_ARGUMENTS`: an exercise's ``what`` and hints). Each must be in the Korean
catalog (``meshlab/data/messages/ko``),
with the same ``{placeholders}``, the same `code spans` and the same numbers, in Hangul; the
catalog holds nothing the code no longer says. Then every checker's frame is read in Korean.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import meshlab
from meshlab.errors import MeshlabError
from meshlab.exercises import EXERCISES
from meshlab.exercises.answers import reset_tries
from meshlab.i18n import catalog, language, tr

PACKAGE = Path(meshlab.__file__).resolve().parent
HANGUL = re.compile(r"[\uac00-\ud7a3]")
PLACEHOLDER = re.compile(r"\{[^{}]*\}")
CODE_SPAN = re.compile(r"`[^`]+`")
NUMBER = re.compile(r"0x[0-9a-fA-F]+|\d+(?:[.:/]\d+)*")


def _name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def _literal(node: ast.expr, where: str) -> str:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    raise AssertionError(f"{where}: a message must be a plain string literal (the template), "
                         f"not {ast.unparse(node)!r}; pass values as keywords")


#: Functions some of whose arguments are messages, shown through tr() inside them:
#: name -> (positions, keywords). A keyword's value may be a tuple of literals.
MESSAGE_ARGUMENTS: dict[str, tuple[tuple[int, ...], tuple[str, ...]]] = {
    "checker": ((1,), ("what", "hints")),
    "read_string": ((1,), ("what",)),
    "read_strings": ((1,), ("what",)),
}


def _arguments(node: ast.Call, name: str) -> Iterator[ast.expr]:
    positions, keywords = MESSAGE_ARGUMENTS[name]
    values = [node.args[i] for i in positions if i < len(node.args)]
    values += [k.value for k in node.keywords if k.arg in keywords]
    for value in values:
        yield from value.elts if isinstance(value, (ast.Tuple, ast.List)) else (value,)


def messages() -> Iterator[tuple[str, str]]:
    """(where, English text) for every message the package marks for translation."""
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            where = f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
            name = _name(node.func)
            if name in MESSAGE_ARGUMENTS:
                for argument in _arguments(node, name):
                    if not isinstance(argument, ast.Name):  # a name passes a message on
                        yield where, _literal(argument, where)
                continue
            if not node.args or name not in ("tr", "translatable"):
                continue
            first = node.args[0]
            if name == "tr" and not isinstance(first, (ast.Constant, ast.JoinedStr)):
                continue  # a value marked translatable() where it was written
            yield where, _literal(first, where)


MESSAGES = dict((text, where) for where, text in messages())


def test_the_library_marks_its_messages() -> None:
    assert "Hint {n}" in MESSAGES, "tr()/translatable() messages were not found"


@pytest.mark.parametrize("english", sorted(MESSAGES), ids=lambda text: text[:60])
def test_every_message_has_a_korean_translation_that_says_the_same(english: str) -> None:
    where = MESSAGES[english]
    korean = catalog("ko").get(english)
    assert korean is not None, (f"{where}: no Korean for {english!r}; add it to "
                                "meshlab/data/messages/ko/<area>-<module>.yaml")
    for what, pattern in (("placeholders", PLACEHOLDER), ("code spans", CODE_SPAN),
                          ("numbers", NUMBER)):
        assert sorted(set(pattern.findall(korean))) == sorted(set(pattern.findall(english))), (
            f"{where}: the Korean of {english!r} has other {what}: {korean!r}")
    if re.search(r"[A-Za-z]{3,}", PLACEHOLDER.sub("", CODE_SPAN.sub("", english))):
        assert HANGUL.search(korean), f"{where}: {korean!r} is not Korean"


def test_the_catalog_holds_only_what_the_code_says() -> None:
    stale = sorted(set(catalog("ko")) - set(MESSAGES))
    assert not stale, f"Korean entries for texts the code no longer has: {stale}"


@pytest.fixture
def korean() -> Iterator[None]:
    meshlab.set_language("ko")
    reset_tries()
    try:
        yield
    finally:
        meshlab.set_language("en")
        reset_tries()


def test_set_language_refuses_what_meshlab_does_not_speak() -> None:
    with pytest.raises(MeshlabError, match="'en', 'ko'"):
        meshlab.set_language("fr")
    assert language() == "en"


def test_english_is_the_default_and_values_fill_in_after_the_lookup(korean: None) -> None:
    assert language() == "ko"
    meshlab.set_language("en")
    assert tr("Hint {n}", n=2) == "Hint 2"


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda e: e.id)
def test_every_checker_frames_its_result_in_korean(exercise, korean: None) -> None:
    """The verdict's title, and the "your turn" of an unanswered exercise, are Korean."""
    unanswered = exercise.checker(None)
    assert str(unanswered).startswith("✎ 직접 해 보세요 (연습 문제 "), str(unanswered)
    assert "None을 내 답으로 바꾸고" in unanswered.feedback
    unreadable = exercise.checker(object())
    assert unreadable.status == "invalid" and "읽을 수 없습니다" in str(unreadable)
