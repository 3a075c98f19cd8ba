"""Both READMEs list every lesson of their edition, each with a working Binder link, and
every relative link in them points at a file that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BINDER = "https://mybinder.org/v2/gh/meshlab/meshlab/main?urlpath=lab/tree/"
EDITIONS = {"README.md": "notebooks", "README.ko.md": "notebooks/ko"}
LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize(("readme", "folder"), EDITIONS.items())
def test_the_lesson_table_lists_every_lesson_with_binder(readme: str, folder: str) -> None:
    text = (ROOT / readme).read_text(encoding="utf-8")
    for lesson in sorted((ROOT / folder).glob("[0-9]*.ipynb")):
        where = f"{folder}/{lesson.name}"
        row = next((line for line in text.splitlines() if f"]({where})" in line), None)
        assert row is not None, f"{readme} has no lesson-table row linking {where}"
        assert f"{BINDER}{where})" in row, f"{readme}: the row of {where} has no Binder link"


@pytest.mark.parametrize("readme", EDITIONS)
def test_relative_links_resolve(readme: str) -> None:
    text = (ROOT / readme).read_text(encoding="utf-8")
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue
        assert (ROOT / target.split("#")[0]).exists(), f"{readme}: {target} does not exist"


def test_the_readmes_link_each_other() -> None:
    assert "](README.ko.md)" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert "](README.md)" in (ROOT / "README.ko.md").read_text(encoding="utf-8")
