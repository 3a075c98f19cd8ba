"""`meshlab walk`: the contract other checks rely on."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys

import pytest

from meshlab.cli import walk as walk_cli
from meshlab.errors import MeshlabError


def main(argv: list[str]) -> int:
    """``meshlab`` with only the walk sub-command, handling errors as cli/main.py does
    (the other sub-commands belong to other modules and may not exist yet)."""
    parser = argparse.ArgumentParser(prog="meshlab")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    walk_cli.register(subparsers)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except MeshlabError as error:
        print(f"meshlab {args.command}: error: {error}", file=sys.stderr)
        return 2


ALL_SUBCOMMANDS = all(importlib.util.find_spec(f"meshlab.cli.{name}") is not None
                      for name in ("rules", "trace", "inject", "walk", "live"))


@pytest.mark.skipif(not ALL_SUBCOMMANDS, reason="meshlab.cli.main needs every sub-command "
                    "module (rules, trace, inject, walk, live); some are not written yet")
def test_real_entry_point(capsys: pytest.CaptureFixture[str]) -> None:
    from meshlab.cli.main import main as real_main

    assert real_main(["walk", "outbound", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["outcome"] == "delivered"
    assert real_main(["walk", "nope"]) == 2


def test_walk_json_inbound(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["walk", "inbound", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["scenario"] == "inbound"
    assert data["outcome"] == "delivered"
    assert data["delivered_to"] == {"process": "app", "port": 9080, "sees_source": "127.0.0.6"}
    assert data["loop"] is None
    assert [s["n"] for s in data["steps"] if s["n"] is not None] == list(range(1, 9))


def test_walk_json_outbound_loop(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["walk", "outbound", "--without-rule", "-m owner --uid-owner 1337 -j RETURN",
                 "--without-rule", "-m owner --gid-owner 1337 -j RETURN", "--json"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["outcome"] == "loop"
    assert data["loop"]["cycle"] == ["proxy:15001", "OUTPUT", "ISTIO_OUTPUT", "ISTIO_REDIRECT",
                                     "proxy:15001"]
    assert data["loop"]["hops"] >= 1
    assert data["delivered_to"] is None


def test_walk_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["walk", "outbound"]) == 0
    out = capsys.readouterr().out
    assert "outcome: delivered to reviews" in out
    assert "15 ok" in out


def test_walk_flags(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["walk", "inbound", "--flags",
                 "-p 15001 -z 15006 -u 1337 -m REDIRECT -i * -x '' -b '' ", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["delivered_to"]["sees_source"] == "10.244.0.9"  # -b '' : no inbound capture


def test_walk_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["walk", "--list"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("inbound ")
    assert "direct-15001" in out


@pytest.mark.parametrize("argv", [
    ["walk", "no-such-scenario"],
    ["walk", "inbound", "--without-rule", "-p tcp -j NOWHERE"],
    ["walk"],
])
def test_walk_errors_exit_2_with_choices(argv: list[str],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error" in err
    assert "inbound" in err or "-j RETURN" in err
