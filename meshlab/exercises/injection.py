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
    flag_changes,
    receive,
    rules_for,
    trace_lines,
)
from meshlab.exercises.result import Verdict, right, wrong
from meshlab.i18n import tr


@lru_cache(maxsize=1)
def _productpage_manifest() -> str:
    return PRODUCTPAGE_POD.read_text(encoding="utf-8")


def _label_problem(labels: Mapping[str, str]) -> str:
    """What the webhook makes of these namespace labels, said about the learner's labels."""
    if not labels:
        return tr("With no labels at all, no webhook entry selects the namespace")
    named = ", ".join(f"{k}={v}" for k, v in labels.items())
    for key, value in labels.items():
        if key == "istio-injection":
            return tr("With {labels}, the namespace carries the right label name, but the value "
                      "{value} is not the one the webhook's namespaceSelector asks for (and "
                      "any other value of this label turns injection off)",
                      labels=named, value=repr(value))
    return tr("With {labels}, no webhook entry's namespaceSelector matches the namespace",
              labels=named)


@checker("01.1", "a dict of namespace labels, e.g. {'team': 'shop'}", hints=(
    "Look at the namespaceSelector of each webhook entry in the injector's configuration: "
    "which label does it look for on the namespace?",
    "A selector 'In [...]' accepts only the values listed, spelled exactly that way.",
    "The classic way to switch injection on names the feature in the label's key, and "
    "its value is a word, not 'true'.",
))
def check_injection_labels(answer: Any) -> Verdict:
    """Which labels on the ``default`` namespace make the webhook inject productpage?"""
    from meshlab.istio.webhook import should_inject

    if not isinstance(answer, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in answer.items()):
        raise Unreadable(tr("{answer} is not a dict of label names to string values",
                            answer=repr(answer)))
    from meshlab.istio.inject import load_pod

    pod = load_pod(_productpage_manifest())
    decision = should_inject(pod, dict(answer), "default")
    model = tuple(decision.reasons)
    if decision.inject:
        return right(tr("The webhook {webhook} matches, so /inject is called and the pod gets "
                        "istio-init and istio-proxy.", webhook=decision.webhook), evidence=model)
    return wrong(tr("{problem}: the API server creates the pod unchanged, with no istio-init, "
                    "no rules and no sidecar.", problem=_label_problem(answer)),
                 solution=tr("{enabled} (or {revision} for a revision-based install)",
                             enabled="{'istio-injection': 'enabled'}",
                             revision="{'istio.io/rev': 'default'}"), evidence=model)


def _inbound_fate(trace: Any) -> str:
    """How the model's peer connection fared: redirected (to which port) or left alone."""
    if trace.nat is not None:
        return tr("still redirected to {port} (Envoy's inbound listener)",
                  port=trace.delivered[1])
    return tr("left alone: it keeps its destination and reaches the app directly")


@checker("01.3", "a dict of pod annotations, e.g. {'some/annotation': 'value'}", hints=(
    "The traffic.sidecar.istio.io/... annotations become istio-init's flags. Which flags "
    "decide which *inbound* ports are captured?",
    "There are two ways to leave a port out: list the ports to capture, or list the ports "
    "to leave alone. Only one of them keeps every other port (9080 and any future one) "
    "captured.",
    "The annotation you want takes a comma list of ports, and its name says both what it "
    "does to them and in which direction.",
))
def check_exclude_inbound_annotation(answer: Any) -> Verdict:
    """Annotate productpage so that a peer's connection to port 9091 is not captured,
    while port 9080 still is."""
    import yaml

    from meshlab.istio.inject import inject

    if not isinstance(answer, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in answer.items()):
        raise Unreadable(tr("{answer} is not a dict of annotation names to string values",
                            answer=repr(answer)))
    pod = yaml.safe_load(_productpage_manifest())
    pod["metadata"]["annotations"] = dict(answer)
    result = inject(pod, {"istio-injection": "enabled"})
    solution = tr("{annotation}: istio-init adds 9091 to -d, which writes "
                  "'-p tcp -m tcp --dport 9091 -j RETURN' in ISTIO_INBOUND.",
                  annotation="{'traffic.sidecar.istio.io/excludeInboundPorts': '9091'}")
    if result.init_args is None:
        return wrong(tr("With these annotations there is no istio-init at all, so nothing is "
                        "captured: not 9091, but not 9080 either."), solution=solution,
                     evidence=tuple(result.reasons))
    ruleset = result.rules().ruleset_v4
    _, t9091 = receive(ruleset, 9091)
    _, t9080 = receive(ruleset, 9080)
    args = "istio-iptables " + shlex.join(result.init_args)
    model = (args, "peer -> :9091", *trace_lines(t9091), "peer -> :9080",
             *trace_lines(t9080))
    changes = flag_changes(result.init_args)
    changed = (tr("istio-init's flags change: {changes}.", changes="; ".join(changes))
               if changes else
               tr("istio-init runs with the default flags: these annotations change none of "
                  "them."))
    if t9091.nat is None and t9080.nat is not None:
        returned = [e for e in t9091.hits if e.chain == "ISTIO_INBOUND" and e.verdict == "RETURN"]
        if returned:
            how = tr("ISTIO_INBOUND rule {rule} ({text}) now RETURNs a connection to 9091",
                     rule=returned[0].rule, text=returned[0].text)
            note = ""
        else:
            how = tr("no rule of ISTIO_INBOUND matches a connection to 9091 any more (only the "
                     "listed ports are redirected), so it falls through")
            note = tr("Right, with a trade-off: a list of ports to capture leaves out every "
                      "port not on it, including one the app opens later. A list of ports to "
                      "leave alone keeps capture the default.")
        return right(tr("{changed} Now {how}: it keeps its destination and reaches the app "
                        "directly, while 9080 is still redirected to {port}.",
                        changed=changed, how=how, port=t9080.delivered[1]),
                     evidence=model, note=note)
    if t9091.nat is not None:
        why = tr("port 9091 is {fate}.", fate=_inbound_fate(t9091))
    else:
        why = tr("9091 is left alone, but so is 9080: inbound capture is off for both.")
    return wrong(tr("{changed} With them, {why}", changed=changed, why=why), solution=solution,
                 evidence=model)


@checker("01.2", "a port number", hints=(
    "Which chain sends the app's outbound connections to Envoy, and which flag fills in the "
    "port of its REDIRECT?",
    "Compare the flags this istio-init runs with to the default ones: only one changed.",
    "The flag is copied into the rule as it is; the kernel does not check that anything "
    "listens there.",
))
def check_proxy_port_flag(answer: Any) -> Verdict:
    """istio-init runs with ``-p 15999`` instead of ``-p 15001``: to which local port does the
    kernel steer the app's connection to 10.244.0.9:9080?"""
    from meshlab.istio.flags import CaptureConfig

    port = read_port(answer)
    flags = list(default_flags())
    flags[flags.index("-p") + 1] = "15999"
    trace = connect(rules_for(tuple(flags)), PEER_IP, 9080)
    model = ("istio-iptables " + shlex.join(flags), *trace_lines(trace))
    got = trace.delivered[1]
    if port == got:
        return right(tr("ISTIO_REDIRECT now says REDIRECT --to-ports {port}: the flag is copied "
                        "straight into the rule. Envoy must then listen there "
                        "(meshConfig.proxyListenPort), or every outbound connection is refused.",
                        port=got), evidence=model)
    defaults = CaptureConfig.from_args(list(default_flags()))
    if port == defaults.proxy_port:
        why = tr("{port} is -p's default value; this istio-init runs with another -p, and "
                 "ISTIO_REDIRECT's --to-ports is copied from it, not from Envoy's defaults.",
                 port=port)
    elif port == defaults.inbound_capture_port:
        why = tr("{port} is where *inbound* connections go (-z, via ISTIO_IN_REDIRECT); this "
                 "is a connection the app opens, which passes nat OUTPUT and ISTIO_REDIRECT.",
                 port=port)
    elif port == 9080:
        why = tr("9080 would mean the connection is not captured at all; but the app's "
                 "connection to another pod matches ISTIO_OUTPUT's last rule and is redirected.")
    else:
        why = tr("the model's ISTIO_REDIRECT does not send it to {port}.", port=port)
    return wrong(tr("Not {answer}: {why}", answer=port, why=why),
                 solution=tr("{port}: -p {port} writes {rule}.", port=got,
                             rule=f"'-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports {got}'"),
                 evidence=model)
