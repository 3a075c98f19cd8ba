"""Lesson 04 (``04-outbound.ipynb``): which ISTIO_OUTPUT rule lets Envoy's own upstream
connection out, and which Envoy cluster handles a call to a Service -- judged on the outbound
walks.
"""

from __future__ import annotations

from typing import Any

from meshlab.exercises.answers import Unreadable, checker, read_string, read_whole
from meshlab.exercises.model import default_flags, proxy_events, rules_for, run_walk, walk_lines
from meshlab.exercises.result import Verdict, right, wrong
from meshlab.i18n import tr


@checker("04.1", "a rule number (1 is the first rule of the chain)", hints=(
    "Write down what the kernel knows about Envoy's upstream connection: its owner (UID and "
    "GID), the interface it leaves by, its destination. Then test ISTIO_OUTPUT's rules in "
    "order.",
    "Several rules of ISTIO_OUTPUT only match connections that leave by lo. Does this one?",
    "The first rule that matches decides; rules after it are never tested.",
))
def check_proxy_exempt_rule(answer: Any) -> Verdict:
    """Step 15: which rule number of nat ISTIO_OUTPUT lets Envoy's upstream connection to the
    peer through?"""
    number = read_whole(answer)
    walk = run_walk("outbound")
    tested = {e.rule: e for e in walk.events if e.kind == "rule" and e.connection >= 1
              and e.chain == "ISTIO_OUTPUT"}
    upstream = [e for e in tested.values() if e.matched]
    model = walk_lines(walk)
    if not upstream:
        raise Unreadable("in this model no ISTIO_OUTPUT rule matched Envoy's connection "
                         "(the library changed?)")
    hit = upstream[0]
    if number == hit.rule:
        return right(tr("ISTIO_OUTPUT rule {rule}: {text} -> {decision}. The rules before it "
                        "need -o lo, and this connection leaves by eth0.", rule=hit.rule,
                        text=hit.text, decision=hit.decision), evidence=model)
    solution = tr("rule {rule}: '{text}' -> {decision}.", rule=hit.rule, text=hit.text,
                  decision=hit.decision)
    size = len(rules_for(default_flags()).tables["nat"].chains["ISTIO_OUTPUT"].rules)
    if not 1 <= number <= size:
        why = tr("ISTIO_OUTPUT has rules 1 to {size}.", size=size)
    elif number in tested:
        failed = tested[number].why_not or tr("one of its conditions is false for it")
        why = tr("rule {rule} ({text}) is tested against Envoy's connection and does not "
                 "match it: {failed}.", rule=number, text=tested[number].text, failed=failed)
    else:
        why = tr("rule {rule} is never tested for Envoy's connection: an earlier rule has "
                 "already decided its fate.", rule=number)
    return wrong(tr("Not rule {rule}: {why}", rule=number, why=why), solution=solution,
                 evidence=model)


@checker("04.2", "an Envoy cluster name, e.g. 'PassthroughCluster'", hints=(
    "Does Envoy know the reviews Service? Its VIP and port are in the configuration istiod "
    "sends, so virtualOutbound has a filter chain for 10.96.0.20:9080.",
    "Inbound clusters deliver to the app in this pod; the destination here is another "
    "Service.",
    "Outbound clusters are named outbound|PORT|SUBSET|HOST, with the Service's full DNS "
    "name as HOST.",
))
def check_outbound_cluster(answer: Any) -> Verdict:
    """The app calls the reviews Service VIP 10.96.0.20:9080. Which Envoy cluster handles it?"""
    name = read_string(answer, "a cluster name")
    walk = run_walk("outbound-service")
    chosen = [e.cluster for e in proxy_events(walk) if e.cluster]
    model = walk_lines(walk)
    if not chosen:
        raise Unreadable("in this model Envoy picks no cluster (the library changed?)")
    if name == chosen[0]:
        return right(tr("virtualOutbound hands it to {cluster}; Envoy picks an endpoint "
                        "itself, so kube-proxy's VIP translation is never used.",
                        cluster=chosen[0]), evidence=model)
    solution = tr("{cluster}: the filter chain for 10.96.0.20:9080 of virtualOutbound.",
                  cluster=chosen[0])
    if name == "PassthroughCluster":
        why = tr("PassthroughCluster is for destinations Envoy has no configuration for; "
                 "it would forward to 10.96.0.20:9080 as it is and leave the VIP to kube-proxy. "
                 "The reviews Service is in Envoy's configuration.")
    elif name.startswith("inbound|"):
        why = tr("an inbound cluster delivers to the app in *this* pod; this connection leaves "
                 "the pod for another Service.")
    elif name.startswith("outbound|") and name.count("|") == 3:
        why = tr("the shape is right, but one of its parts differs from the model's: check the "
                 "port, the subset (none here) and the host's full name.")
    else:
        why = tr("Envoy in this pod has no cluster by that name.")
    return wrong(tr("Not {answer}: {why}", answer=name, why=why), solution=solution,
                 evidence=model)
