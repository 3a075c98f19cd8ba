"""The lessons' world, and the small helpers the checkers use to ask the model.

The constants name the pod, the peer and the Services of ``data/scenarios.yaml``. The helpers
build the rules istio-init would write for some flags (:func:`rules_for`, cached), a fresh
network namespace of the pod, a peer's packet arriving (:func:`receive`) or the app's
connection leaving (:func:`connect`), run a scenario's walk (:func:`run_walk`), and turn a
trace or a walk into the lines a :class:`~meshlab.exercises.result.CheckResult` shows as its
evidence. The library is imported inside the functions, so that importing the exercises
stays cheap for a notebook.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from functools import lru_cache
from ipaddress import IPv4Address, IPv4Interface
from typing import TYPE_CHECKING

from meshlab import datafiles

if TYPE_CHECKING:
    from meshlab.netfilter.kernel import Netns
    from meshlab.netfilter.ruleset import Ruleset
    from meshlab.netfilter.trace import Trace
    from meshlab.walk import Event, Walk


#: The world of the lessons (see ``meshlab/data/scenarios.yaml``): the pod and the peer.
POD_IP = IPv4Address("10.244.0.5")
PEER_IP = IPv4Address("10.244.0.9")
REVIEWS_VIP = IPv4Address("10.96.0.20")
LEGACY_DB_IP = IPv4Address("192.168.10.20")
APP_UID = 1000
PEER_SPORT = 43210

#: Bookinfo's productpage pod, as shipped with the package (:mod:`meshlab.datafiles`).
PRODUCTPAGE_POD = datafiles.data_file(datafiles.PRODUCTPAGE_POD)


def default_flags() -> tuple[str, ...]:
    from meshlab.istio.flags import DEFAULT_ISTIO_INIT_ARGS

    return tuple(DEFAULT_ISTIO_INIT_ARGS)


@lru_cache(maxsize=32)
def rules_for(flags: tuple[str, ...]) -> Ruleset:
    from meshlab.istio.capture import generate
    from meshlab.istio.flags import CaptureConfig

    return generate(CaptureConfig.from_args(list(flags))).ruleset_v4


def pod_netns(ruleset: Ruleset, pod_ip: IPv4Address = POD_IP) -> Netns:
    """A fresh network namespace of the lessons' pod: lo 127.0.0.1/8, eth0 POD_IP/24."""
    from meshlab.netfilter.kernel import Interface, Netns

    return Netns(ruleset, (Interface("lo", (IPv4Interface("127.0.0.1/8"),)),
                           Interface("eth0", (IPv4Interface(f"{pod_ip}/24"),))))


def receive(ruleset: Ruleset, port: int, *, dst: IPv4Address = POD_IP) -> tuple[Netns, Trace]:
    """A peer's first TCP packet arriving on eth0 for ``dst:port``."""
    from meshlab.netfilter.packet import Packet

    netns = pod_netns(ruleset)
    packet = Packet("tcp", PEER_IP, PEER_SPORT, dst, port, iif="eth0")
    return netns, netns.receive(packet, "eth0")


def connect(ruleset: Ruleset, dst: IPv4Address, port: int, *, uid: int = APP_UID,
            gid: int | None = None) -> Trace:
    """A local process (``uid``) opening a TCP connection to ``dst:port``."""
    netns = pod_netns(ruleset)
    return netns.connect(proto="tcp", dst=dst, dport=port, uid=uid,
                         gid=uid if gid is None else gid)


def trace_lines(trace: Trace) -> tuple[str, ...]:
    lines = [f"{e.hook:<11} {e.table:<6} {e.chain} rule {e.rule}: {e.text}  ->  {e.verdict}"
             for e in trace.hits]
    where = f"{trace.delivered[0]}:{trace.delivered[1]}"
    orig = f"{trace.original_dst[0]}:{trace.original_dst[1]}"
    if trace.verdict == "DROP":
        lines.append("verdict: DROP (the packet is discarded; the peer gets no answer)")
    elif trace.nat is not None:
        lines.append(f"nat: {trace.nat.target} in {trace.nat.chain} rule {trace.nat.rule}: "
                     f"{orig} -> {where}")
    else:
        lines.append(f"no NAT: the connection stays addressed to {orig}")
    return tuple(lines)


def run_walk(name: str, *, without_rules: Sequence[str] = (),
             flags: str | Sequence[str] | None = None) -> Walk:
    from meshlab.scenarios import run_scenario

    return run_scenario(name, without_rules=tuple(without_rules), flags=flags)


def walk_lines(walk: Walk, *, limit: int = 40) -> tuple[str, ...]:
    lines: list[str] = []
    for event in walk.hits:
        where = ""
        if event.kind == "rule":
            where = f"{event.hook} {event.table} {event.chain} rule {event.rule}: {event.text} "
        elif event.listener:
            where = f"{event.listener} "
        lines.append(f"[{event.connection}] {event.actor:<6} {event.kind:<8} {where}"
                     f"-> {event.decision}")
    if len(lines) > limit:
        lines = [*lines[: limit - 1], f"... ({len(lines) - limit + 1} more events)"]
    lines.append(f"outcome: {walk.outcome}"
                 + (f" ({walk.reason})" if getattr(walk, "reason", "") else ""))
    return tuple(lines)


def proxy_events(walk: Walk) -> list[Event]:
    return [e for e in walk.events if e.actor == "proxy" and e.kind == "proxy"]


def listener_ports(walk: Walk) -> tuple[int, ...]:
    from meshlab.scenarios import proxy_listeners

    return proxy_listeners(walk)


#: What each istio-iptables flag a lesson meets decides, in a learner's words.
FLAG_MEANINGS: dict[str, str] = {
    "-p": "the port outbound connections are redirected to",
    "-z": "the port inbound connections are redirected to",
    "-u": "the proxy's UID, whose connections are let out",
    "-g": "the proxy's GID, whose connections are let out",
    "-b": "the inbound ports that are captured ('*' for all)",
    "-d": "the inbound ports left alone when -b is '*'",
    "-i": "the outbound address ranges that are captured ('*' for all)",
    "-x": "the outbound address ranges left alone",
    "-o": "the outbound ports left alone",
    "-q": "the outbound ports captured even when -i leaves their address alone",
}


def flag_changes(args: Sequence[str], base: Sequence[str] | None = None) -> tuple[str, ...]:
    """One sentence per flag whose value in ``args`` differs from ``base`` (the default
    flags): ``"-o 9091 (the outbound ports left alone; default: not set)"``."""
    def values(words: Sequence[str]) -> dict[str, str]:
        return {w: words[i + 1] for i, w in enumerate(words[:-1]) if w.startswith("-")}

    old, new = values(default_flags() if base is None else base), values(args)
    out = []
    for flag in sorted(set(old) | set(new)):
        if old.get(flag) == new.get(flag):
            continue
        meaning = FLAG_MEANINGS.get(flag, "a flag of istio-iptables")
        was = shlex.quote(old[flag]) if flag in old else "not set"
        now = f"{flag} {shlex.quote(new[flag])}" if flag in new else f"{flag} not set"
        out.append(f"{now} ({meaning}; default: {was})")
    return tuple(out)


def counter_lines(counters: dict) -> tuple[str, ...]:
    """``{(table, chain, rule): n}`` -> ``"nat ISTIO_OUTPUT rule 1: 1"`` lines, zeros left out
    (rule 0 is the chain's policy)."""
    return tuple(f"{t} {c} {f'rule {r}' if r else 'policy'}: {n}"
                 for (t, c, r), n in sorted(counters.items()) if n)
