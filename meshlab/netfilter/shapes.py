"""Shape plans: reading the thousands of rules of a dump that share one shape, fast.

Dumps repeat themselves. The 20,000 rules of a kube-proxy dump come in four shapes, e.g.
``-A KUBE-SEP-X -s 10.244.0.7/32 -m comment --comment "ns/svc:http" -j KUBE-MARK-MASQ``,
where only the chain, the address and the comment change from one rule to the next. Reading
each rule option by option (:func:`meshlab.netfilter.options.read_rule`) takes the same
decisions 20,000 times. So the first rule of each shape is read the slow way, and what it
taught us is kept as a :class:`Plan`: which words are values (an address, a port, a comment,
the chain jumped to) and which part of the rule each one makes. A plan applies to another
line when that line has the same number of words and the same words everywhere else; the
option reader's decisions only ever depend on those other words, so the line then reads
exactly as the first one did, with its own values. Each value is still checked by the same
functions as on the slow path (:mod:`meshlab.netfilter.values`,
:func:`~meshlab.netfilter.options.make_module`,
:func:`~meshlab.netfilter.options.make_target`), and identical values (the same port, the
same DNAT target) are converted once, through the memos of :mod:`meshlab.netfilter.memos`.
Anything unusual (a bad value, a mixed family) falls back to the slow reader, which gives
the exact error. A plan is therefore only ever a shortcut: the rules it makes are exactly
those the slow reader would make.

Plans are found by a cheap hint -- (first option's index, number of words, first option)
-- and the few plans sharing a hint are tried in turn; the check of the other words is
what makes a plan apply, so a hint that collides only costs time, never correctness. The
document reader (:mod:`meshlab.netfilter.parse`) keeps one dict of plans per document and
reads each rule through :func:`read_with_plan` (its fast path for ``-A`` lines uses a
:class:`Plan` directly).
"""

from __future__ import annotations

from collections.abc import Callable
from operator import itemgetter

from meshlab.netfilter.fastnew import RULE_SETTERS, new_ports, new_range
from meshlab.netfilter.memos import ADDR_MEMOS, JUMPS, addr_match, iface_match, jump_to, memo_for
from meshlab.netfilter.options import (
    FLAG_OPTIONS,
    TARGET_OPTIONS,
    RuleBuilder,
    finish_rule,
    make_module,
    make_port_match,
    make_target,
    read_rule,
)
from meshlab.netfilter.rules import CommentMatch, Jump, PortMatch, Rule
from meshlab.netfilter.source import Bad
from meshlab.netfilter.values import read_port_range

_new = object.__new__
_PLANS_PER_HINT = 8  # enough for any real dump; more shapes per hint just read slowly


class Plan:
    """How to read every rule of one shape, learnt from the first one (:meth:`learn`).

    Each part of the rule is either a constant (the same object for every rule of the shape)
    or made from value words at known token indexes, through a memo (see
    :mod:`meshlab.netfilter.memos`): the words already met give the part already made.
    """

    __slots__ = ("counters", "dst", "iif", "jump_at", "kind", "literals", "modules", "oif",
                 "proto", "src", "target", "version", "where", "words")

    @classmethod
    def learn(cls, toks: list[str], start: int, b: RuleBuilder, rule: Rule) -> Plan:
        plan = cls()
        slots: set[int] = set()  # the token indexes this plan reads as values
        plan.proto, plan.where, plan.counters = b.proto, b.where, b.counters
        plan.src = plan.dst = plan.iif = plan.oif = plan.version = None
        for field, k in b.addr_at:
            match = getattr(b, field)
            setattr(plan, field, (match.negated, k))
            plan.version = match.version
            slots.add(k)
        for field in ("iif", "oif"):
            match = getattr(b, field)
            if match is not None:
                k = b.where[field] + 1  # the option is at where[field], its value follows
                setattr(plan, field, (match.negated, k))
                slots.add(k)
        modules = []
        for (name, opts, at), made in zip(b.modules, rule.modules, strict=True):
            specs = tuple((key_, neg, k) for key_, (neg, _, k) in opts.items())
            if not specs:
                modules.append((made, None, None, None))
                continue
            values = itemgetter(*(k for _, _, k in specs))
            memo = memo_for(("module", name, tuple((key_, neg) for key_, neg, _ in specs)))
            memo[values(toks)] = made
            modules.append((None, values, memo, _module_maker(name, at, specs)))
            slots.update(k for _, _, k in specs)
        plan.modules = tuple(modules)
        target = rule.target
        plan.kind, plan.jump_at = type(target), None  # a shape keeps its kind of target
        if isinstance(target, Jump):
            k = plan.jump_at = b.where["target"]
            plan.target = (None, k, None, None, None, ())
            slots.add(k)
        elif not any(opt not in FLAG_OPTIONS for opt in b.target_opts):
            plan.target = (target, None, None, None, None, ())
        else:
            specs = tuple((opt, k, opt in FLAG_OPTIONS) for opt, (_, k) in b.target_opts.items())
            ks = [k for _, k, flag in specs if not flag]
            slots.update(ks)
            values = itemgetter(*ks)
            memo = memo_for(("target", b.target, tuple((opt, flag) for opt, _, flag in specs)))
            memo[(values(toks), b.family)] = target
            plan.target = (None, values, memo, b.target, b.where["target"], specs)
        # Every word that is not a value must be the same in each rule of the shape.
        # (itemgetter picks them all out in one C call; with one index it returns the word
        # itself rather than a 1-tuple, which compares just as well.)
        plan.words = itemgetter(*(k for k in range(start, len(toks)) if k not in slots))
        plan.literals = plan.words(toks)
        return plan

    def read(self, toks: list[str], family: str | None) -> Rule:
        """The rule on a line of this shape (``family``: the document's so far). Raises
        ``Bad`` for any value it cannot take; the caller then reads the line the slow way."""
        src = dst = iif = oif = None
        # Addresses: a memo hit costs no call (a match is never false, so `or` falls through
        # only on a miss). Both must be of the family the plan was learnt in, which is the
        # document's: a plan with addresses is only learnt once the family is known.
        if self.src is not None:
            negated, k = self.src
            src = ADDR_MEMOS[negated].get(toks[k]) or addr_match(negated, toks[k], k)
            if src.version != self.version:
                raise Bad(k, "mixed families", "")  # the slow reader words this error
        if self.dst is not None:
            negated, k = self.dst
            dst = ADDR_MEMOS[negated].get(toks[k]) or addr_match(negated, toks[k], k)
            if dst.version != self.version:
                raise Bad(k, "mixed families", "")
        if self.iif is not None:
            iif = iface_match(toks[self.iif[1]], self.iif[0], self.iif[1])
        if self.oif is not None:
            oif = iface_match(toks[self.oif[1]], self.oif[0], self.oif[1])
        modules = []
        for made, values, memo, make in self.modules:
            if made is None:
                key = values(toks)
                made = memo.get(key)
                if made is None:
                    made = make(toks)
                    memo[key] = made
            modules.append(made)
        target, values, memo, name, at, specs = self.target
        if target is None:
            if name is None:  # a jump: ``values`` is the index of the chain's name
                chain = toks[values]
                target = JUMPS.get(chain)
                if target is None:
                    if chain in TARGET_OPTIONS:  # -j ACCEPT where the first rule had -j CHAIN
                        raise Bad(values, "a built-in target, not a chain", "")
                    target = jump_to(chain)
            else:
                key = (values(toks), family)  # family: TPROXY's default --on-ip
                target = memo.get(key)
                if target is None:
                    opts = {opt: ("", k) if flag else (toks[k], k) for opt, k, flag in specs}
                    target = make_target(name, opts, at, family)
                    memo[key] = target
        # new_rule(...) inlined (a call less per rule): store each field into its slot
        rule = _new(Rule)
        s_target, s_src, s_dst, s_iif, s_oif, s_proto, s_modules = RULE_SETTERS
        s_target(rule, target)
        s_src(rule, src)
        s_dst(rule, dst)
        s_iif(rule, iif)
        s_oif(rule, oif)
        s_proto(rule, self.proto)
        s_modules(rule, tuple(modules))
        return rule


def _module_maker(name: str, at: int, specs: tuple) -> Callable[[list[str]], object]:
    """A function making the module ``-m name`` from a line's words, for a plan; ``specs``
    lists its options as (option, negated, token index of the value)."""
    if name in ("tcp", "udp"):  # the most common module, made without the option dict
        where = {opt: (neg, k) for opt, neg, k in specs}
        sport, dport = where.get("--sport"), where.get("--dport")
        if sport is None and dport is not None:  # just --dport: the usual rule
            negated, k = dport

            def make_dport(toks: list[str]) -> PortMatch:
                return new_ports(name, None, new_range(negated, *read_port_range(toks[k], k)))
            return make_dport

        def make_ports(toks: list[str]) -> PortMatch:
            return make_port_match(name, sport and (sport[0], toks[sport[1]], sport[1]),
                                   dport and (dport[0], toks[dport[1]], dport[1]))
        return make_ports

    if name == "comment":  # kube-proxy comments every rule; a plan never has "! --comment"
        (_, _, k), = specs

        def make_comment(toks: list[str]) -> CommentMatch:
            return CommentMatch(toks[k])
        return make_comment

    def make(toks: list[str]):
        return make_module(name, {opt: (neg, toks[k], k) for opt, neg, k in specs}, at)
    return make


def read_with_plan(plans: dict[tuple, list[Plan]], family: str | None, toks: list[str],
                   start: int) -> tuple[Rule, str | None, dict[str, int], tuple[int, int] | None]:
    """Read the rule in ``toks[start:]`` (``family``: the document's so far): with the plan
    for its shape from ``plans`` (hint -> plans, one dict per document) when there is one,
    else the slow way (and learn a plan). Returns (rule, family, token roles, counters)."""
    if start < len(toks):
        hint = (start, len(toks), toks[start])
        shape_plans = plans.get(hint)
        if shape_plans is None:
            shape_plans = plans[hint] = []
        for plan in shape_plans:
            if plan.words(toks) == plan.literals:
                try:
                    rule = plan.read(toks, family)
                except Bad:
                    break  # a value the plan cannot take: the slow reader names the problem
                return rule, family, plan.where, plan.counters
    b = read_rule(toks, start, family)
    rule = finish_rule(b)
    if start < len(toks) and len(shape_plans) < _PLANS_PER_HINT:
        shape_plans.append(Plan.learn(toks, start, b, rule))
    return rule, b.family, b.where, b.counters
