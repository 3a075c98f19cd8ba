"""`meshlab rules`: istio-iptables flags in, the exact restore documents (or save form) out."""

from __future__ import annotations

import argparse
import importlib
import os
from pathlib import Path

import pytest

from meshlab.cli import rules as rules_cli
from meshlab.errors import MeshlabError
from meshlab.istio.capture import DEFAULT_ISTIO_INIT_ARGS, CaptureConfig, generate

GOLDEN = Path(
    os.environ.get("MESHLAB_ISTIO_GOLDEN")
    or Path(__file__).resolve().parents[2].parent / "shared/reference/istio-iptables/golden"
)


def meshlab(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run `meshlab ARGV` the way meshlab.cli.main does, with only the rules sub-command."""
    parser = argparse.ArgumentParser(prog="meshlab")
    subparsers = parser.add_subparsers(dest="command", required=True)
    rules_cli.register(subparsers)
    args = parser.parse_args(argv)
    status = args.func(args)
    out, err = capsys.readouterr()
    return status, out, err


def test_no_flags_prints_the_default_istio_init_rules(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = meshlab(["rules"], capsys)
    assert status == 0
    assert out == generate(CaptureConfig.from_args(DEFAULT_ISTIO_INIT_ARGS)).restore_v4
    assert "-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN\n" in out
    assert out.startswith("* nat\n-N ISTIO_INBOUND\n") and out.endswith("COMMIT\n")
    assert err == ""


def test_bare_istio_iptables_word_means_no_flags_at_all(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = meshlab(["rules", "istio-iptables"], capsys)
    assert out == generate(CaptureConfig()).restore_v4
    assert "-j ISTIO_IN_REDIRECT\n" in out and "PREROUTING" not in out


def test_istio_flags_pass_through_untouched(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["-p", "15001", "-b", "9080", "-x", "", "-i", "10.0.0.0/8", "--redirect-dns=false"]
    _, out, _ = meshlab(["rules", *argv], capsys)
    assert out == generate(CaptureConfig.from_args(argv)).restore_v4
    assert "-A ISTIO_INBOUND -p tcp --dport 9080 -j ISTIO_IN_REDIRECT\n" in out


def test_cni_golden_through_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    golden = GOLDEN / "cni-basic.golden"
    if not golden.exists():
        pytest.skip(f"golden {golden} not found; set MESHLAB_ISTIO_GOLDEN")
    flags = ["-m", "REDIRECT", "-i", "*", "-x", "", "-b", "*", "-d", "15020,15021,15090",
             "-o", "15020", "-u", "1337", "-g", "1337"]  # fmt: skip
    _, out, _ = meshlab(["rules", "--", *flags], capsys)
    assert out == golden.read_text()


def test_own_options_anywhere_before_double_dash(capsys: pytest.CaptureFixture[str]) -> None:
    _, first, _ = meshlab(["rules", "--ipv6", "-b", "*", "-i", "*"], capsys)
    _, last, _ = meshlab(["rules", "-b", "*", "-i", "*", "--ipv6"], capsys)
    assert first == last
    expected = generate(CaptureConfig.from_args(["-b", "*", "-i", "*"], enable_ipv6=True))
    assert first == expected.restore_v4 + expected.restore_v6  # type: ignore[operator]
    assert first.count("COMMIT\n") == 2 and "::6/128" in first


def test_dns_servers_are_split_by_family(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["rules", "--ipv6", "--dns-server", "10.96.0.10", "--dns-server=fd00::a",
            "--redirect-dns", "-i", "*"]  # fmt: skip
    _, out, _ = meshlab(argv, capsys)
    assert "-d 10.96.0.10/32 -j REDIRECT --to-ports 15053" in out
    assert "-d fd00::a/128 -j REDIRECT --to-ports 15053" in out


def test_env_option_sets_env_only_knobs(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = meshlab(["rules", "--env", "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE=888", "-i", "*"],
                        capsys)  # fmt: skip
    assert "-A ISTIO_OUTPUT -m owner --gid-owner 888 -j RETURN\n" in out


def test_format_save_is_what_iptables_save_shows(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = meshlab(["rules", "--format", "save"], capsys)
    ruleset = generate(CaptureConfig.from_args(DEFAULT_ISTIO_INIT_ARGS)).ruleset_v4
    assert out == ruleset.render_save()
    assert ":ISTIO_OUTPUT - [0:0]" in out
    assert "-A ISTIO_INBOUND -p tcp -m tcp --dport 15008 -j RETURN" in out


def test_format_save_ipv6(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = meshlab(["rules", "--format=save", "--ipv6"], capsys)
    rules = generate(CaptureConfig.from_args(DEFAULT_ISTIO_INIT_ARGS, enable_ipv6=True))
    assert rules.ruleset_v6 is not None
    assert out == rules.ruleset_v4.render_save() + rules.ruleset_v6.render_save()


def test_tproxy_routing_commands_go_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, err = meshlab(["rules", "-m", "TPROXY", "-b", "*"], capsys)
    assert "ip rule add fwmark 1337 lookup 133" in err
    assert "ip route add local 0.0.0.0/0 dev lo table 133" in err
    assert "ip rule" not in out


def test_dns_without_servers_is_explained(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, err = meshlab(["rules", "--redirect-dns", "-i", "*"], capsys)
    assert "ISTIO_OUTPUT_DNS" not in out
    assert "--dns-server" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["rules", "-x", "*"], r"rejected by istio-iptables"),
        (["rules", "-b", "99999"], r"out of range"),
        (["rules", "--istio-inbound-port", "80"], r"did you mean --istio-inbound-ports\?"),
        (["rules", "-i", "10.0.0.0/99"], r"not a CIDR"),
        (["rules", "--env", "NOEQUALS"], r"write NAME=VALUE"),
        (["rules", "--dns-server", "resolver"], r"not an IP address"),
        (["rules", "-b"], r"needs a value"),
    ],
)
def test_bad_input_is_a_meshlab_error(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(MeshlabError, match=message):
        meshlab(argv, capsys)


def test_owner_group_names_cannot_be_modelled_in_save_form(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, out, _ = meshlab(["rules", "--env", "ISTIO_OUTBOUND_OWNER_GROUPS=java"], capsys)
    assert "--gid-owner java" in out  # the restore text is exact
    with pytest.raises(MeshlabError, match=r"owner group 'java' is a name"):
        meshlab(["rules", "--format", "save", "--env", "ISTIO_OUTBOUND_OWNER_GROUPS=java"], capsys)


def test_help_lists_the_istio_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        meshlab(["rules", "--help"], capsys)
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "-b/--istio-inbound-ports" in out and "--format {restore,save}" in out


def test_split_arguments() -> None:
    own, istio = rules_cli.split_arguments(
        ["-b", "*", "--format", "save", "--ipv6", "--env=A=1", "--", "--ipv6"]
    )
    assert own == ["--format", "save", "--ipv6", "--env=A=1"]
    assert istio == ["-b", "*", "--ipv6"]


def test_through_meshlab_main(capsys: pytest.CaptureFixture[str]) -> None:
    """The real entry point, once every sub-command module exists."""
    try:
        main = importlib.import_module("meshlab.cli.main")
        main.build_parser()
    except ImportError as error:
        pytest.skip(f"meshlab.cli.main cannot load every sub-command yet: {error}")
    assert main.main(["rules", "-b", "*", "-i", "*"]) == 0
    assert "-A ISTIO_OUTPUT -j ISTIO_REDIRECT" in capsys.readouterr().out
    assert main.main(["rules", "-x", "*"]) == 2
    assert "meshlab rules: error:" in capsys.readouterr().err
