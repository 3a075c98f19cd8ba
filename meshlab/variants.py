"""A bounded store of the variants derived from one object, kept on that object.

:meth:`meshlab.pod.Pod.with_rules` and :meth:`meshlab.world.World.with_subject_rules` build
the same few variants again and again (a widget re-runs a walk on every click), so each pod
and world remembers its own. The store lives and dies with its owner: no cache is keyed by
an object's identity, so a dead object's entry can never be handed to a new one that got
its id. Keys are values (flag tuples, rule texts); the least recently used entry goes first
once ``limit`` are held.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class Variants(Generic[V]):
    """At most ``limit`` variants by key; the least recently used is forgotten first."""

    __slots__ = ("_held", "limit")

    def __init__(self, limit: int = 32) -> None:
        if limit < 1:
            raise ValueError(f"a store of variants holds at least one, not {limit}")
        self.limit = limit
        self._held: OrderedDict[Hashable, V] = OrderedDict()

    def get(self, key: Hashable) -> V | None:
        """The variant kept under ``key``, or ``None``."""
        found = self._held.get(key)
        if found is not None:
            self._held.move_to_end(key)
        return found

    def keep(self, key: Hashable, variant: V) -> V:
        """Remember ``variant`` under ``key`` (forgetting the oldest when full); return it."""
        self._held[key] = variant
        self._held.move_to_end(key)
        while len(self._held) > self.limit:
            self._held.popitem(last=False)
        return variant

    def __len__(self) -> int:
        return len(self._held)

    def __repr__(self) -> str:
        return f"Variants({len(self._held)} of at most {self.limit})"
