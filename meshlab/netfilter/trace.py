"""The result of sending one packet through the model: a :class:`Trace`.

A trace lists every rule the packet was tested against, in order, with the packet as that
rule saw it, whether it matched and what happened - or, for a rule it passed over, the first
condition that failed, in words (:attr:`RuleEval.why_not`) - plus where the connection ended
up. Only the first packet of a connection is traced: it is the only one the nat table sees,
and the one conntrack remembers for all the others.

The reference traversal records :class:`RuleEval` objects as it goes; the fast one
(:mod:`meshlab.netfilter._fast`) records a run of rules per chain visit and builds the
:class:`RuleEval` objects the first time you read :attr:`Trace.evaluations`, so tracing stays
fast when nobody looks at every rule of a 20,000-rule chain. Both read the same.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from meshlab.netfilter.conntrack import Connection
from meshlab.netfilter.packet import IPAddress, Packet


@dataclass(frozen=True)
class RuleEval:
    """One rule (or a built-in chain's policy) evaluated for one packet."""

    hook: str
    table: str
    chain: str
    rule: int  # 1-based as `iptables -L --line-numbers`; 0 = the chain's policy
    text: str  # restore form without "-A CHAIN"; "-P CHAIN ACCEPT" for a policy
    matched: bool
    verdict: str  # "jump ISTIO_OUTPUT", "RETURN", "REDIRECT 127.0.0.1:15001", "ACCEPT", "" ...
    packet: Packet
    target: str = ""  # the rule's target name: "ISTIO_OUTPUT", "RETURN", "REDIRECT", ...
    why_not: str | None = None
    """Why the rule did not match, e.g. "`-o lo`: the packet leaves by eth0"; ``None`` when it
    matched, and for a chain's policy."""


@dataclass(frozen=True)
class NatDecision:
    """Which rule rewrote the connection's destination, and to what."""

    target: str  # "REDIRECT" | "DNAT" | "TPROXY"
    table: str
    chain: str
    rule: int
    to: tuple[IPAddress, int]


@dataclass(frozen=True)
class Trace:
    """Where one connection's first packet went, and why."""

    direction: str  # "outbound" (Netns.connect) | "inbound" (Netns.receive) | "reply" (answer)
    verdict: str  # "ACCEPT" | "DROP"
    original_dst: tuple[IPAddress, int]
    delivered: tuple[IPAddress, int]  # destination after NAT / TPROXY
    local: bool  # delivered to a socket in this namespace
    out_iface: str | None  # the interface it left by (outbound): "lo" / "eth0"
    nat: NatDecision | None
    connection: Connection
    notes: tuple[str, ...] = ()  # routing facts worth telling: "not local: pods do not forward"
    segments: tuple[Any, ...] = field(default=(), repr=False, compare=False)
    """What the traversal recorded: :class:`RuleEval` s, or runs of rules that expand into
    them (``expand()``); read :attr:`evaluations`."""
    reply_src: tuple[IPAddress, int] | None = None
    """For an answer (``Netns.answer``): the source the receiver sees, after conntrack put a
    NATed connection's address back (a DNS answer from 127.0.0.1:15053 reaches the client as
    coming from 10.96.0.10:53). ``None`` for first packets."""

    @cached_property
    def evaluations(self) -> tuple[RuleEval, ...]:
        """Every rule evaluated, in order (built from the compact record on first use)."""
        out: list[RuleEval] = []
        for segment in self.segments:
            if isinstance(segment, RuleEval):
                out.append(segment)
            else:
                out.extend(segment.expand())
        return tuple(out)

    @property
    def passed_over(self) -> tuple[RuleEval, ...]:
        """The rules tried that did not match, each with its :attr:`RuleEval.why_not`."""
        return tuple(e for e in self.evaluations if not e.matched)

    @cached_property
    def hits(self) -> tuple[RuleEval, ...]:
        """The rules that matched, in order (chain policies are not rules and are left out)."""
        return tuple(e for e in self.evaluations if e.matched and e.rule > 0)

    def to_json(self) -> dict:
        """The ``meshlab trace --json`` object."""
        nat = None if self.nat is None else {
            "target": self.nat.target, "chain": self.nat.chain, "rule": self.nat.rule}
        return {
            "direction": self.direction,
            "verdict": self.verdict,
            "original_dst": {"ip": str(self.original_dst[0]), "port": self.original_dst[1]},
            "delivered": {"ip": str(self.delivered[0]), "port": self.delivered[1]},
            "nat": nat,
            "hits": [{"table": e.table, "chain": e.chain, "rule": e.rule, "target": e.target}
                     for e in self.hits],
        }

    def evaluated_json(self) -> list[dict]:
        """Every rule tried, in order, with why it did not match (``meshlab trace --all
        --json`` puts this under ``"evaluated"``); chain policies are left out."""
        return [{"table": e.table, "chain": e.chain, "rule": e.rule, "text": e.text,
                 "matched": e.matched, "why_not": e.why_not}
                for e in self.evaluations if e.rule > 0]


def passed_over_by_chain(evaluations: Iterable[Any]) -> list[tuple[str, list[Any]]]:
    """The rules that did not match, grouped under the chain they belong to, in order:
    ``[("nat ISTIO_OUTPUT (from OUTPUT)", [evaluation, ...]), ...]``. A new group starts
    whenever the chain changes (a chain visited twice shows twice). Works on
    :class:`RuleEval` s and on the rule events of a walk alike (both have ``hook``,
    ``table``, ``chain``, ``rule``, ``text``, ``matched`` and ``why_not``)."""
    groups: list[tuple[str, list[Any]]] = []
    last = None
    for e in evaluations:
        if e.matched or not e.rule:
            continue
        where = (e.hook, e.table, e.chain)
        if where != last:
            title = f"{e.table} {e.chain}" + ("" if e.chain == e.hook else f" (from {e.hook})")
            groups.append((title, []))
            last = where
        groups[-1][1].append(e)
    return groups


def reason_line(evaluation: Any) -> str:
    """One passed-over rule in one line: "rule 2 (-j RETURN): `-o lo`: the packet leaves by
    eth0"."""
    target = evaluation.text.rpartition(" -j ")[2] if " -j " in evaluation.text else ""
    jump = f" (-j {target})" if target else ""
    return f"rule {evaluation.rule}{jump}: {evaluation.why_not}"
