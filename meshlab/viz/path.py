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

from collections.abc import Sequence
from dataclasses import dataclass

from meshlab.walk import Event, Walk

#: The chains drawn as boxes of their own; rules in other chains are drawn on their table.
ISTIO_CHAINS = ("ISTIO_INBOUND", "ISTIO_IN_REDIRECT", "ISTIO_OUTPUT", "ISTIO_REDIRECT")

#: The Envoy listeners that have a socket box of their own.
ENVOY_LISTENERS = {15001: "envoy15001", 15006: "envoy15006"}

#: Hooks a locally created packet passes, and hooks an arriving packet passes.
LOCAL_OUT = ("OUTPUT", "POSTROUTING")
ARRIVING = ("PREROUTING", "INPUT")


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

    The world calls every process of other pods a ``peer``; so the subject is the pod of the
    first event whose actor is ``app``, ``proxy`` or ``agent`` (or of the first kernel event).
    """
    for event in walk.events:
        if event.actor in ("app", "proxy", "agent") and event.pod:
            return event.pod
    for event in walk.events:
        if event.actor == "kernel" and event.pod:
            return event.pod
    return ""


def socket_place(event: Event, last_listener: str | None) -> str:
    """The socket box for an event of a process in the subject pod."""
    if event.listener:
        port = _port(event.listener)
        if port in ENVOY_LISTENERS:
            return ENVOY_LISTENERS[port]
        return "envoy_other"
    if event.actor == "proxy":
        if event.kind == "connect" and last_listener is not None:
            return last_listener  # Envoy's upstream starts where it accepted the downstream
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
        if event.actor == "peer" and event.kind == "connect":
            return "peer_in"
        return "peer_out"
    if event.actor in ("peer", "node"):
        return "peer_out"
    if event.kind in ("rule", "policy"):
        if event.kind == "rule" and not event.matched:
            return None
        if event.chain in ISTIO_CHAINS:
            return event.chain
        if event.hook and event.table:
            return f"{event.hook}/{event.table}"
        return None
    if event.kind in ("connect", "accept", "proxy", "deliver", "close", "loop"):
        return socket_place(event, last_listener)
    return None


def stops(walk: Walk) -> list[Stop]:
    """The places ``walk`` passes on the hooks picture, in order, without repeats in a row."""
    subject = subject_pod(walk)
    found: list[Stop] = []
    last_listener: str | None = None
    for event in walk.events:
        place = event_place(event, subject, last_listener)
        if place is None:
            continue
        if event.kind == "accept" and place.startswith("envoy"):
            last_listener = place
        _append(found, Stop(place, event.connection, event.index))
    return _with_wires(found)


def _hook(place: str) -> str | None:
    return place.split("/", 1)[0] if "/" in place else _CHAIN_HOOK.get(place)


_CHAIN_HOOK = {"ISTIO_INBOUND": "PREROUTING", "ISTIO_OUTPUT": "OUTPUT",
               "ISTIO_REDIRECT": "OUTPUT", "ISTIO_IN_REDIRECT": None}


def _append(found: list[Stop], stop: Stop) -> None:
    if found and found[-1].place == stop.place and found[-1].connection == stop.connection:
        return
    found.append(stop)


def _with_wires(found: Sequence[Stop]) -> list[Stop]:
    """Add the routing decisions and the ``lo``/``eth0`` wires between hooks."""
    out: list[Stop] = []
    previous_hook: str | None = None
    for stop in found:
        hook = _hook(stop.place)
        if stop.place == "ISTIO_IN_REDIRECT" and out:
            hook = previous_hook  # reached from PREROUTING or from OUTPUT: stay in that hook
        if out:
            before = out[-1].place
            if hook == "OUTPUT" and previous_hook not in ("OUTPUT",) and _is_socket(before):
                out.append(Stop("route_out", stop.connection, None))
            if hook in ARRIVING and previous_hook == "POSTROUTING":
                out.append(Stop("lo", stop.connection, None))
            if hook == "INPUT" and previous_hook == "PREROUTING":
                out.append(Stop("route_in", stop.connection, None))
            if stop.place == "peer_out" and previous_hook == "POSTROUTING":
                out.append(Stop("eth0_out", stop.connection, None))
            if hook == "PREROUTING" and before == "peer_in":
                out.append(Stop("eth0_in", stop.connection, None))
        if hook is not None:
            previous_hook = hook
        elif _is_socket(stop.place) or stop.place.startswith("peer"):
            previous_hook = None
        out.append(stop)
    return out


def _is_socket(place: str) -> bool:
    return place in ("app", "agent", "envoy_other") or place in ENVOY_LISTENERS.values()
