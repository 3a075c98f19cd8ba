"""Lesson 06 (``06-edge-cases.ipynb``): excluding a CIDR from capture (``-x``), an app
running as the proxy's UID 1337, and debugging a pod from its ``iptables-save`` dump
(:func:`debug_dump`).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import Any

from meshlab.exercises.answers import checker, read_bool, read_port, read_text
from meshlab.exercises.model import (
    PEER_IP,
    REVIEWS_VIP,
    connect,
    default_flags,
    rules_for,
    run_walk,
    trace_lines,
    walk_lines,
)
from meshlab.exercises.result import CheckResult


def _with_flag(flags: Sequence[str], flag: str, value: str) -> tuple[str, ...]:
    """``flags`` with ``flag`` set to ``value`` (appended when it is not there yet)."""
    out = list(flags)
    if flag in out:
        out[out.index(flag) + 1] = value
    else:
        out += [flag, value]
    return tuple(out)


@checker("06.1", "a CIDR string for -x, e.g. '10.0.0.0/8'",
         "legacy-db is 192.168.10.20; reviews (10.244.0.9) must still go through Envoy.")
def check_exclude_cidr(answer: Any) -> CheckResult:
    """Choose ``-x`` (excludeOutboundIPRanges) so that the app reaches legacy-db without Envoy
    while its calls to reviews are still proxied."""
    value = read_text(answer, "a CIDR list")
    flags = _with_flag(default_flags(), "-x", value)
    db = run_walk("outbound-external", flags=flags)
    peer = run_walk("outbound", flags=flags)
    model = ("istio-iptables " + shlex.join(flags),
             f"app -> legacy-db:5432: outcome {db.outcome}, proxied {db.proxied}",
             f"app -> reviews:9080:   outcome {peer.outcome}, proxied {peer.proxied}")
    if not db.proxied and peer.proxied and db.outcome == "delivered":
        return CheckResult("06.1", "correct", answer,
                           f"-x {value} becomes '-d {value} -j RETURN' in ISTIO_OUTPUT, before "
                           "the catch-all jump to ISTIO_REDIRECT: legacy-db is reached "
                           "directly, reviews still through 15001.", model=model)
    if db.proxied:
        return CheckResult("06.1", "incorrect", answer,
                           "legacy-db is still reached through Envoy: the range does not "
                           "contain 192.168.10.20.", "A /16 or /24 around 192.168.10.20.",
                           model)
    return CheckResult("06.1", "incorrect", answer,
                       "legacy-db bypasses Envoy, but reviews does too: the range is too wide.",
                       "Keep 10.244.0.0/16 (the pods) out of it.", model)


@checker("06.2", "True (proxied) or False (not proxied)",
         "The kernel knows a socket's owner, not which container or binary opened it.")
def check_uid_1337_proxied(answer: Any) -> CheckResult:
    """An application process running as UID 1337 calls reviews. Does its connection go
    through Envoy?"""
    predicted = read_bool(answer)
    walk = run_walk("app-as-uid-1337")
    model = walk_lines(walk)
    if predicted == walk.proxied:
        return CheckResult("06.2", "correct", answer,
                           "Not proxied: '-m owner --uid-owner 1337 -j RETURN' cannot tell the "
                           "app from Envoy, so the app bypasses the sidecar (no mTLS, no "
                           "policy). Istio's analyzer warns about it (IST0144), and the docs "
                           "say apps must not run as UID 1337." if not walk.proxied else
                           "The model proxies it.", model=model)
    return CheckResult("06.2", "incorrect", answer,
                       f"The model says proxied = {walk.proxied}.",
                       "Which ISTIO_OUTPUT rule matches a connection owned by UID 1337?", model)


#: The dump the "debug your own pod" exercise starts from (06.3): a pod whose istio-init ran
#: with -i 10.96.0.0/12 (only Service VIPs are captured) and -o 3306.
DEBUG_FLAGS: tuple[str, ...] = ("-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT",
                                "-i", "10.96.0.0/12", "-x", "", "-b", "*",
                                "-d", "15090,15021,15020", "-o", "3306")


def debug_dump() -> str:
    """The ``iptables-save`` text of exercise 06.3, as a real pod would print it."""
    return rules_for(DEBUG_FLAGS).render_save()


@checker("06.3", "a port number",
         "Find the rules of ISTIO_OUTPUT in the dump: this pod only captures some "
         "destinations (-i), and excludes one port (-o).")
def check_debug_dump(answer: Any) -> CheckResult:
    """With the dump of :func:`debug_dump`, the app (UID 1000) connects to 10.96.0.20:9080
    (a Service VIP). To which port of which address is the connection delivered?"""
    from meshlab.netfilter.parse import parse_ruleset

    port = read_port(answer)
    ruleset = parse_ruleset(debug_dump())
    trace = connect(ruleset, REVIEWS_VIP, 9080)
    other = connect(ruleset, PEER_IP, 9080)
    model = ("app -> 10.96.0.20:9080", *trace_lines(trace), "app -> 10.244.0.9:9080",
             *trace_lines(other))
    got = trace.delivered[1]
    if port == got:
        return CheckResult("06.3", "correct", answer,
                           f"10.96.0.20 is inside -i 10.96.0.0/12, so ISTIO_OUTPUT sends it to "
                           f"ISTIO_REDIRECT: delivered to 127.0.0.1:{got}. A pod IP such as "
                           f"10.244.0.9 would have kept port {other.delivered[1]} and left by "
                           f"{other.out_iface}.", model=model)
    return CheckResult("06.3", "incorrect", answer,
                       f"The model delivers it to {trace.delivered[0]}:{got}.",
                       "Trace the rules of ISTIO_OUTPUT top to bottom with dst 10.96.0.20, "
                       "uid 1000, oif eth0.", model)
