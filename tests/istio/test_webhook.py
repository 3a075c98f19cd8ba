"""The injection webhook's selection rules: one test per rule (ISTIO-FACTS 3.5)."""

from __future__ import annotations

from typing import Any

import pytest

from meshlab.istio.webhook import (
    SYSTEM_NAMESPACES,
    inject_value_meaning,
    should_inject,
    webhook_entries,
)

ENABLED = {"istio-injection": "enabled"}


def pod(labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None,
        host_network: bool | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "p"}
    if labels is not None:
        metadata["labels"] = labels
    if annotations is not None:
        metadata["annotations"] = annotations
    spec: dict[str, Any] = {"containers": [{"name": "app", "image": "app"}]}
    if host_network is not None:
        spec["hostNetwork"] = host_network
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def test_namespace_label_enabled_injects() -> None:
    d = should_inject(pod(), ENABLED)
    assert d.inject and d.webhook == "namespace.sidecar-injector.istio.io"
    assert any("autoInject" in r for r in d.reasons)


def test_unlabelled_namespace_does_not_inject_and_says_how() -> None:
    d = should_inject(pod(), {})
    assert not d.inject and d.webhook is None
    assert "istio-injection=enabled" in d.reasons[-1]


def test_namespace_injection_disabled_blocks_even_pod_label_true() -> None:
    d = should_inject(pod({"sidecar.istio.io/inject": "true"}), {"istio-injection": "disabled"})
    assert not d.inject and d.webhook is None
    assert "disabled" in d.reasons[-1]


def test_pod_label_false_excludes_from_every_webhook() -> None:
    d = should_inject(pod({"sidecar.istio.io/inject": "false"}), ENABLED)
    assert not d.inject and d.webhook is None
    assert "inject=false" in d.reasons[-1]


def test_pod_label_true_in_plain_namespace_matches_object_webhook() -> None:
    d = should_inject(pod({"sidecar.istio.io/inject": "true"}), {})
    assert d.inject and d.webhook == "object.sidecar-injector.istio.io"


def test_annotation_true_alone_is_not_enough() -> None:
    # objectSelectors read labels only; the legacy annotation is read by istiod afterwards.
    d = should_inject(pod(annotations={"sidecar.istio.io/inject": "true"}), {})
    assert not d.inject and d.webhook is None
    assert "objectSelectors read labels only" in d.reasons[-1]


def test_annotation_false_is_honoured_by_istiod() -> None:
    d = should_inject(pod(annotations={"sidecar.istio.io/inject": "false"}), ENABLED)
    assert not d.inject and d.webhook == "namespace.sidecar-injector.istio.io"
    assert "deprecated annotation" in d.reasons[-1]


def test_label_wins_over_annotation() -> None:
    d = should_inject(pod({"sidecar.istio.io/inject": "true"},
                          {"sidecar.istio.io/inject": "false"}), ENABLED)
    assert d.inject
    assert any("label ('true') wins" in r for r in d.reasons)


def test_only_the_exact_strings_true_and_false_decide() -> None:
    assert inject_value_meaning("true") is True
    assert inject_value_meaning("false") is False
    for value in ("", "y", "yes", "on", "True", "TRUE", "False", "no", "0", " true"):
        assert inject_value_meaning(value) is None, value


@pytest.mark.parametrize("value", ["y", "YES", "On", "True", "False", "no", "maybe"])
def test_other_values_fall_back_to_the_default_policy(value: str) -> None:
    # istiod logs "Only 'true' and 'false' are accepted" and applies the policy 'enabled'
    d = should_inject(pod({"sidecar.istio.io/inject": value}), ENABLED)
    assert d.inject and d.webhook == "namespace.sidecar-injector.istio.io"
    assert any("neither \"true\" nor \"false\"" in r and "policy 'enabled'" in r
               for r in d.reasons)


@pytest.mark.parametrize("value", ["yes", "True", "on"])
def test_a_yes_label_does_not_select_the_object_entry(value: str) -> None:
    # the object. entry's selector is `sidecar.istio.io/inject In ["true"]`: exact strings
    d = should_inject(pod({"sidecar.istio.io/inject": value}), {})
    assert not d.inject and d.webhook is None
    assert any("needs exactly \"true\"" in r for r in d.reasons)


def test_a_yes_annotation_is_not_a_true_annotation() -> None:
    d = should_inject(pod(annotations={"sidecar.istio.io/inject": "yes"}), ENABLED)
    assert d.inject  # falls back to the policy, not read as yes
    d = should_inject(pod(annotations={"sidecar.istio.io/inject": "no"}), ENABLED)
    assert d.inject  # and "no" is not read as no


def test_namespace_rev_label_matches_rev_namespace_webhook() -> None:
    d = should_inject(pod(), {"istio.io/rev": "default"})
    assert d.inject and d.webhook == "rev.namespace.sidecar-injector.istio.io"


def test_pod_rev_label_matches_rev_object_webhook() -> None:
    d = should_inject(pod({"istio.io/rev": "default"}), {})
    assert d.inject and d.webhook == "rev.object.sidecar-injector.istio.io"


def test_other_revision_is_not_the_default_injector() -> None:
    d = should_inject(pod(), {"istio.io/rev": "canary"})
    assert not d.inject and "revision" in d.reasons[-1]
    assert should_inject(pod(), {"istio.io/rev": "canary"}, revision="canary").inject


def test_istio_injection_wins_over_rev_on_namespace() -> None:
    d = should_inject(pod(), {"istio-injection": "enabled", "istio.io/rev": "canary"})
    assert d.webhook == "namespace.sidecar-injector.istio.io" and d.inject


def test_host_network_is_skipped_by_istiod() -> None:
    d = should_inject(pod(host_network=True), ENABLED)
    assert not d.inject and d.webhook == "namespace.sidecar-injector.istio.io"
    assert "hostNetwork" in d.reasons[-1]


@pytest.mark.parametrize("namespace", SYSTEM_NAMESPACES)
def test_system_namespaces_are_skipped(namespace: str) -> None:
    d = should_inject(pod(), ENABLED, namespace)
    assert not d.inject and namespace in d.reasons[-1]


def test_already_injected_pod_is_left_alone() -> None:
    d = should_inject(pod(annotations={"sidecar.istio.io/status": "{}"}), ENABLED)
    assert not d.inject and "already" in d.reasons[0]


def test_auto_webhook_only_when_enabled_by_default() -> None:
    assert not should_inject(pod(), {}).inject
    d = should_inject(pod(), {}, enable_namespaces_by_default=True)
    assert d.inject and d.webhook == "auto.sidecar-injector.istio.io"


def test_at_most_one_entry_matches() -> None:
    """The chart's entries are mutually exclusive; check it over a grid of label sets."""
    ns_options: list[dict[str, str]] = [{}, ENABLED, {"istio-injection": "disabled"},
                                        {"istio.io/rev": "default"},
                                        {"istio.io/rev": "default", **ENABLED}]
    pod_options: list[dict[str, str]] = [{}, {"sidecar.istio.io/inject": "true"},
                                         {"sidecar.istio.io/inject": "false"},
                                         {"istio.io/rev": "default"},
                                         {"istio.io/rev": "default",
                                          "sidecar.istio.io/inject": "true"}]
    for ns in ns_options:
        for labels in pod_options:
            matched = [e.name for e in webhook_entries() if not e.failed(ns, labels)]
            assert len(matched) <= 1, (ns, labels, matched)


def test_an_empty_label_wins_over_the_annotation_and_means_the_default() -> None:
    # istiod takes the label whenever it is present, even empty, and "" means the default
    d = should_inject(pod({"sidecar.istio.io/inject": ""},
                          {"sidecar.istio.io/inject": "false"}), ENABLED)
    assert d.inject
    assert any("label sidecar.istio.io/inject is empty" in r for r in d.reasons)
