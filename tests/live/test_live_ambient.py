"""Ambient mode on the real kernel: the facts the model rests on, proven one by one.

The model's ambient world (:mod:`meshlab.live.ambient_lab`): two ambient pods, details
10.244.0.12 (under study) and reviews-v2 10.244.0.13, each with istio-cni's in-pod rules,
the agent's ``ip rule``/route and the lab's ztunnel stand-in, beside reviews (outside the
mesh), a sidecar pod, a VM on details' net1 and the node (kubelet, coredns, legacy-db). The rules are what :func:`meshlab.istio.ambient.inpod_rules`
generates (Istio's own golden output, byte for byte: its tests say so).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from meshlab.live import unavailable_reason

pytestmark = [pytest.mark.live,
              pytest.mark.skipif(unavailable_reason() is not None,
                                 reason=f"live lab unavailable: {unavailable_reason()}")]

REDIRECT_15001 = ("-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -p tcp -m mark ! --mark 0x539/0xfff "
                  "-j REDIRECT --to-ports 15001")
CONNMARK_SET = "-A ISTIO_PRERT -m mark --mark 0x539/0xfff -j CONNMARK --set-xmark 0x111/0xfff"


def default_document() -> str:
    """The IPv4 restore document istio-cni's agent loads into a pod by default."""
    from meshlab.istio.ambient import inpod_rules

    return inpod_rules().ipv4


def without(rules: str, line: str, replacement: str | None = None) -> str:
    """``rules`` with one exact line removed (or replaced)."""
    lines = rules.splitlines()
    assert line in lines, f"{line!r} is not in the rules"
    at = lines.index(line)
    lines[at:at + 1] = [] if replacement is None else [replacement]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def lab() -> Iterator[object]:
    from meshlab.live.ambient_lab import AmbientLab

    with AmbientLab(rules=default_document(), deadline=240.0) as built:
        yield built


@pytest.fixture
def default_rules(lab):  # type: ignore[no-untyped-def]
    """Each test starts from the default rules and the agent's ip rule and route."""
    from meshlab.live.ambient_lab import AGENT_COMMANDS

    lab.load(default_document(), AGENT_COMMANDS)
    return lab


def nat_rule(lab, chain: str, text_part: str) -> tuple[str, str, int]:  # type: ignore[no-untyped-def]
    """The key of the one nat rule of ``chain`` whose kernel text contains ``text_part``."""
    texts = lab.counters().texts
    (key,) = [k for k, t in texts.items() if k[:2] == ("nat", chain) and text_part in t]
    return key


def test_the_apps_outbound_connection_is_redirected_to_15001_and_tunnelled(default_rules) -> None:
    from meshlab.live.ambient_lab import PEER_IP, POD_IP

    lab = default_rules
    seen = lab.connect_all(PEER_IP, 9080, side="pod", uid=1000)
    assert seen.pod.outcome == "answered", seen.pod.error
    assert seen.pod.nat.get(nat_rule(lab, "ISTIO_OUTPUT", "--to-ports 15001")) == 1
    assert seen.pod.original_dst == f"{PEER_IP}:9080"
    # through the tunnel: the peer's ztunnel took it on 15008 (its rules do not redirect it)
    assert seen.listeners == [("pod-ztunnel", 15001), ("peer-ztunnel", 15008)]
    assert [e["connect"] for e in seen.of("peer-ztunnel", "accept")] == [
        f"CONNECT {PEER_IP}:9080"]
    # ... and the peer's app sees the real client: the pod's own address
    assert seen.pod.delivered_to == ("app", 9080, POD_IP)


def test_a_socket_marked_0x539_is_not_redirected(default_rules) -> None:
    from meshlab.live.ambient_lab import EXTERNAL_IP, POD_IP

    lab = default_rules
    seen = lab.connect(EXTERNAL_IP, 5432, side="pod", uid=0, so_mark=0x539)
    assert seen.outcome == "answered", seen.error
    assert seen.accepts == []                      # ztunnel never saw it
    assert nat_rule(lab, "ISTIO_OUTPUT", "--to-ports 15001") not in seen.nat
    assert seen.delivered_to == ("postgres", 5432, POD_IP)
    plain = lab.connect(EXTERNAL_IP, 5432, side="pod", uid=0)   # the same, unmarked
    assert [e["listener_port"] for e in plain.accepts] == [15001]


def test_hbone_to_15008_is_not_redirected_and_the_app_sees_the_peers_ip(default_rules) -> None:
    from meshlab.live.ambient_lab import PEER_IP, POD_IP

    lab = default_rules
    seen = lab.connect_all(POD_IP, 9080, side="peer", uid=1000)   # the peer's app calls us
    assert seen.pod.outcome == "answered", seen.pod.error
    assert seen.listeners == [("peer-ztunnel", 15001), ("pod-ztunnel", 15008)]
    assert nat_rule(lab, "ISTIO_PRERT", "--to-ports 15006") not in seen.pod.nat
    assert seen.pod.delivered_to == ("app", 9080, PEER_IP)
    # ztunnel's connection to the app went out by lo (accepted there, not redirected) and
    # came back in through PREROUTING, where mangle gave it connmark 0x111: one packet
    # matched the mark rule, its SYN (later ones carry the restored mark 0x111 instead)
    assert seen.pod.nat.get(nat_rule(lab, "ISTIO_OUTPUT", "-o lo -j ACCEPT")) == 1
    assert seen.pod.grew.get(("mangle", "ISTIO_PRERT", 1)) == 1


def test_plaintext_from_a_non_mesh_client_goes_to_15006_and_keeps_its_source(default_rules) -> None:
    from meshlab.live.ambient_lab import CLIENT_IP, POD_IP

    lab = default_rules
    seen = lab.connect(POD_IP, 9080, side="reviews")
    assert seen.outcome == "answered", seen.error
    assert [e["listener_port"] for e in seen.accepts] == [15006]
    assert seen.original_dst == f"{POD_IP}:9080"
    assert seen.nat.get(nat_rule(lab, "ISTIO_PRERT", "--to-ports 15006")) == 1
    assert seen.delivered_to == ("app", 9080, CLIENT_IP)


def test_kubelet_probes_bypass_ztunnel(default_rules) -> None:
    from meshlab.live.ambient_lab import POD_IP, PROBE_IP

    lab = default_rules
    seen = lab.connect(POD_IP, 9080, side="node", src=PROBE_IP)
    assert seen.outcome == "answered", seen.error
    assert seen.accepts == []
    assert seen.nat.get(nat_rule(lab, "ISTIO_PRERT", "-s 169.254.7.127")) == 1
    assert seen.delivered_to == ("app", 9080, PROBE_IP)


@pytest.mark.parametrize("what", ["ip rule", "connmark rule"])
def test_without_the_ip_rule_or_the_connmark_the_reply_is_lost(lab, what: str) -> None:
    """The app's SYN-ACK to the client's (non-local) address takes the default route out of
    eth0 instead of table 100's ``lo``: ztunnel's connection to the app never completes."""
    from meshlab.live.ambient_lab import AGENT_COMMANDS, IP_ROUTE, POD_IP

    if what == "ip rule":
        lab.load(default_document(), (IP_ROUTE,))
    else:
        lab.load(without(default_document(), CONNMARK_SET), AGENT_COMMANDS)
    seen = lab.connect(POD_IP, 9080, side="reviews")
    assert [e["listener_port"] for e in seen.accepts] == [15006]
    assert seen.reply == {"error": "upstream timed out", "id": seen.id}
    errors = [e for e in seen.proxy_log if e["event"] == "upstream-error"]
    assert errors and errors[0]["upstream"] == f"{POD_IP}:9080"
    assert seen.delivered_to is None


def test_without_the_mark_condition_ztunnel_captures_itself(lab) -> None:
    """Remove ``-m mark ! --mark 0x539/0xfff`` from the 15001 REDIRECT: ztunnel's own tunnel
    to the peer is captured back to its 15001, again and again, until the hop limit."""
    from meshlab.live.ambient_lab import AGENT_COMMANDS, PEER_IP

    looping = REDIRECT_15001.replace(" -m mark ! --mark 0x539/0xfff", "")
    lab.load(without(default_document(), REDIRECT_15001, looping), AGENT_COMMANDS)
    seen = lab.connect(PEER_IP, 9080, side="pod", uid=1000, timeout=4.0)
    assert seen.reply is not None and seen.reply.get("error") == "hop limit"
    ports = [e["listener_port"] for e in seen.accepts]
    assert ports == [15001] * (lab.hop_limit + 1)
    assert seen.nat.get(nat_rule(lab, "ISTIO_OUTPUT", "--to-ports 15001")) == lab.hop_limit + 1
