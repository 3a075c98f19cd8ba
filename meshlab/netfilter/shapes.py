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
document reader (:mod:`meshlab.netfilter.parse`) keeps one :class:`Plans` per document and
reads each rule through :meth:`Plans.read`.

Its fast path, for the plain ``-A CHAIN ...`` lines that make up almost all of a dump, does
not even split the line into words: :func:`match_line` finds the plan whose *pattern* (the
literal words, and None where a value goes) the line fits, and makes strings only for the
values. Making the ~16 word strings of a line costs more than everything else done with it,
so :func:`match_line` has an optional C twin (``_fastwords.c``, built when a C compiler is
there) that compares the literal words in place; the Python function below is the reference,
and the tests hold the two to the same answers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
from meshlab.netfilter.source import Bad, restore_split
from meshlab.netfilter.values import read_port_range

_PLANS_PER_HINT = 8  # enough for any real dump; more shapes per hint just read slowly
_PLANS_PER_COUNT = 16  # plans tried by match_line for one number of words
_READERS = memo_for(("reader",), limit=2_000)  # a reader's source -> its compiled code


class Plan:
    """How to read every rule of one shape, learnt from the first one (:meth:`learn`).

    Each part of the rule is either a constant (the same object for every rule of the shape)
    or made from value words at known token indexes, through a memo (see
    :mod:`meshlab.netfilter.memos`): the words already met give the part already made.
    :attr:`read` reads a line of the shape from its value words (:attr:`values` picks them
    out of a line's words, in order): a function written for this shape alone (its Python
    is in :attr:`source`), so that reading a line runs no loops or tests about the shape
    itself, only the lookups of its values.
    """

    __slots__ = ("counters", "drop", "dst", "iif", "jump_slot", "kind", "literals", "modules",
                 "oif", "pattern", "proto", "read", "source", "src", "target", "values",
                 "version", "where", "words")

    read: Callable[[Sequence[str], str | None], Rule]
    """``read(values, family)``: the rule on a line of this shape, from its value words
    (``family``: the document's so far). Raises ``Bad`` for any value it cannot take; the
    caller then reads the line the slow way, which words the error."""

    values: Callable[[list[str]], tuple[str, ...]]
    """The value words of a line of this shape (its words, split), in order."""

    pattern: tuple[str | None, ...] | None
    """For a plain ``-A CHAIN ...`` line: each word, None where a value (or the chain)
    goes; what :func:`match_line` compares. None for other lines."""

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
        module_specs = []
        for (name, opts, at), made in zip(b.modules, rule.modules, strict=True):
            specs = tuple((key_, neg, k) for key_, (neg, _, k) in opts.items())
            module_specs.append((name, at, specs, made))
            slots.update(k for _, _, k in specs)
        target = rule.target
        plan.kind, plan.jump_slot = type(target), None  # a shape keeps its kind of target
        plan.drop = target is DROP  # refused in the nat table (see parse._append)
        jump_at = b.where["target"] if isinstance(target, Jump) else None
        target_specs = tuple((opt, k, opt in FLAG_OPTIONS)
                             for opt, (_, k) in b.target_opts.items())
        slots.update(k for _, k, flag in target_specs if not flag)
        if jump_at is not None:
            slots.add(jump_at)
        # The value words, in line order: a reader is given them as a tuple.
        order = sorted(slots)
        slot = {k: j for j, k in enumerate(order)}  # token index -> place in that tuple
        plan.values = _picker(order)
        modules = []
        for name, at, specs, made in module_specs:
            if not specs:
                modules.append((made, (), None, None))
                continue
            ks = tuple(k for _, _, k in specs)
            memo = memo_for(("module", name, tuple((key_, neg) for key_, neg, _ in specs)))
            memo[_key(toks, ks)] = made
            modules.append((None, ks, memo, _module_maker(name, at, specs, slot)))
        plan.modules = tuple(modules)
        if jump_at is not None:
            plan.jump_slot = slot[jump_at]
            plan.target = (None, (jump_at,), None, None, None, ())
        elif all(flag for _, _, flag in target_specs):  # no option, or flags only
            plan.target = (target, (), None, None, None, ())
        else:
            ks = tuple(k for _, k, flag in target_specs if not flag)
            memo = memo_for(("target", b.target,
                             tuple((opt, flag) for opt, _, flag in target_specs)))
            memo[(_key(toks, ks), b.family)] = target
            plan.target = (None, ks, memo, b.target, b.where["target"], target_specs)
        # Every word that is not a value must be the same in each rule of the shape.
        # (itemgetter picks them all out in one C call; with one index it returns the word
        # itself rather than a 1-tuple, which compares just as well.)
        plan.words = itemgetter(*(k for k in range(start, len(toks)) if k not in slots))
        plan.literals = plan.words(toks)
        plain = start == 2 and toks[0] == "-A" and plan.counters is None
        plan.pattern = tuple(None if k == 1 or k in slots else word
                             for k, word in enumerate(toks)) if plain else None
        plan.source, plan.read = _write_reader(plan, order)
        return plan


def _key(toks: list[str], ks: tuple[int, ...]) -> str | tuple[str, ...]:
    """The memo key of the value words at token indexes ``ks``: the word itself for one,
    else the tuple of them (the readers written by :func:`_write_reader` make the same)."""
    return toks[ks[0]] if len(ks) == 1 else tuple(toks[k] for k in ks)


def _picker(order: list[int]) -> Callable[[list[str]], tuple[str, ...]]:
    """A function picking the words at token indexes ``order`` out of a line, as a tuple."""
    if len(order) > 1:
        return itemgetter(*order)  # one C call
    if order:
        (k,) = order
        return lambda toks: (toks[k],)
    return lambda toks: ()


def _write_reader(plan: Plan, order: list[int]
                  ) -> tuple[str, Callable[[Sequence[str], str | None], Rule]]:
    """Write the function that reads a line of ``plan``'s shape from its value words (those
    at token indexes ``order``): its source and the function.

    The Python is written out for this shape, the way :mod:`dataclasses` writes an
    ``__init__`` for each class: every test about the shape is taken here, once, and what
    is left for each line is straight code -- look each value word up in its memo (making
    the part only for a word never met before, with the same functions as the slow reader),
    then make the :class:`Rule` tuple from the parts in one call. Each value word is named
    after its token index (``w3`` is the line's fourth word). For a kube-proxy
    ``KUBE-SERVICES`` rule it reads::

        def read(values, family):
            w3, w9, w13, w15 = values
            dst = ADDRESSES_0.get(w3) or new_addr_match(False, w3, 3)
            if dst.version != 4:
                raise Bad(3, "mixed families", "")
            module_0 = MEMO_0.get(w9)
            if module_0 is None:
                module_0 = MEMO_0[w9] = MAKE_0(values)
            ...
            return new(Rule, (target, None, dst, None, None, PROTO, (module_0, module_1)))
    """
    env: dict[str, object] = {
        "ADDRESSES_0": ADDR_MEMOS[False], "ADDRESSES_1": ADDR_MEMOS[True], "Bad": Bad,
        "JUMPS": JUMPS, "Rule": Rule, "TARGET_OPTIONS": TARGET_OPTIONS,
        "new_addr_match": new_addr_match, "iface_match": iface_match, "jump_to": jump_to,
        "make_target": make_target, "dnat_target": dnat_target, "new": tuple.__new__,
        "PROTO": plan.proto}
    code = ["def read(values, family):"]
    if order:
        code.append(f"    {_tuple_source([f'w{k}' for k in order])[1:-1]} = values")
    fields = dict.fromkeys(("src", "dst", "iif", "oif"), "None")
    for field in ("src", "dst"):
        spec = getattr(plan, field)
        if spec is not None:
            negated, k = spec
            # a memo hit costs no call: a match is never false, so `or` runs only on a miss
            code += [f"    {field} = ADDRESSES_{int(negated)}.get(w{k}) or "
                     f"new_addr_match({negated}, w{k}, {k})",
                     # the plan was learnt in the document's family; the slow reader words
                     # the error for an address of the other one
                     f"    if {field}.version != {plan.version}:",
                     f"        raise Bad({k}, 'mixed families', '')"]
            fields[field] = field
    for field in ("iif", "oif"):
        spec = getattr(plan, field)
        if spec is not None:
            negated, k = spec
            code.append(f"    {field} = iface_match(w{k}, {negated}, {k})")
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
        key = _key_source(ks)
        code += [f"    module_{j} = MEMO_{j}.get({key})",
                 f"    if module_{j} is None:",
                 f"        module_{j} = MEMO_{j}[{key}] = MAKE_{j}(values)"]
        modules.append(f"module_{j}")
    target, ks, memo, name, at, specs = plan.target
    if target is not None:
        env["TARGET"] = target
        code.append("    target = TARGET")
    elif name is None:  # a jump to the chain named at ks[0]
        k = ks[0]
        code += [f"    target = JUMPS.get(w{k})",
                 "    if target is None:",
                 f"        if w{k} in TARGET_OPTIONS:  # -j ACCEPT, where the first rule jumped",
                 f"            raise Bad({k}, 'a built-in target, not a chain', '')",
                 f"        target = jump_to(w{k})"]
    else:
        env["TARGET_MEMO"] = memo
        # the options as the slow reader hands them on: {option: (value, token index)}
        words = {opt: ("''" if flag else f"w{k}", k) for opt, k, flag in specs}
        options = ", ".join(f"{opt!r}: ({word}, {k})" for opt, (word, k) in words.items())
        if name == "DNAT" and [opt for opt, _, _ in specs] == ["--to-destination"]:
            make = f"dnat_target(w{ks[0]}, {ks[0]}, family)"  # kube-proxy's, by the 1000
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
    compiled = _READERS.get(source)  # compiling costs ~0.3 ms: once per shape, not per document
    if compiled is None:
        compiled = _READERS[source] = compile(source, "<shape plan>", "exec")
    exec(compiled, env)
    return source, env["read"]


def _key_source(ks: tuple[int, ...]) -> str:
    """The Python for the memo key of the words at ``ks`` (as :func:`_key` makes it)."""
    return f"w{ks[0]}" if len(ks) == 1 else _tuple_source([f"w{k}" for k in ks])


def _tuple_source(items: list[str]) -> str:
    """The Python for a tuple of the expressions ``items``."""
    return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"


def _module_maker(name: str, at: int, specs: tuple, slot: dict[int, int]
                  ) -> Callable[[Sequence[str]], object]:
    """A function making the module ``-m name`` from a line's value words, for a plan;
    ``specs`` lists its options as (option, negated, token index of the value), ``slot``
    where each token index's word is among the value words."""
    if name in ("tcp", "udp"):  # the most common module, made without the option dict
        where = {opt: (neg, k) for opt, neg, k in specs}
        sport, dport = where.get("--sport"), where.get("--dport")
        if sport is None and dport is not None:  # just --dport: the usual rule
            negated, k = dport
            j, base = slot[k], PORT_BASE[name]

            def make_dport(values: Sequence[str]) -> PortMatch:
                return new_ports(name, None, new_range(
                    negated, *read_port_range(values[j], k, ":", base)))
            return make_dport

        def make_ports(values: Sequence[str]) -> PortMatch:
            return make_port_match(name, sport and (sport[0], values[slot[sport[1]]], sport[1]),
                                   dport and (dport[0], values[slot[dport[1]]], dport[1]))
        return make_ports

    if name == "comment":  # kube-proxy comments every rule; a plan never has "! --comment"
        (_, _, k), = specs
        j = slot[k]

        def make_comment(values: Sequence[str]) -> CommentMatch:
            return new_comment(values[j])
        return make_comment

    def make(values: Sequence[str]):
        return make_module(name, {opt: (neg, values[slot[k]], k) for opt, neg, k in specs}, at)
    return make


class Plans:
    """The plans of one document: found by hint for any rule (:meth:`read`), and by number
    of words for :func:`match_line` (:attr:`by_count`: the plans of plain ``-A`` lines)."""

    __slots__ = ("by_count", "by_hint")

    def __init__(self) -> None:
        self.by_hint: dict[tuple, list[Plan]] = {}
        self.by_count: dict[int, list[tuple[tuple[str | None, ...], Plan]]] = {}

    def read(self, family: str | None, toks: list[str], start: int
             ) -> tuple[Rule, str | None, dict[str, int], tuple[int, int] | None]:
        """Read the rule in ``toks[start:]`` (``family``: the document's so far): with the
        plan for its shape when there is one, else the slow way (and learn a plan).
        Returns (rule, family, token roles, counters)."""
        if start < len(toks):
            hint = (start, len(toks), toks[start])
            shape_plans = self.by_hint.get(hint)
            if shape_plans is None:
                shape_plans = self.by_hint[hint] = []
            for plan in shape_plans:
                if plan.words(toks) == plan.literals:
                    try:
                        rule = plan.read(plan.values(toks), family)
                    except Bad:
                        break  # a value the plan cannot take: the slow reader names the problem
                    return rule, family, plan.where, plan.counters
        b = read_rule(toks, start, family)
        rule = finish_rule(b)
        if start < len(toks) and len(shape_plans) < _PLANS_PER_HINT:
            plan = Plan.learn(toks, start, b, rule)
            shape_plans.append(plan)
            if plan.pattern is not None:
                same_count = self.by_count.setdefault(len(toks), [])
                if len(same_count) < _PLANS_PER_COUNT:
                    same_count.append((plan.pattern, plan))
        return rule, b.family, b.where, b.counters


def match_python(line: str, table: dict[int, list[tuple[tuple[str | None, ...], Plan]]]
                 ) -> tuple[Plan, str, tuple[str, ...]] | None:
    """The plan for the rule line ``-A CHAIN ...``: ``table`` (:attr:`Plans.by_count`) maps a
    number of words to (pattern, plan) pairs. Returns the first plan whose pattern's literal
    words all match the line's, the chain (word 1) and the plan's value words; None if
    there is none. (:func:`match_line` is this, in C when it could be built.)"""
    try:
        toks = restore_split(line)
    except Bad:
        return None  # an unterminated quote: the slow reader words the error
    for pattern, plan in table.get(len(toks), ()):
        if plan.words(toks) == plan.literals and toks[0] == pattern[0]:
            return plan, toks[1], plan.values(toks)
    return None


try:
    from meshlab.netfilter._fastwords import match_line
except ImportError:  # built without a C compiler: the same, in Python
    match_line = match_python
