"""The model against the real kernel, in a throwaway network namespace (root + iptables).

Loads rules with ``iptables-restore --noflush`` inside ``meshlab-nf-test-<pid>`` only (never the
host's namespace), reads them back with ``iptables-save -c`` and checks that the model renders
exactly what the kernel prints, that both forms compare equal, and that a real connection is
redirected where the model says, with the same nat counters and the same SO_ORIGINAL_DST.
"""

from __future__ import annotations

import json
import sys

import pytest
from live_tools import run
from nf_istio_fixtures import ISTIO_RESTORE
from nf_kernel_spellings import RESTORE, rule_lines

from meshlab.netfilter import Netns, parse_ruleset, pod_interfaces

pytestmark = pytest.mark.live


def _run(*cmd: str, stdin: str | None = None) -> str:
    return run(*cmd, stdin=stdin).stdout


def _load_and_save(ns: str, restore: str) -> str:
    _run("ip", "netns", "exec", ns, "iptables-restore", "--noflush", stdin=restore)
    return _run("ip", "netns", "exec", ns, "iptables-save", "-c")


@pytest.mark.parametrize("restore", [ISTIO_RESTORE, RESTORE], ids=["istio", "spellings"])
def test_render_save_matches_the_kernel(netns, restore):
    saved = _load_and_save(netns, restore)
    model = parse_ruleset(restore)
    assert parse_ruleset(saved) == model
    kernel_lines, model_lines = rule_lines(saved), rule_lines(model.render_save())
    for table, lines in model_lines.items():
        assert kernel_lines.get(table) == lines, table
    headers = [ln for ln in saved.splitlines() if ln.startswith(":")]
    model_headers = [ln.rsplit(" ", 1)[0] for ln in model.render_save().splitlines()
                     if ln.startswith(":")]
    assert sorted(h.rsplit(" ", 1)[0] for h in headers) == sorted(model_headers)


CLIENT = r"""
import json, socket, struct
lst = socket.socket(); lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
lst.bind(("0.0.0.0", 15001)); lst.listen(1); lst.settimeout(5)
cli = socket.socket(); cli.settimeout(5); cli.connect(("10.244.0.9", 8080))
conn, peer = lst.accept()
raw = conn.getsockopt(socket.SOL_IP, 80, 16)
port, ip = struct.unpack("!2xH4s8x", raw)
print(json.dumps({"local": conn.getsockname(), "peer": peer,
                  "original": [socket.inet_ntoa(ip), port]}))
"""


def test_connection_lands_where_the_model_says_with_the_same_counters(netns):
    _run("ip", "-n", netns, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0")
    _run("ip", "-n", netns, "addr", "add", "10.244.0.5/24", "dev", "eth0")
    _run("ip", "-n", netns, "link", "set", "eth0", "up")
    _run("ip", "-n", netns, "link", "set", "peer0", "up")
    _load_and_save(netns, ISTIO_RESTORE)
    real = json.loads(_run("ip", "netns", "exec", netns, sys.executable, "-c", CLIENT))
    model_ns = Netns(parse_ruleset(ISTIO_RESTORE), pod_interfaces("10.244.0.5"))
    trace = model_ns.connect(proto="tcp", dst="10.244.0.9", dport=8080, uid=0, gid=0,
                             sport=real["peer"][1])
    assert [str(trace.delivered[0]), trace.delivered[1]] == real["local"]
    assert [str(trace.original_dst[0]), trace.original_dst[1]] == real["original"]
    assert model_ns.conntrack.original_dst(
        "tcp", trace.delivered, (trace.connection.original.src, real["peer"][1])) == \
        trace.original_dst
    saved = parse_ruleset(_run("ip", "netns", "exec", netns, "iptables-save", "-c"))
    kernel_hits = {k: v[0] for k, v in saved.counters.items() if k[2] > 0 and v[0]}
    model_hits = {k: v for k, v in model_ns.counters.items() if k[2] > 0}
    assert kernel_hits == model_hits
