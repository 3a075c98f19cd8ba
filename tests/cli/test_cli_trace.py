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


def test_all_json_lists_every_rule_tried_with_why_the_others_did_not_match(rules, capsys):
    code, out, _ = meshlab(["trace", "--rules", rules, "--from-pod", "--pod-ip", "10.244.0.5",
                            "--uid", "1000", "--dst", "10.244.0.9:8080", "--all", "--json"],
                           capsys)
    assert code == 0
    data = json.loads(out)
    evaluated = data["evaluated"]
    for entry in evaluated:
        assert set(entry) == {"table", "chain", "rule", "text", "matched", "why_not"}
        assert isinstance(entry["matched"], bool)
        if entry["matched"]:
            assert entry["why_not"] is None
        else:
            assert isinstance(entry["why_not"], str) and entry["why_not"]
    # in order: OUTPUT jumps to ISTIO_OUTPUT, rules 1-8 pass, 9 jumps to ISTIO_REDIRECT
    walked = [(e["chain"], e["rule"], e["matched"]) for e in evaluated]
    assert walked[:10] == [("OUTPUT", 1, True),
                           *[("ISTIO_OUTPUT", n, False) for n in range(1, 9)],
                           ("ISTIO_OUTPUT", 9, True)]
    owner = next(e for e in evaluated if e["text"] == "-m owner --uid-owner 1337 -j RETURN")
    assert owner["why_not"] == "`-m owner --uid-owner 1337`: the socket's owner is UID 1000"
    # the hits are the matched rules, and --json without --all has no "evaluated"
    assert [(h["chain"], h["rule"]) for h in data["hits"]] == [
        (e["chain"], e["rule"]) for e in evaluated if e["matched"]]
    code, out, _ = meshlab(["trace", "--rules", rules, "--from-pod", "--pod-ip", "10.244.0.5",
                            "--uid", "1000", "--dst", "10.244.0.9:8080", "--json"], capsys)
    plain = json.loads(out)
    assert "evaluated" not in plain
    assert plain["passed_over"] == [{k: e[k] for k in ("table", "chain", "rule", "text",
                                                      "why_not")}
                                    for e in evaluated if not e["matched"]]


def test_text_lists_the_rules_passed_over_under_their_chain(rules, capsys):
    code, out, _ = meshlab(["trace", "--rules", rules, "--from-pod", "--pod-ip", "10.244.0.5",
                            "--uid", "1000", "--dst", "10.244.0.9:8080"], capsys)
    assert code == 0
    lines = out.splitlines()
    start = lines.index("passed over (the first condition that failed):")
    assert lines[start + 1].strip().startswith("nat ISTIO_OUTPUT")
    assert ("rule 4 (-j RETURN): `-m owner --uid-owner 1337`: the socket's owner is UID 1000"
            in [line.strip() for line in lines[start + 2:start + 10]])


def test_text_counts_what_it_does_not_list_without_all(tmp_path, capsys):
    path = tmp_path / "many.txt"
    path.write_text("*filter\n" + "".join(f"-A OUTPUT -d 10.1.0.{i}/32 -j DROP\n"
                                          for i in range(1, 31)) + "COMMIT\n")
    argv = ["trace", "--rules", str(path), "--from-pod", "--pod-ip", "10.244.0.5", "--uid",
            "1000", "--dst", "10.244.0.9:8080"]
    _, out, _ = meshlab(argv, capsys)
    assert f"... and {30 - trace_cli.REASONS_PER_CHAIN} more (--all lists every one)" in out
    _, out, _ = meshlab([*argv, "--all"], capsys)
    assert "rule 30 (-j DROP): `-d 10.1.0.30/32`: the destination is 10.244.0.9" in out
    assert "more (--all" not in out
