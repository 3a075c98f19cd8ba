"""Rulesets: tables of chains of rules, as one network namespace holds them.

A :class:`Ruleset` is immutable. Editing helpers (:meth:`Ruleset.without_rule`,
:meth:`Ruleset.without`) return a new ruleset. Two rulesets compare equal when the kernel would
hold the same rules: the form they were written in (restore input, ``iptables-save`` output,
command lines) and counters do not matter, and an untouched table (only empty built-in chains
with policy ACCEPT) counts as absent.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple

from meshlab.errors import MeshlabError
from meshlab.netfilter.rules import Rule

BUILTIN_CHAINS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "raw": ("PREROUTING", "OUTPUT"),
})
"""The tables this model knows, and their built-in chains in ``iptables-save`` order."""

TABLE_ORDER = ("filter", "mangle", "nat", "raw")

Counters = Mapping[tuple[str, str, int], "int | tuple[int, int]"]
"""(table, chain, rule) -> packets, or (packets, bytes); rule 0 is the chain's policy."""


class Chain(NamedTuple):
    """A chain: built-in ones have a policy (``ACCEPT``/``DROP``), user chains ``None``."""

    name: str
    policy: str | None
    rules: tuple[Rule, ...] = ()

    @property
    def builtin(self) -> bool:
        return self.policy is not None


@dataclass(frozen=True)
class Table:
    name: str
    chains: Mapping[str, Chain]

    @property
    def untouched(self) -> bool:
        """Only empty built-in chains with policy ACCEPT: the same as no table at all."""
        return all(c.builtin and not c.rules and c.policy == "ACCEPT" for c in self.chains.values())

    def ordered_chains(self) -> list[Chain]:
        """Built-ins in kernel order, then user chains sorted by name (as ``iptables-save``)."""
        builtins = [self.chains[n] for n in BUILTIN_CHAINS[self.name] if n in self.chains]
        users = sorted((c for c in self.chains.values() if not c.builtin), key=lambda c: c.name)
        return builtins + users


@dataclass(frozen=True)
class RuleRef:
    """Where a rule is: its table, chain and 1-based position (``iptables -L --line-numbers``)."""

    table: str
    chain: str
    index: int
    rule: Rule


class Ruleset:
    """The netfilter rules of one namespace, for one family (``"ipv4"`` or ``"ipv6"``)."""

    __slots__ = ("_compiled", "counters", "family", "tables")

    def __init__(self, family: str, tables: Mapping[str, Table],
                 counters: Counters | None = None) -> None:
        if family not in ("ipv4", "ipv6"):
            raise MeshlabError(f"family must be 'ipv4' or 'ipv6', not {family!r}")
        self.family = family
        self.tables: Mapping[str, Table] = MappingProxyType(dict(tables))
        self.counters: Counters = MappingProxyType(dict(counters or {}))
        self._compiled: object = None  # filled by netfilter._fast.compile_ruleset, once

    @classmethod
    def from_chains(cls, family: str,
                    chains: Mapping[str, Mapping[str, tuple[str | None, list[Rule]]]],
                    counters: Counters | None = None) -> Ruleset:
        """Build from ``{table: {chain: (policy, rules)}}``; built-in chains are filled in."""
        tables = {}
        for tname, table_chains in chains.items():
            made = {n: Chain(n, "ACCEPT") for n in BUILTIN_CHAINS[tname]}
            for cname, (policy, rules) in table_chains.items():
                made[cname] = Chain(cname, policy, tuple(rules))
            tables[tname] = Table(tname, MappingProxyType(made))
        return cls(family, tables, counters)

    # ---------------------------------------------------------------- reading
    def rules(self) -> Iterator[RuleRef]:
        """Every rule, table by table, chain by chain, in ``iptables-save`` order."""
        for tname in TABLE_ORDER:
            table = self.tables.get(tname)
            if table is None:
                continue
            for chain in table.ordered_chains():
                for i, rule in enumerate(chain.rules, 1):
                    yield RuleRef(tname, chain.name, i, rule)

    def chain(self, table: str, chain: str) -> Chain | None:
        t = self.tables.get(table)
        return None if t is None else t.chains.get(chain)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Ruleset):
            return NotImplemented
        return self.family == other.family and self._semantic() == other._semantic()

    def __hash__(self) -> int:
        return hash((self.family, tuple(sorted(self._semantic()))))

    def _semantic(self) -> dict[str, Mapping[str, Chain]]:
        return {n: t.chains for n, t in self.tables.items() if not t.untouched}

    def __repr__(self) -> str:
        count = sum(1 for _ in self.rules())
        return f"<Ruleset {self.family}: {count} rules in {', '.join(self.tables) or 'no tables'}>"

    # ---------------------------------------------------------------- editing
    def without_rule(self, rule: Rule, *, table: str | None = None,
                     chain: str | None = None) -> Ruleset:
        """A copy without every rule equal to ``rule`` (only in ``table`` and ``chain`` when
        they are given). Raises :class:`MeshlabError` if none is equal.

        To remove a rule given as text, read it first: ``table, chain, rule =
        parse_rule_spec("-t nat -A OUTPUT -j RETURN")``
        (:func:`meshlab.netfilter.parse.parse_rule_spec`)."""
        if not isinstance(rule, Rule):
            raise TypeError(f"without_rule takes a Rule, not {type(rule).__name__}: read rule "
                            "text first, e.g. table, chain, rule = parse_rule_spec(text)")
        refs = [r for r in self.rules() if r.rule == rule
                and (table is None or r.table == table) and (chain is None or r.chain == chain)]
        if not refs:
            where = f" in {table or 'any table'} {chain or ''}".rstrip()
            raise MeshlabError(
                f"no rule equal to {rule.text!r}{where}; list the rules with render_save() "
                "and copy one of them")
        return self._drop({(r.table, r.chain, r.index) for r in refs})

    def without(self, table: str, chain: str, index: int) -> Ruleset:
        """A copy without rule ``index`` (1-based) of ``table``/``chain``."""
        found = self.chain(table, chain)
        if found is None:
            raise MeshlabError(f"there is no chain {chain!r} in table {table!r}")
        if not 1 <= index <= len(found.rules):
            raise MeshlabError(
                f"{table} {chain} has {len(found.rules)} rules; index {index} is out of range "
                "(rules are numbered from 1)")
        return self._drop({(table, chain, index)})

    def _drop(self, doomed: set[tuple[str, str, int]]) -> Ruleset:
        tables = {}
        for tname, table in self.tables.items():
            chains = {}
            for cname, chain in table.chains.items():
                kept = tuple(r for i, r in enumerate(chain.rules, 1)
                             if (tname, cname, i) not in doomed)
                chains[cname] = chain if len(kept) == len(chain.rules) else Chain(
                    cname, chain.policy, kept)
            tables[tname] = Table(tname, MappingProxyType(chains))
        return Ruleset(self.family, tables)

    # ---------------------------------------------------------------- rendering
    def render_save(self, counters: Counters | None = None) -> str:
        """What ``iptables-save`` prints (``iptables-save -c`` when ``counters`` is given:
        every rule gets a ``[packets:bytes]`` prefix; the model counts packets, so bytes are 0
        unless a (packets, bytes) pair is given)."""
        cmd = "ip6tables-save" if self.family == "ipv6" else "iptables-save"
        return self._render(counters, header=f"# Generated by meshlab as {cmd}")

    def render_restore(self) -> str:
        """An ``iptables-restore`` document that recreates these rules."""
        return self._render(None, header=None)

    def _render(self, counters: Counters | None, header: str | None) -> str:
        lines: list[str] = []
        for tname in TABLE_ORDER:
            table = self.tables.get(tname)
            if table is None:
                continue
            if header:
                lines.append(header)
            lines.append(f"*{tname}")
            chains = table.ordered_chains()
            for chain in chains:
                pb = _pb(counters, (tname, chain.name, 0)) if chain.builtin else "[0:0]"
                lines.append(f":{chain.name} {chain.policy or '-'} {pb}")
            for chain in chains:
                for i, rule in enumerate(chain.rules, 1):
                    prefix = "" if counters is None else _pb(counters, (tname, chain.name, i)) + " "
                    lines.append(f"{prefix}-A {chain.name} {rule.text}")
            lines.append("COMMIT")
            if header:
                lines.append("# Completed")
        return "\n".join(lines) + "\n"


def _pb(counters: Counters | None, key: tuple[str, str, int]) -> str:
    value = 0 if counters is None else counters.get(key, 0)
    packets, nbytes = value if isinstance(value, tuple) else (value, 0)
    return f"[{packets}:{nbytes}]"
