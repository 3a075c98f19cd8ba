"""How long `istio-iptables` flags -> rules takes (target: under 5 ms for any flags).

Measured: parsing + generating for the default istio-init arguments and for a large flag set
(TPROXY, IPv6, DNS per nameserver, many ports/CIDRs/UIDs/GIDs/interfaces). Baselines, in the
same run: ``str.join`` of the very same restore lines pre-built in a list (the floor for
producing that text at all in Python) and parsing the flags alone. Also, without a target,
the cost of turning the text into a :class:`meshlab.netfilter.ruleset.Ruleset`.
"""

from __future__ import annotations

from benchmarks.harness import Result, median_time
from meshlab.istio.capture import generate
from meshlab.istio.flags import DEFAULT_ISTIO_INIT_ARGS, CaptureConfig

TARGET_S = 5e-3

# fmt: off
LARGE_ARGS: tuple[str, ...] = (
    "istio-iptables", "-p", "15001", "-z", "15006", "-m", "TPROXY",
    "-u", ",".join(str(1000 + i) for i in range(8)),
    "-g", ",".join(str(2000 + i) for i in range(8)),
    "-b", ",".join(str(8000 + i) for i in range(40)),
    "-i", ",".join([f"10.{i}.0.0/16" for i in range(30)] + [f"fd00:{i:x}::/32" for i in range(30)]),
    "-x", ",".join([f"10.{i}.1.0/24" for i in range(20)] + [f"fd00:{i:x}::/48" for i in range(20)]),
    "-q", ",".join(str(3000 + i) for i in range(20)),
    "-o", ",".join(str(4000 + i) for i in range(20)),
    "-k", "eth1,eth2,eth3", "-c", "eth8,eth9",
    "--redirect-dns", "--drop-invalid", "--log_output_level=default:info",
)
LARGE_ENV = {"ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE": ",".join(str(5000 + i) for i in range(10))}
LARGE_FACTS = {"enable_ipv6": True, "dns_servers_v4": ("10.96.0.10", "10.96.0.11"),
               "dns_servers_v6": ("fd00::a",)}
# fmt: on


def _default() -> CaptureConfig:
    return CaptureConfig.from_args(DEFAULT_ISTIO_INIT_ARGS)


def _large() -> CaptureConfig:
    return CaptureConfig.from_args(LARGE_ARGS, LARGE_ENV, **LARGE_FACTS)  # type: ignore[arg-type]


def run() -> list[Result]:
    results: list[Result] = []
    for label, make in (("default istio-init flags", _default), ("large flag set", _large)):
        rules = generate(make())
        text = "".join(rules.documents())
        lines = text.splitlines()
        joined = median_time(lambda lines=lines: "\n".join(lines), repeat=50, number=200)
        parse_only = median_time(make, repeat=30, number=20)
        end_to_end = median_time(lambda make=make: generate(make()), repeat=30, number=20)
        config = make()
        gen_only = median_time(lambda config=config: generate(config), repeat=30, number=20)
        results.append(Result(f"capture: flags -> rules, {label} ({len(lines)} lines)",
                              end_to_end, TARGET_S, "parse flags only", parse_only))  # fmt: skip
        results.append(Result(f"capture: generate only, {label}", gen_only, TARGET_S,
                              "str.join of the same lines", joined))  # fmt: skip
        try:
            parse_cost = median_time(
                lambda config=config: generate(config).ruleset_v4, repeat=10, number=5
            )
        except Exception:  # netfilter not ready: report the text numbers only
            continue
        results.append(Result(f"capture: generate + parse to Ruleset (v4), {label}", parse_cost,
                              None, "generate only", gen_only))  # fmt: skip
    return results


if __name__ == "__main__":
    for result in run():
        print(result.row())
