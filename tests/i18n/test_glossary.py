"""The glossary (lesson 09) covers the course's terms and the article's steps, and its links land.

``notebooks/09-glossary.ipynb`` has a term table (English | 한국어 | meaning | first lesson) and a
table of the article's steps 1-15 with links to the lesson sections that show each step. The
Korean glossary is built from ``i18n/ko/09-glossary.yaml`` by ``i18n/lessons.py``. These tests
check that every step is in the step table once, that every lesson link points at an existing
notebook and, with an anchor, at a heading of that notebook (the Korean glossary's anchors at
the *Korean* headings, from ``i18n/ko/<lesson>.yaml``), and that every term of the Korean
edition's term list that the lessons use is in the glossary, in both editions.

An anchor is what JupyterLab gives a heading: its rendered text (inline code without the
backticks) with each space replaced by ``-``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from i18n import lessons as builder

GLOSSARY = builder.NOTEBOOKS / "09-glossary.ipynb"
LESSONS = [lesson for lesson in builder.lessons() if lesson != GLOSSARY]

# The Korean edition's terms (COORD.md of issue 16): (English, Korean).
TERMS: tuple[tuple[str, str], ...] = (
    ("sidecar", "사이드카"), ("injection", "주입"), ("inject", "주입하다"), ("webhook", "웹훅"),
    ("pod", "파드"), ("namespace", "네임스페이스"), ("label", "라벨"),
    ("annotation", "어노테이션"), ("container", "컨테이너"), ("init container", "init 컨테이너"),
    ("native sidecar", "네이티브 사이드카"), ("proxy", "프록시"), ("chain", "체인"),
    ("rule", "규칙"), ("table", "테이블"), ("hook", "훅"), ("target", "타깃"), ("match", "매치"),
    ("jump", "점프"), ("inbound", "인바운드"), ("outbound", "아웃바운드"),
    ("redirect", "리다이렉트"), ("capture", "가로채기"), ("intercept", "가로채다"),
    ("source", "출발지"), ("destination", "목적지"), ("traffic", "트래픽"), ("packet", "패킷"),
    ("connection", "연결"), ("connection tracking", "커넥션 트래킹"), ("exemption", "예외"),
    ("loop", "루프"), ("infinite loop", "무한 루프"), ("listener", "리스너"),
    ("cluster", "클러스터"), ("application", "애플리케이션"), ("app", "앱"),
    ("peer", "상대 파드"), ("request", "요청"), ("reply", "응답"), ("owner UID", "owner UID"),
    ("ambient mode", "앰비언트 모드"), ("waypoint", "웨이포인트"), ("mark", "마크"),
    ("kernel", "커널"), ("real kernel", "실제 커널"), ("model", "모델"), ("trace", "추적"),
    ("walk", "경로"), ("scenario", "시나리오"), ("step", "단계"), ("lesson", "레슨"),
    ("exercise", "연습 문제"), ("hint", "힌트"), ("answer", "답"), ("solution", "풀이"),
    ("widget", "위젯"), ("predict", "예측하다"), ("check", "확인하다"),
)

_LINK = re.compile(r"\]\(([^)\s]+)\)")
_LESSON_LINK = re.compile(r"^(\d\d-[\w-]+\.ipynb)(?:#(.+))?$")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def _markdown(notebook: dict) -> list[str]:
    return [builder.cell_source(c) for c in notebook["cells"] if c["cell_type"] == "markdown"]


def _english() -> list[str]:
    return _markdown(builder.read_notebook(GLOSSARY))


def _korean() -> list[str]:
    return _markdown(builder.build(GLOSSARY))


EDITIONS = {"en": _english, "ko": _korean}


def anchor(heading: str) -> str:
    """The id JupyterLab gives a markdown heading (``createHeaderId``): its text content, with
    spaces replaced by '-'."""
    text = re.sub(r"`([^`]*)`", r"\1", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"\*\*|__|\\(?=[\\`*_|#])", "", text)
    return text.replace(" ", "-")


def headings(markdown: list[str]) -> set[str]:
    found = set()
    for text in markdown:
        text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
        found |= {anchor(h) for h in _HEADING.findall(text)}
    return found


def _rows(text: str) -> list[list[str]]:
    """The body rows of the markdown tables in ``text``, split into cells (``\\|`` kept)."""
    rows = []
    for line in text.splitlines():
        if not line.startswith("|") or re.match(r"^\|[-|: ]+\|$", line):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        rows.append(cells)
    return rows


def _table(markdown: list[str], first_column: tuple[str, ...]) -> list[list[str]]:
    """Every body row of the tables whose header's first cell is one of ``first_column``."""
    found = []
    for text in markdown:
        rows = _rows(text)
        header_at = [i for i, row in enumerate(rows) if row and row[0] in first_column]
        for start in header_at:
            for row in rows[start + 1:]:
                if row[0] in first_column:
                    break
                found.append(row)
    return found


def _items(cell: str) -> set[str]:
    """The names of one term cell: ``connection tracking (conntrack)`` -> both; ``매치, 매치하다``
    -> both; ``애플리케이션(앱)`` -> both."""
    return {item.strip() for item in re.split(r",|\(|\)", cell) if item.strip()}


def _uses(text: str, term: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(term)}(e?s)?(?![\w-])", text, re.I) is not None


LESSON_TEXT = {lesson.name: "\n".join(builder.cell_source(c)
                                      for c in builder.read_notebook(lesson)["cells"])
               for lesson in LESSONS}
LESSON_MARKDOWN = "\n".join("\n".join(_markdown(builder.read_notebook(lesson)))
                            for lesson in LESSONS)


# ----------------------------------------------------------------------------- the steps


@pytest.mark.parametrize("edition", EDITIONS)
def test_every_step_is_in_the_step_table_once(edition: str) -> None:
    rows = _table(EDITIONS[edition](), ("Step", "단계"))
    numbers = [row[0] for row in rows]
    assert sorted(numbers, key=int) == [str(n) for n in range(1, 16)], numbers
    assert all(len(row) == 3 and _LINK.search(row[2]) for row in rows), (
        "each step row needs: step | what happens | a link to the lesson section")


def test_the_step_table_follows_the_lessons_step_list() -> None:
    """Each row names what meshlab.lesson says the step does (a chain, a port or a rule)."""
    from meshlab.lesson import INBOUND_STEPS, OUTBOUND_STEPS

    rows = {int(row[0]): row[1] for row in _table(_english(), ("Step",))}
    for n, title, _ in INBOUND_STEPS + OUTBOUND_STEPS:
        tokens = re.findall(r"ISTIO_\w+|PREROUTING|POSTROUTING|OUTPUT|150\d\d|127\.0\.0\.6", title)
        missing = [t for t in tokens if t not in rows[n]]
        assert not missing, f"step {n} ({title!r}): the glossary row does not say {missing}"


# ----------------------------------------------------------------------------- the links


def _lesson_links(markdown: list[str]) -> list[tuple[str, str | None]]:
    links = []
    for text in markdown:
        for target in _LINK.findall(text):
            match = _LESSON_LINK.match(target.replace("\\|", "|"))
            if match:
                links.append((match[1], match[2]))
    return links


def test_the_glossary_links_lessons() -> None:
    links = _lesson_links(_english())
    assert len({name for name, _ in links}) >= 6
    assert sum(fragment is not None for _, fragment in links) >= 15


def test_every_english_link_lands_on_a_lesson_and_a_heading() -> None:
    bad = []
    for name, fragment in _lesson_links(_english()):
        target = builder.NOTEBOOKS / name
        if not target.exists():
            bad.append(f"{name}: no such lesson")
        elif fragment is not None and fragment not in headings(
                _markdown(builder.read_notebook(target))):
            bad.append(f"{name}#{fragment}: no such heading")
    assert not bad, "\n".join(bad)


KOREAN_TARGETS = sorted({name for name, _ in _lesson_links(_korean())})


@pytest.mark.parametrize("name", KOREAN_TARGETS)
def test_every_korean_link_lands_on_a_korean_lesson_and_heading(name: str) -> None:
    """The Korean glossary sits in notebooks/ko/ beside the Korean lessons, whose headings are
    translated: its anchors must be the Korean headings (from i18n/ko/<lesson>.yaml)."""
    target = builder.NOTEBOOKS / name
    assert target.exists(), f"{name}: no such lesson"
    fragments = [f for n, f in _lesson_links(_korean()) if n == name and f is not None]
    if not fragments:
        return
    if not builder.catalog_path(target).exists():
        pytest.skip(f"i18n/ko/{target.stem}.yaml is not there yet: the Korean headings of "
                    f"{name} are unknown, so the glossary's anchors {sorted(set(fragments))} "
                    "cannot be checked")
    known = headings(_markdown(builder.build(target)))
    bad = sorted({f for f in fragments if f not in known})
    assert not bad, (f"{name}: no Korean heading {bad}; its headings are "
                     f"{sorted(known)}")


def test_the_anchor_rule_is_jupyterlabs() -> None:
    assert anchor("Steps 1-8, one at a time") == "Steps-1-8,-one-at-a-time"
    assert (anchor("Envoy's side: `virtualInbound` and `inbound|9080||`")
            == "Envoy's-side:-virtualInbound-and-inbound|9080||")
    assert anchor("`ISTIO_OUTPUT`, 규칙 하나씩") == "ISTIO_OUTPUT,-규칙-하나씩"


# ----------------------------------------------------------------------------- the terms


def _term_rows(markdown: list[str]) -> list[list[str]]:
    return [row for row in _table(markdown, ("English",)) if len(row) == 4]


USED = [(en, ko) for en, ko in TERMS if _uses(LESSON_MARKDOWN, en)]


def test_the_lessons_use_most_of_the_terms() -> None:
    assert len(USED) >= 50, "the term detection finds too few terms: is the pattern broken?"


@pytest.mark.parametrize("edition", EDITIONS)
def test_every_term_the_lessons_use_is_in_the_glossary(edition: str) -> None:
    rows = _term_rows(EDITIONS[edition]())
    pairs = [(_items(row[0]), _items(row[1])) for row in rows]
    missing = [f"{en} / {ko}" for en, ko in USED
               if not any(en in english and ko in korean for english, korean in pairs)]
    assert not missing, f"not in the glossary ({edition}): {missing}"


def test_every_term_the_korean_lessons_use_is_in_the_glossary() -> None:
    catalogs = [builder.catalog_path(lesson) for lesson in LESSONS]
    present = [path for path in catalogs if path.exists()]
    if not present:
        pytest.skip("no Korean lesson translation (i18n/ko/0[0-8]-*.yaml) is there yet")
    korean_text = "\n".join(path.read_text(encoding="utf-8") for path in present)
    glossary = set().union(*(_items(row[1]) for row in _term_rows(_korean())))
    missing = [ko for _, ko in TERMS if ko in korean_text and ko not in glossary]
    assert not missing, f"the Korean lessons use terms the glossary lacks: {missing}"


@pytest.mark.parametrize("edition", EDITIONS)
def test_every_term_row_is_complete(edition: str) -> None:
    rows = _term_rows(EDITIONS[edition]())
    assert len(rows) >= 40
    for row in rows:
        assert all(row), f"an empty cell: {row}"
        if edition == "ko":
            assert re.search(r"[\uac00-\ud7a3]", row[2]), f"the meaning is not Korean: {row}"


def test_a_terms_first_lesson_uses_it() -> None:
    bad = []
    for row in _term_rows(_english()):
        links = _LINK.findall(row[3])
        assert len(links) == 1 and _LESSON_LINK.match(links[0]), row
        text = LESSON_TEXT[links[0]]
        if not any(_uses(text, item) for item in _items(row[0])):
            bad.append(f"{row[0]} is not in {links[0]}")
    assert not bad, "\n".join(bad)


def test_the_korean_glossary_keeps_the_term_columns() -> None:
    english = [row[:2] + row[3:] for row in _term_rows(_english())]
    korean = [row[:2] + row[3:] for row in _term_rows(_korean())]
    # a lesson not translated yet is linked in English, one folder up
    assert english == [[cell.replace("](../", "](") for cell in row] for row in korean]


def test_the_glossary_is_a_lesson_like_the_others() -> None:
    notebook = builder.read_notebook(GLOSSARY)
    assert (notebook["nbformat"], notebook["nbformat_minor"]) == (4, 5)
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"
    assert all(cell.get("id") for cell in notebook["cells"])
    assert builder.cell_source(notebook["cells"][0]).startswith("# 09 · Glossary: ")
    assert Path(builder.catalog_path(GLOSSARY)).exists()
