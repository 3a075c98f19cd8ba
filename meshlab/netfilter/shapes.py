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

from meshlab.netfilter.fastnew import new_comment, new_ports, new_range
from meshlab.netfilter.memos import (
    ADDR_MEMOS,
    JUMPS,
    iface_match,
    jump_to,
    memo_for,
    new_addr_match,
)
from meshlab.netfilter.options import (
    DROP,
    FLAG_OPTIONS,
    PORT_BASE,
    PORT_PROTOS,
    TARGET_OPTIONS,
    RuleBuilder,
    dnat_target,
    finish_rule,
    make_module,
    make_port_match,
    make_target,
    read_rule,
)
from meshlab.netfilter.rules import CommentMatch, Jump, PortMatch, Rule
from meshlab.netfilter.source import Bad
from meshlab.netfilter.values import read_port_range

_PLANS_PER_HINT = 8  # enough for any real dump; more shapes per hint just read slowly


class Plan:
    """How to read every rule of one shape, learnt from the first one (:meth:`learn`).

    Each part of the rule is either a constant (the same object for every rule of the shape)
    or made from value words at known token indexes, through a memo (see
    :mod:`meshlab.netfilter.memos`): the words already met give the part already made.
    :attr:`read` reads a line of the shape: a function written for this shape alone (its
    Python is in :attr:`source`), so that reading a line runs no loops or tests about the
    shape itself, only the lookups of its values.
    """

    __slots__ = ("counters", "drop", "dst", "iif", "jump_at", "kind", "literals", "modules",
                 "oif", "proto", "read", "source", "src", "target", "version", "where", "words")

    read: Callable[[list[str], str | None], Rule]
    """``read(toks, family)``: the rule on a line of this shape (``family``: the document's
    so far). Raises ``Bad`` for any value it cannot take; the caller then reads the line the
    slow way, which words the error."""

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
                modules.append((made, (), None, None))
                continue
            ks = tuple(k for _, _, k in specs)
            memo = memo_for(("module", name, tuple((key_, neg) for key_, neg, _ in specs)))
            memo[_key(toks, ks)] = made
            modules.append((None, ks, memo, _module_maker(name, at, specs)))
            slots.update(ks)
        plan.modules = tuple(modules)
        target = rule.target
        plan.kind, plan.jump_at = type(target), None  # a shape keeps its kind of target
        plan.drop = target is DROP  # refused in the nat table (see parse._append)
        if isinstance(target, Jump):
            k = plan.jump_at = b.where["target"]
            plan.target = (None, (k,), None, None, None, ())
            slots.add(k)
        elif not any(opt not in FLAG_OPTIONS for opt in b.target_opts):
            plan.target = (target, (), None, None, None, ())
        else:
            specs = tuple((opt, k, opt in FLAG_OPTIONS) for opt, (_, k) in b.target_opts.items())
            ks = tuple(k for _, k, flag in specs if not flag)
            slots.update(ks)
            memo = memo_for(("target", b.target, tuple((opt, flag) for opt, _, flag in specs)))
            memo[(_key(toks, ks), b.family)] = target
            plan.target = (None, ks, memo, b.target, b.where["target"], specs)
        # Every word that is not a value must be the same in each rule of the shape.
        # (itemgetter picks them all out in one C call; with one index it returns the word
        # itself rather than a 1-tuple, which compares just as well.)
        plan.words = itemgetter(*(k for k in range(start, len(toks)) if k not in slots))
        plan.literals = plan.words(toks)
        plan.source, plan.read = _write_reader(plan)
        return plan


def _key(toks: list[str], ks: tuple[int, ...]) -> str | tuple[str, ...]:
    """The memo key of the value words at token indexes ``ks``: the word itself for one,
    else the tuple of them (the readers written by :func:`_write_reader` make the same)."""
    return toks[ks[0]] if len(ks) == 1 else tuple(toks[k] for k in ks)


def _write_reader(plan: Plan) -> tuple[str, Callable[[list[str], str | None], Rule]]:
    """Write the function that reads a line of ``plan``'s shape: its source and the function.

    The Python is written out for this shape, the way :mod:`dataclasses` writes an
    ``__init__`` for each class: every test about the shape is taken here, once, and what
    is left for each line is straight code -- look each value word up in its memo (making
    the part only for a word never met before, with the same functions as the slow reader),
    then make the :class:`Rule` tuple from the parts in one call. For a kube-proxy
    ``KUBE-SERVICES`` rule it reads::

        def read(toks, family):
            word = toks[3]
            dst = ADDRESSES_0.get(word) or new_addr_match(False, word, 3)
            if dst.version != 4:
                raise Bad(3, "mixed families", "")
            key = toks[9]
            module_0 = MEMO_0.get(key)
            if module_0 is None:
                module_0 = MEMO_0[key] = MAKE_0(toks)
            ...
            return new(Rule, (target, None, dst, None, None, PROTO, (module_0, module_1)))
    """
    env: dict[str, object] = {
        "ADDRESSES_0": ADDR_MEMOS[False], "ADDRESSES_1": ADDR_MEMOS[True], "Bad": Bad,
        "JUMPS": JUMPS, "Rule": Rule, "TARGET_OPTIONS": TARGET_OPTIONS,
        "new_addr_match": new_addr_match, "iface_match": iface_match, "jump_to": jump_to,
        "make_target": make_target, "dnat_target": dnat_target, "new": tuple.__new__,
        "PROTO": plan.proto}
    code = ["def read(toks, family):"]
    fields = dict.fromkeys(("src", "dst", "iif", "oif"), "None")
    for field in ("src", "dst"):
        spec = getattr(plan, field)
        if spec is not None:
            negated, k = spec
            # a memo hit costs no call: a match is never false, so `or` runs only on a miss
            code += [f"    word = toks[{k}]",
                     f"    {field} = ADDRESSES_{int(negated)}.get(word) or "
                     f"new_addr_match({negated}, word, {k})",
                     # the plan was learnt in the document's family; the slow reader words
                     # the error for an address of the other one
                     f"    if {field}.version != {plan.version}:",
                     f"        raise Bad({k}, 'mixed families', '')"]
            fields[field] = field
    for field in ("iif", "oif"):
        spec = getattr(plan, field)
        if spec is not None:
            negated, k = spec
            code.append(f"    {field} = iface_match(toks[{k}], {negated}, {k})")
            if not negated:  # -i + (every interface): the rule reader notes it
                code += [f"    if {field}.name == '+':",
                         f"        raise Bad({k}, 'every interface', '')"]
            fields[field] = field
    modules = []
    for j, (made, ks, memo, make) in enumerate(plan.modules):
        if made is not None:
            env[f"MODULE_{j}"] = made
            modules.append(f"MODULE_{j}")
            continue
        env[f"MEMO_{j}"], env[f"MAKE_{j}"] = memo, make
        code += [f"    key = {_key_source(ks)}",
                 f"    module_{j} = MEMO_{j}.get(key)",
                 f"    if module_{j} is None:",
                 f"        module_{j} = MEMO_{j}[key] = MAKE_{j}(toks)"]
        modules.append(f"module_{j}")
    target, ks, memo, name, at, specs = plan.target
    if target is not None:
        env["TARGET"] = target
        code.append("    target = TARGET")
    elif name is None:  # a jump to the chain named at ks[0]
        code += [f"    word = toks[{ks[0]}]",
                 "    target = JUMPS.get(word)",
                 "    if target is None:",
                 "        if word in TARGET_OPTIONS:  # -j ACCEPT, where the first rule jumped",
                 f"            raise Bad({ks[0]}, 'a built-in target, not a chain', '')",
                 "        target = jump_to(word)"]
    else:
        env["TARGET_MEMO"] = memo
        # the options as the slow reader hands them on: {option: (value, token index)}
        words = {opt: ("''" if flag else f"toks[{k}]", k) for opt, k, flag in specs}
        options = ", ".join(f"{opt!r}: ({word}, {k})" for opt, (word, k) in words.items())
        if name == "DNAT" and [opt for opt, _, _ in specs] == ["--to-destination"]:
            make = f"dnat_target(toks[{ks[0]}], {ks[0]}, family)"  # kube-proxy's, by the 1000
        else:
            make = f"make_target({name!r}, {{{options}}}, {at}, family)"
        # the rule's family is part of the key: TPROXY's default --on-ip, the family checks
        code += [f"    key = ({_key_source(ks)}, family)",
                 "    target = TARGET_MEMO.get(key)",
                 "    if target is None:",
                 f"        target = TARGET_MEMO[key] = {make}"]
        if name == "DNAT" and (plan.proto is None or plan.proto.proto not in PORT_PROTOS):
            # a DNAT port needs -p tcp (or another protocol with ports), which this shape has
            # not: the slow reader words the error
            code += ["    if target.ports is not None:",
                     f"        raise Bad({ks[0]}, 'a port without -p tcp', '')"]
    parts = ", ".join(("target", *fields.values(), "PROTO", _tuple_source(modules)))
    code.append(f"    return new(Rule, ({parts}))")
    source = "\n".join(code) + "\n"
    # No word of the document is written into the code, only token indexes and the names
    # of targets and options that the reader knows (TARGET_OPTIONS): the values stay data.
    exec(source, env)
    return source, env["read"]


def _key_source(ks: tuple[int, ...]) -> str:
    """The Python for the memo key of the words at ``ks`` (as :func:`_key` makes it)."""
    return f"toks[{ks[0]}]" if len(ks) == 1 else _tuple_source([f"toks[{k}]" for k in ks])


def _tuple_source(items: list[str]) -> str:
    """The Python for a tuple of the expressions ``items``."""
    return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"


def _module_maker(name: str, at: int, specs: tuple) -> Callable[[list[str]], object]:
    """A function making the module ``-m name`` from a line's words, for a plan; ``specs``
    lists its options as (option, negated, token index of the value)."""
    if name in ("tcp", "udp"):  # the most common module, made without the option dict
        where = {opt: (neg, k) for opt, neg, k in specs}
        sport, dport = where.get("--sport"), where.get("--dport")
        if sport is None and dport is not None:  # just --dport: the usual rule
            negated, k = dport

            base = PORT_BASE[name]

            def make_dport(toks: list[str]) -> PortMatch:
                return new_ports(name, None, new_range(
                    negated, *read_port_range(toks[k], k, ":", base)))
            return make_dport

        def make_ports(toks: list[str]) -> PortMatch:
            return make_port_match(name, sport and (sport[0], toks[sport[1]], sport[1]),
                                   dport and (dport[0], toks[dport[1]], dport[1]))
        return make_ports

    if name == "comment":  # kube-proxy comments every rule; a plan never has "! --comment"
        (_, _, k), = specs

        def make_comment(toks: list[str]) -> CommentMatch:
            return new_comment(toks[k])
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
