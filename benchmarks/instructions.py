"""Instructions and cache misses per parse of a 20,000-rule dump, counted by valgrind.

On a shared machine a wall-clock time moves by 10-25% from one minute to the next, which
hides any change smaller than that. valgrind's cachegrind instead counts the instructions the
CPU runs and simulates its caches: the same program gives the same counts on every run (to
0.05%), so a 1% change shows. This runs the dump's parse ``REPEAT`` times and not at all in
two processes under cachegrind (each does the same set-up, warm-up parse and collections),
and prints the difference per parse::

    python -m benchmarks.instructions kube           # the kube-proxy-like dump, a parse again
    python -m benchmarks.instructions flat --first   # the flat dump, the first parse of a process

``--first`` counts the first parse in a new process instead (no warm-up parse, one parse):
what ``meshlab trace --rules`` pays, with every code path and value met for the first time.

Instructions are not time: a miss in the last-level cache costs ~100 instructions' worth.
Compare two versions by running this in each checkout. Needs ``valgrind`` (apt-get install
valgrind); it takes about a minute.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys

REPEAT = 2  # parses counted, after a warm-up parse (one parse and no warm-up with --first)
CACHES = ["--I1=32768,8,64", "--D1=32768,8,64", "--LL=4194304,16,64"]  # a typical core's

CHILD = """
import gc, sys
from benchmarks.bench_netfilter import flat_dump, kube_dump
from meshlab.netfilter import parse_ruleset
dump, mode, parses, repeat = sys.argv[1:5]
text = (kube_dump() if dump == "kube" else flat_dump())[0]
if mode != "first":
    parse_ruleset(text)
for _ in range(int(repeat)):
    gc.collect()
    if parses == "1":
        parse_ruleset(text)
"""

_COUNTS = {"instructions": r"I\s+refs:\s+([\d,]+)", "L1 data misses": r"D1\s+misses:\s+([\d,]+)",
           "last-level data misses": r"LLd misses:\s+([\d,]+)"}


def _repeat(first: bool) -> int:
    return 1 if first else REPEAT


def _counts(dump: str, first: bool, parses: int) -> subprocess.Popen:
    argv = ["valgrind", "--tool=cachegrind", "--cache-sim=yes", *CACHES,
            "--cachegrind-out-file=/dev/null", sys.executable, "-c", CHILD, dump,
            "first" if first else "again", str(parses), str(_repeat(first))]
    env = {**os.environ, "PYTHONHASHSEED": "0"}  # the same dict layouts in both processes
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dump", choices=["kube", "flat"])
    parser.add_argument("--first", action="store_true",
                        help="count the first parse of a new process")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    runs = [_counts(args.dump, args.first, parses) for parses in (0, 1)]  # side by side
    totals = []
    for run in runs:
        _, report = run.communicate(timeout=900)
        if run.returncode:
            sys.exit(f"valgrind failed:\n{report[-2000:]}")
        totals.append({name: int(re.search(pattern, report).group(1).replace(",", ""))
                       for name, pattern in _COUNTS.items()})
    label = f"{args.dump} dump, {'first parse of a process' if args.first else 'parsed again'}"
    repeat = _repeat(args.first)
    print(f"per parse of the {label} (cachegrind, {repeat} parses):")
    for name in _COUNTS:
        print(f"  {name:<24} {(totals[1][name] - totals[0][name]) / repeat / 1e6:10.2f} M")


if __name__ == "__main__":
    main()
