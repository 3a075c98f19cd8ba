"""`meshlab walk ambient-...`: the command-line contract."""

from __future__ import annotations

import json

import pytest

from meshlab.cli.main import main


def test_list_shows_the_ambient_scenarios(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["walk", "--list"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert "ambient-inbound" in names and "ambient-outbound" in names
    assert names.index("inbound") < names.index("ambient-inbound")


def test_inbound_json_sees_the_peers_own_ip(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["walk", "ambient-inbound", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["scenario"] == "ambient-inbound" and data["outcome"] == "delivered"
    assert data["delivered_to"] == {"process": "app", "port": 9080,
                                    "sees_source": "10.244.0.13"}
    assert [s["n"] for s in data["steps"] if s["n"] is not None] == [
        f"A{i}" for i in range(1, 10)]
    assert set(data["steps"][0]) == {"n", "actor", "hook", "table", "chain", "rule", "text",
                                     "decision"}


def test_outbound_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["walk", "ambient-outbound", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["delivered_to"]["sees_source"] == "10.244.0.12"


def test_without_match_loops(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["walk", "ambient-outbound", "--without-match",
                 "-m mark ! --mark 0x539/0xfff", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["outcome"] == "loop"
    assert data["loop"]["cycle"] == ["ztunnel:15001", "OUTPUT", "ISTIO_OUTPUT",
                                     "ztunnel:15001"]


def test_without_rule_breaks_the_reply(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["walk", "ambient-inbound", "--without-rule",
                 "ip rule add fwmark 0x111/0xfff pref 32764 lookup 100"]) == 0
    out = capsys.readouterr().out
    assert "outcome: timeout" in out and "never completes" in out
    assert "without rule: ip rule add fwmark" in out
    assert "A8 changed" in out


def test_text_names_the_mode_and_the_steps(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["walk", "ambient-dns-not-captured"]) == 0
    out = capsys.readouterr().out
    assert "ambient pod details" in out and "not modelled" in out
    assert "annotation ambient.istio.io/dns-capture: false" in out
    assert "the ambient steps:" in out


@pytest.mark.parametrize(("argv", "says"), [
    (["walk", "ambient-inbound", "--without-match", "-m owner --uid-owner 1337"],
     "no rule contains"),
    (["walk", "inbound", "--without-match", "-m mark ! --mark 0x539/0xfff"],
     "not an ambient pod"),
    (["walk", "ambient-inbound", "--flags", "-p 15001 -z 15006 -u 1337 -m REDIRECT"],
     "flags do not apply"),
    (["walk", "ambient-inbound", "--without-rule", "ip rule add fwmark 1 lookup 2"],
     "no policy routing"),
])
def test_errors_are_clear(argv: list[str], says: str,
                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert says in capsys.readouterr().err
