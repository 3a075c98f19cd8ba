"""Lesson 05 (``05-the-loop.ipynb``): which rules, removed, make a request loop through
the proxy, and how long the loop lasts -- judged by walking the scenario without those rules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from meshlab.exercises.answers import (
    Unreadable,
    checker,
    read_string,
    read_strings,
    read_whole,
    strip_append,
)
from meshlab.exercises.model import run_walk, walk_lines
from meshlab.exercises.result import Verdict, right, wrong
from meshlab.i18n import tr

if TYPE_CHECKING:
    from meshlab.walk import Walk


def _loop_text(walk: Walk) -> str:
    return walk.loop.text if walk.loop is not None else ""


@checker("05.1", "a list of rule texts (restore form, without '-A CHAIN')", hints=(
    "Which rules of ISTIO_OUTPUT let the proxy's own connections out? Look for the ones that "
    "match on the socket's owner and RETURN.",
    "A socket has two owners the kernel can match, a user and a group, and Envoy runs as "
    "both. What happens if only one of the two rules is gone?",
    "Remove rules until Envoy's upstream connection matches the chain's last rule; keep "
    "every rule that is not needed for that.",
))
def check_loop_rules(answer: Any) -> Verdict:
    """Remove as few rules as you can so that the outbound request loops."""
    texts = tuple(strip_append(t) for t in read_strings(answer, "a rule text"))
    walk = run_walk("outbound", without_rules=texts)
    model = walk_lines(walk)
    if walk.outcome == "loop":
        spare = [t for t in texts
                 if run_walk("outbound", without_rules=tuple(x for x in texts if x != t)
                             ).outcome == "loop"]
        note = ""
        if spare:
            keep = "; ".join(f"'{t}'" for t in spare)
            note = tr("Right, but not minimal: the request loops even if you keep {rules}. "
                      "Removing fewer rules shows more clearly which ones stop the loop.",
                      rules=keep)
        return right(tr("Without {count} rule(s) Envoy's own connection is captured again and "
                        "comes back to itself: {loop}.", count=len(texts),
                        loop=_loop_text(walk)), evidence=model, note=note)
    exempt = [e for e in walk.events if e.kind == "rule" and e.matched and e.connection >= 1
              and e.chain == "ISTIO_OUTPUT" and e.decision == "RETURN"]
    why = (tr("another rule of ISTIO_OUTPUT still RETURNs Envoy's upstream connection")
           if exempt else tr("the walk ends '{outcome}'", outcome=walk.outcome))
    uid_rule, gid_rule = (f"'{t}'" for t in _LOOP_RULES)
    solution = tr("remove both owner rules, {uid_rule} and {gid_rule}: each one alone lets "
                  "Envoy's connection out.", uid_rule=uid_rule, gid_rule=gid_rule)
    return wrong(tr("No loop without the {count} rule(s) you removed: {why}.",
                    count=len(texts), why=why), solution=solution, evidence=model)


@checker("05.3", "a rule text (restore form, without '-A CHAIN')", hints=(
    "In the inbound walk, Envoy opens a connection to the app. Which ISTIO_OUTPUT rule lets "
    "that connection through (step 7)?",
    "That connection goes out by lo to the pod's own IP, owned by UID 1337; several rules "
    "look at those. Which one matches it first?",
    "Envoy binds this connection to a special source address; one rule matches exactly "
    "that address.",
))
def check_inbound_loop_rule(answer: Any) -> Verdict:
    """Which one rule, removed, makes the *inbound* request loop?"""
    text = strip_append(read_string(answer, "a rule"))
    walk = run_walk("inbound", without_rules=(text,))
    model = walk_lines(walk)
    if walk.outcome == "loop":
        return right(tr("Without it Envoy's connection to the app (UID 1337, out by lo, to "
                        "the pod's own IP) matches the ISTIO_IN_REDIRECT rule and comes back "
                        "to 15006: {loop}. 127.0.0.6 exists to avoid exactly this.",
                        loop=_loop_text(walk)), evidence=model)
    exempt = [e for e in walk.events if e.kind == "rule" and e.matched and e.connection >= 1
              and e.chain == "ISTIO_OUTPUT"]
    why = (tr("another rule of ISTIO_OUTPUT still decides Envoy's connection to the app "
              "before it can be captured again") if exempt else
           tr("the rule you removed is not on Envoy's path to the app"))
    deciding = [e for e in run_walk("inbound").events if e.kind == "rule" and e.matched
                and e.connection >= 1 and e.chain == "ISTIO_OUTPUT"]
    solution = (tr("'{text}' (ISTIO_OUTPUT rule {rule}): it RETURNs Envoy's connection to "
                   "the app by its source address.", text=deciding[0].text,
                   rule=deciding[0].rule) if deciding else
                tr("the model's inbound walk has no ISTIO_OUTPUT rule for Envoy's connection"))
    return wrong(tr("Without '{rule}' the inbound walk ends '{outcome}', not in a loop: {why}.",
                    rule=text, outcome=walk.outcome, why=why), solution=solution,
                 evidence=model)


@checker("05.2", "a whole number of hops", hints=(
    "Each turn of the loop opens one more connection from the pod to the same destination, "
    "and each needs its own local (ephemeral) source port.",
    "Linux picks those ports from net.ipv4.ip_local_port_range, 32768-60999 by default. How "
    "many ports is that?",
    "Count both ends of the range.",
))
def check_loop_port_exhaustion(answer: Any) -> Verdict:
    """After how many turns does the outbound loop run out of ephemeral ports?"""
    hops = read_whole(answer)
    walk = run_walk("outbound", without_rules=_LOOP_RULES)
    if walk.loop is None:
        raise Unreadable("the model found no loop to measure (the library changed?)")
    limit = walk.loop.hops_until_ports_run_out
    lo, hi = walk.loop.port_range
    model = (f"ip_local_port_range {lo}-{hi}: {walk.loop.ephemeral_port_count} ports",
             f"ports run out after {limit} hops; file descriptors (nofile "
             f"{walk.loop.nofile}) after {walk.loop.hops_until_fds_run_out}",
             f"what stops a real proxy: {walk.loop.gives_out}")
    if abs(hops - limit) <= max(1, limit // 100):
        return right(tr("About {limit} turns: then connect() fails with EADDRNOTAVAIL. Long "
                        "before that, the loop has eaten the pod's memory and CPU.",
                        limit=limit), evidence=model)
    solution = tr("{limit}: the ports {lo} to {hi}, both included.", limit=limit, lo=lo, hi=hi)
    if hops in (65535, 65536, 2**16 - 1024):
        why = tr("{hops} would mean every port number is a source port; connect() only "
                 "picks from ip_local_port_range.", hops=hops)
    elif hops > limit:
        why = tr("{hops} turns would need more ephemeral ports towards one destination than "
                 "the default range holds.", hops=hops)
    else:
        why = tr("after {hops} turns there are still free ports in the default range.",
                 hops=hops)
    return wrong(tr("Not {answer}: {why}", answer=hops, why=why), solution=solution,
                 evidence=model)


#: The two owner rules whose removal makes the outbound request loop (the checker's solution
#: space is bigger; this is only what 05.3 removes to get a loop to measure).
_LOOP_RULES = ("-m owner --uid-owner 1337 -j RETURN", "-m owner --gid-owner 1337 -j RETURN")
