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

How a document is read, top to bottom (one path for every line and every document):

* :func:`parse_ruleset` goes through the document line by line (:func:`_read_line`): a
  ``*table`` line opens a section, ``COMMIT`` closes it, a ``:CHAIN POLICY`` header declares
  a chain (:func:`_header`); any other line is split into words
  (:func:`meshlab.netfilter.source.split`) and is a command: ``-A``/``-I`` a rule,
  ``-N`` a chain, ``-P`` a policy (:func:`_command`), or, outside any section, a whole
  ``iptables ...`` command line (:func:`_command_line`).
* A rule's words are read by :func:`meshlab.netfilter.options.read_rule` into a
  :class:`~meshlab.netfilter.options.RuleDraft`, which
  :func:`~meshlab.netfilter.options.finish_rule` turns into a frozen
  :class:`~meshlab.netfilter.rules.Rule` (the rule decision, with
  :mod:`meshlab.netfilter.values` reading each value word). The rule is kept in its
  :class:`~meshlab.netfilter.validate.DraftChain` with the
  :class:`~meshlab.netfilter.validate.Place` it was written at (:func:`_add_rule`).
* Once every line is read, :func:`meshlab.netfilter.validate.check_and_build` makes the
  kernel's load-time checks and builds the immutable :class:`Ruleset`.

Errors inside a line are raised as :class:`~meshlab.netfilter.source.Bad`, with the index of
the offending word; the loop here knows the line and turns them into a
:class:`RulesParseError` (:func:`~meshlab.netfilter.source.error_at`), which works out the
word's column only then.
"""

from __future__ import annotations

from meshlab.errors import MeshlabError
from meshlab.netfilter.options import (
    finish_rule,
    need_value,
    read_rule,
    settle_tproxy_defaults,
)
from meshlab.netfilter.rules import Rule
from meshlab.netfilter.ruleset import BUILTIN_CHAINS, Ruleset
from meshlab.netfilter.source import (
    BLANK,
    Bad,
    RulesParseError,
    blank_split,
    error_at,
    is_command,
    split,
)
from meshlab.netfilter.validate import DraftChain, Place, check_and_build

__all__ = ["RulesParseError", "parse_rule", "parse_rule_spec", "parse_ruleset"]


class _Doc:
    """What has been read of a document so far: ``{table: {chain: DraftChain}}``, the
    counters of built-in chains' policies, the family (once a rule says which), and the
    open ``*table`` section with the line that opened it."""

    def __init__(self, family: str | None) -> None:
        self.family = family
        self.tables: dict[str, dict[str, DraftChain]] = {}
        self.policy_counters: dict[tuple[str, str, int], tuple[int, int]] = {}
        self.open: tuple[str, int] | None = None

    def table(self, name: str) -> dict[str, DraftChain]:
        """The chains of table ``name``, its built-in chains made (policy ACCEPT) on first use."""
        chains = self.tables.get(name)
        if chains is None:
            chains = self.tables[name] = {c: DraftChain("ACCEPT") for c in BUILTIN_CHAINS[name]}
        return chains


def parse_ruleset(text: str, *, family: str | None = None) -> Ruleset:
    """Read ``iptables-save`` output, an ``iptables-restore`` document, or ``iptables``
    command lines (or a mix) into a :class:`Ruleset`. Raises :class:`RulesParseError`."""
    if family not in (None, "ipv4", "ipv6"):
        raise MeshlabError(f"family must be 'ipv4' or 'ipv6', not {family!r}")
    if not isinstance(text, str):
        raise MeshlabError("rules must be text (str); decode bytes first")
    doc = _Doc(family)
    lines = text.split("\n")  # iptables-restore splits on newlines only
    if lines and lines[-1] == "":
        lines.pop()
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip(BLANK)
        if not line or line[0] == "#":
            continue
        try:
            _read_line(doc, line, lineno, raw)
        except Bad as bad:
            raise error_at(bad, lineno, raw) from None
    if doc.open is not None:
        tname, opened = doc.open
        last = lines[-1].rstrip(BLANK)
        raise RulesParseError(
            f"the *{tname} section opened on line {opened} has no COMMIT (is the file cut short?)",
            line=len(lines), column=len(last) + 1, token="",
            hint="end every table section with a line COMMIT", source=last)
    family = doc.family or "ipv4"
    if family == "ipv6" and "mangle" in doc.tables:
        for chain in doc.tables["mangle"].values():
            settle_tproxy_defaults(chain.rules)
    return check_and_build(family, doc.tables, doc.policy_counters)


def _read_line(doc: _Doc, line: str, lineno: int, raw: str) -> None:
    """One line that is not blank or a comment (``line``: ``raw`` without blanks around)."""
    first = line[0]
    if first == "*":
        _open_table(doc, line, lineno)
        return
    if line == "COMMIT":
        if doc.open is None:
            raise Bad(0, "COMMIT without a table", "start the section with *nat (or another "
                      "table) first")
        doc.open = None
        return
    if first == ":":
        _header(doc, line)
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
        _command(doc, doc.open[0], toks, lineno, raw, counters, offset)
    except Bad as bad:
        raise error_at(bad, lineno, raw, offset) from None


def _open_table(doc: _Doc, line: str, lineno: int) -> None:
    """``*TABLE``: a section of one table, up to its ``COMMIT``."""
    name = line[1:].strip(BLANK)
    if doc.open is not None:
        raise Bad(0, f"*{name} starts before the *{doc.open[0]} section (line "
                  f"{doc.open[1]}) was committed", "add a COMMIT line before it")
    if name not in BUILTIN_CHAINS:
        raise Bad(0 if line[1:2].strip() else 1, f"unknown table {name!r}",
                  "use one of " + ", ".join(BUILTIN_CHAINS))
    if doc.tables.pop(name, None) is not None:  # iptables-restore empties a table it meets again
        doc.policy_counters = {k: v for k, v in doc.policy_counters.items() if k[0] != name}
    doc.table(name)
    doc.open = (name, lineno)


_UNMODELLED_COMMANDS = ("-D", "--delete", "-R", "--replace", "-F", "--flush", "-X",
                        "--delete-chain", "-Z", "--zero", "-E", "--rename-chain")
"""Commands iptables-restore takes in a document that this model does not read."""


def _counters_prefix(tok: str) -> tuple[int, int]:
    packets, _, nbytes = tok[1:-1].partition(":")
    if not (tok.endswith("]") and packets.isdigit() and nbytes.isdigit()):
        raise Bad(0, f"bad counters {tok!r}", "write counters as [PACKETS:BYTES], e.g. [0:0]")
    return int(packets), int(nbytes)


def _header(doc: _Doc, line: str) -> None:
    """``:CHAIN POLICY [p:b]``: a built-in chain's policy (and its counters), or a user chain."""
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
            chains[name].policy = policy
        if len(toks) > 2:
            doc.policy_counters[(tname, name, 0)] = _counters_prefix(toks[2])
        return
    # A user chain: iptables-restore ignores the policy word ("-" by convention), and a
    # header naming a chain that exists already empties it.
    if name in chains:
        chains[name] = DraftChain(None)
        return
    _new_chain(chains, name, tname, 0)


def _new_chain(chains: dict[str, DraftChain], name: str, tname: str, index: int) -> None:
    """Declare the user chain ``name`` (its word at ``index``) in table ``tname``."""
    if name in chains:
        raise Bad(index, f"chain {name} already exists in table {tname}",
                  "declare each chain once")
    if not name or len(name) > 28 or name.startswith("-") or name == "!":
        raise Bad(index, f"bad chain name {name!r}", "chain names have 1 to 28 characters and "
                  "do not start with '-'")
    chains[name] = DraftChain(None)


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
    # the command's words without -t TABLE; rest[k] is where its word k is on the line
    sub = [toks[j] for j in rest]
    try:
        _command(doc, table, sub, lineno, raw, None, 0, rest)
    except Bad as bad:
        index = rest[bad.index] if bad.index < len(rest) else len(toks)
        raise error_at(Bad(index, bad.message, bad.hint), lineno, raw) from None


def _command(doc: _Doc, tname: str, toks: list[str], lineno: int, raw: str,
             counters: tuple[int, int] | None, offset: int,
             line_index: list[int] | None = None) -> None:
    """A command in table ``tname``: ``-A``/``-I CHAIN [N] RULE``, ``-N CHAIN``, or
    ``-P CHAIN POLICY``. ``counters`` and ``offset`` come from a ``[p:b]`` prefix, if any;
    ``line_index[k]``, for a command line, is where word k of ``toks`` is among the line's."""
    chains = doc.table(tname)
    cmd = toks[0] if toks else ""
    if cmd in ("-A", "--append", "-I", "--insert"):
        _add_rule(doc, tname, chains, toks, lineno, raw, counters, offset, line_index)
    elif cmd in ("-N", "--new-chain"):
        _new_chain(chains, need_value(toks, 0, cmd), tname, 1)
        if len(toks) > 2:
            raise Bad(2, f"unexpected {toks[2]!r} after -N CHAIN", "remove it")
    elif cmd in ("-P", "--policy"):
        name = need_value(toks, 0, cmd)
        if name not in BUILTIN_CHAINS[tname]:
            raise Bad(1, f"{name} is not a built-in chain of {tname}",
                      "only built-in chains have a policy")
        policy = toks[2] if len(toks) > 2 else ""
        if policy not in ("ACCEPT", "DROP"):
            raise Bad(2, f"policy must be ACCEPT or DROP, not {policy!r}",
                      f"write -P {name} ACCEPT")
        chains[name].policy = policy
    else:
        known = cmd in _UNMODELLED_COMMANDS
        raise Bad(0, (f"{cmd} is an iptables command this model does not read" if known else
                      f"unknown command {cmd!r}") if cmd else "empty rule",
                  "this model reads -A CHAIN, -I CHAIN [N], -N CHAIN and -P CHAIN POLICY",
                  model_limit=known)


def _add_rule(doc: _Doc, tname: str, chains: dict[str, DraftChain], toks: list[str],
              lineno: int, raw: str, counters: tuple[int, int] | None, offset: int,
              line_index: list[int] | None) -> None:
    """``-A CHAIN RULE`` (at the end) or ``-I CHAIN [N] RULE`` (at N, 1 by default): read the
    rule and keep it in its chain with the :class:`Place` it was written at (its parts'
    indexes among the line's words, for the errors the load-time checks may raise)."""
    cmd, name = toks[0], need_value(toks, 0, toks[0])
    chain = chains.get(name)
    if chain is None:
        raise Bad(1, f"chain {name} does not exist in table {tname}",
                  f"declare it first with :{name} - [0:0] (or -N {name})")
    start, position = 2, len(chain.rules)
    if cmd in ("-I", "--insert"):
        position = 0
        if start < len(toks) and toks[start].isdigit():
            position = int(toks[start]) - 1
            if not 0 <= position <= len(chain.rules):
                raise Bad(start, f"cannot insert at {toks[start]}: {name} has "
                          f"{len(chain.rules)} rules",
                          f"use a number from 1 to {len(chain.rules) + 1}")
            start += 1
    draft = read_rule(toks, start, doc.family)
    rule = finish_rule(draft)
    if tname == "nat" and draft.target == "DROP":
        raise Bad(draft.where.get("target", start), "the nat table is not for filtering: "
                  "iptables refuses DROP in it", "drop in the filter table; in nat, RETURN "
                  "leaves a connection untranslated")
    if doc.family is None:
        doc.family = draft.family
    roles = draft.where if line_index is None else {
        role: line_index[k] for role, k in draft.where.items()}
    chain.rules.insert(position, rule)
    chain.places.insert(position, Place(lineno, raw, roles, offset, counters or draft.counters))


def parse_rule_spec(text: str) -> tuple[str | None, str | None, Rule]:
    """``[-t TABLE] [-A CHAIN] OPTIONS`` -> (table or None, chain or None, rule)."""
    if not isinstance(text, str):
        raise MeshlabError("a rule must be text (str)")
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
