"""Each match and target on its own, through the real traversal (one rule in OUTPUT or
PREROUTING of a small namespace)."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from meshlab.netfilter import Netns, Packet, parse_ruleset, pod_interfaces
from meshlab.netfilter.kernel import FwmarkRoute

POD, PEER = ip_address("10.244.0.5"), ip_address("10.244.0.9")


def outbound(table: str, rule: str, **conn):
    """Connect once with one rule in ``table`` OUTPUT; return whether it matched, the trace."""
    ns = Netns(parse_ruleset(f"*{table}\n-A OUTPUT {rule}\nCOMMIT\n"), pod_interfaces(POD))
    args = {"proto": "tcp", "dst": PEER, "dport": 8080, "uid": 1000, "gid": 1000} | conn
    trace = ns.connect(**args)
    return ns.counters.get((table, "OUTPUT", 1), 0) == 1, trace


def inbound(table: str, rule: str, packet: Packet, iface: str = "eth0", chain="PREROUTING"):
    ns = Netns(parse_ruleset(f"*{table}\n-A {chain} {rule}\nCOMMIT\n"), pod_interfaces(POD))
    trace = ns.receive(packet, iface)
    return ns.counters.get((table, chain, 1), 0) == 1, trace


@pytest.mark.parametrize(("rule", "conn", "matches"), [
    ("-p tcp -j ACCEPT", {}, True),
    ("-p udp -j ACCEPT", {}, False),
    ("! -p udp -j ACCEPT", {}, True),
    ("-d 10.244.0.0/24 -j ACCEPT", {}, True),
    ("! -d 10.244.0.0/24 -j ACCEPT", {}, False),
    ("-s 10.244.0.5 -j ACCEPT", {}, True),
    ("-s 127.0.0.6 -j ACCEPT", {"src": "127.0.0.6"}, True),
    ("-o eth0 -j ACCEPT", {}, True),
    ("-o eth+ -j ACCEPT", {}, True),
    ("! -o lo -j ACCEPT", {}, True),
    ("-o lo -j ACCEPT", {"dst": "127.0.0.1"}, True),
    ("-o lo -j ACCEPT", {"dst": POD}, True),  # the pod's own IP is reached via lo
    ("-p tcp --dport 8080 -j ACCEPT", {}, True),
    ("-p tcp --dport 8000:8100 -j ACCEPT", {}, True),
    ("-p tcp ! --dport 8080 -j ACCEPT", {}, False),
    ("-p tcp --sport 40000 -j ACCEPT", {"sport": 40000}, True),
    ("-p udp --dport 8080 -j ACCEPT", {"proto": "udp"}, True),
    ("-p tcp -m multiport --dports 53,8000:9000 -j ACCEPT", {}, True),
    ("-p tcp -m multiport ! --dports 53,8080 -j ACCEPT", {}, False),
    ("-p tcp -m multiport --ports 40000 -j ACCEPT", {"sport": 40000}, True),
    ("-m owner --uid-owner 1000 -j ACCEPT", {}, True),
    ("-m owner --uid-owner 1337 -j ACCEPT", {}, False),
    ("-m owner ! --uid-owner 1337 -j ACCEPT", {}, True),
    ("-m owner --uid-owner 900-1100 -j ACCEPT", {}, True),
    ("-m owner --gid-owner 1337 -j ACCEPT", {"gid": 1337}, True),
    ("-m owner --uid-owner 1000 --gid-owner 1337 -j ACCEPT", {}, False),
    ("-m mark --mark 0 -j ACCEPT", {}, True),
    ("-m mark --mark 0x539 -j ACCEPT", {}, False),
    ("-m connmark ! --mark 1 -j ACCEPT", {}, True),
    ("-m comment --comment \"anything\" -j ACCEPT", {}, True),
])
def test_match(rule, conn, matches):
    assert outbound("mangle", rule, **conn)[0] is matches


def test_conntrack_state_is_invalid_in_raw_and_new_after_it():
    assert outbound("raw", "-m conntrack --ctstate INVALID -j ACCEPT")[0]
    assert outbound("mangle", "-m conntrack --ctstate NEW -j ACCEPT")[0]
    assert not outbound("mangle", "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")[0]


def test_conntrack_state_stays_new_on_loopback_reentry():
    ns = Netns(parse_ruleset("*mangle\n-A INPUT -i lo -m conntrack --ctstate NEW -j ACCEPT\n"
                             "COMMIT\n"), pod_interfaces(POD))
    ns.connect(proto="tcp", dst="127.0.0.1", dport=80, uid=1, gid=1)
    assert ns.counters[("mangle", "INPUT", 1)] == 1


def test_owner_matches_in_postrouting_but_not_after_loopback():
    ns = Netns(parse_ruleset(
        "*mangle\n-A POSTROUTING -m owner --uid-owner 7 -j ACCEPT\n"
        "-A PREROUTING -i lo -j ACCEPT\nCOMMIT\n"), pod_interfaces(POD))
    trace = ns.connect(proto="tcp", dst="127.0.0.1", dport=80, uid=7, gid=7)
    assert ns.counters[("mangle", "POSTROUTING", 1)] == 1
    pre = [e for e in trace.evaluations if e.hook == "PREROUTING" and e.rule == 1]
    assert pre[0].packet.uid is None and pre[0].packet.iif == "lo"


def test_drop_policy_and_drop_target():
    ns = Netns(parse_ruleset("*filter\n:OUTPUT DROP [0:0]\nCOMMIT\n"), pod_interfaces(POD))
    trace = ns.connect(proto="tcp", dst=PEER, dport=1, uid=1, gid=1)
    assert trace.verdict == "DROP" and trace.evaluations[-1].rule == 0
    assert ns.counters[("filter", "OUTPUT", 0)] == 1
    assert outbound("filter", "-j DROP")[1].verdict == "DROP"


def test_jump_return_and_end_of_user_chain():
    text = """*mangle
:A - [0:0]
:B - [0:0]
-A OUTPUT -j A
-A OUTPUT -j MARK --set-mark 3
-A A -j B
-A A -j MARK --set-mark 1
-A B -j RETURN
-A B -j MARK --set-mark 2
COMMIT
"""
    trace = Netns(parse_ruleset(text), pod_interfaces(POD)).connect(
        proto="tcp", dst=PEER, dport=1, uid=1, gid=1)
    walk = [(e.chain, e.rule, e.verdict) for e in trace.evaluations]
    assert walk == [("OUTPUT", 1, "jump A"), ("A", 1, "jump B"), ("B", 1, "RETURN"),
                    ("A", 2, "MARK set 0x1"), ("OUTPUT", 2, "MARK set 0x3"),
                    ("OUTPUT", 0, "ACCEPT"), ("POSTROUTING", 0, "ACCEPT")]


def test_mark_and_connmark_targets():
    text = """*mangle
-A OUTPUT -j MARK --set-mark 0x10/0xf0
-A OUTPUT -j MARK --or-mark 0x1
-A OUTPUT -j CONNMARK --save-mark
-A OUTPUT -j MARK --set-mark 0
-A OUTPUT -j CONNMARK --restore-mark --mask 0xf
-A OUTPUT -m mark --mark 0x1 -m connmark --mark 0x11 -j ACCEPT
COMMIT
"""
    ns = Netns(parse_ruleset(text), pod_interfaces(POD))
    trace = ns.connect(proto="tcp", dst=PEER, dport=1, uid=1, gid=1)
    assert ns.counters[("mangle", "OUTPUT", 6)] == 1
    assert trace.connection.mark == 0x11


def test_dnat_in_output_reroutes():
    matched, trace = outbound("nat", "-p tcp -j DNAT --to-destination 127.0.0.1:9000")
    assert matched and trace.delivered == (ip_address("127.0.0.1"), 9000)
    assert trace.out_iface == "lo" and trace.nat.target == "DNAT"
    _, trace = outbound("nat", "-p tcp -j DNAT --to-destination 10.1.2.3")
    assert trace.delivered == (ip_address("10.1.2.3"), 8080) and trace.out_iface == "eth0"


def test_redirect_without_port_keeps_the_port():
    _, trace = outbound("nat", "-p tcp -j REDIRECT")
    assert trace.delivered == (ip_address("127.0.0.1"), 8080)


def test_redirect_in_prerouting_uses_the_incoming_interface_address():
    matched, trace = inbound("nat", "-p tcp -j REDIRECT --to-ports 15006",
                             Packet("tcp", PEER, 5000, POD, 80))
    assert matched and trace.delivered == (POD, 15006)


def test_tproxy_delivers_without_changing_the_destination_and_marks():
    text = ("*mangle\n-A PREROUTING -p tcp -j TPROXY --on-port 15006 --tproxy-mark 0x539/0xffffffff"
            "\n-A INPUT -m mark --mark 0x539 -j ACCEPT\nCOMMIT\n")
    # Delivery to an address that is not the pod's own needs Istio's policy routing
    # (ip rule fwmark 1337 lookup 133 + local default dev lo table 133): without it the
    # routing decision finds no local route and a pod does not forward.
    other = ip_address("10.96.0.1")
    bare = Netns(parse_ruleset(text), pod_interfaces(POD))
    assert not bare.receive(Packet("tcp", PEER, 5000, other, 443), "eth0").local
    ns = Netns(parse_ruleset(text), pod_interfaces(POD), fwmark_routes=(FwmarkRoute(1337, 133),))
    trace = ns.receive(Packet("tcp", PEER, 5000, other, 443), "eth0")
    assert trace.local and trace.delivered == (other, 15006)
    assert trace.nat.target == "TPROXY" and not trace.connection.natted
    assert ns.counters[("mangle", "INPUT", 1)] == 1


def test_ct_zone_log_and_trace_do_not_stop_traversal():
    text = ("*raw\n-A OUTPUT -p tcp -j CT --zone 2\n-A OUTPUT -j LOG --log-prefix x\n"
            "-A OUTPUT -j TRACE\n-A OUTPUT -j ACCEPT\nCOMMIT\n")
    ns = Netns(parse_ruleset(text), pod_interfaces(POD))
    trace = ns.connect(proto="tcp", dst=PEER, dport=1, uid=1, gid=1)
    assert [e.verdict for e in trace.hits] == ["CT zone 2", "LOG", "TRACE", "ACCEPT"]
    assert trace.connection.zone == 2


def test_notrack_skips_nat():
    text = ("*raw\n-A OUTPUT -j CT --notrack\nCOMMIT\n*nat\n-A OUTPUT -p tcp -j REDIRECT "
            "--to-ports 1\nCOMMIT\n")
    ns = Netns(parse_ruleset(text), pod_interfaces(POD))
    assert ns.connect(proto="tcp", dst=PEER, dport=1, uid=1, gid=1).nat is None


def test_ipv6_redirect_goes_to_loopback_v6():
    ns = Netns(parse_ruleset("*nat\n-A OUTPUT -p tcp -j REDIRECT --to-ports 15001\nCOMMIT\n",
                             family="ipv6"), pod_interfaces("fd00::5"))
    trace = ns.connect(proto="tcp", dst="fd00::9", dport=80, uid=1, gid=1)
    assert trace.delivered == (ip_address("::1"), 15001) and trace.out_iface == "lo"


def test_reply_is_translated_back_by_conntrack():
    ns = Netns(parse_ruleset("*nat\n-A OUTPUT -p tcp -j REDIRECT --to-ports 15001\nCOMMIT\n"),
               pod_interfaces(POD))
    trace = ns.connect(proto="tcp", dst=PEER, dport=80, uid=1, gid=1, sport=41000)
    reply = ns.reply(trace)
    assert (reply.src, reply.sport, reply.dst, reply.dport) == (PEER, 80, POD, 41000)
    assert str(trace.connection.reply) == "127.0.0.1:15001 -> 10.244.0.5:41000"


def test_bare_tcp_module_matches_every_tcp_packet():
    assert outbound("mangle", "-p tcp -m tcp -j ACCEPT")[0]
