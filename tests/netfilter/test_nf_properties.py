"""Property tests: render -> parse gives the same ruleset; garbage only ever raises the parse
error."""

from __future__ import annotations

import contextlib

from hypothesis import given, settings
from hypothesis import strategies as st

from meshlab.errors import MeshlabError
from meshlab.netfilter import parse_rule, parse_ruleset

octet = st.integers(0, 255)
cidr = st.builds(lambda a, b, c, d, p: f"{a}.{b}.{c}.{d}/{p}", octet, octet, octet, octet,
                 st.integers(1, 32))  # /0 is no address (or refused, negated)
port = st.integers(0, 65535)
neg = st.sampled_from(["", "! "])
ident = st.integers(0, 70000)


@st.composite
def rule_text(draw, chains=("A", "B")) -> str:
    parts = []
    if draw(st.booleans()):
        parts.append(f"{draw(neg)}-s {draw(cidr)}")
    if draw(st.booleans()):
        parts.append(f"{draw(neg)}-d {draw(cidr)}")
    if draw(st.booleans()):
        parts.append(f"{draw(neg)}-o {draw(st.sampled_from(['lo', 'eth0', 'eth+']))}")
    proto = draw(st.sampled_from([None, "tcp", "udp"]))
    modules = []
    if proto:
        parts.append(f"-p {proto}")
        ports = []  # one -m tcp|udp for both (a bare --dport after -m multiport would be its
        if draw(st.booleans()):  # --dports, as iptables reads it)
            lo = draw(port)
            hi = draw(st.integers(lo, 65535))
            ports.append(f"{draw(neg)}--dport {lo}:{hi}")
        if draw(st.booleans()):
            ports.append(f"{draw(neg)}--sport {draw(port)}")
        if ports:
            modules.append(" ".join([f"-m {proto}", *ports]))
        if draw(st.booleans()):
            ports = draw(st.lists(port, min_size=1, max_size=15))
            modules.append(f"-m multiport {draw(neg)}--dports {','.join(map(str, ports))}")
    if draw(st.booleans()):
        modules.append(f"-m owner {draw(neg)}--uid-owner {draw(ident)}")
    if draw(st.booleans()):
        modules.append(f"-m mark {draw(neg)}--mark {draw(st.integers(0, 2**32 - 1))}/"
                       f"{draw(st.integers(0, 2**32 - 1))}")
    if draw(st.booleans()):
        modules.append(f"-m conntrack {draw(neg)}--ctstate "
                       + ",".join(draw(st.sets(st.sampled_from(
                           ["NEW", "ESTABLISHED", "RELATED", "INVALID"]), min_size=1))))
    if draw(st.booleans()):
        text = draw(st.text(st.characters(codec="ascii", exclude_characters="\n\r\x00'"),
                            max_size=20))
        modules.append('-m comment --comment "' + text.replace("\\", "\\\\").replace(
            '"', '\\"') + '"')
    modules = draw(st.permutations(modules))
    target = draw(st.sampled_from(
        ["-j ACCEPT", "-j RETURN", "-j DROP", "-j MARK --set-mark 0x539", "-j LOG",
         "-j CONNMARK --save-mark", *(f"-j {c}" for c in chains)]))
    return " ".join([*parts, *modules, target])


@st.composite
def ruleset_text(draw) -> str:
    lines = ["*mangle", ":A - [0:0]", ":B - [0:0]", ":C - [0:0]"]
    for chain, allowed in (("OUTPUT", ("A", "B")), ("A", ("B", "C")), ("B", ("C",)),
                           ("C", ())):
        for _ in range(draw(st.integers(0, 4))):
            lines.append(f"-A {chain} {draw(rule_text(allowed))}")
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


@settings(max_examples=150, deadline=None)
@given(ruleset_text())
def test_render_then_parse_returns_the_same_ruleset(text):
    ruleset = parse_ruleset(text)
    assert parse_ruleset(ruleset.render_save()) == ruleset
    assert parse_ruleset(ruleset.render_restore()) == ruleset
    assert parse_ruleset(ruleset.render_save()).render_save() == ruleset.render_save()


@settings(max_examples=200, deadline=None)
@given(rule_text(chains=()))
def test_a_rule_text_is_canonical(text):
    rule = parse_rule(text)
    assert parse_rule(rule.text) == rule


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_only_raise_the_parse_error(data):
    text = data.decode("utf-8", errors="replace")
    with contextlib.suppress(MeshlabError):
        parse_ruleset(text)


TOKENS = ["*nat", "*mangle", "COMMIT", ":X - [0:0]", ":OUTPUT DROP [1:2]", "-A", "-I", "-N",
          "OUTPUT", "X", "-p", "tcp", "--dport", "80", "-j", "RETURN", "X", "-m", "owner",
          "--uid-owner", "!", "-d", "10.0.0.0/8", "REDIRECT", "--to-ports", "\n", "\n", '"',
          "iptables", "-t", "nat", "[1:2]", "-c", "1"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=40))
def test_random_token_soup_only_raises_the_parse_error(tokens):
    with contextlib.suppress(MeshlabError):
        parse_ruleset(" ".join(tokens))
