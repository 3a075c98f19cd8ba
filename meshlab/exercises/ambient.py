"""Lesson 08 (``08-ambient.ipynb``): what the app behind ztunnel sees, which condition keeps
ztunnel from capturing itself, and which rule the reply path cannot do without -- judged on
the ambient walks (``ambient-inbound``, ``ambient-outbound``) with the learner's answer applied.
"""

from __future__ import annotations

from dataclasses import replace
from ipaddress import ip_address
from typing import Any

from meshlab.exercises.answers import Unreadable, checker, read_text
from meshlab.exercises.model import walk_lines
from meshlab.exercises.result import Verdict, right, wrong
from meshlab.scenarios import run_scenario
from meshlab.walk import Walk

EXEMPTION = "-m mark ! --mark 0x539/0xfff"


def _lines(walk: Walk) -> tuple[str, ...]:
    """The walk's hits in the subject pod only (the peer's own path is not the question)."""
    return walk_lines(replace(walk, events=tuple(e for e in walk.events
                                                 if e.pod == walk.subject)))


@checker("08.1", "an IP address as a string, e.g. '10.0.0.1'", hints=(
    "ztunnel opens a new connection to the app. Which address does its socket bind first?",
    "IP_FREEBIND and IP_TRANSPARENT let a socket bind an address that is not its own. "
    "Whose address would ztunnel want the app to see?",
    "Read A4 of the walk: the upstream connection is bound to an address before it connects.",
))
def check_ambient_app_sees_source(answer: Any) -> Verdict:
    """In ``ambient-inbound`` (reviews-v2 calls details:9080 over HBONE), what source address
    does details' app see when it accepts the connection?"""
    try:
        ip = ip_address(read_text(answer, "an IP address"))
    except ValueError as bad:
        raise Unreadable(str(bad)) from None
    walk = run_scenario("ambient-inbound")
    seen = walk.delivered_to.sees_source if walk.delivered_to else None
    model = _lines(walk)
    if seen is not None and ip == ip_address(seen):
        return right(f"The app sees {seen}, the caller's own address: ztunnel connects to the "
                     "app from the client's address, and the connmark 0x111 with table 100 "
                     "brings the app's answer back to ztunnel.", evidence=model)
    why = ("127.0.0.6 is where a sidecar pod's Envoy binds its inbound connections; ztunnel "
           "binds no loopback address." if str(ip) == "127.0.0.6" else
           f"the model's app does not see {ip}.")
    return wrong(f"Not {ip}: {why}", solution=f"{seen}: ztunnel binds the client's own IP "
                 "(freebind + transparent) before connecting to the app.", evidence=model)


@checker("08.2", "a condition as the rules write it, e.g. '-p tcp'", hints=(
    "ztunnel is no process of the pod, so no UID rule can see it. What does every socket "
    "it makes in the pod carry?",
    "Look at the conditions of the REDIRECT rules that are written with a `!`.",
))
def check_ztunnel_exemption(answer: Any) -> Verdict:
    """Which condition, present in the capturing rules, keeps ztunnel's own outbound
    connection from being redirected to ztunnel again? (Write it as the rules write it.)"""
    from meshlab.world import World

    condition = read_text(answer, "a condition")
    rules = [r.rule.text.split() for r in World.default().pod("details").ruleset.rules()]
    words = condition.split()
    solution = (f"`{EXEMPTION}`: every socket ztunnel makes in the pod carries SO_MARK 0x539, "
                "and every redirecting rule requires the mark to be absent.")
    if not any(words == have[i:i + len(words)] for have in rules
               for i in range(len(have) - len(words) + 1)):
        return wrong(f"No rule of an ambient pod contains `{condition}`: istio-cni writes no "
                     "UID or GID rules, since ztunnel is not a process of the pod.",
                     solution=solution)
    walk = run_scenario("ambient-outbound", without_matches=[condition])
    if walk.outcome == "loop" and walk.loop is not None:
        return right(f"Without `{condition}` ztunnel's own connection is captured again: "
                     f"{walk.loop.text}. The socket mark 0x539 is how the kernel tells "
                     "ztunnel's packets from the app's.", evidence=_lines(walk))
    return wrong(f"Without `{condition}` the walk still ends {walk.outcome}: that condition "
                 "does not exempt ztunnel.", solution=solution, evidence=_lines(walk))


@checker("08.3", "a rule in restore form without '-A CHAIN', or an 'ip rule ...' command",
         hints=(
    "The app answers the client's own address. What brings that answer back to ztunnel "
    "instead of out by eth0?",
    "The mark travels: one mangle rule sets it on the connection, another copies it onto the "
    "answer, and the policy routing reads it.",
))
def check_reply_path_rule(answer: Any) -> Verdict:
    """Name one rule (or the ``ip`` command) without which details' answer to an inbound
    connection leaves by eth0 and the connection never completes."""
    text = read_text(answer, "a rule or an ip command")
    walk = run_scenario("ambient-inbound", without_rules=[text])
    lost = next((e for e in walk.events if e.kind == "timeout" and "eth0" in e.decision), None)
    if walk.outcome == "timeout" and lost is not None:
        return right(f"Without it: {lost.decision}.", evidence=_lines(walk))
    return wrong(f"Without `{text}` the inbound walk still ends {walk.outcome}.",
                 solution="any of the mangle CONNMARK rules (--set-xmark 0x111/0xfff in "
                 "ISTIO_PRERT, --restore-mark in ISTIO_OUTPUT), `ip rule add fwmark "
                 "0x111/0xfff pref 32764 lookup 100`, or `ip route add local 0.0.0.0/0 dev lo "
                 "table 100`.", evidence=_lines(walk))
