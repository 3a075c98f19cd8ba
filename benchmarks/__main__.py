"""Run every benchmark module (`bench_*.py`) and print one table; exit 1 if a target is missed."""

from __future__ import annotations

import importlib
import os
import pkgutil
import platform
import sys
from pathlib import Path

from benchmarks.harness import Result


def main() -> int:
    here = Path(__file__).parent
    results: list[Result] = []
    # times depend on how the interpreter was built (README, "Speed"): say which one ran
    print(f"# Python {platform.python_version()}, {os.path.realpath(sys.executable)}")
    for info in sorted(pkgutil.iter_modules([str(here)]), key=lambda m: m.name):
        if info.name.startswith("bench_"):
            module = importlib.import_module(f"benchmarks.{info.name}")
            print(f"# {info.name}", flush=True)
            for result in module.run():
                print(result.row(), flush=True)
                results.append(result)
    slow = [r for r in results if not r.meets_target]
    print(f"\n{len(results)} measured, {len(slow)} over target")
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
