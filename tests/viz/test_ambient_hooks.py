"""The hooks picture of an ambient walk, as lesson 08 shows it: ztunnel's sockets and
istio-cni's chains, the pod the walk is about, mangle's mark rules on their own table."""

from __future__ import annotations

from meshlab.scenarios import run_scenario
from meshlab.viz import hooks_figure
from meshlab.viz.path import stops, subject_pod
from meshlab.viz.style import figure_texts


def test_an_ambient_picture_names_ztunnel_not_envoy() -> None:
    text = " ".join(figure_texts(hooks_figure(run_scenario("ambient-outbound"), step="A3")))
    assert "ztunnel :15001" in text and "ISTIO_PRERT" in text
    assert "Envoy :15001" not in text and "virtualOutbound" not in text


def test_the_called_pod_is_the_subject_of_an_inbound_ambient_walk() -> None:
    walk = run_scenario("ambient-inbound")
    assert subject_pod(walk) == "details"
    places = [s.place for s in stops(walk)]
    assert places[0] == "peer_in"
    assert "envoy_other" in places  # ztunnel's 15008 box: HBONE is not redirected


def test_mangle_rules_are_drawn_on_their_table() -> None:
    places = [s.place for s in stops(run_scenario("ambient-outbound"))]
    assert "ISTIO_OUTPUT" in places  # nat ISTIO_OUTPUT, with its REDIRECT to 15001
    assert "OUTPUT/mangle" in places  # mangle OUTPUT -j ISTIO_OUTPUT, not the nat box
