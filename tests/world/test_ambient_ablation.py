"""The ablation matrix over an ambient pod's rules."""

from __future__ import annotations

import pandas
import pytest

from meshlab.ablation import CHANGES, ZTUNNEL_EXEMPTION, ablation, ambient_rule_groups
from meshlab.istio.ambient import inpod_rules
from meshlab.scenarios import catalog

RESTORE = ("-t mangle -A ISTIO_OUTPUT -m connmark --mark 0x111/0xfff -j CONNMARK "
           "--restore-mark --nfmask 0xffffffff --ctmask 0xffffffff")
PROBE = "-t nat -A ISTIO_PRERT -s 169.254.7.127/32 -p tcp -m tcp -j ACCEPT"
IP_RULE = "ip rule add fwmark 0x111/0xfff pref 32764 lookup 100"


@pytest.fixture(scope="module")
def table() -> pandas.DataFrame:
    return ablation(mode="ambient")


def test_shape(table: pandas.DataFrame) -> None:
    groups = ambient_rule_groups()
    assert list(table.index) == [g.label for g in groups]
    assert len(groups) == len(list(inpod_rules().ruleset_v4.rules())) + 3
    assert list(table.columns) == [n for n, s in catalog().items() if s.ambient]
    assert set(table.to_numpy().ravel()) <= set(CHANGES)


def test_the_reply_rules_break_inbound_only(table: pandas.DataFrame) -> None:
    for row in (RESTORE, IP_RULE, "ip route add local 0.0.0.0/0 dev lo table 100"):
        assert table.loc[row, "ambient-inbound"] == "timeout"
        assert table.loc[row, "ambient-inbound-plaintext"] == "timeout"
        assert table.loc[row, "ambient-outbound"] == "no change"


def test_the_exemption_everywhere_loops_outbound(table: pandas.DataFrame) -> None:
    row = table.loc[f"{ZTUNNEL_EXEMPTION} (from every rule)"]
    assert row["ambient-outbound"] == "loop" and row["ambient-dns-captured"] == "loop"
    assert row["ambient-inbound"] == "no change"


def test_the_probe_rule_keeps_probes_away_from_ztunnel(table: pandas.DataFrame) -> None:
    assert table.loc[PROBE, "ambient-kubelet-probe"] == "now proxied"
    assert table.loc[PROBE, "ambient-ingress-mode"] == "rule absent"
