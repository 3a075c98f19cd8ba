"""Lesson 08 (``08-ambient.ipynb``): what the app behind ztunnel sees, which condition keeps
ztunnel from capturing itself, and which rule the reply path cannot do without -- judged on
the ambient walks (``ambient-inbound``, ``ambient-outbound``) with the learner's answer applied.
"""

from __future__ import annotations

from ipaddress import ip_address
from typing import Any

from meshlab.exercises.answers import Unreadable, checker, read_text
from meshlab.exercises.model import walk_lines
from meshlab.exercises.result import CheckResult
from meshlab.scenarios import run_scenario


def _lines(walk: Any) -> tuple[str, ...]:
    """The walk's hits in the subject pod only (the peer's own path is not the question)."""
    from dataclasses import replace

    mine = tuple(e for e in walk.events if e.pod == walk.subject)
    return walk_lines(replace(walk, events=mine))


@checker("08.1", "an IP address as a string, e.g. '10.0.0.1'",
         "ztunnel binds its socket to the app to an address that is not its own "
         "(IP_FREEBIND + IP_TRANSPARENT).")
def check_ambient_app_sees_source(answer: Any) -> CheckResult:
    """In ``ambient-inbound`` (reviews-v2 calls details:9080 over HBONE), what source address
    does details' app see when it accepts the connection?"""
    try:
        ip = ip_address(read_text(answer, "an IP address"))
    except ValueError as bad:
        raise Unreadable(str(bad)) from None
    walk = run_scenario("ambient-inbound")
    seen = walk.delivered_to.sees_source if walk.delivered_to else None
    if seen is not None and ip == ip_address(seen):
        return CheckResult("08.1", "correct", answer,
                           f"The app sees {seen}, the peer's own address: ztunnel connects to "
                           "the app from the client's address, and the connmark 0x111 with "
                           "table 100 brings the app's answer back to ztunnel.",
                           model=_lines(walk))
    hint = ("127.0.0.6 is what a sidecar pod's app sees (Envoy binds there); ztunnel does not."
            if str(ip) == "127.0.0.6" else
            "Think of who started the call: the tunnel carries the client's address along.")
    return CheckResult("08.1", "incorrect", answer, f"The model's app sees {seen}, not {ip}.",
                       hint, _lines(walk))


@checker("08.2", "a condition as the rules write it, e.g. '-m owner --uid-owner 1337'",
         "ztunnel is no process of the pod, so no UID rule can see it. What does every socket "
         "it makes in the pod carry?")
def check_ztunnel_exemption(answer: Any) -> CheckResult:
    """Which condition, present in the capturing rules, keeps ztunnel's own outbound
    connection from being redirected to ztunnel again? (Write it as the rules write it.)"""
    condition = read_text(answer, "a condition")
    from meshlab.world import World

    rules = [r.rule.text.split() for r in World.default().pod("details").ruleset.rules()]
    words = condition.split()
    if not any(words == have[i:i + len(words)] for have in rules
               for i in range(len(have) - len(words) + 1)):
        return CheckResult("08.2", "incorrect", answer,
                           f"No rule of an ambient pod contains `{condition}`: istio-cni writes "
                           "no UID or GID rules, since ztunnel is not a process of the pod.",
                           "Look for a `-m mark !` condition in the REDIRECT rules.")
    walk = run_scenario("ambient-outbound", without_matches=[condition])
    if walk.outcome == "loop" and walk.loop is not None:
        return CheckResult("08.2", "correct", answer,
                           f"Without `{condition}` ztunnel's own connection is captured again: "
                           f"{walk.loop.text}. The socket mark 0x539 is how the kernel tells "
                           "ztunnel's packets from the app's.", model=_lines(walk))
    return CheckResult("08.2", "incorrect", answer,
                       f"Without `{condition}` the walk still ends {walk.outcome}: that "
                       "condition does not exempt ztunnel.",
                       "Look for a `-m mark !` condition in the REDIRECT rules.", _lines(walk))


@checker("08.3", "a rule in restore form without '-A CHAIN', or an 'ip rule ...' command",
         "The app answers the client's own address. What brings that answer back to ztunnel "
         "instead of out by eth0?")
def check_reply_path_rule(answer: Any) -> CheckResult:
    """Name one rule (or the ``ip`` command) without which details' answer to an inbound
    connection leaves by eth0 and the connection never completes."""
    text = read_text(answer, "a rule or an ip command")
    walk = run_scenario("ambient-inbound", without_rules=[text])
    lost = next((e for e in walk.events if e.kind == "timeout" and "eth0" in e.decision), None)
    if walk.outcome == "timeout" and lost is not None:
        return CheckResult("08.3", "correct", answer,
                           f"Without it: {lost.decision}.", model=_lines(walk))
    return CheckResult("08.3", "incorrect", answer,
                       f"Without `{text}` the inbound walk still ends {walk.outcome}.",
                       "The mark travels: mangle sets the connmark, mangle restores it onto "
                       "the answer, and an ip rule routes by it.", _lines(walk))
