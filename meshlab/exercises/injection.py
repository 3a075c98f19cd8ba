"""Lesson 01 (``01-injection.ipynb``): which labels make the webhook inject a pod, which
annotation keeps a port out of capture, and what istio-init's ``-p`` flag writes.

Each checker builds the pod (:mod:`meshlab.istio.inject`), generates its rules and traces a
connection through them (:mod:`meshlab.exercises.model`), then judges the answer by what the
model shows.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from meshlab.exercises.answers import Unreadable, checker, read_port
from meshlab.exercises.model import (
    PEER_IP,
    PRODUCTPAGE_POD,
    connect,
    default_flags,
    receive,
    rules_for,
    trace_lines,
)
from meshlab.exercises.result import CheckResult


@lru_cache(maxsize=1)
def _productpage_manifest() -> str:
    return PRODUCTPAGE_POD.read_text(encoding="utf-8")


@checker("01.1", "a dict of namespace labels, e.g. {'team': 'shop'}",
         "The webhook's namespaceSelector looks for one label on the namespace; its value "
         "must be exactly what the selector says (not 'true').")
def check_injection_labels(answer: Any) -> CheckResult:
    """Which labels on the ``default`` namespace make the webhook inject productpage?"""
    from meshlab.istio.webhook import should_inject

    if not isinstance(answer, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in answer.items()):
        raise Unreadable(f"{answer!r} is not a dict of label names to string values")
    from meshlab.istio.inject import load_pod

    pod = load_pod(_productpage_manifest())
    decision = should_inject(pod, dict(answer), "default")
    model = tuple(decision.reasons)
    if decision.inject:
        return CheckResult(
            "01.1", "correct", answer,
            f"The webhook {decision.webhook} matches, so /inject is called and the pod gets "
            "istio-init and istio-proxy.", model=model)
    return CheckResult(
        "01.1", "incorrect", answer,
        "With these labels no webhook entry selects the pod, so the API server creates it "
        "unchanged: no istio-init, no rules, no sidecar.",
        "The classic label is istio-injection=enabled (istio.io/rev=default also works).",
        model)


@checker("01.3", "a dict of pod annotations, e.g. {'some/annotation': 'value'}",
         "Look at the traffic.sidecar.istio.io/... annotations: one of them lists inbound "
         "ports that istio-init must leave alone (it becomes part of -d).")
def check_exclude_inbound_annotation(answer: Any) -> CheckResult:
    """Annotate productpage so that a peer's connection to port 9091 is not captured,
    while port 9080 still is."""
    import yaml

    from meshlab.istio.inject import inject

    if not isinstance(answer, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in answer.items()):
        raise Unreadable(f"{answer!r} is not a dict of annotation names to string values")
    pod = yaml.safe_load(_productpage_manifest())
    pod["metadata"]["annotations"] = dict(answer)
    result = inject(pod, {"istio-injection": "enabled"})
    if result.init_args is None:
        return CheckResult("01.3", "incorrect", answer,
                           "With these annotations there is no istio-init at all, so nothing "
                           "is captured: not 9091, but not 9080 either.",
                           "Keep inbound capture on; only leave port 9091 out.",
                           tuple(result.reasons))
    ruleset = result.rules().ruleset_v4
    _, t9091 = receive(ruleset, 9091)
    _, t9080 = receive(ruleset, 9080)
    args = "istio-iptables " + shlex.join(result.init_args)
    model = (args, "peer -> :9091", *trace_lines(t9091), "peer -> :9080",
             *trace_lines(t9080))
    if t9091.nat is None and t9080.nat is not None:
        return CheckResult(
            "01.3", "correct", answer,
            "istio-init now writes a RETURN for 9091 in ISTIO_INBOUND, so a connection to 9091 "
            "keeps its destination and reaches the app directly, while 9080 is still "
            f"redirected to {t9080.delivered[1]}.", model=model)
    if t9091.nat is not None:
        why = (f"port 9091 is still redirected to {t9091.delivered[1]} (Envoy's inbound "
               "listener).")
    else:
        why = "9091 is left alone, but so is 9080: you switched inbound capture off."
    return CheckResult("01.3", "incorrect", answer, "Not yet: " + why,
                       "traffic.sidecar.istio.io/excludeInboundPorts takes a comma list of "
                       "ports.", model)


@checker("01.2", "a port number",
         "-p is the port ISTIO_REDIRECT sends outbound connections to (REDIRECT --to-ports).")
def check_proxy_port_flag(answer: Any) -> CheckResult:
    """istio-init runs with ``-p 15999`` instead of ``-p 15001``: to which local port does the
    kernel steer the app's connection to 10.244.0.9:9080?"""
    port = read_port(answer)
    flags = list(default_flags())
    flags[flags.index("-p") + 1] = "15999"
    trace = connect(rules_for(tuple(flags)), PEER_IP, 9080)
    model = ("istio-iptables " + shlex.join(flags), *trace_lines(trace))
    got = trace.delivered[1]
    if port == got:
        return CheckResult("01.2", "correct", answer,
                           f"ISTIO_REDIRECT now says REDIRECT --to-ports {got}: the flag is "
                           "copied straight into the rule. Envoy must then listen there "
                           "(meshConfig.proxyListenPort), or every outbound connection is "
                           "refused.", model=model)
    return CheckResult("01.2", "incorrect", answer,
                       f"The model redirects the connection to 127.0.0.1:{got}, not {port}.",
                       "Read -p both ways: the flag writes the rule, the proxy must listen on "
                       "the same port.", model)
