"""Bad input to every ``meshlab`` sub-command: one clear message, exit status 2, no traceback.

The standard: a malformed dump, an unknown match, a bad flag, a bad CIDR or a broken pod YAML
gets a specific error that says what, where (line/column) and how to fix it. Nothing is lost,
nothing crashes deep inside, nothing hangs. Each case runs ``meshlab.cli.main.main`` in-process
(a few run the installed entry point end to end) and checks:

- the exit status is 2 (argparse's usage errors are 2 as well);
- standard error holds one ``meshlab ...: error:`` message and no Python traceback;
- the message contains the words that say what is wrong (and, where there is text, where).

``meshlab live`` is tested for its argument handling only: the lab is replaced by a stub that
fails the test if it is ever reached, so no namespace is created here.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshlab.cli import live as live_cli
from meshlab.cli.main import main
from meshlab.cli.trace import MAX_RULES_BYTES
from meshlab.errors import MeshlabError
from meshlab.netfilter.parse import parse_ruleset

REPO = Path(__file__).resolve().parents[2]
PODS = REPO / "data" / "pods"
POD = (PODS / "productpage-v1.yaml").read_text()


class _StdinBytes(io.TextIOWrapper):
    """A text stdin with a ``buffer`` of raw bytes, as a real pipe has."""


def _stdin(data: str | bytes) -> io.TextIOBase:
    raw = data if isinstance(data, bytes) else data.encode()
    return _StdinBytes(io.BytesIO(raw), encoding="utf-8")


def run(argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        stdin: str | bytes | None = None) -> tuple[int, str, str]:
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", _stdin(stdin))
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse
        code = exit_.code if isinstance(exit_.code, int) else 2
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error(code: int, err: str, *words: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err, err
    assert err.count("error:") == 1, err
    for word in words:
        assert word.lower() in err.lower(), (word, err)


@pytest.fixture(scope="module")
def save_text() -> str:
    """`meshlab rules --format save` output: the pod's default Istio rules."""
    from meshlab.istio.capture import default_rules

    return default_rules().render_save()


@pytest.fixture
def rules_file(tmp_path: Path, save_text: str):
    def make(content: str | bytes, name: str = "rules.txt") -> str:
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return str(path)
    return make


FROM_POD = ["trace", "--from-pod", "--pod-ip", "10.244.0.5", "--uid", "1000",
            "--dst", "10.244.0.9:8080", "--rules"]


# ------------------------------------------------------------------ trace: the rules file

def _cut(text: str, marker: str, extra: int = 0) -> str:
    return text[: text.index(marker) + extra]


RULES_CASES = {
    "empty file": (lambda s: "", ["is empty", "iptables-save"]),
    "only blank lines": (lambda s: "\n\n  \n", ["is empty"]),
    "utf-16 file": (lambda s: s.encode("utf-16"), ["UTF-16", "iconv"]),
    "binary data": (lambda s: bytes(range(256)) * 4, ["line 2, column", "not UTF-8"]),
    "latin-1 byte in a comment": (lambda s: s.replace("# Generated", "# G\xe9n\xe9r\xe9")
                                  .encode("latin-1"), ["line 1, column 4", "not UTF-8"]),
    "NUL byte inside a rule": (lambda s: s.replace("-A OUTPUT", "-A \x00OUTPUT"),
                               ["control character U+0000", "line"]),
    "terminal escape codes": (lambda s: "\x1b[31m" + s, ["U+001B", "line 1, column 1"]),
    "cut inside a chain header": (lambda s: _cut(s, ":ISTIO_OUTPUT", 13),
                                  ["incomplete", "line"]),
    "cut inside a rule": (lambda s: _cut(s, "-j REDIRECT", 5), ["COMMIT", "line"]),
    "cut after an option": (lambda s: _cut(s, "-s 127.0.0.6", 2), ["-s needs a value"]),
    "no COMMIT": (lambda s: s.replace("COMMIT\n", ""), ["no COMMIT"]),
    "unknown match": (lambda s: s.replace("-m tcp --dport 15008", "-m frobnicate --zap 1", 1),
                      ["unknown match module 'frobnicate'", "column"]),
    "unknown target": (lambda s: s.replace("-j RETURN", "-j FROB", 1),
                       ["'FROB' does not exist", "column"]),
    "garbage line": (lambda s: s.replace("COMMIT", "hello world\nCOMMIT", 1),
                     ["line", "hello"]),
    "bad CIDR in a rule": (lambda s: s.replace("127.0.0.6/32", "127.0.0.6/33", 1),
                           ["line", "127.0.0.6/33"]),
    "a megabyte-long line": (lambda s: "*nat\n-A OUTPUT " + "x" * 1_000_000 + "\nCOMMIT\n",
                             ["line 2", "1,000,010 characters"]),
}


@pytest.mark.parametrize("case", list(RULES_CASES))
def test_trace_bad_rules_file(case, save_text, rules_file, capsys, monkeypatch):
    make, words = RULES_CASES[case]
    code, out, err = run([*FROM_POD, rules_file(make(save_text))], capsys, monkeypatch)
    assert_one_error(code, err, *words)
    assert out == ""
    assert len(err) < 3000, "the message must stay readable"


def test_trace_rules_path_is_a_directory(tmp_path, capsys, monkeypatch):
    code, _, err = run([*FROM_POD, str(tmp_path)], capsys, monkeypatch)
    assert_one_error(code, err, "is a directory")


def test_trace_rules_path_missing(tmp_path, capsys, monkeypatch):
    code, _, err = run([*FROM_POD, str(tmp_path / "nope.txt")], capsys, monkeypatch)
    assert_one_error(code, err, "no such file", "check the path")


def test_trace_rules_dev_null(capsys, monkeypatch):
    code, _, err = run([*FROM_POD, "/dev/null"], capsys, monkeypatch)
    assert_one_error(code, err, "is empty")


def test_trace_huge_file_is_refused_quickly(tmp_path, save_text, capsys, monkeypatch):
    """A 50 MB dump (a node's, or the wrong file) is named as such before it is read."""
    path = tmp_path / "huge.txt"
    with path.open("w") as handle:
        handle.write(save_text.split("COMMIT")[0])
        line = "-A ISTIO_OUTPUT -d 10.1.2.3/32 -p tcp -m tcp --dport 80 -j RETURN\n"
        handle.write(line * (50_000_000 // len(line)))
        handle.write("COMMIT\n")
    code, _, err = run([*FROM_POD, str(path)], capsys, monkeypatch)
    assert_one_error(code, err, "MiB", "at most 8.0 MiB")


@pytest.mark.timeout(30)
def test_trace_endless_device_is_bounded(capsys, monkeypatch):
    """/dev/zero never ends: only MAX_RULES_BYTES + 1 bytes are read."""
    code, _, err = run([*FROM_POD, "/dev/zero"], capsys, monkeypatch)
    assert_one_error(code, err, "over 8.0 MiB")


def test_trace_huge_stdin_is_bounded(capsys, monkeypatch):
    code, _, err = run([*FROM_POD, "-"], capsys, monkeypatch,
                       stdin=b"#" * (MAX_RULES_BYTES + 10))
    assert_one_error(code, err, "on standard input", "at most")


def test_trace_binary_stdin(capsys, monkeypatch):
    code, _, err = run([*FROM_POD, "-"], capsys, monkeypatch, stdin=b"\xff\xfe\x00junk")
    assert_one_error(code, err, "UTF-16")


# ------------------------------------------------------------------ trace: the options

TRACE_OPTION_CASES = {
    "pod ip 999.1.1.1": (["--from-pod", "--uid", "1000", "--pod-ip", "999.1.1.1",
                          "--dst", "10.0.0.1:80"], ["--pod-ip", "not an IP address", "e.g."]),
    "pod ip with a prefix": (["--from-pod", "--uid", "1", "--pod-ip", "10.244.0.5/24",
                              "--dst", "10.0.0.1:80"], ["--pod-prefix"]),
    "dst without a port": (["--from-pod", "--uid", "1", "--pod-ip", "10.244.0.5",
                            "--dst", "10.0.0.1"], ["--dst", "IP:PORT"]),
    "dst port 99999": (["--from-pod", "--uid", "1", "--pod-ip", "10.244.0.5",
                        "--dst", "10.0.0.1:99999"], ["--dst", "99999", "0 to 65535"]),
    "dst port -1": (["--from-pod", "--uid", "1", "--pod-ip", "10.244.0.5",
                     "--dst", "10.0.0.1:-1"], ["--dst", "-1"]),
    "dst port not decimal": (["--from-pod", "--uid", "1", "--pod-ip", "10.244.0.5",
                              "--dst", "10.0.0.1:\u00b2"], ["--dst"]),
    "dst host name": (["--from-pod", "--uid", "1", "--pod-ip", "10.244.0.5",
                       "--dst", "reviews:9080"], ["'reviews'", "not resolved"]),
    "dst a CIDR": (["--from-pod", "--uid", "1", "--pod-ip", "10.244.0.5",
                    "--dst", "10.0.0.0/24:80"], ["not an IP address"]),
    "dst IPv6 without brackets": (["--from-pod", "--uid", "1", "--pod-ip", "10.244.0.5",
                                   "--dst", "fd00::1:80"], ["brackets"]),
    "dst IPv6, pod IPv4": (["--from-pod", "--uid", "1", "--pod-ip", "10.244.0.5",
                            "--dst", "[fd00::1]:80"], ["IPv6", "IPv4", "ip6tables"]),
    "pod IPv6, rules IPv4": (["--from-pod", "--uid", "1", "--pod-ip", "fd00::5",
                              "--dst", "[fd00::1]:80"], ["IPv4 rules", "ip6tables-save"]),
    "uid -1": (["--from-pod", "--uid", "-1", "--pod-ip", "10.244.0.5", "--dst", "10.0.0.1:80"],
               ["--uid", "out of range"]),
    "uid abc": (["--from-pod", "--uid", "abc", "--pod-ip", "10.244.0.5",
                 "--dst", "10.0.0.1:80"], ["--uid", "not a numeric id"]),
    "uid 2**32": (["--from-pod", "--uid", "4294967296", "--pod-ip", "10.244.0.5",
                   "--dst", "10.0.0.1:80"], ["--uid", "out of range"]),
    "gid -5": (["--from-pod", "--uid", "1", "--gid", "-5", "--pod-ip", "10.244.0.5",
                "--dst", "10.0.0.1:80"], ["--gid"]),
    "from-pod without uid": (["--from-pod", "--pod-ip", "10.244.0.5", "--dst", "10.0.0.1:80"],
                             ["needs --uid"]),
    "from-pod and to-pod": (["--from-pod", "--to-pod", "--pod-ip", "10.244.0.5",
                             "--dst", "10.0.0.1:80"], ["not allowed"]),
    "to-pod with a uid": (["--to-pod", "--uid", "1000", "--src", "10.0.0.1:5", "--pod-ip",
                           "10.244.0.5", "--dst", "10.244.0.5:9080"], ["--uid", "--from-pod"]),
    "from-pod with an iface": (["--from-pod", "--uid", "1", "--iface", "wlan0", "--pod-ip",
                                "10.244.0.5", "--dst", "10.0.0.1:80"], ["--iface"]),
    "to-pod without src": (["--to-pod", "--pod-ip", "10.244.0.5", "--dst", "10.244.0.5:80"],
                           ["needs --src"]),
    "to-pod src without port": (["--to-pod", "--src", "10.0.0.1", "--pod-ip", "10.244.0.5",
                                 "--dst", "10.244.0.5:80"], ["--src", "IP:PORT"]),
    "to-pod unknown iface": (["--to-pod", "--src", "10.0.0.1:5", "--iface", "wlan0",
                              "--pod-ip", "10.244.0.5", "--dst", "10.244.0.5:80"], ["wlan0"]),
    "to-pod from loopback on eth0": (["--to-pod", "--src", "127.0.0.1:5", "--pod-ip",
                                      "10.244.0.5", "--dst", "10.244.0.5:80"], ["martian"]),
    "from-pod bind to a foreign address": (["--from-pod", "--uid", "1", "--src", "10.9.9.9",
                                            "--pod-ip", "10.244.0.5", "--dst", "10.0.0.1:80"],
                                           ["EADDRNOTAVAIL"]),
    "pod prefix 33": (["--from-pod", "--uid", "1", "--pod-prefix", "33", "--pod-ip",
                       "10.244.0.5", "--dst", "10.0.0.1:80"], ["--pod-prefix", "0 to 32"]),
    "pod prefix -1": (["--from-pod", "--uid", "1", "--pod-prefix", "-1", "--pod-ip",
                       "10.244.0.5", "--dst", "10.0.0.1:80"], ["--pod-prefix"]),
    "proto sctp": (["--from-pod", "--uid", "1", "--proto", "sctp", "--pod-ip", "10.244.0.5",
                    "--dst", "10.0.0.1:80"], ["--proto", "invalid choice"]),
}


@pytest.mark.parametrize("case", list(TRACE_OPTION_CASES))
def test_trace_bad_option(case, save_text, rules_file, capsys, monkeypatch):
    argv, words = TRACE_OPTION_CASES[case]
    code, out, err = run(["trace", "--rules", rules_file(save_text), *argv], capsys,
                         monkeypatch)
    assert_one_error(code, err, *words)
    assert out == ""


def test_trace_good_input_still_works(save_text, rules_file, capsys, monkeypatch):
    code, out, err = run([*FROM_POD, rules_file(save_text)], capsys, monkeypatch)
    assert code == 0 and "REDIRECT" in out and err == ""


def test_trace_tproxy_is_not_called_a_rewrite(rules_file, capsys, monkeypatch):
    from meshlab.istio.capture import generate
    from meshlab.istio.flags import DEFAULT_ISTIO_INIT_ARGS, CaptureConfig

    flags = list(DEFAULT_ISTIO_INIT_ARGS)
    flags[flags.index("REDIRECT")] = "TPROXY"
    text = generate(CaptureConfig.from_args(flags)).ruleset_v4.render_save()
    code, out, _ = run(["trace", "--rules", rules_file(text), "--to-pod", "--pod-ip",
                        "10.244.0.5", "--src", "10.244.0.9:4000", "--dst", "10.244.0.5:9080"],
                       capsys, monkeypatch)
    assert code == 0
    assert "rewritten by" not in out and "no NAT" in out
    assert "the packet still says 10.244.0.5:9080" in out


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400) | st.text(max_size=300).map(str.encode)
       | st.lists(st.sampled_from(["*nat", "*mangle", ":OUTPUT ACCEPT [0:0]", "COMMIT",
                                   "-A OUTPUT -j RETURN", "-A OUTPUT -p tcp --dport", "-N X",
                                   "-A X -m owner --uid-owner 1337 -j RETURN", "\x00", "-j",
                                   "-A OUTPUT -s 10.0.0.0/33 -j DROP", "# c", "", "-I OUTPUT 9"]),
                  max_size=12).map(lambda lines: "\n".join(lines).encode()))
def test_random_bytes_on_stdin_never_crash(data, capsys, monkeypatch):
    """Random bytes to `meshlab trace --rules -` exit 0 or 2, never with a traceback."""
    code, _, err = run([*FROM_POD, "-"], capsys, monkeypatch, stdin=data)
    assert code in (0, 2), err
    assert "Traceback" not in err
    if code == 2:
        assert err.count("error:") == 1, err


# ------------------------------------------------------------------ rules: istio-iptables flags

RULES_FLAG_CASES = {
    "-x '*'": (["-x", "*"], ["-x", "rejected by istio-iptables"]),
    "-x with '*' in a list": (["-x", "10.0.0.0/8,*"], ["-x", "rejected"]),
    "-b 70000": (["-b", "70000"], ["-b", "70000", "1 to 65535"]),
    "-b 0": (["-b", "0"], ["-b", "out of range"]),
    "-b 80,abc": (["-b", "80,abc"], ["'abc' is not a port number"]),
    "-b 1-5": (["-b", "1-5"], ["'1-5'"]),
    "-i 10.0.0.0/33": (["-i", "10.0.0.0/33"], ["-i", "not a CIDR", "e.g."]),
    "-i 999.0.0.0/8": (["-i", "999.0.0.0/8"], ["not a CIDR"]),
    "-i fd00::/200": (["-i", "fd00::/200"], ["not a CIDR"]),
    "-i blank": (["-i", " "], ["not a CIDR", "10.0.0.0/8"]),
    "unknown flag": (["--bogus"], ["unknown flag --bogus"]),
    "misspelled flag": (["--proxy-port=99999"], ["did you mean"]),
    "flag missing its value": (["-p"], ["-p needs a value"]),
    "-p abc": (["-p", "abc"], ["not a port number"]),
    "-u abc": (["-u", "abc"], ["-u", "numeric user or group id"]),
    "-u -1": (["-u", "-1"], ["-u"]),
    "-u too big": (["-u", "99999999999"], ["-u"]),
    "-t not a mark": (["-t", "x"], ["firewall mark"]),
    "-c bad interface": (["-c", "x/33"], ["interface name"]),
    "a stray word": (["istio-iptables", "istio-iptables"], ["unexpected argument"]),
    "--redirect-dns with a bad --dns-server": (["--redirect-dns", "--dns-server", "999.1.1.1"],
                                               ["999.1.1.1", "not an IP address"]),
    "--dns-server abc": (["--redirect-dns", "--dns-server", "abc"], ["'abc'"]),
    "--dns-server without value": (["--dns-server"], ["expected one argument"]),
    "--format xml": (["--format", "xml"], ["invalid choice"]),
    "--env without =": (["--env", "FOO"], ["NAME=VALUE"]),
    "--env without a name": (["--env", "=x"], ["NAME=VALUE"]),
}


@pytest.mark.parametrize("case", list(RULES_FLAG_CASES))
def test_rules_bad_flag(case, capsys, monkeypatch):
    argv, words = RULES_FLAG_CASES[case]
    code, out, err = run(["rules", *argv], capsys, monkeypatch)
    assert_one_error(code, err, *words)
    assert out == ""


def test_rules_unknown_interception_mode_gets_a_note(capsys, monkeypatch):
    """Istio takes -m tproxy as REDIRECT (only the exact text TPROXY counts): exit 0, a note."""
    code, out, err = run(["rules", "-m", "tproxy"], capsys, monkeypatch)
    assert code == 0 and "REDIRECT" in out
    assert "neither REDIRECT nor TPROXY" in err


def test_rules_cidr_hint_is_a_real_cidr(capsys, monkeypatch):
    code, _, err = run(["rules", "-i", "10.1.2.3"], capsys, monkeypatch)
    assert_one_error(code, err, "e.g. 10.1.2.3/32")


def test_proxy_uid_help_tells_the_lo_exception():
    from meshlab.istio.flags import FLAGS

    spec = next(f for f in FLAGS if f.short == "u")
    assert "never captured" not in spec.help
    assert "ISTIO_IN_REDIRECT" in spec.help and "own IP" in spec.help


# ------------------------------------------------------------------ inject: pod YAML

def _pod(extra_metadata: str = "", spec: str = "  containers:\n  - name: a\n    image: b\n"):
    return ("apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n" + extra_metadata
            + "spec:\n" + spec)


BOMB = ("x-a: &a ['x','x','x','x','x','x','x','x','x']\n"
        + "".join(f"x-{b}: &{b} [{', '.join(['*' + a] * 9)}]\n"
                  for a, b in zip("abcdefg", "bcdefgh", strict=True)))

POD_CASES = {
    "tabs": (POD.replace("  containers:", "\tcontainers:"), ["line 13, column 1", "tabs"]),
    "bad indentation": (POD.replace("  containers:", "   containers:", 1),
                        ["line 13", "indentation"]),
    "a list at the top": ("- a\n- b\n", ["is a list, not a mapping"]),
    "a string at the top": ("hello\n", ["is a string ('hello'), not a mapping"]),
    "kind Deployment": (POD.replace("kind: Pod", "kind: Deployment"),
                        ["Deployment", "spec.template"]),
    "no kind": ("apiVersion: v1\nmetadata: {}\n", ["no 'kind'"]),
    "no containers": (_pod(spec="  {}\n").replace("spec:\n  {}", "spec: {}"),
                      ["no containers"]),
    "empty containers": (_pod(spec="  containers: []\n"), ["no containers"]),
    "containers not a list": (_pod(spec="  containers: {name: a, image: b}\n"),
                              ["spec.containers is a mapping, not a list", "- name"]),
    "a container that is a string": (_pod(spec="  containers:\n  - just-a-string\n"),
                                     ["spec.containers[0] is a string", "line 7"]),
    "container without a name": (_pod(spec="  containers:\n  - image: b\n"), ["no name"]),
    "ports not a list": (_pod(spec="  containers:\n  - name: a\n    image: b\n    ports: 8080\n"),
                         ["ports is a number (8080), not a list", "line 9"]),
    "containerPort abc": (_pod(spec="  containers:\n  - name: a\n    image: b\n    ports:\n"
                               "    - containerPort: abc\n"), ["containerPort 'abc'"]),
    "annotation not a string": (_pod("  annotations:\n    traffic.sidecar.istio.io/"
                                     "includeInboundPorts: 8080\n"), ['Quote it', '"8080"']),
    "annotation without a value": (_pod("  annotations:\n    sidecar.istio.io/inject:\n"),
                                   ["empty (null)", "remove the line"]),
    "label true": (_pod("  labels:\n    sidecar.istio.io/inject: true\n"), ['"true"']),
    "annotations a list": (_pod("  annotations: [a, b]\n"), ["not a mapping"]),
    "malformed CIDR annotation": (_pod("  annotations:\n    traffic.sidecar.istio.io/"
                                       "excludeOutboundIPRanges: 10.0.0.0/33\n"),
                                  ["10.0.0.0/33", "line 6"]),
    "malformed port annotation": (_pod("  annotations:\n    traffic.sidecar.istio.io/"
                                       "excludeInboundPorts: '80,abc'\n"), ["'abc'"]),
    "unknown interception mode": (_pod("  annotations:\n    sidecar.istio.io/"
                                       "interceptionMode: WAT\n"), ["REDIRECT, TPROXY or NONE"]),
    "hostNetwork not a boolean": (_pod(spec="  hostNetwork: yes-please\n  containers:\n"
                                       "  - name: a\n    image: b\n"), ["hostNetwork"]),
    "two documents": (POD + "---\n" + POD, ["2 YAML documents", "split"]),
    "unclosed quote": ("apiVersion: v1\nkind: Pod\nmetadata:\n  name: \"x\nspec: {}\n",
                       ["not valid YAML"]),
    "python tag": ("!!python/object/apply:os.system ['echo pwned']\n",
                   ["line 1, column 1", "drop the '!' tag"]),
    "duplicate key": (POD.replace("kind: Pod", "kind: Pod\nkind: Service"),
                      ["'kind' appears twice", "line"]),
    "recursive alias": ("a: &a [*a]\nkind: Pod\n", ["recursive"]),
    "billion laughs in a valid pod": (BOMB + _pod(spec="  containers:\n  - name: a\n    image:"
                                                  " b\n    args: *h\n"),
                                      ["aliases", "100,000"]),
    "empty file": ("", ["is empty"]),
    "utf-16": (POD.encode("utf-16"), ["UTF-16", "iconv"]),
    "binary": (b"\x00\xff\xfe" * 100, ["not UTF-8"]),
}


@pytest.mark.parametrize("case", list(POD_CASES))
def test_inject_bad_pod(case, tmp_path, capsys, monkeypatch):
    content, words = POD_CASES[case]
    path = tmp_path / "pod.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    code, out, err = run(["inject", str(path), "-l", "istio-injection=enabled", "--rules"],
                         capsys, monkeypatch)
    assert_one_error(code, err, *words)
    assert out == ""


@pytest.mark.parametrize("case", ["empty file", "utf-16", "binary", "tabs"])
def test_inject_bad_pod_on_stdin(case, capsys, monkeypatch):
    content, words = POD_CASES[case]
    code, _, err = run(["inject", "-"], capsys, monkeypatch, stdin=content)
    assert_one_error(code, err, *words)


@pytest.mark.timeout(60)
def test_inject_huge_manifest_is_refused(tmp_path, capsys, monkeypatch):
    path = tmp_path / "big.yaml"
    path.write_text(_pod(spec="  containers:\n  - name: a\n    image: b\n    env:\n")
                    + "    - name: A\n      value: '1234567890'\n" * 1_500_000)
    code, _, err = run(["inject", str(path)], capsys, monkeypatch)
    assert_one_error(code, err, "at most 1.5 MiB")


INJECT_OPTION_CASES = {
    "path is a directory": (["{tmp}"], ["is a directory"]),
    "missing path": (["{tmp}/nope.yaml"], ["no such file"]),
    "label without =": (["{pod}", "-l", "foo"], ["KEY=VALUE"]),
    "label without a key": (["{pod}", "-l", "=x"], ["KEY=VALUE"]),
    "empty namespace": (["{pod}", "-n", ""], ["not a namespace name"]),
    "namespace with capitals": (["{pod}", "-n", "Bad_NS!"], ["not a namespace name"]),
    "namespace mismatch": (["{pod}", "-n", "other"], ["says namespace 'default'"]),
    "interception mode lowercase": (["{pod}", "--interception-mode", "tproxy"],
                                    ["invalid choice"]),
}


@pytest.mark.parametrize("case", list(INJECT_OPTION_CASES))
def test_inject_bad_option(case, tmp_path, capsys, monkeypatch):
    argv, words = INJECT_OPTION_CASES[case]
    argv = [a.format(tmp=tmp_path, pod=PODS / "productpage-v1.yaml") for a in argv]
    code, _, err = run(["inject", *argv], capsys, monkeypatch)
    assert_one_error(code, err, *words)


# ------------------------------------------------------------------ walk

WALK_CASES = {
    "no scenario": ([], ["name a scenario", "--list"]),
    "unknown scenario": (["nosuch"], ["unknown scenario 'nosuch'", "inbound"]),
    "scenario in capitals": (["Inbound"], ["unknown scenario"]),
    "--without-rule that is not a rule": (["inbound", "--without-rule", "hello world"],
                                          ["not an iptables rule", "column 1"]),
    "--without-rule cut short": (["inbound", "--without-rule", "-p tcp --dport"],
                                 ["not an iptables rule", "--dport needs a value"]),
    "--without-rule unknown match": (["inbound", "--without-rule", "-m frob -j RETURN"],
                                     ["unknown match module"]),
    "--without-rule empty": (["inbound", "--without-rule", ""], ["empty rule"]),
    "--without-rule matching nothing": (["inbound", "--without-rule", "-j FOO"],
                                        ["no rule '-j FOO'", "one of"]),
    "--without-rule twice": (["inbound", "--without-rule", "-p tcp -j ISTIO_INBOUND",
                              "--without-rule", "-p tcp -j ISTIO_INBOUND"], ["twice"]),
    "--without-rule in another chain": (["inbound", "--without-rule",
                                         "-A ISTIO_INBOUND -m owner --uid-owner 1337 -j RETURN"],
                                        ["no rule"]),
    "--flags unclosed quote": (["inbound", "--flags", "-p 'abc"], ["close the quotes"]),
    "--flags -b 70000": (["inbound", "--flags", "-b 70000"], ["70000"]),
    "--flags unknown flag": (["inbound", "--flags", "--bogus"], ["unknown flag --bogus"]),
    "--flags a flag without value": (["inbound", "--flags", "-p"], ["-p needs a value"]),
    "--flags -x '*'": (["inbound", "--flags", "-x '*'"], ["rejected"]),
    "--flags bad CIDR": (["outbound", "--flags", "-p 15001 -u 1337 -i 10.0.0.0/33"],
                         ["not a CIDR", "word"]),
    "--list with a scenario": (["--list", "inbound"], ["--list"]),
}


@pytest.mark.parametrize("case", list(WALK_CASES))
def test_walk_bad_input(case, capsys, monkeypatch):
    argv, words = WALK_CASES[case]
    code, out, err = run(["walk", *argv], capsys, monkeypatch)
    assert_one_error(code, err, *words)
    assert out == ""


def test_walk_flags_value_may_start_with_a_dash(capsys, monkeypatch):
    code, out, _ = run(["walk", "dns-udp", "--flags", "--redirect-dns"], capsys, monkeypatch)
    assert code == 0 and "--redirect-dns" in out


# ------------------------------------------------------------------ live: arguments only

@pytest.fixture
def no_lab(monkeypatch):
    """The lab must never be reached by these tests."""
    def refuse() -> None:
        raise AssertionError("bad arguments reached the lab")
    monkeypatch.setattr(live_cli, "_require_lab", refuse)


LIVE_CASES = {
    "no action": ([], ["required"]),
    "unknown action": (["bogus"], ["invalid choice"]),
    "run without scenario": (["run"], ["required: SCENARIO"]),
    "run unknown scenario": (["run", "nosuch"], ["unknown scenario"]),
    "run with a bad rule": (["run", "inbound", "--without-rule", "hello"],
                            ["not an iptables rule"]),
    "verify unknown scenario": (["verify", "--scenario", "nosuch"], ["unknown scenario"]),
    "random seed abc": (["random", "--seed", "x"], ["invalid int value"]),
    "random configs -1": (["random", "--configs", "-1"], ["--configs", "out of range"]),
    "random configs 10**8": (["random", "--configs", "100000000"], ["out of range"]),
    "random per-config 0": (["random", "--per-config", "0"], ["--per-config"]),
    "random configs abc": (["random", "--configs", "abc"], ["not a whole number"]),
    "record seed abc": (["record", "--seed", "abc"], ["invalid int value"]),
    "record configs 0": (["record", "--configs", "0"], ["out of range"]),
    "record output a directory": (["record", "--output", "{tmp}"], ["is a directory"]),
    "record output under a file": (["record", "--output", "{file}/x.json"], ["cannot write"]),
}


@pytest.mark.parametrize("case", list(LIVE_CASES))
def test_live_bad_arguments(case, no_lab, tmp_path, capsys, monkeypatch):
    argv, words = LIVE_CASES[case]
    a_file = tmp_path / "file"
    a_file.write_text("x")
    argv = [a.format(tmp=tmp_path, file=a_file) for a in argv]
    code, _, err = run(["live", *argv], capsys, monkeypatch)
    assert_one_error(code, err, *words)


# ------------------------------------------------------------------ end to end

@pytest.mark.parametrize("argv, stdin, words", [
    (["trace", "--rules", "-", "--from-pod", "--pod-ip", "10.244.0.5", "--uid", "1",
      "--dst", "10.0.0.1:80"], b"\x00\x01\x02 not rules", ["control character"]),
    (["inject", "-"], b"- a list\n", ["is a list"]),
    (["rules", "-b", "70000"], b"", ["70000"]),
    (["walk", "inbound", "--flags", "-i 10.0.0.0/33"], b"", ["not a CIDR"]),
])
def test_end_to_end(argv, stdin, words):
    done = subprocess.run([sys.executable, "-m", "meshlab.cli.main", *argv], input=stdin,
                          capture_output=True, timeout=60, cwd=REPO)
    err = done.stderr.decode()
    assert_one_error(done.returncode, err, *words)


# ------------------------------------------------------------------ for the parser's owner

def test_parse_error_message_is_clipped_for_huge_lines():
    with pytest.raises(MeshlabError) as caught:
        parse_ruleset("*nat\n-A OUTPUT " + "x" * 1_000_000 + "\nCOMMIT\n")
    assert len(str(caught.value)) < 2000


def test_a_clipped_excerpt_keeps_the_caret_under_the_offending_word():
    pad = "-m comment --comment padding " * 8
    line = f"-A OUTPUT {pad}--bogus 1 {pad}-j RETURN"
    with pytest.raises(MeshlabError) as caught:
        parse_ruleset(f"*nat\n{line}\nCOMMIT\n")
    excerpt, caret = str(caught.value).splitlines()[1:3]
    assert len(excerpt) < 140
    assert excerpt[caret.index("^"):].startswith("--bogus")



def _raising(error: BaseException):  # type: ignore[no-untyped-def]
    def run(args: object) -> int:
        raise error

    return run


def test_a_closed_pipe_ends_the_command_quietly(monkeypatch, capfd) -> None:  # type: ignore[no-untyped-def]
    """`meshlab rules | head -1`: the reader goes away mid-write; exit 0, no traceback."""
    import meshlab.cli.rules

    monkeypatch.setattr(meshlab.cli.rules, "run", _raising(BrokenPipeError()))
    assert main(["rules"]) == 0
    assert "Traceback" not in capfd.readouterr().err


def test_ctrl_c_ends_with_130_and_one_line(monkeypatch, capfd) -> None:  # type: ignore[no-untyped-def]
    import meshlab.cli.walk

    monkeypatch.setattr(meshlab.cli.walk, "run", _raising(KeyboardInterrupt()))
    assert main(["walk", "inbound"]) == 130
    assert capfd.readouterr().err.strip() == "meshlab walk: interrupted"
