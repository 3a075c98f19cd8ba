"""Lesson 05 (``05-the-loop.ipynb``): which rules, removed, make a request loop through
the proxy, and how long the loop lasts -- judged by walking the scenario without those rules.
"""

from __future__ import annotations

from typing import Any

from meshlab.exercises.answers import checker, read_text, read_texts, read_whole, strip_append
from meshlab.exercises.model import run_walk, walk_lines
from meshlab.exercises.result import CheckResult


@checker("05.1", "a list of rule texts (restore form, without '-A CHAIN')",
         "Envoy runs as UID 1337 *and* GID 1337, and ISTIO_OUTPUT checks both.")
def check_loop_rules(answer: Any) -> CheckResult:
    """Remove as few rules as you can so that the outbound request loops."""
    texts = tuple(strip_append(t) for t in read_texts(answer, "a rule text"))
    walk = run_walk("outbound", without_rules=texts)
    model = walk_lines(walk)
    if walk.outcome == "loop":
        loop = walk.loop
        cycle = loop.text if loop is not None else ""
        return CheckResult("05.1", "correct", answer,
                           f"Without {len(texts)} rule(s) Envoy's own connection is captured "
                           f"again and comes back to itself: {cycle}.", model=model)
    exempt = [e for e in walk.events if e.kind == "rule" and e.matched and e.connection >= 1
              and e.chain == "ISTIO_OUTPUT" and e.decision == "RETURN"]
    why = (f"ISTIO_OUTPUT rule {exempt[0].rule} ({exempt[0].text}) still lets Envoy's "
           "connection through" if exempt else f"the walk ends '{walk.outcome}'")
    return CheckResult("05.1", "incorrect", answer, f"No loop: {why}.",
                       "Remove every rule that RETURNs the proxy's traffic by its owner.", model)


@checker("05.3", "a rule text (restore form, without '-A CHAIN')",
         "Step 7 is the rule that recognises Envoy's inbound upstream connection by its "
         "source address.")
def check_inbound_loop_rule(answer: Any) -> CheckResult:
    """Which one rule, removed, makes the *inbound* request loop?"""
    text = strip_append(read_text(answer, "a rule"))
    walk = run_walk("inbound", without_rules=(text,))
    model = walk_lines(walk)
    if walk.outcome == "loop":
        cycle = walk.loop.text if walk.loop is not None else ""
        return CheckResult("05.3", "correct", answer,
                           "Without it Envoy's connection to the app (UID 1337, out by lo, to "
                           "the pod's own IP) matches the ISTIO_IN_REDIRECT rule and comes back "
                           f"to 15006: {cycle}. 127.0.0.6 exists to avoid exactly this.",
                           model=model)
    return CheckResult("05.3", "incorrect", answer,
                       f"Without that rule the inbound walk ends '{walk.outcome}', not in a "
                       "loop.", "Look for the rule that matches -s 127.0.0.6/32.", model)


@checker("05.2", "a whole number of hops",
         "Each turn of the loop uses one more local (ephemeral) port towards the same "
         "destination; Linux offers net.ipv4.ip_local_port_range = 32768-60999.")
def check_loop_port_exhaustion(answer: Any) -> CheckResult:
    """After how many turns does the outbound loop run out of ephemeral ports?"""
    hops = read_whole(answer)
    walk = run_walk("outbound", without_rules=_LOOP_RULES)
    if walk.loop is None:
        return CheckResult("05.2", "incorrect", answer,
                           "The model found no loop to measure (the library changed?).", "",
                           walk_lines(walk))
    limit = walk.loop.hops_until_ports_run_out
    lo, hi = walk.loop.port_range
    model = (f"ip_local_port_range {lo}-{hi}: {walk.loop.ephemeral_port_count} ports",
             f"ports run out after {limit} hops; file descriptors (nofile "
             f"{walk.loop.nofile}) after {walk.loop.hops_until_fds_run_out}",
             f"a real proxy gives out: {walk.loop.gives_out}")
    if abs(hops - limit) <= max(1, limit // 100):
        return CheckResult("05.2", "correct", answer,
                           f"About {limit} turns: then connect() fails with EADDRNOTAVAIL. "
                           "Long before that, the loop has eaten the pod's memory and CPU.",
                           model=model)
    return CheckResult("05.2", "incorrect", answer,
                       f"The model says {limit} turns, not {hops}.",
                       "Count the ports in the range (both ends included).", model)


#: The two owner rules whose removal makes the outbound request loop (the checker's solution
#: space is bigger; this is only what 05.3 removes to get a loop to measure).
_LOOP_RULES = ("-m owner --uid-owner 1337 -j RETURN", "-m owner --gid-owner 1337 -j RETURN")
