"""Lesson 03 (``03-inbound.ipynb``): where a peer's connection is redirected, what source
address the app sees, and which ports bypass Envoy -- judged on the ``inbound`` walk and on
traces through the default rules.
"""

from __future__ import annotations

from ipaddress import ip_address
from typing import Any

from meshlab.exercises.answers import Unreadable, checker, read_port, read_text
from meshlab.exercises.model import (
    PEER_IP,
    default_flags,
    listener_ports,
    receive,
    rules_for,
    run_walk,
    trace_lines,
    walk_lines,
)
from meshlab.exercises.result import CheckResult


@checker("03.1", "a port number", "Look for the REDIRECT rule in ISTIO_IN_REDIRECT (-z).")
def check_inbound_capture_port(answer: Any) -> CheckResult:
    """Which local port does the peer's connection to 10.244.0.5:9080 reach first?"""
    port = read_port(answer)
    walk = run_walk("inbound")
    got = listener_ports(walk)
    model = walk_lines(walk)
    if got and port == got[0]:
        return CheckResult("03.1", "correct", answer,
                           f"Steps 1-3: PREROUTING -> ISTIO_INBOUND -> ISTIO_IN_REDIRECT, "
                           f"REDIRECT to {got[0]}: Envoy's virtualInbound listener accepts it.",
                           model=model)
    first = got[0] if got else None
    return CheckResult("03.1", "incorrect", answer,
                       f"In the model the first listener is {first}, not {port}.",
                       "15001 is outbound, 15006 inbound (\"6 is the magic number for "
                       "inbound\").", model)


@checker("03.2", "an IP address as a string, e.g. '10.244.0.9'",
         "Envoy opens a new connection to the app, and binds it to a special loopback "
         "address first.")
def check_app_sees_source(answer: Any) -> CheckResult:
    """In the inbound walk, what source address does the app see (``getpeername()``)?"""
    try:
        ip = ip_address(read_text(answer, "an IP address"))
    except ValueError as bad:
        raise Unreadable(str(bad)) from None
    walk = run_walk("inbound")
    seen = walk.delivered_to.sees_source if walk.delivered_to else None
    model = walk_lines(walk)
    if seen is not None and ip == ip_address(seen):
        return CheckResult("03.2", "correct", answer,
                           f"The app sees {seen}: cluster inbound|9080|| binds its upstream "
                           "socket there, and ISTIO_OUTPUT rule 1 (-s 127.0.0.6/32 -o lo -j "
                           "RETURN) lets that connection through instead of capturing it "
                           "again (step 7).", model=model)
    hint = ("The peer's address is gone: the app's connection comes from Envoy, not from the "
            "peer." if ip == PEER_IP else "It is in 127.0.0.0/8, and it is not 127.0.0.1.")
    return CheckResult("03.2", "incorrect", answer, f"The model's app sees {seen}.", hint, model)


@checker("03.3", "a port number",
         "Read the RETURN rules at the top of ISTIO_INBOUND (-e and -d).")
def check_bypass_port(answer: Any) -> CheckResult:
    """Name one port of the pod that a peer reaches *without* going through Envoy."""
    port = read_port(answer)
    _, trace = receive(rules_for(default_flags()), port)
    model = trace_lines(trace)
    if trace.nat is None:
        returned = [e for e in trace.hits if e.chain == "ISTIO_INBOUND" and e.verdict == "RETURN"]
        why = (f"ISTIO_INBOUND rule {returned[0].rule} ({returned[0].text}) returns it"
               if returned else "no rule redirects it")
        return CheckResult("03.3", "correct", answer,
                           f"A connection to {port} is not redirected: {why}, so it reaches "
                           f"whatever listens on {port} itself.", model=model)
    return CheckResult("03.3", "incorrect", answer,
                       f"A connection to {port} is redirected to {trace.delivered[1]} "
                       "(Envoy), like every port not excluded.",
                       "-d 15090,15021,15020 and the tunnel port -e 15008 are excluded.", model)
