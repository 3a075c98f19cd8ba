"""The step player and the packet builder show the rules passed over, with their reasons."""

from __future__ import annotations

from meshlab.netfilter.trace import RuleEval
from meshlab.scenarios import run_scenario
from meshlab.widgets import PacketBuilder, StepPlayer
from meshlab.widgets.reasons import passed_over_before, reasons_html

OWNER = "`-m owner --uid-owner 1337`: the socket&#x27;s owner is UID 1000"


def test_the_step_where_nothing_matches_says_why_each_rule_did_not():
    player = StepPlayer("outbound")
    player.slider.value = [s.n for s in player.steps].index(11)
    assert "Passed over" in player.text.value and OWNER in player.text.value
    assert "nat ISTIO_OUTPUT" in player.text.value


def test_the_rules_passed_over_before_a_step_are_those_of_its_chain_visit():
    walk = run_scenario("outbound")
    hit = next(e for e in walk.events if e.kind == "rule" and e.matched
               and e.chain == "ISTIO_OUTPUT")
    before = passed_over_before(walk, hit)
    assert [e.rule for e in before] == list(range(1, hit.rule))
    assert all(e.chain == "ISTIO_OUTPUT" and not e.matched and e.why_not for e in before)
    assert passed_over_before(walk, None) == []


def test_the_packet_builder_says_why_the_app_is_not_exempt():
    builder = PacketBuilder()
    assert OWNER in builder.summary.value
    builder.process.value = "envoy"  # UID 1337: rule 4 matches, so it is not passed over
    assert OWNER not in builder.summary.value


def test_reasons_are_capped_per_chain_and_escaped():
    packet = None
    evaluations = [RuleEval("OUTPUT", "filter", "OUTPUT", n, f"-d 10.0.0.{n}/32 -j DROP", False,
                            "", packet, "DROP", f"`-d 10.0.0.{n}/32`: <b>x</b>")
                   for n in range(1, 6)]
    html = reasons_html(evaluations, limit=3)
    assert html.count("<li>") == 4 and "... and 2 more" in html and "<b>x</b>" not in html
    assert reasons_html([]) == ""
