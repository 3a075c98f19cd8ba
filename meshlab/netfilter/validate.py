"""The checks the kernel makes when rules are loaded, then the immutable :class:`Ruleset`.

``iptables-restore`` hands the kernel a whole table at once, and the kernel refuses it if a
jump leads to a chain that does not exist, if a packet could go round in a loop of chains
(a hook reaches A, A jumps to B, B jumps to A), or if a match or target sits where its hook
cannot allow it (``-m owner`` on incoming packets, ``REDIRECT`` outside PREROUTING/OUTPUT,
...). :func:`check_and_build` makes these checks table by table, in that order, each over
the rules in the order they were written, so that an error names the first rule at fault.

The parser (:mod:`meshlab.netfilter.parse`) hands over each table as ``{chain name:
DraftChain}``: the chains as read so far, with, for every rule, where it was written
(:class:`Place`), which the error needs.

Every check is linear in the number of rules and jumps: a kube-proxy dump has 10,000 chains.
Loops are found with one depth-first walk from the hooks that colours chains (the classic
white/grey/black walk), and which hooks reach a chain with one walk per hook.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import MappingProxyType
from typing import NamedTuple

from meshlab.netfilter.rules import Jump, Rule
from meshlab.netfilter.ruleset import BUILTIN_CHAINS, Chain, Counters, Ruleset, Table
from meshlab.netfilter.source import Bad, RulesParseError, error_at


class Place(NamedTuple):
    """Where a rule was written: read only when a check fails, to word the error."""

    line: int
    """The line number (1-based)."""
    text: str
    """The whole line, as written."""
    roles: dict[str, int]
    """Token indexes of the rule's parts by role, as the rule reader noted them
    (:attr:`~meshlab.netfilter.options.RuleDraft.where`): ``"target"``, ``"owner"`` (``-m
    owner``), ``"iif"``, ``"oif"`` (``-i``, ``-o``), ``"src"``, ``"dst"``."""
    offset: int
    """Where the rule's words start among the line's (1 after a ``[p:b]`` prefix)."""
    counters: tuple[int, int] | None
    """The rule's ``[p:b]`` or ``-c`` counters, if it has them."""


class DraftChain:
    """A chain being read: its policy (``None`` for a user chain), its rules so far, and
    beside each rule the :class:`Place` it was written at."""

    __slots__ = ("places", "policy", "rules")

    def __init__(self, policy: str | None) -> None:
        self.policy = policy
        self.rules: list[Rule] = []
        self.places: list[Place] = []

    def rules_and_places(self) -> Iterator[tuple[Rule, Place]]:
        return zip(self.rules, self.places, strict=True)


TARGET_TABLES = {"REDIRECT": ("nat",), "DNAT": ("nat",), "TPROXY": ("mangle",), "CT": ("raw",)}
"""The targets only some tables allow."""
TARGET_HOOKS = {"REDIRECT": ("PREROUTING", "OUTPUT"), "DNAT": ("PREROUTING", "OUTPUT"),
                "TPROXY": ("PREROUTING",)}
"""The targets only some hooks allow (a chain is checked against every hook that reaches it)."""
_INCOMING = frozenset({"PREROUTING", "INPUT", "FORWARD"})


Jumps = dict[str, list[str]]
"""{chain: the chains it jumps to, in rule order}: all that the loop and hook walks need to
know of a table's rules."""


def check_and_build(family: str, tables: dict[str, dict[str, DraftChain]],
                    policy_counters: Counters) -> Ruleset:
    """Check ``{table: {chain: DraftChain}}`` as the kernel would, table by table, then
    build the :class:`Ruleset`. Raises :class:`RulesParseError` for the first rule at fault.
    """
    counters = dict(policy_counters)
    for tname, chains in tables.items():
        jumps = _check_targets(tname, chains)
        _refuse_reached_loop(tname, chains, jumps)
        _check_all_hooks(tname, chains, jumps)
        for cname, chain in chains.items():
            for index, place in enumerate(chain.places, 1):
                if place.counters is not None:
                    counters[(tname, cname, index)] = place.counters
    return Ruleset(family, {tname: _table(tname, chains) for tname, chains in tables.items()},
                   counters)


def _table(tname: str, chains: dict[str, DraftChain]) -> Table:
    """The immutable :class:`Table`, once every check has passed."""
    made = {cname: Chain(cname, chain.policy, tuple(chain.rules))
            for cname, chain in chains.items()}
    return Table(tname, MappingProxyType(made))


def _fail(place: Place, role: str, message: str, hint: str) -> RulesParseError:
    """The error for the rule written at ``place``, pointing at its part ``role``."""
    return error_at(Bad(place.roles.get(role, 0), message, hint), place.line, place.text,
                    place.offset)


# --------------------------------------------------------------------------- targets


def _check_targets(tname: str, chains: dict[str, DraftChain]) -> Jumps:
    """Raise for the first rule that jumps to a missing or built-in chain, or whose target
    is not allowed in this table; return the table's jumps."""
    jumps: Jumps = {}
    for cname, chain in chains.items():
        jumps[cname] = out = []
        for rule, place in chain.rules_and_places():
            target = rule.target
            if type(target) is Jump:
                jumped = chains.get(target.chain)
                if jumped is None or jumped.policy is not None:
                    raise _bad_jump(tname, target, jumped, place)
                out.append(target.chain)
            elif target.name in TARGET_TABLES and tname not in TARGET_TABLES[target.name]:
                allowed = TARGET_TABLES[target.name]
                raise _fail(place, "target", f"{target.name} is only valid in the {allowed[0]} "
                            f"table, not {tname}", f"move the rule to *{allowed[0]}")
    return jumps


def _bad_jump(tname: str, target: Jump, jumped: DraftChain | None,
              place: Place) -> RulesParseError:
    """The error for a jump to a chain that does not exist (``jumped`` None) or is built in."""
    if jumped is None:
        return _fail(place, "target", f"chain or target {target.chain!r} does not exist in "
                     f"table {tname}", f"declare it with :{target.chain} - [0:0] (or -N), or "
                     "check the spelling of the target")
    return _fail(place, "target", f"cannot jump to the built-in chain {target.chain}",
                 "jump to a user chain instead")


# --------------------------------------------------------------------------- loops


def _refuse_reached_loop(tname: str, chains: dict[str, DraftChain], jumps: Jumps) -> None:
    """Raise the error for the first loop met walking from each hook in turn, if any.

    The kernel refuses a loop that a packet could enter: one reached from a built-in chain.
    Chains that no hook reaches are never checked (``iptables-restore`` takes ``-A U1 -j U2``
    and ``-A U2 -j U1`` if nothing jumps to them), so a loop among those alone is no error.

    A depth-first walk along the jumps in rule order, each chain entered once: *grey* while
    it is on the walk's path, *black* once every jump out of it is done. Meeting a grey chain
    again means we went round a loop; the jump in hand (the chain's first to that grey chain,
    since it stays grey as long as we are below it) is the one that closes it. The walk
    keeps its own stack (of each open chain's remaining jumps) rather than recursing, so
    10,000 nested chains do not hit Python's recursion limit."""
    grey, black = 1, 2
    colour: dict[str, int] = {}
    for hook in BUILTIN_CHAINS[tname]:
        if hook in colour:
            continue
        colour[hook] = grey
        path, stack = [hook], [iter(jumps[hook])]
        while stack:
            for nxt in stack[-1]:
                if colour.get(nxt) == black:
                    continue
                if colour.get(nxt) == grey:
                    place = next(place for rule, place in chains[path[-1]].rules_and_places()
                                 if type(rule.target) is Jump and rule.target.chain == nxt)
                    raise _fail(place, "target", "chain loop: " + " -> ".join(
                        (*path[path.index(nxt):], nxt)) + " (the kernel refuses it)",
                        f"remove the jump from {path[-1]} to {nxt}")
                colour[nxt] = grey
                path.append(nxt)
                stack.append(iter(jumps[nxt]))
                break
            else:  # every jump out of path[-1] is done
                colour[path.pop()] = black
                stack.pop()


# --------------------------------------------------------------------------- hooks


def _reached(hook: str, jumps: Jumps) -> set[str]:
    """The chains that built-in chain ``hook`` reaches (itself too): one walk along the jumps,
    each chain visited once (a loop, which no hook reaches by now, ends the walk like any
    chain already seen)."""
    seen, todo = {hook}, [hook]
    while todo:
        for nxt in jumps[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _check_all_hooks(tname: str, chains: dict[str, DraftChain], jumps: Jumps) -> None:
    """Raise for the first rule (in chain order, then rule order) that sits where a hook
    reaching its chain does not allow it: ``-m owner`` where an incoming packet can come
    (it has no owner), ``-i`` in OUTPUT/POSTROUTING and ``-o`` in PREROUTING/INPUT (no such
    interface yet), a target outside the hooks of :data:`TARGET_HOOKS`.

    Like iptables, the checks look at the options as written (:attr:`Place.roles`): ``-i +``
    is refused in OUTPUT although the kernel then keeps no interface match. The chains
    where each part is refused are worked out first, from the chains each hook reaches, so
    that each rule is only asked whether it has such a part."""
    reached = {hook: _reached(hook, jumps) for hook in BUILTIN_CHAINS[tname]}
    no_owner = set().union(*(seen for hook, seen in reached.items() if hook in _INCOMING))
    no_target = {name: set().union(*(seen for hook, seen in reached.items() if hook not in allowed))
                 for name, allowed in TARGET_HOOKS.items()}
    for cname, chain in chains.items():
        owner_refused = cname in no_owner
        iif_refused = cname in ("OUTPUT", "POSTROUTING")
        oif_refused = cname in ("PREROUTING", "INPUT")
        for rule, place in chain.rules_and_places():
            roles = place.roles
            name = rule.target.name
            if ((owner_refused and "owner" in roles) or (iif_refused and "iif" in roles)
                    or (oif_refused and "oif" in roles)
                    or (name in no_target and cname in no_target[name])):
                hooks = frozenset(hook for hook, seen in reached.items() if cname in seen)
                raise _misplaced(tname, cname, hooks, rule, place)


def _misplaced(tname: str, cname: str, hooks: frozenset[str], rule: Rule,
               place: Place) -> RulesParseError:
    """The error for a rule of chain ``cname`` (reached from ``hooks``) with a part these
    hooks do not allow; it names the first of the kernel's checks that fails."""
    roles = place.roles
    incoming = hooks & _INCOMING
    if "owner" in roles and incoming:
        reached = "" if cname in incoming else (
            f", which is reached from {'/'.join(sorted(incoming))}")
        return _fail(place, "owner", f"-m owner cannot be used in {tname} {cname}{reached}: "
                     "only locally generated packets have an owner, and iptables refuses the "
                     "rule", "move the owner match to an OUTPUT or POSTROUTING chain")
    if "iif" in roles and cname in ("OUTPUT", "POSTROUTING"):
        return _fail(place, "iif", f"cannot use -i in {cname}: packets there have no input "
                     "interface yet", "use -o here, or move the rule to PREROUTING/INPUT")
    if "oif" in roles and cname in ("PREROUTING", "INPUT"):
        return _fail(place, "oif", f"cannot use -o in {cname}: packets there have no output "
                     "interface yet", "use -i here, or move the rule to OUTPUT/POSTROUTING")
    allowed = TARGET_HOOKS[rule.target.name]
    return _fail(place, "target", f"{rule.target.name} is only valid in "
                 f"{' and '.join(allowed)}, but {tname} {cname} is reached from "
                 f"{'/'.join(sorted(hooks - set(allowed)))}",
                 f"move the rule to a chain reached from {' or '.join(allowed)}")
