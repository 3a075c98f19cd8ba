"""The fast traversal of one built-in chain: the reference loop of
:meth:`meshlab.netfilter.kernel.Netns._chain`, with two changes: a long chain is tried only at
the rules its :class:`~.index.CandidateIndex` picks, and what happened is recorded as
:class:`~.record.Run` s, expanded into rule evaluations only when read."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from meshlab.netfilter._fast.chains import FastChain
from meshlab.netfilter._fast.record import Run
from meshlab.netfilter.packet import Skb

Hit = Callable[[str, str, str, int, Any, Skb], tuple[str, str, Any]]
"""``Netns._hit``: what a matched rule does (next step, words, NAT decision)."""


def traverse(chains: Mapping[str, FastChain], hook: str, table: str, skb: Skb, log: list,
             counters: dict, hit_rule: Hit, version: int) -> tuple[str, Any]:
    """Traverse the built-in chain ``hook`` of ``chains`` (one table), and the user chains it
    jumps to. Returns (``"ACCEPT"`` | ``"DROP"``, NAT decision or ``None``)."""
    chain = chains[hook]
    callers: list[tuple[FastChain, Sequence[int], int]] = []
    cands = chain.candidates(skb)
    pos, start = 0, 0  # pos: in cands; start: the first rule of the current run
    while True:
        rules, tests = chain.rules, chain.tests
        hit = -1
        for k in range(pos, len(cands)):
            for fails, option in tests[cands[k]]:
                if fails(skb, option) is not None:
                    break
            else:
                hit, pos = cands[k], k
                break
        if hit < 0:  # fell off the end of the chain
            if start < len(rules):
                log.append(Run(hook, table, chain, start, len(rules) - 1, False, "",
                               skb.snapshot(), version))
            if callers:  # end of a user chain: back to the caller
                chain, cands, k = callers.pop()
                pos, start = k + 1, cands[k] + 1
                continue
            return _policy(hook, table, chain, skb, log, counters, version), None
        counters[(table, chain.name, hit + 1)] += 1
        snap = skb.snapshot()
        target = rules[hit].target
        step, words, nat = hit_rule(hook, table, chain.name, hit, target, skb)
        log.append(Run(hook, table, chain, start, hit, True, words, snap, version))
        if step == "jump":
            callers.append((chain, cands, pos))
            chain = chains[target.chain]
            cands, pos, start = chain.candidates(skb), 0, 0
        elif step == "RETURN":
            if not callers:  # RETURN in a built-in chain: its policy
                return _policy(hook, table, chain, skb, log, counters, version), None
            chain, cands, k = callers.pop()
            pos, start = k + 1, cands[k] + 1
        elif step == "next":
            pos, start = pos + 1, hit + 1
        else:
            return step, nat


def _policy(hook: str, table: str, chain: FastChain, skb: Skb, log: list, counters: dict,
            version: int) -> str:
    counters[(table, chain.name, 0)] += 1
    log.append(Run(hook, table, chain, 0, -1, True, chain.policy or "ACCEPT", skb.snapshot(),
                   version))
    return chain.policy or "ACCEPT"
