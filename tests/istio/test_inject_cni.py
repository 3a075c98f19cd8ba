"""istio-cni mode: istio-validation instead of istio-init, and the CNI plugin's rules.

The rules are checked against Istio's own CNI goldens (``cni-*.golden``, read at test
time from ``$MESHLAB_ISTIO_GOLDEN`` or ``<repo>/../shared/reference/istio-iptables/golden``):
each case's pod annotations go through the injector and then the CNI plugin's reading of
them, and the rules must be the golden's, byte for byte.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from meshlab.errors import MeshlabError
from meshlab.istio.inject import InjectionResult, cni_args_for, inject

ENABLED = {"istio-injection": "enabled"}
DEFAULT_GOLDEN_DIR = (Path(__file__).resolve().parents[2] / ".." / "shared" / "reference"
                      / "istio-iptables" / "golden").resolve()


def pod(annotations: dict[str, str] | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "hello", "labels": {"app": "hello"}}
    if annotations is not None:
        metadata["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
            "spec": {"containers": [{"name": "hello", "image": "hello:1"}]}}


def injected(annotations: dict[str, str] | None = None, **kwargs: Any) -> InjectionResult:
    result = inject(pod(annotations), ENABLED, cni=True, **kwargs)
    assert result.injected and result.cni
    return result


def init_names(result: InjectionResult) -> list[str]:
    return [c["name"] for c in result.pod["spec"]["initContainers"]]


def golden(name: str) -> str:
    configured = os.environ.get("MESHLAB_ISTIO_GOLDEN")
    path = (Path(configured) if configured else DEFAULT_GOLDEN_DIR) / name
    if not path.is_file():
        pytest.skip(f"Istio golden {path} not found; set MESHLAB_ISTIO_GOLDEN to the "
                    "directory holding cni-*.golden")
    return path.read_text(encoding="utf-8")


def test_no_istio_init_and_a_validation_container_instead() -> None:
    result = injected()
    assert init_names(result) == ["istio-validation", "istio-proxy"]
    assert result.init_args is None and result.capture_args == result.cni_args
    status = json.loads(result.pod["metadata"]["annotations"]["sidecar.istio.io/status"])
    assert status["initContainers"] == ["istio-validation", "istio-proxy"]
    classic = injected(native_sidecar=False)
    assert init_names(classic) == ["istio-validation"]


def test_validation_args_are_istio_inits_plus_the_validation_flags() -> None:
    validation = injected().pod["spec"]["initContainers"][0]
    init = inject(pod(), ENABLED).pod["spec"]["initContainers"][0]
    assert validation["args"] == [*init["args"], "--run-validation", "--skip-rule-apply"]
    assert validation["args"][:3] == ["istio-iptables", "-p", "15001"]


def test_validation_runs_unprivileged_as_the_proxy() -> None:
    for mode in ("REDIRECT", "TPROXY"):
        ctx = injected(interception_mode=mode).pod["spec"]["initContainers"][0]["securityContext"]
        assert ctx == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                       "privileged": False, "readOnlyRootFilesystem": True,
                       "runAsGroup": 1337, "runAsNonRoot": True, "runAsUser": 1337}


def test_the_injector_writes_the_capture_annotations_for_the_plugin() -> None:
    annotations = injected({"traffic.sidecar.istio.io/excludeInboundPorts": "9000"}
                           ).pod["metadata"]["annotations"]
    assert annotations["sidecar.istio.io/interceptionMode"] == "REDIRECT"
    assert annotations["traffic.sidecar.istio.io/includeOutboundIPRanges"] == "*"
    assert annotations["traffic.sidecar.istio.io/includeInboundPorts"] == "*"
    assert annotations["traffic.sidecar.istio.io/excludeInboundPorts"] == "9000,15020"
    assert "traffic.sidecar.istio.io/excludeOutboundIPRanges" not in annotations
    without = inject(pod(), ENABLED).pod["metadata"]["annotations"]
    assert "traffic.sidecar.istio.io/includeInboundPorts" not in without


def test_the_plugins_port_lists_differ_from_istio_inits() -> None:
    args = injected().cni_args
    assert args is not None
    flags = dict(zip(args[::2], args[1::2], strict=True))
    assert flags["-d"] == "15020,15021,15090" and flags["-o"] == "15020"
    assert (flags["-u"], flags["-g"]) == ("1337", "1337")


def test_the_plugin_drops_repeated_ports() -> None:
    args = cni_args_for({"traffic.sidecar.istio.io/excludeInboundPorts": "15021,8080,15020"})
    assert args[args.index("-d") + 1] == "15021,8080,15020,15090"


@pytest.mark.parametrize(("name", "annotations", "mode"), [
    ("cni-basic.golden", {}, "REDIRECT"),
    ("cni-tproxy.golden", {"sidecar.istio.io/interceptionMode": "TPROXY"}, "REDIRECT"),
    ("cni-include-exclude-ip.golden",
     {"traffic.sidecar.istio.io/includeOutboundIPRanges": "127.0.0.0/8",
      "traffic.sidecar.istio.io/excludeOutboundIPRanges": "10.0.0.0/8"}, "REDIRECT"),
    ("cni-include-exclude-ports.golden",
     {"traffic.sidecar.istio.io/includeInboundPorts": "1111,2222",
      "traffic.sidecar.istio.io/excludeInboundPorts": "3333,4444",
      "traffic.sidecar.istio.io/excludeOutboundPorts": "5555,6666"}, "REDIRECT"),
])
def test_rules_match_istios_cni_goldens(name: str, annotations: dict[str, str],
                                        mode: str) -> None:
    expected = golden(name)
    assert injected(annotations, interception_mode=mode).rules().restore_v4 == expected


def test_interception_mode_none_fails_with_cni() -> None:
    with pytest.raises(MeshlabError, match="accepts only REDIRECT or TPROXY"):
        inject(pod({"sidecar.istio.io/interceptionMode": "NONE"}), ENABLED, cni=True)


def test_not_injected_pods_are_left_alone() -> None:
    result = inject(pod(), {}, cni=True)
    assert not result.injected and result.capture_args is None


def test_notes_say_who_writes_the_rules() -> None:
    notes = injected().notes
    assert any(n.startswith("istio-cni: no istio-init") for n in notes)
    assert any("--run-validation --skip-rule-apply" in n for n in notes)
