"""TPROXY inbound, packet by packet, as the real kernel did it in throwaway namespaces.

Experiment (root, iptables-nft; pod 10.244.0.5 and peer 10.244.0.9 joined by a veth; Istio's
TPROXY rules for ``-m TPROXY -b * -d 15090,15021,15020`` and its post-apply
``ip rule add fwmark 1337 lookup 133`` / ``ip route add local default dev lo table 133``; a
transparent proxy on 15006 as UID 0 GID 1337 connecting upstream from the client's address
with IP_TRANSPARENT and SO_MARK 1337): the app saw 10.244.0.9. First packets counted:
mangle PREROUTING 1 (x3: peer SYN, proxy SYN via lo, app SYN-ACK via lo), ISTIO_INBOUND 8 ->
ISTIO_TPROXY 1 (peer SYN), mangle OUTPUT 1 (proxy SYN: ``-o lo --mark 1337 RETURN``), nat
OUTPUT 1 and ISTIO_OUTPUT 3 (``-o lo ! --uid-owner 1337 RETURN``: UID 0), ISTIO_INBOUND 1 and
PREROUTING 2 (save-mark) for the proxy SYN and the app SYN-ACK, mangle OUTPUT 4 (restore-mark)
for the app SYN-ACK. Without the ip rule the SYN-ACK left by eth0 and the proxy timed out;
as UID 1337 nat ISTIO_OUTPUT 2 redirected the upstream to 15006 and it timed out; without
SO_MARK, mangle OUTPUT 3 marked it 1338 and ISTIO_TPROXY took it back to 15006.
"""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from meshlab.errors import MeshlabError
from meshlab.istio.capture import generate
from meshlab.istio.flags import CaptureConfig
from meshlab.netfilter import Netns, Packet, pod_interfaces
from meshlab.netfilter.kernel import EPHEMERAL_PORTS, EphemeralPorts, FwmarkRoute, fwmark_routes
from meshlab.pod import Pod
from meshlab.scenarios import run_scenario

POD = ip_address("10.244.0.5")
PEER = ip_address("10.244.0.9")
FLAGS = ["-p", "15001", "-z", "15006", "-u", "1337", "-m", "TPROXY", "-i", "*", "-x", "",
         "-b", "*", "-d", "15090,15021,15020"]


@pytest.fixture(scope="module")
def rules():  # type: ignore[no-untyped-def]
    return generate(CaptureConfig.from_args(FLAGS))


def hits(trace):  # type: ignore[no-untyped-def]
    return [(e.table, e.chain, e.rule) for e in trace.hits]


def _namespace(rules, *, routed: bool = True) -> Netns:  # type: ignore[no-untyped-def]
    routes = fwmark_routes(rules.post_commands) if routed else ()
    return Netns(rules.ruleset_v4, pod_interfaces(POD), fwmark_routes=routes)


def test_post_commands_become_one_fwmark_route(rules) -> None:  # type: ignore[no-untyped-def]
    assert fwmark_routes(rules.post_commands) == (FwmarkRoute(1337, 133),)
    assert fwmark_routes(["ip rule add fwmark 1337 lookup 133"]) == ()  # table 133 not local
    assert FwmarkRoute(1337, 133).commands[0] == "ip rule add fwmark 1337 lookup 133"


def test_original_src_upstream_reaches_the_app_and_its_answer_comes_back(rules) -> None:  # type: ignore[no-untyped-def]
    ns = _namespace(rules)
    first = ns.receive(Packet("tcp", PEER, 33000, POD, 9080), "eth0")
    assert first.local and first.delivered == (POD, 15006)
    assert hits(first) == [("mangle", "PREROUTING", 1), ("mangle", "ISTIO_INBOUND", 8),
                           ("mangle", "ISTIO_TPROXY", 1)]
    assert first.connection.mark == 0  # TPROXY ends the table: no save-mark for this one
    up = ns.connect(proto="tcp", dst=POD, dport=9080, uid=0, gid=1337, src=PEER, mark=1337)
    assert up.local and up.delivered == (POD, 9080) and up.out_iface == "lo"
    assert hits(up) == [("mangle", "OUTPUT", 1), ("nat", "OUTPUT", 1), ("nat", "ISTIO_OUTPUT", 3),
                        ("mangle", "PREROUTING", 1), ("mangle", "ISTIO_INBOUND", 1),
                        ("mangle", "PREROUTING", 2)]
    assert up.connection.mark == 1337
    back = ns.answer(up, uid=1000, gid=1000)
    assert back.direction == "reply" and back.local and back.out_iface == "lo"
    assert back.delivered == (PEER, up.connection.original.sport)
    assert hits(back) == [("mangle", "OUTPUT", 4), ("mangle", "PREROUTING", 1),
                          ("mangle", "ISTIO_INBOUND", 1), ("mangle", "PREROUTING", 2)]


def test_without_the_fwmark_route_the_answer_leaves_by_eth0(rules) -> None:  # type: ignore[no-untyped-def]
    ns = _namespace(rules, routed=False)
    up = ns.connect(proto="tcp", dst=POD, dport=9080, uid=0, gid=1337, src=PEER, mark=1337)
    assert up.local
    back = ns.answer(up, uid=1000, gid=1000)
    assert not back.local and back.out_iface == "eth0"
    assert ("mangle", "OUTPUT", 4) in hits(back)  # the mark is restored, but nothing reads it


def test_without_so_mark_the_gid_rule_marks_1338_and_tproxy_takes_it_again(rules) -> None:  # type: ignore[no-untyped-def]
    up = _namespace(rules).connect(proto="tcp", dst=POD, dport=9080, uid=0, gid=1337, src=PEER)
    assert ("mangle", "OUTPUT", 3) in hits(up) and ("mangle", "ISTIO_TPROXY", 1) in hits(up)
    assert up.delivered == (POD, 15006)


def test_as_uid_1337_the_upstream_is_redirected_to_15006(rules) -> None:  # type: ignore[no-untyped-def]
    up = _namespace(rules).connect(proto="tcp", dst=POD, dport=9080, uid=1337, gid=1337,
                                   src=PEER, mark=1337)
    assert ("nat", "ISTIO_OUTPUT", 2) in hits(up) and up.nat.target == "REDIRECT"


def test_walk_delivers_with_the_client_address_and_shows_the_answer() -> None:
    walk = run_scenario("tproxy-inbound")
    assert walk.outcome == "delivered", walk.reason
    assert walk.delivered_to is not None and walk.delivered_to.sees_source == "10.244.0.9"
    connect = [e for e in walk.events if e.kind == "connect" and e.connection == 1]
    assert connect and connect[0].owner == "uid 0 gid 1337" and "mark 1337" in connect[0].decision
    assert any(e.kind == "route" and "SYN-ACK" in e.decision for e in walk.events)
    nat = {k: v for k, v in walk.counters.items() if k[0] == "nat" and k[2] > 0}
    assert nat == {("nat", "OUTPUT", 1): 1, ("nat", "ISTIO_OUTPUT", 3): 1}


def test_walk_without_the_fwmark_route_times_out() -> None:
    from meshlab.world import World

    world = World.default()
    subject = world.pod(world.subject).with_rules(flags=FLAGS)
    assert subject.fwmark_routes == (FwmarkRoute(1337, 133),)
    from dataclasses import replace

    bare = replace(subject, fwmark_routes=())
    alone = World(tuple(bare if p.name == subject.name else p for p in world.pods),
                  world.services)
    from meshlab.world import Request

    walk = alone.run(Request("pod/reviews", "pod/productpage", 9080))
    assert walk.outcome == "timeout", walk.reason
    assert any(e.kind == "timeout" and "eth0" in e.decision for e in walk.events)


def test_ephemeral_ports_use_linux_default_range_and_wrap() -> None:
    assert (EPHEMERAL_PORTS.start, EPHEMERAL_PORTS.stop - 1) == (32768, 60999)
    ports = EphemeralPorts(range(60998, 61000))
    assert [ports.next() for _ in range(3)] == [60998, 60999, 60998]
    with pytest.raises(MeshlabError):
        EphemeralPorts(range(0))


def test_namespaces_sharing_an_allocator_never_repeat_a_port() -> None:
    shared = EphemeralPorts()
    pod = Pod.default()
    a, b = pod.netns(ports=shared), pod.netns(ports=shared)
    ta = a.connect(proto="tcp", dst=PEER, dport=80, uid=1000, gid=1000)
    tb = b.connect(proto="tcp", dst=PEER, dport=80, uid=1000, gid=1000)
    assert ta.connection.original.sport == 32768 and tb.connection.original.sport == 32769


def test_bad_mark_is_refused(rules) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(MeshlabError, match="mark"):
        _namespace(rules).connect(proto="tcp", dst=POD, dport=9080, uid=0, gid=0, mark=-1)
