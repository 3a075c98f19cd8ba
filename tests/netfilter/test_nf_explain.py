"""Explained traces: every match both tests and explains a packet, from one definition; the
traversal records why each rule it passed over did not match; the fast path
(``meshlab.netfilter._fast``) reads exactly like the reference path."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from ipaddress import ip_address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshlab.netfilter import Netns, Packet, _fast, parse_rule, pod_interfaces
from meshlab.netfilter.packet import Skb
from meshlab.netfilter.rules import (
    CT_STATES,
    AddrMatch,
    CommentMatch,
    ConntrackMatch,
    IfaceMatch,
    Jump,
    Log,
    MarkMatch,
    MultiportMatch,
    OwnerMatch,
    PortMatch,
    PortRange,
    ProtoMatch,
    Rule,
    SetMark,
    Verdict,
)
from meshlab.netfilter.ruleset import Ruleset

# --------------------------------------------------------------------------- strategies

# A few addresses, ports, names and ids, so that random matches and packets meet often.
ADDRESSES = [int(ip_address(a)) for a in ("127.0.0.1", "127.0.0.6", "10.244.0.5",
                                           "10.244.0.9", "10.96.0.10", "192.168.1.1")]
PORTS = [53, 80, 8080, 15001, 15006, 15008, 40000]
NAMES = ["lo", "eth0", "eth+", "veth1"]
IDS = [0, 1000, 1337]

neg = st.booleans()
addr_value = st.sampled_from(ADDRESSES) | st.integers(0, 2**32 - 1)
port_value = st.sampled_from(PORTS) | st.integers(0, 65535)
id_value = st.sampled_from(IDS) | st.integers(0, 70000)


@st.composite
def addr_match(draw) -> AddrMatch:
    plen = draw(st.sampled_from([0, 8, 16, 24, 32]) | st.integers(0, 32))
    net = draw(addr_value) & (((1 << 32) - 1) ^ ((1 << (32 - plen)) - 1))
    return AddrMatch(draw(neg), 4, net, plen)


@st.composite
def port_range(draw) -> PortRange:
    lo = draw(port_value)
    hi = draw(st.just(lo) | st.integers(lo, 65535))
    return PortRange(draw(neg), lo, hi)


iface_match = st.builds(IfaceMatch, neg, st.sampled_from(NAMES))
proto_match = st.builds(ProtoMatch, neg, st.sampled_from(["tcp", "udp", "icmp"]))
port_match = st.builds(PortMatch, st.sampled_from(["tcp", "udp"]), st.none() | port_range(),
                       st.none() | port_range())
multiport_match = st.builds(
    MultiportMatch, neg, st.sampled_from(["dports", "sports", "ports"]),
    st.lists(st.tuples(port_value, port_value).map(sorted).map(tuple), min_size=1,
             max_size=4).map(tuple))
owner_match = st.builds(OwnerMatch, st.none() | port_range(), st.none() | port_range()).filter(
    lambda m: m.uid is not None or m.gid is not None)
mark_match = st.builds(MarkMatch, st.sampled_from(["mark", "connmark"]), neg,
                       st.sampled_from([0, 0x539, 0x111]) | st.integers(0, 2**32 - 1),
                       st.sampled_from([0xFFFFFFFF, 0xFFF]) | st.integers(0, 2**32 - 1))
conntrack_match = st.builds(ConntrackMatch, neg,
                            st.frozensets(st.sampled_from(CT_STATES), min_size=1))
comment_match = st.builds(CommentMatch, st.text(max_size=10))
module = (port_match | multiport_match | owner_match | mark_match | conntrack_match
          | comment_match)

target = st.sampled_from([Verdict("ACCEPT"), Verdict("DROP"), Verdict("RETURN"),
                          SetMark(0x539), Log()])


def rules(targets=target) -> st.SearchStrategy[Rule]:
    return st.builds(Rule, targets, st.none() | addr_match(), st.none() | addr_match(),
                     st.none() | iface_match, st.none() | iface_match,
                     st.none() | proto_match, st.lists(module, max_size=3).map(tuple))


@st.composite
def packets(draw) -> Skb:
    uid = draw(st.none() | id_value)
    return Skb(draw(st.sampled_from(["tcp", "udp"])), draw(addr_value), draw(port_value),
               draw(addr_value), draw(port_value),
               iif=draw(st.none() | st.sampled_from(["lo", "eth0", "veth1", "eth1"])),
               oif=draw(st.none() | st.sampled_from(["lo", "eth0", "veth1", "eth1"])),
               uid=uid, gid=None if uid is None else draw(id_value),
               mark=draw(st.sampled_from([0, 0x539, 0x1539]) | st.integers(0, 2**32 - 1)),
               ctstate=draw(st.sampled_from(CT_STATES)),
               ctmark=draw(st.sampled_from([0, 0x111]) | st.integers(0, 2**32 - 1)))


def conditions(rule: Rule) -> list[tuple[object, str | None]]:
    """The rule's conditions in the kernel's order, written out here once more (so that the
    test does not take ``Rule.conditions`` on trust)."""
    sides = [(rule.src, "-s"), (rule.dst, "-d"), (rule.iif, "-i"), (rule.oif, "-o"),
             (rule.proto, None)]
    found = [(m, o) for m, o in sides if m is not None] + [(m, None) for m in rule.modules]
    assert list(rule.conditions()) == found
    return found


# --------------------------------------------------------------------------- one definition


@settings(max_examples=500, deadline=None)
@given(rules(), packets())
def test_a_rule_matches_exactly_when_it_has_no_reason_not_to(rule, packet):
    why = rule.why_not(packet)
    assert rule.matches(packet) == (why is None)
    for match, option in conditions(rule):
        reason = match.why_not(packet, option)
        assert match.matches(packet, option) == (reason is None)
        if reason is not None:
            assert reason.startswith("`") and "`: " in reason and reason.split("`: ")[1]
    # the rule's reason is its first failing condition's, in the kernel's order
    failing = [m.why_not(packet, o) for m, o in conditions(rule) if not m.matches(packet, o)]
    assert why == (failing[0] if failing else None)
    # the rule matches when every condition does (and only then)
    assert rule.matches(packet) == all(m.matches(packet, o) for m, o in conditions(rule))


# --------------------------------------------------------------------------- the sentences


def skb(**fields) -> Skb:
    base = dict(proto="tcp", src=int(ip_address("10.244.0.5")), sport=40000,
                dst=int(ip_address("10.244.0.9")), dport=8080)
    for key in ("src", "dst"):
        if key in fields:
            fields[key] = int(ip_address(fields[key]))
    base.update({k: fields.pop(k) for k in list(fields) if k in base})
    return Skb(**base, **fields)


LOCAL_APP = dict(oif="eth0", uid=1000, gid=1000, ctstate="NEW")


@pytest.mark.parametrize(("rule", "packet", "reason"), [
    ("-s 127.0.0.6/32 -o lo -j RETURN", skb(**LOCAL_APP),
     "`-s 127.0.0.6/32`: the source is 10.244.0.5"),
    ("! -s 10.244.0.5/32 -j RETURN", skb(**LOCAL_APP),
     "`! -s 10.244.0.5/32`: the source is 10.244.0.5"),
    ("! -d 127.0.0.1/32 -o lo -j RETURN", skb(dst="127.0.0.1", oif="lo", uid=1000, gid=1000),
     "`! -d 127.0.0.1/32`: the destination is 127.0.0.1"),
    ("-d 10.96.0.0/12 -j ACCEPT", skb(**LOCAL_APP),
     "`-d 10.96.0.0/12`: the destination is 10.244.0.9"),
    ("-o lo -j RETURN", skb(**LOCAL_APP), "`-o lo`: the packet leaves by eth0"),
    ("! -o eth+ -j RETURN", skb(**LOCAL_APP), "`! -o eth+`: the packet leaves by eth0"),
    ("-o lo -j RETURN", skb(iif="eth0"),
     "`-o lo`: the packet has no out interface (it is coming in, not going out)"),
    ("-i lo -j RETURN", skb(iif="eth0"), "`-i lo`: the packet came in by eth0"),
    ("! -i eth0 -j RETURN", skb(iif="eth0"), "`! -i eth0`: the packet came in by eth0"),
    ("-i eth0 -j RETURN", skb(**LOCAL_APP),
     "`-i eth0`: the packet was made here: it came in by no interface"),
    ("-p udp -j RETURN", skb(), "`-p udp`: the packet is tcp"),
    ("! -p tcp -j RETURN", skb(), "`! -p tcp`: the packet is tcp"),
    ("-p tcp -m tcp --dport 15008 -j RETURN", skb(),
     "`-m tcp --dport 15008`: the destination port is 8080"),
    ("-p tcp -m tcp ! --dport 8080 -j RETURN", skb(),
     "`-m tcp ! --dport 8080`: the destination port is 8080"),
    ("-p tcp -m tcp --sport 1:1023 --dport 8080 -j RETURN", skb(),
     "`-m tcp --sport 1:1023`: the source port is 40000"),
    ("-p tcp -m multiport --dports 80,443:444 -j RETURN", skb(),
     "`-m multiport --dports 80,443:444`: the destination port is 8080"),
    ("-p tcp -m multiport ! --dports 8080 -j RETURN", skb(),
     "`-m multiport ! --dports 8080`: the destination port is 8080"),
    ("-m owner --uid-owner 1337 -j RETURN", skb(**LOCAL_APP),
     "`-m owner --uid-owner 1337`: the socket's owner is UID 1000"),
    ("-m owner ! --uid-owner 1000 -j RETURN", skb(**LOCAL_APP),
     "`-m owner ! --uid-owner 1000`: the socket's owner is UID 1000"),
    ("-m owner --gid-owner 1337 -j RETURN", skb(**LOCAL_APP),
     "`-m owner --gid-owner 1337`: the socket's group is GID 1000"),
    ("-m owner ! --gid-owner 1000 -j RETURN", skb(**LOCAL_APP),
     "`-m owner ! --gid-owner 1000`: the socket's group is GID 1000"),
    ("-m owner --uid-owner 1337 -j RETURN", skb(iif="eth0"),
     "`-m owner --uid-owner 1337`: the packet has no socket (it was not sent by a process "
     "here), so it has no owner to match"),
    ("-m mark --mark 0x539 -j ACCEPT", skb(mark=0x111),
     "`-m mark --mark 0x539`: the packet's mark is 0x111"),
    ("-m mark ! --mark 0x539/0xfff -j ACCEPT", skb(mark=0x539),
     "`-m mark ! --mark 0x539/0xfff`: the packet's mark is 0x539"),
    ("-m mark --mark 0x111/0xfff -j ACCEPT", skb(mark=0x1539),
     "`-m mark --mark 0x111/0xfff`: the packet's mark is 0x1539 (0x539 under the mask 0xfff)"),
    ("-m connmark --mark 0x111/0xfff -j ACCEPT", skb(),
     "`-m connmark --mark 0x111/0xfff`: the connection's mark is 0x0"),
    ("-m connmark ! --mark 0x0 -j ACCEPT", skb(),
     "`-m connmark ! --mark 0x0`: the connection's mark is 0x0"),
    ("-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT", skb(ctstate="NEW"),
     "`-m conntrack --ctstate RELATED,ESTABLISHED`: the packet's conntrack state is NEW"),
    ("-m conntrack ! --ctstate NEW -j ACCEPT", skb(ctstate="NEW"),
     "`-m conntrack ! --ctstate NEW`: the packet's conntrack state is NEW"),
    ("-m conntrack --ctstate NEW -j ACCEPT", skb(),
     "`-m conntrack --ctstate NEW`: the packet's conntrack state is INVALID (conntrack has "
     "not seen it yet: the raw table runs first)"),
])
def test_each_kind_of_match_says_why_it_did_not_match(rule, packet, reason):
    parsed = parse_rule(rule)
    assert parsed.why_not(packet) == reason
    assert not parsed.matches(packet)


@pytest.mark.parametrize(("rule", "packet"), [
    ("-m owner ! --uid-owner 1337 -j RETURN", skb(iif="eth0")),  # no socket, all negated
    ("-m comment --comment \"anything\" -j RETURN", skb()),
    ("-s 10.244.0.0/24 ! -d 127.0.0.1/32 -o eth+ -p tcp -m tcp --dport 8000:9000 "
     "-m owner --uid-owner 1000 --gid-owner 1000 -j RETURN", skb(**LOCAL_APP)),
    ("-m mark --mark 0x539/0xfff -m connmark ! --mark 0x111 -j ACCEPT", skb(mark=0x1539)),
])
def test_a_matching_rule_has_no_reason(rule, packet):
    parsed = parse_rule(rule)
    assert parsed.matches(packet) and parsed.why_not(packet) is None


def test_the_first_failing_condition_is_the_one_the_kernel_tests_first():
    # ip_packet_match tests -s, -d, -i, -o, -p before any match module
    rule = parse_rule("-p udp -m owner --uid-owner 1337 -o lo -d 10.0.0.1/32 -j RETURN")
    assert rule.why_not(skb(**LOCAL_APP)) == "`-d 10.0.0.1/32`: the destination is 10.244.0.9"


def test_a_packet_value_can_be_asked_about_too():
    packet = Packet("tcp", ip_address("10.244.0.5"), 40000, ip_address("10.244.0.9"), 8080,
                    oif="eth0", uid=1000, gid=1000)
    rule = parse_rule("-m owner --uid-owner 1337 -j RETURN")
    assert rule.why_not(Skb.of(packet)) == ("`-m owner --uid-owner 1337`: the socket's owner "
                                            "is UID 1000")


# --------------------------------------------------------------------------- in a trace


def test_a_trace_says_why_the_app_did_not_hit_the_proxys_return():
    from meshlab.istio.capture import default_rules

    ns = Netns(default_rules(), pod_interfaces("10.244.0.5"))
    trace = ns.connect(proto="tcp", dst="10.244.0.9", dport=8080, uid=1000, gid=1000)
    output = [e for e in trace.evaluations if e.chain == "ISTIO_OUTPUT"]
    reasons = {e.text: e.why_not for e in output if not e.matched}
    assert reasons["-m owner --uid-owner 1337 -j RETURN"] == (
        "`-m owner --uid-owner 1337`: the socket's owner is UID 1000")
    assert reasons["-s 127.0.0.6/32 -o lo -j RETURN"] == (
        "`-s 127.0.0.6/32`: the source is 10.244.0.5")
    for e in trace.evaluations:
        assert (e.why_not is None) == e.matched
        if e.rule == 0:
            assert e.why_not is None
    assert trace.passed_over == tuple(e for e in trace.evaluations if not e.matched)


# --------------------------------------------------------------------------- fast == reference


@contextlib.contextmanager
def fast_path(enabled: bool) -> Iterator[None]:
    before = _fast.ENABLED
    _fast.ENABLED = enabled
    try:
        yield
    finally:
        _fast.ENABLED = before


def both_paths(ruleset: Ruleset, run) -> tuple[object, object]:
    """``run(netns)`` on the fast path and on the reference path, each in a fresh namespace."""
    out = []
    for enabled in (True, False):
        with fast_path(enabled):
            ns = Netns(ruleset, pod_interfaces("10.244.0.5"))
        trace = run(ns)
        out.append((trace.verdict, trace.delivered, trace.local, trace.out_iface, trace.nat,
                    trace.notes, trace.evaluations, dict(ns.counters)))
    return out[0], out[1]


# Long chains (the candidate index starts at 16 rules) of rules built to meet the packets.
index_rules = st.builds(
    Rule, st.sampled_from([Verdict("ACCEPT"), Verdict("RETURN"), Verdict("DROP"),
                           SetMark(0x539), Log(), Jump("A")]),
    st.none() | addr_match(), st.none() | addr_match(), st.none(), st.none() | iface_match,
    st.none() | proto_match, st.lists(port_match | owner_match | mark_match, max_size=2)
    .map(tuple))


@st.composite
def rulesets(draw) -> Ruleset:
    output = draw(st.lists(index_rules, min_size=0, max_size=40))
    user = draw(st.lists(rules(st.sampled_from([Verdict("ACCEPT"), Verdict("RETURN"),
                                                Verdict("DROP"), SetMark(0x539)])),
                         min_size=0, max_size=30))
    policy = draw(st.sampled_from(["ACCEPT", "DROP"]))
    return Ruleset.from_chains("ipv4", {"filter": {"OUTPUT": (policy, output),
                                                   "A": (None, user)},
                                        "mangle": {"PREROUTING": ("ACCEPT", user[:5])}})


@settings(max_examples=300, deadline=None)
@given(rulesets(), st.sampled_from(["127.0.0.1", "10.244.0.5", "10.244.0.9", "10.96.0.10",
                                    "192.168.1.1"]),
       st.sampled_from(PORTS), st.sampled_from(IDS), st.sampled_from([0, 0x539]))
def test_the_fast_path_traces_exactly_as_the_reference_path(ruleset, dst, dport, uid, mark):
    fast, reference = both_paths(ruleset, lambda ns: ns.connect(
        proto="tcp", dst=dst, dport=dport, uid=uid, gid=uid, mark=mark))
    assert fast == reference


@settings(max_examples=100, deadline=None)
@given(rulesets(), st.sampled_from(ADDRESSES), st.sampled_from(PORTS))
def test_the_fast_path_receives_exactly_as_the_reference_path(ruleset, src, dport):
    packet = Packet("tcp", ip_address(src), 40000, ip_address("10.244.0.5"), dport)
    fast, reference = both_paths(ruleset, lambda ns: ns.receive(packet, "eth0"))
    assert fast == reference


def test_the_scenarios_walk_the_same_on_both_paths():
    from meshlab.scenarios import catalog, run_scenario
    from meshlab.world import clear_caches

    for name in catalog():
        walks = []
        for enabled in (True, False):
            clear_caches()
            with fast_path(enabled):
                walks.append(run_scenario(name).to_json())
        assert walks[0] == walks[1], name
    clear_caches()


def test_an_address_or_interface_match_asked_without_its_side_says_so():
    from meshlab.errors import MeshlabError

    rule = parse_rule("-s 10.0.0.0/8 -o lo -j RETURN")
    for match in (rule.src, rule.oif):
        with pytest.raises(MeshlabError, match="one side of the packet"):
            match.matches(skb())
    assert rule.src.matches(skb(src="10.1.2.3"), "-s")
    assert not rule.src.matches(skb(src="10.1.2.3", dst="192.168.1.1"), "-d")


def test_rules_the_index_skipped_still_say_why_they_did_not_match():
    from meshlab.netfilter import parse_ruleset

    rules = "".join(f"-A OUTPUT -d 10.1.0.{i}/32 -p tcp -m tcp --dport {1000 + i} -j DROP\n"
                    for i in range(1, 41))
    ruleset = parse_ruleset("*filter\n:OUTPUT ACCEPT [0:0]\n" + rules + "COMMIT\n")
    with fast_path(True):
        ns = Netns(ruleset, pod_interfaces("10.244.0.5"))
    assert ns._fast["filter"]["OUTPUT"].index is not None  # 40 rules: the index is used
    trace = ns.connect(proto="tcp", dst="10.1.0.37", dport=1037, uid=1000, gid=1000)
    assert trace.verdict == "DROP"
    evaluations = trace.evaluations
    assert [e.rule for e in evaluations] == list(range(1, 38))
    assert evaluations[0].why_not == "`-d 10.1.0.1/32`: the destination is 10.1.0.37"
    assert all(e.why_not and e.why_not.startswith("`-d 10.1.0.") for e in evaluations[:-1])
    assert evaluations[-1].matched and evaluations[-1].why_not is None
