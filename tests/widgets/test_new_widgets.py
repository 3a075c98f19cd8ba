"""The rules tracer (lesson 06) and the recorded-run browser (lesson 07), driven from code."""

from __future__ import annotations

import pandas

from meshlab.exercises import debug_dump
from meshlab.live.record import load
from meshlab.widgets import (
    RecordedRunBrowser,
    RulesTracer,
    delivery_text,
    listing,
    recorded_scenarios,
    scenario_overview,
)


def test_tracer_traces_a_pasted_dump_outbound_and_inbound():
    t = RulesTracer(debug_dump())
    assert "meshlab-rules-tracer" in t._dom_classes
    assert "127.0.0.1:15001" in t.summary.value and t.error.value == ""
    frame = t.static()
    assert isinstance(frame, pandas.DataFrame) and "why not" in frame.columns
    assert frame["matched"].tolist().count("yes") >= 2
    owner = frame[frame["rule"] == "-m owner --uid-owner 1337 -j RETURN"]
    assert "1000" in owner["why not"].iloc[0], "each passed-over rule says why"
    assert (frame[frame["matched"] == "yes"]["why not"] == "").all()
    t.direction.value = "inbound"
    t.dst.value = "10.244.0.5"
    assert t.uid.disabled and "no owner" in t.note.value
    assert "15006" in t.summary.value
    t.direction.value = "outbound"
    t.dst.value = "10.244.0.9"
    assert "destination unchanged" in t.summary.value


def test_tracer_shows_the_parsers_message_not_a_traceback():
    t = RulesTracer("*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -p tcp --dprt 80 -j RETURN\nCOMMIT\n")
    message = t.error.value
    assert "line 3" in message and "--dprt" in message and "fix:" in message
    assert "<pre" in message and "^" in message, "the caret keeps its place"
    assert "Traceback" not in message and message.count("\n") < 8
    assert "No trace" in t.result.value
    t.rules.value = ""
    assert "paste the output of iptables-save" in t.error.value


def test_tracer_refuses_out_of_range_values():
    t = RulesTracer(debug_dump())
    t.port.value = "70000"
    assert "out of range" in t.error.value
    t.port.value = "9080"
    t.mark.value = "0x539"  # as iptables prints a mark
    assert t.error.value == ""
    t.mark.value = "0xZZ"
    assert "not a hexadecimal number" in t.error.value
    t.mark.value = "-1"
    assert "not a whole number" in t.error.value


def test_recorded_run_browser_shows_model_and_kernel_side_by_side():
    document = load()
    b = RecordedRunBrowser(document)
    assert "meshlab-recorded-run-browser" in b._dom_classes
    assert "as root on a real Linux kernel" in b.caption.value
    assert document["recorded"] in b.caption.value
    b.scenario.value = "outbound"
    frame = b.static()
    assert list(frame.columns) == ["model", "real kernel", "agree"]
    assert any(i.startswith("counter of nat ") for i in frame.index)
    assert "real kernel" in b.result.value
    assert "[" not in b.result.value.split("<table")[1].replace("[0:0]", ""), "no Python lists"


def test_recorded_run_browser_without_a_recording_says_so():
    b = RecordedRunBrowser({"verify": {"scenarios": []}})
    assert "no scenarios" in b.result.value


def test_readable_tables_have_no_python_reprs():
    assert listing([15001, 15006]) == "15001, 15006" and listing([]) == "none"
    assert delivery_text(["app", 9080, "127.0.0.6"]) == \
        "app on port 9080 (it sees the client as 127.0.0.6)"
    assert delivery_text(None).startswith("nobody")
    overview = scenario_overview(["localhost", "own-service"])
    text = overview.to_string()
    assert "[" not in text and "'" not in text
    assert overview.loc["own-service", "Envoy listeners"] == "15001, 15006"
    whole = recorded_scenarios(load())
    assert len(whole) >= 10 and set(whole["agree"]) <= {"yes", "NO"}


def test_a_bad_annotation_is_named_first_with_its_value_and_what_is_accepted():
    from meshlab.widgets import AnnotationExplorer

    a = AnnotationExplorer()
    a.annotations.value = 'traffic.sidecar.istio.io/excludeInboundPorts: "abc"'
    message = a.error.value.split("<b>Problem:</b> ")[1]
    assert message.startswith("Invalid value &#x27;abc&#x27; for annotation "
                              "traffic.sidecar.istio.io/excludeInboundPorts")
    assert "&lt;dict&gt;" not in message and "comma list of ports" in message


def test_plain_text_form_fits_what_ipywidgets_keeps():
    """ipywidgets cuts a widget's text/plain at 110 characters: the sentence must fit."""
    from meshlab.widgets import STORED_WIDGET_NOTE

    text = repr(RecordedRunBrowser(load()))
    assert len(text) <= 110 and text.endswith("to use it.")
    assert "Run -> Run All Cells" in STORED_WIDGET_NOTE
