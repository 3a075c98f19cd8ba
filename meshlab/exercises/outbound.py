"""Lesson 04 (``04-outbound.ipynb``): which ISTIO_OUTPUT rule lets Envoy's own upstream
connection out, and which Envoy cluster handles a call to a Service -- judged on the outbound
walks.
"""

from __future__ import annotations

from typing import Any

from meshlab.exercises.answers import checker, read_text, read_whole
from meshlab.exercises.model import proxy_events, run_walk, walk_lines
from meshlab.exercises.result import CheckResult


@checker("04.1", "a rule number (1 is the first rule of the chain)",
         "Envoy's upstream connection is owned by UID 1337 and leaves by eth0.")
def check_proxy_exempt_rule(answer: Any) -> CheckResult:
    """Step 15: which rule number of nat ISTIO_OUTPUT lets Envoy's upstream connection to the
    peer through?"""
    number = read_whole(answer)
    walk = run_walk("outbound")
    upstream = [e for e in walk.events if e.kind == "rule" and e.matched
                and e.chain == "ISTIO_OUTPUT" and e.connection >= 1]
    model = walk_lines(walk)
    if not upstream:
        return CheckResult("04.1", "incorrect", answer,
                           "In the model no ISTIO_OUTPUT rule matched Envoy's connection.", "",
                           model)
    hit = upstream[0]
    if number == hit.rule:
        return CheckResult("04.1", "correct", answer,
                           f"ISTIO_OUTPUT rule {hit.rule}: {hit.text} -> {hit.decision}. The "
                           "rules before it need -o lo, and this connection leaves by eth0.",
                           model=model)
    return CheckResult("04.1", "incorrect", answer,
                       f"The model's upstream connection matches ISTIO_OUTPUT rule {hit.rule} "
                       f"({hit.text}), not rule {number}.",
                       "Rules 1-3 all need -o lo; the connection goes to another pod.", model)


@checker("04.2", "an Envoy cluster name, e.g. 'PassthroughCluster'",
         "Envoy knows the reviews Service (its VIP and port), so it does not pass the "
         "connection through blindly.")
def check_outbound_cluster(answer: Any) -> CheckResult:
    """The app calls the reviews Service VIP 10.96.0.20:9080. Which Envoy cluster handles it?"""
    name = read_text(answer, "a cluster name")
    walk = run_walk("outbound-service")
    chosen = [e.cluster for e in proxy_events(walk) if e.cluster]
    model = walk_lines(walk)
    if chosen and name == chosen[0]:
        return CheckResult("04.2", "correct", answer,
                           f"virtualOutbound hands it to {chosen[0]}; Envoy picks an endpoint "
                           "itself, so kube-proxy's VIP translation is never used.",
                           model=model)
    return CheckResult("04.2", "incorrect", answer,
                       f"The model picks {chosen[0] if chosen else 'no cluster'}.",
                       "Outbound clusters are named outbound|PORT|SUBSET|HOST.", model)
