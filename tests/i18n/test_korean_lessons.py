"""The Korean lessons say what the English ones say, and are built from them.

``notebooks/ko/*.ipynb`` are built by ``i18n/lessons.py`` from the English notebooks and the
per-cell translations in ``i18n/ko/``. These tests fail when an English markdown cell has no
translation, when a translation was made from an older English text, when a Korean cell
states other code or numbers than its English cell, and when a committed Korean notebook is
not what the builder makes of today's English one (``make notebooks`` rebuilds and executes).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from i18n import lessons as builder

#: The lessons with a Korean catalog (``python -m i18n.lessons status`` names the others).
LESSONS = builder.translated_lessons()


def _notebook_cells(notebook: dict) -> list[tuple[str, str, str]]:
    return [(cell["id"], cell["cell_type"], builder.cell_source(cell))
            for cell in notebook["cells"]]


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_every_cell_is_translated_from_todays_english(lesson: Path) -> None:
    found = list(builder.problems(lesson))
    assert not found, "\n".join([*found, f"(python -m i18n.lessons todo {lesson.stem})"])


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_the_committed_korean_lesson_is_what_the_builder_makes(lesson: Path) -> None:
    korean = builder.EDITION / lesson.name
    assert korean.exists(), f"{korean} is missing: run `make notebooks`"
    committed = json.loads(korean.read_text(encoding="utf-8"))
    built = builder.build(lesson)
    assert _notebook_cells(committed) == _notebook_cells(built), (
        f"{korean.name} is not built from today's {lesson.name} and i18n/ko/{lesson.stem}.yaml:"
        " run `make notebooks`")
    assert committed["metadata"]["meshlab"] == {"language": "ko",
                                                "built_from": f"../{lesson.name}"}


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_a_korean_lesson_speaks_korean_from_its_first_code_cell(lesson: Path) -> None:
    cells = builder.build(lesson)["cells"]
    code = [cell for cell in cells if cell["cell_type"] == "code"]
    if code:
        assert code[0]["id"] == builder.SET_LANGUAGE_ID
        assert 'meshlab.set_language("ko")' in builder.cell_source(code[0])
    assert not any("../data/" in builder.cell_source(c).replace("../../data/", "")
                   for c in code), "a path still points at notebooks/../data"


def test_the_korean_edition_holds_exactly_the_translated_lessons() -> None:
    english = {lesson.name for lesson in LESSONS}
    korean = {path.name for path in builder.EDITION.glob("[0-9]*.ipynb")}
    assert korean == english


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_figures_have_every_glyph(lesson: Path) -> None:
    """Korean text in a figure needs a font with Hangul: matplotlib warns of each missing
    glyph, and the box it draws instead is a defect."""
    korean = builder.EDITION / lesson.name
    text = korean.read_text(encoding="utf-8") if korean.exists() else ""
    assert not re.search(r"Glyph \d+ .{0,80}missing from (current )?font", text)


# The checks themselves, on cells made for the purpose.

MARKDOWN = {"id": "c1", "cell_type": "markdown", "metadata": {},
            "source": "Envoy listens on `15006`; steps 1-8 run through `ISTIO_INBOUND`."}
GOOD = "Envoy는 `15006`에서 기다립니다. 1-8단계는 `ISTIO_INBOUND`를 지납니다."


def _translation(text: str, *, english: str = MARKDOWN["source"]) -> builder.Translation:
    return builder.Translation(builder.source_hash(english), text)


def test_a_faithful_translation_has_no_problems() -> None:
    assert builder.cell_problems(MARKDOWN, _translation(GOOD)) == []


def test_a_translation_of_an_older_english_text_is_stale() -> None:
    older = _translation(GOOD, english="Envoy listens on `15006`.")
    assert "older English text" in builder.cell_problems(MARKDOWN, older)[0]


@pytest.mark.parametrize(("korean", "complaint"), [
    (GOOD.replace("`15006`", "`15001`"), "code spans differ"),
    (GOOD.replace("1-8", "1-9"), "numbers differ"),
    ("Envoy listens on `15006`; steps 1-8 run through `ISTIO_INBOUND`.", "not in Korean"),
    (GOOD + " [다음](99-nowhere.ipynb)", "does not resolve"),
])
def test_a_translation_that_says_something_else_is_refused(korean: str, complaint: str) -> None:
    found = builder.cell_problems(MARKDOWN, _translation(korean))
    assert any(complaint in problem for problem in found), found


def test_a_code_cell_may_translate_its_comments_only() -> None:
    cell = {"id": "c2", "cell_type": "code", "metadata": {}, "outputs": [],
            "execution_count": None,
            "source": "answer = None  # your prediction: a port\ncheck(answer)"}
    comments = "answer = None  # 예측한 포트\ncheck(answer)"
    assert builder.cell_problems(cell, _translation(comments, english=cell["source"])) == []
    other = "answer = 15006  # 예측한 포트\ncheck(answer)"
    assert builder.cell_problems(cell, _translation(other, english=cell["source"]))
