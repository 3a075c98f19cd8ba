"""Fast constructors for the frozen values that a big dump makes by the thousand.

A 20,000-rule kube-proxy dump makes thousands of address matches, comments, jumps and DNAT
targets, each new to a process that reads it for the first time (its rules and chains are
named tuples, each made by one C call: see :class:`~meshlab.netfilter.rules.Rule`). The
matches and targets are frozen dataclasses, whose generated ``__init__`` has to get past their
own "frozen" ``__setattr__``, so it sets each field with ``object.__setattr__(self, "name",
value)`` -- a look-up by name for every field. With ``slots=True`` each field is a slot, and
storing straight into the slot (through its descriptor, found once here) makes the same object
in about half the time. :func:`slot_setters` refuses, at import, a class whose fields changed
or that gained a ``__post_init__`` (which this would skip). The objects made are exactly
those ``AddrMatch(...)`` etc. would make.
"""

from __future__ import annotations

from dataclasses import fields

from meshlab.netfilter.packet import IPAddress
from meshlab.netfilter.rules import AddrMatch, CommentMatch, Dnat, Jump, PortMatch, PortRange


def slot_setters(cls: type, names: tuple[str, ...]) -> tuple:
    """The slot setters of ``cls``'s fields ``names``; refuses a class whose fields changed
    or that gained a ``__post_init__`` (which these constructors would skip)."""
    if tuple(f.name for f in fields(cls)) != names or hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} changed: update its fast constructor in fastnew.py")
    return tuple(cls.__dict__[name].__set__ for name in names)


_new = object.__new__
_ADDR_SET = slot_setters(AddrMatch, ("negated", "version", "net", "plen"))
_RANGE_SET = slot_setters(PortRange, ("negated", "lo", "hi"))
_PORTS_SET = slot_setters(PortMatch, ("module", "sport", "dport"))
_COMMENT_SET, = slot_setters(CommentMatch, ("text",))
_JUMP_SET, = slot_setters(Jump, ("chain",))
_DNAT_SET = slot_setters(Dnat, ("ip", "ports"))


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


def new_comment(text: str) -> CommentMatch:
    """``CommentMatch(text)``, made faster."""
    match = _new(CommentMatch)
    _COMMENT_SET(match, text)
    return match


def new_jump(chain: str) -> Jump:
    """``Jump(chain)``, made faster."""
    target = _new(Jump)
    _JUMP_SET(target, chain)
    return target


def new_dnat(ip: IPAddress, ports: tuple[int, int] | None) -> Dnat:
    """``Dnat(ip, ports)``, made faster."""
    target = _new(Dnat)
    s_ip, s_ports = _DNAT_SET
    s_ip(target, ip)
    s_ports(target, ports)
    return target
