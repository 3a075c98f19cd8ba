"""Every catalog scenario produces its expected outcome, and a walk has the promised shape."""

from __future__ import annotations

import json

import pandas
import pytest

from meshlab.errors import MeshlabError
from meshlab.lesson import walk_json
from meshlab.scenarios import catalog, proxy_listeners, run_scenario
from meshlab.walk import OUTCOMES, LoopReport
from meshlab.world import Request, World

SCENARIOS = list(catalog())


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_outcome_matches_catalog(name: str) -> None:
    scenario = catalog()[name]
    walk = run_scenario(name)
    assert scenario.expect.problems(walk) == [], walk.reason


def test_catalog_covers_the_lessons_cases() -> None:
    names = set(catalog())
    for required in ("inbound", "outbound", "inbound-excluded-15021", "inbound-excluded-15090",
                     "inbound-excluded-15020", "inbound-undeclared-port", "outbound-service",
                     "localhost", "own-pod-ip", "own-service", "app-as-uid-1337",
                     "excluded-cidr", "excluded-port", "dns-udp", "dns-captured",
                     "tproxy-inbound", "direct-15001"):
        assert required in names
    assert catalog()["inbound"].article == "inbound"
    assert catalog()["outbound"].article == "outbound"


def test_inbound_goes_through_15006_and_app_sees_127_0_0_6() -> None:
    walk = run_scenario("inbound")
    assert walk.outcome == "delivered"
    assert walk.delivered_to is not None
    assert (walk.delivered_to.process, walk.delivered_to.port,
            walk.delivered_to.sees_source) == ("app", 9080, "127.0.0.6")
    assert proxy_listeners(walk) == (15006,)
    proxy = [e for e in walk.events if e.kind == "proxy"]
    assert proxy[0].cluster == "inbound|9080||"
    assert proxy[0].filter_chain == "0.0.0.0_9080"
    # the proxy's own connection is a second connection, owned by 1337, through the kernel
    upstream = [e for e in walk.events if e.connection == 1 and e.kind == "rule" and e.matched]
    assert upstream and all(e.owner == "uid 1337 gid 1337" for e in upstream
                            if e.hook == "OUTPUT")
    assert any(e.text == "-s 127.0.0.6/32 -o lo -j RETURN" for e in upstream)


def test_outbound_peer_sees_pod_ip_and_proxy_is_exempt_by_uid() -> None:
    walk = run_scenario("outbound")
    assert walk.delivered_to is not None
    assert walk.delivered_to.sees_source == "10.244.0.5"
    assert walk.delivered_to.host == "reviews"
    hits = [e for e in walk.events if e.connection == 1 and e.kind == "rule" and e.matched]
    assert any(e.text == "-m owner --uid-owner 1337 -j RETURN" for e in hits)
    assert any(e.kind == "route" and "eth0" in e.decision and e.connection == 1
               for e in walk.events)


def test_localhost_is_let_through_by_the_not_uid_1337_loopback_rule() -> None:
    walk = run_scenario("localhost")
    deciding = [e for e in walk.events if e.chain == "ISTIO_OUTPUT" and e.matched]
    assert deciding[0].text == "-o lo -m owner ! --uid-owner 1337 -j RETURN"
    assert not walk.proxied


def test_own_pod_ip_is_not_captured_for_the_app() -> None:
    walk = run_scenario("own-pod-ip")
    deciding = [e for e in walk.events if e.chain == "ISTIO_OUTPUT" and e.matched]
    assert deciding[0].text == "-o lo -m owner ! --uid-owner 1337 -j RETURN"
    assert walk.delivered_to is not None and walk.delivered_to.sees_source == "10.244.0.5"


def test_own_service_goes_out_through_15001_and_back_in_through_15006() -> None:
    walk = run_scenario("own-service")
    assert proxy_listeners(walk) == (15001, 15006)
    in_redirect = [e for e in walk.events if e.connection == 1 and e.matched
                   and e.chain == "ISTIO_OUTPUT"]
    assert in_redirect[0].decision == "jump ISTIO_IN_REDIRECT"


def test_blackhole_closes_the_connection() -> None:
    walk = run_scenario("direct-15001")
    assert walk.outcome == "refused"
    assert any(e.kind == "close" and e.cluster == "BlackHoleCluster" for e in walk.events)


def test_inbound_to_port_without_listener_is_refused_after_envoy_connects() -> None:
    walk = run_scenario("inbound-no-listener")
    assert walk.outcome == "refused"
    kinds = [e.kind for e in walk.events]
    assert kinds.index("proxy") < kinds.index("refused")
    assert next(e for e in walk.events if e.kind == "refused").connection == 1


def test_service_vip_not_captured_is_translated_by_kube_proxy() -> None:
    walk = run_scenario("dns-udp")
    dnat = [e for e in walk.events if e.kind == "dnat"]
    assert dnat and dnat[0].actor == "node" and "kube-proxy" in dnat[0].decision


@pytest.mark.parametrize(("name", "removed", "listener"), [
    ("outbound", ["-m owner --uid-owner 1337 -j RETURN", "-m owner --gid-owner 1337 -j RETURN"],
     "proxy:15001"),
    ("inbound", ["-s 127.0.0.6/32 -o lo -j RETURN"], "proxy:15006"),
])
def test_removing_exemptions_loops(name: str, removed: list[str], listener: str) -> None:
    walk = run_scenario(name, without_rules=removed)
    assert walk.outcome == "loop"
    loop = walk.loop
    assert isinstance(loop, LoopReport)
    assert loop.cycle[0] == listener and loop.cycle[-1] == listener
    assert "ISTIO_OUTPUT" in loop.cycle
    assert loop.detected_by == "repeated state"
    assert loop.hops >= 1
    assert "28232" in loop.gives_out
    cost = loop.after(100)
    assert (cost.connections, cost.proxy_sockets) == (101, 201)


def test_outbound_loop_cycle_text() -> None:
    walk = run_scenario("outbound", without_rules=["-m owner --uid-owner 1337 -j RETURN",
                                                    "-m owner --gid-owner 1337 -j RETURN"])
    assert walk.loop is not None
    assert walk.loop.text == (
        "proxy:15001 -> OUTPUT -> ISTIO_OUTPUT -> ISTIO_REDIRECT -> proxy:15001")


def test_uid_rule_alone_is_backed_up_by_gid_twin() -> None:
    walk = run_scenario("outbound", without_rules=["-m owner --uid-owner 1337 -j RETURN"])
    assert walk.outcome == "delivered"
    hits = [e.text for e in walk.events if e.connection == 1 and e.matched]
    assert "-m owner --gid-owner 1337 -j RETURN" in hits


def test_hop_limit_stops_a_walk() -> None:
    world = World.default()
    small = World(world.pods, world.services, world.subject, hop_limit=1)
    walk = small.run(Request("pod/productpage", "svc/productpage", 9080))
    assert walk.outcome == "loop"
    assert walk.loop is not None and walk.loop.detected_by == "hop limit"


def test_walk_frame_and_json_contract() -> None:
    walk = run_scenario("inbound")
    frame = walk.to_frame()
    assert isinstance(frame, pandas.DataFrame)
    assert len(frame) == len(walk.events)
    assert {"actor", "kind", "hook", "table", "chain", "rule", "decision"} <= set(frame.columns)
    assert all(s["n"] is None for s in walk.to_json()["steps"])  # numbers come from lesson
    data = json.loads(json.dumps(walk_json(walk)))
    assert set(data) == {"scenario", "outcome", "delivered_to", "loop", "steps"}
    assert data["outcome"] in OUTCOMES
    assert data["delivered_to"] == {"process": "app", "port": 9080, "sees_source": "127.0.0.6"}
    assert data["loop"] is None
    for step in data["steps"]:
        assert set(step) == {"n", "actor", "hook", "table", "chain", "rule", "text", "decision"}
    first = next(s for s in data["steps"] if s["n"] == 1)
    assert (first["actor"], first["hook"], first["table"], first["chain"], first["rule"]) == (
        "kernel", "PREROUTING", "nat", "PREROUTING", 1)
    assert [s["n"] for s in data["steps"] if s["n"] is not None] == list(range(1, 9))


def test_loop_json() -> None:
    walk = run_scenario("inbound", without_rules=["-s 127.0.0.6/32 -o lo -j RETURN"])
    data = walk.to_json()
    assert data["outcome"] == "loop"
    assert data["delivered_to"] is None
    assert data["loop"]["cycle"][0] == "proxy:15006"
    assert data["loop"]["hops"] >= 1


def test_counters_count_connections_of_the_whole_walk() -> None:
    walk = run_scenario("own-service")
    # nat OUTPUT -j ISTIO_OUTPUT saw all three connections opened in the pod
    assert walk.counters[("nat", "OUTPUT", 1)] == 3


def test_unknown_rule_text_lists_the_choices() -> None:
    with pytest.raises(MeshlabError, match="one of"):
        run_scenario("inbound", without_rules=["-j NOTHING"])


def test_unknown_scenario_lists_the_choices() -> None:
    with pytest.raises(MeshlabError, match="inbound"):
        run_scenario("no-such-thing")


def test_flags_override_changes_the_rules() -> None:
    walk = run_scenario("outbound", flags='-p 15001 -z 15006 -u 1337 -m REDIRECT -i "" -b "*"')
    assert walk.outcome == "delivered"
    assert not walk.proxied  # -i "" : nothing is redirected outbound
