"""Lesson 07 (``07-real-kernel.ipynb``): reading ``iptables-save -c`` counters: which
rule counts the proxy's upstream connection, and why nat counts connections, not packets.
The model's counters are the ones the live lab reads from the real kernel.
"""

from __future__ import annotations

from typing import Any

from meshlab.exercises.answers import checker, read_whole
from meshlab.exercises.model import counter_lines, default_flags, rules_for, run_walk
from meshlab.exercises.result import Verdict, right, wrong
from meshlab.i18n import tr


@checker("07.1", "a rule number of nat ISTIO_OUTPUT", hints=(
    "Only connections opened inside the pod pass nat OUTPUT. In the inbound walk, which "
    "process opens one?",
    "Envoy opens a connection to the app, out by lo. Test ISTIO_OUTPUT's rules against it in "
    "order: the first that matches is the one counted.",
    "That connection's source address was chosen by Envoy on purpose; one rule matches "
    "exactly that address.",
))
def check_upstream_counter(answer: Any) -> Verdict:
    """After one inbound request, which rule of nat ISTIO_OUTPUT shows a counter of 1 in
    ``iptables-save -c``?"""
    number = read_whole(answer)
    walk = run_walk("inbound")
    counted = sorted(rule for (table, chain, rule), n in walk.counters.items()
                     if table == "nat" and chain == "ISTIO_OUTPUT" and n and rule > 0)
    model = counter_lines(walk.counters)
    if number in counted:
        return right(tr("ISTIO_OUTPUT rule {rule} counted Envoy's connection to the app "
                        "(source 127.0.0.6, out by lo): step 7. The live lab reads the same "
                        "counter from the real kernel.", rule=number), evidence=model)
    size = len(rules_for(default_flags()).tables["nat"].chains["ISTIO_OUTPUT"].rules)
    rules = tr(" and ").join(tr("rule {rule}", rule=n) for n in counted)
    solution = tr("{rules}: the only ISTIO_OUTPUT rule(s) with a non-zero counter.",
                  rules=rules)
    if not 1 <= number <= size:
        why = tr("ISTIO_OUTPUT has rules 1 to {size}.", size=size)
    else:
        why = tr("rule {rule} stays at 0 after one inbound request: the one connection that "
                 "passes ISTIO_OUTPUT is decided by another rule (a counter counts only the "
                 "rule that matched, not the ones tested before it).", rule=number)
    return wrong(tr("Not rule {rule}: {why}", rule=number, why=why), solution=solution,
                 evidence=model)


@checker("07.2", "a whole number", hints=(
    "Which packets of a TCP connection does the nat table see at all?",
    "nat decides a connection's translation once; conntrack applies it to every later "
    "packet without asking nat again.",
    "How many connections does one HTTP request over one TCP connection open?",
))
def check_nat_counts_connections(answer: Any) -> Verdict:
    """A peer sends one HTTP request of 10 TCP packets over one connection to 9080. By how
    much does the counter of nat PREROUTING rule 1 grow?"""
    number = read_whole(answer)
    walk = run_walk("inbound")
    count = int(walk.counters.get(("nat", "PREROUTING", 1), 0))
    model = (f"nat PREROUTING rule 1 after one connection: {count}",
             "later packets of the connection: translated by conntrack, not counted by nat")
    if number == count:
        return right(tr("{count}: nat counters count connections, not packets. (The filter "
                        "and mangle tables would count all 10.)", count=count), evidence=model)
    solution = tr("{count}: nat sees only the first packet of each connection.", count=count)
    if number == 10:
        why = tr("10 would mean nat sees every packet of the connection, as the filter and "
                 "mangle tables do; nat does not.")
    elif number == 0:
        why = tr("0 would mean nat never sees this connection; but PREROUTING's rule is what "
                 "sends it to Envoy, so it did see it.")
    elif number > 10:
        why = tr("the request has only 10 packets; no counter can grow by more.")
    else:
        why = tr("{count} packets would be counted only if nat saw some of the later packets "
                 "too; think about which packet nat does see.", count=number)
    return wrong(tr("Not {answer}: {why}", answer=number, why=why), solution=solution,
                 evidence=model)
