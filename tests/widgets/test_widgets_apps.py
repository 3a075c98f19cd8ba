"""The widgets work in plain Python: set traits, read the HTML; bad input -> a message."""

from __future__ import annotations

import re

import pandas

from meshlab.widgets import FlagExplorer, PacketBuilder, RuleLab, StepPlayer

UID = "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN"
GID = "-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN"


def _classes(widget) -> set[str]:
    found = set(widget._dom_classes)
    for child in getattr(widget, "children", ()):
        found |= _classes(child)
    return found


def test_step_player_contract_and_moves():
    p = StepPlayer("outbound")
    assert {"meshlab-step-player", "meshlab-play", "meshlab-back", "meshlab-next",
            "meshlab-step-slider", "meshlab-step-text", "meshlab-step-list",
            "meshlab-error"} <= _classes(p)
    assert "Step 9" in p.text.value
    first_png = p.image.value
    p.slider.value = 3
    assert "Step 12" in p.text.value and p.image.value != first_png
    current = re.findall(r"<li class='meshlab-current-step'[^>]*>(.*?)</li>", p.step_list.value)
    assert len(current) == 1 and "12." in current[0]
    p.next.click()
    assert p.slider.value == 4
    p.back.click()
    p.back.click()
    assert p.slider.value == 2
    p.play.value = 5  # the Play widget drives the slider
    assert p.slider.value == 5
    p.play_button.click()
    assert p.play.playing and p.play_button.description == "Pause"
    frame = p.static()
    assert isinstance(frame, pandas.DataFrame) and list(frame.index) == list(range(9, 16))


def test_step_player_inbound_and_bad_name():
    assert "Step 1" in StepPlayer("inbound").text.value
    bad = StepPlayer("no-such-scenario")
    assert "unknown scenario" in bad.error.value
    assert bad.slider.disabled


def test_step_player_marks_changed_steps():
    from meshlab.scenarios import run_scenario

    walk = run_scenario("outbound", without_rules=[UID, GID])
    p = StepPlayer(walk)
    assert "(changed)" in p.step_list.value or "(skipped)" in p.step_list.value


def test_rule_lab_twin_and_loop():
    lab = RuleLab(["outbound", "inbound"])
    assert {"meshlab-rule-lab", "meshlab-rule-toggle", "meshlab-rule-lab-result"} <= \
        _classes(lab)
    boxes = {b.description: b for b in lab.toggles}
    assert UID in boxes and GID in boxes
    boxes[UID].value = False
    assert "loop" not in lab.result.value.lower().replace("meshlab", "")
    assert "twin" in lab.result.value
    boxes[GID].value = False
    assert "loop" in lab.result.value
    assert lab.static().loc["outbound", "change"] == "loop"
    lab.reset()
    assert all(b.value for b in lab.toggles)
    assert "All rules are in place" in lab.result.value


def test_rule_lab_bad_scenario_is_a_message():
    lab = RuleLab(["nope"])
    assert "unknown scenario" in lab.error.value


def test_flag_explorer_diff_and_errors():
    f = FlagExplorer()
    assert {"meshlab-flag-explorer", "meshlab-flags-input", "meshlab-rules-text"} <= \
        _classes(f)
    assert "ISTIO_OUTPUT" in f.rules_text.value and "Same rules" in f.summary.value
    f.flags.value = f.flags.value.replace("15090,15021,15020", "15090,15021,15020,8080")
    assert "+ -A ISTIO_INBOUND" in f.rules_text.value and "8080" in f.static()
    good = f.rules_text.value
    f.flags.value = "-p 99999"
    assert "99999" in f.error.value and f.rules_text.value == good
    f.flags.value = "-x 'unclosed"
    assert "quote" in f.error.value
    f.flags.value = "-p 15001"
    assert f.error.value == ""


def test_packet_builder_traces():
    b = PacketBuilder()
    assert {"meshlab-packet-builder", "meshlab-trace-result"} <= _classes(b)
    assert "127.0.0.1:15001" in b.summary.value and "ISTIO_REDIRECT" in b.result.value
    b.process.value = "envoy"
    assert "eth0" in b.summary.value and "uid-owner 1337" in b.result.value
    b.destination.value = "not an ip"
    assert "not an IP address" in b.error.value
    b.destination.value = "10.244.0.9"
    assert b.error.value == "" and len(b.static()) > 0


def test_step_player_draws_the_first_picture_only_and_the_rest_on_demand():
    p = StepPlayer("outbound")
    assert list(p._frames) == [0], "only the first step's picture is drawn up front"
    assert p.image.value == p.frame(0)
    p.slider.value = 2
    assert set(p._frames) == {0, 2}
    assert p.prerender(2) == len(p.steps) - 4
    assert p.prerender() == 0 and len(p._frames) == len(p.steps)


def test_step_player_fits_its_box():
    p = StepPlayer("inbound")
    assert p.image.layout.width == "100%" and p.image.layout.height == "auto"
    assert p.step_list in p.children and p.image in p.children, "list below the picture"
    assert "flex-wrap:wrap" in p.step_list.value


def test_widgets_say_in_plain_text_that_they_must_run():
    assert "Run All Cells" in repr(StepPlayer("inbound"))
    assert "Run All Cells" in repr(FlagExplorer())


def test_flag_explorer_says_when_a_flag_replaces_a_default_list():
    from meshlab.widgets.flag_explorer import DEFAULT_FLAGS

    f = FlagExplorer()
    assert not f.flags.continuous_update
    f.flags.value = DEFAULT_FLAGS + " -d 8080"
    assert "replaces the default list 15090,15021,15020" in f.notes.value
    assert "-d 15090,15021,15020,8080" in f.notes.value
    f.flags.value = DEFAULT_FLAGS.replace("15020", "15020,8080")
    assert f.notes.value == ""


def test_packet_builder_refuses_out_of_range_values_and_explains_grey_boxes():
    b = PacketBuilder()
    assert b.uid.disabled and "greyed out" in b.id_note.value
    b.port.value = "70000"
    assert "out of range" in b.error.value and "65535" in b.error.value
    assert b.port.value == "70000", "never silently clamped"
    b.port.value = "9080"
    assert b.error.value == ""
    b.process.value = "custom UID/GID"
    assert not b.uid.disabled and b.id_note.value == ""
    b.uid.value = "-5"
    assert "not a whole number" in b.error.value
    b.uid.value = "1337"
    assert b.error.value == "" and "uid-owner 1337" in b.result.value
