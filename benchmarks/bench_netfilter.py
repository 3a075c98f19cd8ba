"""How fast the netfilter model parses and traces, against naive baselines run alongside.

* trace one connection through Istio's default sidecar rules (target 50 us);
* a flat 20,000-rule dump with the matching rule near the end: parse (< 100 ms) and trace
  (< 2 ms), also the very first trace after a fresh parse (rules are compiled once, when the
  ``Netns`` is made, so the first trace must be as fast as the rest);
* a kube-proxy-like 20,000-rule dump (KUBE-SERVICES -> KUBE-SVC-* -> KUBE-SEP-* DNAT): the same.

The baselines are what a first attempt looks like: ``shlex.split`` every line, and a matcher
that re-reads each rule's text (``ipaddress`` objects, string compares) for every packet.
"""

from __future__ import annotations

import ipaddress
import shlex
import statistics
import time

from benchmarks.harness import Result, median_time
from meshlab.netfilter import Netns, parse_ruleset, pod_interfaces

ISTIO_SAVE = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:ISTIO_INBOUND - [0:0]
:ISTIO_IN_REDIRECT - [0:0]
:ISTIO_OUTPUT - [0:0]
:ISTIO_REDIRECT - [0:0]
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_INBOUND -p tcp -m tcp --dport 15008 -j RETURN
-A ISTIO_INBOUND -p tcp -m tcp --dport 15090 -j RETURN
-A ISTIO_INBOUND -p tcp -m tcp --dport 15021 -j RETURN
-A ISTIO_INBOUND -p tcp -m tcp --dport 15020 -j RETURN
-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A ISTIO_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN
-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m tcp ! --dport 15008 \
-m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m tcp ! --dport 15008 \
-m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
-A ISTIO_OUTPUT -j ISTIO_REDIRECT
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
COMMIT
"""

N = 20_000


def flat_dump(n: int = N) -> tuple[str, str, int]:
    """``n`` rules in filter OUTPUT, each for one /32 and port; returns (text, dst, port) of
    the rule 10 from the end."""
    lines = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]"]
    for i in range(n):
        lines.append(f"-A OUTPUT -d 10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}/32 -p tcp "
                     f"-m tcp --dport {1000 + i % 50000} -j ACCEPT")
    lines.append("COMMIT")
    i = n - 10
    return "\n".join(lines) + "\n", f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}", 1000 + i


def kube_dump(services: int = N // 4) -> tuple[str, str, int]:
    """kube-proxy's shape: per service a KUBE-SERVICES rule, a KUBE-SVC chain, a KUBE-SEP
    chain with the masquerade mark and the DNAT (4 rules per service)."""
    heads = [":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
             ":POSTROUTING ACCEPT [0:0]", ":KUBE-MARK-MASQ - [0:0]", ":KUBE-SERVICES - [0:0]"]
    rules = ["-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
             "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
             "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000"]
    for s in range(services):
        vip = f"10.96.{s >> 8}.{s & 255}"
        ep = f"10.244.{s >> 8}.{s & 255}"
        svc, sep = f"KUBE-SVC-{s:012X}", f"KUBE-SEP-{s:012X}"
        heads += [f":{svc} - [0:0]", f":{sep} - [0:0]"]
        rules += [
            f"-A KUBE-SERVICES -d {vip}/32 -p tcp -m comment --comment \"ns/svc-{s}:http "
            f"cluster IP\" -m tcp --dport 80 -j {svc}",
            f"-A {svc} -m comment --comment \"ns/svc-{s}:http -> {ep}:8080\" -j {sep}",
            f"-A {sep} -s {ep}/32 -m comment --comment \"ns/svc-{s}:http\" -j KUBE-MARK-MASQ",
            f"-A {sep} -p tcp -m comment --comment \"ns/svc-{s}:http\" -m tcp -j DNAT "
            f"--to-destination {ep}:8080",
        ]
    s = services - 3
    return ("*nat\n" + "\n".join(heads + rules) + "\nCOMMIT\n", f"10.96.{s >> 8}.{s & 255}", 80)


# --------------------------------------------------------------------------- naive baselines


def naive_parse(text: str) -> dict[str, list[list[str]]]:
    """shlex every rule line, keep the tokens per chain."""
    chains: dict[str, list[list[str]]] = {}
    for line in text.splitlines():
        if line.startswith("-A "):
            toks = shlex.split(line)
            chains.setdefault(toks[1], []).append(toks[2:])
    return chains


def naive_trace(chains: dict[str, list[list[str]]], chain: str, dst: str, dport: int) -> str:
    """Re-read each rule for the packet: ipaddress objects and string compares per rule."""
    addr = ipaddress.ip_address(dst)
    for toks in chains[chain]:
        ok, i = True, 0
        while i < len(toks) and ok:
            if toks[i] == "-d":
                ok = addr in ipaddress.ip_network(toks[i + 1])
            elif toks[i] == "--dport":
                ok = int(toks[i + 1]) == dport
            elif toks[i] == "-j":
                target = toks[i + 1]
            i += 1
        if ok:
            if target.startswith("KUBE-"):
                return naive_trace(chains, target, dst, dport)
            return target
    return "policy"


def first_trace(text: str, dst: str, dport: int) -> float:
    """Seconds taken by the first trace through a freshly parsed and loaded ruleset."""
    ns = Netns(parse_ruleset(text), pod_interfaces("10.0.0.2", 8))
    start = time.perf_counter()
    ns.connect(proto="tcp", dst=dst, dport=dport, uid=1000, gid=1000)
    return time.perf_counter() - start


def run() -> list[Result]:
    results = []
    istio = parse_ruleset(ISTIO_SAVE)
    ns = Netns(istio, pod_interfaces("10.244.0.5"))
    naive_istio = naive_parse(ISTIO_SAVE)
    results.append(Result(
        "trace 1 connection, Istio default rules",
        median_time(lambda: ns.connect(proto="tcp", dst="10.244.0.9", dport=8080, uid=1000,
                                       gid=1000), repeat=15, number=400),
        50e-6, "naive matcher, ISTIO_OUTPUT only (no hooks/owner/conntrack)",
        median_time(lambda: naive_trace(naive_istio, "ISTIO_OUTPUT", "10.244.0.9", 8080),
                    repeat=15, number=400)))

    for label, (text, dst, dport), chain in (
            ("flat", flat_dump(), "OUTPUT"), ("kube-proxy-like", kube_dump(), "KUBE-SERVICES")):
        results.append(Result(
            f"parse 20,000-rule {label} dump", median_time(lambda t=text: parse_ruleset(t),
                                                           repeat=5),
            0.100, "naive shlex parse", median_time(lambda t=text: naive_parse(t), repeat=3)))
        big = Netns(parse_ruleset(text), pod_interfaces("10.0.0.2", 8))
        naive = naive_parse(text)
        results.append(Result(
            f"trace near-end match, 20,000-rule {label} dump",
            median_time(lambda b=big, d=dst, p=dport: b.connect(
                proto="tcp", dst=d, dport=p, uid=1000, gid=1000), repeat=15, number=20),
            0.002, "naive re-reading matcher (one chain walk)",
            median_time(lambda n=naive, c=chain, d=dst, p=dport: naive_trace(n, c, d, p),
                        repeat=3)))
        results.append(Result(
            f"trace near-end match, first trace after a fresh parse ({label})",
            statistics.median(first_trace(text, dst, dport) for _ in range(3)),
            0.002, "naive re-reading matcher (one chain walk)",
            median_time(lambda n=naive, c=chain, d=dst, p=dport: naive_trace(n, c, d, p),
                        repeat=3)))
    return results


if __name__ == "__main__":
    for result in run():
        print(result.row())
