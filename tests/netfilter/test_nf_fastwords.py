"""The parser's fast path, :func:`meshlab.netfilter.shapes.match_line` and
:func:`meshlab.netfilter.source.chain_header`, and their C twins.

``match_python`` is the reference. The C function may leave a line to Python (None) where it
does not split simply, but whatever it does return must be exactly what ``match_python``
returns; and for the lines a dump is made of it must not leave them (else it is no fast path).
``chain_header`` and ``chain_header_python`` must agree on every line. Whole documents must
parse to the same rules, or the same errors, through either.
"""

from __future__ import annotations

import shutil
import sysconfig
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import meshlab.netfilter.parse as parse_module
from benchmarks.bench_netfilter import ISTIO_SAVE, flat_dump, kube_dump
from meshlab.netfilter import RulesParseError, parse_ruleset
from meshlab.netfilter.shapes import match_python
from meshlab.netfilter.source import chain_header_python, restore_split

try:
    from meshlab.netfilter._fastwords import chain_header as header_c
    from meshlab.netfilter._fastwords import match_line as match_c
except ImportError:
    header_c = match_c = None

needs_c = pytest.mark.skipif(match_c is None, reason="the C twin (meshlab.netfilter._fastwords) "
                             "is not built here: no C compiler or Python headers at install")


def test_the_c_twin_is_built_where_it_can_be():
    headers = Path(sysconfig.get_paths()["include"], "Python.h").exists()
    if not (shutil.which("cc") or shutil.which("gcc")) or not headers:
        pytest.skip("no C compiler or no Python.h: the parser runs in pure Python here")
    assert match_c is not None, "a C compiler is here, but _fastwords was not built: run " \
        "`pip install -e .` again and read why it failed"


class Plan:
    """What match_line needs of a plan: its literal words and how to pick the values."""

    def __init__(self, words: list[str], slots: set[int]) -> None:
        self.pattern = tuple(None if k == 1 or k in slots else w for k, w in enumerate(words))
        literal = [k for k in range(2, len(words)) if k not in slots]
        self.words = lambda toks: tuple(toks[k] for k in literal)
        self.literals = self.words(words)
        order = sorted(slots)
        self.values = lambda toks: tuple(toks[k] for k in order)


def table_of(*plans: Plan) -> dict:
    table: dict[int, list] = {}
    for plan in plans:
        table.setdefault(len(plan.pattern), []).append((plan.pattern, plan))
    return table


KUBE = '-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m comment --comment "ns/svc:http cluster IP" ' \
       '-m tcp --dport 80 -j KUBE-SVC-X'
KUBE_PLAN = Plan(restore_split(KUBE), {3, 9, 15})


@needs_c
@pytest.mark.parametrize("line", [
    KUBE,
    KUBE.replace("10.96.0.1/32", "10.96.7.7/32").replace("svc:http", "other svc"),
    KUBE.replace(" ", "\t"),
    KUBE.replace(" -p", "   -p") + "  ",
    KUBE.replace('"ns/svc:http cluster IP"', '""'),
    KUBE.replace('"ns/svc:http cluster IP"', "plain"),
    KUBE.replace('"ns/svc:http cluster IP"', "'single-quotes-are-ordinary'"),
])
def test_the_c_twin_takes_the_lines_a_dump_is_made_of(line):
    found = match_c(line, table_of(KUBE_PLAN))
    assert found is not None
    assert found == match_python(line, table_of(KUBE_PLAN))


@needs_c
@pytest.mark.parametrize("line", [
    KUBE.replace("cluster IP", 'cluster \\" IP'),  # an escape inside quotes
    KUBE.replace(" -j", ' "-j"x'),  # a closing quote inside a word
    KUBE.replace("KUBE-SVC-X", 'KUBE-"SVC" -X'),  # a quote inside a word
    KUBE.replace("tcp", "tc\x1cp", 1),  # a control character str.split() would split on
    KUBE.replace("cluster", "clüster"),  # not ASCII
    KUBE.replace('"ns/svc:http cluster IP"', '"open'),  # unterminated
    "-A X" + " -j Y" * 40,  # more words than the C twin splits
])
def test_the_c_twin_leaves_odd_lines_to_python(line):
    table = table_of(KUBE_PLAN, Plan(restore_split("-A X" + " -j Y" * 40), set()))
    assert match_c(line, table) is None


@needs_c
def test_the_c_twin_keeps_no_memory():
    table = table_of(KUBE_PLAN)
    lines = [KUBE, KUBE.replace("-j", "-g"), KUBE + " x", KUBE.replace("IP", 'I\\"P')]
    for line in lines * 100:  # hit, no plan, no such count, left to Python
        match_c(line, table)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for line in lines * 5000:
            match_c(line, table)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 10_000, f"{grown} bytes kept after 20,000 calls: a reference leaks"


@needs_c
def test_the_c_twin_checks_its_arguments():
    with pytest.raises(TypeError):
        match_c(b"-A X", {})
    with pytest.raises(TypeError):
        match_c("-A X -j Y", {4: [("not a pattern", None)]})
    with pytest.raises(TypeError):
        match_c("-A X -j Y", {4: [(("-A", None), None)]})  # a pattern of the wrong length


WORDS = ["-A", "X", "-j", "--comment", "a", "b c", "", "-d", "10.0.0.1/32", "Y", "tcp", "'q'"]
BLANKS = [" ", "  ", "\t", " \r ", "\v", "\f"]
SPOILERS = ['"', "\\", '\\"', "\x1c", "\x00", "\n", "é", '""', '"a b"', "x"]


@st.composite
def simple_case(draw):
    """A teacher line's words with some values (the plan), and a pupil line of words that
    split simply: printable ASCII, blanks between, a word with a blank (or none) in quotes."""
    words = ["-A", *draw(st.lists(st.sampled_from(WORDS), min_size=2, max_size=8))]
    slots = draw(st.sets(st.integers(2, len(words) - 1), max_size=3))
    plans = [Plan(words, slots)]
    if draw(st.booleans()):  # another plan with as many words, tried first or second
        other = Plan([*words[:2], *draw(st.lists(st.sampled_from(WORDS), min_size=len(words) - 2,
                                                 max_size=len(words) - 2))], set())
        plans.insert(draw(st.integers(0, 1)), other)
    pupil = [draw(st.sampled_from(WORDS)) if k in slots else w for k, w in enumerate(words)]
    written = [f'"{w}"' if not w or " " in w or draw(st.booleans()) else w for w in pupil]
    line = draw(st.sampled_from(["", *BLANKS]))
    for w in written:
        line += w + draw(st.sampled_from(BLANKS))
    return line, table_of(*plans)


@needs_c
@settings(max_examples=400, deadline=None)
@given(simple_case())
def test_on_lines_that_split_simply_the_twins_agree(case):
    line, table = case
    assert match_c(line, table) == match_python(line, table)


@needs_c
@settings(max_examples=400, deadline=None)
@given(simple_case(), st.sampled_from(SPOILERS), st.data())
def test_whatever_the_c_twin_returns_for_any_line_is_what_python_returns(case, spoiler, data):
    line, table = case
    at = data.draw(st.integers(0, len(line)))
    line = line[:at] + spoiler + line[at:]
    found = match_c(line, table)
    assert found is None or found == match_python(line, table)


@needs_c
@settings(max_examples=600, deadline=None)
@given(st.lists(st.sampled_from([":", "A", "-", "KUBE-SVC-1", " ", "\t", "\r", "\x1c", "\x00",
                                 "\x7f", "é", "[0:0]", '"']), max_size=8))
def test_the_twins_read_the_same_chain_headers(pieces):
    line = "".join(pieces)
    assert header_c(line) == chain_header_python(line)
    assert header_c(":" + line) == chain_header_python(":" + line)


@needs_c
def test_a_plain_header_is_read_at_once_and_any_other_left_to_the_header_reader():
    assert header_c(":KUBE-SVC-X - [0:0]") == "KUBE-SVC-X"
    assert header_c(":X\t-") == "X"
    for line in (":X ACCEPT [0:0]", ": X - [0:0]", ":X -x", ":X\x1c - [0:0]", ":é - [0:0]",
                 "*nat", ":X"):
        assert header_c(line) is None
    with pytest.raises(TypeError):
        header_c(b":X - [0:0]")


DOCUMENTS = [
    ISTIO_SAVE,
    flat_dump(300)[0],
    kube_dump(100)[0],
    "*nat\n:X - [0:0]\n" + "".join(f'-A X -m comment --comment "c {i}" -j RETURN\n'
                                   for i in range(5)) + "COMMIT\n",
    # the same shape with values the plan cannot take, or words that do not split simply
    "*nat\n:X - [0:0]\n-A X -s 10.0.0.1/32 -j RETURN\n-A X -s 10.0.0.300/32 -j RETURN\n"
    "COMMIT\n",
    "*nat\n:X - [0:0]\n-A X -s 10.0.0.1/32 -j RETURN\n-A X -s fd00::1/128 -j RETURN\nCOMMIT\n",
    '*filter\n:X - [0:0]\n-A X -m comment --comment "a" -j RETURN\n'
    '-A X -m comment --comment "a\\"b" -j RETURN\n-A X -m comment --comment a"b c" -j RETURN\n'
    '-A X -m comment --comment "open -j RETURN\nCOMMIT\n',
    "*nat\n:X - [0:0]\n-A X -j RETURN\n-A X -j DROP\nCOMMIT\n",
    "*nat\n:X - [0:0]\n-A X -j RETURN\n-A NOPE -j RETURN\nCOMMIT\n",
    "*nat\n:X - [0:0]\n: Y - [0:0]\n:Z\x1c - [0:0]\n:X ACCEPT [0:0]\n:-Q - [0:0]\nCOMMIT\n",
]


def outcome(text: str) -> object:
    try:
        return parse_ruleset(text)
    except RulesParseError as error:
        return (error.line, error.column, error.token, error.reason)


@pytest.mark.parametrize("text", DOCUMENTS, ids=range(len(DOCUMENTS)))
def test_a_document_reads_the_same_through_either(text, monkeypatch):
    through_default = outcome(text)  # the C twins where they are built
    monkeypatch.setattr(parse_module, "match_line", match_python)
    monkeypatch.setattr(parse_module, "chain_header", chain_header_python)
    assert outcome(text) == through_default
