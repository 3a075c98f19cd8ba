"""The ambient scenarios of the catalog: the model beside the real kernel, one by one.

``meshlab live verify`` runs every ``ambient-*`` scenario in the ambient lab
(:mod:`meshlab.live.ambient_verify`): outcome, the process and port that answered and the
source address the app saw (the model's ``delivered_to.sees_source``), every proxy's
listener in order, the pod's nat counters, and that every mangle rule the model counted
counted in the kernel too. Then the breakages the model explains - no mark exemption (a
loop), no ``ip rule``, no connmark rules - made for real.
"""

from __future__ import annotations

import time

import pytest

from meshlab.live import unavailable_reason
from meshlab.world import Request

pytestmark = [pytest.mark.live,
              pytest.mark.skipif(unavailable_reason() is not None,
                                 reason=f"live lab unavailable: {unavailable_reason()}")]


def _ambient_names() -> list[str]:
    from meshlab.scenarios import catalog

    return [name for name in catalog() if name.startswith("ambient-")]


@pytest.fixture(scope="module")
def lab():  # type: ignore[no-untyped-def]
    from meshlab.live.ambient_lab import AmbientLab

    with AmbientLab(deadline=180.0) as built:
        yield built


@pytest.fixture(scope="module")
def report(lab):  # type: ignore[no-untyped-def]
    """What ``meshlab live verify`` does for the ambient scenarios, in the module's lab."""
    from meshlab.live.ambient_verify import verify_ambient
    from meshlab.scenarios import get_scenario

    started = time.perf_counter()
    found, _notes = verify_ambient([get_scenario(n) for n in _ambient_names()], lab=lab)
    return {c.name: c for c in found}, time.perf_counter() - started


def test_verify_runs_the_ambient_scenarios_in_the_ambient_lab() -> None:
    from meshlab.live.verify import verify_catalog

    found = verify_catalog(["ambient-inbound"])
    assert [c.name for c in found.comparisons] == ["ambient-inbound"]
    assert found.agree, [c.diff for c in found.comparisons]


def test_every_ambient_scenario_runs_in_under_20_seconds(report) -> None:  # type: ignore[no-untyped-def]
    found, seconds = report
    assert len(found) == len(_ambient_names()) >= 10
    assert seconds < 20


@pytest.mark.parametrize("name", _ambient_names())
def test_ambient_scenario_agrees_with_the_kernel(name: str, report) -> None:  # type: ignore[no-untyped-def]
    from meshlab.live.comparison import side_by_side

    found, _ = report
    comparison = found[name]
    assert comparison.agree, side_by_side(comparison) + "\n" + "\n".join(
        str(d) for d in comparison.diff)


def test_the_app_sees_the_real_client_ip(report) -> None:  # type: ignore[no-untyped-def]
    """The source each app reported, beside the model's ``sees_source``: the peer's own
    address over HBONE, the plain client's for plaintext, 127.0.0.6 behind a sidecar."""
    found, _ = report
    seen = {name: c.kernel["delivered_to"] for name, c in found.items()}
    assert seen["ambient-inbound"] == ["app", 9080, "10.244.0.13"]
    assert seen["ambient-inbound-plaintext"] == ["app", 9080, "10.244.0.9"]
    assert seen["ambient-to-sidecar"] == ["app", 9080, "127.0.0.6"]
    for c in found.values():
        if c.model.get("delivered_to") and c.kernel.get("delivered_to"):
            assert c.kernel["delivered_to"][2] == c.model["delivered_to"][2], c.name


def test_the_connmark_rule_counts_once_per_ztunnel_connection_into_the_pod(report) -> None:  # type: ignore[no-untyped-def]
    """Compared exactly in every scenario (see :mod:`meshlab.live.ambient_verify`); here the
    numbers themselves: one for ztunnel's connection to the app, three when the app calls
    its own Service (ztunnel's SYN-ACK to the app's captured call, its tunnel to its own
    15008 over lo, its connection to the app), none where ztunnel is not involved."""
    found, _ = report
    rule = "mangle ISTIO_PRERT 1"
    assert found["ambient-inbound"].kernel["mangle"][rule] == 1
    assert found["ambient-own-service"].kernel["mangle"][rule] == 3
    assert rule not in found["ambient-kubelet-probe"].kernel["mangle"]


ABLATIONS = [
    ("ambient-outbound", (), ("-m mark ! --mark 0x539/0xfff",), "loop"),
    ("ambient-inbound", ("ip rule add fwmark 0x111/0xfff pref 32764 lookup 100",), (),
     "timeout"),
    ("ambient-inbound-plaintext",
     ("-m mark --mark 0x539/0xfff -j CONNMARK --set-xmark 0x111/0xfff",), (), "timeout"),
    ("ambient-inbound", ("-m connmark --mark 0x111/0xfff -j CONNMARK --restore-mark "
                         "--nfmask 0xffffffff --ctmask 0xffffffff",), (), "timeout"),
    ("ambient-kubelet-probe", ("-s 169.254.7.127/32 -p tcp -m tcp -j ACCEPT",), (),
     "delivered"),
]


@pytest.mark.parametrize(("name", "without_rules", "without_matches", "outcome"), ABLATIONS)
def test_ambient_breakage_agrees_with_the_kernel(lab, report, name: str, without_rules: tuple[str, ...],  # type: ignore[no-untyped-def]
                                                 without_matches: tuple[str, ...],
                                                 outcome: str) -> None:
    from meshlab.live.ambient_verify import run_one
    from meshlab.live.comparison import side_by_side
    from meshlab.scenarios import get_scenario

    _walk, _seen, comparison = run_one(lab, get_scenario(name), without_rules=without_rules,
                                       without_matches=without_matches)
    assert comparison.agree, side_by_side(comparison)
    assert comparison.kernel["outcome"] == outcome


# -- seeded random requests in the ambient world -------------------------------------------

def test_random_ambient_requests_agree_with_the_kernel(lab, report) -> None:  # type: ignore[no-untyped-def]
    """Random sources, targets, ports, protocols and pod annotations (seeded:
    ``MESHLAB_LIVE_SEED`` replays a run), each compared as a catalog scenario is."""
    from meshlab.live.ambient_verify import randomized_ambient
    from meshlab.live.differential import seed_from_env

    seed = seed_from_env()
    results = randomized_ambient(seed, cases=30, lab=lab)
    assert len(results) == 30
    bad = [f"{case.describe()}: {comparison.diff}" for case, comparison in results
           if not comparison.agree]
    assert not bad, f"seed {seed} (replay: MESHLAB_LIVE_SEED={seed}):\n" + "\n".join(bad)


@pytest.mark.parametrize(("to", "port", "proto", "outcome"), [
    ("svc/kube-dns", 15053, "tcp", "refused"),     # ztunnel closes it: no such Service port
    ("127.0.0.1", 15001, "tcp", "refused"),        # made to ztunnel's 15001 itself
    ("pod/reviews-v2", 5432, "tcp", "refused"),    # the peer refuses the tunnel's target
])
def test_ztunnels_syn_ack_is_counted_when_the_walk_ends_refused(
        lab, report, to: str, port: int, proto: str, outcome: str) -> None:  # type: ignore[no-untyped-def]
    """ztunnel's accepted socket answers the app's SYN before ztunnel decides anything, with
    its listener's mark 0x539: the SYN-ACK comes back in by lo and mangle ISTIO_PRERT's
    connmark rule counts it, in the model as in the kernel, however the walk then ends."""
    _agrees(lab, Request("pod/details", to, port, proto), outcome, connmark=1)


@pytest.mark.parametrize(("to", "port", "proto"), [
    ("127.0.0.1", 15053, "tcp"),
    ("127.0.0.1", 15053, "udp"),
    ("pod/details", 15053, "tcp"),
])
def test_dns_made_straight_to_ztunnel_goes_to_its_resolver(lab, report, to: str, port: int,  # type: ignore[no-untyped-def]
                                                          proto: str) -> None:
    """A query made to ztunnel's own 15053 (nothing redirects it) is served by ztunnel, which
    asks its upstream resolver (kube-dns): no loop, coredns answers."""
    comparison = _agrees(lab, Request("pod/details", to, port, proto), "delivered", connmark=1)
    assert comparison.kernel["delivered_to"][0] == "coredns"
    assert comparison.kernel["listeners"] == [15053]


def _agrees(lab, request, outcome: str, *, connmark: int):  # type: ignore[no-untyped-def]
    from meshlab.live.ambient_verify import RandomCase, run_one
    from meshlab.live.comparison import side_by_side

    case = RandomCase(f"ambient-{request.to}-{request.port}-{request.proto}", request, ())
    _walk, _seen, comparison = run_one(lab, case)
    assert comparison.agree, side_by_side(comparison) + "\n" + "\n".join(
        str(d) for d in comparison.diff)
    assert comparison.kernel["outcome"] == outcome
    assert comparison.kernel["mangle"].get("mangle ISTIO_PRERT 1") == connmark
    return comparison
