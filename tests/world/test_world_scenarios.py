"""The catalog loader: a bad catalog is reported with the file, the line and a fix."""

from __future__ import annotations

import pytest

from meshlab.errors import MeshlabError
from meshlab.scenarios import CATALOG_PATH, ScenarioError, catalog, parse_catalog

GOOD = """\
- name: one
  title: t
  request: {from: pod/reviews, to: pod/productpage, port: 9080}
  expect:
    outcome: delivered
    delivered_to: {process: app, port: 9080, sees_source: 127.0.0.6}
"""


def test_the_repository_catalog_loads() -> None:
    scenarios = catalog()
    assert CATALOG_PATH.is_file()
    assert len(scenarios) >= 18
    assert list(scenarios)[:2] == ["inbound", "outbound"]
    for scenario in scenarios.values():
        assert scenario.line > 0 and scenario.title and scenario.why


def test_good_document_parses() -> None:
    scenarios = parse_catalog(GOOD, "x.yaml")
    assert scenarios["one"].request.port == 9080
    assert scenarios["one"].expect.delivered_to is not None


@pytest.mark.parametrize(("text", "line", "words"), [
    (GOOD.replace("  title: t\n", "  title: t\n  colour: red\n"), 3, "unknown key 'colour'"),
    (GOOD.replace("port: 9080}", "port: 99999}"), 3, "port"),
    (GOOD.replace("outcome: delivered", "outcome: teleported"), 5, "outcome"),
    (GOOD.replace("from: pod/reviews", "from: reviews"), 3, "pod/NAME"),
    (GOOD + GOOD, 7, "defined twice"),
    (GOOD.replace("    delivered_to: {process: app, port: 9080, sees_source: 127.0.0.6}\n", ""),
     5, "needs delivered_to"),
    ("- name: [unclosed\n", 2, "not valid YAML"),
])
def test_bad_catalog_reports_file_and_line(text: str, line: int, words: str) -> None:
    with pytest.raises(ScenarioError) as info:
        parse_catalog(text, "bad.yaml")
    message = str(info.value)
    assert message.startswith(f"bad.yaml:{line}"), message
    assert words in message
    assert isinstance(info.value, MeshlabError)
    assert info.value.line == line


def test_catalog_must_be_a_list() -> None:
    with pytest.raises(ScenarioError, match="list of scenarios"):
        parse_catalog("name: x\n", "bad.yaml")


def test_unreadable_catalog(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ScenarioError, match="cannot read"):
        catalog(tmp_path / "missing.yaml")
