"""The annotation explorer: annotations in, istio-init arguments and rules out."""

from __future__ import annotations

import time

from meshlab.widgets import AnnotationExplorer


def _classes(widget) -> set[str]:
    found = set(widget._dom_classes)
    for child in getattr(widget, "children", ()):
        found |= _classes(child)
    return found


def test_contract_classes_and_example():
    w = AnnotationExplorer()
    assert {"meshlab-annotation-explorer", "meshlab-annotations-input", "meshlab-init-args",
            "meshlab-annotation-rules", "meshlab-error"} <= _classes(w)
    assert "-d 15090,15021,9091,15020" in w.args_text.value
    assert "+ -A ISTIO_INBOUND -p tcp --dport 9091 -j RETURN" in w.static()
    assert w.error.value == ""


def test_annotations_change_args_and_rules():
    w = AnnotationExplorer("")
    assert "Same rules" in w.summary.value
    w.annotations.value = "sidecar.istio.io/interceptionMode: TPROXY"
    assert "-m TPROXY" in w.args_text.value and "UID 0, GID 1337" in w.args_text.value
    assert "ISTIO_TPROXY" in w.rules_text.value
    # an unquoted number is read as the text written
    w.annotations.value = "traffic.sidecar.istio.io/excludeOutboundPorts: 5432"
    assert "-o 5432" in w.args_text.value
    assert "+ -A ISTIO_OUTPUT -p udp --dport 5432 -j RETURN" in w.static()


def test_bad_input_is_a_message_and_last_result_stays():
    w = AnnotationExplorer("traffic.sidecar.istio.io/excludeOutboundPorts: \"5432\"")
    before = w.rules_text.value
    w.annotations.value = "traffic.sidecar.istio.io/excludeOutboundPorts: abc"
    assert "Problem" in w.error.value and "Traceback" not in w.error.value
    assert w.rules_text.value == before
    w.annotations.value = "key: [unclosed"
    assert "line 1" in w.error.value
    w.annotations.value = ""
    assert w.error.value == ""


def test_responds_in_under_100_ms():
    w = AnnotationExplorer("")
    w.annotations.value = "traffic.sidecar.istio.io/excludeInboundPorts: \"1234\""  # warm up
    start = time.perf_counter()
    w.annotations.value = "traffic.sidecar.istio.io/excludeOutboundIPRanges: \"10.1.0.0/16\""
    assert time.perf_counter() - start < 0.1
