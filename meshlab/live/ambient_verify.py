"""The ambient scenarios (``ambient-*``), once in the model and once in the ambient lab.

:func:`meshlab.live.verify.verify_catalog` hands every catalog scenario whose name starts
with ``ambient-`` to :func:`verify_ambient`, which runs it in
:class:`~meshlab.live.ambient_lab.AmbientLab` (the model's ambient world, built for real) with
the rules
:func:`meshlab.istio.ambient.inpod_rules` writes for the scenario's pod annotations, and
compares what :func:`meshlab.live.verify.compare` compares for the sidecar:

``outcome``, ``delivered_to``
    the app reports the source address it sees: the model's ``delivered_to.sees_source``
    must be it (the real client's IP, in ambient mode);
``listeners``
    every proxy's accepting port, in time order, whichever pod it runs in: the ztunnel of
    the client's pod (15001), the server's (15008, or 15006 for plaintext), the sidecar's
    Envoy (15006) when the server has one;
``nat``
    the pod under study's nat rules that counted, and how often, against ``iptables-save
    -c`` in its namespace.

and one more, for the mangle rules that carry the reply path (the connmark set on
ztunnel's connection to the app, restored on the app's answers): every mangle rule of the
pod that the model's walk counted must have counted in the kernel too. Not the other way
round, and not how often: the kernel's mangle rules count every packet of the connection
(the client's ACK, the data, the FINs, both ways), the model's only the packets it traces
(the first one and its answer). So the model may not claim a packet passed a rule that no
packet passed; the counts themselves are shown beside each other (``mangle``).

One mangle rule is compared exactly, though: the one that gives connmark 0x111 (``-m mark
--mark 0x539/0xfff -j CONNMARK --set-xmark 0x111/0xfff``). In the kernel it counts one
packet per connection a ztunnel socket sends into the pod over ``lo`` - that connection's
first packet from ztunnel (its SYN to the app, its SYN-ACK to the app's captured call, its
DNS answer); every later packet of it carries the mark 0x111 that mangle OUTPUT restored
from the connection instead. The model traces exactly those packets, so the counts must be
equal: it is the reply path's own counter. (In a loop the kernel goes round until the hop
limit and the model stops at the repeated state: there, as for nat, only whether it counted.)
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from meshlab.errors import MeshlabError
from meshlab.live.ambient_lab import (
    CLIENT_IP,
    DNS_IP,
    EXTERNAL_IP,
    PEER_IP,
    POD_IP,
    PROBE_IP,
    SERVICES,
    SIDECAR_IP,
    VM_IP,
    AmbientConnection,
    AmbientLab,
)
from meshlab.live.comparison import (
    Comparison,
    compare,
    compared_or_error,
    kernel_outcome,
    key_name,
    model_facts,
)
from meshlab.live.counters import Key
from meshlab.live.lab import APP_UID
from meshlab.live.netns import LabError
from meshlab.live.worldlab import LiveRequest

ADDRESSES = {"pod/details": POD_IP, "pod/reviews-v2": PEER_IP, "pod/reviews": CLIENT_IP,
             "pod/productpage": SIDECAR_IP, "pod/coredns": DNS_IP,
             "host/legacy-db": EXTERNAL_IP, "host/kubelet": PROBE_IP, "host/vm": VM_IP}
"""Where each of the model's ambient-world names lives in the lab."""
SIDES = {"pod/details": "pod", "pod/reviews-v2": "peer", "pod/reviews": "reviews",
         "host/kubelet": "node", "host/vm": "vm"}
"""Which lab agent makes a connection from each source the ambient scenarios use."""
AMBIENT_APPS = ("pod/details", "pod/reviews-v2")
SUBJECT = "pod/details"
"""The pod every ambient scenario studies (its rules change, its counters are compared)."""


def is_ambient(scenario: Any) -> bool:
    """The ambient scenarios are named ``ambient-...``."""
    return str(scenario.name).startswith("ambient-")


def address_of(name: str) -> str:
    """``pod/details`` -> 10.244.0.12, ``svc/kube-dns`` -> its VIP, an IP stays itself."""
    if name in ADDRESSES:
        return ADDRESSES[name]
    kind, _, short = name.partition("/")
    if kind == "svc":
        for svc in SERVICES:
            if svc["name"] == short:
                return str(svc["vip"])
    if not short:
        return name
    raise LabError(f"the ambient lab does not know {name!r}; it knows "
                   f"{', '.join(ADDRESSES)} and the Services "
                   f"{', '.join(str(s['name']) for s in SERVICES)}")


def live_request(request: Any) -> LiveRequest:
    """A catalog request of an ambient scenario -> where the ambient lab connects from."""
    source = request.source
    if source not in SIDES:
        raise LabError(f"the ambient lab cannot make a connection from {source!r}; it can "
                       f"from {', '.join(SIDES)}")
    uid = gid = 0
    if source in AMBIENT_APPS:
        uid = request.uid if request.uid is not None else APP_UID
        gid = request.gid if request.gid is not None else uid
    src = PROBE_IP if source == "host/kubelet" else None
    return LiveRequest(SIDES[source], uid, gid, src, address_of(request.to), request.port,
                       request.proto)


def scenario_rules(scenario: Any) -> Any:
    """istio-cni's rules for the scenario's pod (its annotations; the agent's defaults)."""
    from meshlab.istio.ambient import AgentConfig, PodOverrides, inpod_rules

    annotations = dict(getattr(scenario, "annotations", ()) or ())
    return inpod_rules(AgentConfig(), PodOverrides.from_annotations(annotations))


def ablated(rules: Any, without_rules: Sequence[str] = (),
            without_matches: Sequence[str] = ()) -> tuple[str, tuple[str, ...]]:
    """(restore document, ip commands) with rules, policy routing or conditions taken out,
    as the model's ``--without-rule``/``--without-match`` take them out: a rule text
    (restore form without ``-A CHAIN``) removes every equal rule, ``ip rule ...``/``ip route
    ...`` that command, and a condition (``-m mark ! --mark 0x539/0xfff``) is cut out of
    every rule that has it."""
    commands = tuple(c for c in rules.route_commands if c not in without_rules)
    document = rules.ipv4
    texts = [t for t in without_rules if t.split()[:2] not in (["ip", "rule"], ["ip", "route"])]
    if texts:   # the model's own removal (rules compared as parsed, "/32" or not)
        from meshlab.netfilter.parse import parse_rule_spec

        ruleset = rules.ruleset_v4
        for text in texts:
            table, chain, rule = parse_rule_spec(text)
            ruleset = ruleset.without_rule(rule, table=table, chain=chain)
        document = ruleset.render_restore()
    lines = []
    for line in document.splitlines():
        words = line.split()
        for text in without_matches:
            cut = text.split()
            at = next((i for i in range(len(words) - len(cut) + 1)
                       if words[i:i + len(cut)] == cut), None)
            if words[:1] == ["-A"] and at is not None:
                words = words[:at] + words[at + len(cut):]
        lines.append(" ".join(words) if words[:1] == ["-A"] else line)
    return "\n".join(lines) + "\n", commands


def kernel_facts(seen: AmbientConnection, texts: Mapping[Key, str]) -> dict[str, Any]:
    """The comparable facts of one real connection, every proxy's log included."""
    pod = dataclasses.replace(seen.pod, proxy_log=seen.events)
    return {
        "outcome": kernel_outcome(pod, texts),
        "raw_outcome": pod.outcome,
        "delivered_to": list(pod.delivered_to) if pod.delivered_to else None,
        "listeners": [port for _, port in seen.listeners],
        # as the first accepting proxy read it (none for a UDP query: see ztunnel's DNS)
        "original_dst": next((e.get("original_dst") for e in seen.events
                              if e.get("event") == "accept"), None),
        "hops": pod.hops,
        "proxies": [f"{name}:{port}" for name, port in seen.listeners],
        "clusters": seen.routes,
        "nat": {key_name(k): n for k, n in sorted(pod.nat.items())},
        "mangle": {key_name(k): n for k, n in sorted(pod.grew.items())
                   if k[0] == "mangle" and k[2] > 0},
    }


def model_mangle(walk: Any) -> dict[str, int]:
    """The pod's mangle rules the model's walk counted (policies left out)."""
    return {key_name(k): int(v) for k, v in sorted(walk.counters.items())
            if k[0] == "mangle" and k[2] > 0 and v}


def run_one(lab: AmbientLab, scenario: Any, *, state: dict[str, Any] | None = None,
            without_rules: Sequence[str] = (), without_matches: Sequence[str] = ()
            ) -> tuple[Any, AmbientConnection, Comparison]:
    """Run one ambient scenario in the model and in ``lab`` (rules reloaded on change),
    optionally without some rules, policy routing or conditions (both sides alike).

    ``scenario`` is a catalog entry, or anything with its ``name``, ``request`` and
    ``annotations`` (a random case of :func:`randomized_ambient`)."""
    from meshlab.world import World

    started = time.perf_counter()
    annotations = dict(getattr(scenario, "annotations", ()) or ())
    walk = World.default().run_spec(
        scenario.request, scenario=scenario.name, without_rules=tuple(without_rules),
        subject=SUBJECT, annotations=annotations or None,
        without_matches=tuple(without_matches))
    document, commands = ablated(scenario_rules(scenario), without_rules, without_matches)
    state = {} if state is None else state
    if state.get("rules") != (document, commands):
        lab.load(document, commands)
        state["rules"] = (document, commands)
    request = live_request(scenario.request)
    seen = lab.connect_all(request.dst, request.dport, **request.kwargs())
    raw_texts = lab.counters().texts
    texts = {key_name(k): v for k, v in raw_texts.items()}
    model = {**model_facts(walk), "mangle": model_mangle(walk)}
    kernel = kernel_facts(seen, raw_texts)
    found = compare(scenario.name, model, kernel, texts)
    diff = list(found.diff)
    loop = model["outcome"] == kernel["outcome"] == "loop"   # counts: only whether, as nat
    for key, text in sorted(texts.items()):
        if key.startswith("mangle ") and "CONNMARK --set-xmark" in text:
            m, k = model["mangle"].get(key, 0), kernel["mangle"].get(key, 0)
            if (bool(m) != bool(k)) if loop else m != k:
                diff.append({"what": "mangle rule", "rule": key, "text": text, "model": m,
                             "kernel": k})
    for key in sorted(set(model["mangle"]) - set(kernel["mangle"])):
        diff.append({"what": "mangle rule the model counted, the kernel not", "rule": key,
                     "text": texts.get(key, ""), "model": model["mangle"][key], "kernel": 0})
    return walk, seen, Comparison(found.name, model, kernel, tuple(diff), found.texts,
                                  time.perf_counter() - started)


def verify_ambient(scenarios: Sequence[Any], *, deadline: float | None = 120.0,
                   lab: AmbientLab | None = None) -> tuple[list[Comparison], list[str]]:
    """Every given ambient scenario, in one ambient lab (a new one unless ``lab`` is given):
    (comparisons, the lab's notes)."""
    if lab is None:
        with AmbientLab(deadline=deadline) as fresh:
            return verify_ambient(scenarios, lab=fresh)
    results: list[Comparison] = []
    state: dict[str, Any] = {}
    for scenario in scenarios:
        results.append(compared_or_error(
            scenario.name, lambda s=scenario: run_one(lab, s, state=state)[2]))
    return results, list(lab.notes)


# -- seeded random requests ----------------------------------------------------------------

@dataclass(frozen=True)
class RandomCase:
    """A request of the ambient world that no catalog entry names, with pod annotations."""

    name: str
    request: Any
    annotations: tuple[tuple[str, str], ...]

    def describe(self) -> str:
        r = self.request
        extra = " ".join(f"{k}={v}" for k, v in self.annotations)
        return f"{r.proto} {r.source} -> {r.to}:{r.port}" + (f" ({extra})" if extra else "")


RANDOM_TARGETS = ("pod/details", "pod/reviews-v2", "pod/reviews", "pod/productpage",
                  "svc/details", "svc/reviews-v2", "svc/reviews", "svc/productpage",
                  "svc/kube-dns", "host/legacy-db")
RANDOM_PORTS = (9080, 9080, 9080, 8081, 5432, 53, 15001, 15006, 15008, 15053, 7070)


def random_case(rng: random.Random, index: int) -> RandomCase:
    """One random request: any source the lab can connect from, any target and port, TCP or
    (to port 53) UDP, and random ingress mode, DNS capture and ``net1`` rerouting.

    Two kinds are left out, as the lab does not build them: a Service VIP called from
    outside the mesh (the lab's node has kube-proxy's translation for kube-dns's port 53
    only; ambient pods' ztunnels resolve VIPs themselves), and a VM's packet that details
    would have to *forward* (to another pod, not rerouted to ztunnel: in ingress mode, or to
    15008, which is never redirected; the lab's pods do not forward, and a dropped SYN's
    retransmission would count twice; so the VM's requests are TCP, and those to another
    pod are rerouted: the catalog has the case without). And UDP goes
    to kube-dns only: the lab's UDP client does not hear an ICMP "port unreachable" (it
    sees a timeout where the model says refused), and the lab's ztunnel sends a captured
    UDP query to kube-dns, the resolver it is given, not to the address the app asked."""
    from meshlab.istio import ambient
    from meshlab.world import Request

    source = rng.choice(tuple(SIDES))
    targets = RANDOM_TARGETS + (("127.0.0.1",) if source == SUBJECT else ())
    if source not in AMBIENT_APPS:
        targets = tuple(t for t in targets if not t.startswith("svc/"))
    target = rng.choice([t for t in targets if t != source])
    port = rng.choice(RANDOM_PORTS)
    proto = "tcp"
    if port == 53 and source != "host/vm" and rng.random() < 0.6:
        proto, target = "udp", "svc/kube-dns"
    elif port == 53 and target.startswith("svc/"):
        target = "svc/kube-dns"   # the lab's node translates no other VIP's port 53
    annotations: dict[str, str] = {}
    if rng.random() < 0.25:
        annotations[ambient.ANNOTATION_BYPASS_INBOUND_CAPTURE] = "true"
    if rng.random() < 0.25:
        annotations[ambient.ANNOTATION_DNS_CAPTURE] = rng.choice(["true", "false"])
    if rng.random() < 0.3 or (source == "host/vm" and target != SUBJECT):
        annotations[ambient.ANNOTATION_REROUTE_VIRTUAL_INTERFACES] = "net1"
    return RandomCase(f"ambient-random-{index}", Request(source, target, port, proto),
                      tuple(sorted(annotations.items())))


def randomized_ambient(seed: int, *, cases: int = 40, lab: AmbientLab | None = None
                       ) -> list[tuple[RandomCase, Comparison]]:
    """``cases`` random requests (reproducible from ``seed``), each in the model's world and
    in the ambient lab, compared as the catalog's scenarios are."""
    if lab is None:
        with AmbientLab(deadline=60.0 + cases) as fresh:
            return randomized_ambient(seed, cases=cases, lab=fresh)
    rng = random.Random(f"{seed}-ambient-world")
    state: dict[str, Any] = {}
    out = []
    for index in range(cases):
        case = random_case(rng, index)
        try:
            out.append((case, run_one(lab, case, state=state)[2]))
        except MeshlabError as error:   # LabError included: reported, not raised
            out.append((case, Comparison(case.name, {}, {"error": str(error)},
                                         ({"what": "error", "model": None,
                                           "kernel": str(error)},))))
    return out
