"""Injection and ambient mode: a pod istio-cni enrolls in ambient gets no sidecar, unless it
(or its namespace) asks for one, and then istio-cni leaves it out of ambient."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshlab.cli.main import main
from meshlab.istio.inject import inject
from meshlab.istio.webhook import should_inject

POD = Path(__file__).resolve().parents[2] / "data" / "pods" / "productpage-v1.yaml"
AMBIENT = {"istio.io/dataplane-mode": "ambient"}


def pod(labels: dict[str, str] | None = None, **spec: object) -> dict:
    return {"metadata": {"name": "app", "labels": labels or {}},
            "spec": {"containers": [{"name": "app", "image": "app"}], **spec}}


def test_a_pod_in_an_ambient_namespace_gets_no_sidecar_and_is_told_why() -> None:
    decision = should_inject(pod(), AMBIENT)
    assert not decision.inject and decision.webhook is None
    assert any(r.startswith("ambient mode: the namespace is labelled istio.io/dataplane-mode="
                            "ambient") and "istio-cni" in r and "ztunnel" in r
               for r in decision.reasons)
    assert 'label it sidecar.istio.io/inject: "true"' in decision.reasons[-1]
    assert not any("label the namespace istio-injection=enabled" in r for r in decision.reasons)


def test_the_pod_label_alone_makes_it_ambient() -> None:
    decision = should_inject(pod(AMBIENT), {})
    assert not decision.inject
    assert any("ambient mode: the pod is labelled istio.io/dataplane-mode=ambient" in r
               for r in decision.reasons)


def test_asking_for_a_sidecar_wins_and_leaves_ambient() -> None:
    decision = should_inject(pod({"sidecar.istio.io/inject": "true"}), AMBIENT)
    assert decision.inject and decision.webhook == "object.sidecar-injector.istio.io"
    assert "left out of ambient mode by istio-cni" in decision.reasons[-1]
    both = should_inject(pod(), AMBIENT | {"istio-injection": "enabled"})
    assert both.inject and "left out of ambient mode" in both.reasons[-1]


@pytest.mark.parametrize(("labels", "spec"), [
    ({"istio.io/dataplane-mode": "none"}, {}),
    ({}, {"hostNetwork": True}),
])
def test_pods_the_agent_does_not_enroll_get_no_ambient_reason(labels, spec) -> None:
    decision = should_inject(pod(labels, **spec), AMBIENT)
    assert not decision.inject
    assert not any("ambient mode" in r for r in decision.reasons)


def test_no_ambient_label_no_ambient_reason() -> None:
    decision = should_inject(pod(), {})
    assert not any("ambient" in r for r in decision.reasons)


def test_inject_result_and_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    result = inject(POD, AMBIENT)
    assert not result.injected and result.pod == inject(POD, {}).pod
    code = main(["inject", str(POD), "--namespace-label", "istio.io/dataplane-mode=ambient"])
    out, err = capsys.readouterr()
    assert code == 0
    text = out + err
    assert "NOT injected" in text and "ambient mode" in text and "ztunnel" in text
