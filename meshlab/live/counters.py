"""Reading the kernel's rule counters from ``iptables-save -c``.

``iptables-save -c`` prints every table the namespace has, each rule prefixed by its
counters, ``[packets:bytes]``, and each built-in chain's policy counters on its header line::

    *nat
    :OUTPUT ACCEPT [3:180]          <- the policy counted 3 packets (chain ended, ACCEPT)
    [1:60] -A OUTPUT -j ISTIO_OUTPUT

A rule's *index* is its 1-based position in its chain, as ``iptables -L --line-numbers``
numbers it - the same numbering the model's traces use. Index 0 stands for the chain's
policy. In the nat table a rule sees only the first packet of each connection (conntrack
translates the rest), so its packet counter counts *connections*; in the other tables it
counts every packet. The nat table only counts at all once conntrack is active in the
namespace, which loading any nat rule (REDIRECT) does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

Key = tuple[str, str, int]
"""(table, chain, index): index is 1-based, 0 = the chain's policy."""

_COUNTED_RULE = re.compile(r"^\[(\d+):(\d+)\] -A (\S+)(?: (.*))?$")
_CHAIN = re.compile(r"^:(\S+) (\S+) \[(\d+):(\d+)\]$")


@dataclass(frozen=True)
class Snapshot:
    """One reading of every counter in a namespace, with each rule's text."""

    packets: Mapping[Key, int]
    texts: Mapping[Key, str]   # rule text as the kernel prints it, without "-A CHAIN "

    def minus(self, before: Snapshot) -> dict[Key, int]:
        """Counters that grew since ``before``: {key: packets added} (zero growth omitted)."""
        return {k: v - before.packets.get(k, 0) for k, v in self.packets.items()
                if v - before.packets.get(k, 0) > 0}


def parse_counters(save_text: str) -> Snapshot:
    """Parse ``iptables-save -c`` output into a :class:`Snapshot`."""
    packets: dict[Key, int] = {}
    texts: dict[Key, str] = {}
    table = ""
    position: dict[tuple[str, str], int] = {}
    for line in save_text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif (chain := _CHAIN.match(line)) is not None:
            if chain.group(2) != "-":
                packets[(table, chain.group(1), 0)] = int(chain.group(3))
                texts[(table, chain.group(1), 0)] = f"policy {chain.group(2)}"
        elif (rule := _COUNTED_RULE.match(line)) is not None:
            name = rule.group(3)
            index = position.get((table, name), 0) + 1
            position[(table, name)] = index
            packets[(table, name, index)] = int(rule.group(1))
            texts[(table, name, index)] = rule.group(4) or ""
    return Snapshot(packets, texts)


def only_table(counts: Mapping[Key, int], table: str, *, policies: bool = False) -> dict[Key, int]:
    """Restrict ``counts`` to one table (and, unless ``policies``, to rules proper)."""
    return {k: v for k, v in counts.items() if k[0] == table and (policies or k[2] > 0)}
