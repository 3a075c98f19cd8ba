"""The whole path through Istio's default sidecar rules, scenario by scenario."""

from __future__ import annotations

from ipaddress import ip_address

import pytest
from nf_istio_fixtures import ISTIO_RESTORE, ISTIO_SAVE

from meshlab.netfilter import Netns, Packet, parse_rule, parse_ruleset, pod_interfaces

POD = ip_address("10.244.0.5")
PEER = ip_address("10.244.0.9")
LOCALHOST = ip_address("127.0.0.1")


@pytest.fixture(params=["restore", "save"])
def ns(request) -> Netns:
    text = ISTIO_RESTORE if request.param == "restore" else ISTIO_SAVE
    return Netns(parse_ruleset(text), pod_interfaces(POD))


def hits(trace):
    return [(e.table, e.chain, e.rule, e.target) for e in trace.hits]


def test_inbound_to_9080_ends_on_15006_of_the_incoming_interface(ns):
    trace = ns.receive(Packet("tcp", PEER, 51000, POD, 9080), "eth0")
    assert trace.direction == "inbound"
    assert trace.verdict == "ACCEPT" and trace.local
    assert trace.delivered == (POD, 15006)  # REDIRECT in PREROUTING: eth0's address
    assert trace.original_dst == (POD, 9080)
    assert trace.nat.target == "REDIRECT" and trace.nat.chain == "ISTIO_IN_REDIRECT"
    assert hits(trace) == [("nat", "PREROUTING", 1, "ISTIO_INBOUND"),
                           ("nat", "ISTIO_INBOUND", 5, "ISTIO_IN_REDIRECT"),
                           ("nat", "ISTIO_IN_REDIRECT", 1, "REDIRECT")]
    # the proxy's accepted socket asks conntrack for the original destination
    assert ns.conntrack.original_dst("tcp", (POD, 15006), (PEER, 51000)) == (POD, 9080)
    # the reply reaches the peer from the address it dialled
    reply = ns.reply(trace)
    assert (reply.src, reply.sport, reply.dst, reply.dport) == (POD, 9080, PEER, 51000)


def test_app_outbound_ends_on_15001_with_original_destination_kept(ns):
    trace = ns.connect(proto="tcp", dst=PEER, dport=8080, uid=1000, gid=1000)
    assert trace.delivered == (LOCALHOST, 15001)
    assert trace.original_dst == (PEER, 8080)
    assert trace.out_iface == "lo" and trace.local  # re-routed after nat OUTPUT
    assert hits(trace) == [("nat", "OUTPUT", 1, "ISTIO_OUTPUT"),
                           ("nat", "ISTIO_OUTPUT", 9, "ISTIO_REDIRECT"),
                           ("nat", "ISTIO_REDIRECT", 1, "REDIRECT")]
    src, sport = trace.connection.original.src, trace.connection.original.sport
    assert src == POD
    assert ns.conntrack.original_dst("tcp", (LOCALHOST, 15001), (POD, sport)) == (PEER, 8080)
    # POSTROUTING already sees the new destination and lo
    post = [e for e in trace.evaluations if e.hook == "POSTROUTING"]
    assert post and all(e.packet.oif == "lo" and e.packet.dst == LOCALHOST for e in post)
    # looped back in on lo: nat is not consulted again
    assert not [e for e in trace.evaluations if e.hook in ("PREROUTING", "INPUT")
                and e.table == "nat"]


def test_proxy_outbound_as_1337_goes_out_untouched(ns):
    trace = ns.connect(proto="tcp", dst=PEER, dport=8080, uid=1337, gid=1337)
    assert trace.nat is None
    assert trace.delivered == (PEER, 8080) and trace.out_iface == "eth0" and not trace.local
    assert ("nat", "ISTIO_OUTPUT", 4, "RETURN") in hits(trace)


def test_proxy_inbound_forwarding_from_127_0_0_6(ns):
    trace = ns.connect(proto="tcp", src="127.0.0.6", dst=POD, dport=9080, uid=1337, gid=1337)
    assert trace.out_iface == "lo" and trace.local
    assert trace.nat is None and trace.delivered == (POD, 9080)
    assert hits(trace) == [("nat", "OUTPUT", 1, "ISTIO_OUTPUT"),
                           ("nat", "ISTIO_OUTPUT", 1, "RETURN")]
    # re-enters on lo: PREROUTING nat (which would redirect to 15006) is not run
    assert not [e for e in trace.evaluations if e.hook == "PREROUTING"]


def test_removing_the_uid_and_gid_exemption_makes_the_proxy_loop(ns):
    broken = ns.ruleset.without_rule(parse_rule("-m owner --uid-owner 1337 -j RETURN"))
    broken = broken.without_rule(parse_rule("-m owner --gid-owner 1337 -j RETURN"),
                                 chain="ISTIO_OUTPUT")
    trace = Netns(broken, pod_interfaces(POD)).connect(
        proto="tcp", dst=PEER, dport=8080, uid=1337, gid=1337)
    assert trace.delivered == (LOCALHOST, 15001)


def test_excluded_inbound_port_15021_is_not_redirected(ns):
    trace = ns.receive(Packet("tcp", PEER, 51000, POD, 15021), "eth0")
    assert trace.nat is None and trace.delivered == (POD, 15021) and trace.local
    assert ("nat", "ISTIO_INBOUND", 3, "RETURN") in hits(trace)


def test_proxy_to_own_pod_ip_not_from_127_0_0_6_goes_to_15006(ns):
    trace = ns.connect(proto="tcp", dst=POD, dport=9080, uid=1337, gid=1337)
    assert trace.delivered == (LOCALHOST, 15006)
    assert trace.nat.chain == "ISTIO_IN_REDIRECT"
    assert ("nat", "ISTIO_OUTPUT", 2, "ISTIO_IN_REDIRECT") in hits(trace)


def test_app_to_localhost_is_not_captured(ns):
    trace = ns.connect(proto="tcp", dst="127.0.0.1", dport=8080, uid=1000, gid=1000)
    assert trace.nat is None and trace.delivered == (LOCALHOST, 8080) and trace.local
    assert ("nat", "ISTIO_OUTPUT", 3, "RETURN") in hits(trace)


def test_tunnel_port_15008_is_not_captured_inbound(ns):
    trace = ns.receive(Packet("tcp", PEER, 51000, POD, 15008), "eth0")
    assert trace.nat is None and hits(trace)[1] == ("nat", "ISTIO_INBOUND", 1, "RETURN")


def test_udp_is_not_redirected_outbound(ns):
    trace = ns.connect(proto="udp", dst=PEER, dport=53, uid=1000, gid=1000)
    assert trace.nat is None and trace.out_iface == "eth0"


def test_tcp_for_another_address_is_still_redirected_by_the_catch_all(ns):
    # `-b '*'` redirects every inbound TCP connection, whatever its destination address
    trace = ns.receive(Packet("tcp", PEER, 51000, ip_address("10.244.0.77"), 80), "eth0")
    assert trace.delivered == (POD, 15006) and trace.original_dst[1] == 80


def test_packet_for_another_address_is_dropped_pods_do_not_forward(ns):
    trace = ns.receive(Packet("udp", PEER, 51000, ip_address("10.244.0.77"), 80), "eth0")
    assert trace.verdict == "DROP" and not trace.local
    assert any("forward" in n for n in trace.notes)


def test_counters_count_connections_per_rule(ns):
    for _ in range(3):
        ns.connect(proto="tcp", dst=PEER, dport=8080, uid=1000, gid=1000)
    ns.connect(proto="tcp", dst=PEER, dport=8080, uid=1337, gid=1337)
    assert ns.counters[("nat", "OUTPUT", 1)] == 4
    assert ns.counters[("nat", "ISTIO_REDIRECT", 1)] == 3
    assert ns.counters[("nat", "ISTIO_OUTPUT", 4)] == 1
    assert len(ns.conntrack) == 4


def test_evaluations_list_every_rule_tried_with_the_packet_it_saw(ns):
    trace = ns.connect(proto="tcp", dst=PEER, dport=8080, uid=1000, gid=1000)
    chain_rules = [e.rule for e in trace.evaluations if e.chain == "ISTIO_OUTPUT"]
    assert chain_rules == list(range(1, 10))
    first = trace.evaluations[0]
    assert first.packet.uid == 1000 and first.packet.oif == "eth0" and first.packet.dst == PEER
    assert [e.matched for e in trace.evaluations if e.chain == "ISTIO_OUTPUT"] == [False] * 8 + [
        True]


def test_trace_json_contract(ns):
    data = ns.connect(proto="tcp", dst=PEER, dport=8080, uid=1000, gid=1000).to_json()
    assert set(data) == {"direction", "verdict", "original_dst", "delivered", "nat", "hits"}
    assert data["delivered"] == {"ip": "127.0.0.1", "port": 15001}
    assert data["nat"] == {"target": "REDIRECT", "chain": "ISTIO_REDIRECT", "rule": 1}
    assert data["hits"][0] == {"table": "nat", "chain": "OUTPUT", "rule": 1,
                               "target": "ISTIO_OUTPUT"}


# -- found by the live families (meshlab.live.families) -------------------------------------

def test_first_ct_rule_decides_the_zone() -> None:
    """xt_CT ignores a packet that already has a template: UID 1337's DNS stays in zone 1
    although the catch-all `--dport 53 -j CT --zone 2` rule also matches (and counts)."""
    from meshlab.istio.capture import CaptureConfig, generate
    from meshlab.istio.flags import DEFAULT_ISTIO_INIT_ARGS
    from meshlab.netfilter import Netns, pod_interfaces

    rules = generate(CaptureConfig.from_args([*DEFAULT_ISTIO_INIT_ARGS, "--redirect-dns"],
                                             dns_servers_v4=["10.96.0.10"]))
    ns = Netns(rules.ruleset_v4, pod_interfaces("10.244.0.5"))
    agent = ns.connect(proto="udp", dst="10.96.0.10", dport=53, uid=1337, gid=1337)
    app = ns.connect(proto="udp", dst="10.96.0.10", dport=53, uid=1000, gid=1000)
    assert agent.connection.zone == 1 and not agent.local
    assert app.connection.zone == 2 and app.delivered[1] == 15053
    assert ns.counters[("raw", "ISTIO_OUTPUT_DNS", 5)] == 2  # matched both times


def test_ipv6_local_destination_is_its_own_source() -> None:
    """IPv6 source selection prefers the destination: a connection to ::6 comes from ::6
    (so Istio's `-o lo -s ::6/128 -j RETURN` matches it)."""
    from ipaddress import ip_address, ip_interface

    from meshlab.istio.capture import CaptureConfig, generate
    from meshlab.istio.flags import DEFAULT_ISTIO_INIT_ARGS
    from meshlab.netfilter import Interface, Netns

    rules = generate(CaptureConfig.from_args(list(DEFAULT_ISTIO_INIT_ARGS), enable_ipv6=True))
    ns = Netns(rules.ruleset_v6, (
        Interface("lo", (ip_interface("::1/128"), ip_interface("::6/128"))),
        Interface("eth0", (ip_interface("fd00:244::5/64"),))))
    trace = ns.connect(proto="tcp", dst="::6", dport=15021, uid=1337, gid=1337)
    assert trace.connection.original.src == ip_address("::6")
    assert trace.nat is None and trace.delivered == (ip_address("::6"), 15021)


def test_nat_after_tproxy_rewrites_the_address_the_socket_sees() -> None:
    """-k net1 in TPROXY mode: mangle TPROXY picks the 15006 listener, then nat PREROUTING's
    REDIRECT still rewrites the destination to net1's address."""
    from ipaddress import ip_address, ip_interface

    from meshlab.istio.capture import CaptureConfig, generate
    from meshlab.istio.flags import DEFAULT_ISTIO_INIT_ARGS
    from meshlab.netfilter import Interface, Netns, Packet
    from meshlab.netfilter.kernel import fwmark_routes

    args = [a if a != "REDIRECT" else "TPROXY" for a in DEFAULT_ISTIO_INIT_ARGS]
    rules = generate(CaptureConfig.from_args([*args, "-k", "net1"]))
    ns = Netns(rules.ruleset_v4, (
        Interface("lo", (ip_interface("127.0.0.1/8"),)),
        Interface("eth0", (ip_interface("10.244.0.5/24"),)),
        Interface("net1", (ip_interface("10.245.0.5/24"),))),
        fwmark_routes=fwmark_routes(rules.post_commands))
    trace = ns.receive(Packet("tcp", ip_address("10.245.0.9"), 40000,
                              ip_address("10.244.0.5"), 7070), "net1")
    assert trace.local and trace.delivered == (ip_address("10.245.0.5"), 15006)


# -- answers: is the server's answer a reply, or a NEW connection? (Netns.answer) ----------

DNS_RULES = """\
*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:ISTIO_OUTPUT_DNS - [0:0]
:ISTIO_INBOUND - [0:0]
-A PREROUTING -j ISTIO_INBOUND
-A OUTPUT -j ISTIO_OUTPUT_DNS
-A ISTIO_OUTPUT_DNS -p udp --dport 53 -m owner --uid-owner 1337 -j CT --zone 1
-A ISTIO_OUTPUT_DNS -p udp --sport 15053 -m owner --uid-owner 1337 -j CT --zone 2
-A ISTIO_OUTPUT_DNS -p udp --dport 53 -d 10.96.0.10/32 -j CT --zone 2
-A ISTIO_INBOUND -p udp --sport 53 -s 10.96.0.10/32 -j CT --zone 1
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:ISTIO_OUTPUT - [0:0]
:ISTIO_OUTPUT_DNS - [0:0]
-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -j ISTIO_OUTPUT_DNS
-A ISTIO_OUTPUT_DNS -p udp --dport 53 -d 10.96.0.10/32 -j REDIRECT --to-ports 15053
COMMIT
"""
"""The DNS part of ``istio-iptables --redirect-dns`` with resolv.conf nameserver 10.96.0.10."""
KUBE_DNS = ip_address("10.96.0.10")


@pytest.fixture
def dns_ns() -> Netns:
    return Netns(parse_ruleset(DNS_RULES), pod_interfaces(POD))


def test_a_redirected_dns_answer_is_a_reply_in_zone_2_and_comes_from_the_server(dns_ns):
    query = dns_ns.connect(proto="udp", dst=KUBE_DNS, dport=53, uid=1000, gid=1000)
    assert query.connection.zone == 2 and query.delivered == (LOCALHOST, 15053)
    # the agent answers from 127.0.0.1:15053 as 1337: `--sport 15053 ... CT --zone 2`
    answer = dns_ns.answer(query, uid=1337, gid=1337)
    assert answer.connection == query.connection  # found: a reply, nat not consulted
    assert not [e for e in answer.evaluations if e.table == "nat"]
    client = (query.connection.original.src, query.connection.original.sport)
    assert answer.local and answer.delivered == client
    assert answer.reply_src == (KUBE_DNS, 53)  # un-NATed at POSTROUTING
    # ... so, back in by lo, the answer meets `--sport 53 -s 10.96.0.10 -j CT --zone 1`: the
    # rule matches and counts, but the packet already has its conntrack entry (zone 2)
    assert ("raw", "ISTIO_INBOUND", 1, "CT") in hits(answer)


def test_an_answer_in_another_zone_is_a_new_connection(dns_ns):
    # the agent (1337) asks a server resolv.conf does not list: zone 1 (`--dport 53` rule)
    query = dns_ns.connect(proto="udp", dst="192.168.10.20", dport=53, uid=1337, gid=1337)
    assert query.connection.zone == 1 and query.out_iface == "eth0"
    # the answer from 192.168.10.20:53 matches no `-s` of ISTIO_INBOUND: zone 0, no entry
    answer = dns_ns.answer(query, iface="eth0")
    assert answer.connection != query.connection and answer.connection.zone == 0
    assert ("nat", "PREROUTING", 0, "ACCEPT") in [(e.table, e.chain, e.rule, e.verdict)
                                                  for e in answer.evaluations]
    assert dns_ns.counters[("nat", "INPUT", 0)] == 1  # nat saw it: NEW
    assert answer.local and answer.delivered == (POD, query.connection.original.sport)
    assert any("NEW" in note for note in answer.notes)


def test_an_answer_to_a_dns_server_port_53_is_captured_again(dns_ns):
    # kube-dns itself (10.96.0.10:53) asks the pod's port 53: zone 1 on the way in
    query = dns_ns.receive(Packet("udp", KUBE_DNS, 53, POD, 53), "eth0")
    assert query.connection.zone == 1 and query.delivered == (POD, 53)
    # root's answer to 10.96.0.10:53 gets zone 2 (`--dport 53 -d 10.96.0.10`): no entry
    # there, so it is NEW, and nat redirects it to the agent on 15053 like any DNS query
    answer = dns_ns.answer(query, uid=0, gid=0)
    assert answer.connection.zone == 2 and answer.nat is not None
    assert answer.local and answer.delivered == (LOCALHOST, 15053)
    assert answer.reply_src == (POD, 53)  # nothing un-NATs it: the peer never hears back
