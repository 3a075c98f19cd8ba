"""The Korean lessons, built from the English ones and a translation of each cell.

The English notebooks in ``notebooks/`` are the one source of truth. For each lesson,
``i18n/ko/<lesson>.yaml`` holds the Korean text of every markdown cell (and, where a code
cell's comments are worth translating, of that code cell), keyed by the cell's id::

    lesson: 03-inbound.ipynb
    cells:
    - id: e2287b81
      source: 4f1c0a9b2d3e    # the first 12 hex digits of sha256(English source)
      ko: |
        # 레슨 03: 인바운드
        ...

``build`` writes ``notebooks/ko/<lesson>.ipynb`` for each lesson that has a catalog (a link
to a lesson that has none yet leads to the English one): the English notebook with each
translated cell replaced, outputs cleared, a first code cell that calls
``meshlab.set_language("ko")``,
and paths to the repository's ``data/`` one folder further up (``make notebooks`` then
executes it). :func:`problems` lists what makes a translation wrong: an English cell with no
translation, a translation made from an older English text (its ``source`` hash), a cell that
no longer exists, inline code, code blocks or numbers that differ from the English cell's
(a Korean cell must not state another port, flag or rule), prose left in English, a link
that does not resolve from ``notebooks/ko/``, and code that differs in more than comments.

Run from the repository's root::

    python -m i18n.lessons status          # every lesson: translated, missing, stale
    python -m i18n.lessons todo 03-inbound # the cells of one lesson still to translate
    python -m i18n.lessons todo 03-inbound --code  # ... and its code cells with comments
    python -m i18n.lessons build           # write notebooks/ko/*.ipynb (no execution)
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import re
import sys
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
LANGUAGE = "ko"
CATALOGS = ROOT / "i18n" / LANGUAGE
EDITION = NOTEBOOKS / LANGUAGE

#: The cell every Korean lesson starts its code with.
SET_LANGUAGE_ID = "set-language-ko"
SET_LANGUAGE_SOURCE = 'import meshlab\n\nmeshlab.set_language("ko")'

_HANGUL = re.compile(r"[\uac00-\ud7a3]")
_FENCE = re.compile(r"^```.*?^```", re.S | re.M)
#: An inline code span, which may run over a line break (not over a blank line), as in
#: CommonMark; its text is compared with runs of white space made one space.
_INLINE_CODE = re.compile(r"`((?:[^`\n]|\n(?![ \t]*\n))+)`")
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_NUMBER = re.compile(r"0x[0-9a-fA-F]+|\d+(?:[.:/]\d+)*")
_WORD = re.compile(r"[A-Za-z]{3,}")


def source_hash(text: str) -> str:
    """The first 12 hex digits of the SHA-256 of a cell's English source."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def lessons() -> list[Path]:
    """The English lessons, in course order."""
    return sorted(NOTEBOOKS.glob("[0-9]*.ipynb"))


def translated_lessons() -> list[Path]:
    """The lessons that have a Korean catalog: the ones the Korean edition holds."""
    return [lesson for lesson in lessons() if catalog_path(lesson).exists()]


def _localize_links(markdown: str) -> str:
    """Links to a lesson the Korean edition does not hold yet lead to the English lesson."""
    def target(match: re.Match[str]) -> str:
        lesson = NOTEBOOKS / match.group(1)
        if lesson.exists() and not catalog_path(lesson).exists():
            return f"](../{match.group(1)}"
        return match.group(0)

    return re.sub(r"\]\(([0-9][^)/\s#]*\.ipynb)", target, markdown)


def read_notebook(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def cell_source(cell: dict[str, Any]) -> str:
    source = cell["source"]
    return source if isinstance(source, str) else "".join(source)


@dataclass(frozen=True)
class Translation:
    """One cell's translation: the hash of the English text it was made from, and the text."""

    source: str
    text: str


def catalog_path(lesson: Path) -> Path:
    return CATALOGS / f"{lesson.stem}.yaml"


def load_catalog(lesson: Path) -> dict[str, Translation]:
    """Cell id -> translation, from ``i18n/ko/<lesson>.yaml`` (empty when there is none)."""
    path = catalog_path(lesson)
    if not path.exists():
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    where = path.relative_to(ROOT)
    if data.get("lesson") != lesson.name:
        raise ValueError(f"{where}: 'lesson' must be {lesson.name!r}")
    found: dict[str, Translation] = {}
    for number, entry in enumerate(data.get("cells") or [], start=1):
        if not isinstance(entry, dict) or not all(
                isinstance(entry.get(key), str) for key in ("id", "source", LANGUAGE)):
            raise ValueError(f"{where}: cell entry {number} needs the strings 'id', 'source' "
                             f"and {LANGUAGE!r}")
        if entry["id"] in found:
            raise ValueError(f"{where}: cell {entry['id']} is translated twice")
        found[entry["id"]] = Translation(entry["source"], entry[LANGUAGE].rstrip("\n"))
    return found


def _prose(markdown: str) -> str:
    """Markdown without code blocks, inline code and link targets: what a reader reads."""
    text = _FENCE.sub(" ", markdown)
    text = _INLINE_CODE.sub(" ", text)
    text = _LINK.sub("]", text)
    return re.sub(r"<[^>]+>", " ", text)


def _spans(markdown: str) -> list[str]:
    """The code a markdown cell states: its fenced blocks and inline code spans."""
    blocks = _FENCE.findall(markdown)
    inline = {" ".join(span.split()) for span in _INLINE_CODE.findall(_FENCE.sub(" ", markdown))}
    return sorted(set(blocks) | inline)


def _numbers(markdown: str) -> list[str]:
    return sorted(set(_NUMBER.findall(_prose(markdown))))


def _code_tokens(source: str) -> list[str]:
    """A code cell's tokens other than comments (IPython's ``%`` and ``!`` lines whole)."""
    lines = [line for line in source.splitlines() if line.lstrip()[:1] not in ("%", "!")]
    magics = [line.strip() for line in source.splitlines() if line.lstrip()[:1] in ("%", "!")]
    tokens = tokenize.generate_tokens(io.StringIO("\n".join(lines) + "\n").readline)
    skip = (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
            tokenize.ENDMARKER)
    return magics + [token.string for token in tokens if token.type not in skip]


def _links_that_do_not_resolve(markdown: str) -> list[str]:
    bad = []
    for target in _LINK.findall(_localize_links(markdown)):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = EDITION / target.split("#")[0]
        built = path.suffix == ".ipynb" and catalog_path(NOTEBOOKS / path.name).exists()
        if not (path.exists() or built):  # a lesson with a catalog is there once built
            bad.append(target)
    return bad


def cell_problems(cell: dict[str, Any], translation: Translation) -> list[str]:
    """What is wrong with one cell's translation ([] when nothing is)."""
    english = cell_source(cell)
    if translation.source != source_hash(english):
        return [f"translated from an older English text (source {translation.source}, "
                f"English now {source_hash(english)}): translate it again"]
    text = translation.text
    if cell["cell_type"] == "code":
        if _code_tokens(text) != _code_tokens(english):
            return ["the code differs from the English cell in more than its comments"]
        return []
    found = []
    if _spans(text) != _spans(english):
        missing = sorted(set(_spans(english)) - set(_spans(text)))
        extra = sorted(set(_spans(text)) - set(_spans(english)))
        found.append(f"code spans differ: missing {missing}, not in the English {extra}")
    if _numbers(text) != _numbers(english):
        missing = sorted(set(_numbers(english)) - set(_numbers(text)))
        extra = sorted(set(_numbers(text)) - set(_numbers(english)))
        found.append(f"numbers differ: missing {missing}, not in the English {extra}")
    if _WORD.search(_prose(english)) and not _HANGUL.search(_prose(text)):
        found.append("the prose is not in Korean")
    found += [f"link {target!r} does not resolve from notebooks/{LANGUAGE}/"
              for target in _links_that_do_not_resolve(text)]
    return found


def problems(lesson: Path) -> Iterator[str]:
    """Every problem of one lesson's translation, each naming the catalog and the cell."""
    where = catalog_path(lesson).relative_to(ROOT)
    try:
        catalog = load_catalog(lesson)
    except (ValueError, yaml.YAMLError) as error:
        yield str(error)
        return
    cells = read_notebook(lesson)["cells"]
    ids = set()
    for cell in cells:
        ids.add(cell["id"])
        translation = catalog.get(cell["id"])
        if translation is None:
            if cell["cell_type"] == "markdown":
                yield f"{where}: markdown cell {cell['id']} has no translation"
            continue
        for problem in cell_problems(cell, translation):
            yield f"{where}: cell {cell['id']}: {problem}"
    for orphan in sorted(set(catalog) - ids):
        yield f"{where}: cell {orphan} is not in {lesson.name} any more: remove it"


def _as_source_lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def _point_at_repository(source: str) -> str:
    """Paths from ``notebooks/`` to the repository's files, made to work from one level down."""
    return re.sub(r"""(["'])\.\./""", r"\1../../", source)


def build(lesson: Path) -> dict[str, Any]:
    """The Korean notebook of ``lesson`` (not executed: no outputs)."""
    english = read_notebook(lesson)
    catalog = load_catalog(lesson)
    notebook = copy.deepcopy(english)
    notebook["metadata"].pop("widgets", None)
    notebook["metadata"]["meshlab"] = {"language": LANGUAGE, "built_from": f"../{lesson.name}"}
    cells = []
    for cell in notebook["cells"]:
        translation = catalog.get(cell["id"])
        if translation is not None and translation.source == source_hash(cell_source(cell)):
            cell["source"] = _as_source_lines(_localize_links(translation.text))
        if cell["cell_type"] == "code":
            if not any(c["cell_type"] == "code" for c in cells):
                cells.append({"cell_type": "code", "execution_count": None, "id": SET_LANGUAGE_ID,
                              "metadata": {}, "outputs": [],
                              "source": _as_source_lines(SET_LANGUAGE_SOURCE)})
            cell["source"] = _as_source_lines(_point_at_repository(cell_source(cell)))
            cell["outputs"] = []
            cell["execution_count"] = None
        cells.append(cell)
    notebook["cells"] = cells
    return notebook


def skeleton(lesson: Path, *, code: bool = False) -> str:
    """YAML entries for the cells still to translate, with the English text to replace:
    the markdown cells, and with ``code`` the code cells that have comments."""
    catalog = load_catalog(lesson)
    entries = []
    for cell in read_notebook(lesson)["cells"]:
        english = cell_source(cell)
        known = catalog.get(cell["id"])
        wanted = cell["cell_type"] == "markdown" or (code and "#" in english)
        if not wanted or (known and known.source == source_hash(english)):
            continue
        entries.append({"id": cell["id"], "source": source_hash(english), LANGUAGE: english})
    return yaml.dump(entries, Dumper=_Dumper, allow_unicode=True, sort_keys=False, width=100)


class _Dumper(yaml.SafeDumper):
    """Writes a text of several lines as a ``|`` block, as a translator would."""


def _text(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _text)


def write(path: Path, notebook: dict[str, Any]) -> None:
    path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv: list[str]) -> int:
    command, *rest = argv or ["status"]
    if command == "status":
        failing = 0
        for lesson in lessons():
            if not catalog_path(lesson).exists():
                print(f"{lesson.name}: not translated yet (python -m i18n.lessons todo "
                      f"{lesson.stem})")
                failing += 1
                continue
            found = list(problems(lesson))
            failing += bool(found)
            print(f"{lesson.name}: {'ok' if not found else f'{len(found)} problems'}")
            for problem in found:
                print(f"  {problem}")
        return 1 if failing else 0
    if command == "todo" and rest and set(rest[1:]) <= {"--code"}:
        lesson = NOTEBOOKS / f"{rest[0].removesuffix('.ipynb')}.ipynb"
        print(skeleton(lesson, code="--code" in rest), end="")
        return 0
    if command == "build":
        EDITION.mkdir(exist_ok=True)
        for lesson in translated_lessons():
            write(EDITION / lesson.name, build(lesson))
            print(f"wrote {(EDITION / lesson.name).relative_to(ROOT)}")
        return 0
    print(__doc__.split("Run from")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
