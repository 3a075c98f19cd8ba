"""Lesson 02 (``02-iptables-in-a-pod.ipynb``): the nat chains a packet walks, a rule that
lets one port bypass Envoy, and the address conntrack puts on the reply.

The rule exercise inserts the learner's rule into the generated ruleset and traces a packet
through it: any rule that makes the model behave as asked is right.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from meshlab.exercises.answers import Unreadable, checker, read_text, strip_append
from meshlab.exercises.model import default_flags, receive, rules_for, trace_lines
from meshlab.exercises.result import CheckResult

if TYPE_CHECKING:
    from meshlab.netfilter.ruleset import Ruleset


@checker("02.1", "a chain name such as 'INPUT'",
         "In the nat table, PREROUTING's first rule is a jump. Which Istio chain handles "
         "arriving traffic?")
def check_first_chain(answer: Any) -> CheckResult:
    """A peer's TCP SYN arrives on eth0 for 10.244.0.5:9080. Which chain does nat PREROUTING
    jump to?"""
    chain = read_text(answer, "a chain name").upper()
    _, trace = receive(rules_for(default_flags()), 9080)
    jumps = [e for e in trace.hits if e.chain == "PREROUTING" and e.table == "nat"
             and e.verdict.startswith("jump ")]
    model = trace_lines(trace)
    if not jumps:
        return CheckResult("02.1", "incorrect", answer,
                           "In the model nat PREROUTING jumps nowhere for this packet.", "",
                           model)
    target = jumps[0].verdict.split()[1]
    if chain == target:
        onward = [e.verdict.split()[1] for e in trace.hits
                  if e.chain == target and e.verdict.startswith("jump ")]
        then = f"; from there it jumps on to {onward[0]}" if onward else ""
        return CheckResult("02.1", "correct", answer,
                           f"nat PREROUTING rule {jumps[0].rule} ({jumps[0].text}) jumps to "
                           f"{target}{then}.", model=model)
    return CheckResult("02.1", "incorrect", answer,
                       f"The model's packet jumps from nat PREROUTING to {target}, not {chain}.",
                       "Chains whose names start with ISTIO_IN... handle inbound traffic.",
                       model)


def _insert_rule(ruleset: Ruleset, table: str, chain: str, position: int,
                 rule_text: str) -> Ruleset:
    """A copy of ``ruleset`` with ``rule_text`` inserted as rule ``position`` of ``chain``."""
    from dataclasses import replace
    from types import MappingProxyType

    from meshlab.netfilter.parse import parse_rule

    rule = parse_rule(rule_text)
    old = ruleset.tables[table]
    target = old.chains[chain]
    rules = list(target.rules)
    rules.insert(position - 1, rule)
    chains = dict(old.chains)
    chains[chain] = target._replace(rules=tuple(rules))
    tables = dict(ruleset.tables)
    tables[table] = replace(old, chains=MappingProxyType(chains))
    return type(ruleset)(ruleset.family, tables)


@checker("02.2", "a rule in restore form without '-A CHAIN', e.g. '-p tcp -j ACCEPT'",
         "ISTIO_INBOUND already has rules that leave ports alone (15008, 15090, ...). Copy "
         "their shape for 8081.")
def check_bypass_rule(answer: Any) -> CheckResult:
    """Write one rule which, inserted at the top of nat ISTIO_INBOUND, lets a peer reach port
    8081 without Envoy, and changes nothing for port 9080."""
    text = strip_append(read_text(answer, "a rule"))
    ruleset = _insert_rule(rules_for(default_flags()), "nat", "ISTIO_INBOUND", 1, text)
    _, t8081 = receive(ruleset, 8081)
    _, t9080 = receive(ruleset, 9080)
    model = (f"-I ISTIO_INBOUND 1 {text}", "peer -> :8081", *trace_lines(t8081),
             "peer -> :9080", *trace_lines(t9080))
    if t8081.verdict == "DROP" or t9080.verdict == "DROP":
        return CheckResult("02.2", "incorrect", answer,
                           "Your rule drops the connection: the peer gets no answer at all.",
                           "RETURN leaves the Istio chain and lets nat PREROUTING carry on.",
                           model)
    if t8081.nat is None and t9080.nat is not None:
        return CheckResult("02.2", "correct", answer,
                           "The connection to 8081 leaves ISTIO_INBOUND before the jump to "
                           "ISTIO_IN_REDIRECT and keeps its destination; 9080 is still "
                           f"redirected to {t9080.delivered[1]}. This is exactly the rule "
                           "'-d ...,8081' would generate.", model=model)
    if t8081.nat is not None:
        return CheckResult("02.2", "incorrect", answer,
                           f"Port 8081 is still redirected to {t8081.delivered[1]}: your rule "
                           "did not match the packet (or did not stop the chain).",
                           "Match -p tcp and the destination port, and use -j RETURN.", model)
    return CheckResult("02.2", "incorrect", answer,
                       "8081 bypasses Envoy, but so does 9080: the rule matches too much.",
                       "Narrow it to destination port 8081 (--dport).", model)


@checker("02.3", "an 'IP:PORT' string, e.g. '10.0.0.1:80'",
         "conntrack undoes the NAT on every reply: the peer must see the address it called.")
def check_reply_source(answer: Any) -> CheckResult:
    """The peer (10.244.0.9) connected to 10.244.0.5:9080 and nat redirected it to 15006. The
    proxy answers. What source IP:PORT does the reply carry when it reaches the peer?"""
    from meshlab.netfilter.packet import parse_endpoint

    try:
        ip, port = parse_endpoint(read_text(answer, "an IP:PORT"))
    except ValueError as bad:
        raise Unreadable(str(bad)) from None
    netns, trace = receive(rules_for(default_flags()), 9080)
    reply = netns.reply(trace)
    model = (*trace_lines(trace), f"conntrack: {trace.connection}",
             f"reply as the peer receives it: {reply}")
    if (ip, port) == (reply.src, reply.sport):
        return CheckResult("02.3", "correct", answer,
                           f"The reply leaves the proxy's socket from :{trace.delivered[1]}, "
                           f"but conntrack rewrites it back to {reply.src}:{reply.sport}. No "
                           "nat rule sees the reply: nat sees only a connection's first "
                           "packet.", model=model)
    return CheckResult("02.3", "incorrect", answer,
                       f"The model's reply arrives from {reply.src}:{reply.sport}.",
                       "If the peer saw another address than the one it called, its TCP stack "
                       "would drop the reply.", model)
