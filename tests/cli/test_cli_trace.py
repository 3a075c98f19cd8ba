"""``meshlab trace``: the command-line contract (run through its own parser, so the test does
not depend on the other sub-commands existing yet)."""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import sys
from pathlib import Path

import pytest

from meshlab.cli import trace as trace_cli
from meshlab.errors import MeshlabError

_spec = importlib.util.spec_from_file_location(
    "nf_istio_fixtures", Path(__file__).parents[1] / "netfilter" / "nf_istio_fixtures.py")
_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixtures)


def meshlab(argv, capsys, stdin: str | None = None) -> tuple[int, str, str]:
    """Run like ``meshlab.cli.main.main`` does: MeshlabError -> stderr, exit 2."""
    parser = argparse.ArgumentParser(prog="meshlab")
    trace_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    if stdin is not None:
        sys.stdin = io.StringIO(stdin)
    try:
        code = args.func(args)
    except MeshlabError as error:
        print(f"meshlab {args.command}: error: {error}", file=sys.stderr)
        code = 2
    finally:
        sys.stdin = sys.__stdin__
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def rules(tmp_path) -> str:
    path = tmp_path / "rules.txt"
    path.write_text(_fixtures.ISTIO_SAVE)
    return str(path)


def test_from_pod_json(rules, capsys):
    code, out, _ = meshlab(["trace", "--rules", rules, "--from-pod", "--pod-ip", "10.244.0.5",
                            "--uid", "1000", "--dst", "10.244.0.9:8080", "--json"], capsys)
    assert code == 0
    data = json.loads(out)
    assert data["direction"] == "outbound" and data["verdict"] == "ACCEPT"
    assert data["original_dst"] == {"ip": "10.244.0.9", "port": 8080}
    assert data["delivered"] == {"ip": "127.0.0.1", "port": 15001}
    assert data["nat"] == {"target": "REDIRECT", "chain": "ISTIO_REDIRECT", "rule": 1}
    assert data["hits"] == [
        {"table": "nat", "chain": "OUTPUT", "rule": 1, "target": "ISTIO_OUTPUT"},
        {"table": "nat", "chain": "ISTIO_OUTPUT", "rule": 9, "target": "ISTIO_REDIRECT"},
        {"table": "nat", "chain": "ISTIO_REDIRECT", "rule": 1, "target": "REDIRECT"}]


def test_to_pod_json_from_stdin(capsys):
    code, out, _ = meshlab(["trace", "--rules", "-", "--to-pod", "--pod-ip", "10.244.0.5",
                            "--src", "10.244.0.9:51000", "--dst", "10.244.0.5:9080", "--json"],
                           capsys, stdin=_fixtures.ISTIO_RESTORE)
    assert code == 0
    data = json.loads(out)
    assert data["direction"] == "inbound"
    assert data["delivered"] == {"ip": "10.244.0.5", "port": 15006}
    assert data["nat"]["chain"] == "ISTIO_IN_REDIRECT"


def test_proxy_uid_goes_out_untouched(rules, capsys):
    code, out, _ = meshlab(["trace", "--rules", rules, "--from-pod", "--pod-ip", "10.244.0.5",
                            "--uid", "1337", "--dst", "10.244.0.9:8080", "--json"], capsys)
    assert code == 0 and json.loads(out)["nat"] is None


def test_readable_table(rules, capsys):
    code, out, _ = meshlab(["trace", "--rules", rules, "--from-pod", "--pod-ip", "10.244.0.5",
                            "--uid", "1000", "--dst", "10.244.0.9:8080"], capsys)
    assert code == 0
    assert "ISTIO_REDIRECT" in out and "127.0.0.1:15001" in out and "10.244.0.9:8080" in out


@pytest.mark.parametrize(("argv_tail", "words"), [
    (["--from-pod", "--pod-ip", "10.244.0.5", "--dst", "10.244.0.9:80"], "--uid"),
    (["--from-pod", "--pod-ip", "nope", "--uid", "1", "--dst", "10.244.0.9:80"], "--pod-ip"),
    (["--from-pod", "--pod-ip", "10.244.0.5", "--uid", "1", "--dst", "10.244.0.9"], "IP:PORT"),
    (["--to-pod", "--pod-ip", "10.244.0.5", "--dst", "10.244.0.5:80"], "--src"),
])
def test_bad_arguments_exit_2_with_a_message(rules, capsys, argv_tail, words):
    code, out, err = meshlab(["trace", "--rules", rules, *argv_tail], capsys)
    assert code == 2 and out == "" and words in err and "Traceback" not in err


def test_bad_rules_file_exits_2_with_line_and_column(tmp_path, capsys):
    path = tmp_path / "bad.txt"
    path.write_text("*nat\n-A OUTPUT -p tcp --frob 1 -j RETURN\nCOMMIT\n")
    code, _, err = meshlab(["trace", "--rules", str(path), "--from-pod", "--pod-ip",
                            "10.244.0.5", "--uid", "1", "--dst", "10.244.0.9:80"], capsys)
    assert code == 2 and "line 2, column 18" in err and "--frob" in err


def test_missing_rules_file_exits_2(tmp_path, capsys):
    code, _, err = meshlab(["trace", "--rules", str(tmp_path / "none"), "--from-pod",
                            "--pod-ip", "10.244.0.5", "--uid", "1", "--dst", "10.0.0.1:80"],
                           capsys)
    assert code == 2 and "cannot read rules file" in err


def test_through_meshlab_main_when_every_subcommand_exists(rules, capsys):
    try:
        from meshlab.cli.main import build_parser, main
        build_parser()
    except (ImportError, AttributeError) as missing:
        pytest.skip(f"meshlab.cli.main cannot load every sub-command yet: {missing}")
    code = main(["trace", "--rules", rules, "--from-pod", "--pod-ip", "10.244.0.5", "--uid",
                 "1000", "--dst", "10.244.0.9:8080", "--json"])
    assert code == 0 and json.loads(capsys.readouterr().out)["delivered"]["port"] == 15001
