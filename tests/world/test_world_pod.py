"""The pod: interfaces, processes, sockets, rules and sidecar, built in one call."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from meshlab.errors import MeshlabError
from meshlab.pod import Pod
from meshlab.world import Request, World

MANIFEST = """\
apiVersion: v1
kind: Pod
metadata:
  name: ratings
  namespace: default
spec:
  containers:
  - name: ratings
    image: ratings:1
    ports:
    - containerPort: 9080
"""


def test_default_pod() -> None:
    pod = Pod.default()
    assert pod.ip == IPv4Address("10.244.0.5")
    assert [i.name for i in pod.interfaces] == ["lo", "eth0"]
    owners = {p.name: (p.uid, p.gid) for p in pod.processes}
    assert owners == {"app": (1000, 1000), "envoy": (1337, 1337), "pilot-agent": (1337, 1337)}
    ports = {(s.process, s.proto, s.port) for s in pod.sockets}
    for port in (15001, 15006, 15021, 15090):
        assert ("envoy", "tcp", port) in ports
    assert ("pilot-agent", "tcp", 15020) in ports
    assert ("pilot-agent", "udp", 15053) in ports
    assert ("app", "tcp", 9080) in ports
    assert pod.sidecar is not None
    assert "inbound" in pod.describe() or "istio-init" in pod.describe()


def test_socket_binding_rules() -> None:
    pod = Pod.default()
    assert pod.listener("tcp", IPv4Address("10.244.0.5"), 9080) is not None
    assert pod.listener("tcp", IPv4Address("127.0.0.1"), 15000) is not None
    assert pod.listener("tcp", IPv4Address("10.244.0.5"), 15000) is None  # 127.0.0.1 bind
    assert pod.listener("udp", IPv4Address("10.244.0.5"), 9080) is None


def test_tproxy_proxy_runs_as_root_with_gid_1337() -> None:
    pod = Pod.default(flags="-p 15001 -z 15006 -u 1337 -m TPROXY -i * -x '' -b * "
                            "-d 15090,15021,15020")
    envoy = pod.process("envoy")
    assert (envoy.uid, envoy.gid) == (0, 1337)
    assert pod.interception_mode == "TPROXY"
    assert any(r.table == "mangle" for r in pod.ruleset.rules())


def test_variants_are_cached() -> None:
    pod = Pod.default()
    a = pod.with_rules(without_rules=["-s 127.0.0.6/32 -o lo -j RETURN"])
    b = pod.with_rules(without_rules=["-s 127.0.0.6/32 -o lo -j RETURN"])
    assert a is b
    assert a.ruleset != pod.ruleset
    assert Pod.default() is Pod.default()


def test_unknown_process() -> None:
    with pytest.raises(MeshlabError, match="app, envoy, pilot-agent"):
        Pod.default().process("nginx")


def test_from_manifest_injects_and_walks() -> None:
    pod = Pod.from_manifest(MANIFEST, namespace_labels={"istio-injection": "enabled"},
                            ip="10.244.0.7")
    assert pod.name == "ratings"
    assert pod.sidecar is not None
    assert pod.flags is not None and "-b" in pod.flags
    world = World((*World.default().pods, pod), World.default().services)
    walk = world.run(Request("pod/reviews", "pod/ratings", 9080))
    # ratings has a sidecar too: its inbound path is captured and forwarded from 127.0.0.6
    assert walk.outcome == "delivered"
    assert walk.delivered_to is not None
    assert (walk.delivered_to.host, walk.delivered_to.sees_source) == ("ratings", "127.0.0.6")


def test_from_manifest_not_injected_is_plain() -> None:
    pod = Pod.from_manifest(MANIFEST, namespace_labels={}, ip="10.244.0.7")
    assert pod.sidecar is None
    assert not list(pod.ruleset.rules())
