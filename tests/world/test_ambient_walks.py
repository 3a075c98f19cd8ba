"""Ambient walks end to end: every ambient scenario's outcome, the replies, the loop, the
broken reply path."""

from __future__ import annotations

import pytest

from meshlab.scenarios import catalog, run_scenario
from meshlab.walk import Walk

AMBIENT = [s for s in catalog().values() if s.ambient]
EXEMPTION = "-m mark ! --mark 0x539/0xfff"
SET_CONNMARK = "-m mark --mark 0x539/0xfff -j CONNMARK --set-xmark 0x111/0xfff"
RESTORE = ("-m connmark --mark 0x111/0xfff -j CONNMARK --restore-mark --nfmask 0xffffffff "
           "--ctmask 0xffffffff")
IP_RULE = "ip rule add fwmark 0x111/0xfff pref 32764 lookup 100"
ROUTE = "ip route add local 0.0.0.0/0 dev lo table 100"


def nat(walk: Walk) -> dict[tuple[str, str, int], int]:
    return {k: v for k, v in walk.counters.items() if k[0] == "nat"}


def test_the_catalog_has_the_ambient_cases() -> None:
    names = {s.name for s in AMBIENT}
    assert {"ambient-inbound", "ambient-outbound", "ambient-inbound-plaintext",
            "ambient-outbound-external", "ambient-outbound-service", "ambient-dns-captured",
            "ambient-dns-not-captured", "ambient-kubelet-probe", "ambient-localhost",
            "ambient-own-pod-ip", "ambient-ingress-mode", "ambient-virtual-interface"} <= names
    assert all(s.subject == "pod/details" for s in AMBIENT)


@pytest.mark.parametrize("scenario", AMBIENT, ids=lambda s: s.name)
def test_each_ambient_scenario_has_its_expected_outcome(scenario) -> None:  # type: ignore[no-untyped-def]
    walk = run_scenario(scenario)
    assert walk.mode == "ambient" and walk.subject == "details"
    assert scenario.expect.problems(walk) == [], walk.reason


def test_inbound_hbone_the_app_sees_the_peer_itself() -> None:
    walk = run_scenario("ambient-inbound")
    assert walk.delivered_to is not None
    assert (walk.delivered_to.host, walk.delivered_to.sees_source) == ("details", "10.244.0.13")
    ztunnel_up = next(e for e in walk.events if e.kind == "connect" and e.pod == "details")
    assert ztunnel_up.dst == "10.244.0.12:9080" and "bound to 10.244.0.13" in ztunnel_up.decision
    # 15008 is not redirected: the nat PREROUTING policy, no REDIRECT, then INPUT
    assert nat(walk) == {("nat", "PREROUTING", 1): 1, ("nat", "PREROUTING", 0): 1,
                         ("nat", "INPUT", 0): 1, ("nat", "OUTPUT", 1): 1,
                         ("nat", "ISTIO_OUTPUT", 5): 1, ("nat", "POSTROUTING", 0): 1}
    assert walk.counters[("mangle", "ISTIO_PRERT", 1)] == 1  # connmark 0x111 set, once
    assert walk.counters[("mangle", "ISTIO_OUTPUT", 1)] == 1  # restored on the SYN-ACK


def test_inbound_replies_are_traced_back_to_the_peer() -> None:
    walk = run_scenario("ambient-inbound")
    back = next(e for e in walk.events if e.kind == "route" and "SYN-ACK" in e.decision)
    assert "mark 0x111" in back.decision and "back in by lo" in back.decision
    replies = [(e.pod, e.decision) for e in walk.events if e.kind == "reply"]
    assert [pod for pod, _ in replies] == ["details"]  # the subject's answers
    assert "leaves details by eth0 for 10.244.0.13" in replies[0][1]
    assert "from 10.244.0.12:15008" in replies[0][1]


def test_only_the_subjects_rules_are_shown_rule_by_rule() -> None:
    walk = run_scenario("ambient-inbound")
    assert {e.pod for e in walk.events if e.kind in ("rule", "policy")} == {"details"}
    peer = [e.kind for e in walk.events if e.pod == "reviews-v2"]
    assert "nat" in peer and "route" in peer and "accept" in peer  # its NAT, route, ztunnel


def test_outbound_hbone_leaves_marked_and_is_not_captured_again() -> None:
    walk = run_scenario("ambient-outbound")
    up = next(e for e in walk.events if e.kind == "connect" and e.actor == "proxy")
    assert up.dst == "10.244.0.13:15008" and "socket mark 1337" in up.decision
    assert nat(walk) == {("nat", "OUTPUT", 1): 2, ("nat", "ISTIO_OUTPUT", 6): 1,
                         ("nat", "POSTROUTING", 0): 2, ("nat", "OUTPUT", 0): 1}
    assert walk.delivered_to is not None and walk.delivered_to.host == "reviews-v2"
    last = [e for e in walk.events if e.kind == "reply"][-1]
    assert last.pod == "details" and "seen from 10.244.0.13:9080" in last.decision


def test_plaintext_inbound_goes_to_15006_and_still_shows_the_client() -> None:
    walk = run_scenario("ambient-inbound-plaintext")
    assert nat(walk)[("nat", "ISTIO_PRERT", 2)] == 1
    assert walk.delivered_to is not None and walk.delivered_to.sees_source == "10.244.0.9"
    reply = [e for e in walk.events if e.kind == "reply"][-1]
    assert "from 10.244.0.12:9080" in reply.decision  # the client sees the port it called


def test_dns_zone_1_for_ztunnels_query_and_its_answer() -> None:
    walk = run_scenario("ambient-dns-captured")
    assert walk.counters[("raw", "ISTIO_OUTPUT", 1)] == 1  # ztunnel's query: CT zone 1
    assert walk.counters[("raw", "ISTIO_PRERT", 1)] == 1  # the answer: CT zone 1
    answer, to_app = [e for e in walk.events if e.kind == "reply"]
    assert "zone 1" in answer.decision and "10.96.0.10:53" in answer.decision
    assert "zone 0" in to_app.decision and "seen from 10.96.0.10:53" in to_app.decision


def test_dns_without_the_answers_zone_rule_is_a_new_connection() -> None:
    walk = run_scenario("ambient-dns-captured", without_rules=[
        "-t raw -A ISTIO_PRERT -p udp -m mark ! --mark 0x539/0xfff -m udp --sport 53 "
        "-j CT --zone 1"])
    answer = next(e for e in walk.events if e.kind == "reply")
    assert "no entry" in answer.decision and "NEW" in answer.decision


def test_probe_bypasses_ztunnel() -> None:
    walk = run_scenario("ambient-kubelet-probe")
    assert nat(walk) == {("nat", "PREROUTING", 1): 1, ("nat", "ISTIO_PRERT", 1): 1,
                         ("nat", "INPUT", 0): 1}
    assert not walk.proxied


def test_removing_the_exemption_loops_with_its_cycle() -> None:
    walk = run_scenario("ambient-outbound", without_matches=[EXEMPTION])
    assert walk.outcome == "loop" and walk.loop is not None
    assert walk.loop.cycle == ("ztunnel:15001", "OUTPUT", "ISTIO_OUTPUT", "ztunnel:15001")
    assert walk.loop.hops == 2 and walk.loop.original_dst == "10.244.0.13:15008"
    assert "EADDRNOTAVAIL" in walk.loop.gives_out
    assert walk.removed_matches == (EXEMPTION,)
    dns = run_scenario("ambient-dns-captured", without_matches=[EXEMPTION])
    assert dns.outcome == "loop" and dns.loop is not None
    assert dns.loop.cycle == ("ztunnel:15053", "OUTPUT", "ISTIO_OUTPUT", "ztunnel:15053")


def test_inbound_does_not_loop_without_the_exemption() -> None:
    # ztunnel's connection to the app comes back in by lo, where nat is not consulted again
    walk = run_scenario("ambient-inbound-plaintext", without_matches=[EXEMPTION])
    assert walk.outcome == "delivered"


@pytest.mark.parametrize("removed", [SET_CONNMARK, RESTORE, IP_RULE, ROUTE])
def test_without_connmark_or_policy_routing_the_reply_leaves_by_eth0(removed: str) -> None:
    walk = run_scenario("ambient-inbound", without_rules=[removed])
    assert walk.outcome == "timeout"
    assert "never completes" in walk.reason
    lost = next(e for e in walk.events if e.kind == "timeout")
    assert "leaves by eth0" in lost.decision and "10.244.0.13" in lost.decision
    assert walk.delivered_to is None


def test_outbound_does_not_need_the_reply_rules() -> None:
    for removed in (SET_CONNMARK, IP_RULE):
        assert run_scenario("ambient-outbound", without_rules=[removed]).outcome == "delivered"


def test_sidecar_walks_are_unchanged_by_ambient_pods() -> None:
    walk = run_scenario("inbound")
    assert walk.mode == "sidecar" and walk.subject == "productpage"
    assert walk.delivered_to is not None and walk.delivered_to.sees_source == "127.0.0.6"
    assert not any(e.kind == "reply" for e in walk.events)
