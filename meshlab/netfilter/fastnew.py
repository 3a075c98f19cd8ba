"""Fast constructors for the frozen values that a big dump makes by the thousand.

A 20,000-rule dump makes a :class:`~meshlab.netfilter.rules.Rule` per rule, and often an
address match, a port match with its range, and a :class:`~meshlab.netfilter.ruleset.Chain`
per chain. They are frozen dataclasses, whose generated ``__init__`` has to get past their own
"frozen" ``__setattr__``, so it sets each field with ``object.__setattr__(self, "name",
value)`` -- a look-up by name for every field. With ``slots=True`` each field is a slot, and
storing straight into the slot (through its descriptor, found once here) makes the same object
in about half the time: ~20 ms of a 20,000-rule parse. :func:`slot_setters` refuses, at
import, a class whose fields changed or that gained a ``__post_init__`` (which this would
skip). The objects made are exactly those ``Rule(...)`` etc. would make.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable
from dataclasses import fields
from itertools import repeat

from meshlab.netfilter.rules import AddrMatch, PortMatch, PortRange, Rule
from meshlab.netfilter.ruleset import Chain


def slot_setters(cls: type, names: tuple[str, ...]) -> tuple:
    """The slot setters of ``cls``'s fields ``names``; refuses a class whose fields changed
    or that gained a ``__post_init__`` (which these constructors would skip)."""
    if tuple(f.name for f in fields(cls)) != names or hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} changed: update its fast constructor in fastnew.py")
    return tuple(cls.__dict__[name].__set__ for name in names)


_new = object.__new__
_RULE_SET = RULE_SETTERS = slot_setters(
    Rule, ("target", "src", "dst", "iif", "oif", "proto", "modules"))  # shapes.py uses them too
_ADDR_SET = slot_setters(AddrMatch, ("negated", "version", "net", "plen"))
_RANGE_SET = slot_setters(PortRange, ("negated", "lo", "hi"))
_PORTS_SET = slot_setters(PortMatch, ("module", "sport", "dport"))


def new_rule(target, src, dst, iif, oif, proto, modules) -> Rule:
    """``Rule(target, src, dst, iif, oif, proto, modules)``, made faster."""
    rule = _new(Rule)
    s_target, s_src, s_dst, s_iif, s_oif, s_proto, s_modules = _RULE_SET
    s_target(rule, target)
    s_src(rule, src)
    s_dst(rule, dst)
    s_iif(rule, iif)
    s_oif(rule, oif)
    s_proto(rule, proto)
    s_modules(rule, modules)
    return rule


def new_addr(negated: bool, version: int, net: int, plen: int) -> AddrMatch:
    """``AddrMatch(negated, version, net, plen)``, made faster."""
    match = _new(AddrMatch)
    s_negated, s_version, s_net, s_plen = _ADDR_SET
    s_negated(match, negated)
    s_version(match, version)
    s_net(match, net)
    s_plen(match, plen)
    return match


def new_range(negated: bool, lo: int, hi: int) -> PortRange:
    """``PortRange(negated, lo, hi)``, made faster."""
    rng = _new(PortRange)
    s_negated, s_lo, s_hi = _RANGE_SET
    s_negated(rng, negated)
    s_lo(rng, lo)
    s_hi(rng, hi)
    return rng


def new_ports(module: str, sport: PortRange | None, dport: PortRange | None) -> PortMatch:
    """``PortMatch(module, sport, dport)``, made faster."""
    match = _new(PortMatch)
    s_module, s_sport, s_dport = _PORTS_SET
    s_module(match, module)
    s_sport(match, sport)
    s_dport(match, dport)
    return match


_CHAIN_SET = slot_setters(Chain, ("name", "policy", "rules"))


def new_chain(name: str, policy: str | None, rules: tuple[Rule, ...]) -> Chain:
    """``Chain(name, policy, rules)``, faster (a kube-proxy dump has 10,000 chains)."""
    chain = _new(Chain)
    s_name, s_policy, s_rules = _CHAIN_SET
    s_name(chain, name)
    s_policy(chain, policy)
    s_rules(chain, rules)
    return chain


def new_chains(names: Collection[str], policies: Iterable[str | None],
               rules: Iterable[tuple[Rule, ...]]) -> list[Chain]:
    """``[Chain(n, p, r) for n, p, r in zip(names, policies, rules)]``, all at once: each
    field is stored for every chain by one ``map`` over its slot setter, which runs at C
    speed with no Python call per chain (``deque(..., maxlen=0)`` just drives a ``map``)."""
    s_name, s_policy, s_rules = _CHAIN_SET
    chains = list(map(_new, repeat(Chain, len(names))))
    deque(map(s_name, chains, names), maxlen=0)
    deque(map(s_policy, chains, policies), maxlen=0)
    deque(map(s_rules, chains, rules), maxlen=0)
    return chains
