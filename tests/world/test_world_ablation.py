"""What each rule is for: removing the exemptions must show the two loops."""

from __future__ import annotations

import pandas
import pytest

from meshlab.ablation import (
    CHANGES,
    ablation,
    ablation_detail,
    classify,
    default_rule_groups,
    summary,
)
from meshlab.scenarios import catalog, run_scenario

UID = "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN"
GID = "-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN"
SRC6 = "-A ISTIO_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN"


@pytest.fixture(scope="module")
def table() -> pandas.DataFrame:
    return ablation()


def test_shape_every_rule_and_every_scenario(table: pandas.DataFrame) -> None:
    groups = default_rule_groups()
    assert list(table.index) == [g.label for g in groups]
    # the sidecar's matrix: every sidecar scenario (the ambient ones have their own matrix)
    assert list(table.columns) == [n for n, s in catalog().items() if not s.ambient]
    assert set(table.to_numpy().ravel()) <= set(CHANGES)
    single = [g for g in groups if len(g.specs) == 1]
    from meshlab.istio.capture import default_rules

    assert len(single) == len(list(default_rules().rules()))  # every default rule, once


def test_uid_and_gid_twins_together_loop_outbound(table: pandas.DataFrame) -> None:
    assert table.loc[UID, "outbound"] == "no change"  # the GID twin still exempts Envoy
    assert table.loc[GID, "outbound"] == "no change"
    assert table.loc[f"{UID} + {GID}", "outbound"] == "loop"
    assert table.loc[f"{UID} + {GID}", "outbound-service"] == "loop"


def test_127_0_0_6_rule_is_what_stops_the_inbound_loop(table: pandas.DataFrame) -> None:
    assert table.loc[SRC6, "inbound"] == "loop"
    assert table.loc[SRC6, "inbound-undeclared-port"] == "loop"
    assert table.loc[SRC6, "outbound"] == "no change"


def test_inbound_redirect_rules_bypass_the_proxy(table: pandas.DataFrame) -> None:
    assert table.loc["-A PREROUTING -p tcp -j ISTIO_INBOUND", "inbound"] == "bypasses proxy"
    assert table.loc["-A OUTPUT -j ISTIO_OUTPUT", "outbound"] == "bypasses proxy"
    assert table.loc["-A ISTIO_INBOUND -p tcp -m tcp --dport 15021 -j RETURN",
                     "inbound-excluded-15021"] == "now proxied"


def test_detail_and_summary(table: pandas.DataFrame) -> None:
    detail = ablation_detail(["inbound"])
    assert {"rule", "scenario", "change", "outcome_before", "outcome_after"} <= set(detail)
    loops = detail[detail["change"] == "loop"]
    assert SRC6 in set(loops["rule"])
    assert "inbound: loop" in summary(table)[SRC6]


def test_classify_same_walk_is_no_change() -> None:
    walk = run_scenario("inbound")
    assert classify(walk, walk) == "no change"
