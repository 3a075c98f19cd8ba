"""The rule lab of an ambient pod (lesson 08): istio-cni's rules and the two ip commands."""

from __future__ import annotations

from meshlab.widgets import RuleLab


def test_the_rule_lab_of_an_ambient_pod_breaks_the_reply_path() -> None:
    lab = RuleLab(["ambient-inbound", "ambient-outbound"], ambient=True)
    assert "ambient pod" in lab.children[0].value
    assert any(b.description.startswith("ip rule add fwmark") for b in lab.toggles)
    for box in lab.toggles:
        box.value = not box.description.startswith("ip rule")
    result = lab.static()
    assert result.loc["ambient-inbound", "change"] == "timeout"
    assert result.loc["ambient-outbound", "change"] == "no change"
