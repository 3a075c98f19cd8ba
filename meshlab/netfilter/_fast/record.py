"""The trace record of the fast path: one entry per run of rules, expanded when read."""

from __future__ import annotations

from typing import Any

from meshlab.netfilter._fast.chains import FastChain
from meshlab.netfilter.packet import Skb
from meshlab.netfilter.trace import RuleEval


class Run:
    """Rules ``start..stop`` of one chain visit, the packet as they saw it (``snap``), and
    whether the last one matched; ``stop`` ``-1``: the chain's policy applied.

    The rules before ``stop`` did not match the packet (or the index showed they could not);
    :meth:`expand` asks each of them why, with :meth:`Rule.why_not` on the same packet.
    """

    __slots__ = ("chain", "hook", "matched", "snap", "start", "stop", "table", "verdict",
                 "version")

    def __init__(self, hook: str, table: str, chain: FastChain, start: int, stop: int,
                 matched: bool, verdict: str, snap: tuple[Any, ...], version: int) -> None:
        self.hook, self.table, self.chain = hook, table, chain
        self.start, self.stop, self.matched, self.verdict = start, stop, matched, verdict
        self.snap, self.version = snap, version

    def expand(self) -> list[RuleEval]:
        skb = Skb.from_snapshot(self.snap)
        packet = skb.packet(self.version)
        chain = self.chain
        if self.stop < 0:
            policy = chain.policy or "ACCEPT"
            return [RuleEval(self.hook, self.table, chain.name, 0,
                             f"-P {chain.name} {policy}", True, policy, packet, policy)]
        out = []
        for i in range(self.start, self.stop + 1):
            rule = chain.rules[i]
            hit = self.matched and i == self.stop
            out.append(RuleEval(self.hook, self.table, chain.name, i + 1, chain.text(i), hit,
                                self.verdict if hit else "", packet, rule.target.name,
                                None if hit else rule.why_not(skb)))
        return out
