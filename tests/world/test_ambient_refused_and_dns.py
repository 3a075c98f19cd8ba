"""Two things the real kernel showed the ambient model: ztunnel's SYN-ACK is sent (and
counted by the connmark rule) however the walk then ends, and a DNS query made straight to
ztunnel's own 15053 is served by ztunnel (asking its upstream resolver), not sent back to
15053."""

from __future__ import annotations

from ipaddress import IPv4Address, ip_address

import pytest

from meshlab.istio.envoy import Service, ServicePort
from meshlab.istio.ztunnel import Ztunnel
from meshlab.walk import Walk
from meshlab.world import Request, World

POD = IPv4Address("10.244.0.12")
KUBE_DNS = ip_address("10.96.0.10")
SET_CONNMARK = ("mangle", "ISTIO_PRERT", 1)   # -m mark --mark 0x539/0xfff -j CONNMARK ...


def walk(to: str, port: int, proto: str = "tcp") -> Walk:
    return World.default().run_spec(Request("pod/details", to, port, proto),
                                    subject="pod/details")


def replies(w: Walk) -> list[str]:
    return [e.decision for e in w.events if e.kind == "reply"]


# -- ztunnel's SYN-ACK when the walk ends refused ----------------------------------------------

@pytest.mark.parametrize(("to", "port", "reason"), [
    ("svc/kube-dns", 15053, "ztunnel closed it: the Service has no endpoint for that port"),
    ("127.0.0.1", 15001, "ztunnel closed it: the destination is ztunnel itself"),
    ("pod/reviews-v2", 5432, "nothing listens on tcp 10.244.0.13:5432 in reviews-v2"),
])
def test_ztunnels_syn_ack_is_traced_when_the_walk_ends_refused(to: str, port: int,
                                                               reason: str) -> None:
    w = walk(to, port)
    assert (w.outcome, w.reason) == ("refused", reason)
    # the accepted socket keeps the listener's mark 0x539: back in by lo, connmark set once
    assert w.counters[SET_CONNMARK] == 1
    app = next(e for e in w.events if e.kind == "connect").src   # the app's own socket
    assert replies(w)[-1].startswith(f"ztunnel's SYN-ACK comes back in and reaches {app},")
    ended = next(e.index for e in w.events if e.kind in ("close", "refused"))
    assert all(e.index > ended for e in w.events if e.kind == "reply")


def test_the_tunnel_the_peer_accepted_is_answered_too() -> None:
    """The peer's ztunnel accepted the HBONE connection before its app refused the target."""
    assert [r.split(" comes")[0] for r in replies(walk("pod/reviews-v2", 5432))] == [
        "the server's SYN-ACK", "ztunnel's SYN-ACK"]


def test_an_upstream_that_never_answered_has_no_answer_traced() -> None:
    w = walk("10.9.9.9", 80)   # passthrough to an address nobody has
    assert w.outcome == "timeout"
    assert [r.split(" comes")[0] for r in replies(w)] == ["ztunnel's SYN-ACK"]
    assert w.counters[SET_CONNMARK] == 1


def test_a_dns_query_nobody_answered_gets_no_answer() -> None:
    """UDP has no handshake: ztunnel answers a query only with its upstream's answer."""
    w = walk("10.9.9.9", 53, "udp")
    assert w.outcome == "timeout" and replies(w) == []
    assert SET_CONNMARK not in w.counters


def test_a_delivered_walk_keeps_its_answers() -> None:
    w = walk("svc/reviews-v2", 9080)
    assert w.outcome == "delivered" and w.counters[SET_CONNMARK] == 1
    assert [r.split(" comes")[0] for r in replies(w)] == ["the server's SYN-ACK",
                                                          "ztunnel's SYN-ACK"]


def test_a_sidecar_walk_that_ends_refused_traces_no_answer() -> None:
    w = World.default().run_spec(Request("pod/productpage", "10.9.9.9", 5432,
                                         process="app"), subject="pod/productpage")
    assert w.mode != "ambient"
    assert replies(w) == []


# -- DNS made straight to ztunnel's 15053 ---------------------------------------------------

def kube_dns() -> Service:
    return Service("kube-dns", "kube-system", KUBE_DNS, (ServicePort(53, 53, "UDP"),),
                   (ip_address("10.244.1.2"),))


def test_ztunnels_resolver_is_the_cluster_dns_service() -> None:
    assert Ztunnel.build(pod_ip=POD, services=(kube_dns(),)).resolver == (KUBE_DNS, 53)
    assert Ztunnel.build(pod_ip=POD).resolver is None


@pytest.mark.parametrize("asked", ["127.0.0.1", "127.0.0.53", str(POD)])
@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_a_query_to_ztunnel_itself_goes_to_its_resolver(asked: str, proto: str) -> None:
    z = Ztunnel.build(pod_ip=POD, services=(kube_dns(),))
    d = z.decide(proto, 15053, (ip_address(asked), 15053), client=POD)
    assert (d.route, d.upstream, d.mark) == ("dns", (KUBE_DNS, 53), 0x539)
    assert "ztunnel's DNS proxy itself" in d.describe()


def test_a_redirected_query_still_goes_to_the_resolver_asked() -> None:
    z = Ztunnel.build(pod_ip=POD, services=(kube_dns(),))
    d = z.decide("udp", 15053, (ip_address("10.0.0.53"), 53), client=POD)
    assert (d.route, d.upstream) == ("dns", (ip_address("10.0.0.53"), 53))


def test_without_a_resolver_a_query_to_ztunnel_itself_is_closed() -> None:
    d = Ztunnel.build(pod_ip=POD).decide("tcp", 15053, (POD, 15053), client=POD)
    assert d.route == "close" and d.upstream is None and "no upstream resolver" in d.why


@pytest.mark.parametrize(("to", "proto"), [("127.0.0.1", "tcp"), ("127.0.0.1", "udp"),
                                           ("pod/details", "tcp"), ("pod/details", "udp")])
def test_dns_to_ztunnels_own_15053_reaches_coredns_without_a_loop(to: str, proto: str) -> None:
    w = walk(to, 15053, proto)
    assert w.outcome == "delivered" and w.loop is None
    assert w.delivered_to is not None
    assert (w.delivered_to.process, w.delivered_to.port, w.delivered_to.sees_source) == (
        "coredns", 53, "10.244.0.12")
    assert [e.listener for e in w.events if e.kind == "accept"] == ["ztunnel:15053"]
    up = [e for e in w.events if e.kind == "connect" and e.process == "ztunnel"]
    assert [e.dst for e in up] == ["10.96.0.10:53"]
    assert w.counters[SET_CONNMARK] == 1   # ztunnel's answer back to the app, by lo
