"""The checks the kernel makes when rules are loaded, then the immutable :class:`Ruleset`.

``iptables-restore`` hands the kernel a whole table at once, and the kernel refuses it if a
jump leads to a chain that does not exist, if a packet could go round in a loop of chains
(a hook reaches A, A jumps to B, B jumps to A), or if a
match or target sits where its hook cannot allow it (``-m owner`` on incoming packets,
``REDIRECT`` outside PREROUTING/OUTPUT, ...).

Speed: a kube-proxy dump has ~10,000 chains, so every check here is linear in the number of
rules and jumps, and most never look at a rule at all: the parser notes (:class:`Notes`) which
chains each chain jumps to and which rare things (counters, ``-m owner``/``-i``/``-o``,
targets limited to some tables or hooks) it met, and only the chains that could fail a check
are walked rule by rule. Loops are found with one depth-first search that colours chains (the
classic white/grey/black walk), after a few cheap rounds have removed the chains that cannot be
on a loop; only when a loop exists do we walk again, from the hooks in rule order, to find
the first loop a packet could enter and the jump that closes it (a loop no hook reaches is
no error: the kernel never checks it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain as concat
from itertools import compress, repeat
from operator import itemgetter, not_
from types import MappingProxyType

from meshlab.netfilter.rules import Ct, Dnat, IfaceMatch, Jump, Redirect, Rule, Tproxy
from meshlab.netfilter.ruleset import BUILTIN_CHAINS, Chain, Ruleset, Table
from meshlab.netfilter.source import Bad, RulesParseError, error_at

Place = tuple
"""Where a rule was written, kept as a plain tuple because one is made per rule and is only
read when a check fails: ``(line, text, tokens, offset, counters)`` -- the line number and its
text, a dict of token indexes by role (``"target"``, ``"owner"``, ``"iif"``, ``"oif"``), the
index of the rule's first option in the line's words, and ``[p:b]``/``-c`` counters or None.

For the plain ``-A CHAIN ...`` lines that make up almost all of a big dump, the parser keeps
just the line number (an int, which it has anyway) and :func:`check_and_build` is given a
``locate`` function that makes the whole tuple from it, by reading the line again, only for
the rule an error is about. Such a rule has no counters."""

Locate = Callable[["Place | int"], Place]

TARGET_TABLES = {"REDIRECT": ("nat",), "DNAT": ("nat",), "TPROXY": ("mangle",), "CT": ("raw",)}
TARGET_HOOKS = {"REDIRECT": ("PREROUTING", "OUTPUT"), "DNAT": ("PREROUTING", "OUTPUT"),
                "TPROXY": ("PREROUTING",)}
_HOOK_LIMITED = {Redirect: "REDIRECT", Dnat: "DNAT", Tproxy: "TPROXY"}  # named in TARGET_HOOKS
_TABLE_LIMITED = ((Redirect, "REDIRECT"), (Dnat, "DNAT"), (Tproxy, "TPROXY"), (Ct, "CT"))
LIMITED_TARGETS = frozenset(kind for kind, _ in _TABLE_LIMITED)
"""The target types that only some tables (TARGET_TABLES) or hooks (TARGET_HOOKS) allow."""
_INCOMING = frozenset({"PREROUTING", "INPUT", "FORWARD"})
_POLICY, _RULES, _JUMPS = itemgetter(0), itemgetter(1), itemgetter(3)
"""A chain's policy, rules and jumps, from its ``[policy, rules, places, jumps]``."""


@dataclass
class Notes:
    """What the parser notes while it reads, so that the checks below need not look at
    every rule again (one pass over 20,000 freshly made rules costs milliseconds). Each note
    only says where to look: the checks themselves stay exact."""

    limited: set[tuple[str, type]] = field(default_factory=set)
    """(table, type) of each target type in LIMITED_TARGETS that a table's rules use."""
    counters: bool = False  # some rule has [p:b] or -c counters
    roles: bool = False  # some rule has -m owner, -i or -o (see Place)
    any_interface: bool = False  # some rule has -i + or -o + (see check_and_build)


def check_and_build(family: str, tables: dict[str, dict[str, list]],
                    policy_counters: dict, notes: Notes, locate: Locate) -> Ruleset:
    """Check ``{table: {chain: [policy, rules, places, jumps]}}`` as the kernel would, table by
    table, then build the :class:`Ruleset`. Raises :class:`RulesParseError`; ``locate``
    makes a :data:`Place` tuple from a line number, for the error.

    Each check first asks cheaply whether any rule of the table could fail it -- from the
    parser's ``notes`` and the jumps it listed per chain, with comprehensions and set
    operations rather than a Python loop over 20,000 rules; only then are the chains walked
    rule by rule, in order, so that the error names the first rule at fault.
    """
    counters: dict[tuple[str, str, int], tuple[int, int]] = dict(policy_counters)
    for tname, chains in tables.items():
        kinds = {kind for table, kind in notes.limited if table == tname}
        users = chains.keys() - BUILTIN_CHAINS[tname]  # (built-ins are always there)
        refused = {kind for kind, name in _TABLE_LIMITED if tname not in TARGET_TABLES[name]}
        # {chain: the chains it jumps to}, for the chains that jump (made at C speed)
        chain_jumps = list(map(_JUMPS, chains.values()))
        jumps = dict(compress(zip(chains, chain_jumps, strict=True), chain_jumps))
        # one issuperset over all the jumps: a list argument would be made into a set
        if (not users.issuperset(concat.from_iterable(jumps.values()))
                or not refused.isdisjoint(kinds)):
            for _, rules, chain_places, _ in chains.values():
                _check_targets(tname, chains, rules, map(locate, chain_places))  # raises
        if notes.counters:  # counters are rare: look rule by rule only then
            for cname, (_, _, chain_places, _) in chains.items():
                for index, place in enumerate(chain_places, 1):
                    if type(place) is tuple and place[4] is not None:
                        counters[(tname, cname, index)] = place[4]
        if _has_loop(jumps):
            _refuse_reached_loop(tname, chains, locate)
        _check_all_hooks(tname, chains, _Reach(tname, jumps), kinds, notes.roles, locate)
        if notes.any_interface:
            _drop_any_interface(chains)
    return Ruleset(family, {tname: _table(tname, chains) for tname, chains in tables.items()},
                   counters)


def _drop_any_interface(chains: dict[str, list]) -> None:
    """``-i +`` or ``-o +`` (every interface name) once the checks are done: iptables refuses
    it where it refuses any ``-i``/``-o`` (checked above), then stores no interface match at
    all, so the rule matches every packet, even one without that interface."""
    for chain in chains.values():
        rules = chain[1]
        for k, rule in enumerate(rules):
            iif = None if _matches_any(rule.iif) else rule.iif
            oif = None if _matches_any(rule.oif) else rule.oif
            if iif is not rule.iif or oif is not rule.oif:
                rules[k] = rule._replace(iif=iif, oif=oif)


def _matches_any(match: IfaceMatch | None) -> bool:
    return match is not None and match.name == "+" and not match.negated


def _table(tname: str, chains: dict[str, list]) -> Table:
    """The immutable :class:`Table`; its Chains are made all at once, by maps over the
    ``[policy, rules, places, jumps]`` lists (C speed, no Python step per chain)."""
    fields = zip(chains, map(_POLICY, chains.values()), map(tuple, map(_RULES, chains.values())),
                 strict=True)
    made = map(tuple.__new__, repeat(Chain), fields)
    return Table(tname, MappingProxyType(dict(zip(chains, made, strict=True))))


def _check_all_hooks(tname: str, chains: dict, reach: _Reach, kinds: set[type],
                     roles: bool, locate: Locate) -> None:
    """Raise for the first rule (in rule order) that sits where its hooks do not allow it.

    Only chains where some rule could fail are walked: the built-in chains and the chains an
    incoming packet reaches when some rule names -m owner, -i or -o (``roles``), and the
    chains reached from a hook that a DNAT/REDIRECT/TPROXY rule's (``kinds``) hooks do not
    include."""
    risky: set[str] = set()
    if roles:
        risky.update(("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"), reach.incoming())
    for kind in _HOOK_LIMITED.keys() & kinds:
        risky |= reach.beyond(TARGET_HOOKS[_HOOK_LIMITED[kind]])
    for cname in filter(risky.__contains__, chains):  # in chain order, at C speed
        for rule, place in _rules_and_places(chains[cname]):
            # skip the rules that cannot fail any of _check_hooks' four checks here
            if ((rule.owner_match and cname in reach.incoming())
                    or (rule.iif is not None and cname in ("OUTPUT", "POSTROUTING"))
                    or (rule.oif is not None and cname in ("PREROUTING", "INPUT"))
                    or (type(rule.target) in _HOOK_LIMITED
                        and cname in reach.beyond(TARGET_HOOKS[rule.target.name]))):
                _check_hooks(tname, cname, reach.hooks(cname), rule, locate(place))


def _check_targets(tname: str, chains: dict, rules: list[Rule],
                   places: Iterable[Place]) -> None:
    """Raise for the first rule of a chain that jumps to a missing or built-in chain, or
    whose target is not allowed in this table."""
    for rule, place in zip(rules, places, strict=True):
        target = rule.target
        if type(target) is Jump:
            _check_jump(tname, chains, target, place)
        elif target.name in TARGET_TABLES and tname not in TARGET_TABLES[target.name]:
            _check_target(tname, chains, rule, place)


def _fail(place: Place, key: str, message: str, hint: str) -> RulesParseError:
    line, text, tokens, offset, _ = place
    return error_at(Bad(tokens.get(key, 0), message, hint), line, text, offset)


def _check_jump(tname: str, chains: dict, target: Jump, place: Place) -> None:
    chain = chains.get(target.chain)
    if chain is None:
        raise _fail(place, "target", f"chain or target {target.chain!r} does not exist in "
                    f"table {tname}", f"declare it with :{target.chain} - [0:0] (or -N), or "
                    "check the spelling of the target")
    if chain[0] is not None:
        raise _fail(place, "target", f"cannot jump to the built-in chain {target.chain}",
                    "jump to a user chain instead")


def _check_target(tname: str, chains: dict, rule: Rule, place: Place) -> None:
    target = rule.target
    if isinstance(target, Jump):
        _check_jump(tname, chains, target, place)
    allowed = TARGET_TABLES.get(target.name)
    if allowed is not None and tname not in allowed:
        raise _fail(place, "target", f"{target.name} is only valid in the {allowed[0]} table, "
                    f"not {tname}", f"move the rule to *{allowed[0]}")


def _has_loop(jumps: dict[str, list[str]]) -> bool:
    """Whether the jump graph (``jumps``: only the chains that jump somewhere) has a cycle:
    one depth-first walk, each chain entered once.

    A chain is *grey* while we are inside it (on the walk's stack) and *black* once all the
    chains it jumps to are done; meeting a grey chain again means we went round in a loop.
    A chain that jumps nowhere cannot be on a loop, so it is never entered. The walk keeps
    its own stack (a list of iterators) rather than recursing, so 10,000 nested chains do
    not hit Python's recursion limit.
    """
    jumps = _prune_sinks(jumps)
    grey, black = 1, 2
    colour: dict[str, int] = {}
    for root in jumps:
        if root in colour:
            continue
        colour[root] = grey
        stack = [iter(jumps[root])]
        path = [root]
        while stack:
            for nxt in stack[-1]:
                seen = colour.get(nxt)
                if seen == grey:
                    return True
                if seen is None and nxt in jumps:
                    colour[nxt] = grey
                    stack.append(iter(jumps[nxt]))
                    path.append(nxt)
                    break
            else:  # every jump out of path[-1] is done
                colour[path.pop()] = black
                stack.pop()
    return False


def _prune_sinks(jumps: dict[str, list[str]]) -> dict[str, list[str]]:
    """``jumps`` without chains that cannot be on a loop, removed a round at a time.

    A chain whose jumps all lead to chains that jump nowhere (not in the graph) cannot be on
    a loop, nor lead to one, so it can go, which may leave its callers jumping nowhere in
    turn. A round is one set test per chain, run by ``map`` at C speed, much cheaper than the
    depth-first walk's steps: a kube-proxy dump (KUBE-SERVICES -> KUBE-SVC-* -> KUBE-SEP-*
    -> KUBE-MARK-MASQ) is empty after four rounds. Deep graphs stop after a few rounds and
    leave the rest to the walk.
    """
    live, order = set(jumps), list(jumps)  # the chains still in the graph, as a set and a list
    for _ in range(6):
        done = list(map(live.isdisjoint, map(jumps.__getitem__, order)))  # jump nowhere now?
        if not any(done):
            break
        live.difference_update(compress(order, done))
        order = list(compress(order, map(not_, done)))
    return {cname: jumps[cname] for cname in order}


class _Reach:
    """Which built-in hooks can reach each chain (no hook reaches a loop by now).

    One walk per hook, each chain visited at most once per hook, and only for the hooks a
    question needs: in a kube-proxy dump the 10,000 chains hang off PREROUTING and OUTPUT,
    while "is a DNAT rule reached from a hook other than PREROUTING and OUTPUT?" only needs
    the (short) walks from INPUT and POSTROUTING. The full set of hooks of a chain is only
    needed for an error message.
    """

    def __init__(self, tname: str, jumps: dict[str, list[str]]) -> None:
        self.tname, self.jumps = tname, jumps
        self._reached: dict[str, set[str]] = {}  # hook -> chains it reaches, once walked
        self._beyond: dict[tuple[str, ...], set[str]] = {}

    def reached(self, hook: str) -> set[str]:
        """The chains that ``hook`` reaches (walked the first time it is asked for)."""
        seen = self._reached.get(hook)
        if seen is None:
            seen = self._reached[hook] = {hook}
            todo = [hook]
            while todo:
                for nxt in self.jumps.get(todo.pop(), ()):
                    if nxt not in seen:
                        seen.add(nxt)
                        todo.append(nxt)
        return seen

    def beyond(self, allowed: tuple[str, ...]) -> set[str]:
        """The chains that a hook other than ``allowed`` reaches (worked out once each)."""
        found = self._beyond.get(allowed)
        if found is None:
            found = self._beyond[allowed] = set().union(
                *(self.reached(hook) for hook in BUILTIN_CHAINS[self.tname]
                  if hook not in allowed))
        return found

    def incoming(self) -> set[str]:
        """The chains an incoming packet can reach (where ``-m owner`` is refused)."""
        return self.beyond(tuple(h for h in BUILTIN_CHAINS[self.tname] if h not in _INCOMING))

    def hooks(self, cname: str) -> frozenset[str]:
        return frozenset(hook for hook in BUILTIN_CHAINS[self.tname]
                         if cname in self.reached(hook))


def _refuse_reached_loop(tname: str, chains: dict, locate: Locate) -> None:
    """Raise the error for the first loop met walking from each hook in turn, if any.

    Called when :func:`_has_loop` found a loop. The kernel refuses a loop that a packet could
    enter: one reached from a built-in chain. Chains that no hook reaches are never checked
    (``iptables-restore`` takes ``-A U1 -j U2`` and ``-A U2 -j U1`` if nothing jumps to
    them), so a loop among those alone is no error. A depth-first walk in rule order, each
    chain entered once (grey while on the path, black when done), keeping each step's rule
    so that the error points at the jump that closes the loop."""
    grey, black = 1, 2
    colour: dict[str, int] = {}
    for hook in BUILTIN_CHAINS[tname]:
        if hook in colour:
            continue
        colour[hook] = grey
        path, stack = [hook], [_rules_and_places(chains[hook])]
        while stack:
            for rule, place in stack[-1]:
                nxt = rule.target.chain if type(rule.target) is Jump else None
                if nxt is None or nxt not in chains or colour.get(nxt) == black:
                    continue
                if colour.get(nxt) == grey:
                    raise _loop_error(tuple(path), nxt, path[-1], locate(place))
                colour[nxt] = grey
                path.append(nxt)
                stack.append(_rules_and_places(chains[nxt]))
                break
            else:  # every rule of path[-1] is done
                colour[path.pop()] = black
                stack.pop()


def _rules_and_places(chain: list) -> Iterator[tuple[Rule, Place | int]]:
    """(rule, place) for each rule of a chain's ``[policy, rules, places, jumps]``."""
    return zip(chain[1], chain[2], strict=True)


def _loop_error(path: tuple[str, ...], nxt: str, cname: str, place: Place) -> RulesParseError:
    return _fail(place, "target", "chain loop: " + " -> ".join(
        (*path[path.index(nxt):], nxt)) + " (the kernel refuses it)",
        f"remove the jump from {cname} to {nxt}")


def _check_hooks(tname: str, cname: str, hooks: frozenset[str], rule: Rule,
                 place: Place) -> None:
    incoming = hooks & _INCOMING
    if rule.owner_match and incoming:
        reached = "" if cname in incoming else (
            f", which is reached from {'/'.join(sorted(incoming))}")
        raise _fail(place, "owner", f"-m owner cannot be used in {tname} {cname}{reached}: "
                    "only locally generated packets have an owner, and iptables refuses the "
                    "rule", "move the owner match to an OUTPUT or "
                    "POSTROUTING chain")
    if rule.iif is not None and cname in ("OUTPUT", "POSTROUTING"):
        raise _fail(place, "iif", f"cannot use -i in {cname}: packets there have no input "
                    "interface yet", "use -o here, or move the rule to PREROUTING/INPUT")
    if rule.oif is not None and cname in ("PREROUTING", "INPUT"):
        raise _fail(place, "oif", f"cannot use -o in {cname}: packets there have no output "
                    "interface yet", "use -i here, or move the rule to OUTPUT/POSTROUTING")
    allowed = TARGET_HOOKS.get(rule.target.name)
    if allowed is not None and hooks - set(allowed):
        raise _fail(place, "target", f"{rule.target.name} is only valid in "
                    f"{' and '.join(allowed)}, but {tname} {cname} is reached from "
                    f"{'/'.join(sorted(hooks - set(allowed)))}",
                    f"move the rule to a chain reached from {' or '.join(allowed)}")
