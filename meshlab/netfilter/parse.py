"""Read iptables rules in any of the three forms people meet, into a :class:`Ruleset`.

1. ``iptables-save`` output, as the kernel prints it: ``*nat``, ``:CHAIN POLICY [p:b]``
   headers, ``-A`` lines (``[p:b] -A`` with ``-c``), ``-m tcp`` before ``--dport``, hex marks,
   ``MARK --set-xmark``, ``CONNMARK ... --nfmask --ctmask``, ``TPROXY --on-ip --tproxy-mark``.
2. ``iptables-restore`` documents as ``istio-iptables`` writes them: ``* nat``, ``-N CHAIN``,
   ``-A``, ``-I CHAIN N``, ``COMMIT``.
3. Command lines: ``iptables -t nat -A OUTPUT -p tcp -j REDIRECT --to-ports 15001``.

Anything it does not understand is an error that names the line, the column, the token and a
way to fix it: an option is never silently ignored, because an ignored match would make a rule
match more than the kernel's. After reading, the rules are checked the way the kernel checks
them on load: jumps lead to chains that exist, chains do not loop, owner matches and nat
targets sit only where their hooks allow.

This module is the *document* reader: lines, ``*table`` sections, chain headers, the
commands ``-A``/``-I``/``-N``/``-P``, ``COMMIT``, and the public entry points
:func:`parse_ruleset`, :func:`parse_rule_spec` and :func:`parse_rule`. The rest of the work
is done by modules with one job each:

* :mod:`meshlab.netfilter.source` -- splitting a line into words, and errors that point at
  a word (:class:`RulesParseError`, re-exported here);
* :mod:`meshlab.netfilter.options` -- one rule's options into its matches and target (the
  rule decision), with :mod:`meshlab.netfilter.values` reading each value word;
* :mod:`meshlab.netfilter.shapes` -- plans that replay that reading for every further rule
  of a shape already met;
* :mod:`meshlab.netfilter.memos` -- one shared object for every equal match or target;
* :mod:`meshlab.netfilter.validate` -- the load-time checks, then the immutable ``Ruleset``.

Speed (a 20,000-rule dump is read in well under the time of ``shlex.split`` on each line):
the first rule of each *shape* is read option by option (options are dispatched through a
dict) and the rest of that shape reuse what it taught (:mod:`meshlab.netfilter.shapes`),
found for a plain ``-A`` line without even splitting it into words
(:func:`~meshlab.netfilter.shapes.match_line`); a plain user chain header is read in the
main loop with one call (:func:`~meshlab.netfilter.source.chain_header`); both have C twins
used where they could be built. Equal matches and targets are one shared object, made once
(:mod:`meshlab.netfilter.memos`); frozen values are made with the fast constructors of
:mod:`meshlab.netfilter.fastnew`; the load-time checks are linear and mostly work from what
the parser noted (:mod:`meshlab.netfilter.validate`); columns for error messages are only
worked out when there is an error (:mod:`meshlab.netfilter.source`); and the cycle collector
is paused while a document is read (:func:`_gc_paused`).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

from meshlab.errors import MeshlabError
from meshlab.netfilter.memos import trim_memos
from meshlab.netfilter.options import (
    DROP,
    finish_rule,
    need_value,
    read_rule,
    settle_tproxy_defaults,
)
from meshlab.netfilter.rules import Jump, Rule, Tproxy
from meshlab.netfilter.ruleset import BUILTIN_CHAINS, Ruleset
from meshlab.netfilter.shapes import Plans, match_line
from meshlab.netfilter.source import (
    BLANK,
    Bad,
    RulesParseError,
    blank_split,
    chain_header,
    error_at,
    is_command,
    restore_split,
    split,
)
from meshlab.netfilter.validate import LIMITED_TARGETS, Notes, Place, check_and_build

__all__ = ["RulesParseError", "parse_rule", "parse_rule_spec", "parse_ruleset"]


class _Doc:
    """The state while reading a document: tables -> chains -> [policy, rules, places, jumps].

    ``places`` runs beside ``rules``: for each rule a plain tuple, or just the line number for
    a plain ``-A`` line (see :data:`meshlab.netfilter.validate.Place`), saying where it was
    written, read only if a load-time check fails. ``jumps`` lists the chains that the rules
    jump to, noted as they are read so that the load-time checks need not look at every rule
    again. ``plans`` holds a plan for each rule shape met so far (:class:`Plans`).
    """

    def __init__(self, family: str | None) -> None:
        self.family = family
        self.tables: dict[str, dict[str, list]] = {}
        self.policy_counters: dict[tuple[str, str, int], tuple[int, int]] = {}
        self.notes = Notes()  # what the load-time checks will want to know
        self.open: tuple[str, int] | None = None  # table and the line that opened it
        self.plans = Plans()  # see meshlab.netfilter.shapes

    def table(self, name: str) -> dict[str, list]:
        chains = self.tables.get(name)
        if chains is None:
            chains = self.tables[name] = {c: ["ACCEPT", [], [], []] for c in BUILTIN_CHAINS[name]}
        return chains


def parse_ruleset(text: str, *, family: str | None = None) -> Ruleset:
    """Read ``iptables-save`` output, an ``iptables-restore`` document, or ``iptables``
    command lines (or a mix) into a :class:`Ruleset`. Raises :class:`RulesParseError`."""
    if family not in (None, "ipv4", "ipv6"):
        raise MeshlabError(f"family must be 'ipv4' or 'ipv6', not {family!r}")
    if not isinstance(text, str):
        raise MeshlabError("rules must be text (str); decode bytes first")
    trim_memos()
    with _gc_paused():
        return _parse_document(text, _Doc(family))


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause Python's cycle collector while a document is read.

    Reading 20,000 rules makes ~100,000 small objects (rules, matches, tuples) that point at
    each other but never in a cycle, so the cycle collector can free nothing among them. It
    still runs every few hundred new objects, and ever more often re-scans *all* of them as
    they pile up: about a third of the parse time for a big dump. Reference counting frees
    everything as usual; any cycles made meanwhile (there are none here) wait for the next
    collection. The collector is switched back on only if it was on before.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _parse_document(text: str, doc: _Doc) -> Ruleset:
    lines = text.split("\n")  # iptables-restore splits on newlines only
    if lines and lines[-1] == "":
        lines.pop()
    chains = tname = None  # the open table's chains and name (doc.open changes only in _line)
    for lineno, raw in enumerate(lines, 1):
        try:
            if raw[:3] == "-A " and chains is not None:
                # The usual line, a rule appended in an open *table section: none of
                # _line's other cases can apply, and splitting needs no stripping first.
                if not _append(doc, tname, chains, raw, lineno):
                    _command(doc, tname, restore_split(raw), 0, lineno, raw, None, 0)
                continue
            if raw[:1] == ":" and chains is not None:
                # A user chain header ``:NAME - [p:b]`` declaring a new, well-named chain in
                # the open table, made here with one call (10,000 of them in a kube-proxy
                # dump); anything else (a built-in, a duplicate, an error) goes to _header.
                name = chain_header(raw)
                if (name is not None and name not in chains and len(name) <= 28
                        and name[0] != "-" and name != "!"):
                    chains[name] = [None, [], [], []]
                    continue
            line = raw.strip(BLANK)
            if not line or line[0] == "#":
                continue
            if line[0] == ":":  # a chain header (10,000 of them in a kube-proxy dump)
                _header(doc, line, lineno)
                continue
            _line(doc, line, lineno, raw)
            tname = None if doc.open is None else doc.open[0]
            chains = None if tname is None else doc.tables[tname]
        except Bad as bad:
            raise error_at(bad, lineno, raw) from None
    if doc.open is not None:
        tname, opened = doc.open
        last = len(lines)
        raise RulesParseError(
            f"the *{tname} section opened on line {opened} has no COMMIT (is the file cut short?)",
            line=last, column=len(lines[-1].rstrip(BLANK)) + 1, token="",
            hint="end every table section with a line COMMIT", source=lines[-1].rstrip(BLANK))
    family = doc.family or "ipv4"
    if family == "ipv6" and any(kind is Tproxy for _, kind in doc.notes.limited):
        for chain in doc.tables.get("mangle", {}).values():
            settle_tproxy_defaults(chain[1])

    def locate(place: Place | int) -> Place:
        """The whole place of a rule noted by its line number alone (see _append)."""
        if type(place) is not int:
            return place
        raw = lines[place - 1]
        return (place, raw, read_rule(split(raw), 2, family).where, 0, None)
    return check_and_build(family, doc.tables, doc.policy_counters, doc.notes, locate)


def _line(doc: _Doc, line: str, lineno: int, raw: str) -> None:
    first = line[0]
    if first == "*":
        name = line[1:].strip(BLANK)
        if doc.open is not None:
            raise Bad(0, f"*{name} starts before the *{doc.open[0]} section (line "
                      f"{doc.open[1]}) was committed", "add a COMMIT line before it")
        if name not in BUILTIN_CHAINS:
            raise Bad(0 if line[1:2].strip() else 1, f"unknown table {name!r}",
                      "use one of " + ", ".join(BUILTIN_CHAINS))
        if doc.tables.pop(name, None) is not None:  # iptables-restore empties a table it
            doc.policy_counters = {k: v for k, v in doc.policy_counters.items()  # meets again
                                   if k[0] != name}
        doc.table(name)
        doc.open = (name, lineno)
        return
    if line == "COMMIT":
        if doc.open is None:
            raise Bad(0, "COMMIT without a table", "start the section with *nat (or another "
                      "table) first")
        doc.open = None
        return
    if first == ":":
        _header(doc, line, lineno)
        return
    toks = split(line)
    if first == "[":
        counters = _counters_prefix(toks[0])
        toks = toks[1:]
        offset = 1
    else:
        counters, offset = None, 0
    if toks and is_command(toks[0]):
        if doc.open is not None:
            raise Bad(0, "an iptables command line inside a *table section",
                      "commit the section first, or write the rule as -A CHAIN ...")
        _command_line(doc, toks, lineno, raw)
        return
    if doc.open is None:
        raise Bad(offset, "a rule outside any table section",
                  "put *nat (or *filter, *mangle, *raw) before it and COMMIT after it, or "
                  "write it as a command: iptables -t nat -A ...")
    try:
        _command(doc, doc.open[0], toks, 0, lineno, raw, counters, offset)
    except Bad as bad:
        raise error_at(bad, lineno, raw, offset) from None


_UNMODELLED_COMMANDS = ("-D", "--delete", "-R", "--replace", "-F", "--flush", "-X",
                        "--delete-chain", "-Z", "--zero", "-E", "--rename-chain")
"""Commands iptables-restore takes in a document that this model does not read."""


def _counters_prefix(tok: str) -> tuple[int, int]:
    packets, _, nbytes = tok[1:-1].partition(":")
    if not (tok.endswith("]") and packets.isdigit() and nbytes.isdigit()):
        raise Bad(0, f"bad counters {tok!r}", "write counters as [PACKETS:BYTES], e.g. [0:0]")
    return int(packets), int(nbytes)


def _header(doc: _Doc, line: str, lineno: int) -> None:
    if doc.open is None:
        raise Bad(0, "a chain header outside any table section", "put *TABLE before it")
    toks = blank_split(line[1:])
    tname = doc.open[0]
    chains = doc.table(tname)
    if len(toks) < 2:
        raise Bad(0, f"chain header {line!r} is incomplete",
                  "write :CHAIN POLICY [0:0], e.g. :ISTIO_OUTPUT - [0:0]")
    name, policy = toks[0], toks[1]
    if name in BUILTIN_CHAINS[tname]:
        if policy not in ("ACCEPT", "DROP", "-"):  # "-": the policy stays as it is
            raise Bad(1, f"built-in chain {name} needs policy ACCEPT or DROP, not {policy!r}",
                      f"write :{name} ACCEPT [0:0]")
        if policy != "-":
            chains[name][0] = policy
        if len(toks) > 2:
            doc.policy_counters[(tname, name, 0)] = _counters_prefix(toks[2])
        return
    # A user chain: iptables-restore ignores the policy word ("-" by convention), and a
    # header naming a chain that exists already empties it.
    if name in chains:
        chains[name] = [None, [], [], []]
        return
    _new_chain(chains, name, tname, 0)


def _new_chain(chains: dict, name: str, tname: str, index: int) -> None:
    if name in chains:
        raise Bad(index, f"chain {name} already exists in table {tname}",
                  "declare each chain once")
    if not name or len(name) > 28 or name.startswith("-") or name == "!":
        raise Bad(index, f"bad chain name {name!r}", "chain names have 1 to 28 characters and "
                  "do not start with '-'")
    chains[name] = [None, [], [], []]


def _command_line(doc: _Doc, toks: list[str], lineno: int, raw: str) -> None:
    """``iptables [-t TABLE] -A|-I|-N|-P ...``: a command as a person types it."""
    family = "ipv6" if "ip6tables" in toks[0] else "ipv4"
    if doc.family is None:
        doc.family = family
    elif doc.family != family:
        raise error_at(Bad(0, f"{toks[0]} in {doc.family} rules",
                           "keep iptables and ip6tables rules apart"), lineno, raw)
    rest, table, i = [], "filter", 1
    while i < len(toks):
        if toks[i] in ("-t", "--table"):
            if i + 1 >= len(toks):
                raise error_at(Bad(i + 1, "-t needs a table name", "write -t nat"), lineno, raw)
            table = toks[i + 1]
            if table not in BUILTIN_CHAINS:
                raise error_at(Bad(i + 1, f"unknown table {table!r}",
                                   "use one of " + ", ".join(BUILTIN_CHAINS)), lineno, raw)
            i += 2
            continue
        if toks[i] in ("-w", "--wait") and not rest:
            i += 1
            continue
        rest.append(i)
        i += 1
    if not rest:
        raise error_at(Bad(1, "the command does nothing", "add -A CHAIN ... -j TARGET"),
                       lineno, raw)
    # keep token indexes of the original line for error columns: re-index via a mapping
    sub = [toks[j] for j in rest]
    try:
        _command(doc, table, sub, 0, lineno, raw, None, 0)
    except Bad as bad:
        index = rest[bad.index] if bad.index < len(rest) else len(toks)
        raise error_at(Bad(index, bad.message, bad.hint), lineno, raw) from None


def _command(doc: _Doc, tname: str, toks: list[str], i: int, lineno: int, raw: str,
             counters: tuple[int, int] | None, offset: int) -> None:
    chains = doc.table(tname)
    cmd = toks[i] if toks else ""
    if cmd == "-A":  # by far the most common: straight to the rule
        name = need_value(toks, i, cmd)
        chain = chains.get(name)
        if chain is not None:
            _store(doc, tname, chain, None, toks, i + 2, lineno, raw, counters, offset)
            return
    if cmd in ("-N", "--new-chain"):
        _new_chain(chains, need_value(toks, i, cmd), tname, i + 1)
        if len(toks) > i + 2:
            raise Bad(i + 2, f"unexpected {toks[i + 2]!r} after -N CHAIN", "remove it")
        return
    if cmd in ("-P", "--policy"):
        name = need_value(toks, i, cmd)
        if name not in BUILTIN_CHAINS[tname]:
            raise Bad(i + 1, f"{name} is not a built-in chain of {tname}",
                      "only built-in chains have a policy")
        policy = toks[i + 2] if len(toks) > i + 2 else ""
        if policy not in ("ACCEPT", "DROP"):
            raise Bad(i + 2, f"policy must be ACCEPT or DROP, not {policy!r}",
                      f"write -P {name} ACCEPT")
        chains[name][0] = policy
        return
    if cmd not in ("-A", "--append", "-I", "--insert"):
        known = cmd in _UNMODELLED_COMMANDS
        raise Bad(i, (f"{cmd} is an iptables command this model does not read" if known else
                      f"unknown command {cmd!r}") if cmd else "empty rule",
                  "this model reads -A CHAIN, -I CHAIN [N], -N CHAIN and -P CHAIN POLICY",
                  model_limit=known)
    name = need_value(toks, i, cmd)
    chain = chains.get(name)
    if chain is None:
        raise Bad(i + 1, f"chain {name} does not exist in table {tname}",
                  f"declare it first with :{name} - [0:0] (or -N {name})")
    start, position = i + 2, len(chain[1])
    if cmd in ("-I", "--insert"):
        position = 0
        if start < len(toks) and toks[start].isdigit():
            position = int(toks[start]) - 1
            if not 0 <= position <= len(chain[1]):
                raise Bad(start, f"cannot insert at {toks[start]}: {name} has "
                          f"{len(chain[1])} rules", f"use a number from 1 to {len(chain[1]) + 1}")
            start += 1
    _store(doc, tname, chain, None if cmd in ("-A", "--append") else position, toks, start,
           lineno, raw, counters, offset)


def _append(doc: _Doc, tname: str, chains: dict[str, list], raw: str, lineno: int) -> bool:
    """``-A CHAIN ...`` in the open table (``tname``, ``chains``), read with the plan for its
    shape, found by :func:`~meshlab.netfilter.shapes.match_line` without splitting the line:
    the path of almost every line of a dump, kept free of other calls. False when this is not
    that simple case (no plan yet, no such chain, an odd value): :func:`_command` then reads
    it."""
    found = match_line(raw, doc.plans.by_count)
    if found is None:
        return False
    plan, name, values = found
    chain = chains.get(name)
    if chain is None or (plan.drop and tname == "nat"):  # DROP in nat: _store refuses it
        return False
    try:
        rule = plan.read(values, doc.family)
    except Bad:
        return False
    chain[1].append(rule)
    chain[2].append(lineno)  # the whole validate.Place is made again if a check fails
    # (the plan's roles were noted when its first rule was stored)
    if plan.jump_slot is not None:
        chain[3].append(values[plan.jump_slot])
    elif plan.kind in LIMITED_TARGETS:
        doc.notes.limited.add((tname, plan.kind))
    return True


def _store(doc: _Doc, tname: str, chain: list, position: int | None, toks: list[str],
           start: int, lineno: int, raw: str, counters: tuple[int, int] | None,
           offset: int) -> None:
    """Read the rule in ``toks[start:]`` and put it in ``chain`` (of table ``tname``) at
    ``position`` (None: append), with where it was written; note what the checks want."""
    rule, family, roles, rule_counters = doc.plans.read(doc.family, toks, start)
    if rule.target is DROP and tname == "nat":
        raise Bad(roles.get("target", start), "the nat table is not for filtering: iptables "
                  "refuses DROP in it", "drop in the filter table; in nat, RETURN leaves a "
                  "connection untranslated")
    if doc.family is None:
        doc.family = family
    where = (lineno, raw, roles, offset, counters or rule_counters)  # a validate.Place
    if position is None:
        chain[1].append(rule)
        chain[2].append(where)
    else:
        chain[1].insert(position, rule)
        chain[2].insert(position, where)
    kind = type(rule.target)
    if kind is Jump:
        chain[3].append(rule.target.chain)  # the checks only need which, not in what order
    elif kind in LIMITED_TARGETS:
        doc.notes.limited.add((tname, kind))
    if where[4] is not None:
        doc.notes.counters = True
    if "owner" in roles or "iif" in roles or "oif" in roles:
        doc.notes.roles = True
        if any(m is not None and m.name == "+" and not m.negated for m in (rule.iif, rule.oif)):
            doc.notes.any_interface = True  # dropped after the checks (validate)


def parse_rule_spec(text: str) -> tuple[str | None, str | None, Rule]:
    """``[-t TABLE] [-A CHAIN] OPTIONS`` -> (table or None, chain or None, rule)."""
    if not isinstance(text, str):
        raise MeshlabError("a rule must be text (str)")
    trim_memos()
    try:
        toks = split(text.strip())
        table = chain = None
        i = 0
        if toks and toks[0] in ("iptables", "ip6tables"):
            i = 1
        while i + 1 < len(toks) and toks[i] in ("-t", "--table", "-A", "--append"):
            if toks[i] in ("-t", "--table"):
                table = toks[i + 1]
                if table not in BUILTIN_CHAINS:
                    raise Bad(i + 1, f"unknown table {table!r}",
                              "use one of " + ", ".join(BUILTIN_CHAINS))
            else:
                chain = toks[i + 1]
            i += 2
        return table, chain, finish_rule(read_rule(toks, i, None))
    except Bad as bad:
        raise error_at(bad, 1, text) from None


def parse_rule(text: str) -> Rule:
    """One rule in restore form, e.g. ``-p tcp --dport 80 -j RETURN`` (an ``-A CHAIN``
    prefix is accepted and ignored)."""
    return parse_rule_spec(text)[2]
