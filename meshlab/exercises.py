"""The "predict, then check" checkers of the lessons.

Every exercise in ``notebooks/`` asks the learner to *predict* something (a port, a chain, a
rule, a flag, a number) and write it in a code cell::

    answer = None  # your prediction: the port the kernel steers the connection to
    check_inbound_capture_port(answer)

The checker never compares the answer with a stored solution. It *asks the model*: it runs
the walk, the trace or the rule generator that the answer implies and reports what the model
shows and why. A right answer is one the model agrees with (so several answers may be right,
e.g. any inbound port that bypasses Envoy); a wrong one gets the model's own explanation and a
hint. Solutions live apart, in ``notebooks/solutions/``.

Each ``check_*`` function returns a :class:`CheckResult`. In a notebook its rich display is a
short HTML message; in a test, read :attr:`CheckResult.correct` and the texts. Bad input (a
rule that does not parse, a flag istio-iptables would refuse) is never a traceback: it is an
``"invalid"`` result that says what is wrong and how to fix it.
"""

from __future__ import annotations

import html
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from ipaddress import IPv4Address, IPv4Interface, ip_address
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshlab.errors import MeshlabError

if TYPE_CHECKING:
    from meshlab.netfilter.kernel import Netns
    from meshlab.netfilter.ruleset import Ruleset
    from meshlab.netfilter.trace import Trace
    from meshlab.walk import Event, Walk

__all__ = [
    "EXERCISES",
    "CheckResult",
    "Exercise",
    "check_app_sees_source",
    "check_bypass_port",
    "check_bypass_rule",
    "check_debug_dump",
    "check_exclude_cidr",
    "check_exclude_inbound_annotation",
    "check_first_chain",
    "check_inbound_capture_port",
    "check_inbound_loop_rule",
    "check_injection_labels",
    "check_loop_port_exhaustion",
    "check_loop_rules",
    "check_nat_counts_connections",
    "check_outbound_cluster",
    "check_proxy_exempt_rule",
    "check_proxy_port_flag",
    "check_reply_source",
    "check_uid_1337_proxied",
    "check_upstream_counter",
]

#: The world of the lessons (see ``data/scenarios.yaml``): the pod and the peer.
POD_IP = IPv4Address("10.244.0.5")
PEER_IP = IPv4Address("10.244.0.9")
REVIEWS_VIP = IPv4Address("10.96.0.20")
LEGACY_DB_IP = IPv4Address("192.168.10.20")
APP_UID = 1000
PEER_SPORT = 43210

_DATA = Path(__file__).resolve().parent.parent / "data"
PRODUCTPAGE_POD = _DATA / "pods" / "productpage-v1.yaml"


# --------------------------------------------------------------------------- the result

#: The first words of a result: meaning in words and symbols, never by colour alone.
_LABELS: Mapping[str, str] = {
    "correct": "✔ Correct",
    "incorrect": "✘ Not quite",
    "unanswered": "✎ Your turn",
    "invalid": "⚠ Cannot read this answer",
}


@dataclass(frozen=True)
class CheckResult:
    """What a checker found.

    ``status`` is ``"correct"``, ``"incorrect"``, ``"unanswered"`` (the placeholder ``None``
    is still there) or ``"invalid"`` (the answer could not be read). ``feedback`` says what
    the model shows and why; ``hint`` helps the next try; ``model`` lists the model's own
    evidence (a trace, a walk's steps) line by line.
    """

    exercise: str
    status: str
    answer: Any
    feedback: str
    hint: str = ""
    model: tuple[str, ...] = field(default=())

    @property
    def correct(self) -> bool:
        return self.status == "correct"

    def _title(self) -> str:
        return f"{_LABELS.get(self.status, self.status)} (exercise {self.exercise})"

    def __str__(self) -> str:
        lines = [self._title(), self.feedback]
        if self.model:
            lines.append("What the model shows:")
            lines += [f"  {line}" for line in self.model]
        if self.hint and not self.correct:
            lines.append(f"Hint: {self.hint}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        border = {"correct": "solid", "incorrect": "dashed", "unanswered": "dotted",
                  "invalid": "double"}.get(self.status, "solid")
        parts = [
            f'<div class="meshlab-check meshlab-check-{self.status}" style="border:2px '
            f'{border} #555;padding:6px 10px;margin:4px 0;background:#fff;color:#111">',
            f"<b>{html.escape(self._title())}</b>",
            f"<p style='margin:4px 0'>{html.escape(self.feedback)}</p>",
        ]
        if self.model:
            body = html.escape("\n".join(self.model))
            parts.append("<details><summary>What the model shows</summary>"
                         f"<pre style='margin:2px 0'>{body}</pre></details>")
        if self.hint and not self.correct:
            parts.append(f"<p style='margin:4px 0'><i>Hint:</i> {html.escape(self.hint)}</p>")
        parts.append("</div>")
        return "".join(parts)


def _unanswered(exercise: str, what: str, hint: str) -> CheckResult:
    return CheckResult(exercise, "unanswered", None,
                       f"Replace None with your answer ({what}), then run the cell again.",
                       hint)


def _invalid(exercise: str, answer: Any, problem: str, hint: str) -> CheckResult:
    return CheckResult(exercise, "invalid", answer, problem, hint)


# --------------------------------------------------------------------------- reading answers


class _Unreadable(Exception):
    """The learner's answer has the wrong shape; the message says which shape is expected."""


def _port(answer: Any) -> int:
    if isinstance(answer, bool):
        raise _Unreadable(f"{answer!r} is a truth value; write a port number such as 8080")
    if isinstance(answer, str) and answer.strip().isdigit():
        answer = int(answer.strip())
    if not isinstance(answer, int) or not 1 <= answer <= 65535:
        raise _Unreadable(f"{answer!r} is not a port; write a whole number from 1 to 65535")
    return answer


def _whole(answer: Any) -> int:
    if isinstance(answer, bool):
        raise _Unreadable(f"{answer!r} is a truth value; write a whole number")
    if isinstance(answer, str) and answer.strip().lstrip("-").isdigit():
        answer = int(answer.strip())
    if isinstance(answer, float) and answer.is_integer():
        answer = int(answer)
    if not isinstance(answer, int):
        raise _Unreadable(f"{answer!r} is not a whole number")
    return answer


def _bool(answer: Any) -> bool:
    if isinstance(answer, bool):
        return answer
    if isinstance(answer, str) and answer.strip().lower() in ("true", "yes", "false", "no"):
        return answer.strip().lower() in ("true", "yes")
    raise _Unreadable(f"{answer!r} is not True or False")


def _text(answer: Any, what: str) -> str:
    if not isinstance(answer, str) or not answer.strip():
        raise _Unreadable(f"{answer!r} is not {what}; write it as a string in quotes")
    return answer.strip()


def _texts(answer: Any, what: str) -> tuple[str, ...]:
    if isinstance(answer, str):
        return (_text(answer, what),)
    if isinstance(answer, Iterable) and not isinstance(answer, Mapping):
        items = tuple(_text(a, what) for a in answer)
        if items:
            return items
    raise _Unreadable(f"{answer!r} is not {what} (a string) or a list of them")


def _strip_append(text: str) -> str:
    """``-A ISTIO_OUTPUT -m owner ... -j RETURN`` -> ``-m owner ... -j RETURN``."""
    words = text.split()
    if len(words) > 2 and words[0] in ("-A", "--append"):
        return " ".join(words[2:])
    return text


def _checker(exercise: str, what: str, hint: str
             ) -> Callable[[Callable[..., CheckResult]], Callable[..., CheckResult]]:
    """Wrap a checker: ``None`` -> "your turn"; unreadable input / model errors -> "invalid"."""

    def wrap(fn: Callable[..., CheckResult]) -> Callable[..., CheckResult]:
        def checker(answer: Any = None) -> CheckResult:
            if answer is None:
                return _unanswered(exercise, what, hint)
            try:
                return fn(answer)
            except _Unreadable as bad:
                return _invalid(exercise, answer, f"{bad}.", f"Expected {what}.")
            except MeshlabError as error:
                return _invalid(exercise, answer, f"The model could not use this answer: "
                                f"{error}", hint)

        checker.__name__ = fn.__name__
        checker.__qualname__ = fn.__qualname__
        checker.__doc__ = fn.__doc__
        checker.exercise = exercise  # type: ignore[attr-defined]
        return checker

    return wrap


# --------------------------------------------------------------------------- the model


def _default_flags() -> tuple[str, ...]:
    from meshlab.istio.flags import DEFAULT_ISTIO_INIT_ARGS

    return tuple(DEFAULT_ISTIO_INIT_ARGS)


@lru_cache(maxsize=32)
def _rules_for(flags: tuple[str, ...]) -> Ruleset:
    from meshlab.istio.capture import generate
    from meshlab.istio.flags import CaptureConfig

    return generate(CaptureConfig.from_args(list(flags))).ruleset_v4


def _netns(ruleset: Ruleset, pod_ip: IPv4Address = POD_IP) -> Netns:
    """A fresh network namespace of the lessons' pod: lo 127.0.0.1/8, eth0 POD_IP/24."""
    from meshlab.netfilter.kernel import Interface, Netns

    return Netns(ruleset, (Interface("lo", (IPv4Interface("127.0.0.1/8"),)),
                           Interface("eth0", (IPv4Interface(f"{pod_ip}/24"),))))


def _receive(ruleset: Ruleset, port: int, *, dst: IPv4Address = POD_IP) -> tuple[Netns, Trace]:
    """A peer's first TCP packet arriving on eth0 for ``dst:port``."""
    from meshlab.netfilter.packet import Packet

    netns = _netns(ruleset)
    packet = Packet("tcp", PEER_IP, PEER_SPORT, dst, port, iif="eth0")
    return netns, netns.receive(packet, "eth0")


def _connect(ruleset: Ruleset, dst: IPv4Address, port: int, *, uid: int = APP_UID,
             gid: int | None = None) -> Trace:
    """A local process (``uid``) opening a TCP connection to ``dst:port``."""
    netns = _netns(ruleset)
    return netns.connect(proto="tcp", dst=dst, dport=port, uid=uid,
                         gid=uid if gid is None else gid)


def _trace_lines(trace: Trace) -> tuple[str, ...]:
    lines = [f"{e.hook:<11} {e.table:<6} {e.chain} rule {e.rule}: {e.text}  ->  {e.verdict}"
             for e in trace.hits]
    where = f"{trace.delivered[0]}:{trace.delivered[1]}"
    orig = f"{trace.original_dst[0]}:{trace.original_dst[1]}"
    if trace.verdict == "DROP":
        lines.append("verdict: DROP (the packet is discarded; the peer gets no answer)")
    elif trace.nat is not None:
        lines.append(f"nat: {trace.nat.target} in {trace.nat.chain} rule {trace.nat.rule}: "
                     f"{orig} -> {where}")
    else:
        lines.append(f"no NAT: the connection stays addressed to {orig}")
    return tuple(lines)


def _walk(name: str, *, without_rules: Sequence[str] = (),
          flags: str | Sequence[str] | None = None) -> Walk:
    from meshlab.scenarios import run_scenario

    return run_scenario(name, without_rules=tuple(without_rules), flags=flags)


def _walk_lines(walk: Walk, *, limit: int = 40) -> tuple[str, ...]:
    lines: list[str] = []
    for event in walk.hits:
        where = ""
        if event.kind == "rule":
            where = f"{event.hook} {event.table} {event.chain} rule {event.rule}: {event.text} "
        elif event.listener:
            where = f"{event.listener} "
        lines.append(f"[{event.connection}] {event.actor:<6} {event.kind:<8} {where}"
                     f"-> {event.decision}")
    if len(lines) > limit:
        lines = [*lines[: limit - 1], f"... ({len(lines) - limit + 1} more events)"]
    lines.append(f"outcome: {walk.outcome}"
                 + (f" ({walk.reason})" if getattr(walk, "reason", "") else ""))
    return tuple(lines)


def _proxy_events(walk: Walk) -> list[Event]:
    return [e for e in walk.events if e.actor == "proxy" and e.kind == "proxy"]


def _listener_ports(walk: Walk) -> tuple[int, ...]:
    from meshlab.scenarios import proxy_listeners

    return proxy_listeners(walk)


# =========================================================================== 01 injection


@lru_cache(maxsize=1)
def _productpage_manifest() -> str:
    return PRODUCTPAGE_POD.read_text(encoding="utf-8")


@_checker("01.1", "a dict of namespace labels, e.g. {'team': 'shop'}",
          "The webhook's namespaceSelector looks for one label on the namespace; its value "
          "must be exactly what the selector says (not 'true').")
def check_injection_labels(answer: Any) -> CheckResult:
    """Which labels on the ``default`` namespace make the webhook inject productpage?"""
    from meshlab.istio.webhook import should_inject

    if not isinstance(answer, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in answer.items()):
        raise _Unreadable(f"{answer!r} is not a dict of label names to string values")
    from meshlab.istio.inject import load_pod

    pod = load_pod(_productpage_manifest())
    decision = should_inject(pod, dict(answer), "default")
    model = tuple(decision.reasons)
    if decision.inject:
        return CheckResult(
            "01.1", "correct", answer,
            f"The webhook {decision.webhook} matches, so /inject is called and the pod gets "
            "istio-init and istio-proxy.", model=model)
    return CheckResult(
        "01.1", "incorrect", answer,
        "With these labels no webhook entry selects the pod, so the API server creates it "
        "unchanged: no istio-init, no rules, no sidecar.",
        "The classic label is istio-injection=enabled (istio.io/rev=default also works).",
        model)


@_checker("01.3", "a dict of pod annotations, e.g. {'some/annotation': 'value'}",
          "Look at the traffic.sidecar.istio.io/... annotations: one of them lists inbound "
          "ports that istio-init must leave alone (it becomes part of -d).")
def check_exclude_inbound_annotation(answer: Any) -> CheckResult:
    """Annotate productpage so that a peer's connection to port 9091 is not captured,
    while port 9080 still is."""
    import yaml

    from meshlab.istio.inject import inject

    if not isinstance(answer, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in answer.items()):
        raise _Unreadable(f"{answer!r} is not a dict of annotation names to string values")
    pod = yaml.safe_load(_productpage_manifest())
    pod["metadata"]["annotations"] = dict(answer)
    result = inject(pod, {"istio-injection": "enabled"})
    if result.init_args is None:
        return CheckResult("01.3", "incorrect", answer,
                           "With these annotations there is no istio-init at all, so nothing "
                           "is captured: not 9091, but not 9080 either.",
                           "Keep inbound capture on; only leave port 9091 out.",
                           tuple(result.reasons))
    ruleset = result.rules().ruleset_v4
    _, t9091 = _receive(ruleset, 9091)
    _, t9080 = _receive(ruleset, 9080)
    args = "istio-iptables " + shlex.join(result.init_args)
    model = (args, "peer -> :9091", *_trace_lines(t9091), "peer -> :9080",
             *_trace_lines(t9080))
    if t9091.nat is None and t9080.nat is not None:
        return CheckResult(
            "01.3", "correct", answer,
            "istio-init now writes a RETURN for 9091 in ISTIO_INBOUND, so a connection to 9091 "
            "keeps its destination and reaches the app directly, while 9080 is still "
            f"redirected to {t9080.delivered[1]}.", model=model)
    if t9091.nat is not None:
        why = (f"port 9091 is still redirected to {t9091.delivered[1]} (Envoy's inbound "
               "listener).")
    else:
        why = "9091 is left alone, but so is 9080: you switched inbound capture off."
    return CheckResult("01.3", "incorrect", answer, "Not yet: " + why,
                       "traffic.sidecar.istio.io/excludeInboundPorts takes a comma list of "
                       "ports.", model)


@_checker("01.2", "a port number",
          "-p is the port ISTIO_REDIRECT sends outbound connections to (REDIRECT --to-ports).")
def check_proxy_port_flag(answer: Any) -> CheckResult:
    """istio-init runs with ``-p 15999`` instead of ``-p 15001``: to which local port does the
    kernel steer the app's connection to 10.244.0.9:9080?"""
    port = _port(answer)
    flags = list(_default_flags())
    flags[flags.index("-p") + 1] = "15999"
    trace = _connect(_rules_for(tuple(flags)), PEER_IP, 9080)
    model = ("istio-iptables " + shlex.join(flags), *_trace_lines(trace))
    got = trace.delivered[1]
    if port == got:
        return CheckResult("01.2", "correct", answer,
                           f"ISTIO_REDIRECT now says REDIRECT --to-ports {got}: the flag is "
                           "copied straight into the rule. Envoy must then listen there "
                           "(meshConfig.proxyListenPort), or every outbound connection is "
                           "refused.", model=model)
    return CheckResult("01.2", "incorrect", answer,
                       f"The model redirects the connection to 127.0.0.1:{got}, not {port}.",
                       "Read -p both ways: the flag writes the rule, the proxy must listen on "
                       "the same port.", model)


# =========================================================================== 02 iptables


@_checker("02.1", "a chain name such as 'INPUT'",
          "In the nat table, PREROUTING's first rule is a jump. Which Istio chain handles "
          "arriving traffic?")
def check_first_chain(answer: Any) -> CheckResult:
    """A peer's TCP SYN arrives on eth0 for 10.244.0.5:9080. Which chain does nat PREROUTING
    jump to?"""
    chain = _text(answer, "a chain name").upper()
    _, trace = _receive(_rules_for(_default_flags()), 9080)
    jumps = [e for e in trace.hits if e.chain == "PREROUTING" and e.table == "nat"
             and e.verdict.startswith("jump ")]
    model = _trace_lines(trace)
    if not jumps:
        return CheckResult("02.1", "incorrect", answer,
                           "In the model nat PREROUTING jumps nowhere for this packet.", "",
                           model)
    target = jumps[0].verdict.split()[1]
    if chain == target:
        onward = [e.verdict.split()[1] for e in trace.hits
                  if e.chain == target and e.verdict.startswith("jump ")]
        then = f"; from there it jumps on to {onward[0]}" if onward else ""
        return CheckResult("02.1", "correct", answer,
                           f"nat PREROUTING rule {jumps[0].rule} ({jumps[0].text}) jumps to "
                           f"{target}{then}.", model=model)
    return CheckResult("02.1", "incorrect", answer,
                       f"The model's packet jumps from nat PREROUTING to {target}, not {chain}.",
                       "Chains whose names start with ISTIO_IN... handle inbound traffic.",
                       model)


def _insert_rule(ruleset: Ruleset, table: str, chain: str, position: int,
                 rule_text: str) -> Ruleset:
    """A copy of ``ruleset`` with ``rule_text`` inserted as rule ``position`` of ``chain``."""
    from dataclasses import replace
    from types import MappingProxyType

    from meshlab.netfilter.parse import parse_rule

    rule = parse_rule(rule_text)
    old = ruleset.tables[table]
    target = old.chains[chain]
    rules = list(target.rules)
    rules.insert(position - 1, rule)
    chains = dict(old.chains)
    chains[chain] = replace(target, rules=tuple(rules))
    tables = dict(ruleset.tables)
    tables[table] = replace(old, chains=MappingProxyType(chains))
    return type(ruleset)(ruleset.family, tables)


@_checker("02.2", "a rule in restore form without '-A CHAIN', e.g. '-p tcp -j ACCEPT'",
          "ISTIO_INBOUND already has rules that leave ports alone (15008, 15090, ...). Copy "
          "their shape for 8081.")
def check_bypass_rule(answer: Any) -> CheckResult:
    """Write one rule which, inserted at the top of nat ISTIO_INBOUND, lets a peer reach port
    8081 without Envoy, and changes nothing for port 9080."""
    text = _strip_append(_text(answer, "a rule"))
    ruleset = _insert_rule(_rules_for(_default_flags()), "nat", "ISTIO_INBOUND", 1, text)
    _, t8081 = _receive(ruleset, 8081)
    _, t9080 = _receive(ruleset, 9080)
    model = (f"-I ISTIO_INBOUND 1 {text}", "peer -> :8081", *_trace_lines(t8081),
             "peer -> :9080", *_trace_lines(t9080))
    if t8081.verdict == "DROP" or t9080.verdict == "DROP":
        return CheckResult("02.2", "incorrect", answer,
                           "Your rule drops the connection: the peer gets no answer at all.",
                           "RETURN leaves the Istio chain and lets nat PREROUTING carry on.",
                           model)
    if t8081.nat is None and t9080.nat is not None:
        return CheckResult("02.2", "correct", answer,
                           "The connection to 8081 leaves ISTIO_INBOUND before the jump to "
                           "ISTIO_IN_REDIRECT and keeps its destination; 9080 is still "
                           f"redirected to {t9080.delivered[1]}. This is exactly the rule "
                           "'-d ...,8081' would generate.", model=model)
    if t8081.nat is not None:
        return CheckResult("02.2", "incorrect", answer,
                           f"Port 8081 is still redirected to {t8081.delivered[1]}: your rule "
                           "did not match the packet (or did not stop the chain).",
                           "Match -p tcp and the destination port, and use -j RETURN.", model)
    return CheckResult("02.2", "incorrect", answer,
                       "8081 bypasses Envoy, but so does 9080: the rule matches too much.",
                       "Narrow it to destination port 8081 (--dport).", model)


@_checker("02.3", "an 'IP:PORT' string, e.g. '10.0.0.1:80'",
          "conntrack undoes the NAT on every reply: the peer must see the address it called.")
def check_reply_source(answer: Any) -> CheckResult:
    """The peer (10.244.0.9) connected to 10.244.0.5:9080 and nat redirected it to 15006. The
    proxy answers. What source IP:PORT does the reply carry when it reaches the peer?"""
    from meshlab.netfilter.packet import parse_endpoint

    try:
        ip, port = parse_endpoint(_text(answer, "an IP:PORT"))
    except ValueError as bad:
        raise _Unreadable(str(bad)) from None
    netns, trace = _receive(_rules_for(_default_flags()), 9080)
    reply = netns.reply(trace)
    model = (*_trace_lines(trace), f"conntrack: {trace.connection}",
             f"reply as the peer receives it: {reply}")
    if (ip, port) == (reply.src, reply.sport):
        return CheckResult("02.3", "correct", answer,
                           f"The reply leaves the proxy's socket from :{trace.delivered[1]}, "
                           f"but conntrack rewrites it back to {reply.src}:{reply.sport}. No "
                           "nat rule sees the reply: nat sees only a connection's first "
                           "packet.", model=model)
    return CheckResult("02.3", "incorrect", answer,
                       f"The model's reply arrives from {reply.src}:{reply.sport}.",
                       "If the peer saw another address than the one it called, its TCP stack "
                       "would drop the reply.", model)


# =========================================================================== 03 inbound


@_checker("03.1", "a port number", "Look for the REDIRECT rule in ISTIO_IN_REDIRECT (-z).")
def check_inbound_capture_port(answer: Any) -> CheckResult:
    """Which local port does the peer's connection to 10.244.0.5:9080 reach first?"""
    port = _port(answer)
    walk = _walk("inbound")
    got = _listener_ports(walk)
    model = _walk_lines(walk)
    if got and port == got[0]:
        return CheckResult("03.1", "correct", answer,
                           f"Steps 1-3: PREROUTING -> ISTIO_INBOUND -> ISTIO_IN_REDIRECT, "
                           f"REDIRECT to {got[0]}: Envoy's virtualInbound listener accepts it.",
                           model=model)
    first = got[0] if got else None
    return CheckResult("03.1", "incorrect", answer,
                       f"In the model the first listener is {first}, not {port}.",
                       "15001 is outbound, 15006 inbound (\"6 is the magic number for "
                       "inbound\").", model)


@_checker("03.2", "an IP address as a string, e.g. '10.244.0.9'",
          "Envoy opens a new connection to the app, and binds it to a special loopback "
          "address first.")
def check_app_sees_source(answer: Any) -> CheckResult:
    """In the inbound walk, what source address does the app see (``getpeername()``)?"""
    try:
        ip = ip_address(_text(answer, "an IP address"))
    except ValueError as bad:
        raise _Unreadable(str(bad)) from None
    walk = _walk("inbound")
    seen = walk.delivered_to.sees_source if walk.delivered_to else None
    model = _walk_lines(walk)
    if seen is not None and ip == ip_address(seen):
        return CheckResult("03.2", "correct", answer,
                           f"The app sees {seen}: cluster inbound|9080|| binds its upstream "
                           "socket there, and ISTIO_OUTPUT rule 1 (-s 127.0.0.6/32 -o lo -j "
                           "RETURN) lets that connection through instead of capturing it "
                           "again (step 7).", model=model)
    hint = ("The peer's address is gone: the app's connection comes from Envoy, not from the "
            "peer." if ip == PEER_IP else "It is in 127.0.0.0/8, and it is not 127.0.0.1.")
    return CheckResult("03.2", "incorrect", answer, f"The model's app sees {seen}.", hint, model)


@_checker("03.3", "a port number",
          "Read the RETURN rules at the top of ISTIO_INBOUND (-e and -d).")
def check_bypass_port(answer: Any) -> CheckResult:
    """Name one port of the pod that a peer reaches *without* going through Envoy."""
    port = _port(answer)
    _, trace = _receive(_rules_for(_default_flags()), port)
    model = _trace_lines(trace)
    if trace.nat is None:
        returned = [e for e in trace.hits if e.chain == "ISTIO_INBOUND" and e.verdict == "RETURN"]
        why = (f"ISTIO_INBOUND rule {returned[0].rule} ({returned[0].text}) returns it"
               if returned else "no rule redirects it")
        return CheckResult("03.3", "correct", answer,
                           f"A connection to {port} is not redirected: {why}, so it reaches "
                           f"whatever listens on {port} itself.", model=model)
    return CheckResult("03.3", "incorrect", answer,
                       f"A connection to {port} is redirected to {trace.delivered[1]} "
                       "(Envoy), like every port not excluded.",
                       "-d 15090,15021,15020 and the tunnel port -e 15008 are excluded.", model)


# =========================================================================== 04 outbound


@_checker("04.1", "a rule number (1 is the first rule of the chain)",
          "Envoy's upstream connection is owned by UID 1337 and leaves by eth0.")
def check_proxy_exempt_rule(answer: Any) -> CheckResult:
    """Step 15: which rule number of nat ISTIO_OUTPUT lets Envoy's upstream connection to the
    peer through?"""
    number = _whole(answer)
    walk = _walk("outbound")
    upstream = [e for e in walk.events if e.kind == "rule" and e.matched
                and e.chain == "ISTIO_OUTPUT" and e.connection >= 1]
    model = _walk_lines(walk)
    if not upstream:
        return CheckResult("04.1", "incorrect", answer,
                           "In the model no ISTIO_OUTPUT rule matched Envoy's connection.", "",
                           model)
    hit = upstream[0]
    if number == hit.rule:
        return CheckResult("04.1", "correct", answer,
                           f"ISTIO_OUTPUT rule {hit.rule}: {hit.text} -> {hit.decision}. The "
                           "rules before it need -o lo, and this connection leaves by eth0.",
                           model=model)
    return CheckResult("04.1", "incorrect", answer,
                       f"The model's upstream connection matches ISTIO_OUTPUT rule {hit.rule} "
                       f"({hit.text}), not rule {number}.",
                       "Rules 1-3 all need -o lo; the connection goes to another pod.", model)


@_checker("04.2", "an Envoy cluster name, e.g. 'PassthroughCluster'",
          "Envoy knows the reviews Service (its VIP and port), so it does not pass the "
          "connection through blindly.")
def check_outbound_cluster(answer: Any) -> CheckResult:
    """The app calls the reviews Service VIP 10.96.0.20:9080. Which Envoy cluster handles it?"""
    name = _text(answer, "a cluster name")
    walk = _walk("outbound-service")
    chosen = [e.cluster for e in _proxy_events(walk) if e.cluster]
    model = _walk_lines(walk)
    if chosen and name == chosen[0]:
        return CheckResult("04.2", "correct", answer,
                           f"virtualOutbound hands it to {chosen[0]}; Envoy picks an endpoint "
                           "itself, so kube-proxy's VIP translation is never used.",
                           model=model)
    return CheckResult("04.2", "incorrect", answer,
                       f"The model picks {chosen[0] if chosen else 'no cluster'}.",
                       "Outbound clusters are named outbound|PORT|SUBSET|HOST.", model)


# =========================================================================== 05 the loop


@_checker("05.1", "a list of rule texts (restore form, without '-A CHAIN')",
          "Envoy runs as UID 1337 *and* GID 1337, and ISTIO_OUTPUT checks both.")
def check_loop_rules(answer: Any) -> CheckResult:
    """Remove as few rules as you can so that the outbound request loops."""
    texts = tuple(_strip_append(t) for t in _texts(answer, "a rule text"))
    walk = _walk("outbound", without_rules=texts)
    model = _walk_lines(walk)
    if walk.outcome == "loop":
        loop = walk.loop
        cycle = loop.text if loop is not None else ""
        return CheckResult("05.1", "correct", answer,
                           f"Without {len(texts)} rule(s) Envoy's own connection is captured "
                           f"again and comes back to itself: {cycle}.", model=model)
    exempt = [e for e in walk.events if e.kind == "rule" and e.matched and e.connection >= 1
              and e.chain == "ISTIO_OUTPUT" and e.decision == "RETURN"]
    why = (f"ISTIO_OUTPUT rule {exempt[0].rule} ({exempt[0].text}) still lets Envoy's "
           "connection through" if exempt else f"the walk ends '{walk.outcome}'")
    return CheckResult("05.1", "incorrect", answer, f"No loop: {why}.",
                       "Remove every rule that RETURNs the proxy's traffic by its owner.", model)


@_checker("05.3", "a rule text (restore form, without '-A CHAIN')",
          "Step 7 is the rule that recognises Envoy's inbound upstream connection by its "
          "source address.")
def check_inbound_loop_rule(answer: Any) -> CheckResult:
    """Which one rule, removed, makes the *inbound* request loop?"""
    text = _strip_append(_text(answer, "a rule"))
    walk = _walk("inbound", without_rules=(text,))
    model = _walk_lines(walk)
    if walk.outcome == "loop":
        cycle = walk.loop.text if walk.loop is not None else ""
        return CheckResult("05.3", "correct", answer,
                           "Without it Envoy's connection to the app (UID 1337, out by lo, to "
                           "the pod's own IP) matches the ISTIO_IN_REDIRECT rule and comes back "
                           f"to 15006: {cycle}. 127.0.0.6 exists to avoid exactly this.",
                           model=model)
    return CheckResult("05.3", "incorrect", answer,
                       f"Without that rule the inbound walk ends '{walk.outcome}', not in a "
                       "loop.", "Look for the rule that matches -s 127.0.0.6/32.", model)


@_checker("05.2", "a whole number of hops",
          "Each turn of the loop uses one more local (ephemeral) port towards the same "
          "destination; Linux offers net.ipv4.ip_local_port_range = 32768-60999.")
def check_loop_port_exhaustion(answer: Any) -> CheckResult:
    """After how many turns does the outbound loop run out of ephemeral ports?"""
    hops = _whole(answer)
    walk = _walk("outbound", without_rules=_LOOP_RULES)
    if walk.loop is None:
        return CheckResult("05.2", "incorrect", answer,
                           "The model found no loop to measure (the library changed?).", "",
                           _walk_lines(walk))
    limit = walk.loop.hops_until_ports_run_out
    lo, hi = walk.loop.port_range
    model = (f"ip_local_port_range {lo}-{hi}: {walk.loop.ephemeral_port_count} ports",
             f"ports run out after {limit} hops; file descriptors (nofile "
             f"{walk.loop.nofile}) after {walk.loop.hops_until_fds_run_out}",
             f"a real proxy gives out: {walk.loop.gives_out}")
    if abs(hops - limit) <= max(1, limit // 100):
        return CheckResult("05.2", "correct", answer,
                           f"About {limit} turns: then connect() fails with EADDRNOTAVAIL. "
                           "Long before that, the loop has eaten the pod's memory and CPU.",
                           model=model)
    return CheckResult("05.2", "incorrect", answer,
                       f"The model says {limit} turns, not {hops}.",
                       "Count the ports in the range (both ends included).", model)


#: The two owner rules whose removal makes the outbound request loop (the checker's solution
#: space is bigger; this is only what 05.3 removes to get a loop to measure).
_LOOP_RULES = ("-m owner --uid-owner 1337 -j RETURN", "-m owner --gid-owner 1337 -j RETURN")


# =========================================================================== 06 edge cases


def _with_flag(flags: Sequence[str], flag: str, value: str) -> tuple[str, ...]:
    out = list(flags)
    if flag in out:
        out[out.index(flag) + 1] = value
    else:
        out += [flag, value]
    return tuple(out)


@_checker("06.1", "a CIDR string for -x, e.g. '10.0.0.0/8'",
          "legacy-db is 192.168.10.20; reviews (10.244.0.9) must still go through Envoy.")
def check_exclude_cidr(answer: Any) -> CheckResult:
    """Choose ``-x`` (excludeOutboundIPRanges) so that the app reaches legacy-db without Envoy
    while its calls to reviews are still proxied."""
    value = _text(answer, "a CIDR list")
    flags = _with_flag(_default_flags(), "-x", value)
    db = _walk("outbound-external", flags=flags)
    peer = _walk("outbound", flags=flags)
    model = ("istio-iptables " + shlex.join(flags),
             f"app -> legacy-db:5432: outcome {db.outcome}, proxied {db.proxied}",
             f"app -> reviews:9080:   outcome {peer.outcome}, proxied {peer.proxied}")
    if not db.proxied and peer.proxied and db.outcome == "delivered":
        return CheckResult("06.1", "correct", answer,
                           f"-x {value} becomes '-d {value} -j RETURN' in ISTIO_OUTPUT, before "
                           "the catch-all jump to ISTIO_REDIRECT: legacy-db is reached "
                           "directly, reviews still through 15001.", model=model)
    if db.proxied:
        return CheckResult("06.1", "incorrect", answer,
                           "legacy-db is still reached through Envoy: the range does not "
                           "contain 192.168.10.20.", "A /16 or /24 around 192.168.10.20.",
                           model)
    return CheckResult("06.1", "incorrect", answer,
                       "legacy-db bypasses Envoy, but reviews does too: the range is too wide.",
                       "Keep 10.244.0.0/16 (the pods) out of it.", model)


@_checker("06.2", "True (proxied) or False (not proxied)",
          "The kernel knows a socket's owner, not which container or binary opened it.")
def check_uid_1337_proxied(answer: Any) -> CheckResult:
    """An application process running as UID 1337 calls reviews. Does its connection go
    through Envoy?"""
    predicted = _bool(answer)
    walk = _walk("app-as-uid-1337")
    model = _walk_lines(walk)
    if predicted == walk.proxied:
        return CheckResult("06.2", "correct", answer,
                           "Not proxied: '-m owner --uid-owner 1337 -j RETURN' cannot tell the "
                           "app from Envoy, so the app bypasses the sidecar (no mTLS, no "
                           "policy). Istio's analyzer warns about it (IST0144), and the docs "
                           "say apps must not run as UID 1337." if not walk.proxied else
                           "The model proxies it.", model=model)
    return CheckResult("06.2", "incorrect", answer,
                       f"The model says proxied = {walk.proxied}.",
                       "Which ISTIO_OUTPUT rule matches a connection owned by UID 1337?", model)


#: The dump the "debug your own pod" exercise starts from (06.3): a pod whose istio-init ran
#: with -i 10.96.0.0/12 (only Service VIPs are captured) and -o 3306.
DEBUG_FLAGS: tuple[str, ...] = ("-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT",
                                "-i", "10.96.0.0/12", "-x", "", "-b", "*",
                                "-d", "15090,15021,15020", "-o", "3306")


def debug_dump() -> str:
    """The ``iptables-save`` text of exercise 06.3, as a real pod would print it."""
    return _rules_for(DEBUG_FLAGS).render_save()


@_checker("06.3", "a port number",
          "Find the rules of ISTIO_OUTPUT in the dump: this pod only captures some "
          "destinations (-i), and excludes one port (-o).")
def check_debug_dump(answer: Any) -> CheckResult:
    """With the dump of :func:`debug_dump`, the app (UID 1000) connects to 10.96.0.20:9080
    (a Service VIP). To which port of which address is the connection delivered?"""
    from meshlab.netfilter.parse import parse_ruleset

    port = _port(answer)
    ruleset = parse_ruleset(debug_dump())
    trace = _connect(ruleset, REVIEWS_VIP, 9080)
    other = _connect(ruleset, PEER_IP, 9080)
    model = ("app -> 10.96.0.20:9080", *_trace_lines(trace), "app -> 10.244.0.9:9080",
             *_trace_lines(other))
    got = trace.delivered[1]
    if port == got:
        return CheckResult("06.3", "correct", answer,
                           f"10.96.0.20 is inside -i 10.96.0.0/12, so ISTIO_OUTPUT sends it to "
                           f"ISTIO_REDIRECT: delivered to 127.0.0.1:{got}. A pod IP such as "
                           f"10.244.0.9 would have kept port {other.delivered[1]} and left by "
                           f"{other.out_iface}.", model=model)
    return CheckResult("06.3", "incorrect", answer,
                       f"The model delivers it to {trace.delivered[0]}:{got}.",
                       "Trace the rules of ISTIO_OUTPUT top to bottom with dst 10.96.0.20, "
                       "uid 1000, oif eth0.", model)


# =========================================================================== 07 real kernel


@_checker("07.1", "a rule number of nat ISTIO_OUTPUT",
          "Only connections opened inside the pod pass nat OUTPUT. In the inbound walk, which "
          "process opens one, and from which source address?")
def check_upstream_counter(answer: Any) -> CheckResult:
    """After one inbound request, which rule of nat ISTIO_OUTPUT shows a counter of 1 in
    ``iptables-save -c``?"""
    number = _whole(answer)
    walk = _walk("inbound")
    counted = sorted(rule for (table, chain, rule), n in walk.counters.items()
                     if table == "nat" and chain == "ISTIO_OUTPUT" and n and rule > 0)
    model = tuple(f"{t} {c} {f'rule {r}' if r else 'policy'}: {n}"
                  for (t, c, r), n in sorted(walk.counters.items()) if n)
    if number in counted:
        return CheckResult("07.1", "correct", answer,
                           f"ISTIO_OUTPUT rule {number} counted Envoy's connection to the app "
                           "(source 127.0.0.6, out by lo): step 7. The live lab reads the same "
                           "counter from the real kernel.", model=model)
    return CheckResult("07.1", "incorrect", answer,
                       f"The model counts ISTIO_OUTPUT rule(s) {counted}, not {number}.",
                       "Envoy's connection to the app is bound to 127.0.0.6.", model)


@_checker("07.2", "a whole number",
          "nat rules see a connection's first packet only; conntrack handles the rest.")
def check_nat_counts_connections(answer: Any) -> CheckResult:
    """A peer sends one HTTP request of 10 TCP packets over one connection to 9080. By how
    much does the counter of nat PREROUTING rule 1 grow?"""
    number = _whole(answer)
    walk = _walk("inbound")
    count = int(walk.counters.get(("nat", "PREROUTING", 1), 0))
    model = (f"nat PREROUTING rule 1 after one connection: {count}",
             "later packets of the connection: translated by conntrack, not counted by nat")
    if number == count:
        return CheckResult("07.2", "correct", answer,
                           f"{count}: nat counters count connections, not packets. (The "
                           "filter and mangle tables would count all 10.)", model=model)
    return CheckResult("07.2", "incorrect", answer,
                       f"The model counts {count} for the whole connection.",
                       "Which packets does the nat table see at all?", model)


# =========================================================================== the catalog


@dataclass(frozen=True)
class Exercise:
    """One exercise: where it lives and which checker evaluates it."""

    id: str
    notebook: str
    prompt: str
    checker: Callable[[Any], CheckResult]


def _exercises() -> tuple[Exercise, ...]:
    table: list[tuple[str, Callable[[Any], CheckResult]]] = [
        ("01-injection", check_injection_labels),
        ("01-injection", check_exclude_inbound_annotation),
        ("01-injection", check_proxy_port_flag),
        ("02-iptables-in-a-pod", check_first_chain),
        ("02-iptables-in-a-pod", check_bypass_rule),
        ("02-iptables-in-a-pod", check_reply_source),
        ("03-inbound", check_inbound_capture_port),
        ("03-inbound", check_app_sees_source),
        ("03-inbound", check_bypass_port),
        ("04-outbound", check_proxy_exempt_rule),
        ("04-outbound", check_outbound_cluster),
        ("05-the-loop", check_loop_rules),
        ("05-the-loop", check_inbound_loop_rule),
        ("05-the-loop", check_loop_port_exhaustion),
        ("06-edge-cases", check_exclude_cidr),
        ("06-edge-cases", check_uid_1337_proxied),
        ("06-edge-cases", check_debug_dump),
        ("07-real-kernel", check_upstream_counter),
        ("07-real-kernel", check_nat_counts_connections),
    ]
    return tuple(Exercise(fn.exercise, nb, (fn.__doc__ or "").strip(), fn)  # type: ignore[attr-defined]
                 for nb, fn in table)


#: Every exercise of the lessons, in order.
EXERCISES: tuple[Exercise, ...] = _exercises()
