"""Model vs kernel beyond IPv4 TCP: DNS over UDP, IPv6, net1 (-c/-k), TPROXY first packets.

Every family runs its random cases here (``MESHLAB_LIVE_SEED`` replays a run; the seed is
in every failure message). First packets (TPROXY's raw/mangle/nat/filter, each DNS query)
are measured with first-packet probes (``meshlab.live.lab.GATE_TABLE``): counters, not a
trace, so the comparison is deterministic.
"""

from __future__ import annotations

import pytest

from meshlab.live import unavailable_reason

pytestmark = [pytest.mark.live,
              pytest.mark.skipif(unavailable_reason() is not None,
                                 reason=f"live lab unavailable: {unavailable_reason()}")]


@pytest.fixture(scope="module")
def lab():  # type: ignore[no-untyped-def]
    from meshlab.live.families import wide_lab

    with wide_lab() as built:
        yield built


def _names() -> list[str]:
    from meshlab.live.families import NAMED_CASES

    return list(NAMED_CASES)


@pytest.mark.parametrize("name", _names())
def test_named_case_agrees_with_the_kernel(name: str, lab) -> None:  # type: ignore[no-untyped-def]
    from meshlab.live.families import named_cases

    results = named_cases([name], lab=lab)[name]
    bad = [f"{r.spec.describe()}: {'; '.join(r.diff)}" for r in results if not r.agree]
    assert not bad, "\n".join(bad)


def test_dns_answers_in_another_zone_are_new_connections(lab) -> None:  # type: ignore[no-untyped-def]
    """The kernel facts behind Istio's DNS conntrack zones, seen on both sides."""
    from meshlab.live.families import named_cases

    results = named_cases(["dns-answer-new-in-zone-0", "dns-answer-to-a-server-captured"],
                          lab=lab)
    (unlisted,) = results["dns-answer-new-in-zone-0"]
    assert unlisted.agree, unlisted.diff
    assert unlisted.kernel["zone"] == 1 and unlisted.kernel["answer"]["reaches_client"]
    # the answer was NEW (zone 0): nat PREROUTING and INPUT counted it
    exchange = unlisted.kernel["answer"]["exchange"]
    assert exchange.get("nat PREROUTING policy") == 1 and exchange.get("nat INPUT policy") == 1
    (server,) = results["dns-answer-to-a-server-captured"]
    assert server.agree, server.diff
    assert server.kernel["zone"] == 1 and not server.kernel["answer"]["reaches_client"]
    assert server.model["answer"]["reaches_client"] is False


def test_tproxy_first_packet_counts_every_table(lab) -> None:  # type: ignore[no-untyped-def]
    """The probe's counters hold the first packet alone: the inbound SYN's mangle path."""
    from meshlab.live.families import named_cases

    inbound, *_ = named_cases(["tproxy-first-packet"], lab=lab)["tproxy-first-packet"]
    assert inbound.agree, inbound.diff
    first = inbound.kernel["first_packet"]
    assert first["mangle ISTIO_TPROXY 1"] == 1 and first["mangle PREROUTING 1"] == 1
    assert all(n == 1 for n in first.values()), first


@pytest.mark.parametrize("family", ["dns", "dns6", "tproxy", "ipv6", "iface"])
def test_random_family_agrees_connection_by_connection(family: str, lab) -> None:  # type: ignore[no-untyped-def]
    from meshlab.live.differential import seed_from_env
    from meshlab.live.families import randomized_families

    seed = seed_from_env()
    report = randomized_families(seed, families=[family], lab=lab)[family]
    assert len(report.results) >= 50
    lines = [f"{r.spec.describe()} | flags: {' '.join(r.config)} | {'; '.join(r.diff)}"
             for r in report.disagreements[:10]]
    assert not report.disagreements, (
        f"{family}: seed {seed} (replay: MESHLAB_LIVE_SEED={seed}): "
        f"{len(report.disagreements)} of {len(report.results)} disagree:\n" + "\n".join(lines))
