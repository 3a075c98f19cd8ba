"""How long the istio-cni agent's ambient rules take to generate (target: under 1 ms).

Measured: the in-pod rules for the default agent settings, and for annotations read from a
pod with every override (ingress mode, two virtual interfaces, DNS capture) on an IPv6 agent;
the node's rules. Baseline, in the same run: the sidecar rule writer (istio-iptables) for the
default istio-init flags, already parsed. Also, without a target, reading the rules into a
:class:`meshlab.netfilter.ruleset.Ruleset` for the kernel model.
"""

from __future__ import annotations

from benchmarks.harness import Result, median_time
from meshlab.istio.ambient import AgentConfig, PodOverrides, inpod_rules, node_rules
from meshlab.istio.capture import generate
from meshlab.istio.flags import DEFAULT_ISTIO_INIT_ARGS, CaptureConfig

TARGET_S = 1e-3

EVERY_OVERRIDE = {
    "ambient.istio.io/bypass-inbound-capture": "true",
    "ambient.istio.io/dns-capture": "true",
    "istio.io/reroute-virtual-interfaces": "net1,net2",
}


def run() -> list[Result]:
    sidecar_config = CaptureConfig.from_args(DEFAULT_ISTIO_INIT_ARGS)
    sidecar = median_time(lambda: generate(sidecar_config), repeat=30, number=50)
    baseline = "sidecar rules, default flags"
    default = AgentConfig()
    dual = AgentConfig(ipv6=True)
    in_pod = median_time(lambda: inpod_rules(default), repeat=30, number=200)
    annotated = median_time(
        lambda: inpod_rules(dual, PodOverrides.from_annotations(EVERY_OVERRIDE)),
        repeat=30, number=200)
    node = median_time(lambda: node_rules(dual), repeat=30, number=200)
    parsed = median_time(lambda: inpod_rules(default).ruleset(4), repeat=20, number=20)
    return [
        Result("ambient: in-pod rules, default agent (IPv4)", in_pod, TARGET_S, baseline,
               sidecar),
        Result("ambient: annotations -> pod rules, all overrides, IPv4+6", annotated,
               TARGET_S, baseline, sidecar),
        Result("ambient: node rules (probe SNAT), IPv4+6", node, TARGET_S, baseline, sidecar),
        Result("ambient: in-pod rules + parse to Ruleset (v4)", parsed, None,
               "in-pod rules only", in_pod),
    ]


if __name__ == "__main__":
    for result in run():
        print(result.row())
