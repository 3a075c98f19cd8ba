"""Each picture is a Figure with the expected labels, deterministic, and closes cleanly."""

from __future__ import annotations

import time

import pytest
from matplotlib.figure import Figure

from meshlab.scenarios import run_scenario
from meshlab.viz import (
    ablation_figure,
    chains_figure,
    hooks_figure,
    loop_growth_figure,
    sequence_figure,
)
from meshlab.viz.path import stops
from meshlab.viz.style import figure_texts, png_bytes

UID = "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN"
GID = "-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN"


@pytest.fixture(scope="module")
def outbound():
    return run_scenario("outbound")


@pytest.fixture(scope="module")
def inbound():
    return run_scenario("inbound")


@pytest.fixture(scope="module")
def looping():
    return run_scenario("outbound", without_rules=[UID, GID])


def _texts(fig: Figure) -> str:
    return "\n".join(figure_texts(fig))


def test_hooks_figure_without_walk_is_the_map():
    fig = hooks_figure()
    text = _texts(fig)
    for label in ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING", "ISTIO_OUTPUT",
                  "ISTIO_INBOUND", "raw", "mangle", "nat", "filter", "lo\n(local dst)"):
        assert label in text
    assert fig.get_facecolor()[:3] == (1.0, 1.0, 1.0)


def test_hooks_figure_outbound_path(outbound):
    places = [s.place for s in stops(outbound)]
    assert places[:5] == ["app", "route_out", "OUTPUT/nat", "ISTIO_OUTPUT", "ISTIO_REDIRECT"]
    assert "lo" in places and "envoy15001" in places and places[-1] == "peer_out"
    text = _texts(hooks_figure(outbound))
    assert "PREROUTING" in text and "ISTIO_OUTPUT" in text and "outbound" in text
    for n in range(9, 16):
        assert str(n) in figure_texts(hooks_figure(outbound))


def test_hooks_figure_step_caption(outbound, inbound):
    assert "Step 12" in _texts(hooks_figure(outbound, step=12))
    assert "Step 4" in _texts(hooks_figure(inbound, step=4))
    assert "not part of this walk" in _texts(hooks_figure(inbound, step=12))


def test_inbound_goes_through_15006_and_lo(inbound):
    places = [s.place for s in stops(inbound)]
    assert places[0] == "peer_in" and "eth0_in" in places
    assert "ISTIO_IN_REDIRECT" in places and "envoy15006" in places
    assert places[-1] == "app" and "lo" in places


def test_chains_figure_default_rules():
    text = _texts(chains_figure())
    for label in ("table nat", "ISTIO_OUTPUT", "ISTIO_REDIRECT", "ISTIO_IN_REDIRECT",
                  "-j ISTIO_REDIRECT", "policy ACCEPT"):
        assert label in text


def test_sequence_figure_lanes(outbound):
    text = _texts(sequence_figure(outbound))
    for label in ("app", "kernel", "proxy\n(Envoy)", "peer /\nnode", "PassthroughCluster"):
        assert label in text


def test_loop_growth_figure(looping):
    assert looping.outcome == "loop" and looping.loop is not None
    fig = loop_growth_figure(looping.loop, hops=500)
    text = _texts(fig)
    assert "TCP connections open" in text and "EADDRNOTAVAIL" in text
    assert "the first 500 turns" in text


def test_ablation_figure_small_frame():
    import pandas

    frame = pandas.DataFrame([["loop", "no change"], ["bypasses proxy", "rule absent"]],
                             index=[UID, GID], columns=["outbound", "inbound"])
    text = _texts(ablation_figure(frame))
    assert "LOOP" in text and "bypass" in text and "n/a" in text and "outbound" in text


def test_figures_are_deterministic_and_fast(outbound):
    for make in (lambda: hooks_figure(outbound, step=12), chains_figure,
                 lambda: sequence_figure(outbound)):
        start = time.perf_counter()
        fig = make()
        assert time.perf_counter() - start < 1.5  # target 0.3 s; slack for loaded CI
        assert png_bytes(fig) == png_bytes(make())


def test_no_pyplot_figures_leak(outbound):
    from matplotlib import pyplot as plt

    before = plt.get_fignums()
    hooks_figure(outbound)
    chains_figure()
    assert plt.get_fignums() == before


def test_every_lesson_figure_is_readable_in_a_narrow_notebook(outbound, inbound, looping):
    """Shown in an 860 px output area (JupyterLab at 1280 px with the file browser open),
    no text of the lessons' figures is under 12 px (9 pt)."""
    from meshlab.viz.style import MIN_TEXT_PX, SHOWN_WIDTH_PX, shown_text_px, smallest_text_px

    figures = {
        "hooks (step 12)": hooks_figure(outbound, step=12),
        "hooks (map)": hooks_figure(),
        "chains": chains_figure(),
        "sequence": sequence_figure(inbound),
        "loop": loop_growth_figure(looping.loop, hops=500),
        "ablation": ablation_figure(_lesson_like_matrix()),
    }
    for name, fig in figures.items():
        assert smallest_text_px(fig, SHOWN_WIDTH_PX) >= MIN_TEXT_PX, name
    # the rule itself: 7.5 pt in a 12 in figure (the old hooks picture) would be 7.5 px
    old = hooks_figure()
    old.set_size_inches(12, 7)
    assert shown_text_px(old, 7.5, SHOWN_WIDTH_PX) < MIN_TEXT_PX


def _lesson_like_matrix():
    """An ablation matrix the size of lesson 05's: 23 rows named by chain and number (the
    longest "ISTIO_IN_REDIRECT 1"), 15 scenarios."""
    import pandas

    rows = ["ISTIO_IN_REDIRECT 1", *(f"ISTIO_OUTPUT {i}" for i in range(1, 20)),
        "ISTIO_OUTPUT 2 + ISTIO_OUTPUT 5", "ISTIO_OUTPUT 3 + ISTIO_OUTPUT 6",
        "ISTIO_OUTPUT 4 + ISTIO_OUTPUT 7"]
    columns = [f"inbound-excluded-{i:05d}" for i in range(14)] + ["inbound-to-15001"]
    looks = ["loop", "bypasses proxy", "no change", "delivered elsewhere", "rule absent"]
    return pandas.DataFrame([[looks[(r + c) % len(looks)] for c in range(len(columns))]
                             for r in range(len(rows))], index=rows, columns=columns)


def test_step_player_pictures_are_svg_with_text_as_text(outbound):
    from meshlab.viz.style import svg_bytes

    svg = svg_bytes(hooks_figure(outbound, step=12))
    assert svg.startswith(b"<?xml") and b"<text" in svg and b"Step 12" in svg
    assert svg == svg_bytes(hooks_figure(outbound, step=12)), "stable bytes"
