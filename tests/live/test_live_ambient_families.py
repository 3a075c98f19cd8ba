"""Random ambient configurations, connection by connection, against the kernel model.

The ``ambient`` and ``ambient6`` families of :mod:`meshlab.live.families`: istio-cni's in-pod
rules for random agent settings and pod annotations, with the agent's ``ip rule`` and
table-100 route, in the lab's wide pod (catchers on every port, IPv6, net1). Each
connection's first packet is counted in every table (a first-packet probe) and compared with
:class:`meshlab.netfilter.Netns`; ``MESHLAB_LIVE_SEED`` replays a run.
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


@pytest.mark.parametrize("family", ["ambient", "ambient6"])
def test_random_ambient_family_agrees_connection_by_connection(family: str, lab) -> None:  # type: ignore[no-untyped-def]
    from meshlab.live.differential import seed_from_env
    from meshlab.live.families import randomized_families

    seed = seed_from_env()
    report = randomized_families(seed, families=[family], lab=lab)[family]
    assert len(report.results) >= 50
    # ztunnel's own sockets were among them (the mark is what the ambient rules test)
    assert any(r.spec.mark for r in report.results)
    lines = [f"{r.spec.describe()} | {' '.join(r.config)} | {'; '.join(r.diff)}"
             for r in report.disagreements[:10]]
    assert not report.disagreements, (
        f"{family}: seed {seed} (replay: MESHLAB_LIVE_SEED={seed}): "
        f"{len(report.disagreements)} of {len(report.results)} disagree:\n" + "\n".join(lines))


def test_ztunnels_transparent_connection_completes_and_counts_the_connmark(lab) -> None:  # type: ignore[no-untyped-def]
    """A marked socket bound to a peer's address connects to the app: the SYN comes in by
    lo, where mangle gives the connection connmark 0x111 (one packet: the first); the
    connection is answered only because the SYN-ACK is routed back by table 100."""
    from meshlab.live.differential import ConnSpec
    from meshlab.live.families import FAMILIES, POD_IP, run_case

    spec = ConnSpec("pod", POD_IP, 9080, src="10.244.0.9", mark=0x539)
    (result,) = run_case(lab, FAMILIES["ambient"], ["ambient"],
                         {"dns_capture": True, "ipv6": True}, [spec])
    assert result.agree, result.diff
    assert result.kernel["outcome"] == "answered"
    assert result.kernel["first_packet"]["mangle ISTIO_PRERT 1"] == 1
    assert result.kernel["nat"].get("ISTIO_OUTPUT 5") == 1   # `! -d 127.0.0.1/32 -o lo -j ACCEPT`
