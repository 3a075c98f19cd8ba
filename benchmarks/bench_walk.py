"""Walks and the rule ablation: a widget re-runs a walk on every click, and the rule lab runs
every rule x every scenario.

Targets: one walk under 1 ms median; the whole ablation matrix under 0.5 s. The
baselines, measured in the same run, are the kernel model alone: one ``Netns.connect`` trace of
the app's outbound connection (a fresh namespace over the already compiled default rules), and
building a ``Netns`` from scratch (compiling the rules).
"""

from __future__ import annotations

import time

from benchmarks.harness import Result, median_time


def run() -> list[Result]:
    from meshlab.ablation import ablation
    from meshlab.istio.capture import generate
    from meshlab.istio.flags import DEFAULT_ISTIO_INIT_ARGS, CaptureConfig
    from meshlab.netfilter.kernel import Netns
    from meshlab.pod import Pod
    from meshlab.scenarios import run_scenario
    from meshlab.world import clear_caches

    pod = Pod.default()
    ruleset = pod.ruleset
    interfaces = pod.interfaces

    def one_trace() -> None:
        Netns(ruleset, interfaces).connect(proto="tcp", dst="10.244.0.9", dport=9080,
                                           uid=1000, gid=1000)

    def build_netns() -> None:
        # from the flags: generate the restore text, parse it, compile it (nothing cached)
        fresh = generate(CaptureConfig.from_args(list(DEFAULT_ISTIO_INIT_ARGS))).ruleset_v4
        Netns(fresh, interfaces)

    trace_s = median_time(one_trace, repeat=50, number=20)
    build_s = median_time(build_netns, repeat=10, number=1)

    results = []
    for name in ("inbound", "outbound", "own-service"):
        run_scenario(name)  # warm the caches once, as a widget's first click does
        results.append(Result(f"walk {name} (cached pod)",
                              median_time(lambda n=name: run_scenario(n), repeat=50, number=10),
                              1e-3, "one Netns.connect trace", trace_s))
    loop_rules = ["-m owner --uid-owner 1337 -j RETURN", "-m owner --gid-owner 1337 -j RETURN"]
    run_scenario("outbound", without_rules=loop_rules)
    results.append(Result(
        "walk outbound, uid+gid exemptions removed (loop)",
        median_time(lambda: run_scenario("outbound", without_rules=loop_rules), repeat=50,
                    number=10),
        1e-3, "one Netns.connect trace", trace_s))

    clear_caches()
    start = time.perf_counter()
    ablation()
    cold = time.perf_counter() - start
    results.append(Result("ablation matrix, cold caches (every rule x every scenario)", cold,
                          None, "building one Netns (generate+parse+compile)", build_s))
    results.append(Result("ablation matrix, warm (every rule x every scenario)",
                          median_time(ablation, repeat=5, number=1), 0.5,
                          "building one Netns (generate+parse+compile)", build_s))
    return results


if __name__ == "__main__":
    for result in run():
        print(result.row())
