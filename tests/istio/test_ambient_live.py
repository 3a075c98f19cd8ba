"""The ambient rules, route and ``ip rule`` in a real network namespace (root only): real
sockets go where the kernel model says, with the same nat counters, replies included.

The pod's ``eth0`` is one end of a veth pair whose other end stays down (whatever leaves by
it goes nowhere), with a default route, so nothing outside the scratch namespace is reached.
"""

from __future__ import annotations

import json
import sys

import pytest
from live_tools import run

from meshlab.istio.ambient import INPOD_MARK, inpod_rules
from meshlab.netfilter import Netns, parse_ruleset, pod_interfaces

pytestmark = pytest.mark.live

POD, PEER, SERVICE = "10.244.0.5", "10.244.1.7", "10.96.0.20"

SOCKETS = r"""
import json, socket, struct, sys
SO_MARK, IP_TRANSPARENT, SO_ORIGINAL_DST = 36, 19, 80
mark, pod, peer, service = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
out = {}
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("0.0.0.0", 15001)); listener.listen(8); listener.settimeout(5)
# 1. the app calls a service: redirected to ztunnel's outbound listener
app = socket.socket(); app.settimeout(5); app.connect((service, 80))
conn, client = listener.accept()
port, ip = struct.unpack("!2xH4s8x", conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16))
out["outbound"] = {"local": conn.getsockname(), "client": client,
                   "original": [socket.inet_ntoa(ip), port]}
# 2. ztunnel's own socket (mark 0x539) calls the same service: not redirected
own = socket.socket(); own.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
own.setblocking(False); own.connect_ex((service, 80))
out["marked_sport"] = own.getsockname()[1]
listener.settimeout(0.5)
try:
    listener.accept(); out["marked_redirected"] = True
except socket.timeout:
    out["marked_redirected"] = False
# 3. ztunnel connects to the app from the client's own address (transparent, marked):
#    the handshake completes only if the app's answer comes back by lo
server = socket.socket(); server.bind((pod, 9080)); server.listen(1); server.settimeout(3)
zt = socket.socket()
zt.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1); zt.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
zt.bind((peer, 41000)); zt.settimeout(3)
try:
    zt.connect((pod, 9080)); accepted, seen = server.accept()
    out["inbound"] = {"connected": True, "app_sees": seen}
except (socket.timeout, OSError) as error:
    out["inbound"] = {"connected": False, "error": type(error).__name__}
print(json.dumps(out))
"""


def _pod_namespace(netns: str, *, routes: bool) -> tuple[dict, object]:
    rules = inpod_rules()
    run("ip", "-n", netns, "link", "add", "eth0", "type", "veth", "peer", "name", "nowhere0")
    run("ip", "-n", netns, "addr", "add", f"{POD}/24", "dev", "eth0")
    run("ip", "-n", netns, "link", "set", "eth0", "up")
    run("ip", "-n", netns, "route", "add", "default", "dev", "eth0")
    run("ip", "netns", "exec", netns, "iptables-restore", "--noflush", stdin=rules.ipv4)
    if routes:
        for command in rules.route_commands:
            run("ip", "-n", netns, *command.split()[1:])
    real = json.loads(run("ip", "netns", "exec", netns, sys.executable, "-c", SOCKETS,
                          str(INPOD_MARK), POD, PEER, SERVICE).stdout)
    return real, rules


def _nat_counters(netns: str) -> dict:
    saved = parse_ruleset(run("ip", "netns", "exec", netns, "iptables-save", "-c").stdout)
    return {k: v[0] for k, v in saved.counters.items() if k[0] == "nat" and k[2] > 0 and v[0]}


def test_real_sockets_go_where_the_model_says(netns: str) -> None:
    real, rules = _pod_namespace(netns, routes=True)
    model = Netns(rules.ruleset(4), pod_interfaces(POD), fwmark_routes=rules.fwmark_routes(4))

    outbound = model.connect(proto="tcp", dst=SERVICE, dport=80, uid=0, gid=0,
                             sport=real["outbound"]["client"][1])
    assert [str(outbound.delivered[0]), outbound.delivered[1]] == real["outbound"]["local"]
    assert [str(outbound.original_dst[0]), outbound.original_dst[1]] == \
        real["outbound"]["original"] == [SERVICE, 80]

    marked = model.connect(proto="tcp", dst=SERVICE, dport=80, uid=0, gid=0,
                           sport=real["marked_sport"], mark=INPOD_MARK)
    assert marked.out_iface == "eth0" and marked.nat is None
    assert real["marked_redirected"] is False

    first = model.connect(proto="tcp", src=PEER, sport=41000, dst=POD, dport=9080, uid=0,
                          gid=0, mark=INPOD_MARK)
    answer = model.answer(first, uid=0, gid=0)
    assert answer.local and answer.delivered[1] == 41000
    assert real["inbound"] == {"connected": True, "app_sees": [PEER, 41000]}

    model_hits = {k: v for k, v in model.counters.items() if k[0] == "nat" and k[2] > 0}
    assert _nat_counters(netns) == model_hits


def test_without_the_ip_rule_the_apps_answer_is_lost(netns: str) -> None:
    real, rules = _pod_namespace(netns, routes=False)
    model = Netns(rules.ruleset(4), pod_interfaces(POD))
    first = model.connect(proto="tcp", src=PEER, sport=41000, dst=POD, dport=9080, uid=0,
                          gid=0, mark=INPOD_MARK)
    answer = model.answer(first, uid=0, gid=0)
    assert not answer.local and answer.out_iface == "eth0"
    assert real["inbound"]["connected"] is False
