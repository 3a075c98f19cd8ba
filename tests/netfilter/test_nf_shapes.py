"""Shape plans are only a shortcut: a line read through the plan of its shape (learnt from an
earlier line) must give exactly what the slow reader gives for it alone -- the same rule, or
the same error at the same line, column and word.

Each case below is a *teacher* line, which teaches the plan, and a *pupil* line of the same
shape (same words but the values). The two are read twice: as usual (the pupil through the
teacher's plan, found by the fast path's C twin where it is built, and by its Python
reference) and with plans switched off (every line the slow way); all must agree.
"""

from __future__ import annotations

import pytest

import meshlab.netfilter.parse as parse_module
from meshlab.netfilter import RulesParseError, memos, parse_ruleset, shapes
from meshlab.netfilter.memos import forget
from meshlab.netfilter.parse import _Doc, _parse_document

HEAD = ["*nat", ":X - [0:0]", ":Y - [0:0]"]

CASES = [
    # (teacher, pupil): pupil values that read fine
    ("-A OUTPUT -d 10.0.0.1/32 -p tcp -m tcp --dport 80 -j X",
     "-A OUTPUT -d 10.0.0.2/24 -p tcp -m tcp --dport 81 -j Y"),
    ('-A X -m comment --comment "a b" -j Y', '-A OUTPUT -m comment --comment "c" -j Y'),
    ("-A OUTPUT -p tcp -j DNAT --to-destination 10.1.1.1:8080",
     "-A OUTPUT -p tcp -j DNAT --to-destination 10.1.1.2:8081-8090"),
    ("-A OUTPUT -o lo -m owner --uid-owner 1337 -j RETURN",
     "-A OUTPUT -o eth0 -m owner --uid-owner 1000-1999 -j RETURN"),
    ("-A OUTPUT -m mark --mark 0x539 -j RETURN", "-A OUTPUT -m mark --mark 0x1/0xff -j RETURN"),
    # pupil values the plan cannot take: the slow reader reads a different rule, or words
    # the error
    ("-A OUTPUT -j X", "-A OUTPUT -j ACCEPT"),
    ("-A OUTPUT -j X", "-A OUTPUT -j NOPE"),
    ("-A X -j Y", "-A Y -j X"),
    ("-A OUTPUT -d 10.0.0.1/32 -p tcp -m tcp --dport 80 -j X",
     "-A OUTPUT -d 10.0.0.300/32 -p tcp -m tcp --dport 80 -j X"),
    ("-A OUTPUT -d 10.0.0.1/32 -p tcp -m tcp --dport 80 -j X",
     "-A OUTPUT -d 10.0.0.1/32 -p tcp -m tcp --dport 99999 -j X"),
    ("-A OUTPUT -d 10.0.0.1/32 -j RETURN", "-A OUTPUT -d fd00::1 -j RETURN"),
    ("-A OUTPUT -p tcp -j DNAT --to-destination 10.1.1.1:8080",
     "-A OUTPUT -p tcp -j DNAT --to-destination 10.1.1.1:x"),
    ("-A OUTPUT -p tcp -j DNAT --to-destination 10.1.1.1:8080",
     "-A OUTPUT -p tcp -j DNAT --to-destination [fd00::1]:8080"),
    ("-A OUTPUT -p tcp -j DNAT --to-destination 10.1.1.1",
     "-A OUTPUT -p tcp -j DNAT --to-destination 10.1.1.300"),
    ("-A OUTPUT -o lo -j RETURN", "-A OUTPUT -o eth0123456789012345 -j RETURN"),
    ("-A OUTPUT -m owner --uid-owner 1 -j RETURN", "-A PREROUTING -m owner --uid-owner 2 -j RETURN"),
    ("-A OUTPUT -o lo -j RETURN", "-A PREROUTING -o lo -j RETURN"),
    ("-A OUTPUT -p tcp -j REDIRECT --to-ports 15001",
     "-A INPUT -p tcp -j REDIRECT --to-ports 15001"),
    # values that iptables reads its own way, or that change what the rule holds
    ("-A OUTPUT -j DNAT --to-destination 10.1.1.1", "-A OUTPUT -j DNAT --to-destination 10.1.1.1:80"),
    ("-A OUTPUT -d 10.0.0.1/32 -j RETURN", "-A OUTPUT -d 10.0.0.1/0 -j RETURN"),
    ("-A OUTPUT ! -d 10.0.0.1/32 -j RETURN", "-A OUTPUT ! -d 10.0.0.1/0 -j RETURN"),
    ("-A PREROUTING -i eth0 -j RETURN", "-A PREROUTING -i + -j RETURN"),
    ("-A OUTPUT -o eth0 -j RETURN", "-A OUTPUT -o + -j RETURN"),
    ("-A OUTPUT -p tcp -m tcp --dport 80 -j X", "-A OUTPUT -p tcp -m tcp --dport 010 -j X"),
    ("-A OUTPUT -p udp -m udp --dport 80 -j X", "-A OUTPUT -p udp -m udp --dport 010 -j X"),
    ("-A OUTPUT -p udp -m udp --dport 80 -j X", "-A OUTPUT -p udp -m udp --dport 70000 -j X"),
    ("-A OUTPUT -d 10.0.0.1/32 -j RETURN", "-A OUTPUT -d 010.0.0.1/010 -j RETURN"),
    ("-A OUTPUT -j DROP", "-A OUTPUT -j DROP"),
]


def outcome(lines: list[str]) -> object:
    """What reading ``lines`` gives: the rules, or the error's details."""
    try:
        ruleset = parse_ruleset("\n".join([*HEAD, *lines, "COMMIT", ""]))
    except RulesParseError as error:
        return ("error", error.line, error.column, error.token, error.reason)
    return [(ref.chain, ref.index, ref.rule) for ref in ruleset.rules()]


@pytest.mark.parametrize("matcher", ["default", "python"])
@pytest.mark.parametrize(("teacher", "pupil"), CASES)
def test_a_line_read_through_its_shape_reads_as_the_slow_reader_reads_it(teacher, pupil,
                                                                         matcher, monkeypatch):
    if matcher == "python":  # the fast path's reference, where its C twin is built
        monkeypatch.setattr(parse_module, "match_line", shapes.match_python)
    through_plan = outcome([teacher, pupil])
    monkeypatch.setattr(shapes, "_PLANS_PER_HINT", 0)  # no plan is learnt: all read slowly
    assert through_plan == outcome([teacher, pupil])


@pytest.mark.parametrize(("teacher", "pupil"), CASES[:5])
def test_the_slow_reader_reads_only_the_teacher(teacher, pupil, monkeypatch):
    calls = []
    slow_reader = shapes.read_rule
    monkeypatch.setattr(shapes, "read_rule", lambda *args: calls.append(args) or slow_reader(*args))
    outcome([teacher, pupil])
    assert len(calls) == 1


def test_many_lines_of_one_shape_keep_their_order_and_values():
    lines = [f"-A OUTPUT -d 10.0.{i // 256}.{i % 256}/32 -p tcp -m tcp --dport {1000 + i} -j X"
             for i in range(300)]
    ruleset = parse_ruleset("\n".join([*HEAD, *lines, "COMMIT", ""]))
    rules = ruleset.tables["nat"].chains["OUTPUT"].rules
    assert [str(rule) for rule in rules] == [line[len("-A OUTPUT "):] for line in lines]


def test_an_error_found_by_a_load_time_check_names_a_line_read_through_a_plan():
    # the 3rd line is read through the plan of the 2nd; its place is kept as a line number
    # and made whole again for the error
    text = "\n".join([*HEAD, "-A OUTPUT -p tcp -j X", "-A OUTPUT -p udp -j Y",
                      "-A OUTPUT -p udp -j MISSING", "COMMIT", ""])
    with pytest.raises(RulesParseError) as caught:
        parse_ruleset(text)
    error = caught.value
    assert (error.line, error.column, error.token) == (6, 21, "MISSING")
    assert "does not exist" in error.reason


def test_a_plan_writes_a_reader_a_person_can_read():
    doc = _Doc(None)
    _parse_document("\n".join([*HEAD, "-A OUTPUT -d 10.0.0.1/32 -p tcp -m tcp --dport 80 -j X",
                               "COMMIT", ""]), doc)
    (plan,), = [plans for plans in doc.plans.by_hint.values()]
    assert plan.source.startswith("def read(values, family):\n    w3, w9, w11 = values\n")
    assert "dst = ADDRESSES_0.get(w3) or new_addr_match(False, w3, 3)" in plan.source
    assert "return new(Rule, (target, None, dst, None, None, PROTO, (module_0,)))" in plan.source


def test_a_shape_met_again_in_another_document_reuses_its_compiled_reader():
    text = "\n".join([*HEAD, "-A OUTPUT -d 10.0.0.1/32 -p tcp -m tcp --dport 80 -j X",
                      "COMMIT", ""])
    first, second = _Doc(None), _Doc(None)
    _parse_document(text, first)
    _parse_document(text.replace("10.0.0.1", "10.9.9.9"), second)
    (a,), = first.plans.by_hint.values()
    (b,), = second.plans.by_hint.values()
    assert a is not b and a.read is not b.read  # each document has its own plans ...
    assert a.read.__code__ is b.read.__code__  # ... but the shape is compiled once
    forget()
    third = _Doc(None)
    _parse_document(text, third)
    (c,), = third.plans.by_hint.values()
    assert c.read.__code__ is not a.read.__code__  # as in a new process


def test_a_memo_past_its_own_limit_is_emptied_before_the_next_document():
    small = memos.memo_for(("test memo",), limit=2)
    small.update(a=1, b=2)
    memos.trim_memos()
    assert len(small) == 2  # at the limit: kept
    small["c"] = 3
    memos.trim_memos()
    assert small == {}


def test_forgetting_the_memos_changes_nothing_but_time():
    text = "\n".join([*HEAD, *(f"-A X -s 10.1.0.{i}/32 -j Y" for i in range(50)), "COMMIT", ""])
    before = parse_ruleset(text)
    forget()
    assert parse_ruleset(text) == before


def test_a_plan_learnt_in_filter_does_not_let_drop_into_nat():
    text = "*filter\n-A OUTPUT -j DROP\nCOMMIT\n*nat\n-A OUTPUT -j DROP\nCOMMIT\n"
    with pytest.raises(RulesParseError) as caught:
        parse_ruleset(text)
    assert (caught.value.line, caught.value.token) == (5, "DROP")
    assert "nat table is not for filtering" in caught.value.reason
