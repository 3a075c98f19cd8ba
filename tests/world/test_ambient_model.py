"""Ambient pods and ztunnel: who listens where, what ztunnel decides, how rules are changed."""

from __future__ import annotations

from ipaddress import IPv4Address, ip_address

import pytest

from meshlab.errors import MeshlabError
from meshlab.istio.ambient import AmbientInputError
from meshlab.istio.ztunnel import (
    CONN_MARK,
    DNS_PORT,
    HBONE_PORT,
    INBOUND_PLAINTEXT_PORT,
    INPOD_MARK,
    OUTBOUND_PORT,
    ZTUNNEL,
    Ztunnel,
)
from meshlab.netfilter.kernel import FwmarkRoute
from meshlab.pod import Pod
from meshlab.world import World

POD = IPv4Address("10.244.0.12")
PEER = IPv4Address("10.244.0.13")
OUTSIDE = IPv4Address("192.168.10.20")


@pytest.fixture(scope="module")
def pod() -> Pod:
    return World.default().pod("details")


def test_marks_and_ports_are_istios() -> None:
    assert (INPOD_MARK, CONN_MARK) == (0x539, 0x111)
    assert (OUTBOUND_PORT, INBOUND_PLAINTEXT_PORT, HBONE_PORT, DNS_PORT) == (
        15001, 15006, 15008, 15053)


def test_ambient_pod_has_no_sidecar_and_ztunnel_sockets(pod: Pod) -> None:
    assert pod.sidecar is None and pod.proxy is None and pod.ambient is not None
    assert [p.name for p in pod.processes] == ["app", ZTUNNEL]
    ztunnel = {(s.proto, s.port) for s in pod.sockets if s.process == ZTUNNEL}
    assert ztunnel == {("tcp", 15001), ("tcp", 15006), ("tcp", 15008), ("tcp", 15053),
                       ("udp", 15053)}
    assert all(s.transparent for s in pod.sockets if s.process == ZTUNNEL)
    assert pod.app_ports == (9080,)
    assert pod.fwmark_routes == (FwmarkRoute(0x111, 100, 0xFFF),)
    assert [i.name for i in pod.interfaces] == ["lo", "eth0", "net1"]
    assert "ambient mode" in pod.describe()


def test_the_rules_are_istio_cnis(pod: Pod) -> None:
    from meshlab.istio.ambient import inpod_rules

    assert pod.ruleset == inpod_rules().ruleset_v4


def test_outbound_to_a_mesh_workload_is_hbone_to_its_15008() -> None:
    z = Ztunnel.build(pod_ip=POD, mesh=[POD, PEER])
    d = z.decide("tcp", 15001, (PEER, 9080), client=POD)
    assert (d.route, d.upstream, d.tunnel_target, d.mark) == ("hbone", (PEER, 15008),
                                                              (PEER, 9080), 0x539)
    assert d.bind_source is None and not d.transparent
    assert "mTLS and HTTP/2 not modelled" in d.describe()


def test_outbound_elsewhere_is_passthrough() -> None:
    d = Ztunnel.build(pod_ip=POD, mesh=[POD, PEER]).decide("tcp", 15001, (OUTSIDE, 5432),
                                                           client=POD)
    assert (d.route, d.upstream, d.tunnel_target) == ("passthrough", (OUTSIDE, 5432), None)


def test_a_service_vip_is_resolved_by_ztunnel() -> None:
    world = World.default()
    z = world.pod("details").ambient.ztunnel  # type: ignore[union-attr]
    d = z.decide("tcp", 15001, (ip_address("10.96.0.50"), 9080), client=POD)
    assert (d.route, d.upstream, d.service) == ("hbone", (PEER, 15008), "reviews-v2")
    d = z.decide("tcp", 15001, (ip_address("10.96.0.20"), 9080), client=POD)
    assert (d.route, d.upstream) == ("passthrough", (ip_address("10.244.0.9"), 9080))


def test_inbound_connects_from_the_clients_address() -> None:
    z = Ztunnel.build(pod_ip=POD, mesh=[POD, PEER])
    hbone = z.decide("tcp", 15008, (POD, 15008), client=PEER, tunnel_target=(POD, 9080))
    assert (hbone.route, hbone.upstream, hbone.bind_source) == ("inbound", (POD, 9080), PEER)
    assert hbone.transparent and "IP_FREEBIND" in hbone.describe()
    plain = z.decide("tcp", 15006, (POD, 9080), client=OUTSIDE)
    assert (plain.upstream, plain.bind_source) == ((POD, 9080), OUTSIDE)
    itself = z.decide("tcp", 15008, (POD, 15008), client=POD, tunnel_target=(POD, 9080))
    assert itself.bind_source is None  # the client is the pod: no foreign bind


@pytest.mark.parametrize(("port", "target", "why"), [
    (15008, None, "no HBONE target"),
    (15008, (PEER, 9080), "not this pod"),
    (15006, (POD, 15008), "ztunnel's own ports"),
])
def test_inbound_it_will_not_forward_is_closed(port: int, target: tuple | None,
                                               why: str) -> None:
    z = Ztunnel.build(pod_ip=POD)
    if port == 15008:
        d = z.decide("tcp", port, (POD, 15008), client=PEER, tunnel_target=target)
    else:
        d = z.decide("tcp", port, target, client=PEER)  # type: ignore[arg-type]
    assert d.route == "close" and d.upstream is None and why in d.why


def test_dns_is_forwarded_to_the_resolver_asked() -> None:
    d = Ztunnel.build(pod_ip=POD).decide("udp", 15053, (ip_address("10.96.0.10"), 53),
                                         client=POD)
    assert (d.route, d.upstream, d.mark) == ("dns", (ip_address("10.96.0.10"), 53), 0x539)


def test_not_a_listener_is_a_clear_error() -> None:
    with pytest.raises(MeshlabError, match="15001, 15006, 15008 and 15053"):
        Ztunnel.build(pod_ip=POD).decide("tcp", 9080, (POD, 9080), client=PEER)


def test_annotations_change_the_rules(pod: Pod) -> None:
    off = pod.with_rules(annotations={"ambient.istio.io/dns-capture": "false"})
    assert "raw" not in {r.table for r in off.ruleset.rules()}
    assert off.ambient is not None and off.ambient.annotations == (
        ("ambient.istio.io/dns-capture", "false"),)
    assert off is pod.with_rules(annotations={"ambient.istio.io/dns-capture": "false"})
    vif = pod.with_rules(annotations={"istio.io/reroute-virtual-interfaces": "net1"})
    assert "-i net1 -p tcp -j REDIRECT --to-ports 15001" in {r.rule.text
                                                            for r in vif.ruleset.rules()}


def test_a_bad_annotation_is_refused(pod: Pod) -> None:
    with pytest.raises(AmbientInputError, match="dns-capture"):
        pod.with_rules(annotations={"ambient.istio.io/dns-capture": "maybe"})


def test_without_match_takes_the_condition_out_of_every_rule(pod: Pod) -> None:
    bare = pod.with_rules(without_matches=["-m mark ! --mark 0x539/0xfff"])
    texts = [r.rule.text for r in bare.ruleset.rules()]
    assert not any("! --mark 0x539/0xfff" in t for t in texts)
    assert "! -d 127.0.0.1/32 -p tcp -j REDIRECT --to-ports 15001" in texts
    assert any("-m mark --mark 0x539/0xfff" in t for t in texts)  # the positive ones stay
    assert bare.ambient is not None
    assert bare.ambient.removed_matches == ("-m mark ! --mark 0x539/0xfff",)
    with pytest.raises(MeshlabError, match="no rule contains"):
        pod.with_rules(without_matches=["-m owner --uid-owner 1337"])
    with pytest.raises(MeshlabError, match="not a condition"):
        pod.with_rules(without_matches=["-j ACCEPT"])


def test_without_the_ip_rule_or_the_route(pod: Pod) -> None:
    for text in ("ip rule add fwmark 0x111/0xfff pref 32764 lookup 100",
                 "ip route add local 0.0.0.0/0 dev lo table 100"):
        changed = pod.with_rules(without_rules=[text])
        assert changed.fwmark_routes == () and changed.ruleset == pod.ruleset
        assert changed.removed_rules == (text,)
    with pytest.raises(MeshlabError, match="fwmark 0x111/0xfff lookup 100"):
        pod.with_rules(without_rules=["ip rule add fwmark 1337 lookup 133"])


def test_sidecar_only_and_ambient_only_changes_are_refused(pod: Pod) -> None:
    with pytest.raises(MeshlabError, match="not an ambient pod"):
        World.default().pod("productpage").with_rules(
            annotations={"ambient.istio.io/dns-capture": "false"})
    with pytest.raises(MeshlabError, match="flags do not apply"):
        pod.with_rules(flags="-p 15001 -z 15006 -u 1337 -m REDIRECT -i * -x '' -b *")


def test_ambient_pod_from_defaults() -> None:
    made = Pod.ambient_pod("solo", "10.244.3.3", app_ports=(8080,), dns_capture=False)
    assert made.ambient is not None and made.ambient.ztunnel.mesh == frozenset()
    assert "raw" not in {r.table for r in made.ruleset.rules()}
    assert [i.name for i in made.interfaces] == ["lo", "eth0"]
