"""Lesson 03 (``03-inbound.ipynb``): where a peer's connection is redirected, what source
address the app sees, and which ports bypass Envoy -- judged on the ``inbound`` walk and on
traces through the default rules.
"""

from __future__ import annotations

from ipaddress import ip_address
from typing import Any

from meshlab.exercises.answers import Unreadable, checker, read_port, read_string
from meshlab.exercises.model import (
    PEER_IP,
    POD_IP,
    default_flags,
    listener_ports,
    receive,
    rules_for,
    run_walk,
    trace_lines,
    walk_lines,
)
from meshlab.exercises.result import Verdict, right, wrong
from meshlab.i18n import tr


@checker("03.1", "a port number", hints=(
    "Follow the packet through nat PREROUTING: which chain does it end in, and what does "
    "that chain's rule do to the destination?",
    "istio-iptables has one flag for the port inbound connections are redirected to, and "
    "another for outbound ones. Which of the two applies to a packet arriving on eth0?",
    "Read the REDIRECT rule of ISTIO_IN_REDIRECT: its --to-ports is the answer.",
))
def check_inbound_capture_port(answer: Any) -> Verdict:
    """Which local port does the peer's connection to 10.244.0.5:9080 reach first?"""
    from meshlab.istio.flags import CaptureConfig

    port = read_port(answer)
    walk = run_walk("inbound")
    got = listener_ports(walk)
    model = walk_lines(walk)
    first = got[0] if got else None
    solution = tr("{port}: ISTIO_IN_REDIRECT's REDIRECT --to-ports {port} (-z) sends it to "
                  "Envoy's virtualInbound listener.", port=first)
    if got and port == got[0]:
        return right(tr("Steps 1-3: PREROUTING -> ISTIO_INBOUND -> ISTIO_IN_REDIRECT, REDIRECT "
                        "to {port}: Envoy's virtualInbound listener accepts it.", port=got[0]),
                     evidence=model)
    flags = CaptureConfig.from_args(list(default_flags()))
    if port == flags.proxy_port:
        why = tr("with {port} the connection would be treated as outbound: {port} is where "
                 "ISTIO_REDIRECT sends connections the pod opens itself (-p), from nat OUTPUT. "
                 "A peer's packet arrives on eth0 and passes nat PREROUTING, which never "
                 "jumps to ISTIO_REDIRECT.", port=port)
    elif port == 9080:
        why = tr("9080 is where the peer aimed, and where the app listens; but nat PREROUTING "
                 "rewrites the destination before any socket sees the packet, so the app is "
                 "not the first to get it.")
    elif port == flags.inbound_tunnel_port:
        why = tr("{port} is the HBONE tunnel port; ISTIO_INBOUND leaves connections to it "
                 "alone, and this one is addressed to 9080.", port=port)
    else:
        why = tr("no rule of the pod redirects this connection to {port}.", port=port)
    return wrong(tr("Not {answer}: {why}", answer=port, why=why), solution=solution,
                 evidence=model)


@checker("03.2", "an IP address as a string, e.g. '10.244.0.9'", hints=(
    "The app's connection does not come from the peer: Envoy ends the peer's connection and "
    "opens a new one to the app. From which address?",
    "Envoy binds that new socket to a special address first, so that ISTIO_OUTPUT can tell "
    "it from the app's own connections.",
    "It is in 127.0.0.0/8 and it is not 127.0.0.1; look at the first rule of ISTIO_OUTPUT.",
))
def check_app_sees_source(answer: Any) -> Verdict:
    """In the inbound walk, what source address does the app see (``getpeername()``)?"""
    try:
        ip = ip_address(read_string(answer, "an IP address"))
    except ValueError as bad:
        raise Unreadable(str(bad)) from None
    walk = run_walk("inbound")
    seen = walk.delivered_to.sees_source if walk.delivered_to else None
    model = walk_lines(walk)
    solution = tr("{ip}: cluster inbound|9080|| binds its upstream socket there, and "
                  "ISTIO_OUTPUT's '{rule}' lets it through (step 7).", ip=seen,
                  rule=f"-s {seen}/32 -o lo -j RETURN")
    if seen is not None and ip == ip_address(seen):
        return right(tr("The app sees {ip}: cluster inbound|9080|| binds its upstream socket "
                        "there, and ISTIO_OUTPUT rule 1 ({rule}) lets that connection through "
                        "instead of capturing it again (step 7).", ip=seen,
                        rule=f"-s {seen}/32 -o lo -j RETURN"), evidence=model)
    if ip == PEER_IP:
        why = tr("that would be true if the peer's connection reached the app itself; but it "
                 "ends at Envoy, and the app's connection is a new one that Envoy opens.")
    elif str(ip) == "127.0.0.1":
        why = tr("127.0.0.1 is loopback's usual address, and the model's Envoy does not use it "
                 "for this connection: it binds its socket to a special address before "
                 "connecting.")
    elif ip == POD_IP:
        why = tr("the pod's own address is where Envoy connects *to*; the source of its socket "
                 "is another one.")
    else:
        why = tr("no socket in the model's walk has {ip} as its address.", ip=ip)
    return wrong(tr("Not {answer}: {why}", answer=ip, why=why), solution=solution,
                 evidence=model)


@checker("03.3", "a port number", hints=(
    "Read the RETURN rules at the top of ISTIO_INBOUND: each one names a port.",
    "Envoy serves some ports itself: health checks for the kubelet, metrics for Prometheus. "
    "They must be reachable in plain text, without mTLS.",
    "Look at istio-init's -d flag (and -e): the ports there are left alone.",
))
def check_bypass_port(answer: Any) -> Verdict:
    """Name one port of the pod that a peer reaches *without* going through Envoy."""
    port = read_port(answer)
    ruleset = rules_for(default_flags())
    _, trace = receive(ruleset, port)
    model = trace_lines(trace)
    if trace.nat is None:
        returned = [e for e in trace.hits if e.chain == "ISTIO_INBOUND" and e.verdict == "RETURN"]
        why = (tr("ISTIO_INBOUND rule {rule} ({text}) returns it", rule=returned[0].rule,
                  text=returned[0].text) if returned else tr("no rule redirects it"))
        return right(tr("A connection to {port} is not redirected: {why}, so it reaches "
                        "whatever listens on {port} itself.", port=port, why=why),
                     evidence=model)
    left = [r.text for r in ruleset.tables["nat"].chains["ISTIO_INBOUND"].rules
            if r.text.endswith("-j RETURN")]
    return wrong(tr("A connection to {port} is redirected to {envoy} (Envoy), like every port "
                    "the rules do not leave alone.", port=port, envoy=trace.delivered[1]),
                 solution=tr("any port ISTIO_INBOUND RETURNs: {rules}", rules="; ".join(left)),
                 evidence=model)
