"""Conformance: meshlab.istio.ambient reproduces Istio's 14 ambient goldens byte for byte.

The goldens are the istio-cni node agent's test outputs (``cni/pkg/iptables/testdata``), kept
outside the repository and read at test time from ``$MESHLAB_ISTIO_CNI_GOLDEN`` or
``<repo>/../shared/reference/istio-cni/golden``. Each case's inputs are written here, from
``CASES.md``: the agent's DNS setting and the pod's annotations. Istio's in-pod tests use a
fixture IPv6 probe address; its host test uses the shipped default.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from live_tools import run

from meshlab.istio.ambient import AgentConfig, PodOverrides, inpod_rules, node_rules
from meshlab.netfilter.parse import parse_ruleset

REPO = Path(__file__).resolve().parents[2]
DEFAULT_GOLDEN_DIR = REPO.parent / "shared" / "reference" / "istio-cni" / "golden"

FIXTURE_PROBE_V6 = "e9ac:1e77:90ca:399f:4d6d:ece2:2f9b:3164"
"""Istio's in-pod tests' ``HostProbeV6SNATAddress`` (not the shipped default)."""

VIRTUAL = {"istio.io/reroute-virtual-interfaces": "fake1s0f0,fake1s0f1"}
INGRESS = {"ambient.istio.io/bypass-inbound-capture": "true"}

# Case (file stem without _ipv6) -> (the agent's DNS capture, the pod's annotations).
INPOD_CASES: dict[str, tuple[bool, dict[str, str]]] = {
    "default": (True, {}),
    "ingress": (False, INGRESS),
    "virtual_interfaces": (False, VIRTUAL),
    "ingress_and_virtual_interfaces": (False, INGRESS | VIRTUAL),
    "dns_pod_enabled_and_off_globally": (False, {"ambient.istio.io/dns-capture": "true"}),
    "dns_pod_disabled_and_on_globally": (True, {"ambient.istio.io/dns-capture": "false"}),
}
NODE_CASES = ("hostprobe",)


def golden_dir() -> Path:
    configured = os.environ.get("MESHLAB_ISTIO_CNI_GOLDEN")
    path = Path(configured) if configured else DEFAULT_GOLDEN_DIR
    if not path.is_dir():
        pytest.skip(
            f"Istio ambient golden directory not found at {path} (default "
            f"{DEFAULT_GOLDEN_DIR}); set MESHLAB_ISTIO_CNI_GOLDEN to the directory holding "
            "default.golden, hostprobe.golden, ..."
        )
    return path


def golden(stem: str) -> str:
    path = golden_dir() / f"{stem}.golden"
    if not path.exists():
        pytest.skip(f"golden {path.name} is not in {path.parent}")
    return path.read_text()


def _stem(name: str, ipv6: bool) -> str:
    return f"{name}_ipv6" if ipv6 else name


@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("name", sorted(INPOD_CASES))
def test_inpod_golden_byte_for_byte(name: str, ipv6: bool) -> None:
    dns, annotations = INPOD_CASES[name]
    config = AgentConfig(dns_capture=dns, ipv6=ipv6, probe_snat_v6=FIXTURE_PROBE_V6)
    rules = inpod_rules(config, PodOverrides.from_annotations(annotations))
    assert rules.golden_text() == golden(_stem(name, ipv6))


@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
def test_node_golden_byte_for_byte(ipv6: bool) -> None:
    assert node_rules(AgentConfig(ipv6=ipv6)).golden_text() == golden(_stem("hostprobe", ipv6))


def test_every_golden_has_a_case() -> None:
    """A golden without inputs here would silently go untested."""
    names = {path.stem for path in golden_dir().glob("*.golden")}
    assert names, "the golden directory is empty"
    known = {_stem(name, v6) for name in (*INPOD_CASES, *NODE_CASES) for v6 in (False, True)}
    assert names == known


@pytest.mark.parametrize("name", sorted(INPOD_CASES))
def test_every_inpod_document_parses_with_the_model(name: str) -> None:
    dns, annotations = INPOD_CASES[name]
    rules = inpod_rules(AgentConfig(dns_capture=dns, ipv6=True),
                        PodOverrides.from_annotations(annotations))
    for version, document in ((4, rules.ipv4), (6, rules.ipv6)):
        ruleset = rules.ruleset(version)
        assert ruleset == parse_ruleset(document, family=f"ipv{version}")
        lines = [line for line in document.splitlines() if line.startswith("-A ")]
        assert len(list(ruleset.rules())) == len(lines)


# ---- the same rules on the real kernel (root only) ---------------------------------------------

LIVE_CASES = {
    "default": (AgentConfig(ipv6=True), {}),
    "no-dns-ingress-virtual": (AgentConfig(dns_capture=False, ipv6=True), INGRESS | VIRTUAL),
}


@pytest.mark.live
@pytest.mark.parametrize("case", sorted(LIVE_CASES))
def test_rules_and_routes_load_into_a_real_namespace(case: str, netns: str) -> None:
    """iptables-restore takes every document, iptables-save gives back what the model holds,
    and ``ip`` takes the route and the rule (which ``ip rule show`` then lists)."""
    config, annotations = LIVE_CASES[case]
    rules = inpod_rules(config, PodOverrides.from_annotations(annotations))
    for tool, version in (("iptables", 4), ("ip6tables", 6)):
        document = rules.document(version)
        loaded = run("ip", "netns", "exec", netns, f"{tool}-restore", "--noflush",
                     stdin=document, check=False)
        assert loaded.returncode == 0, f"{tool}-restore refused:\n{loaded.stderr}\n{document}"
        saved = run("ip", "netns", "exec", netns, f"{tool}-save", check=False)
        assert saved.returncode == 0, saved.stderr
        kernel = parse_ruleset(saved.stdout, family=f"ipv{version}")
        assert kernel == rules.ruleset(version), f"{tool}-save differs:\n{saved.stdout}"
    for command in rules.route_commands:
        words = command.split()
        done = run("ip", "-n", netns, *words[1:], check=False)
        assert done.returncode == 0, f"{command}: {done.stderr}"
    shown = run("ip", "-n", netns, "rule", "show").stdout
    assert "32764:\tfrom all fwmark 0x111/0xfff lookup 100" in shown, shown
    table = run("ip", "-n", netns, "route", "show", "table", "100").stdout
    assert table.split() == ["local", "default", "dev", "lo", "scope", "host"], table


@pytest.mark.live
def test_node_rules_load_into_a_real_namespace(netns: str) -> None:
    """The node's rules name the ipset, which must exist for iptables-restore to take them."""
    if run("which", "ipset", check=False).returncode != 0:
        pytest.skip("the ipset tool is not installed")
    rules = node_rules(AgentConfig(ipv6=True))
    for tool, version, kind in (("iptables", 4, "inet"), ("ip6tables", 6, "inet6")):
        name = f"istio-inpod-probes-v{version}"
        run("ip", "netns", "exec", netns, "ipset", "create", name, "hash:ip", "family", kind)
        loaded = run("ip", "netns", "exec", netns, f"{tool}-restore", "--noflush",
                     stdin=rules.document(version), check=False)
        assert loaded.returncode == 0, f"{tool}-restore refused:\n{loaded.stderr}"
