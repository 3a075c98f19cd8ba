"""The lessons as a learner meets them: JupyterLab in headless Chromium, every notebook.

nbval re-runs cells in a kernel but renders nothing, so a widget that fails to display
("Error displaying widget: model not found"), a figure that never appears or a notebook
that breaks only inside JupyterLab passes it. Here each notebook is opened in a real
JupyterLab page, its kernel restarted and every cell run, and then we look at the page:

* no error output, no "Error displaying widget", no message in a ``meshlab-error`` widget;
* every cell whose stored outputs hold a widget view shows a LIVE widget now;
* every stored figure renders as a loaded ``<img>``;
* one real interaction per widget kind found on the page (see ``tests/browser/README.md``
  for the CSS classes the widgets must carry): "next" on the step player, unticking the
  UID 1337 exemption in the rule lab, changing a flag in the flag explorer.

``test_harness_on_fixture_notebook`` proves all of this on a small fixture notebook first,
and ``test_harness_reports_broken_notebook`` proves that the checks do catch failures.
Screenshots go to ``$MESHLAB_SCREENSHOTS`` or ``artifacts/browser/``.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # the fixtures' types live in conftest.py; tests get them as fixtures
    from conftest import CellReport, LabPage, LabServer, Timings

pytestmark = pytest.mark.browser

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
IMAGE_MIMES = ("image/png", "image/jpeg", "image/gif", "image/svg+xml")

#: Container classes of the Widget DOM contract -> short name of the widget kind.
KINDS = {
    "meshlab-step-player": "step player",
    "meshlab-rule-lab": "rule lab",
    "meshlab-flag-explorer": "flag explorer",
    "meshlab-packet-builder": "packet builder",
}
#: The proxy's exemptions: without them Envoy's own upstream connections are captured again.
UID_EXEMPTION = "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN"
GID_EXEMPTION = "-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN"
CHANGE_WAIT_S = 20.0
WIDGETS_EXTENSION = "@jupyter-widgets/jupyterlab-manager"

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
FIXTURES = Path(__file__).resolve().parent / "fixtures"

#: The English lessons, then their Korean edition (notebooks/ko/, built from them).
LESSONS = sorted(NOTEBOOKS.glob("[0-9]*.ipynb")) + sorted(NOTEBOOKS.glob("ko/[0-9]*.ipynb"))
SMOKE = FIXTURES / "widget-smoke.ipynb"


# --------------------------------------------------------------------------- expectations


@dataclass(frozen=True)
class Expectation:
    """What the committed .ipynb promises: read from its stored outputs and widget state."""

    widget_cells: tuple[int, ...]  # cell indices whose stored outputs hold a widget view
    images: dict[int, int]  # cell index -> number of stored image outputs
    kinds: frozenset[str]  # contract container classes present in the saved widget state

    @classmethod
    def of(cls, notebook: Path) -> Expectation:
        nb = json.loads(notebook.read_text(encoding="utf-8"))
        widget_cells: list[int] = []
        images: dict[int, int] = {}
        for index, cell in enumerate(nb.get("cells", [])):
            if cell.get("cell_type") != "code":
                continue
            outputs = [o.get("data", {}) for o in cell.get("outputs", [])]
            if any(data.get(WIDGET_VIEW, {}).get("model_id") for data in outputs):
                widget_cells.append(index)
            count = sum(any(m in data for m in IMAGE_MIMES) for data in outputs)
            if count:
                images[index] = count
        state = nb.get("metadata", {}).get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
        classes = {
            cls_name
            for model in state.values()
            for cls_name in model.get("state", {}).get("_dom_classes", ())
        }
        return cls(tuple(widget_cells), images, frozenset(classes & KINDS.keys()))


def problems(cells: list[CellReport], expected: Expectation) -> list[str]:
    """Everything a learner would see broken, one line (or traceback) per problem."""
    found: list[str] = []
    by_index = {cell.index: cell for cell in cells}
    for cell in cells:
        where = f"cell {cell.index} ({cell.head!r})"
        found.extend(f"{where}: {error}" for error in cell.errors)
        if cell.loading:
            found.append(f"{where}: a widget never rendered (still 'Loading widget...')")
        found.extend(
            f"{where}: an image did not load" for image in cell.images if not image["loaded"]
        )
    for index in expected.widget_cells:
        cell = by_index.get(index)
        if cell is None or cell.widgets == 0:
            head = cell.head if cell else "?"
            found.append(
                f"cell {index} ({head!r}): the stored notebook shows a widget here, "
                "the browser shows no live widget"
            )
    live = sum(1 for cell in cells if cell.widgets)
    if live < len(expected.widget_cells):
        found.append(f"{live} cells show live widgets, the notebook has "
                     f"{len(expected.widget_cells)} widget cells")  # fmt: skip
    for index, count in expected.images.items():
        cell = by_index.get(index)
        shown = sum(1 for image in cell.images if image["loaded"]) if cell else 0
        if shown < count:
            found.append(f"cell {index}: {count} stored image(s), {shown} rendered in the page")
    return found


# --------------------------------------------------------------------------- interactions


def _text(locator: Any) -> str:
    """textContent with whitespace collapsed (ipywidgets pads labels with zero-width spaces)."""
    raw = locator.evaluate("(e) => e.textContent")
    return " ".join(raw.replace("\u200b", " ").split())


def _wait_until(what: str, check: Callable[[], bool], timeout_s: float = CHANGE_WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout_s:.0f} s: {what}")
        time.sleep(0.25)


def _no_widget_error(lab: LabPage, container: Any, kind: str) -> None:
    errors = [t for t in (_text(e) for e in container.locator(".meshlab-error").all()) if t]
    assert not errors, f"{lab.path}: the {kind} shows an error: {errors}"


def _snap(lab: LabPage, container: Any, stem: str, kind: str) -> None:
    target = lab.screenshot_dir / f"{stem}-{kind.replace(' ', '-')}.png"
    container.screenshot(path=str(target), timeout=30_000)


def exercise_step_player(lab: LabPage, stem: str) -> None:
    """Press "next": the step text and the highlighted step must change."""
    player = lab.scroll_to(lab.page.locator(".meshlab-step-player").first)
    text = player.locator(".meshlab-step-text").first
    current = player.locator(".meshlab-current-step").first
    where = (
        "(e) => { const list = e.closest('.meshlab-step-list') || e.parentElement;"
        " return Array.from(list.querySelectorAll('*')).indexOf(e) + '|' + e.textContent; }"
    )
    lab.scroll_to(current)
    before = (_text(text), current.evaluate(where))
    nxt = lab.scroll_to(player.locator(".meshlab-next").first)
    assert nxt.is_enabled(), f"{lab.path}: the step player's next button is disabled at start"
    nxt.click()

    def moved() -> bool:
        now = (_text(text), current.evaluate(where) if current.count() else None)
        return now[0] != before[0] and now[1] is not None and now[1] != before[1]

    _wait_until(f"{lab.path}: 'next' did not change both the step text ({before[0]!r}) "
                "and the highlighted .meshlab-current-step", moved)  # fmt: skip
    _no_widget_error(lab, player, "step player")
    _snap(lab, player, stem, "step player")


#: An ambient pod's rule lab: without this policy route the app's reply leaves by eth0.
AMBIENT_IP_RULE = "ip rule add fwmark 0x111/0xfff pref 32764 lookup 100"


def exercise_rule_lab(lab: LabPage, stem: str) -> None:
    """A sidecar pod's lab: untick the UID 1337 exemption (and its GID twin), the result must
    report a loop. An ambient pod's lab: untick the ``ip rule``, the result must report that
    the inbound connections time out (the app's reply leaves by eth0)."""
    rule_lab = lab.scroll_to(lab.page.locator(".meshlab-rule-lab").first)
    result = rule_lab.locator(".meshlab-rule-lab-result").first
    lab.scroll_to(result)
    before = _text(result)
    toggles = rule_lab.locator(".meshlab-rule-toggle").all()
    labels = [_text(toggle) for toggle in toggles]
    ambient = any(label.endswith(AMBIENT_IP_RULE) for label in labels)
    wanted = (AMBIENT_IP_RULE,) if ambient else (UID_EXEMPTION, GID_EXEMPTION)
    # what the result must then say (a cell's text runs into the next one's: no \b on timeout)
    what, expected = ("a timeout", "timeout") if ambient else ("a loop", r"\bloop|루프")
    unticked = set()
    for toggle, label in zip(toggles, labels, strict=True):
        rule = next((r for r in wanted if label.endswith(r)), None)
        if rule is None:
            continue
        box = lab.scroll_to(toggle.locator("input[type=checkbox]").first)
        if box.is_checked():
            box.uncheck()
        unticked.add(rule)
    assert wanted[0] in unticked, (
        f"{lab.path}: no .meshlab-rule-toggle labelled {wanted[0]!r}; toggles: {labels}"
    )

    def change_reported() -> bool:
        now = _text(result)
        return now != before and re.search(expected, now, re.IGNORECASE) is not None

    _wait_until(f"{lab.path}: unticking {sorted(unticked)} did not make "
                f".meshlab-rule-lab-result report {what} (it says {_text(result)!r})",
                change_reported)  # fmt: skip
    _no_widget_error(lab, rule_lab, "rule lab")
    _snap(lab, rule_lab, stem, "rule lab")


def with_outbound_exclusion(flags: str, port: str = "5555") -> str:
    """Add ``port`` to the -o (outbound ports never redirected) list of the flags."""
    match = re.search(r"(^|\s)-o\s+(\S+)", flags)
    if match:
        return f"{flags[: match.end(2)]},{port}{flags[match.end(2) :]}"
    return f"{flags.rstrip()} -o {port}"


def exercise_flag_explorer(lab: LabPage, stem: str) -> None:
    """Add ``-o 5555`` to the flags: the rules shown must change (and show no error)."""
    explorer = lab.scroll_to(lab.page.locator(".meshlab-flag-explorer").first)
    rules = explorer.locator(".meshlab-rules-text").first
    field = explorer.locator(
        ".meshlab-flags-input input, .meshlab-flags-input textarea, input.meshlab-flags-input"
    ).first
    lab.scroll_to(field)
    before = _text(rules)
    flags = field.input_value()
    field.fill(with_outbound_exclusion(flags))
    field.press("Enter")  # a Text with continuous_update=False syncs on Enter / blur
    field.evaluate("(e) => e.blur()")
    _wait_until(f"{lab.path}: changing the flags {flags!r} -> {field.input_value()!r} "
                "did not change .meshlab-rules-text", lambda: _text(rules) != before)  # fmt: skip
    _no_widget_error(lab, explorer, "flag explorer")
    _snap(lab, explorer, stem, "flag explorer")


def check_packet_builder(lab: LabPage, stem: str) -> None:
    """No interaction asked for: the builder shows its trace result element."""
    builder = lab.scroll_to(lab.page.locator(".meshlab-packet-builder").first)
    assert builder.locator(".meshlab-trace-result").count(), (
        f"{lab.path}: .meshlab-packet-builder has no .meshlab-trace-result"
    )
    _no_widget_error(lab, builder, "packet builder")


EXERCISES: dict[str, Callable[[LabPage, str], None]] = {
    "meshlab-step-player": exercise_step_player,
    "meshlab-rule-lab": exercise_rule_lab,
    "meshlab-flag-explorer": exercise_flag_explorer,
    "meshlab-packet-builder": check_packet_builder,
}


# --------------------------------------------------------------------------- one notebook


def check_notebook(lab: LabPage, source: Path, served: str, timings: Timings) -> set[str]:
    """Open, restart-and-run-all, check, screenshot, interact. Returns the kinds exercised."""
    # Read what the notebook promises from the copy the server shows (the checkout may be
    # rewritten while the tests run).
    expected = Expectation.of(lab.server.root / served)
    times: dict[str, float] = {}
    timings.notebooks[served] = times
    began = time.monotonic()
    try:
        return _check_notebook(lab, source, served, expected, times, timings.notes)
    finally:
        times["total"] = time.monotonic() - began


def _check_notebook(
    lab: LabPage,
    source: Path,
    served: str,
    expected: Expectation,
    times: dict[str, float],
    notes: dict[str, str],
) -> set[str]:
    stem = "-".join(Path(served).with_suffix("").parts[1:])
    began = time.monotonic()
    lab.open(served)
    times["open"] = time.monotonic() - began

    mark = time.monotonic()
    try:
        lab.run_all()
    except AssertionError:
        lab.screenshots(stem)  # show where it stuck
        raise
    times["run"] = time.monotonic() - mark

    mark = time.monotonic()
    cells = lab.report()
    live = sum(1 for cell in cells if cell.widgets)
    images = sum(1 for cell in cells for image in cell.images if image["loaded"])
    notes[served] = (
        f"{len(cells)} code cells; widget cells live/stored {live}/{len(expected.widget_cells)}; "
        f"images rendered/stored {images}/{sum(expected.images.values())}"
    )
    lab.screenshots(stem)
    found = problems(cells, expected)
    errors_shown = [
        f"{_text(e)!r}" for e in lab.page.locator(".jp-OutputArea .meshlab-error").all() if _text(e)
    ]
    if errors_shown:
        found.append(f"meshlab-error widgets show messages after the run: {errors_shown}")
    times["check"] = time.monotonic() - mark
    assert not found, f"{served}: what a learner would see broken:\n" + "\n".join(
        [*found, "(browser console, last lines:)", *lab.console[-15:]]
    )

    mark = time.monotonic()
    exercised = set()
    for container, exercise in EXERCISES.items():
        present = lab.page.locator(f".jp-OutputArea {'.' + container}").count() > 0
        if container in expected.kinds and not present:
            raise AssertionError(
                f"{served}: the saved widget state has a .{container} "
                f"({KINDS[container]}), the live page has none"
            )
        if present:
            exercise(lab, stem)
            exercised.add(container)
    times["interact"] = time.monotonic() - mark
    if exercised:
        notes[served] += "; exercised " + ", ".join(KINDS[k] for k in sorted(exercised))
    return exercised


# --------------------------------------------------------------------------- the tests


def test_widgets_extension_is_on_the_data_path(lab_server: LabServer) -> None:
    """The private server still sees the environment's ipywidgets front-end extension."""
    listing = lab_server.labextensions
    line = next((ln for ln in listing.splitlines() if WIDGETS_EXTENSION in ln), "")
    assert "enabled" in line and "OK" in line, (
        f"{WIDGETS_EXTENSION} is not enabled for the test server; without it every widget "
        f"shows as text. `jupyter labextension list` said:\n{listing}"
    )


@pytest.mark.timeout(600)
def test_harness_on_fixture_notebook(lab: LabPage, browser_timings: Timings) -> None:
    """The whole harness on a notebook with one of each widget kind and a figure."""
    expected = Expectation.of(SMOKE)
    assert len(expected.widget_cells) == 3 and sum(expected.images.values()) == 1, (
        f"{SMOKE} lost its stored outputs; re-create them as its first cell says"
    )
    exercised = check_notebook(lab, SMOKE, f"fixtures/{SMOKE.name}", browser_timings)
    assert exercised == {"meshlab-step-player", "meshlab-rule-lab", "meshlab-flag-explorer"}


@pytest.mark.timeout(600)
def test_harness_reports_broken_notebook(
    lab: LabPage, lab_server: LabServer, browser_timings: Timings
) -> None:
    """The checks must catch a widget that cannot display and a cell that raises."""
    import nbformat

    began = time.monotonic()

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}  # fmt: skip
    nb.cells = [
        nbformat.v4.new_code_cell(
            "display({'" + WIDGET_VIEW + "': {'model_id': 'no-such-model', "
            "'version_major': 2, 'version_minor': 0}, 'text/plain': 'a widget'}, raw=True)"
        ),
        nbformat.v4.new_code_cell("raise RuntimeError('meshlab harness self-test')"),
        nbformat.v4.new_code_cell("print('never runs')"),
    ]
    served = lab_server.root / "fixtures" / "broken.ipynb"
    nbformat.write(nb, served)
    lab.open("fixtures/broken.ipynb")
    state = lab.run_all(budget_s=120)
    assert state["cells"][2]["count"] is None, "run-all should stop at the raising cell"
    cells = lab.report(timeout_s=10)
    found = problems(cells, Expectation(widget_cells=(0,), images={}, kinds=frozenset()))
    text = "\n".join(found)
    assert "RuntimeError: meshlab harness self-test" in text, text
    assert "cell 0" in text and "no live widget" in text, text
    browser_timings.notebooks["fixtures/broken.ipynb (made up)"] = {
        "total": time.monotonic() - began
    }


@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    "lesson",
    [pytest.param(p, id="-".join(p.relative_to(NOTEBOOKS).with_suffix("").parts))
     for p in LESSONS]
    or [
        pytest.param(
            None,
            id="no-lessons",
            marks=pytest.mark.skip(reason=f"no lessons yet: {NOTEBOOKS}/[0-9]*.ipynb is empty"),
        )
    ],
)
def test_lesson_in_browser(lab: LabPage, lesson: Path, browser_timings: Timings) -> None:
    """One lesson, as a learner sees it after "Restart Kernel and Run All Cells"."""
    check_notebook(lab, lesson, f"notebooks/{lesson.relative_to(NOTEBOOKS)}", browser_timings)


def test_the_browser_has_a_font_with_hangul(lab_server: LabServer) -> None:
    """Chromium draws text with the fonts fontconfig knows: without one that has Hangul, the
    Korean lessons show boxes instead of letters (and so do their screenshots)."""
    if not any(p.parent.name == "ko" for p in LESSONS):
        pytest.skip("no Korean lessons (notebooks/ko/) to draw")
    found = subprocess.run(["fc-list", ":lang=ko", "family"], capture_output=True, text=True,
                           timeout=30, check=False).stdout.strip()
    assert found, ("no font with Hangul is installed: the Korean lessons would show boxes; "
                   "install one (`apt-get install fonts-nanum`, which `make test` does as root)")


def test_lessons_cover_every_interactive_widget() -> None:
    """Across the lessons' saved widget state, each interactive kind appears at least once."""
    if not LESSONS:
        pytest.skip(f"no lessons yet: {NOTEBOOKS}/[0-9]*.ipynb is empty")
    present = set().union(*(Expectation.of(p).kinds for p in LESSONS))
    missing = {"meshlab-step-player", "meshlab-rule-lab", "meshlab-flag-explorer"} - present
    assert not missing, (
        f"no lesson's saved widget state has {sorted(missing)}; run `make notebooks` "
        "(stores widget state) and give the widgets the DOM-contract classes"
    )


@pytest.mark.timeout(600)
def test_step_player_fits_a_narrow_lab_with_the_file_browser_open(
    narrow_lab: LabPage, lab_server: LabServer, browser_timings: Timings
) -> None:
    """The real step player at 1280 px with the file browser open: its picture and its step
    list lie inside the widget's box, and the picture's smallest text is 12 px or more."""
    import nbformat

    from meshlab.viz.hooks import WIDTH
    from meshlab.viz.style import MIN_FONT_PT, MIN_TEXT_PX

    began = time.monotonic()
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}  # fmt: skip
    nb.cells = [nbformat.v4.new_code_cell("from meshlab.widgets import StepPlayer\n"
                                          "StepPlayer('inbound')")]
    nbformat.write(nb, lab_server.root / "fixtures" / "narrow-player.ipynb")
    lab = narrow_lab
    try:
        lab.open("fixtures/narrow-player.ipynb")
        lab.page.evaluate("() => window.jupyterapp.shell.activateById('filebrowser')")
        lab.page.wait_for_selector("#filebrowser", state="visible", timeout=10_000)
        lab.run_all(budget_s=120)
        player = lab.page.locator(".jp-OutputArea .meshlab-step-player").first
        player.wait_for(state="visible", timeout=60_000)
        image = player.locator("img.meshlab-step-image").first
        _wait_until("the step player's picture loaded", lambda: image.evaluate(
            "(e) => e.complete && e.naturalWidth > 0"))
        browser_panel = lab.page.locator("#filebrowser").bounding_box()
        box = player.bounding_box()
        assert browser_panel and browser_panel["width"] > 150, "the file browser is open"
        assert box and box["x"] >= browser_panel["x"] + browser_panel["width"] - 1
        area = player.locator("xpath=ancestor::div[contains(@class,'jp-OutputArea-output')]"
                              ).first.bounding_box()
        assert area and box["x"] + box["width"] <= area["x"] + area["width"] + 1, (box, area)
        for part in (image, player.locator(".meshlab-step-list").first):
            inner = part.bounding_box()
            assert inner is not None
            assert inner["x"] >= box["x"] - 1, (inner, box)
            assert inner["x"] + inner["width"] <= box["x"] + box["width"] + 1, (inner, box)
            assert inner["y"] + inner["height"] <= box["y"] + box["height"] + 1, (inner, box)
        shown = image.bounding_box()["width"]  # CSS px the 9 in picture is drawn across
        smallest = MIN_FONT_PT * shown / (WIDTH * 72)
        assert smallest >= MIN_TEXT_PX, f"smallest text {smallest:.1f} px at {shown:.0f} px"
        player.screenshot(path=str(lab.screenshot_dir / "narrow-step-player.png"))
        browser_timings.notes["fixtures/narrow-player.ipynb"] = (
            f"step player {box['width']:.0f} px wide, picture {shown:.0f} px, smallest text "
            f"{smallest:.1f} px")
    finally:
        browser_timings.notebooks["fixtures/narrow-player.ipynb"] = {
            "total": time.monotonic() - began}
