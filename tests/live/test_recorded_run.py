"""The committed recording that notebook 07 shows where the lab cannot run (not live)."""

from __future__ import annotations

import pytest

from meshlab.live.record import RECORDED_RUN, dumps, load, missing_keys


@pytest.fixture(scope="module")
def recorded() -> dict:  # type: ignore[type-arg]
    if not RECORDED_RUN.is_file():
        pytest.fail(f"{RECORDED_RUN} is missing; make it as root with `meshlab live record`")
    return load(RECORDED_RUN)


def test_it_has_every_key_the_notebook_reads(recorded: dict) -> None:  # type: ignore[type-arg]
    assert missing_keys(recorded) == []


def test_every_scenario_agrees(recorded: dict) -> None:  # type: ignore[type-arg]
    scenarios = recorded["verify"]["scenarios"]
    assert len(scenarios) >= 10
    bad = [s["name"] for s in scenarios if not s["agree"]]
    assert not bad, f"disagreeing in the recording: {bad}; fix the model, then re-record"
    assert recorded["verify"]["agree"] is True


def test_everything_else_agrees_too(recorded: dict) -> None:  # type: ignore[type-arg]
    assert recorded["agree"] is True
    assert all(r["agree"] for r in recorded["default_rules"])
    assert recorded["loop"]["agree"] is True
    assert all(r["agreed"] == r["total"] > 0 for r in recorded["randomized"]["runs"])


def test_it_was_written_by_meshlab_live_record(recorded: dict) -> None:  # type: ignore[type-arg]
    # sorted keys and the canonical layout: re-recording changes only what really changed
    assert RECORDED_RUN.read_text() == dumps(recorded)
    assert "T" not in recorded["recorded"]          # a date, not a time of day
    assert "note" in recorded["timings"]             # durations only there, labelled


def test_missing_keys_names_what_is_missing() -> None:
    document = load(RECORDED_RUN)
    del document["loop"]["kernel"]["runs"][0]["hops"]
    del document["iptables"]
    assert missing_keys(document) == ["iptables", "loop.kernel.runs[0].hops"]
