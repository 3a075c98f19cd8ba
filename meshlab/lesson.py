"""The article's numbered steps, as a view over a :class:`~meshlab.walk.Walk`.

The article this project teaches from numbers the journey of a request through a pod with an
Istio sidecar. Inbound (a peer calls the app):

1. the packet arrives; nat PREROUTING sends it to ISTIO_INBOUND;
2. the port is not excluded, so ISTIO_INBOUND jumps to ISTIO_IN_REDIRECT;
3. REDIRECT rewrites the destination to port 15006;
4. Envoy's virtualInbound listener picks the chain ``Addr: *:9080`` -> cluster
   ``inbound|9080||`` (ORIGINAL_DST, source 127.0.0.6);
5. Envoy's connection to the app enters OUTPUT;
6. nat OUTPUT jumps to ISTIO_OUTPUT;
7. source 127.0.0.6 leaving by lo: RETURN (not captured again);
8. through POSTROUTING and back in by lo to the app.

Outbound (the app calls a peer):

9. the app's connection enters OUTPUT;
10. nat OUTPUT jumps to ISTIO_OUTPUT;
11. no exemption matches, so ISTIO_OUTPUT jumps to ISTIO_REDIRECT;
12. REDIRECT rewrites the destination to 127.0.0.1:15001 (Envoy);
13. Envoy's own connection to the original destination enters OUTPUT;
14. nat OUTPUT jumps to ISTIO_OUTPUT;
15. owner UID 1337: RETURN, and the packet leaves by eth0.

:func:`numbered_steps` finds each step among the walk's events. A step whose event is there is
``"ok"``; a step where something else happened instead (an excluded port's RETURN, a removed
rule, a loop) is ``"changed"`` and points at what happened; a step the walk never reached is
``"skipped"``. Steps are never renumbered: a learner always sees 1-8 or 9-15. This module only
*reads* the walk; every decision was taken by the kernel model and the proxy model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from meshlab.i18n import tr, translatable
from meshlab.lesson_match import (
    Step,
    decisive_rule,
    final_event,
    first_event,
    is_hit,
    is_nat_to,
    jumps_to,
    make_step,
)
from meshlab.walk import Event, Walk

CASES = ("inbound", "outbound")


# (n, title, explanation) as the article tells them; an explanation is shown in the
# learner's language (make_step), a title stays as the article writes it
INBOUND_STEPS: tuple[tuple[int, str, str], ...] = (
    (1, "PREROUTING -> ISTIO_INBOUND",
     translatable("The peer's SYN arrives on eth0; nat PREROUTING sends the first packet of "
                  "every new TCP connection to ISTIO_INBOUND.")),
    (2, "ISTIO_INBOUND -> ISTIO_IN_REDIRECT",
     translatable("The destination port is not excluded (-d), so ISTIO_INBOUND jumps to "
                  "ISTIO_IN_REDIRECT.")),
    (3, "REDIRECT to 15006",
     translatable("REDIRECT rewrites the destination to the pod's address, port 15006; "
                  "conntrack remembers the original one.")),
    (4, "virtualInbound: Addr: *:9080 -> inbound|9080||",
     translatable("Envoy accepts on 15006, reads SO_ORIGINAL_DST, picks the filter chain for "
                  "the port and its cluster (ORIGINAL_DST, bound to source 127.0.0.6).")),
    (5, "Envoy's connection enters OUTPUT",
     translatable("Envoy (UID 1337) connects from 127.0.0.6 to the original destination; the "
                  "pod IP is local, so the packet will leave by lo.")),
    (6, "OUTPUT -> ISTIO_OUTPUT",
     translatable("nat OUTPUT sends the first packet of every new local connection to "
                  "ISTIO_OUTPUT.")),
    (7, "source 127.0.0.6 on lo -> RETURN",
     translatable("The first ISTIO_OUTPUT rule lets connections from 127.0.0.6 leaving by lo "
                  "through, so Envoy's inbound traffic is not captured a second time.")),
    (8, "POSTROUTING -> the app",
     translatable("Through POSTROUTING, out by lo and back in: the app accepts the connection "
                  "and sees 127.0.0.6 as the client.")),
)
OUTBOUND_STEPS: tuple[tuple[int, str, str], ...] = (
    (9, "the app's connection enters OUTPUT",
     translatable("The app (UID 1000) calls connect(); the route chooses eth0 and the source "
                  "address.")),
    (10, "OUTPUT -> ISTIO_OUTPUT",
     translatable("nat OUTPUT sends the first packet of every new local connection to "
                  "ISTIO_OUTPUT.")),
    (11, "nothing matches -> ISTIO_REDIRECT",
     translatable("No exemption (127.0.0.6, loopback, UID/GID 1337, excluded CIDR or port) "
                  "matches, so the last rule jumps to ISTIO_REDIRECT.")),
    (12, "REDIRECT to 15001",
     translatable("REDIRECT rewrites the destination to 127.0.0.1:15001, where Envoy's "
                  "virtualOutbound listens; conntrack remembers the original.")),
    (13, "Envoy's connection enters OUTPUT",
     translatable("Envoy reads SO_ORIGINAL_DST, picks a cluster and connects to the original "
                  "destination as UID 1337.")),
    (14, "OUTPUT -> ISTIO_OUTPUT",
     translatable("Envoy's packet goes through nat OUTPUT and ISTIO_OUTPUT like any other.")),
    (15, "owner UID 1337 -> RETURN, out through eth0",
     translatable("-m owner --uid-owner 1337 -j RETURN exempts the proxy's own traffic; it "
                  "leaves by eth0 to the peer, which sees the pod's IP.")),
)

Finder = Callable[[list[Event]], Event | None]


def article_case(walk: Walk) -> str:
    """``"inbound"`` when the first connection comes into the pod from outside, else
    ``"outbound"``."""
    first = next((e for e in walk.events if e.kind == "connect"), None)
    if first is not None and first.actor == "peer":
        return "inbound"
    return "outbound"


def numbered_steps(walk: Walk, case: str | None = None) -> list[Step]:
    """The article's steps (1-8 inbound, 9-15 outbound) for ``walk``, each with a status.

    An ambient walk (``walk.mode == "ambient"``) gets the ambient steps A1-A9 instead
    (:func:`meshlab.lesson_ambient.ambient_steps`).

    ``case`` defaults to :func:`article_case`. For a walk that is neither article case (the app
    calling its own Service goes out *and* back in) the steps of the chosen case are matched
    as far as they apply; the rest show as changed or skipped.
    """
    if walk.mode == "ambient":
        from meshlab.lesson_ambient import ambient_steps

        return ambient_steps(walk, case)
    case = case or article_case(walk)
    if case not in CASES:
        raise ValueError(f"case must be 'inbound' or 'outbound', not {case!r}")
    events = list(walk.events)
    subject = _subject_pod(walk)
    mine = [e for e in events if e.pod == subject]
    first_conn = min((e.connection for e in mine), default=0)
    if case == "inbound":
        return _inbound(mine, first_conn)
    return _outbound(mine, first_conn)


def step_numbers(walk: Walk) -> dict[int, int | str]:
    """``{event index: step number}`` for the events that are one of the article's steps."""
    return {s.event.index: s.n for s in numbered_steps(walk) if s.event is not None}


def walk_json(walk: Walk, *, detailed: bool = False) -> dict[str, Any]:
    """The ``meshlab walk --json`` object: :meth:`Walk.to_json` with each step's number."""
    return walk.to_json(numbers=step_numbers(walk), detailed=detailed)


def steps_frame(walk: Walk):  # type: ignore[no-untyped-def]
    """:func:`numbered_steps` as a pandas DataFrame (n, title, status, explanation, event)."""
    import pandas

    rows = [(s.n, s.title, s.status, s.explanation,
             None if s.event is None else s.event.index) for s in numbered_steps(walk)]
    return pandas.DataFrame(rows, columns=["n", "title", "status", "explanation", "event"]
                            ).set_index("n")


# ---------------------------------------------------------------------------- matching


def _subject_pod(walk: Walk) -> str:
    """The pod whose rules the walk is about: the first pod with rule events."""
    for event in walk.events:
        if event.kind in ("rule", "policy", "proxy"):
            return event.pod
    return walk.events[0].pod if walk.events else ""


def _inbound(events: list[Event], c0: int) -> list[Step]:
    s = INBOUND_STEPS
    steps: list[Step] = []
    e1 = first_event(events, lambda e: e.connection == c0 and e.chain == "PREROUTING"
                and jumps_to(e, "ISTIO_INBOUND"))
    steps.append(make_step(s[0], e1, first_event(events, lambda e: e.connection == c0 and is_hit(e)
                                        and e.hook == "PREROUTING")))
    e2 = first_event(events, lambda e: e.connection == c0 and e.chain == "ISTIO_INBOUND"
                and jumps_to(e, "ISTIO_IN_REDIRECT"))
    steps.append(make_step(s[1], e2, None if e1 is None else
                       decisive_rule(events, c0, "ISTIO_INBOUND")))
    e3 = first_event(events, lambda e: e.connection == c0 and is_nat_to(e, "REDIRECT"))
    tproxy = first_event(events, lambda e: e.connection == c0 and is_nat_to(e, "TPROXY"))
    steps.append(make_step(s[2], e3, tproxy, "" if tproxy is None else
                       tr("TPROXY mode: the mangle table's TPROXY target hands the connection "
                          "to Envoy's transparent 15006 listener without rewriting the "
                          "destination ({decision})", decision=tproxy.decision)))
    e4 = first_event(events, lambda e: e.connection == c0 and e.kind == "proxy"
                and e.listener == "virtualInbound")
    instead4 = None
    if e4 is None and e3 is None and tproxy is None:
        instead4 = final_event(events, c0)
        if instead4 is not None and instead4.connection != c0:
            instead4 = None
    steps.append(make_step(s[3], e4, instead4))
    c1 = c0 + 1
    e5 = first_event(events, lambda e: e.connection == c1 and e.kind == "connect"
                and e.actor == "proxy") if e4 is not None else None
    steps.append(make_step(s[4], e5, None))
    e6 = first_event(events, lambda e: e.connection == c1 and e.chain == "OUTPUT"
                and jumps_to(e, "ISTIO_OUTPUT")) if e5 is not None else None
    steps.append(make_step(s[5], e6, None))
    e7 = None
    instead7 = None
    if e6 is not None:
        e7 = first_event(events, lambda e: e.connection == c1 and e.chain == "ISTIO_OUTPUT"
                    and is_hit(e) and "127.0.0.6" in (e.text or "") and e.decision == "RETURN")
        instead7 = decisive_rule(events, c1, "ISTIO_OUTPUT")
    steps.append(make_step(s[6], e7, instead7))
    e8 = None
    instead8 = None
    if e5 is not None:
        final = final_event(events, c1)
        if final is not None and final.kind == "deliver" and final.connection == c1:
            e8 = final
        else:
            instead8 = final
    steps.append(make_step(s[7], e8, instead8))
    return steps


def _outbound(events: list[Event], c0: int) -> list[Step]:
    s = OUTBOUND_STEPS
    steps: list[Step] = []
    e9 = first_event(events, lambda e: e.connection == c0 and e.kind == "connect")
    steps.append(make_step(s[0], e9, None))
    e10 = first_event(events, lambda e: e.connection == c0 and e.chain == "OUTPUT"
                 and e.table == "nat" and jumps_to(e, "ISTIO_OUTPUT"))
    steps.append(make_step(s[1], e10, None))
    e11 = first_event(events, lambda e: e.connection == c0 and e.chain == "ISTIO_OUTPUT"
                 and jumps_to(e, "ISTIO_REDIRECT"))
    steps.append(make_step(s[2], e11, None if e10 is None else
                       decisive_rule(events, c0, "ISTIO_OUTPUT")))
    e12 = first_event(events, lambda e: e.connection == c0 and is_nat_to(e, "REDIRECT")
                 and e.chain == "ISTIO_REDIRECT")
    instead12 = None
    if e12 is None and e11 is None:
        final = final_event(events)
        instead12 = final if final is not None and final.connection == c0 else None
    steps.append(make_step(s[3], e12, instead12))
    c1 = c0 + 1
    e13 = first_event(events, lambda e: e.connection == c1 and e.kind == "connect"
                 and e.actor == "proxy") if e12 is not None else None
    instead13 = None
    if e12 is not None and e13 is None:
        instead13 = final_event(events, c0)
    steps.append(make_step(s[4], e13, instead13))
    e14 = first_event(events, lambda e: e.connection == c1 and e.chain == "OUTPUT"
                 and e.table == "nat" and jumps_to(e, "ISTIO_OUTPUT")) if e13 else None
    steps.append(make_step(s[5], e14, None))
    e15 = None
    instead15 = None
    if e14 is not None:
        e15 = first_event(events, lambda e: e.connection == c1 and e.chain == "ISTIO_OUTPUT"
                     and is_hit(e) and e.decision == "RETURN"
                     and "--uid-owner" in (e.text or "") and "!" not in (e.text or ""))
        instead15 = decisive_rule(events, c1, "ISTIO_OUTPUT")
    steps.append(make_step(s[6], e15, instead15))
    return steps
