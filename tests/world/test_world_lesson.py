"""The article's numbering: inbound 1-8 and outbound 9-15, never renumbered."""

from __future__ import annotations

from meshlab.lesson import article_case, numbered_steps, step_numbers, steps_frame
from meshlab.scenarios import run_scenario


def test_inbound_steps_1_to_8_all_ok() -> None:
    walk = run_scenario("inbound")
    steps = numbered_steps(walk)
    assert article_case(walk) == "inbound"
    assert [s.n for s in steps] == list(range(1, 9))
    assert all(s.status == "ok" for s in steps), [(s.n, s.explanation) for s in steps]
    by_n = {s.n: s.event for s in steps}
    assert by_n[1] is not None and by_n[1].chain == "PREROUTING" and by_n[1].table == "nat"
    assert by_n[2] is not None and by_n[2].decision == "jump ISTIO_IN_REDIRECT"
    assert by_n[3] is not None and by_n[3].decision.startswith("REDIRECT")
    assert by_n[4] is not None and by_n[4].cluster == "inbound|9080||"
    assert by_n[5] is not None and by_n[5].kind == "connect" and by_n[5].actor == "proxy"
    assert by_n[6] is not None and by_n[6].decision == "jump ISTIO_OUTPUT"
    assert by_n[7] is not None and by_n[7].text == "-s 127.0.0.6/32 -o lo -j RETURN"
    assert by_n[8] is not None and by_n[8].kind == "deliver"
    indexes = [e.index for e in by_n.values() if e is not None]
    assert indexes == sorted(indexes)
    assert all(s.explanation for s in steps)


def test_outbound_steps_9_to_15_all_ok() -> None:
    walk = run_scenario("outbound")
    steps = numbered_steps(walk)
    assert [s.n for s in steps] == list(range(9, 16))
    assert all(s.status == "ok" for s in steps), [(s.n, s.explanation) for s in steps]
    by_n = {s.n: s.event for s in steps}
    assert by_n[9] is not None and by_n[9].actor == "app"
    assert by_n[11] is not None and by_n[11].decision == "jump ISTIO_REDIRECT"
    assert by_n[12] is not None and by_n[12].decision == "REDIRECT 127.0.0.1:15001"
    assert by_n[13] is not None and by_n[13].owner == "uid 1337 gid 1337"
    assert by_n[15] is not None and by_n[15].text == "-m owner --uid-owner 1337 -j RETURN"


def test_excluded_port_changes_step_2_and_skips_the_rest() -> None:
    steps = numbered_steps(run_scenario("inbound-excluded-15021"))
    status = {s.n: s.status for s in steps}
    assert status[1] == "ok"
    assert status[2] == "changed"
    assert "--dport 15021" in (steps[1].event.text or "")  # type: ignore[union-attr]
    assert status[3] == "skipped"
    assert status[4] == "changed"  # delivered straight to Envoy's 15021 instead
    assert [s.n for s in steps] == list(range(1, 9))


def test_removed_127_0_0_6_rule_changes_step_7_and_8() -> None:
    walk = run_scenario("inbound", without_rules=["-s 127.0.0.6/32 -o lo -j RETURN"])
    status = {s.n: s.status for s in numbered_steps(walk)}
    assert [status[n] for n in range(1, 7)] == ["ok"] * 6
    assert status[7] == "changed" and status[8] == "changed"


def test_app_as_1337_changes_step_11() -> None:
    steps = numbered_steps(run_scenario("app-as-uid-1337"))
    assert steps[2].n == 11 and steps[2].status == "changed"
    assert steps[2].event is not None
    assert steps[2].event.text == "-m owner --uid-owner 1337 -j RETURN"
    assert all(s.status == "skipped" for s in steps[4:])


def test_step_numbers_and_frame() -> None:
    walk = run_scenario("outbound")
    numbers = step_numbers(walk)
    assert sorted(numbers.values()) == list(range(9, 16))
    frame = steps_frame(walk)
    assert list(frame.index) == list(range(9, 16))
    assert set(frame["status"]) == {"ok"}
