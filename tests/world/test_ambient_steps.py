"""The ambient steps A1-A9: defined once, found in the walks, changed where the walk differs."""

from __future__ import annotations

from meshlab.lesson import numbered_steps, step_numbers
from meshlab.lesson_ambient import AMBIENT_INBOUND_STEPS, AMBIENT_OUTBOUND_STEPS, ambient_case
from meshlab.scenarios import run_scenario

NUMBERS = [f"A{i}" for i in range(1, 10)]


def statuses(name: str, **changes) -> dict[str | int, str]:  # type: ignore[no-untyped-def]
    return {s.n: s.status for s in numbered_steps(run_scenario(name, **changes))}


def test_steps_are_numbered_a1_to_a9_with_a_sentence_each() -> None:
    for steps in (AMBIENT_INBOUND_STEPS, AMBIENT_OUTBOUND_STEPS):
        assert [n for n, _, _ in steps] == NUMBERS
        assert all(title and sentence.endswith(".") for _, title, sentence in steps)


def test_the_article_keeps_its_numbers_for_the_sidecar() -> None:
    assert [s.n for s in numbered_steps(run_scenario("inbound"))] == list(range(1, 9))


def test_inbound_and_outbound_walks_are_all_ok() -> None:
    for name, case in (("ambient-inbound", "inbound"), ("ambient-outbound", "outbound")):
        walk = run_scenario(name)
        assert ambient_case(walk) == case
        steps = numbered_steps(walk)
        assert [s.n for s in steps] == NUMBERS
        assert [s.status for s in steps] == ["ok"] * 9, [s.explanation for s in steps]


def test_each_inbound_step_points_at_its_event() -> None:
    walk = run_scenario("ambient-inbound")
    steps = {s.n: s.event for s in numbered_steps(walk)}
    assert steps["A2"] is not None and steps["A2"].kind == "policy"  # 15008: no REDIRECT
    assert steps["A3"] is not None and steps["A3"].listener == "ztunnel:15008"
    assert steps["A6"] is not None and steps["A6"].decision == "CONNMARK set 0x111"
    assert steps["A7"] is not None and steps["A7"].decision == "CONNMARK restore 0x111"
    assert steps["A9"] is not None and steps["A9"].kind == "deliver"
    numbers = step_numbers(walk)
    assert sorted(numbers.values()) == NUMBERS  # type: ignore[type-var]


def test_plaintext_changes_a2_only() -> None:
    got = statuses("ambient-inbound-plaintext")
    assert got["A2"] == "changed"
    assert [v for k, v in got.items() if k != "A2"] == ["ok"] * 8


def test_the_broken_reply_shows_at_a8() -> None:
    got = statuses("ambient-inbound",
                   without_rules=["ip rule add fwmark 0x111/0xfff pref 32764 lookup 100"])
    assert got["A7"] == "ok" and got["A8"] == "changed" and got["A9"] == "changed"


def test_the_loop_shows_at_a6() -> None:
    walk = run_scenario("ambient-outbound", without_matches=["-m mark ! --mark 0x539/0xfff"])
    steps = {s.n: s for s in numbered_steps(walk)}
    assert steps["A6"].status == "changed" and "REDIRECT" in steps["A6"].explanation
    assert steps["A7"].status == "skipped"


def test_a_virtual_interface_walk_is_outbound_from_a3() -> None:
    walk = run_scenario("ambient-virtual-interface")
    assert ambient_case(walk) == "outbound"
    got = {s.n: s.status for s in numbered_steps(walk)}
    assert (got["A1"], got["A2"]) == ("changed", "changed")
    assert all(got[n] == "ok" for n in NUMBERS[2:])


def test_the_hooks_picture_shows_ztunnel_not_envoy() -> None:
    import matplotlib

    matplotlib.use("Agg")
    from meshlab.viz import hooks_figure

    fig = hooks_figure(run_scenario("ambient-inbound"), step="A8")
    texts = [t.get_text() for t in fig.findobj(matplotlib.text.Text)]
    assert any("ztunnel :15008" in t for t in texts)
    assert not any("Envoy :" in t or "ISTIO_IN_REDIRECT" in t for t in texts)
    assert any("in pod details (ambient: no sidecar)" in t for t in texts)
    assert any(t.startswith("Step A8") for t in texts)
    sidecar = hooks_figure(run_scenario("inbound"))
    assert any("Envoy :15006" in t.get_text() for t in sidecar.findobj(matplotlib.text.Text))
