"""`meshlab rules --ambient` and `meshlab trace --mark/--ambient` on the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_ambient_golden import FIXTURE_PROBE_V6, INPOD_CASES, golden

from meshlab.cli.main import main
from meshlab.istio.ambient import AgentConfig, inpod_rules, node_rules


def meshlab(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse
        code = exit_.code if isinstance(exit_.code, int) else 2
    out, err = capsys.readouterr()
    return code, out, err


def without_probe_lines(text: str) -> str:
    lines = text.split("\n")
    assert lines[:2] == ["iptables-save", "ip6tables-save"]
    return "\n".join(lines[2:]) + "\n"


def test_defaults_are_the_charts(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = meshlab(["rules", "--ambient"], capsys)
    assert code == 0
    assert out == inpod_rules(AgentConfig(dns_capture=True)).ipv4
    assert "-s 169.254.7.127 -p tcp -m tcp -j ACCEPT" in out and "15053" in out
    assert "ip rule add fwmark 0x111/0xfff pref 32764 lookup 100" in err
    assert all(line.startswith("#") for line in err.splitlines())


@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("name", sorted(INPOD_CASES))
def test_goldens_through_the_command_line(name: str, ipv6: bool,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    dns, annotations = INPOD_CASES[name]
    argv = ["rules", "--ambient", "--probe-snat-v6", FIXTURE_PROBE_V6]
    argv += [] if dns else ["--no-dns-capture"]
    argv += ["--ipv6"] if ipv6 else []
    for key, value in annotations.items():
        argv += ["--annotation", f"{key}={value}"]
    code, out, _ = meshlab(argv, capsys)
    assert code == 0
    assert out == without_probe_lines(golden(f"{name}_ipv6" if ipv6 else name))


@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
def test_node_rules_through_the_command_line(ipv6: bool,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = meshlab(["rules", "--ambient", "--node", *(["--ipv6"] if ipv6 else [])],
                             capsys)
    assert code == 0
    assert out == without_probe_lines(golden("hostprobe_ipv6" if ipv6 else "hostprobe"))
    assert "ipset" in err


def test_format_save_and_probe_address(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = meshlab(["rules", "--ambient", "--format", "save", "--probe-snat",
                            "169.254.9.9", "--no-dns-capture"], capsys)
    assert code == 0
    config = AgentConfig(dns_capture=False, probe_snat_v4="169.254.9.9")  # type: ignore[arg-type]
    assert out == inpod_rules(config).ruleset(4).render_save()
    code, out, _ = meshlab(["rules", "--ambient", "--node", "--probe-snat", "169.254.9.9"],
                           capsys)
    assert out == node_rules(config).ipv4


BAD = [
    (["--ambient", "-p", "15001"], "--ambient takes no istio-iptables flags"),
    (["--no-dns-capture"], "--no-dns-capture is an ambient-mode option"),
    (["--node"], "--node is an ambient-mode option"),
    (["--annotation", "a=b"], "--annotation is an ambient-mode option"),
    (["--ambient", "--dns-server", "10.96.0.10"], "--dns-server applies to istio-iptables"),
    (["--ambient", "--annotation", "novalue"], "write KEY=VALUE"),
    (["--ambient", "--annotation", "sidecar.istio.io/inject=false"], "the agent reads only"),
    (["--ambient", "--annotation", "ambient.istio.io/dns-capture=yes"], "'yes' is not a boolean"),
    (["--ambient", "--annotation", "ambient.istio.io/dns-capture=true",
      "--annotation", "ambient.istio.io/dns-capture=false"], "is given twice"),
    (["--ambient", "--annotation", "istio.io/reroute-virtual-interfaces=eth0,a:b"],
     "'a:b' is not a Linux interface name"),
    (["--ambient", "--probe-snat", "fd00::1"], "--probe-snat: fd00::1 is IPv6"),
    (["--ambient", "--probe-snat-v6", "x"], "--probe-snat-v6: 'x' is not an IP address"),
    (["--ambient", "--node", "--format", "save"], "use --format restore with --node"),
    (["--ambient", "--node", "--annotation", "ambient.istio.io/dns-capture=true"],
     "drop one of them"),
]


@pytest.mark.parametrize(("argv", "words"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_line_exit_2(argv: list[str], words: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = meshlab(["rules", *argv], capsys)
    assert code == 2 and out == ""
    assert err.startswith("meshlab rules: error: ") and err.count("\n") == 1, err
    assert words in err and "Traceback" not in err


# ---- meshlab trace --mark / --ambient -----------------------------------------------------------


@pytest.fixture
def ambient_rules_file(tmp_path: Path) -> str:
    path = tmp_path / "ambient.rules"
    path.write_text(inpod_rules().ipv4)
    return str(path)


def trace(capsys: pytest.CaptureFixture[str], rules: str, *extra: str) -> dict:
    code, out, err = meshlab(["trace", "--rules", rules, "--pod-ip", "10.244.0.5", "--json",
                              *extra], capsys)
    assert code == 0, err
    return json.loads(out)


def test_an_apps_connection_is_redirected_to_ztunnel(ambient_rules_file: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    result = trace(capsys, ambient_rules_file, "--from-pod", "--uid", "1000",
                   "--dst", "10.96.0.20:80", "--ambient")
    assert result["delivered"] == {"ip": "127.0.0.1", "port": 15001}


@pytest.mark.parametrize("mark", ["0x539", "1337"])
def test_ztunnels_mark_goes_out_untouched(mark: str, ambient_rules_file: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    result = trace(capsys, ambient_rules_file, "--from-pod", "--uid", "0",
                   "--dst", "10.244.1.7:15008", "--mark", mark, "--ambient")
    assert result["delivered"] == {"ip": "10.244.1.7", "port": 15008}
    assert result["nat"] is None


def test_the_mark_changes_the_verdict_in_text_form(ambient_rules_file: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    base = ["trace", "--rules", ambient_rules_file, "--pod-ip", "10.244.0.5", "--from-pod",
            "--uid", "1000", "--dst", "10.96.0.20:80"]
    code, plain, _ = meshlab(base, capsys)
    assert code == 0 and "REDIRECT 127.0.0.1:15001" in plain
    code, marked, _ = meshlab([*base, "--mark", "0x539"], capsys)
    # no rule redirected it (the REDIRECT rules it passed over are listed, with their reasons)
    assert code == 0 and "out via eth0" in marked and "rewritten by" not in marked
    assert "REDIRECT 127.0.0.1" not in marked


TRACE_BAD = [
    (["--from-pod", "--uid", "0", "--dst", "10.96.0.20:80", "--mark", "ztunnel"],
     "--mark: 'ztunnel' is not a number"),
    (["--from-pod", "--uid", "0", "--dst", "10.96.0.20:80", "--mark", "0x100000000"],
     "--mark: 4294967296 is out of range"),
    (["--to-pod", "--src", "10.244.1.7:4000", "--dst", "10.244.0.5:80", "--mark", "1"],
     "--mark applies to --from-pod only"),
]


@pytest.mark.parametrize(("argv", "words"), TRACE_BAD, ids=[" ".join(a) for a, _ in TRACE_BAD])
def test_trace_bad_mark_input(argv: list[str], words: str, ambient_rules_file: str,
                              capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = meshlab(["trace", "--rules", ambient_rules_file, "--pod-ip", "10.244.0.5",
                              *argv], capsys)
    assert code == 2 and out == ""
    assert words in err and "Traceback" not in err, err
