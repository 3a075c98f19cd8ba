"""Lesson 07 (``07-real-kernel.ipynb``): reading ``iptables-save -c`` counters: which
rule counts the proxy's upstream connection, and why nat counts connections, not packets.
The model's counters are the ones the live lab reads from the real kernel.
"""

from __future__ import annotations

from typing import Any

from meshlab.exercises.answers import checker, read_whole
from meshlab.exercises.model import run_walk
from meshlab.exercises.result import CheckResult


@checker("07.1", "a rule number of nat ISTIO_OUTPUT",
         "Only connections opened inside the pod pass nat OUTPUT. In the inbound walk, which "
         "process opens one, and from which source address?")
def check_upstream_counter(answer: Any) -> CheckResult:
    """After one inbound request, which rule of nat ISTIO_OUTPUT shows a counter of 1 in
    ``iptables-save -c``?"""
    number = read_whole(answer)
    walk = run_walk("inbound")
    counted = sorted(rule for (table, chain, rule), n in walk.counters.items()
                     if table == "nat" and chain == "ISTIO_OUTPUT" and n and rule > 0)
    model = tuple(f"{t} {c} {f'rule {r}' if r else 'policy'}: {n}"
                  for (t, c, r), n in sorted(walk.counters.items()) if n)
    if number in counted:
        return CheckResult("07.1", "correct", answer,
                           f"ISTIO_OUTPUT rule {number} counted Envoy's connection to the app "
                           "(source 127.0.0.6, out by lo): step 7. The live lab reads the same "
                           "counter from the real kernel.", model=model)
    return CheckResult("07.1", "incorrect", answer,
                       f"The model counts ISTIO_OUTPUT rule(s) {counted}, not {number}.",
                       "Envoy's connection to the app is bound to 127.0.0.6.", model)


@checker("07.2", "a whole number",
         "nat rules see a connection's first packet only; conntrack handles the rest.")
def check_nat_counts_connections(answer: Any) -> CheckResult:
    """A peer sends one HTTP request of 10 TCP packets over one connection to 9080. By how
    much does the counter of nat PREROUTING rule 1 grow?"""
    number = read_whole(answer)
    walk = run_walk("inbound")
    count = int(walk.counters.get(("nat", "PREROUTING", 1), 0))
    model = (f"nat PREROUTING rule 1 after one connection: {count}",
             "later packets of the connection: translated by conntrack, not counted by nat")
    if number == count:
        return CheckResult("07.2", "correct", answer,
                           f"{count}: nat counters count connections, not packets. (The "
                           "filter and mangle tables would count all 10.)", model=model)
    return CheckResult("07.2", "incorrect", answer,
                       f"The model counts {count} for the whole connection.",
                       "Which packets does the nat table see at all?", model)
