"""Lesson 08 (``08-ambient.ipynb``): an ambient pod, captured by istio-cni's rules and served by
ztunnel -- judged on the ambient walks of the catalog, with rules or conditions taken out.

The pod is ``details`` (10.244.0.12, no sidecar); its mesh peer is ``reviews-v2``
(10.244.0.13, also ambient). Every verdict comes from a walk: the port the app's connection
reaches first, whether ztunnel captures itself once a condition is gone, the source address
the app sees, and whether the app's answer still finds its way back once a rule or the
policy routing is gone.
"""

from __future__ import annotations

from ipaddress import ip_address
from typing import TYPE_CHECKING, Any

from meshlab.exercises.answers import Unreadable, checker, read_port, read_string, strip_append
from meshlab.exercises.model import listener_ports, run_walk, walk_lines
from meshlab.exercises.result import Verdict, right, wrong
from meshlab.i18n import tr

if TYPE_CHECKING:
    from meshlab.walk import Walk

#: The lesson's walks: the app calls its mesh peer; the mesh peer calls the app over HBONE.
OUTBOUND = "ambient-outbound"
INBOUND = "ambient-inbound"


def _first_listener(walk: Walk) -> int | None:
    ports = listener_ports(walk)
    return ports[0] if ports else None


@checker("08.1", "a port number", hints=(
    "The app's connection is made inside the pod. Which nat hook does its first packet pass: "
    "PREROUTING or OUTPUT?",
    "Read nat ISTIO_OUTPUT from the top: which rule is the first to match a TCP connection to "
    "10.244.0.13:9080 from a socket with no mark?",
    "That rule is a REDIRECT; its --to-ports is the answer.",
))
def check_ambient_outbound_port(answer: Any) -> Verdict:
    """Which local port does the app's connection to reviews-v2 (10.244.0.13:9080) reach
    first?"""
    port = read_port(answer)
    walk = run_walk(OUTBOUND)
    first = _first_listener(walk)
    model = walk_lines(walk)
    solution = tr("{port}: the last rule of nat ISTIO_OUTPUT redirects the app's unmarked TCP "
                  "connection to ztunnel's outbound listener on {port}.", port=first)
    if first is not None and port == first:
        return right(tr("nat OUTPUT -> ISTIO_OUTPUT: no exemption matches the app's connection, "
                        "so REDIRECT sends it to ztunnel's socket on {port}, inside the pod. "
                        "ztunnel then reads SO_ORIGINAL_DST and opens the HBONE tunnel.",
                        port=first), evidence=model)
    if port == 15008:
        why = tr("15008 is ztunnel's HBONE port, where a tunnel arrives. ztunnel does open a "
                 "connection to 15008, but on reviews-v2, and only after it has the app's "
                 "connection. No rule of this pod redirects anything to 15008.")
    elif port == 15006:
        why = tr("15006 is where nat PREROUTING sends plain TCP that arrives from outside the "
                 "pod. The app's connection is made inside the pod, so it passes nat OUTPUT, "
                 "never nat PREROUTING, before it leaves.")
    elif port == 9080:
        why = tr("9080 is where the app aimed, on reviews-v2. But nat OUTPUT rewrites the "
                 "destination before the packet leaves the pod, so no socket on 9080 sees it "
                 "first.")
    elif port == 15053:
        why = tr("15053 is ztunnel's DNS port; only connections to port 53 are sent there.")
    else:
        why = tr("no rule of the pod redirects the app's connection to {port}.", port=port)
    return wrong(tr("Not {answer}: {why}", answer=port, why=why), solution=solution,
                 evidence=model)


@checker("08.3", "an IP address as a string, e.g. '10.244.0.9'", hints=(
    "In a sidecar pod the app saw 127.0.0.6, because Envoy bound its socket to that address. "
    "Does ztunnel do the same?",
    "ztunnel connects to the app with IP_FREEBIND and IP_TRANSPARENT. These options let a "
    "socket bind an address that is not one of the pod's own.",
    "Which address would be most useful to the app, for its logs and its own checks?",
))
def check_ambient_app_sees_source(answer: Any) -> Verdict:
    """reviews-v2 calls details' app over HBONE. Which source address does the app see
    (``getpeername()``)?"""
    try:
        ip = ip_address(read_string(answer, "an IP address"))
    except ValueError as bad:
        raise Unreadable(str(bad)) from None
    walk = run_walk(INBOUND)
    seen = walk.delivered_to.sees_source if walk.delivered_to else None
    model = walk_lines(walk)
    solution = tr("{ip}: ztunnel connects to the app from the client's own address "
                  "(IP_FREEBIND + IP_TRANSPARENT), so the app sees who really called.", ip=seen)
    if seen is not None and ip == ip_address(seen):
        return right(tr("The app sees {ip}, the real client. ztunnel ends the tunnel and opens "
                        "a new connection to the app, bound to the client's address. A sidecar "
                        "pod's app would see 127.0.0.6 instead.", ip=seen), evidence=model)
    if str(ip) == "127.0.0.6":
        why = tr("127.0.0.6 is the address a sidecar's Envoy binds for its inbound clusters. "
                 "This pod has no Envoy, and ztunnel does not bind a loopback address for its "
                 "connection to the app.")
    elif str(ip) == "127.0.0.1":
        why = tr("ztunnel does not bind 127.0.0.1 for this connection; its socket has another "
                 "source address.")
    elif str(ip) == _ambient_pod_ip(walk):
        why = tr("{ip} is details' own address: ztunnel connects *to* it, where the app "
                 "listens. The source of ztunnel's socket is another address.", ip=ip)
    else:
        why = tr("no socket in the model's walk has {ip} as its address.", ip=ip)
    return wrong(tr("Not {answer}: {why}", answer=ip, why=why), solution=solution,
                 evidence=model)


def _ambient_pod_ip(walk: Walk) -> str:
    """The subject pod's address, read from ztunnel's connection to the app."""
    for event in walk.events:
        if event.kind == "connect" and event.pod == walk.subject and event.dst:
            return event.dst.rsplit(":", 1)[0]
    return ""


def _rule_texts() -> tuple[str, ...]:
    """Every rule of a default ambient pod, in restore form without ``-A CHAIN``."""
    from meshlab.istio.ambient import inpod_rules

    ruleset = inpod_rules().ruleset_v4
    return tuple(rule.text for table in ruleset.tables.values()
                 for chain in table.chains.values() for rule in chain.rules)


def _walk_without_condition(name: str, condition: str) -> Walk | None:
    """The walk with ``condition`` taken out of every rule of the ambient pod that has it;
    None for an owner match, which no rule of an ambient pod has (a sidecar's way out)."""
    from meshlab.scenarios import run_scenario

    if not any(f" {condition} " in f" {text} " for text in _rule_texts()):
        if "-m owner" in condition:
            return None
        raise Unreadable(tr("no rule of the pod has the condition '{condition}'; copy a "
                            "condition from the rules listed above, exactly as they write it",
                            condition=condition))
    return run_scenario(name, without_matches=(condition,))


@checker("08.2", "a condition of a rule, as the rule writes it, e.g. '! -d 127.0.0.1/32'", hints=(
    "ztunnel's connection and the app's connection meet the same nat OUTPUT rules. What does "
    "every socket of ztunnel carry that the app's socket does not?",
    "Read the last rule of nat ISTIO_OUTPUT condition by condition. Which one fails for "
    "ztunnel's packet to 10.244.0.13:15008, and for nothing else?",
    "Write only that condition (with its '!' if it has one), not the whole rule.",
))
def check_ztunnel_loop_condition(answer: Any) -> Verdict:
    """Which condition, taken out of the rules, makes ztunnel capture its own outbound
    connection (a loop)?"""
    text = strip_append(read_string(answer, "a condition of a rule"))
    whole_rule = " -j " in f" {text}"
    walk = (run_walk(OUTBOUND, without_rules=(text,)) if whole_rule
            else _walk_without_condition(OUTBOUND, text))
    solution = tr("'{condition}': ztunnel's sockets carry SO_MARK 0x539, and this condition "
                  "is all that tells its packets from the app's.",
                  condition="-m mark ! --mark 0x539/0xfff")
    if walk is None:
        return wrong(tr("No rule of an ambient pod has '{condition}': istio-cni writes no owner "
                        "rules. ztunnel is not a container of this pod and does not run as UID "
                        "1337, so its owner cannot be what lets it out.", condition=text),
                     solution=solution)
    model = walk_lines(walk)
    if walk.outcome == "loop" and walk.loop is not None:
        return right(tr("Without '{condition}' the REDIRECT to 15001 matches ztunnel's own "
                        "connection too; ztunnel accepts it, reads the same original "
                        "destination and connects again: {loop}.", condition=text,
                        loop=walk.loop.text), evidence=model)
    if whole_rule:
        captured = any(e.kind == "accept" and e.pod == walk.subject for e in walk.events)
        why = (tr("you took out the whole rule. ztunnel's connection is still let out.")
               if captured else
               tr("you took out the whole rule. Then nothing redirects the app's connection "
                  "either: it leaves the pod directly, not through ztunnel, so nothing can "
                  "loop."))
    elif walk.outcome == "delivered":
        why = tr("ztunnel's connection still leaves: another condition of the REDIRECT rule "
                 "still fails for its packet.")
    else:
        why = tr("the walk ends '{outcome}' ({reason}).", outcome=walk.outcome,
                 reason=walk.reason)
    return wrong(tr("No loop without '{condition}': {why}", condition=text, why=why),
                 solution=solution, evidence=model)


@checker("08.4", "a rule in restore form (without '-A CHAIN'), or the 'ip rule ...' / "
         "'ip route ...' command", hints=(
    "Follow the app's SYN-ACK in the inbound walk. It is addressed to the client's own "
    "address, which is not an address of this pod. Where would the kernel normally send it?",
    "Something marks the connection when ztunnel's packet comes in by lo, and something "
    "copies that mark onto the app's answer. Find both in the mangle table.",
    "Policy routing picks a routing table by a packet's mark. Besides iptables-restore, the "
    "agent runs two ip commands in the pod.",
))
def check_reply_path_piece(answer: Any) -> Verdict:
    """Name one thing the agent sets up (a rule, or the ip rule / ip route) without which the
    HBONE call from reviews-v2 never completes."""
    text = strip_append(read_string(answer, "a rule or an ip command"))
    walk = run_walk(INBOUND, without_rules=(text,))
    model = walk_lines(walk)
    if walk.outcome == "timeout":
        lost = next((e.decision for e in walk.events if e.kind == "timeout"), walk.reason)
        outbound = run_walk(OUTBOUND, without_rules=(text,)).outcome
        return right(tr("Without it the app's answer is lost: {lost}. (The app's own outbound "
                        "call is '{outcome}' without it: only the inbound reply path needs "
                        "it.)", lost=lost, outcome=outbound), evidence=model)
    solution = tr("any of the four pieces of the reply path: mangle ISTIO_PRERT's '{mark}', "
                  "mangle ISTIO_OUTPUT's '{restore}', '{ip_rule}' or '{ip_route}'.",
                  mark="-m mark --mark 0x539/0xfff -j CONNMARK --set-xmark 0x111/0xfff",
                  restore="-m connmark --mark 0x111/0xfff -j CONNMARK --restore-mark "
                          "--nfmask 0xffffffff --ctmask 0xffffffff",
                  ip_rule="ip rule add fwmark 0x111/0xfff pref 32764 lookup 100",
                  ip_route="ip route add local 0.0.0.0/0 dev lo table 100")
    if walk.outcome == "delivered" and walk.delivered_to is not None:
        d = walk.delivered_to
        why = tr("the call still completes: the {process} on port {port} accepts it and sees "
                 "{source}, and its answer still comes back by lo to ztunnel.",
                 process=d.process, port=d.port, source=d.sees_source)
    else:
        why = tr("the walk ends '{outcome}' ({reason}), not with a lost answer.",
                 outcome=walk.outcome, reason=walk.reason)
    return wrong(tr("Without '{rule}' {why}", rule=text, why=why), solution=solution,
                 evidence=model)
