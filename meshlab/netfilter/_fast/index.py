"""Which rules of a long chain could match a packet, so the rest need not be tested."""

from __future__ import annotations

from collections import defaultdict

from meshlab.netfilter.packet import Skb
from meshlab.netfilter.rules import AddrMatch, PortMatch, Rule


class CandidateIndex:
    """A rule with ``-d NET`` (not negated) can only match packets whose destination is in
    NET; a rule with ``--dport P`` only packets to port P. Rules are bucketed by the first of
    these they have; a packet's candidates are its buckets plus the rules with neither, in
    rule order. The answer is exactly that of trying every rule, only faster.
    """

    MIN_RULES = 16
    """Chains shorter than this are tried rule by rule: the index would not pay for itself."""

    def __init__(self, rules: tuple[Rule, ...]) -> None:
        self.by_dst: dict[tuple[int, int], list[int]] = defaultdict(list)
        self.by_dport: dict[int, list[int]] = defaultdict(list)
        self.rest: list[int] = []
        masks: dict[int, int] = {}
        for i, rule in enumerate(rules):
            dst: AddrMatch | None = rule.dst
            port = next((m.dport for m in rule.modules if isinstance(m, PortMatch)
                         and m.dport is not None), None)
            if dst is not None and not dst.negated:
                bits = 32 if dst.version == 4 else 128
                masks[dst.plen] = ((1 << bits) - 1) ^ ((1 << (bits - dst.plen)) - 1)
                self.by_dst[(dst.plen, dst.net)].append(i)
            elif port is not None and not port.negated and port.lo == port.hi:
                self.by_dport[port.lo].append(i)
            else:
                self.rest.append(i)
        self.masks = tuple(masks.items())

    def candidates(self, skb: Skb) -> list[int]:
        """The positions of the rules that could match ``skb``, in rule order."""
        found = [self.rest]
        for plen, mask in self.masks:
            bucket = self.by_dst.get((plen, skb.dst & mask))
            if bucket:
                found.append(bucket)
        bucket = self.by_dport.get(skb.dport)
        if bucket:
            found.append(bucket)
        if len(found) == 1:
            return self.rest
        merged = [i for run in found for i in run]
        merged.sort()  # sorted runs: timsort merges them in linear time
        return merged
