"""Conformance: meshlab.istio.capture reproduces every upstream istio-iptables golden byte for byte.

The goldens are Istio's own test outputs (``tools/istio-iptables/pkg/capture/testdata`` and
``cni/pkg/plugin/testdata``), kept outside the repository; they are read at test time from
``$MESHLAB_ISTIO_GOLDEN`` or ``<repo>/../shared/reference/istio-iptables/golden``. The inputs of
each case are written here, from ``CASES.md``: the flags (and environment) that give Istio's
test-table configuration, plus the pod facts (IPv6, resolv.conf nameservers).

A capture golden is what Istio's test stub recorded: ``iptables-save`` and ``ip6tables-save``
(a state probe), the IPv4 restore document, the IPv6 one when IPv6 is on, then
``iptables-save`` (and ``ip6tables-save``). We compare only the restore documents between the
stub lines. A CNI golden holds only the IPv4 restore document.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from live_tools import run

from meshlab.istio.capture import (
    DEFAULT_ISTIO_INIT_ARGS,
    CaptureConfig,
    RuleBuilder,
    default_rules,
    generate,
)

REPO = Path(__file__).resolve().parents[2]
DEFAULT_GOLDEN_DIR = REPO.parent / "shared" / "reference" / "istio-iptables" / "golden"

# Case name -> (istio-iptables flags, environment, pod facts). The base config of Istio's
# TestIptables (-p 15001 -z 15006 -e 15008 -u 1337 -g 1337 -t 1337 -r 133, owner groups '*',
# loopback CIDR 127.0.0.1/32, everything else empty) is CaptureConfig's default, so each case
# only lists what it changes.
V6 = {"enable_ipv6": True}
CAPTURE_CASES: dict[str, tuple[list[str], dict[str, str], dict[str, Any]]] = {
    "empty": ([], {}, {}),
    "inbound-ports-wildcard": (["-b", "*"], {}, {}),
    "inbound-ports-include": (["-b", "32000,31000"], {}, {}),
    "ipnets": (["-i", "10.0.0.0/8"], {}, {}),
    "ip-range": (
        ["-x", "1.1.0.0/16", "-i", "9.9.0.0/16", "-n", "--redirect-dns", "-g", "1,2", "-u", "3,4"],
        {},
        {"dns_servers_v4": ["127.0.0.53"]},
    ),
    "outbound-ports-include": (["-q", "32000,31000"], {}, {}),
    "kube-virt-interfaces": (["-k", "eth1,eth2", "-i", "*"], {}, {}),
    "ipnets-with-kube-virt-interfaces": (["-k", "eth1,eth2", "-i", "10.0.0.0/8"], {}, {}),
    "basic-exclude-nic": (["-c", "not-istio-nic"], {}, {}),
    "drop-invalid": ([], {"INVALID_DROP": "true"}, {}),
    "host-ipv4-loopback-cidr": ([], {"ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR": "127.0.0.1/8"}, {}),
    "loopback-outbound-iprange": (
        ["-i", "127.1.2.3/32", "-n", "--redirect-dns", "-g", "1,2", "-u", "3,4"],
        {},
        {"dns_servers_v4": ["127.0.0.53"]},
    ),
    "outbound-owner-groups": ([], {"ISTIO_OUTBOUND_OWNER_GROUPS": "java,202"}, {}),
    "outbound-owner-groups-exclude": ([], {"ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE": "888,ftp"}, {}),
    "inbound-ports-tproxy": (["-b", "32000,31000", "-m", "TPROXY"], {}, {}),
    "inbound-ports-wildcard-tproxy": (["-b", "*", "-m", "TPROXY"], {}, {}),
    "tproxy": (
        [
            "-m",
            "TPROXY",
            "-b",
            "*",
            "-x",
            "1.1.0.0/16",
            "-i",
            "9.9.0.0/16",
            "-n",
            "--redirect-dns",
            "-u",
            "1337",
            "-g",
            "1337",
            "-c",
            "not-istio-nic",
        ],
        {},
        {"enable_ipv6": True, "dns_servers_v4": ["127.0.0.53"]},
    ),
    "dns-uid-gid": (
        ["--redirect-dns", "-g", "1,2", "-u", "3,4"],
        {},
        {"enable_ipv6": True, "dns_servers_v4": ["127.0.0.53"], "dns_servers_v6": ["::127.0.0.53"]},
    ),
    "ipv6-dns-uid-gid": (["--redirect-dns", "-g", "1,2", "-u", "3,4"], {}, V6),
    "ipv6-dns-outbound-owner-groups": (
        ["--redirect-dns"],
        {"ISTIO_OUTBOUND_OWNER_GROUPS": "java,202"},
        V6,
    ),
    "ipv6-dns-outbound-owner-groups-exclude": (
        [],
        {"REDIRECT_DNS": "true", "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE": "888,ftp"},
        V6,
    ),
    "ipv6-empty-inbound-ports": (["-b", ""], {}, V6),
    "ipv6-inbound-ports": (["-b", "4000,5000"], {}, V6),
    "ipv6-virt-interfaces": (["-b", "4000,5000", "-k", "eth0,eth1"], {}, V6),
    "ipv6-ipnets": (
        [
            "-b",
            "4000,5000",
            "-d",
            "6000,7000,",
            "-k",
            "eth0,eth1",
            "-x",
            "2001:db8::/32",
            "-i",
            "2001:db8::/32",
        ],
        {},
        V6,
    ),
    "ipv6-uid-gid": (
        [
            "-b",
            "4000,5000",
            "-d",
            "6000,7000",
            "-k",
            "eth0,eth1",
            "-g",
            "1,2",
            "-u",
            "3,4",
            "-x",
            "2001:db8::/32",
            "-i",
            "2001:db8::/32",
        ],
        {},
        V6,
    ),
    "ipv6-outbound-ports": (["-b", "", "-q", "32000,31000"], {}, V6),
}

# The CNI plugin's effective settings (CASES.md C1-C8, ISTIO-FACTS 1.6): REDIRECT, -i '*',
# -b '*', -d = annotation + 15020,15021,15090, -o 15020 unless the annotation replaces it,
# UID/GID from the istio-proxy securityContext (else 1337).
CNI_BASE = ["-m", "REDIRECT", "-i", "*", "-x", "", "-b", "*", "-d", "15020,15021,15090",
            "-o", "15020", "-u", "1337", "-g", "1337"]  # fmt: skip
CNI_CASES: dict[str, tuple[list[str], dict[str, str], dict[str, Any]]] = {
    "basic": (CNI_BASE, {}, {}),
    "include-exclude-ip": ([*CNI_BASE, "-i", "127.0.0.0/8", "-x", "10.0.0.0/8"], {}, {}),
    "include-exclude-ports": (
        [*CNI_BASE, "-b", "1111,2222", "-o", "5555,6666", "-d", "3333,4444,15020,15021,15090"],
        {},
        {},
    ),
    "tproxy": ([*CNI_BASE, "-m", "TPROXY"], {}, {}),
    "dns": ([*CNI_BASE, "--redirect-dns", "--capture-all-dns"], {}, {}),
    "invalid-drop": (CNI_BASE, {"INVALID_DROP": "true"}, {}),
    "custom-uid": ([*CNI_BASE, "-u", "1000670000", "-g", "1000670001"], {}, {}),
    "custom-uid-tproxy": (
        [*CNI_BASE, "-u", "1000670000", "-g", "1000670001", "-m", "TPROXY"],
        {},
        {},
    ),
}

ALL_CASES = {f"capture-{name}": case for name, case in CAPTURE_CASES.items()} | {
    f"cni-{name}": case for name, case in CNI_CASES.items()
}


def golden_dir() -> Path:
    configured = os.environ.get("MESHLAB_ISTIO_GOLDEN")
    path = Path(configured) if configured else DEFAULT_GOLDEN_DIR
    if not path.is_dir():
        pytest.skip(
            f"Istio golden directory not found at {path} (default {DEFAULT_GOLDEN_DIR}); "
            "set MESHLAB_ISTIO_GOLDEN to the directory holding capture-*.golden and cni-*.golden"
        )
    return path


def restore_documents(name: str, text: str) -> str:
    """The golden's restore documents, without the test stub's *-save lines."""
    if not name.startswith("capture-"):
        return text
    lines = text.splitlines(keepends=True)
    assert [line.strip() for line in lines[:2]] == ["iptables-save", "ip6tables-save"], name
    body = lines[2:]
    while body and body[-1].strip() in ("iptables-save", "ip6tables-save"):
        body.pop()
    return "".join(body)


def generated(name: str) -> str:
    argv, env, facts = ALL_CASES[name]
    config = CaptureConfig.from_args(argv, env, **facts)
    return "".join(generate(config).documents())


@pytest.mark.parametrize("name", sorted(ALL_CASES))
def test_golden_byte_for_byte(name: str) -> None:
    path = golden_dir() / f"{name}.golden"
    if not path.exists():
        pytest.skip(f"golden {path.name} is not in {path.parent}")
    assert generated(name) == restore_documents(name, path.read_text())


def test_every_golden_has_a_case() -> None:
    """A golden without inputs here would silently go untested."""
    names = {path.stem for path in golden_dir().glob("*.golden")}
    assert names, "the golden directory is empty"
    assert names - set(ALL_CASES) == set()


def test_stub_lines_match_ipv6_enablement() -> None:
    """The trailing stub lines say whether Istio ran with IPv6: check our case table agrees."""
    for name, (_, _, facts) in CAPTURE_CASES.items():
        path = golden_dir() / f"capture-{name}.golden"
        if not path.exists():
            continue
        tail = path.read_text().splitlines()[-1].strip()
        assert (tail == "ip6tables-save") == bool(facts.get("enable_ipv6")), name


# ---- the same rules on the real kernel (root only) ---------------------------------------------

LIVE_CASES: dict[str, tuple[list[str], dict[str, Any]]] = {
    "redirect-default": (["-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT",
                          "-i", "*", "-x", "", "-b", "*", "-d", "15090,15021,15020"], {}),
    "tproxy": (["-m", "TPROXY", "-b", "*", "-i", "*", "-x", "10.0.0.0/8", "-c", "eth9"], {}),
    "dns-per-server": (["-b", "*", "-i", "*", "--redirect-dns", "-u", "3,4", "-g", "1,2"],
                       {"dns_servers_v4": ["10.96.0.10"]}),
    "dns-capture-all-drop-invalid": (["-b", "9080", "-i", "10.0.0.0/8", "--redirect-dns",
                                      "--capture-all-dns", "--drop-invalid", "-k", "eth1",
                                      "-q", "3306", "-o", "22"], {}),
    "ipv6-dns": (["-b", "*", "-i", "*", "-x", "fd00::/8", "--redirect-dns"],
                 {"enable_ipv6": True, "dns_servers_v4": ["10.96.0.10"],
                  "dns_servers_v6": ["fd00::a"]}),
    "ipv6-tproxy": (["-m", "TPROXY", "-b", "80,443", "-i", "2001:db8::/32"], {"enable_ipv6": True}),
}  # fmt: skip


@pytest.mark.live
@pytest.mark.parametrize("case", sorted(LIVE_CASES))
def test_generated_rules_load_into_a_real_namespace(case: str, netns: str) -> None:
    argv, facts = LIVE_CASES[case]
    rules = generate(CaptureConfig.from_args(argv, **facts))
    families = [("iptables", rules.restore_v4, "ipv4")]
    if rules.restore_v6 is not None:
        families.append(("ip6tables", rules.restore_v6, "ipv6"))
    for tool, document, family in families:
        loaded = run("ip", "netns", "exec", netns, f"{tool}-restore", "--noflush",
                     stdin=document, check=False)
        assert loaded.returncode == 0, f"{tool}-restore refused:\n{loaded.stderr}\n{document}"
        saved = run("ip", "netns", "exec", netns, f"{tool}-save", check=False)
        assert saved.returncode == 0, saved.stderr
        try:
            from meshlab.netfilter.parse import parse_ruleset
        except ImportError:  # pragma: no cover - netfilter not there yet
            continue
        kernel = parse_ruleset(saved.stdout, family=family)
        ours = rules.ruleset_v4 if family == "ipv4" else rules.ruleset_v6
        assert kernel == ours, f"{tool}-save differs from the model:\n{saved.stdout}"


# ---- generation details the goldens do not show -------------------------------------------------


def test_post_apply_commands_for_tproxy_and_ipv6() -> None:
    rules = generate(CaptureConfig.from_args(["-m", "TPROXY", "-b", "*", "-t", "7", "-r", "70"],
                                             enable_ipv6=True))  # fmt: skip
    assert rules.post_commands == (
        "ip -6 addr add ::6/128 dev lo",
        "ip rule add fwmark 7 lookup 70",
        "ip -6 rule add fwmark 7 lookup 70",
        "ip route add local 0.0.0.0/0 dev lo table 70",
        "ip -6 route add local ::/0 dev lo table 70",
    )
    assert generate(CaptureConfig.from_args(["-b", "*"])).post_commands == ()
    # TPROXY without inbound ports needs no policy routing
    assert generate(CaptureConfig.from_args(["-m", "TPROXY"])).post_commands == ()


def test_builder_declares_jump_only_chains_and_keeps_insert_lines() -> None:
    builder = RuleBuilder(enable_ipv6=False)
    builder.insert("nat", "PREROUTING", 1, "-i", "eth1", "-j", "RETURN")
    builder.append("nat", "OUTPUT", "-j", "ISTIO_ONLY_JUMPED")
    builder.append("nat", "ISTIO_X", "-p", "tcp", "-j", "REDIRECT", "--to-ports", "1")
    builder.append("raw", "OUTPUT", "-j", "CT", "--zone", "1")
    assert builder.restore("ipv4") == (
        "* nat\n-N ISTIO_X\n-N ISTIO_ONLY_JUMPED\n-I PREROUTING 1 -i eth1 -j RETURN\n"
        "-A OUTPUT -j ISTIO_ONLY_JUMPED\n-A ISTIO_X -p tcp -j REDIRECT --to-ports 1\nCOMMIT\n"
        "* raw\n-A OUTPUT -j CT --zone 1\nCOMMIT\n"
    )
    assert builder.restore("ipv6") == ""


def test_collected_rules_are_the_document_lines() -> None:
    rules = generate(CaptureConfig.from_args(["-b", "*", "-i", "*", "-m", "TPROXY"]))
    lines = [line for line in rules.restore_v4.splitlines()
             if line.startswith(("-A ", "-I "))]  # fmt: skip
    # emission order, grouped by table (alphabetical) as the document groups them
    by_table = sorted(rules.rules_v4, key=lambda rule: rule.table)
    assert [rule.text for rule in by_table] == lines
    assert rules.restore_v6 is None and rules.ruleset_v6 is None and rules.rules_v6 == ()


def test_dns_servers_of_the_other_family_still_switch_dns_mode_on() -> None:
    """Istio checks for *any* nameserver: a v6-only resolv.conf on a v4 pod turns on the
    port-53 forms of the owner rules, but there is no v4 jump to ISTIO_OUTPUT_DNS."""
    rules = generate(CaptureConfig.from_args(["--redirect-dns"], dns_servers_v6=["fd00::a"]))
    assert "-m multiport ! --dports 53,15008" in rules.restore_v4
    assert "-A ISTIO_OUTPUT -j ISTIO_OUTPUT_DNS" not in rules.restore_v4
    assert "-A OUTPUT -j ISTIO_OUTPUT_DNS" in rules.restore_v4


def test_default_rules_is_the_istio_init_ruleset() -> None:
    ruleset = default_rules()
    assert ruleset == generate(CaptureConfig.from_args(DEFAULT_ISTIO_INIT_ARGS)).ruleset_v4
    texts = [ref.rule.text for ref in ruleset.rules()]
    assert "-j ISTIO_IN_REDIRECT" in " ".join(texts)
