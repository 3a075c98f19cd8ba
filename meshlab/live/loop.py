"""The loop experiment, for real: take away the proxy's exemption and watch it chase itself.

``ISTIO_OUTPUT`` lets the proxy's own connections out with two rules::

    -m owner --uid-owner 1337 -j RETURN
    -m owner --gid-owner 1337 -j RETURN

Remove both and the proxy's upstream connection (UID/GID 1337, to the peer's 10.244.0.9:9080)
falls through to ``-j ISTIO_REDIRECT`` like any app connection: nat OUTPUT redirects it to
127.0.0.1:15001, the proxy accepts it, reads the *same* original destination, connects again,
and so on. Each turn is a new connection, so nat counts every one of them.

The real proxy carries a hop counter in each request's header and refuses at its
``hop_limit``; :func:`loop_experiment` runs the outbound request with several limits so you
see the kernel's counters climb one per turn, next to the model's
:class:`~meshlab.walk.LoopReport` (which recognises the repeated state after one turn and
says what an unbounded loop would cost).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

EXEMPTIONS = ("-m owner --uid-owner 1337 -j RETURN", "-m owner --gid-owner 1337 -j RETURN")


@dataclass(frozen=True)
class LoopRun:
    hop_limit: int
    hops: int                       # how many times the proxy accepted the request
    outcome: str                    # the client's view ("answered" with a hop-limit error)
    redirects: int                  # how many times nat ISTIO_REDIRECT's REDIRECT counted
    nat: dict[str, int]
    hop_log: list[dict[str, Any]]   # the proxy's accepts: hop, original dst, client address


def loop_experiment(limits: tuple[int, ...] = (1, 2, 4, 8), scenario: str = "outbound",
                    deadline: float = 60.0) -> dict[str, Any]:
    """Run ``scenario`` without the 1337 exemptions at each hop limit; model beside kernel."""
    from meshlab.live.comparison import key_name, model_facts
    from meshlab.live.verify import kernel_facts, scenario_rules
    from meshlab.live.worldlab import live_request, proxy_spec, world_lab
    from meshlab.scenarios import get_scenario, run_scenario

    chosen = get_scenario(scenario)
    walk = run_scenario(scenario, without_rules=EXEMPTIONS)
    text, post, mode = scenario_rules(chosen, EXEMPTIONS)
    runs: list[LoopRun] = []
    facts: dict[str, Any] = {}
    with world_lab(deadline=deadline) as lab:
        lab.load(text, post)
        request = live_request(chosen.request)
        for limit in limits:
            lab.restart_proxy(proxy_spec(mode, hop_limit=limit))
            seen = lab.connect(request.dst, request.dport, timeout=3.0, **request.kwargs())
            facts = kernel_facts(seen)
            redirects = sum(n for k, n in seen.nat.items() if k[1] == "ISTIO_REDIRECT")
            hop_log = [{"hop": e["hops"], "listener": e["listener_port"],
                        "original_dst": e["original_dst"], "from": e["peer"]}
                       for e in seen.accepts]
            runs.append(LoopRun(limit, seen.hops, seen.outcome, redirects,
                                {key_name(k): n for k, n in sorted(seen.nat.items())},
                                hop_log))
    loop = walk.loop
    return {
        "scenario": scenario,
        "removed": list(EXEMPTIONS),
        "model": {**model_facts(walk),
                  "loop": loop.to_json() if loop is not None and hasattr(loop, "to_json")
                  else None},
        "kernel": {"outcome": facts.get("outcome"), "runs": [r.__dict__ for r in runs]},
        "agree": walk.outcome == "loop" and all(r.hops == r.hop_limit + 1 for r in runs),
    }


def describe(result: dict[str, Any]) -> str:
    """The experiment as text: the model's loop report, then the kernel's climbing counters."""
    lines = [f"removed: {', '.join(result['removed'])}",
             f"model: outcome {result['model']['outcome']}"]
    loop = result["model"].get("loop") or {}
    if loop:
        lines.append(f"  cycle: {' -> '.join(loop.get('cycle', []))}")
        if loop.get("gives_out"):
            lines.append(f"  gives out: {loop['gives_out']}")
    lines.append("kernel (real proxy, hop limit -> accepts, REDIRECTs counted):")
    for run in result["kernel"]["runs"]:
        lines.append(f"  limit {run['hop_limit']:>2}: proxy accepted {run['hops']:>2} times, "
                     f"ISTIO_REDIRECT counted {run['redirects']:>2}")
    last = result["kernel"]["runs"][-1] if result["kernel"]["runs"] else None
    if last:
        lines.append("hop log of the last run:")
        lines += [f"  hop {h['hop']}: accepted on {h['listener']} from {h['from']}, "
                  f"original destination {h['original_dst']}" for h in last["hop_log"]]
    return "\n".join(lines)
