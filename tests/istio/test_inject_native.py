"""Native sidecars: which Istio and kubelet versions give which layout, and the annotation."""

from __future__ import annotations

import pytest

from meshlab.errors import MeshlabError
from meshlab.istio.inject import PodError, inject, native_sidecar_for, parse_version

ENABLED = {"istio-injection": "enabled"}
NATIVE = "sidecar.istio.io/nativeSidecar"


def pod(annotations: dict[str, str] | None = None) -> dict[str, object]:
    metadata: dict[str, object] = {"name": "job"}
    if annotations is not None:
        metadata["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
            "spec": {"containers": [{"name": "app", "image": "app"}]}}


@pytest.mark.parametrize(("istio", "kubelet", "native"), [
    ("1.19", "1.34", False),   # 1.19-1.26: ENABLE_NATIVE_SIDECARS=false by default
    ("1.26", "1.34", False),
    ("1.27", "1.32", False),   # 1.27+: auto, and the kubelet is older than 1.33
    ("1.27", "1.33", True),
    ("1.28", "v1.33.2", True),
    ("1.30", "v1.34.1-eks-1", True),
    ("1.18", "1.34", False),   # before native sidecars existed
])
def test_the_version_rule(istio: str, kubelet: str, native: bool) -> None:
    choice = native_sidecar_for({}, istio_version=istio, kubelet_version=kubelet)
    assert choice.native is native
    assert istio in choice.reason
    result = inject(pod(), ENABLED, istio_version=istio, kubelet_version=kubelet)
    assert result.native_sidecar is native
    names = [c["name"] for c in result.pod["spec"]["initContainers"]]
    assert names == (["istio-init", "istio-proxy"] if native else ["istio-init"])


def test_the_reason_names_the_kubelet_comparison() -> None:
    assert "kubelet 1.32 is < 1.33" in native_sidecar_for(
        {}, istio_version="1.27", kubelet_version="1.32").reason
    assert "kubelet 1.34 is >= 1.33" in native_sidecar_for({}).reason


@pytest.mark.parametrize(("value", "native"), [("true", True), ("false", False)])
@pytest.mark.parametrize(("istio", "kubelet"), [("1.24", "1.30"), ("1.26", "1.34"),
                                                ("1.28", "1.34"), ("1.28", "1.29")])
def test_the_annotation_overrides_the_default(value: str, native: bool, istio: str,
                                              kubelet: str) -> None:
    result = inject(pod({NATIVE: value}), ENABLED, istio_version=istio, kubelet_version=kubelet)
    assert result.native_sidecar is native
    assert any(f'{NATIVE}: "{value}"' in note for note in result.notes)


@pytest.mark.parametrize("value", ["true", "yes"])
def test_istio_before_1_24_ignores_the_annotation(value: str) -> None:
    result = inject(pod({NATIVE: value}), ENABLED, istio_version="1.23")
    assert not result.native_sidecar
    assert any("Istio 1.23 ignores the annotation" in note for note in result.notes)
    forced = inject(pod({NATIVE: "false"}), ENABLED, istio_version="1.22", native_sidecar=True)
    assert forced.native_sidecar


@pytest.mark.parametrize(("setting", "native"), [(True, True), (False, False),
                                                 ("auto", True)])
def test_the_setting_forces_or_detects(setting: bool | str, native: bool) -> None:
    assert inject(pod(), ENABLED, native_sidecar=setting).native_sidecar is native  # type: ignore[arg-type]


def test_auto_forced_reads_the_kubelet() -> None:
    choice = native_sidecar_for({}, istio_version="1.30", kubelet_version="1.31",
                                setting="auto")
    assert not choice.native and "ENABLE_NATIVE_SIDECARS=auto" in choice.reason


@pytest.mark.parametrize("value", ["yes", "True", "on", ""])
def test_a_bad_annotation_value_is_a_specific_error(value: str) -> None:
    text = (f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: job\n  annotations:\n"
            f"    {NATIVE}: \"{value}\"\nspec:\n  containers:\n  - name: app\n    image: app\n")
    with pytest.raises(PodError) as caught:
        inject(text, ENABLED, source_name="job.yaml")
    message = str(caught.value)
    assert message.startswith("job.yaml, line 6")
    assert f"invalid value {value!r} for annotation {NATIVE}" in message
    assert '"true" or "false"' in message
    assert caught.value.field == f"metadata.annotations[{NATIVE!r}]"


def test_a_bad_annotation_value_through_the_rule_itself() -> None:
    with pytest.raises(PodError, match=r"^Invalid value 'yes' for annotation"):
        native_sidecar_for({NATIVE: "yes"})


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"kubelet_version": "latest"}, "kubelet version 'latest' is not a version"),
    ({"istio_version": "1"}, "Istio version '1' is not a version"),
    ({"istio_version": "2.0"}, "Istio 1.x and Kubernetes 1.x"),
    ({"setting": "yes"}, "native sidecar setting 'yes' is unknown"),
    ({"istio_version": "1.17", "setting": True}, "has no native sidecars"),
    ({"istio_version": "1.26", "setting": "auto"}, "no 'auto' native sidecar mode"),
])
def test_bad_inputs_say_what_to_write(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(MeshlabError, match=match):
        native_sidecar_for({}, **kwargs)  # type: ignore[arg-type]


def test_parse_version() -> None:
    assert parse_version("v1.33.2-gke.100", "kubelet version") == (1, 33)
    assert parse_version(" 1.28 ", "Istio version") == (1, 28)
