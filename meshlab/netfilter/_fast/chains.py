"""Each chain of a ruleset, prepared once: its candidate index and its rules' texts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from meshlab.netfilter._fast.index import CandidateIndex
from meshlab.netfilter.packet import Skb
from meshlab.netfilter.rules import Rule
from meshlab.netfilter.ruleset import BUILTIN_CHAINS, Ruleset


class FastChain:
    """One chain with its :class:`CandidateIndex` (for long chains); per rule its conditions
    as ``(match._fails, option)`` pairs (``Rule.conditions``: a rule matches when none of them
    finds a failure, as ``Rule.matches`` says, with two calls a rule fewer); and the rules'
    texts, written the first time a trace shows them (``Rule.text`` writes them anew)."""

    __slots__ = ("index", "name", "policy", "rules", "tests", "texts")

    def __init__(self, name: str, policy: str | None, rules: tuple[Rule, ...]) -> None:
        self.name, self.policy, self.rules = name, policy, rules
        self.tests = tuple(tuple((m._fails, o) for m, o in r.conditions()) for r in rules)
        self.index = CandidateIndex(rules) if len(rules) >= CandidateIndex.MIN_RULES else None
        self.texts: list[str | None] | None = None

    def candidates(self, skb: Skb) -> Sequence[int]:
        return range(len(self.rules)) if self.index is None else self.index.candidates(skb)

    def text(self, i: int) -> str:
        texts = self.texts
        if texts is None:
            texts = self.texts = [None] * len(self.rules)
        text = texts[i]
        if text is None:
            text = texts[i] = self.rules[i].text
        return text


def compile_ruleset(ruleset: Ruleset) -> Mapping[str, Mapping[str, FastChain]]:
    """Every chain of ``ruleset`` prepared once (kept on the ruleset, which is immutable),
    missing built-in chains as empty ones with policy ACCEPT."""
    if ruleset._compiled is None:
        compiled: dict[str, dict[str, FastChain]] = {}
        for tname, table in ruleset.tables.items():
            chains = {n: FastChain(n, c.policy, c.rules) for n, c in table.chains.items()}
            for name in BUILTIN_CHAINS[tname]:
                chains.setdefault(name, FastChain(name, "ACCEPT", ()))
            compiled[tname] = chains
        ruleset._compiled = compiled
    return ruleset._compiled
