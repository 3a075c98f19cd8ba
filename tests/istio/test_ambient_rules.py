"""The ambient rule writer's inputs (agent settings, pod annotations) and what its rules do
to connections in the kernel model, replies included."""

from __future__ import annotations

from ipaddress import ip_address, ip_interface

import pytest

from meshlab.errors import MeshlabError
from meshlab.istio.ambient import (
    ANNOTATION_BYPASS_INBOUND_CAPTURE,
    ANNOTATION_DNS_CAPTURE,
    ANNOTATION_REROUTE_VIRTUAL_INTERFACES,
    HOST_PROBE_SNAT_V4,
    INPOD_MARK,
    AgentConfig,
    AmbientInputError,
    PodOverrides,
    inpod_routes,
    inpod_rules,
    node_rules,
)
from meshlab.netfilter import Interface, Netns, Packet, pod_interfaces
from meshlab.netfilter.kernel import FwmarkRoute

POD = "10.244.0.5"
PEER = "10.244.1.7"


def pod(rules=None, *, routes: bool = True) -> Netns:
    rules = inpod_rules() if rules is None else rules
    return Netns(rules.ruleset(4), pod_interfaces(POD),
                 fwmark_routes=rules.fwmark_routes(4) if routes else ())


def arriving(src: str, sport: int, dst: str, dport: int) -> Packet:
    return Packet("tcp", ip_address(src), sport, ip_address(dst), dport)


# ---- inputs -------------------------------------------------------------------------------------


def test_annotations_give_the_overrides() -> None:
    overrides = PodOverrides.from_annotations({
        ANNOTATION_BYPASS_INBOUND_CAPTURE: "True",
        ANNOTATION_DNS_CAPTURE: "0",
        ANNOTATION_REROUTE_VIRTUAL_INTERFACES: " net1, ,net2,",
        "unrelated.example.com/x": "anything",
    })
    assert overrides == PodOverrides(ingress_mode=True, virtual_interfaces=("net1", "net2"),
                                     dns_capture=False)
    assert PodOverrides.from_annotations({}) == PodOverrides()


@pytest.mark.parametrize("key", [ANNOTATION_BYPASS_INBOUND_CAPTURE, ANNOTATION_DNS_CAPTURE])
def test_a_bad_boolean_annotation_is_named_with_what_is_accepted(key: str) -> None:
    with pytest.raises(AmbientInputError) as caught:
        PodOverrides.from_annotations({key: "yes"})
    message = str(caught.value)
    assert message.startswith(f"annotation {key}: 'yes' is not a boolean")
    assert '"true" or "false"' in message and "ignore" in message
    assert caught.value.value == "yes"


@pytest.mark.parametrize("value", ["eth0,a/b", "averyveryverylongname", "net:1", ".", "a\tb"])
def test_a_bad_interface_name_is_named(value: str) -> None:
    with pytest.raises(AmbientInputError, match="is not a Linux interface name") as caught:
        PodOverrides.from_annotations({ANNOTATION_REROUTE_VIRTUAL_INTERFACES: value})
    assert str(caught.value).startswith(f"annotation {ANNOTATION_REROUTE_VIRTUAL_INTERFACES}:")


def test_overrides_made_directly_are_checked_too() -> None:
    assert PodOverrides(virtual_interfaces=["net1"]).virtual_interfaces == ("net1",)  # type: ignore[arg-type]
    with pytest.raises(AmbientInputError, match="'a b' is not a Linux interface name"):
        PodOverrides(virtual_interfaces=("a b",))
    with pytest.raises(AmbientInputError, match="give a tuple of names"):
        PodOverrides(virtual_interfaces="net1,net2")  # type: ignore[arg-type]


def test_probe_addresses_are_checked_and_typed() -> None:
    config = AgentConfig(probe_snat_v4="169.254.9.9", probe_snat_v6="fd00::9")  # type: ignore[arg-type]
    assert config.probe_snat_v4 == ip_address("169.254.9.9")
    assert "-s 169.254.9.9 -p tcp" in inpod_rules(config).ipv4
    with pytest.raises(AmbientInputError, match="is IPv6; this address must be IPv4"):
        AgentConfig(probe_snat_v4="fd00::9")  # type: ignore[arg-type]
    with pytest.raises(AmbientInputError, match="'nope' is not an IP address"):
        AgentConfig(probe_snat_v6="nope")  # type: ignore[arg-type]


def test_routes_are_the_agents_ip_rule_and_local_route() -> None:
    rules = inpod_rules(AgentConfig(ipv6=True))
    assert rules.route_commands == (
        "ip route add local 0.0.0.0/0 dev lo table 100",
        "ip -6 route add local ::/0 dev lo table 100",
        "ip rule add fwmark 0x111/0xfff pref 32764 lookup 100",
        "ip -6 rule add fwmark 0x111/0xfff pref 32764 lookup 100",
    )
    expected = (FwmarkRoute(0x111, 100, 0xFFF),)
    assert rules.fwmark_routes(4) == rules.fwmark_routes("ipv6") == inpod_routes(6) == expected
    assert inpod_rules().route_commands == rules.route_commands[::2]
    assert node_rules().route_commands == ()


def test_documents_and_versions() -> None:
    rules = inpod_rules()
    assert rules.documents() == (rules.ipv4,) and rules.ipv6 is None
    with pytest.raises(MeshlabError, match="no IPv6 document"):
        rules.ruleset(6)
    for bad in (5, "v4", [4]):
        with pytest.raises(MeshlabError, match="IP version must be 4 or 6"):
            rules.ruleset(bad)  # type: ignore[arg-type]
    with pytest.raises(MeshlabError, match=r"node.s rules .* are not modelled"):
        node_rules().ruleset(4)


def test_pod_dns_override_wins_over_the_agent() -> None:
    on = inpod_rules(AgentConfig(dns_capture=False), PodOverrides(dns_capture=True))
    off = inpod_rules(AgentConfig(dns_capture=True), PodOverrides(dns_capture=False))
    assert "15053" in on.ipv4 and "* raw" in on.ipv4
    assert "15053" not in off.ipv4 and "* raw" not in off.ipv4


# ---- what the rules do, in the kernel model -----------------------------------------------------


def test_the_apps_connection_goes_to_ztunnel_outbound() -> None:
    trace = pod().connect(proto="tcp", dst="10.96.0.20", dport=80, uid=1000, gid=1000)
    assert trace.verdict == "ACCEPT" and trace.local
    assert trace.delivered == (ip_address("127.0.0.1"), 15001)
    assert trace.original_dst == (ip_address("10.96.0.20"), 80)


def test_ztunnels_own_connection_leaves_untouched() -> None:
    trace = pod().connect(proto="tcp", dst="10.244.1.7", dport=15008, uid=0, gid=0,
                          mark=INPOD_MARK)
    assert trace.verdict == "ACCEPT" and not trace.local and trace.nat is None
    assert trace.out_iface == "eth0" and trace.delivered == (ip_address(PEER), 15008)


def test_inbound_plaintext_goes_to_15006_hbone_and_probes_do_not() -> None:
    ns = pod()
    plain = ns.receive(arriving(PEER, 40000, POD, 9080), "eth0")
    assert plain.delivered == (ip_address(POD), 15006)
    hbone = ns.receive(arriving(PEER, 40001, POD, 15008), "eth0")
    assert hbone.delivered == (ip_address(POD), 15008) and hbone.nat is None
    probe = ns.receive(arriving(str(HOST_PROBE_SNAT_V4), 40002, POD, 9080), "eth0")
    assert probe.delivered == (ip_address(POD), 9080) and probe.nat is None


def test_ingress_mode_takes_inbound_plaintext_to_the_app() -> None:
    rules = inpod_rules(overrides=PodOverrides(ingress_mode=True))
    trace = pod(rules).receive(arriving(PEER, 40000, POD, 9080), "eth0")
    assert trace.delivered == (ip_address(POD), 9080) and trace.nat is None


def test_virtual_interface_traffic_goes_to_ztunnel_outbound() -> None:
    rules = inpod_rules(overrides=PodOverrides(virtual_interfaces=("net1",)))
    ns = Netns(rules.ruleset(4), (*pod_interfaces(POD), Interface("net1", (ip_interface("10.0.9.1/24"),))),
               fwmark_routes=rules.fwmark_routes(4))
    trace = ns.receive(arriving("10.0.9.2", 40000, "10.96.0.20", 80), "net1")
    assert trace.delivered == (ip_address("10.0.9.1"), 15001)


def _ztunnel_to_app(ns: Netns):
    """ztunnel connects to the app from the client's own address (freebind), with its mark."""
    return ns.connect(proto="tcp", src=PEER, sport=41000, dst=POD, dport=9080, uid=0, gid=0,
                      mark=INPOD_MARK)


def test_the_apps_reply_goes_back_to_ztunnel_by_the_connmark_and_table_100() -> None:
    ns = pod()
    first = _ztunnel_to_app(ns)
    assert first.verdict == "ACCEPT" and first.local and first.nat is None
    assert first.connection.mark & 0xFFF == 0x111  # mangle ISTIO_PRERT set the connmark
    reply = ns.answer(first, uid=1000, gid=1000)
    assert reply.verdict == "ACCEPT" and reply.local
    assert reply.delivered == (ip_address(PEER), 41000)  # ztunnel's socket, not eth0


def test_without_the_ip_rule_the_reply_leaves_by_eth0() -> None:
    ns = pod(routes=False)
    reply = ns.answer(_ztunnel_to_app(ns), uid=1000, gid=1000)
    assert not reply.local and reply.out_iface == "eth0"


def test_dns_goes_to_ztunnel_and_its_upstream_queries_get_zone_1() -> None:
    ns = pod()
    app = ns.connect(proto="udp", dst="10.96.0.10", dport=53, uid=1000, gid=1000)
    assert app.delivered == (ip_address("127.0.0.1"), 15053)
    upstream = ns.connect(proto="udp", dst="10.96.0.10", dport=53, uid=0, gid=0,
                          mark=INPOD_MARK)
    assert upstream.out_iface == "eth0" and upstream.connection.zone == 1
    answer = ns.answer(upstream, iface="eth0")
    assert answer.verdict == "ACCEPT" and answer.connection.zone == 1
