"""Shared values: one object for every equal match, target or address met while parsing.

Matches and targets are immutable, so one object can stand for every equal one: a dump
names the same port, comment, DNAT destination or chain again and again, and a program
that parses the same rules again (a notebook re-run, a widget) names every one of them
again. So the parts of a rule are made through *memos*: tables from the words that give a
part to the object already made from them. A memo lives as long as this module; a memo that
has grown past its limit (:data:`MEMO_LIMIT` entries unless it has its own) is emptied before
the next document is read (the document reader, :mod:`meshlab.netfilter.parse`, calls
:func:`trim_memos`), so memory stays bounded (by the limits plus one document's values). Only
values are kept, never errors: a word that does not read is read again, and refused again,
each time.

Here live the memo tables themselves (:func:`memo_for`, one per kind of part) and the three
parts every reader makes through them: addresses (``-s``/``-d``), interfaces (``-i``/``-o``)
and jumps to user chains (``-j CHAIN``). The shape plans (:mod:`meshlab.netfilter.shapes`)
keep further memos of their own, for whole ``-m`` modules and targets, and one for the
compiled code of each shape's reader.
"""

from __future__ import annotations

from meshlab.netfilter.fastnew import new_addr, new_jump
from meshlab.netfilter.rules import AddrMatch, IfaceMatch, Jump
from meshlab.netfilter.source import Bad
from meshlab.netfilter.values import read_address

MEMO_LIMIT = 100_000
_MEMOS: dict[tuple, tuple[dict, int]] = {}  # kind -> (memo, its limit)


def memo_for(kind: tuple, limit: int = MEMO_LIMIT) -> dict:
    """The memo for one kind of part (e.g. ``("module", "tcp", (("--dport", False),))``:
    a ``-m tcp`` with one plain ``--dport``), from its words to the part made from them;
    emptied once it holds more than ``limit`` entries."""
    found = _MEMOS.get(kind)
    if found is None:
        found = _MEMOS[kind] = ({}, limit)
    return found[0]


def trim_memos() -> None:
    """Empty the memos that have grown too big (before a document is read)."""
    for memo, limit in _MEMOS.values():
        if len(memo) > limit:
            memo.clear()


def forget() -> None:
    """Empty every memo, as in a new process: the next document reads each value the first
    time it meets it (the benchmarks use this to time a first reading)."""
    for memo, _ in _MEMOS.values():
        memo.clear()


ADDR_MEMOS = (memo_for(("address", False)), memo_for(("address", True)))  # by negation


def addr_match(negated: bool, tok: str, i: int) -> AddrMatch:
    """``[!] -s|-d tok`` (``i``: the token's index, for errors), shared through a memo."""
    match = ADDR_MEMOS[negated].get(tok)
    if match is None:
        match = new_addr(negated, *read_address(tok, i))
        if match.plen:
            ADDR_MEMOS[negated][tok] = match
    return match


def new_addr_match(negated: bool, tok: str, i: int) -> AddrMatch:
    """:func:`addr_match` for a word not in the memo yet: read it, and keep it there. A /0
    address (every address, which the rule reader drops or refuses) is never kept, and a
    shape plan reading one raises ``Bad``: the rule reader then reads the line itself."""
    match = new_addr(negated, *read_address(tok, i))
    if match.plen == 0:
        raise Bad(i, "every address", "")
    ADDR_MEMOS[negated][tok] = match
    return match


JUMPS = memo_for(("jump",))


def jump_to(chain: str) -> Jump:
    """``-j CHAIN``, shared through a memo."""
    target = JUMPS.get(chain)
    if target is None:
        target = new_jump(chain)
        JUMPS[chain] = target
    return target


_IFACE_MEMOS = (memo_for(("interface", False)), memo_for(("interface", True)))  # by negation


def iface_match(name: str, neg: bool, i: int) -> IfaceMatch:
    """``[!] -i|-o name``, shared through a memo. Like iptables, any name of 1 to 15
    characters is taken (iptables only warns about a ``/``, which no interface can have)."""
    match = _IFACE_MEMOS[neg].get(name)
    if match is None:
        if not 0 < len(name) <= 15:
            raise Bad(i, f"bad interface name {name!r}", "interface names have 1 to 15 "
                      "characters, e.g. eth0, lo or eth+")
        match = IfaceMatch(neg, name)
        _IFACE_MEMOS[neg][name] = match
    return match
