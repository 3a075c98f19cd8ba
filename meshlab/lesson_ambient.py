"""Ambient mode's numbered steps (A1, A2, ...), as a view over a :class:`~meshlab.walk.Walk`.

The article numbers the sidecar's journey 1-15 (:mod:`meshlab.lesson`); an ambient pod has no
sidecar, so its walks get steps of their own, defined here once and never renumbered.

Inbound (a mesh peer's ztunnel tunnels to this pod's 15008, or a plaintext client calls the
app directly):

A1. the connection arrives on eth0; nat PREROUTING sends it to ISTIO_PRERT;
A2. port 15008 is not redirected (HBONE goes straight to ztunnel; plaintext would go to 15006);
A3. ztunnel accepts and learns the target (from the tunnel, or SO_ORIGINAL_DST);
A4. ztunnel connects to the app *from the client's address* (freebind, transparent, mark 0x539);
A5. nat ISTIO_OUTPUT: a connection to the pod's own address over lo is accepted, not captured;
A6. in again by lo, mangle ISTIO_PRERT sees mark 0x539 and gives the connection connmark 0x111;
A7. the app's SYN-ACK, addressed to the client's address, gets mark 0x111 back (restore-mark);
A8. the ``ip rule fwmark 0x111/0xfff lookup 100`` routes it by lo back to ztunnel, not eth0;
A9. the app accepts; it sees the real client's address.

Outbound (the app calls something outside the pod):

A1. the app's connection enters OUTPUT;
A2. nat OUTPUT sends it to ISTIO_OUTPUT;
A3. no exemption matches, so REDIRECT sends it to ztunnel's 15001;
A4. ztunnel reads SO_ORIGINAL_DST and picks HBONE (a mesh workload: its 15008) or passthrough;
A5. ztunnel's own connection, with socket mark 0x539, enters OUTPUT;
A6. ``-m mark ! --mark 0x539/0xfff`` fails for it: nothing redirects it;
A7. it leaves by eth0;
A8. it is delivered at the other end;
A9. the answers come back: the peer's to ztunnel, ztunnel's to the app.

A step is ``"ok"``, ``"changed"`` (something else happened there: a removed rule, a loop, a
plaintext client) or ``"skipped"``, exactly as the article's steps are.
"""

from __future__ import annotations

from meshlab.i18n import tr, translatable
from meshlab.lesson_match import Step, decisive_rule, final_event, first_event, is_hit, make_step
from meshlab.walk import Event, Walk

AMBIENT_INBOUND_STEPS: tuple[tuple[str, str, str], ...] = (
    ("A1", "PREROUTING -> ISTIO_PRERT",
     translatable("The connection's first packet arrives on eth0; nat PREROUTING sends it to "
                  "ISTIO_PRERT.")),
    ("A2", "15008 is not redirected",
     translatable("The inbound REDIRECT to 15006 says `! --dport 15008`: HBONE, the tunnel from "
                  "the peer's ztunnel, goes straight to ztunnel's 15008 listener.")),
    ("A3", "ztunnel accepts",
     translatable("ztunnel's socket in this pod accepts; the tunnel carries the real target (a "
                  "plaintext connection redirected to 15006 has it from SO_ORIGINAL_DST).")),
    ("A4", "ztunnel connects to the app from the client's address",
     translatable("IP_FREEBIND and IP_TRANSPARENT let ztunnel bind the client's own IP; its "
                  "socket carries mark 0x539.")),
    ("A5", "out by lo: nat ISTIO_OUTPUT accepts",
     translatable("The app's address is local, so the packet leaves by lo; `! -d 127.0.0.1/32 "
                  "-o lo -j ACCEPT` lets it pass uncaptured.")),
    ("A6", "mangle ISTIO_PRERT: connmark 0x111",
     translatable("In again by lo, the packet still carries mark 0x539, so mangle gives its "
                  "connection the connection mark 0x111.")),
    ("A7", "the app's SYN-ACK gets mark 0x111",
     translatable("The app answers the client's (foreign) address; mangle ISTIO_OUTPUT restores "
                  "the connection's mark 0x111 onto the answer.")),
    ("A8", "table 100 routes the answer back by lo",
     translatable("`ip rule fwmark 0x111/0xfff lookup 100` and `local 0.0.0.0/0 dev lo table "
                  "100` make the client's address local for this packet: it goes back to "
                  "ztunnel, not out by eth0.")),
    ("A9", "the app sees the real client",
     translatable("The handshake completes and the app accepts; getpeername() gives the "
                  "client's own address (a sidecar pod's app would see 127.0.0.6).")),
)
AMBIENT_OUTBOUND_STEPS: tuple[tuple[str, str, str], ...] = (
    ("A1", "the app's connection enters OUTPUT",
     translatable("The app calls connect(); the route chooses eth0 and the source address.")),
    ("A2", "OUTPUT -> ISTIO_OUTPUT",
     translatable("nat OUTPUT sends the first packet of every new local connection to "
                  "ISTIO_OUTPUT.")),
    ("A3", "REDIRECT to 15001",
     translatable("No exemption matches (not loopback, not to lo, no mark 0x111 or 0x539), so "
                  "the last rule redirects it to ztunnel's 15001.")),
    ("A4", "ztunnel picks HBONE or passthrough",
     translatable("ztunnel reads SO_ORIGINAL_DST: to a mesh workload it opens HBONE (that pod's "
                  "IP, port 15008, carrying the target); to anything else a plain connection.")),
    ("A5", "ztunnel's connection (mark 0x539) enters OUTPUT",
     translatable("Every socket ztunnel opens in the pod carries SO_MARK 0x539.")),
    ("A6", "`! --mark 0x539/0xfff`: not redirected",
     translatable("The same rules see ztunnel's packet, but each redirect requires the mark to "
                  "be absent, so nothing captures it again.")),
    ("A7", "out by eth0",
     translatable("The packet leaves the pod towards the peer (or the host outside the mesh).")),
    ("A8", "delivered at the other end",
     translatable("The peer accepts (over HBONE: the peer's ztunnel connects to its app, which "
                  "sees this pod's IP).")),
    ("A9", "the answers come back",
     translatable("The peer's answer reaches ztunnel's socket, and ztunnel's answer reaches the "
                  "app, which sees it come from the address it called.")),
)


def ambient_case(walk: Walk) -> str:
    """``"inbound"`` when the subject pod first sees the connection arrive from outside and
    it is not taken for outbound traffic (a virtual interface's, sent to 15001), else
    ``"outbound"``."""
    mine = [e for e in walk.events if e.pod == walk.subject]
    if not mine or mine[0].kind == "connect":
        return "outbound"
    c0 = mine[0].connection
    to_15001 = any(e.connection == c0 and e.kind == "accept" and e.listener == "ztunnel:15001"
                   for e in mine)
    return "outbound" if to_15001 else "inbound"


def ambient_steps(walk: Walk, case: str | None = None) -> list[Step]:
    """The ambient steps (A1-A9) of an ambient ``walk``, each with its status."""
    case = case or ambient_case(walk)
    if case not in ("inbound", "outbound"):
        raise ValueError(f"case must be 'inbound' or 'outbound', not {case!r}")
    events = list(walk.events)
    mine = [e for e in events if e.pod == walk.subject]
    c0 = min((e.connection for e in mine), default=0)
    if case == "inbound":
        return _inbound(events, mine, c0)
    return _outbound(events, mine, c0)


def _nat_policy(events: list[Event], conn: int, chain: str) -> Event | None:
    return first_event(events, lambda e: e.connection == conn and e.kind == "policy"
                  and e.table == "nat" and e.chain == chain)


def _inbound(events: list[Event], mine: list[Event], c0: int) -> list[Step]:
    s = AMBIENT_INBOUND_STEPS
    steps: list[Step] = []
    a1 = first_event(mine, lambda e: e.connection == c0 and e.table == "nat"
                and e.chain == "PREROUTING" and is_hit(e) and e.decision == "jump ISTIO_PRERT")
    steps.append(make_step(s[0], a1, first_event(mine, lambda e: e.connection == c0 and e.kind in
                                        ("drop", "refused", "deliver"))))
    decisive = decisive_rule(mine, c0, "ISTIO_PRERT") if a1 is not None else None
    a2 = None
    if a1 is not None and decisive is None:
        a2 = _nat_policy(mine, c0, "PREROUTING")
    steps.append(make_step(s[1], a2, decisive))
    a3 = first_event(mine, lambda e: e.connection == c0 and e.kind == "accept"
                and (e.listener or "").startswith("ztunnel:"))
    steps.append(make_step(s[2], a3, None if a3 is not None else final_event(mine, c0)))
    c1 = c0 + 1
    a4 = first_event(mine, lambda e: e.connection == c1 and e.kind == "connect"
                and e.actor == "proxy") if a3 is not None else None
    steps.append(make_step(s[3], a4, None if a4 is not None or a3 is None
                           else final_event(mine, c0)))
    a5 = None
    instead5 = None
    if a4 is not None:
        a5 = first_event(mine, lambda e: e.connection == c1 and e.table == "nat" and is_hit(e)
                    and e.chain == "ISTIO_OUTPUT" and "-o lo" in (e.text or "")
                    and e.decision == "ACCEPT")
        instead5 = decisive_rule(mine, c1, "ISTIO_OUTPUT")
    steps.append(make_step(s[4], a5, instead5))
    a6 = first_event(mine, lambda e: e.connection == c1 and e.table == "mangle" and is_hit(e)
                and e.decision.startswith("CONNMARK set")) if a4 is not None else None
    steps.append(make_step(s[5], a6, None))
    a7 = first_event(mine, lambda e: e.connection == c1 and e.table == "mangle" and is_hit(e)
                and e.decision.startswith("CONNMARK restore")) if a4 is not None else None
    steps.append(make_step(s[6], a7, None))
    a8 = None
    instead8 = None
    if a4 is not None:
        a8 = first_event(mine, lambda e: e.connection == c1 and e.kind == "route"
                    and "SYN-ACK" in e.decision and "back in by lo" in e.decision)
        if a8 is None:
            instead8 = first_event(mine, lambda e: e.connection == c1 and e.kind in
                              ("timeout", "drop", "route") and "SYN-ACK" in e.decision)
    steps.append(make_step(s[7], a8, instead8))
    a9 = None
    instead9 = None
    if a4 is not None:
        final = final_event(events, c1)
        if final is not None and final.kind == "deliver" and final.connection == c1:
            a9 = final
        else:
            instead9 = final
    steps.append(make_step(s[8], a9, instead9))
    return steps


def _outbound(events: list[Event], mine: list[Event], c0: int) -> list[Step]:
    s = AMBIENT_OUTBOUND_STEPS
    steps: list[Step] = []
    # a VM's connection arriving on a virtual interface is outbound traffic that did not
    # start in OUTPUT: A1 and A2 show where it came in instead, A3 its REDIRECT to 15001
    a1 = first_event(mine, lambda e: e.connection == c0 and e.kind == "connect")
    arrived = first_event(mine, lambda e: e.connection == c0 and is_hit(e)) if a1 is None else None
    steps.append(make_step(s[0], a1, arrived, "" if arrived is None else
                       tr("instead, the connection arrives from outside the pod ({src} -> "
                          "{dst}): it did not start in this pod's OUTPUT",
                          src=arrived.src, dst=arrived.dst)))
    a2 = first_event(mine, lambda e: e.connection == c0 and e.table == "nat" and e.chain == "OUTPUT"
                and is_hit(e) and e.decision == "jump ISTIO_OUTPUT")
    in_nat = None if a1 is not None else first_event(
        mine, lambda e: e.connection == c0 and e.table == "nat" and is_hit(e))
    steps.append(make_step(s[1], a2, in_nat, "" if in_nat is None else
                       tr("instead, nat {chain} ({hook}): {decision}", chain=in_nat.chain,
                          hook=in_nat.hook, decision=in_nat.decision)))
    decisive = None
    if a2 is not None:
        decisive = decisive_rule(mine, c0, "ISTIO_OUTPUT")
    elif arrived is not None:
        decisive = decisive_rule(mine, c0, "ISTIO_PRERT")
    a3 = decisive if (decisive is not None and decisive.decision.startswith("REDIRECT")
                      and decisive.decision.endswith(":15001")) else None
    steps.append(make_step(s[2], a3, decisive if a3 is None else None))
    a4 = first_event(mine, lambda e: e.connection == c0 and e.kind == "proxy"
                and (e.listener or "") == "ztunnel:15001") if a3 is not None else None
    steps.append(make_step(s[3], a4, None if a4 is not None or a3 is None
                           else final_event(mine, c0)))
    c1 = c0 + 1
    a5 = first_event(mine, lambda e: e.connection == c1 and e.kind == "connect"
                and e.actor == "proxy") if a4 is not None else None
    steps.append(make_step(s[4], a5, None if a5 is not None or a4 is None
                           else final_event(mine, c0)))
    a6 = None
    instead6 = None
    if a5 is not None:
        instead6 = decisive_rule(mine, c1, "ISTIO_OUTPUT")
        if instead6 is None or instead6.decision == "RETURN":
            a6 = _nat_policy(mine, c1, "OUTPUT")
            instead6 = None
    steps.append(make_step(s[5], a6, instead6))
    a7 = first_event(mine, lambda e: e.connection == c1 and e.kind == "route"
                and "by eth0" in e.decision) if a6 is not None else None
    steps.append(make_step(s[6], a7, None))
    a8 = None
    instead8 = None
    if a7 is not None:
        final = final_event(events, c1)
        if final is not None and final.kind == "deliver":
            a8 = final
        else:
            instead8 = final
    steps.append(make_step(s[7], a8, instead8))
    a9 = None
    if a8 is not None:
        a9 = first_event(list(reversed(mine)), lambda e: e.connection == c0 and e.kind == "reply")
    steps.append(make_step(s[8], a9, first_event(list(reversed(events)), lambda e: e.kind in
                                        ("timeout", "drop")) if a8 is not None else None))
    return steps
