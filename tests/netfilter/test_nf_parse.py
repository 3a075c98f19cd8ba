"""Reading the three forms, the kernel's spellings, rendering back, and bad input."""

from __future__ import annotations

import pytest
from nf_istio_fixtures import ISTIO_RESTORE, ISTIO_SAVE
from nf_kernel_spellings import RESTORE, SAVED, rule_lines

from meshlab.errors import MeshlabError
from meshlab.netfilter import RulesParseError, parse_rule, parse_ruleset


def test_restore_and_save_forms_compare_equal():
    assert parse_ruleset(ISTIO_RESTORE) == parse_ruleset(ISTIO_SAVE)


def test_render_save_is_what_the_kernel_prints():
    rendered = parse_ruleset(ISTIO_RESTORE).render_save()
    body = [ln for ln in ISTIO_SAVE.splitlines() if not ln.startswith(("#", ":"))]
    assert [ln for ln in rendered.splitlines() if not ln.startswith(("#", ":"))] == body
    assert ":ISTIO_INBOUND - [0:0]\n:ISTIO_IN_REDIRECT - [0:0]" in rendered


def test_kernel_spellings_render_exactly_as_iptables_save():
    ruleset = parse_ruleset(RESTORE)
    lines = rule_lines(ruleset.render_save())
    for table, expected in SAVED.items():
        assert lines[table] == expected.splitlines(), table


def test_kernel_spellings_parse_back_to_the_same_rules():
    saved = "".join(f"*{t}\n{body}\nCOMMIT\n" for t, body in SAVED.items())
    saved = saved.replace("*mangle\n", "*mangle\n:ISTIO_DIVERT - [0:0]\n:ISTIO_INBOUND - [0:0]\n"
                          ":ISTIO_TPROXY - [0:0]\n").replace(
        "*raw\n", "*raw\n:ISTIO_OUTPUT_DNS - [0:0]\n").replace(
        "*nat\n", "*nat\n:ISTIO_OUTPUT - [0:0]\n").replace("*filter\n", "*filter\n:INPUT DROP -\n")
    assert parse_ruleset(saved.replace(":INPUT DROP -", ":INPUT DROP [0:0]")) == parse_ruleset(
        RESTORE)


def test_render_restore_round_trips():
    ruleset = parse_ruleset(RESTORE)
    assert parse_ruleset(ruleset.render_restore()) == ruleset
    assert parse_ruleset(ruleset.render_save()) == ruleset


@pytest.mark.parametrize(("given", "canonical"), [
    ("-p tcp --dport 15008 -j RETURN", "-p tcp -m tcp --dport 15008 -j RETURN"),
    ("-p 6 --destination-port 80:90 -j ACCEPT", "-p tcp -m tcp --dport 80:90 -j ACCEPT"),
    ("-p tcp --dport 80 --sport 5 -m tcp -j ACCEPT", "-p tcp -m tcp --sport 5 --dport 80 -j ACCEPT"),
    ("-m owner --uid-owner 1 -p tcp --dport 80 -j ACCEPT",
     "-p tcp -m owner --uid-owner 1 -m tcp --dport 80 -j ACCEPT"),
    ("-j MARK --set-mark 0x10/0xff", "-j MARK --set-xmark 0x10/0xff"),
    ("-j MARK --or-mark 4", "-j MARK --set-xmark 0x4/0x4"),
    ("-j MARK --and-mark 0xfffffffe", "-j MARK --set-xmark 0x0/0x1"),
    ("-j CONNMARK --save-mark --mask 0xff",
     "-j CONNMARK --save-mark --nfmask 0xff --ctmask 0xff"),
    ("-o eth+ -s ::1 -j ACCEPT", "-s ::1/128 -o eth+ -j ACCEPT"),
    ("-j LOG --log-level debug --log-prefix \"a \\\"b\"", '-j LOG --log-prefix "a \\"b" --log-level 7'),
    ("-j CT --notrack", "-j CT --notrack"),
    ("-p all -j ACCEPT", "-j ACCEPT"),
])
def test_rules_take_the_kernels_canonical_form(given, canonical):
    assert parse_rule(given).text == canonical
    assert parse_rule(canonical) == parse_rule(given)


def test_insert_with_position_and_command_lines():
    text = """\
iptables -t nat -N ISTIO_OUTPUT
iptables -t nat -A OUTPUT -j ISTIO_OUTPUT
iptables -t nat -A ISTIO_OUTPUT -j RETURN
iptables -t nat -I ISTIO_OUTPUT 1 -p tcp -j REDIRECT --to-ports 15001
iptables -t nat -I ISTIO_OUTPUT -p udp -j RETURN
iptables -t filter -P INPUT DROP
"""
    ruleset = parse_ruleset(text)
    texts = [r.rule.text for r in ruleset.rules() if r.chain == "ISTIO_OUTPUT"]
    assert texts == ["-p udp -j RETURN", "-p tcp -j REDIRECT --to-ports 15001", "-j RETURN"]
    assert ruleset.chain("filter", "INPUT").policy == "DROP"


def test_ip6tables_command_sets_the_family():
    ruleset = parse_ruleset("ip6tables -t nat -A OUTPUT -d ::1/128 -j RETURN\n")
    assert ruleset.family == "ipv6"


def test_counters_are_read_from_prefixes_and_dash_c():
    text = ("*nat\n:PREROUTING ACCEPT [7:420]\n[3:180] -A OUTPUT -j RETURN\n"
            "-A OUTPUT -c 5 300 -j ACCEPT\nCOMMIT\n")
    ruleset = parse_ruleset(text)
    assert ruleset.counters[("nat", "OUTPUT", 1)] == (3, 180)
    assert ruleset.counters[("nat", "OUTPUT", 2)] == (5, 300)
    assert ruleset.counters[("nat", "PREROUTING", 0)] == (7, 420)
    assert "[3:180] -A OUTPUT -j RETURN" in ruleset.render_save(ruleset.counters)


def test_equality_sees_policy_rule_and_order_differences():
    base = parse_ruleset(ISTIO_SAVE)
    assert base != parse_ruleset(ISTIO_SAVE.replace(":INPUT ACCEPT", ":INPUT DROP"))
    assert base != parse_ruleset(ISTIO_SAVE.replace("--dport 15021", "--dport 15022"))
    assert base != base.without("nat", "ISTIO_OUTPUT", 1)
    # an empty untouched table is the same as no table
    assert base == parse_ruleset(ISTIO_SAVE + "*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n")


def test_without_rule_needs_a_match():
    with pytest.raises(MeshlabError, match="no rule equal"):
        parse_ruleset(ISTIO_SAVE).without_rule(parse_rule("-p tcp --dport 1 -j RETURN"))
    with pytest.raises(MeshlabError, match="out of range"):
        parse_ruleset(ISTIO_SAVE).without("nat", "OUTPUT", 9)


BAD = [
    # (name, text, line, column, token, words in the message)
    ("unknown option", "*nat\n-A OUTPUT -p tcp --frob 1 -j RETURN\nCOMMIT\n", 2, 18, "--frob",
     "unknown option"),
    ("unknown module", "*nat\n-A OUTPUT -m statistic --mode random -j RETURN\nCOMMIT\n", 2, 14,
     "statistic", "unknown match module"),
    ("truncated", "*nat\n-A OUTPUT -p tcp --dport", 2, 25, "", "needs a value"),
    ("missing COMMIT", "*nat\n-A OUTPUT -j RETURN\n", 2, 20, "", "no COMMIT"),
    ("section not committed", "*nat\n-A OUTPUT -j RETURN\n*filter\nCOMMIT\n", 3, 1, "*filter",
     "was committed"),
    ("jump to nothing", "*nat\n:ISTIO_OUTPUT - [0:0]\n-A OUTPUT -j ISTIO_OUTPT\nCOMMIT\n", 3, 14,
     "ISTIO_OUTPT", "does not exist"),
    ("rule outside a table", "-A OUTPUT -j RETURN\n", 1, 1, "-A", "outside any table"),
    ("unknown table", "*natt\nCOMMIT\n", 1, 1, "*natt", "unknown table"),
    ("undeclared chain", "*nat\n-A ISTIO_OUTPUT -j RETURN\nCOMMIT\n", 2, 4, "ISTIO_OUTPUT",
     "does not exist"),
    ("bad CIDR", "*nat\n-A OUTPUT -d 10.0.0.0/33 -j RETURN\nCOMMIT\n", 2, 14, "10.0.0.0/33",
     "bad address"),
    ("bad port", "*nat\n-A OUTPUT -p tcp --dport 99999 -j RETURN\nCOMMIT\n", 2, 26, "99999",
     "bad port"),
    ("chain loop", "*nat\n:A - [0:0]\n:B - [0:0]\n-A OUTPUT -j A\n-A A -j B\n-A B -j A\nCOMMIT\n",
     6, 9, "A", "chain loop: A -> B -> A"),
    ("owner in PREROUTING", "*nat\n-A PREROUTING -m owner --uid-owner 1337 -j RETURN\nCOMMIT\n",
     2, 15, "-m", "only locally generated packets have an owner"),
    ("owner reached from PREROUTING",
     "*nat\n:X - [0:0]\n-A PREROUTING -j X\n-A X -m owner --uid-owner 1 -j RETURN\nCOMMIT\n",
     4, 6, "-m", "reached from PREROUTING"),
    ("-i in OUTPUT", "*nat\n-A OUTPUT -i eth0 -j RETURN\nCOMMIT\n", 2, 11, "-i", "cannot use -i"),
    ("REDIRECT in filter", "*filter\n-A OUTPUT -p tcp -j REDIRECT\nCOMMIT\n", 2, 21, "REDIRECT",
     "only valid in the nat table"),
    ("DNAT in INPUT", "*nat\n-A INPUT -j DNAT --to-destination 1.2.3.4\nCOMMIT\n", 2, 13, "DNAT",
     "only valid in PREROUTING and OUTPUT"),
    ("unterminated quote", '*nat\n-A OUTPUT -m comment --comment "abc -j RETURN\nCOMMIT\n', 2, 32,
     '"abc', "unterminated"),
    ("command line", "iptables -t nat -A OUTPUT -p tcp --dport x -j RETURN\n", 1, 42, "x",
     "bad port"),
    ("a load-time check on a command line", "iptables -t nat -A PREROUTING -m owner "
     "--uid-owner 1 -j RETURN\n", 1, 31, "-m", "only locally generated packets"),
    ("a jump to nothing on a command line", "iptables -A OUTPUT -t nat -j NOPE\n", 1, 30,
     "NOPE", "does not exist"),
    ("option before its module", "*nat\n-A OUTPUT --uid-owner 1 -j RETURN\nCOMMIT\n", 2, 11,
     "--uid-owner", "unknown option"),
    ("--dport without -p", "*nat\n-A OUTPUT --dport 80 -j RETURN\nCOMMIT\n", 2, 11, "--dport",
     "unknown option"),
    ("no target", "*nat\n-A OUTPUT -p tcp\nCOMMIT\n", 2, 17, "", "no target"),
    ("mixed families", "*nat\n-A OUTPUT -d ::1 -j RETURN\n-A OUTPUT -d 1.2.3.4 -j RETURN\n"
     "COMMIT\n", 3, 14, "1.2.3.4", "address in ipv6"),
    ("DNAT to an IPv6 address in IPv4 rules",
     "*nat\n-A OUTPUT -d 10.0.0.1 -j DNAT --to-destination [fd00::1]:80\nCOMMIT\n", 2, 48,
     "[fd00::1]:80", "fd00::1 is an ipv6 address in ipv4 rules"),
    ("DNAT to an IPv4 address in IPv6 rules",
     "*nat\n-A OUTPUT -d fd00::2 -j DNAT --to-destination 10.0.0.1:80\nCOMMIT\n", 2, 47,
     "10.0.0.1:80", "10.0.0.1 is an ipv4 address in ipv6 rules"),
    ("a DNAT address sets the family", "*nat\n-A OUTPUT -j DNAT --to-destination fd00::1\n"
     "-A OUTPUT -d 10.0.0.1 -j RETURN\nCOMMIT\n", 3, 14, "10.0.0.1", "address in ipv6 rules"),
    ("TPROXY --on-ip of the other family", "*mangle\n-A PREROUTING -d 10.0.0.1 -p tcp -j TPROXY "
     "--on-port 15006 --on-ip ::1\nCOMMIT\n", 2, 68, "::1", "::1 is an ipv6 address in ipv4"),
    ("-I out of range", "*nat\n-I OUTPUT 3 -j RETURN\nCOMMIT\n", 2, 11, "3", "cannot insert"),
    ("built-in chain with a bad policy", "*nat\n:INPUT RETURN [0:0]\nCOMMIT\n", 2, 8, "RETURN",
     "needs policy ACCEPT or DROP"),
]


@pytest.mark.parametrize(("text", "line", "column", "token", "words"),
                         [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_names_line_column_token_and_fix(text, line, column, token, words):
    with pytest.raises(RulesParseError) as caught:
        parse_ruleset(text)
    error = caught.value
    assert (error.line, error.column, error.token) == (line, column, token)
    assert words in str(error)
    assert "fix:" in str(error)
    assert isinstance(error, MeshlabError)


def test_parse_rule_reports_column_of_the_bad_token():
    with pytest.raises(RulesParseError) as caught:
        parse_rule("-p tcp --dport 80 -j REDIRECT --to-port x")
    assert (caught.value.line, caught.value.column, caught.value.token) == (1, 41, "x")


@pytest.mark.parametrize("text, option", [
    ("-p tcp -p udp -j RETURN", "-p"),
    ("-i eth0 -i eth1 -j RETURN", "-i"),
    ("-o lo -o eth0 -j RETURN", "-o"),
])
def test_an_option_iptables_takes_once_is_refused_twice(text: str, option: str) -> None:
    """iptables refuses a second -p/-i/-o ("multiple -p flags not allowed"); never keep the last."""
    with pytest.raises(RulesParseError) as caught:
        parse_rule(text)
    assert f"{option} given twice" in str(caught.value)


def test_tproxy_without_on_ip_listens_on_its_familys_any_address_whatever_the_rule_order():
    """ip6tables-save prints a TPROXY rule without --on-ip as --on-ip ::, even when that rule
    comes before anything that says the rules are IPv6."""
    tproxy = "-A PREROUTING -p tcp -j TPROXY --on-port 15006"
    v6 = "-A PREROUTING -s fd00::1 -j RETURN"
    first, last = (parse_ruleset(f"*mangle\n{a}\n{b}\nCOMMIT\n") for a, b in ((tproxy, v6),
                                                                            (v6, tproxy)))
    assert first.family == last.family == "ipv6"
    for ruleset in (first, last):
        assert "--on-ip :: " in ruleset.render_save()
    assert first.chain("mangle", "PREROUTING").rules[0] == last.chain("mangle",
                                                                      "PREROUTING").rules[1]


def test_an_address_given_to_dnat_or_tproxy_decides_the_family():
    assert parse_ruleset("*nat\n-A OUTPUT -j DNAT --to-destination fd00::1\nCOMMIT\n"
                         ).family == "ipv6"
    assert parse_ruleset("*mangle\n-A PREROUTING -p tcp -j TPROXY --on-port 1 --on-ip ::1\n"
                         "COMMIT\n").family == "ipv6"
    assert parse_ruleset("*mangle\n-A PREROUTING -p tcp -j TPROXY --on-port 1\nCOMMIT\n"
                         ).family == "ipv4"


def test_headers_and_sections_as_iptables_restore_reads_them():
    """A user chain's policy word is ignored, a header for a chain that exists empties it,
    a built-in chain's "-" keeps its policy, and a table met again starts empty."""
    ruleset = parse_ruleset("*filter\n:INPUT DROP [0:0]\n:X ACCEPT [0:0]\n-A X -j ACCEPT\n"
                            ":X - [0:0]\n:INPUT - [0:0]\n-A INPUT -j X\nCOMMIT\n")
    assert ruleset.chain("filter", "X").rules == ()
    assert ruleset.chain("filter", "INPUT").policy == "DROP"
    assert ruleset.chain("filter", "X").policy is None
    again = parse_ruleset("*filter\n:X - [0:0]\n-A INPUT -j DROP\nCOMMIT\n"
                          "*filter\n-A INPUT -j ACCEPT\nCOMMIT\n")
    assert [str(r.rule) for r in again.rules()] == ["-j ACCEPT"]
    assert again.chain("filter", "X") is None


def test_commands_iptables_takes_but_the_model_does_not_read_say_so():
    with pytest.raises(RulesParseError) as caught:
        parse_ruleset("*filter\n-A INPUT -j DROP\n-D INPUT 1\nCOMMIT\n")
    assert caught.value.model_limit
    assert "-D is an iptables command this model does not read" in caught.value.reason


def test_words_are_split_as_iptables_restore_splits_them_and_command_lines_as_a_shell():
    """In a restore document a single quote is an ordinary character and a closing double
    quote ends the word; a command line is read as a shell reads it."""
    from meshlab.netfilter.source import split

    assert split("-A X -m comment --comment 'a b' -j Y")[5:7] == ["'a", "b'"]
    assert split('-A X -m comment --comment a"b c"d -j Y')[5:7] == ["ab c", "d"]
    assert split('-A X -m comment --comment "a\\"b" -j Y')[5] == 'a"b'
    assert split("iptables -A X -m comment --comment 'a b' -j Y")[6] == "a b"
    with pytest.raises(RulesParseError) as caught:
        parse_ruleset("*filter\n-A INPUT -m comment --comment 'a b' -j DROP\nCOMMIT\n")
    assert (caught.value.line, caught.value.column, caught.value.token) == (2, 34, "b'")


@pytest.mark.parametrize("odd", ["\x1c", "\x1f", "\xa0", "\u2003"])
def test_only_blanks_separate_words_not_other_whitespace(odd):
    """str.split() also splits at the separator controls and Unicode spaces; iptables-restore
    keeps them in the word (checked against it in test_nf_agreement)."""
    from meshlab.netfilter.source import split

    assert split(f"-A X -m comment --comment a{odd}b -j Y")[5] == f"a{odd}b"
    assert split(f'-A X -m comment --comment "c" -j LOG --log-prefix a{odd}b')[9] == f"a{odd}b"
    assert split(f"iptables -A X -j LOG --log-prefix a{odd}b")[6] == f"a{odd}b"
    ruleset = parse_ruleset(f"*filter\n:A{odd}B - [0:0]\n-A INPUT -j A{odd}B\nCOMMIT\n")
    assert f"A{odd}B" in ruleset.tables["filter"].chains


NAT_HEAD = ["*nat", ":X - [0:0]", ":Y - [0:0]"]


def read_in_nat(*lines: str) -> list[str]:
    """The rules of a nat document made of ``lines`` (chains X and Y declared), as text."""
    ruleset = parse_ruleset("\n".join([*NAT_HEAD, *lines, "COMMIT", ""]))
    return [ref.rule.text for ref in ruleset.rules()]


@pytest.mark.parametrize(("line", "text"), [
    ("-A OUTPUT -d 10.0.0.2/24 -p tcp -m tcp --dport 81 -j Y",
     "-d 10.0.0.0/24 -p tcp -m tcp --dport 81 -j Y"),
    ('-A OUTPUT -m comment --comment "c" -j Y', "-m comment --comment c -j Y"),
    ("-A OUTPUT -p tcp -j DNAT --to-destination 10.1.1.2:8081-8090",
     "-p tcp -j DNAT --to-destination 10.1.1.2:8081-8090"),
    ("-A OUTPUT -p tcp -j DNAT --to-destination [fd00::1]:8080",
     "-p tcp -j DNAT --to-destination [fd00::1]:8080"),
    ("-A OUTPUT -o eth0 -m owner --uid-owner 1000-1999 -j RETURN",
     "-o eth0 -m owner --uid-owner 1000-1999 -j RETURN"),
    ("-A OUTPUT -m mark --mark 0x1/0xff -j RETURN", "-m mark --mark 0x1/0xff -j RETURN"),
    ("-A OUTPUT -j ACCEPT", "-j ACCEPT"),
    # what the kernel keeps of an option that matches everything: nothing
    ("-A OUTPUT -d 10.0.0.1/0 -j RETURN", "-j RETURN"),
    ("-A PREROUTING -i + -j RETURN", "-j RETURN"),
    ("-A OUTPUT -o + -j RETURN", "-j RETURN"),
    # numbers as iptables reads them: octal for -m tcp and addresses, decimal for -m udp
    ("-A OUTPUT -p tcp -m tcp --dport 010 -j X", "-p tcp -m tcp --dport 8 -j X"),
    ("-A OUTPUT -p udp -m udp --dport 010 -j X", "-p udp -m udp --dport 10 -j X"),
    ("-A OUTPUT -d 010.0.0.1/010 -j RETURN", "-d 8.0.0.0/8 -j RETURN"),
    # quotes as iptables-restore reads them: \" inside, and a quoted part ends the word
    ('-A X -m comment --comment "a\\"b" -j RETURN', '-m comment --comment "a\\"b" -j RETURN'),
    ('-A X -m comment --comment a"b c" -j RETURN', '-m comment --comment "ab c" -j RETURN'),
])
def test_values_read_as_iptables_reads_them(line, text):
    assert read_in_nat(line) == [text]


@pytest.mark.parametrize(("line", "column", "token", "words", "model_limit"), [
    ("-A OUTPUT -j NOPE", 14, "NOPE", "does not exist", False),
    ("-A OUTPUT -d 10.0.0.300/32 -j X", 14, "10.0.0.300/32", "not a numeric address", True),
    ("-A OUTPUT -p tcp -j DNAT --to-destination 10.1.1.1:x", 43, "10.1.1.1:x", "bad port 'x'",
     True),
    ("-A OUTPUT -p tcp -j DNAT --to-destination 10.1.1.300", 43, "10.1.1.300", "bad address",
     False),
    ("-A OUTPUT -j DNAT --to-destination 10.1.1.1:80", 14, "DNAT", "with a port needs -p", False),
    ("-A OUTPUT -o eth0123456789012345 -j RETURN", 14, "eth0123456789012345",
     "bad interface name", False),
    ("-A PREROUTING -o lo -j RETURN", 15, "-o", "cannot use -o in PREROUTING", False),
    ("-A INPUT -p tcp -j REDIRECT --to-ports 15001", 20, "REDIRECT",
     "only valid in PREROUTING and OUTPUT", False),
    ("-A OUTPUT ! -d 10.0.0.1/0 -j RETURN", 16, "10.0.0.1/0", "would never match", False),
    ("-A OUTPUT -p udp -m udp --dport 70000 -j X", 33, "70000", "past 65535", True),
    ("-A OUTPUT -j DROP", 14, "DROP", "nat table is not for filtering", False),
    ('-A X -m comment --comment "open -j RETURN', 27, '"open', "unterminated", False),
])
def test_values_iptables_refuses_are_refused_where_they_are(line, column, token, words,
                                                             model_limit):
    with pytest.raises(RulesParseError) as caught:
        read_in_nat(line)
    error = caught.value
    assert (error.line, error.column, error.token) == (4, column, token)
    assert words in error.reason
    assert error.model_limit == model_limit


def test_a_rule_reads_the_same_whatever_was_read_before_it():
    """Each line is read on its own: one that looks like the lines before it but for its
    values (a bad one, a jump to a built-in target, another family) reads as it would alone."""
    first = "-A OUTPUT -d 10.0.0.1/32 -p tcp -m tcp --dport 80 -j X"
    assert read_in_nat(first, "-A OUTPUT -d 10.0.0.2/32 -p tcp -m tcp --dport 80 -j ACCEPT")[1] \
        == "-d 10.0.0.2/32 -p tcp -m tcp --dport 80 -j ACCEPT"
    with pytest.raises(RulesParseError) as caught:
        read_in_nat(first, "-A OUTPUT -d fd00::1 -p tcp -m tcp --dport 80 -j X")
    assert (caught.value.line, caught.value.token) == (5, "fd00::1")
    assert "address in ipv4 rules" in caught.value.reason


def test_many_rules_of_one_shape_keep_their_order_and_values():
    lines = [f"-A OUTPUT -d 10.0.{i // 256}.{i % 256}/32 -p tcp -m tcp --dport {1000 + i} -j X"
             for i in range(300)]
    assert read_in_nat(*lines) == [line[len("-A OUTPUT "):] for line in lines]


def test_an_error_found_by_a_load_time_check_names_the_line_column_and_word():
    with pytest.raises(RulesParseError) as caught:
        read_in_nat("-A OUTPUT -p tcp -j X", "-A OUTPUT -p udp -j Y", "-A OUTPUT -p udp -j MISSING")
    error = caught.value
    assert (error.line, error.column, error.token) == (6, 21, "MISSING")
    assert "does not exist" in error.reason


def test_drop_in_filter_does_not_let_drop_into_nat():
    text = "*filter\n-A OUTPUT -j DROP\nCOMMIT\n*nat\n-A OUTPUT -j DROP\nCOMMIT\n"
    with pytest.raises(RulesParseError) as caught:
        parse_ruleset(text)
    assert (caught.value.line, caught.value.token) == (5, "DROP")
    assert "nat table is not for filtering" in caught.value.reason


def test_chain_headers_as_iptables_restore_splits_them():
    """A blank after the colon is skipped, a control character other than a blank belongs to
    the name, a user chain's policy word is ignored, and a name may not start with '-'."""
    ruleset = parse_ruleset("*nat\n: Y - [0:0]\n:Z\x1c - [0:0]\n:X ACCEPT [0:0]\nCOMMIT\n")
    assert {"Y", "Z\x1c", "X"} <= set(ruleset.tables["nat"].chains)
    assert ruleset.chain("nat", "X").policy is None
    with pytest.raises(RulesParseError) as caught:
        parse_ruleset("*nat\n:-Q - [0:0]\nCOMMIT\n")
    assert (caught.value.line, caught.value.column, caught.value.token) == (2, 1, ":-Q")
    assert "bad chain name" in caught.value.reason


def test_the_benchmark_dumps_read_back_from_their_own_rendering():
    from benchmarks.bench_netfilter import flat_dump, kube_dump

    for text in (flat_dump(300)[0], kube_dump(100)[0]):
        ruleset = parse_ruleset(text)
        assert sum(1 for _ in ruleset.rules()) == text.count("\n-A ")
        assert parse_ruleset(ruleset.render_save()) == ruleset


def test_without_rule_takes_a_rule_and_says_how_to_read_one():
    ruleset = parse_ruleset(ISTIO_SAVE)
    with pytest.raises(TypeError, match="parse_rule_spec"):
        ruleset.without_rule("-p tcp --dport 15008 -j RETURN")
    kept = ruleset.without_rule(parse_rule("-p tcp -m tcp --dport 15008 -j RETURN"))
    assert len(list(kept.rules())) < len(list(ruleset.rules()))
