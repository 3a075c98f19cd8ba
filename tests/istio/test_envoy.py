"""The simplified Envoy: listeners, clusters, per-connection decisions, istioctl-shaped views."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest

from meshlab.errors import MeshlabError
from meshlab.istio.envoy import ProxyDecision, Service, ServicePort, Sidecar

POD_IP = ip_address("10.244.0.5")
PEER = ip_address("10.244.0.7")
REVIEWS = Service("reviews", "default", ip_address("10.96.0.20"),
                  (ServicePort(9080, 9080, name="http"),),
                  (ip_address("10.244.0.9"), ip_address("10.244.0.10")))
DB = Service("mysql", "db", ip_address("10.96.0.30"), (ServicePort(3306, 13306),),
             (ip_address("10.244.1.4"),))


def sidecar(**kwargs: object) -> Sidecar:
    options: dict[str, object] = {"pod_ip": POD_IP, "inbound_ports": [9080],
                                  "services": [REVIEWS, DB]}
    options.update(kwargs)
    return Sidecar.build(**options)  # type: ignore[arg-type]


# --- inbound (15006) ------------------------------------------------------------------------------

def test_declared_port_goes_to_inbound_cluster_from_127_0_0_6() -> None:
    d = sidecar().decide(15006, (POD_IP, 9080))
    assert d == ProxyDecision("virtualInbound", "0.0.0.0_9080", "Addr: *:9080", "inbound|9080||",
                              (POD_IP, 9080), IPv4Address("127.0.0.6"))
    assert not d.closed and not d.original_src


def test_undeclared_port_goes_to_inbound_passthrough() -> None:
    d = sidecar().decide(15006, (POD_IP, 8000))
    assert d.cluster == "InboundPassthroughCluster" and d.match == "ALL"
    assert d.upstream == (POD_IP, 8000) and d.bind_source == IPv4Address("127.0.0.6")


def test_straight_to_15006_is_blackholed() -> None:
    d = sidecar().decide(15006, (POD_IP, 15006))
    assert (d.filter_chain, d.cluster, d.upstream, d.bind_source) == (
        "virtualInbound-blackhole", "BlackHoleCluster", None, None)
    assert d.closed


def test_tproxy_inbound_keeps_client_source() -> None:
    s = sidecar(interception_mode="TPROXY")
    d = s.decide(15006, (POD_IP, 9080), downstream=(PEER, 40000))
    assert d.cluster == "inbound|9080||" and d.upstream == (POD_IP, 9080)
    assert d.original_src and d.mark == 1337 and d.bind_source == PEER
    unknown_client = s.decide(15006, (POD_IP, 9080))
    assert unknown_client.original_src and unknown_client.bind_source is None
    assert all(listener.transparent for listener in s.listeners)
    inbound = s.listener(15006)
    assert "envoy.filters.listener.original_src" in inbound.listener_filters


def test_tproxy_outbound_is_unchanged() -> None:
    d = sidecar(interception_mode="TPROXY").decide(15001, (ip_address("1.2.3.4"), 443))
    assert d.cluster == "PassthroughCluster" and not d.original_src and d.bind_source is None


# --- outbound (15001) ----------------------------------------------------------------------------

def test_straight_to_15001_is_blackholed() -> None:
    d = sidecar().decide(15001, (ip_address("127.0.0.1"), 15001))
    assert (d.listener, d.filter_chain, d.cluster, d.upstream) == (
        "virtualOutbound", "virtualOutbound-blackhole", "BlackHoleCluster", None)
    assert d.match == "Addr: *:15001"


def test_service_vip_goes_to_outbound_cluster_first_endpoint() -> None:
    d = sidecar().decide(15001, (REVIEWS.vip, 9080))
    assert d.cluster == "outbound|9080||reviews.default.svc.cluster.local"
    assert d.filter_chain == "10.96.0.20_9080" and d.match == "Addr: 10.96.0.20/32:9080"
    assert d.upstream == (ip_address("10.244.0.9"), 9080) and d.bind_source is None


def test_service_target_port_is_used_upstream() -> None:
    d = sidecar().decide(15001, (DB.vip, 3306))
    assert d.cluster == "outbound|3306||mysql.db.svc.cluster.local"
    assert d.upstream == (ip_address("10.244.1.4"), 13306)


def test_vip_on_other_port_is_passthrough() -> None:
    d = sidecar().decide(15001, (REVIEWS.vip, 80))
    assert d.cluster == "PassthroughCluster" and d.upstream == (REVIEWS.vip, 80)


def test_unknown_destination_is_passthrough() -> None:
    d = sidecar().decide(15001, (ip_address("93.184.216.34"), 443))
    assert (d.filter_chain, d.match, d.cluster) == (
        "virtualOutbound-catchall-tcp", "ALL", "PassthroughCluster")
    assert d.upstream == (ip_address("93.184.216.34"), 443) and d.bind_source is None


def test_registry_only_blackholes_unknown_but_not_services() -> None:
    s = sidecar(outbound_policy="REGISTRY_ONLY")
    assert s.decide(15001, (ip_address("93.184.216.34"), 443)).cluster == "BlackHoleCluster"
    assert s.decide(15001, (ip_address("93.184.216.34"), 443)).upstream is None
    assert s.decide(15001, (REVIEWS.vip, 9080)).cluster.startswith("outbound|9080||")


def test_service_without_endpoints_closes() -> None:
    empty = Service("ghost", "default", ip_address("10.96.0.99"), (ServicePort(80, 8080),))
    d = sidecar(services=[empty]).decide(15001, (empty.vip, 80))
    assert d.cluster == "outbound|80||ghost.default.svc.cluster.local" and d.upstream is None


# --- errors and inputs ---------------------------------------------------------------------------

def test_port_that_is_not_a_listener() -> None:
    with pytest.raises(MeshlabError, match=r"no listener on port 9080.*15001.*15006"):
        sidecar().decide(9080, (POD_IP, 9080))


def test_bad_original_destination() -> None:
    with pytest.raises(MeshlabError, match="not an IP address"):
        sidecar().decide(15001, ("reviews", 9080))  # type: ignore[arg-type]
    with pytest.raises(MeshlabError, match="not a port"):
        sidecar().decide(15001, (POD_IP, 0))


def test_bad_build_options() -> None:
    with pytest.raises(MeshlabError, match="NONE"):
        sidecar(interception_mode="NONE")
    with pytest.raises(MeshlabError, match="ALLOW_ANY or REGISTRY_ONLY"):
        sidecar(outbound_policy="DENY")


def test_strings_are_accepted() -> None:
    s = Sidecar.build(pod_ip="10.244.0.5", inbound_ports=[9080],
                      services=[Service("r", "d", "10.96.0.1", [ServicePort(80, 8080)],
                                        ["10.244.0.9"])])  # type: ignore[arg-type]
    assert s.decide(15001, ("10.96.0.1", 80)).upstream == (ip_address("10.244.0.9"), 8080)


def test_ipv6_pod_binds_to_colon_colon_6() -> None:
    pod6 = ip_address("fd00::5")
    s = Sidecar.build(pod_ip=pod6, inbound_ports=[9080])
    d = s.decide(15006, (pod6, 9080))
    assert d.bind_source == IPv6Address("::6") and d.filter_chain == "::_9080"
    assert str(s.listener(15006).address) == "::"


def test_custom_ports() -> None:
    s = sidecar(proxy_port=16001, inbound_port=16006)
    assert s.decide(16001, (POD_IP, 16001)).cluster == "BlackHoleCluster"
    assert s.decide(16006, (POD_IP, 16006)).cluster == "BlackHoleCluster"


# --- clusters and views ---------------------------------------------------------------------------

def test_cluster_types_and_bind() -> None:
    s = sidecar()
    expect = {
        "inbound|9080||": ("ORIGINAL_DST", "CLUSTER_PROVIDED", "127.0.0.6"),
        "InboundPassthroughCluster": ("ORIGINAL_DST", "CLUSTER_PROVIDED", "127.0.0.6"),
        "PassthroughCluster": ("ORIGINAL_DST", "CLUSTER_PROVIDED", None),
        "BlackHoleCluster": ("STATIC", "ROUND_ROBIN", None),
        "outbound|9080||reviews.default.svc.cluster.local": ("EDS", "LEAST_REQUEST", None),
    }
    for name, (type_, lb, bind) in expect.items():
        c = s.cluster(name)
        assert (c.type, c.lb_policy) == (type_, lb)
        assert (str(c.bind_source) if c.bind_source else None) == bind


def test_listener_frame_is_istioctl_shaped() -> None:
    frame = sidecar(services=[REVIEWS]).listener_frame()
    assert list(frame.columns) == ["ADDRESSES", "PORT", "MATCH", "DESTINATION"]
    rows = [tuple(r) for r in frame.itertuples(index=False)]
    assert rows == [
        ("0.0.0.0", 15001, "ALL", "PassthroughCluster"),
        ("0.0.0.0", 15001, "Addr: *:15001", "Non-HTTP/Non-TCP"),
        ("0.0.0.0", 15001, "Addr: 10.96.0.20/32:9080",
         "Cluster: outbound|9080||reviews.default.svc.cluster.local"),
        ("0.0.0.0", 15006, "Addr: *:15006", "Non-HTTP/Non-TCP"),
        ("0.0.0.0", 15006, "ALL", "InboundPassthroughCluster"),
        ("0.0.0.0", 15006, "Addr: *:9080", "Cluster: inbound|9080||"),
    ]


def test_cluster_frame_is_istioctl_shaped() -> None:
    frame = sidecar(services=[REVIEWS]).cluster_frame()
    assert list(frame.columns) == ["SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE",
                                   "DESTINATION RULE"]
    rows = [tuple(r) for r in frame.itertuples(index=False)]
    assert rows == [
        ("", 9080, "-", "inbound", "ORIGINAL_DST", "-"),
        ("BlackHoleCluster", "-", "-", "-", "STATIC", "-"),
        ("InboundPassthroughCluster", "-", "-", "-", "ORIGINAL_DST", "-"),
        ("PassthroughCluster", "-", "-", "-", "ORIGINAL_DST", "-"),
        ("reviews.default.svc.cluster.local", 9080, "-", "outbound", "EDS", "-"),
    ]


def test_config_dump_shape() -> None:
    dump = sidecar(interception_mode="TPROXY").config_dump()
    listeners_dump, clusters_dump = dump["configs"]
    by_name = {item["name"]: item["active_state"]["listener"]
               for item in listeners_dump["dynamic_listeners"]}
    outbound = by_name["virtualOutbound"]
    assert outbound["address"] == {"socket_address": {"address": "0.0.0.0", "port_value": 15001}}
    assert outbound["use_original_dst"] is True and outbound["transparent"] is True
    first = outbound["filter_chains"][0]
    assert first["name"] == "virtualOutbound-blackhole"
    assert first["filter_chain_match"] == {"destination_port": 15001}
    assert first["filters"][0]["typed_config"]["cluster"] == "BlackHoleCluster"
    svc_chain = next(c for c in outbound["filter_chains"] if c["name"] == "10.96.0.20_9080")
    assert svc_chain["filter_chain_match"]["prefix_ranges"] == [
        {"address_prefix": "10.96.0.20", "prefix_len": 32}]
    clusters = {c["cluster"]["name"]: c["cluster"]
                for c in clusters_dump["dynamic_active_clusters"]}
    assert clusters["inbound|9080||"]["upstream_bind_config"] == {
        "source_address": {"address": "127.0.0.6", "port_value": 0}}
    assert clusters["inbound|9080||"]["type"] == "ORIGINAL_DST"
    assert clusters["BlackHoleCluster"]["lb_policy"] == "ROUND_ROBIN"
    assert "upstream_bind_config" not in clusters["PassthroughCluster"]


def test_describe_reads_well() -> None:
    text = sidecar().decide(15006, (POD_IP, 9080)).describe()
    assert "inbound|9080||" in text and "from 127.0.0.6" in text
    assert "closes" in sidecar().decide(15001, (POD_IP, 15001)).describe()
