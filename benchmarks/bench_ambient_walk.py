"""Ambient walks: a widget re-runs one on every click, and the ambient ablation runs every
in-pod rule x every ambient scenario.

Target: one ambient walk under 1 ms median. The baseline, measured in the same run, is the
sidecar's walk of the same kind (``inbound`` / ``outbound``, cached pod): an ambient walk
crosses two pods' rules and traces its replies, so it does more than the sidecar's.

On a shared machine wall-clock times move with the load; ``python -m
benchmarks.bench_ambient_walk --instructions`` counts the instructions of one walk instead
(valgrind's cachegrind: the same count on every run), sidecar and ambient side by side.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from benchmarks.harness import Result, median_time

_CHILD = """
import sys
from meshlab.scenarios import run_scenario
name, n = sys.argv[1], int(sys.argv[2])
for _ in range(3):
    run_scenario(name)
for _ in range(n):
    run_scenario(name)
"""


def run() -> list[Result]:
    from meshlab.ablation import ablation
    from meshlab.scenarios import run_scenario

    results = []
    for name, baseline in (("ambient-inbound", "inbound"), ("ambient-outbound", "outbound"),
                           ("ambient-dns-captured", "dns-captured")):
        run_scenario(name)  # warm the caches once, as a widget's first click does
        run_scenario(baseline)
        base_s = median_time(lambda n=baseline: run_scenario(n), repeat=50, number=10)
        results.append(Result(f"walk {name} (cached pod)",
                              median_time(lambda n=name: run_scenario(n), repeat=50, number=10),
                              1e-3, f"sidecar walk {baseline}", base_s))
    exemption = ["-m mark ! --mark 0x539/0xfff"]
    run_scenario("ambient-outbound", without_matches=exemption)
    loop_rules = ["-m owner --uid-owner 1337 -j RETURN", "-m owner --gid-owner 1337 -j RETURN"]
    run_scenario("outbound", without_rules=loop_rules)
    results.append(Result(
        "walk ambient-outbound, ztunnel's mark exemption removed (loop)",
        median_time(lambda: run_scenario("ambient-outbound", without_matches=exemption),
                    repeat=50, number=10),
        1e-3, "sidecar outbound loop",
        median_time(lambda: run_scenario("outbound", without_rules=loop_rules), repeat=50,
                    number=10)))
    ablation(mode="ambient")
    results.append(Result("ambient ablation matrix, warm (every rule x every scenario)",
                          median_time(lambda: ablation(mode="ambient"), repeat=5, number=1),
                          0.5, "sidecar ablation matrix, warm",
                          median_time(ablation, repeat=5, number=1)))
    return results


def instructions(name: str, walks: int = 20) -> float:
    """Instructions of one walk of scenario ``name`` (warm caches), counted by cachegrind as
    the difference between ``walks`` walks and none, per walk. Needs ``valgrind``."""

    def count(n: int) -> int:
        done = subprocess.run(
            ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
             sys.executable, "-c", _CHILD, name, str(n)],
            capture_output=True, text=True, check=True, env=dict(os.environ))
        found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
        if found is None:
            raise RuntimeError(f"cachegrind printed no instruction count:\n{done.stderr}")
        return int(found.group(1).replace(",", ""))

    return (count(walks) - count(0)) / walks


if __name__ == "__main__":
    if sys.argv[1:] == ["--instructions"]:
        for name in ("inbound", "ambient-inbound", "outbound", "ambient-outbound"):
            print(f"walk {name:<20} {instructions(name) / 1e6:6.2f}M instructions")
    else:
        for result in run():
            print(result.row())
