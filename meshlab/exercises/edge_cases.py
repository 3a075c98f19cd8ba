"""Lesson 06 (``06-edge-cases.ipynb``): excluding a CIDR from capture (``-x``), an app
running as the proxy's UID 1337, and debugging a pod from its ``iptables-save`` dump
(:func:`debug_dump`).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from meshlab.exercises.answers import (
    Unreadable,
    checker,
    read_bool,
    read_port,
    read_string,
    strip_append,
)
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
from meshlab.exercises.result import Verdict, right, wrong
from meshlab.i18n import tr


def _with_flag(flags: Sequence[str], flag: str, value: str) -> tuple[str, ...]:
    """``flags`` with ``flag`` set to ``value`` (appended when it is not there yet)."""
    out = list(flags)
    if flag in out:
        out[out.index(flag) + 1] = value
    else:
        out += [flag, value]
    return tuple(out)


@checker("06.1", "a CIDR string for -x, e.g. '10.0.0.0/8'", hints=(
    "-x becomes '-d CIDR -j RETURN' in ISTIO_OUTPUT: every destination inside the range "
    "bypasses Envoy. Which addresses must be inside it, and which outside?",
    "legacy-db is 192.168.10.20; the pods (reviews is 10.244.0.9) must stay outside the "
    "range. Write both addresses in binary, or think in whole octets.",
    "A prefix length of 16, 24 or 32 keeps whole octets: which of them contain legacy-db and "
    "not the pods?",
))
def check_exclude_cidr(answer: Any) -> Verdict:
    """Choose ``-x`` (excludeOutboundIPRanges) so that the app reaches legacy-db without Envoy
    while its calls to reviews are still proxied."""
    value = read_string(answer, "a CIDR list")
    flags = _with_flag(default_flags(), "-x", value)
    db = run_walk("outbound-external", flags=flags)
    peer = run_walk("outbound", flags=flags)
    model = ("istio-iptables " + shlex.join(flags),
             f"app -> legacy-db:5432: outcome {db.outcome}, through Envoy: "
             f"{'yes' if db.proxied else 'no'}",
             f"app -> reviews:9080: outcome {peer.outcome}, through Envoy: "
             f"{'yes' if peer.proxied else 'no'}")
    solution = tr("a range holding 192.168.10.20 and not 10.244.0.9, such as 192.168.10.0/24 "
                  "(or 192.168.0.0/16, or 192.168.10.20/32).")
    if not db.proxied and peer.proxied and db.outcome == "delivered":
        return right(tr("-x {cidr} becomes '-d {cidr} -j RETURN' in ISTIO_OUTPUT, before the "
                        "catch-all jump to ISTIO_REDIRECT: legacy-db is reached directly, "
                        "reviews still through Envoy.", cidr=value), evidence=model)
    if db.proxied:
        return wrong(tr("With -x {cidr}, legacy-db is still reached through Envoy: the range "
                        "does not contain 192.168.10.20.", cidr=value), solution=solution,
                     evidence=model)
    return wrong(tr("With -x {cidr}, legacy-db bypasses Envoy, but reviews does too: the range "
                    "also contains 10.244.0.9, so the pods lose mTLS and policy.", cidr=value),
                 solution=solution, evidence=model)


def _read_fate(answer: Any) -> tuple[bool, str | int]:
    """``{"proxied": bool, "rule": "rule text" or rule number}`` -> (proxied, rule)."""
    shape = tr("a dict {form} (a yes/no alone is one chance in two: the reason is the point)",
               form="{'proxied': True or False, 'rule': 'the ISTIO_OUTPUT rule that decides'}")
    if not isinstance(answer, Mapping) or set(answer) != {"proxied", "rule"}:
        raise Unreadable(tr("Write {shape}", shape=shape))
    rule = answer["rule"]
    if isinstance(rule, bool) or not isinstance(rule, (int, str)):
        raise Unreadable(tr("'rule' is a rule text such as '-j ISTIO_REDIRECT' or a rule "
                            "number; write {shape}", shape=shape))
    if isinstance(rule, str):
        rule = strip_append(read_string(rule, "a rule text"))
    return read_bool(answer["proxied"]), rule


@checker("06.2", "a dict {'proxied': True or False, 'rule': 'an ISTIO_OUTPUT rule'}", hints=(
    "Write down what the kernel knows about this connection: owner UID 1337 (and its GID), "
    "out by eth0, to another pod. Then test ISTIO_OUTPUT's rules top to bottom.",
    "The kernel knows a socket's owner, not which container or binary opened it. Which rule "
    "was written with Envoy's own connections in mind?",
    "RETURN leaves ISTIO_OUTPUT before its last rule, the jump to ISTIO_REDIRECT: what does "
    "that mean for Envoy?",
))
def check_uid_1337_proxied(answer: Any) -> Verdict:
    """An application process running as UID 1337 calls reviews. Which rule of nat
    ISTIO_OUTPUT decides its connection's fate, and does the connection go through Envoy?"""
    from meshlab.netfilter.parse import parse_rule

    proxied, rule = _read_fate(answer)
    walk = run_walk("app-as-uid-1337")
    model = walk_lines(walk)
    tested = [e for e in walk.events if e.kind == "rule" and e.connection == 0
              and e.chain == "ISTIO_OUTPUT"]
    deciding = next((e for e in tested if e.matched), None)
    if deciding is None:
        raise Unreadable("in this model no ISTIO_OUTPUT rule decides the connection "
                         "(the library changed?)")
    if isinstance(rule, int):
        named = next((e for e in tested if e.rule == rule), None)
        label = tr("rule {rule}", rule=rule)
    else:
        text = parse_rule(rule).text
        named = next((e for e in tested if e.text == text), None)
        label = f"'{text}'"
    fate = tr("goes through Envoy") if walk.proxied else tr("bypasses Envoy")
    solution = tr("{verdict}, because of ISTIO_OUTPUT rule {rule} ('{text}' -> {decision}): "
                  "the kernel cannot tell the app from Envoy by its owner.",
                  verdict=tr("proxied") if walk.proxied else tr("not proxied"),
                  rule=deciding.rule, text=deciding.text, decision=deciding.decision)
    rule_right = named is not None and named.rule == deciding.rule
    if rule_right and proxied == walk.proxied:
        return right(tr("ISTIO_OUTPUT rule {rule} ({text}) matches the app's connection too, "
                        "so it {fate}: no mTLS, no policy, no telemetry. Istio's analyzer warns "
                        "about it (IST0144), and the docs say applications must not run as UID "
                        "1337.", rule=deciding.rule, text=deciding.text, fate=fate),
                     evidence=model)
    chain = rules_for(default_flags()).tables["nat"].chains["ISTIO_OUTPUT"]
    if named is None and isinstance(rule, int):
        why_rule = (tr("the connection never reaches {rule}: an earlier rule decides",
                       rule=label) if 1 <= rule <= len(chain.rules)
                    else tr("ISTIO_OUTPUT has no {rule}", rule=label))
    elif named is None:
        why_rule = (tr("the connection never reaches {rule}: an earlier rule decides first",
                       rule=label) if any(r.text == text for r in chain.rules)
                    else tr("ISTIO_OUTPUT has no rule {rule}", rule=label))
    elif not named.matched:
        failed = named.why_not or tr("one of its conditions is false for it")
        why_rule = tr("{rule} is tested and does not match this connection: {failed}",
                      rule=label, failed=failed)
    else:
        why_rule = tr("{rule} is the rule that decides", rule=label)
    if rule_right:
        return wrong(tr("You found the rule that decides, but not what it does: follow its "
                        "target ({decision}) and see where the connection goes next.",
                        decision=deciding.decision), solution=solution, evidence=model)
    if proxied == walk.proxied:
        why_rule = tr("Your yes/no agrees with the model, but not for that reason: {why}",
                      why=why_rule)
    return wrong(f"{why_rule}.", solution=solution, evidence=model)


#: The dump the "debug your own pod" exercise starts from (06.3): a pod whose istio-init ran
#: with -i 10.96.0.0/12 (only Service VIPs are captured) and -o 3306.
DEBUG_FLAGS: tuple[str, ...] = ("-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT",
                                "-i", "10.96.0.0/12", "-x", "", "-b", "*",
                                "-d", "15090,15021,15020", "-o", "3306")


def debug_dump() -> str:
    """The ``iptables-save`` text of exercise 06.3, as a real pod would print it."""
    return rules_for(DEBUG_FLAGS).render_save()


@checker("06.3", "a port number", hints=(
    "Read this pod's ISTIO_OUTPUT top to bottom with dst 10.96.0.20, port 9080, uid 1000, "
    "out by eth0. It is not the default ruleset: this istio-init ran with other flags.",
    "This pod captures only some destinations (-i) and leaves one port alone (-o). Is "
    "10.96.0.20 inside the captured range? Is 9080 the excluded port?",
    "A captured connection goes to ISTIO_REDIRECT: read the port of its REDIRECT.",
))
def check_debug_dump(answer: Any) -> Verdict:
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
        return right(tr("10.96.0.20 is inside -i 10.96.0.0/12, so ISTIO_OUTPUT sends it to "
                        "ISTIO_REDIRECT: delivered to {envoy}. A pod IP such as 10.244.0.9 "
                        "would have kept port {port} and left by {iface}.",
                        envoy=f"127.0.0.1:{got}", port=other.delivered[1],
                        iface=other.out_iface), evidence=model)
    solution = tr("{port}: delivered to {endpoint}.", port=got,
                  endpoint=f"{trace.delivered[0]}:{got}")
    if port == 9080:
        why = tr("9080 would mean no rule rewrites the destination; but 10.96.0.20 is inside "
                 "the range this pod captures, so a rule of ISTIO_OUTPUT does.")
    elif port == 3306:
        why = tr("3306 is the port this pod leaves alone (-o), and this connection goes to "
                 "9080; besides, a rule that leaves a port alone keeps the port, it does not "
                 "change it.")
    else:
        why = tr("no rule of this dump sends a connection to port {port}.", port=port)
    return wrong(tr("Not {answer}: {why}", answer=port, why=why), solution=solution,
                 evidence=model)
