"""Timing helpers shared by the benchmarks: medians of repeated runs, and one table of results.

Every benchmark reports a *baseline measured in the same run* beside the number under test, so
that a slow machine shows up as a slow baseline rather than as a regression.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Result:
    """One measured operation: its median time, the target it must meet, and a baseline."""

    name: str
    median_s: float
    target_s: float | None = None
    baseline_name: str | None = None
    baseline_s: float | None = None

    @property
    def meets_target(self) -> bool:
        return self.target_s is None or self.median_s <= self.target_s

    def row(self) -> str:
        target = "" if self.target_s is None else f"target {_fmt(self.target_s)}"
        verdict = "" if self.target_s is None else ("ok" if self.meets_target else "SLOW")
        base = ""
        if self.baseline_s is not None:
            base = f"baseline {self.baseline_name}: {_fmt(self.baseline_s)}"
        return f"{self.name:<58} {_fmt(self.median_s):>10}  {target:<18} {verdict:<5} {base}"


def median_time(fn: Callable[[], object], *, repeat: int = 20, number: int = 1,
                settled: bool = False, setup: Callable[[], object] | None = None) -> float:
    """Median wall time of one call of ``fn`` over ``repeat`` samples of ``number`` calls each.

    ``settled`` is for big, allocating work such as parsing 20,000 rules: ``fn`` runs once
    first, untimed (its caches warm), and the cycle collector runs before each sample, so
    every sample starts from the same heap. A sample then includes the collections ``fn``
    itself sets off, but not a full collection of whatever earlier benchmarks left behind,
    which would otherwise land in one sample or another by chance. ``setup`` runs before
    each sample, untimed (e.g. emptying caches, to time a first reading).
    """
    if settled:
        fn()
    samples = []
    for _ in range(repeat):
        if setup is not None:
            setup()
        if settled:
            gc.collect()
        start = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - start) / number)
    return statistics.median(samples)


def _fmt(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"
