"""Lesson 02 (``02-iptables-in-a-pod.ipynb``): the nat chains a packet walks, a rule that
lets one port bypass Envoy, and the address conntrack puts on the reply.

The rule exercise inserts the learner's rule into the generated ruleset and traces a packet
through it: any rule that makes the model behave as asked is right.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from meshlab.exercises.answers import Unreadable, checker, read_string, strip_append
from meshlab.exercises.model import PEER_IP, default_flags, receive, rules_for, trace_lines
from meshlab.exercises.result import Verdict, right, wrong
from meshlab.i18n import tr

if TYPE_CHECKING:
    from meshlab.netfilter.ruleset import Ruleset


#: The chains the kernel itself calls, one per hook; no rule jumps to them.
_BUILTIN = ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING")


@checker("02.1", "a chain name such as 'INPUT'", hints=(
    "In the nat table, PREROUTING's rule is a jump (-j). Find it in the iptables-save above.",
    "Istio names its chains after the direction of the traffic they handle. Which direction "
    "is a peer's packet arriving on eth0?",
    "The chain you want is the first Istio chain the packet meets; it decides per port "
    "whether to jump on to the chain that redirects.",
))
def check_first_chain(answer: Any) -> Verdict:
    """A peer's TCP SYN arrives on eth0 for 10.244.0.5:9080. Which chain does nat PREROUTING
    jump to?"""
    chain = read_string(answer, "a chain name")
    ruleset = rules_for(default_flags())
    _, trace = receive(ruleset, 9080)
    jumps = [e for e in trace.hits if e.chain == "PREROUTING" and e.table == "nat"
             and e.verdict.startswith("jump ")]
    model = trace_lines(trace)
    if not jumps:
        raise Unreadable("in this model nat PREROUTING jumps nowhere (the library changed?)")
    target = jumps[0].verdict.split()[1]
    solution = tr("{chain}: nat PREROUTING rule {rule} is '{text}'.", chain=target,
                  rule=jumps[0].rule, text=jumps[0].text)
    if chain == target:
        onward = [e.verdict.split()[1] for e in trace.hits
                  if e.chain == target and e.verdict.startswith("jump ")]
        then = tr("; from there it jumps on to {chain}", chain=onward[0]) if onward else ""
        return right(tr("nat PREROUTING rule {rule} ({text}) jumps to {chain}{then}.",
                        rule=jumps[0].rule, text=jumps[0].text, chain=target, then=then),
                     evidence=model)
    nat_chains = set(ruleset.tables["nat"].chains) if "nat" in ruleset.tables else set()
    if chain.upper() == target or chain in {c.lower() for c in nat_chains}:
        why = tr("chain names are case-sensitive: iptables knows no chain called {quoted} "
                 "('-j {chain}' would fail with \"Couldn't load target\"). Write the name "
                 "exactly as iptables-save prints it.", quoted=repr(chain), chain=chain)
    elif chain.upper() in _BUILTIN:
        why = tr("{chain} is a built-in chain: the kernel calls it at its own hook, and no "
                 "rule jumps to it. PREROUTING jumps to a chain Istio created.",
                 chain=chain.upper())
    elif chain in {e.chain for e in trace.hits}:
        why = tr("the packet does reach {chain}, but not straight from PREROUTING: another "
                 "Istio chain is in between, and it jumps there.", chain=chain)
    elif chain in nat_chains:
        why = tr("nat has a chain {chain}, but this packet never enters it: it is for "
                 "connections opened inside the pod.", chain=chain)
    else:
        why = tr("this pod's nat table has no chain called {chain}.", chain=chain)
    return wrong(tr("Not {answer}: {why}", answer=chain, why=why), solution=solution,
                 evidence=model)


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


def _istio_bypass_rule(port: int) -> str:
    """The ISTIO_INBOUND rule istio-iptables writes when ``port`` is added to ``-d``."""
    flags = list(default_flags())
    at = flags.index("-d") + 1
    flags[at] = f"{flags[at]},{port}"
    chain = rules_for(tuple(flags)).tables["nat"].chains["ISTIO_INBOUND"]
    return next(r.text for r in chain.rules if f"--dport {port} " in f"{r.text} ")


@checker("02.2", "a rule in restore form without '-A CHAIN', e.g. '-p tcp -j ACCEPT'", hints=(
    "ISTIO_INBOUND already has rules that leave ports alone (look at the ports Envoy "
    "serves itself). Copy their shape for 8081.",
    "Your rule must match only connections to 8081: which match option tests the "
    "destination port, and what must come before it?",
    "Which target leaves a user-defined chain and carries on in the chain that called it, "
    "without deciding the packet's fate?",
))
def check_bypass_rule(answer: Any) -> Verdict:
    """Write one rule which, inserted at the top of nat ISTIO_INBOUND, lets a peer reach port
    8081 without Envoy, and changes nothing for port 9080."""
    from meshlab.netfilter.parse import parse_rule

    text = strip_append(read_string(answer, "a rule"))
    ruleset = _insert_rule(rules_for(default_flags()), "nat", "ISTIO_INBOUND", 1, text)
    _, t8081 = receive(ruleset, 8081)
    _, t9080 = receive(ruleset, 9080)
    model = (f"-I ISTIO_INBOUND 1 {text}", "peer -> :8081", *trace_lines(t8081),
             "peer -> :9080", *trace_lines(t9080))
    istio = _istio_bypass_rule(8081)
    solution = tr("'{rule}': the rule istio-iptables writes for -d ...,8081. Other rules the "
                  "model accepts work too.", rule=istio)
    if t8081.verdict == "DROP" or t9080.verdict == "DROP":
        return wrong(tr("Your rule drops the connection: the peer gets no answer at all, and "
                        "keeps retrying its SYN until it times out."), solution=solution,
                     evidence=model)
    if t8081.nat is None and t9080.nat is not None:
        mine = parse_rule(text)
        target = mine.text.rsplit("-j ", 1)[-1].split()[0]
        if mine.text == istio:
            same = tr("This is exactly the rule istio-iptables writes for '-d ...,8081'.")
        elif target == "ACCEPT":
            same = tr("istio-iptables would write '{rule}' instead: ACCEPT ends the packet's "
                      "walk through the whole nat PREROUTING hook at once, while RETURN only "
                      "leaves ISTIO_INBOUND and lets PREROUTING's later rules (none in this "
                      "pod) still see the packet.", rule=istio)
        else:
            same = tr("istio-iptables would write '{rule}' for '-d ...,8081'.", rule=istio)
        return right(tr("The connection to 8081 leaves the Istio chains before the jump to "
                        "ISTIO_IN_REDIRECT and keeps its destination; 9080 is still redirected "
                        "to {port}. {same}", port=t9080.delivered[1], same=same),
                     evidence=model)
    if t8081.nat is not None:
        mine = next((e for e in t8081.evaluations
                     if e.table == "nat" and e.chain == "ISTIO_INBOUND" and e.rule == 1), None)
        if mine is not None and not mine.matched and mine.why_not:
            why = tr("your rule did not match the packet ({why_not})", why_not=mine.why_not)
        elif mine is not None and mine.matched:
            why = tr("your rule matched, and its verdict ({verdict}) let the chain go on",
                     verdict=mine.verdict)
        else:
            why = tr("your rule did not match the packet")
        return wrong(tr("Port 8081 is still redirected to {port}: {why}.",
                        port=t8081.delivered[1], why=why), solution=solution, evidence=model)
    return wrong(tr("8081 bypasses Envoy, but so does 9080: the rule matches too much."),
                 solution=solution, evidence=model)


@checker("02.3", "an 'IP:PORT' string, e.g. '10.0.0.1:80'", hints=(
    "A TCP client accepts a reply only from the address and port it sent its SYN to.",
    "No nat rule sees the reply. Which part of the kernel remembers the rewrite and undoes "
    "it on every reply packet?",
    "Read the conntrack entry: its 'reply' direction is what the peer receives.",
))
def check_reply_source(answer: Any) -> Verdict:
    """The peer (10.244.0.9) connected to 10.244.0.5:9080 and nat redirected it to 15006. The
    proxy answers. What source IP:PORT does the reply carry when it reaches the peer?"""
    from meshlab.netfilter.packet import parse_endpoint

    try:
        ip, port = parse_endpoint(read_string(answer, "an IP:PORT"))
    except ValueError as bad:
        raise Unreadable(str(bad)) from None
    netns, trace = receive(rules_for(default_flags()), 9080)
    reply = netns.reply(trace)
    model = (*trace_lines(trace), f"conntrack: {trace.connection}",
             f"reply as the peer receives it: {reply}")
    called = f"{reply.src}:{reply.sport}"
    solution = tr("{endpoint}: conntrack rewrites the reply's source back to the address the "
                  "peer called.", endpoint=called)
    if (ip, port) == (reply.src, reply.sport):
        return right(tr("The reply leaves the proxy's socket from :{port}, but conntrack "
                        "rewrites it back to {endpoint}. No nat rule sees the reply: nat sees "
                        "only a connection's first packet.", port=trace.delivered[1],
                        endpoint=called), evidence=model)
    if (ip, port) == (trace.delivered[0], trace.delivered[1]):
        why = tr("that is where the proxy's socket really is, and the reply does leave it from "
                 "there; but it is rewritten before it leaves the pod.")
    elif ip == PEER_IP:
        why = tr("that is the peer's own address: the reply goes *to* it. It must come *from* "
                 "the address the peer sent its SYN to.")
    elif ip.is_loopback:
        why = tr("a loopback address never leaves the host: the peer, on another pod, could "
                 "not receive a packet from it, and it did not call that address.")
    else:
        why = tr("the peer never sent anything to {endpoint}, so its TCP stack would find no "
                 "connection for the reply and answer with a reset.", endpoint=f"{ip}:{port}")
    return wrong(tr("Not {answer}: {why}", answer=f"{ip}:{port}", why=why), solution=solution,
                 evidence=model)
