"""The parser against ``iptables-restore`` itself: does it take what iptables takes, refuse
what iptables refuses, and read what it takes the way iptables does?

Each document is loaded into a throwaway namespace (never the host's) with
``iptables-restore`` (or ``ip6tables-restore``), and read by the model:

* iptables refuses it -> the model refuses it too;
* iptables takes it -> the model takes it (or refuses it with an error that says it is a
  limit of this model, ``model_limit``: a host, service or user name to look up, a
  non-contiguous netmask), and then the kernel's own ``iptables-save`` reads back as the same
  ruleset, printed word for word as the model prints it.

First a list of cases, each a way iptables reads rules that a parser can easily get wrong
(``010`` is octal, ``any/0`` is everything, ``-m tcp`` may come before ``-p tcp``, a loop no
hook reaches is no error, ...), then documents made at random from a seed.
"""

from __future__ import annotations

import random

import pytest
from live_tools import run
from nf_kernel_spellings import rule_lines

from meshlab.netfilter import RulesParseError, parse_ruleset

pytestmark = pytest.mark.live

EMPTY_TABLES = "*filter\nCOMMIT\n*nat\nCOMMIT\n*mangle\nCOMMIT\n*raw\nCOMMIT\n"

CASES = [
    # (family, table, rules): numbers and addresses as C reads them
    ("ipv4", "filter", "-A INPUT -s 010.0.0.1 -d 0x0a.0.0.1/0x18 -j DROP"),
    ("ipv4", "filter", "-A INPUT -s 10.0.0.1/010 -p tcp --dport 010 -j DROP"),
    ("ipv4", "filter", "-A INPUT -s 10.0.0.1/255.255.255.0 -p tcp --sport +80 -j DROP"),
    ("ipv4", "filter", "-A INPUT -s 10.0.0.1/255.0.255.0 -j DROP"),  # model limit
    ("ipv4", "filter", "-A INPUT -s 010.0.0.08 -j DROP"),
    ("ipv4", "filter", "-A INPUT -s 1.2.3.4.5/0 -d any/0 -j DROP"),
    ("ipv4", "filter", "-A INPUT ! -s 0.0.0.0/0 -j DROP"),
    ("ipv4", "filter", "-A INPUT -s 10.0.0.1/ -j DROP"),
    ("ipv6", "filter", "-A INPUT -s fd00::1/0x40 -d fd00::1/ffff:ffff:: -j DROP"),
    ("ipv6", "filter", "-A INPUT -s ::ffff:1.2.3.4 -j DROP"),
    ("ipv6", "filter", "-A INPUT -s fe80::1%eth0 -j DROP"),
    ("ipv6", "filter", "-A INPUT -s fd00::1/129 -j DROP"),
    ("ipv4", "mangle", "-A OUTPUT -m mark --mark 010 -j CONNMARK --set-mark 010/0x10"),
    ("ipv4", "mangle", "-A OUTPUT -m owner --uid-owner 0x10-020 ! --gid-owner +5 -j RETURN"),
    ("ipv4", "mangle", "-A OUTPUT -m owner --uid-owner 4294967295 -j RETURN"),
    ("ipv4", "mangle", "-A OUTPUT -p tcp -m multiport --dports 010,0x10 -j RETURN"),
    ("ipv4", "mangle", "-A PREROUTING -p tcp -j TPROXY --on-port 010 --tproxy-mark 0x1"),
    ("ipv4", "raw", "-A OUTPUT -j CT --zone 010"),
    # interfaces and names
    ("ipv4", "filter", "-A INPUT -i + -o a/b -j DROP"),
    ("ipv4", "filter", "-A INPUT -i abcdefghijklmnop -j DROP"),
    ("ipv4", "filter", "-A INPUT -p tcp --dport http -j DROP"),  # model limit
    ("ipv4", "filter", "-A INPUT -p tcp --dpo 80 -s 1.2.3.4,5.6.7.8 -j DROP"),  # model limit
    ("ipv4", "filter", "-A INPUT -p tcp --dport ! 80 -j DROP"),
    ("ipv4", "filter", "-A INPUT -p tcp ! ! --dport 80 -j DROP"),
    ("ipv4", "filter", "-A INPUT --protocol tcp --destination-port 80 --dst 1.2.3.4 -j DROP"),
    ("ipv4", "filter", "-A INPUT -m comment --comment a_b-9 -j LOG --log-prefix \"a'b\""),
    ("ipv4", "filter", "-A INPUT -m comment --comment 'a b' -j DROP"),
    ("ipv4", "filter", "-A INPUT -m comment --comment a\x1cb\xa0c\u2003d -j DROP"),  # not blanks
    ("ipv4", "filter", '-A INPUT -m comment --comment "x" -j LOG --log-prefix a\x1fb'),
    ("ipv4", "filter", "-A INPUT -m comment --comment a\"b c\"d -j DROP"),
    ("ipv4", "filter", "-A INPUT -m comment --comment \"a\\\\b\\\"c\" -j DROP"),
    # protocols and the modules and targets that need them
    ("ipv4", "filter", "-A INPUT -m tcp --dport 80 -p tcp -j DROP"),
    ("ipv4", "filter", "-A INPUT --dport 80 -p tcp -j DROP"),
    ("ipv4", "filter", "-A INPUT ! -p tcp --dport 80 -j DROP"),
    ("ipv4", "filter", "-A INPUT ! -p udp -m udp --sport 53 -j DROP"),
    ("ipv4", "filter", "-A INPUT -p tcp -m udp --dport 80 -j DROP"),
    ("ipv4", "filter", "-A INPUT -m multiport --dports 80 -p tcp -j DROP"),
    ("ipv4", "filter", "-A INPUT ! -p tcp -m multiport --dports 80 -j DROP"),
    ("ipv4", "filter", "-A INPUT ! -p all -j DROP"),
    ("ipv4", "filter", "-A INPUT -p tcp -m multiport --dports 53 --dport 80 -j DROP"),
    ("ipv4", "filter", "-A INPUT -p tcp -m multiport --dport 80 -j DROP"),
    ("ipv4", "filter", "-A INPUT -p udp --sport 010 --dport 9:1 -j DROP"),  # model limit
    ("ipv4", "filter", "-A INPUT -p udp --dport 70000 -j DROP"),  # model limit
    ("ipv4", "nat", "-A OUTPUT -j REDIRECT --to-ports 15001"),
    ("ipv4", "nat", "-A OUTPUT ! -p tcp -j REDIRECT --to-ports 010"),
    ("ipv6", "nat", "-A OUTPUT -p icmp -j DNAT --to-destination [fd00::1]:80"),
    ("ipv4", "nat", "-A OUTPUT -j DNAT --to-destination 10.0.0.1:80"),
    ("ipv4", "nat", "-A OUTPUT -p tcp -j DNAT --to-destination 010.0.0.1:80"),
    ("ipv4", "nat", "-A OUTPUT -p tcp -j DNAT --to-destination 10.0.0.1:010"),
    ("ipv4", "nat", "-A OUTPUT -p tcp -j DNAT --to-destination 10.0.0.1-10.0.0.3"),
    ("ipv4", "mangle", "-A PREROUTING -p tcp -j TPROXY --on-port 1 --on-ip 010.0.0.1"),
    ("ipv4", "nat", "-A OUTPUT -p tcp -j DNAT --to-destination [fd00::1]:80"),
    ("ipv4", "nat", "-A U1 -j DROP"),
    ("ipv4", "mangle", "-A PREROUTING ! -p tcp -j TPROXY --on-port 1"),
    ("ipv4", "mangle", "-A PREROUTING -p icmp -j TPROXY --on-port 1"),
    # loops: refused only where a packet could go round
    ("ipv4", "filter", "-A U1 -j U2\n-A U2 -j U1"),
    ("ipv4", "filter", "-A INPUT -j U1\n-A U1 -j U2\n-A U2 -j U1"),
]


def _load(ns: str, family: str, text: str) -> str | None:
    """Load ``text`` into ``ns`` (all tables emptied first): the kernel's iptables-save
    afterwards, or None if iptables-restore refused it."""
    tool = "ip6tables" if family == "ipv6" else "iptables"
    run("ip", "netns", "exec", ns, f"{tool}-restore", stdin=EMPTY_TABLES)
    if run("ip", "netns", "exec", ns, f"{tool}-restore", stdin=text, check=False).returncode:
        return None
    return run("ip", "netns", "exec", ns, f"{tool}-save").stdout


def _agree(ns: str, family: str, text: str) -> None:
    saved = _load(ns, family, text)
    try:
        model = parse_ruleset(text, family=family)
    except RulesParseError as error:
        assert saved is None or error.model_limit, (
            f"iptables takes this, the model refuses it:\n{text}\n{error}")
        return
    assert saved is not None, f"iptables refuses this, the model takes it:\n{text}"
    assert parse_ruleset(saved, family=family) == model, f"read differently:\n{text}\n{saved}"
    kernel, mine = rule_lines(saved), rule_lines(model.render_save())
    for table, lines in mine.items():
        assert kernel.get(table, []) == lines, f"printed differently:\n{text}"


@pytest.mark.parametrize(("family", "table", "rules"), CASES)
def test_the_model_reads_what_iptables_reads(netns, family, table, rules):
    _agree(netns, family, f"*{table}\n:U1 - [0:0]\n:U2 - [0:0]\n{rules}\nCOMMIT\n")


DOCUMENTS = [
    # (family, document): headers, sections and commands as iptables-restore reads them
    ("ipv4", "*filter\n:X ACCEPT [0:0]\n-A X -j ACCEPT\n:X - [0:0]\n:INPUT - [0:0]\n"
             "-A INPUT -j X\nCOMMIT\n"),
    ("ipv4", "*filter\n:INPUT FOO [0:0]\nCOMMIT\n"),
    ("ipv4", "*filter\n:X - [0:0]\n-A INPUT -j DROP\nCOMMIT\n*filter\n-A INPUT -j X\nCOMMIT\n"),
    ("ipv4", "*filter\n-A INPUT -j DROP\nCOMMIT\n*filter\n-A INPUT -j ACCEPT\nCOMMIT\n"),
    ("ipv4", "*filter\n-N X\n-N X\nCOMMIT\n"),
    ("ipv4", "*filter\n-A INPUT -j DROP\n-I INPUT 2 -j ACCEPT\n-I INPUT -j RETURN\nCOMMIT\n"),
    ("ipv4", "*filter\n-I INPUT 0 -j DROP\nCOMMIT\n"),
    ("ipv4", "*filter\n-P INPUT DROP\n-A INPUT -j DROP\n-F INPUT\nCOMMIT\n"),  # model limit
    # separator controls and Unicode spaces are not blanks to iptables-restore
    ("ipv4", "*filter\n:A\x1cB - [0:0]\n:C\xa0- [0:0]\n-A INPUT -j A\x1cB\n-A INPUT -j C\xa0-\n"
             "COMMIT\n"),
    ("ipv4", "*filter\x1f\nCOMMIT\n"),
]


@pytest.mark.parametrize(("family", "document"), DOCUMENTS)
def test_the_model_reads_documents_as_iptables_restore_does(netns, family, document):
    _agree(netns, family, document)


@pytest.mark.parametrize("seed", range(4))
def test_random_documents_read_as_iptables_reads_them(netns, seed):
    rng = random.Random(seed)
    for _ in range(40):
        family = "ipv6" if rng.random() < 0.3 else "ipv4"
        _agree(netns, family, random_document(rng, family))


BUILTIN = {"filter": ("INPUT", "FORWARD", "OUTPUT"),
           "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
           "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"), "raw": ("PREROUTING", "OUTPUT")}


def random_document(rng: random.Random, family: str) -> str:
    """One table with up to two user chains and one to three rules, each put together from
    options drawn at random: mostly plausible, some wrong (a bad port, a rule in the wrong
    chain or table), so that both what iptables takes and what it refuses are tried."""
    table = rng.choice(list(BUILTIN))
    users = rng.sample(["U1", "U2"], rng.randint(0, 2))
    lines = [f"*{table}", *(f":{u} - [0:0]" for u in users)]
    for _ in range(rng.randint(1, 3)):
        lines.append(_random_rule(rng, family, rng.choice(BUILTIN[table] + tuple(users)), users))
    return "\n".join([*lines, "COMMIT", ""])


def _pick(rng: random.Random, good: list[str], odd: list[str]) -> str:
    return rng.choice(odd if rng.random() < 0.25 else good)


def _random_rule(rng: random.Random, family: str, chain: str, users: list[str]) -> str:
    v6 = family == "ipv6"
    words = []
    proto = None
    if rng.random() < 0.6:
        proto = rng.choice(["tcp", "udp", "all", "6", "17", "icmp"])
        words.append(("! " if rng.random() < 0.1 else "") + f"-p {proto}")
    for option in ("-s", "-d"):
        if rng.random() < 0.3:
            address = _pick(rng, ["fd00::1", "fd00::/64", "::1/128"] if v6 else
                            ["10.0.0.1", "10.0.0.0/8", "127.0.0.1/32"],
                            ["::/0", "fd00::1/0x40", "fd00::1/ffff::", "fd00::1/129"] if v6 else
                            ["010.0.0.1", "0.0.0.0/0", "10.0.0.1/010", "10.0.0.1/255.255.0.0",
                             "10.0.0.1/33", "10.0.0.256"])
            words.append(("! " if rng.random() < 0.15 else "") + f"{option} {address}")
    for option in ("-i", "-o"):
        if rng.random() < 0.15:
            words.append(("! " if rng.random() < 0.2 else "") + f"{option} "
                         + rng.choice(["lo", "eth0", "eth+", "+"]))
    if proto in ("tcp", "udp", "6", "17") and rng.random() < 0.5:
        words.append(rng.choice(["", "-m tcp ", "-m udp "]) + ("! " if rng.random() < 0.15 else "")
                     + rng.choice(["--dport ", "--sport "])
                     + _pick(rng, ["80", "15001", "1000:2000"], ["010", "0x50", "65536", "9:1"]))
    if proto and rng.random() < 0.15:
        words.append("-m multiport --dports " + _pick(rng, ["53,80", "1:10,20"], ["a,b", "010"]))
    if rng.random() < 0.15:
        words.append("-m owner " + ("! " if rng.random() < 0.3 else "")
                     + rng.choice(["--uid-owner ", "--gid-owner "])
                     + _pick(rng, ["1337", "0", "1000-2000"], ["010", "4294967295", "-1"]))
    if rng.random() < 0.1:
        words.append(rng.choice(["-m mark ", "-m connmark "]) + "--mark "
                     + _pick(rng, ["1337", "0x539", "0x10/0xff"], ["010", "4294967296"]))
    if rng.random() < 0.1:
        words.append("-m conntrack --ctstate " + _pick(
            rng, ["NEW", "RELATED,ESTABLISHED", "DNAT"], ["new", "BOGUS"]))
    if rng.random() < 0.1:
        words.append("-m comment --comment " + rng.choice(['"hello world"', "x", '"a.b"']))
    rng.shuffle(words)
    return " ".join([f"-A {chain}", *words, "-j", _random_target(rng, v6, users)])


def _random_target(rng: random.Random, v6: bool, users: list[str]) -> str:
    kind = rng.choice(["verdict", "verdict", "jump", "REDIRECT", "DNAT", "MARK", "CONNMARK",
                       "TPROXY", "CT", "LOG"])
    if kind == "jump" and users:
        return rng.choice(users)
    if kind == "REDIRECT":
        return "REDIRECT" + rng.choice(["", " --to-ports 15001", " --to-ports 15001-15002"])
    if kind == "DNAT":
        return "DNAT --to-destination " + rng.choice(
            ["[fd00::1]:80", "fd00::1"] if v6 else ["10.1.2.3", "10.1.2.3:80", "10.1.2.3:80-90"])
    if kind == "MARK":
        return "MARK " + rng.choice(["--set-mark 1337", "--set-xmark 0x53a/0xffffffff",
                                     "--or-mark 4", "--and-mark 7", "--set-mark 010"])
    if kind == "CONNMARK":
        return "CONNMARK " + rng.choice(["--save-mark", "--restore-mark", "--set-mark 5"])
    if kind == "TPROXY":
        return "TPROXY --on-port 15006" + rng.choice(
            ["", " --tproxy-mark 1337/0xffffffff", " --on-ip ::1" if v6 else " --on-ip 127.0.0.1"])
    if kind == "CT":
        return "CT " + rng.choice(["--zone 1", "--notrack", "--zone 70000"])
    if kind == "LOG":
        return "LOG" + rng.choice(["", ' --log-prefix "p: "', " --log-level 4"])
    return rng.choice(["ACCEPT", "DROP", "RETURN"])
