"""Where a walk goes on the hooks picture: from :class:`~meshlab.walk.Event` values to places.

The hooks picture (:mod:`meshlab.viz.hooks`) has a fixed set of *places*: the tables of each
netfilter hook, the Istio chains, the two routing decisions, the sockets in the pod, and the
way out (``eth0``) or back in (``lo``). This module reads a walk and lists the places it
passes, in order, one :class:`Stop` per place. It decides nothing about rules: every stop comes
from an event the model produced (a rule that matched, a policy applied, a socket that
accepted). It only *adds* the two places the kernel always passes without an event of their
own: the routing decision before OUTPUT or after PREROUTING, and the ``lo`` wire between
POSTROUTING and PREROUTING when a packet is delivered locally.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshlab.walk import Event, Walk

#: The chains drawn as boxes of their own; rules in other chains are drawn on their table.
ISTIO_CHAINS = ("ISTIO_INBOUND", "ISTIO_IN_REDIRECT", "ISTIO_OUTPUT", "ISTIO_REDIRECT")

#: The Envoy listeners that have a socket box of their own.
ENVOY_LISTENERS = {15001: "envoy15001", 15006: "envoy15006"}



@dataclass(frozen=True, slots=True)
class Stop:
    """One place on the picture that the walk passes.

    ``place`` is a key of :data:`meshlab.viz.hooks.PLACES` (``"OUTPUT/nat"``,
    ``"ISTIO_OUTPUT"``, ``"envoy15001"``, ``"lo"``...). ``event`` is the index of the event
    that put it there (``None`` for the routing decisions and wires the kernel always passes),
    ``connection`` is the walk's connection number (it chooses the line style).
    """

    place: str
    connection: int
    event: int | None


def subject_pod(walk: Walk) -> str:
    """The pod the walk is *about*: the one whose app or sidecar acts in it.

    The walk names it (``Walk.subject``); a walk made without one: the world calls every
    process of other pods a ``peer``, so the subject is the pod of the first event whose actor
    is ``app``, ``proxy`` or ``agent`` (or of the first kernel event).
    """
    if walk.subject:
        return walk.subject
    for event in walk.events:
        if event.actor in ("app", "proxy", "agent") and event.pod:
            return event.pod
    for event in walk.events:
        if event.actor == "kernel" and event.pod:
            return event.pod
    return ""


def socket_place(event: Event, last_listener: str | None) -> str:
    """The socket box for an event of a process in the subject pod."""
    port = _port(event.listener) if event.listener else None
    if port is not None:
        return ENVOY_LISTENERS.get(port, "envoy_other")
    if event.actor == "proxy" and last_listener is not None and event.kind != "accept":
        return last_listener  # the decision / the upstream belong to the listener that accepted
    if event.actor == "proxy":
        return "envoy_other"
    if event.actor == "agent":
        return "agent"
    return "app"


def _port(endpoint: str) -> int | None:
    try:
        return int(endpoint.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return None


def event_place(event: Event, subject: str, last_listener: str | None) -> str | None:
    """The place of one event, or ``None`` when the event has no box (a rule that did not
    match, a NAT note, a routing summary)."""
    if event.pod and subject and event.pod != subject:
        if event.actor == "kernel":
            return None  # another pod's kernel: not drawn on this pod's map
        return "peer_in" if event.kind == "connect" else "peer_out"
    if event.actor in ("peer", "node"):
        return "peer_out"
    if event.kind in ("rule", "policy"):
        if event.kind == "rule" and not event.matched:
            return None
        if event.chain == "ISTIO_PRERT" and event.table == "nat":
            return "ISTIO_INBOUND"  # an ambient pod's inbound chain takes the same box
        if event.chain in ISTIO_CHAINS and (event.table == "nat" or event.chain != "ISTIO_OUTPUT"):
            return event.chain
        if event.hook and event.table:
            return f"{event.hook}/{event.table}"
        return None
    if event.kind in ("connect", "accept", "proxy", "deliver", "close", "loop"):
        return socket_place(event, last_listener)
    return None


def stage_of(event: Event, place: str) -> str:
    """Which stage of a packet's journey a place is: a hook name, a socket, a wire..."""
    if event.kind in ("rule", "policy") and event.hook:
        return event.hook
    if place in SOCKETS:
        return "socket"
    return place


def stops(walk: Walk) -> list[Stop]:
    """The places ``walk`` passes on the hooks picture, in order, without repeats in a row.

    Events are read one connection at a time. Each connection follows one of three roads
    (:data:`ROADS`): sent and delivered locally (round through ``lo``), sent out by ``eth0``,
    or arriving from ``eth0``. Between two places that come from events, the places of the
    road the packet passes without an event (a routing decision, a hook whose tables hold no
    rule for it, ``lo``) are filled in as *pass* stops (``event=None``).
    """
    subject = subject_pod(walk)
    segments: list[list[tuple[Stop, str, str]]] = []
    last_listener: str | None = None
    for event in walk.events:
        place = event_place(event, subject, last_listener)
        if place is None:
            continue
        if event.kind == "accept" and place.startswith("envoy"):
            last_listener = place
        item = (Stop(place, event.connection, event.index), stage_of(event, place),
                event.table or "nat")
        if not segments or segments[-1][0][0].connection != event.connection:
            segments.append([item])
        else:
            segments[-1].append(item)
    found: list[Stop] = []
    for segment in segments:
        for stop in _fill(segment):
            _append(found, stop)
    return found


ROADS: dict[str, tuple[str, ...]] = {
    "local": ("socket", "route_out", "OUTPUT", "POSTROUTING", "lo", "PREROUTING", "route_in",
              "INPUT", "socket"),
    "leave": ("socket", "route_out", "OUTPUT", "POSTROUTING", "eth0_out", "peer_out"),
    "arrive": ("peer_in", "eth0_in", "PREROUTING", "route_in", "INPUT", "socket"),
}
"""The three roads a connection's first packet can take through the pod."""

SOCKETS = ("app", "agent", "envoy_other", *ENVOY_LISTENERS.values())


def _road(stages: list[str]) -> tuple[str, ...]:
    if stages and stages[0] == "peer_in":
        return ROADS["arrive"]
    if "peer_out" in stages:
        return ROADS["leave"]
    return ROADS["local"]


def _fill(segment: list[tuple[Stop, str, str]]) -> list[Stop]:
    road = _road([stage for _, stage, _ in segment])
    out: list[Stop] = []
    cur = 0
    conn = segment[0][0].connection
    previous: tuple[Stop, str, str] | None = None
    for stop, stage, table in segment:
        low = cur if not (stage == "socket" and out) else max(cur, 1)
        idx = next((i for i in range(low, len(road)) if road[i] == stage), None)
        if idx is None:  # not on this road (should not happen): draw it anyway
            out.append(stop)
            continue
        if previous is not None and previous[0].place in ISTIO_CHAINS and stage != previous[1]:
            # Leaving an Istio chain for the next hook: back through the nat table it hangs on.
            out.append(Stop(f"{previous[1]}/{previous[2]}", conn, None))
        start = cur + 1 if out else idx
        for between in road[start:idx]:
            out.append(Stop(_pass_place(between), conn, None))
        out.append(stop)
        cur = idx
        previous = (stop, stage, table)
    return out


def _pass_place(stage: str) -> str:
    """A hook passed without an event is drawn through its frame (``"PREROUTING/-"``)."""
    if stage in ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"):
        return f"{stage}/-"
    return stage


def _append(found: list[Stop], stop: Stop) -> None:
    if found and found[-1].place == stop.place and found[-1].connection == stop.connection:
        return
    found.append(stop)
