"""A pod as the kernel sees it: one network namespace, its processes, sockets and rules.

Everything a connection meets inside a pod is here:

* **interfaces**: ``lo`` (127.0.0.1/8: the whole 127/8 block is local, which is why Envoy may
  bind 127.0.0.6 without configuring anything) and ``eth0`` with the pod IP;
* **processes** with the UID/GID the kernel's ``-m owner`` match reads: the application
  (UID 1000 by default), Envoy (``istio-proxy``, UID/GID 1337; UID 0 and GID 1337 in TPROXY
  mode) and pilot-agent (same identity as Envoy, same container);
* **sockets**: which process listens on which address, port and protocol. A socket bound to
  ``0.0.0.0`` accepts a connection to any local address; one bound to ``127.0.0.1`` only a
  connection to that address (so it is unreachable from other pods);
* **the ruleset** ``istio-iptables`` wrote (from the ``istio-init`` flags), and in TPROXY mode
  the **policy routing** it adds afterwards (``ip rule add fwmark 1337 lookup 133`` and
  ``ip route add local default dev lo table 133``: packets marked 1337 are local), and
* **the Sidecar** (Envoy's listeners and clusters) istiod would send.

A pod is built in one call from an injected manifest (:meth:`Pod.from_manifest`) or from
defaults (:meth:`Pod.default`); :meth:`Pod.plain` makes a pod (or host) without a sidecar.
Pods are immutable and cheap to share: variants with other flags or without some rules
(:meth:`Pod.with_rules`) are cached, and :meth:`Pod.netns` gives a fresh network namespace
(empty conntrack) for each walk over the same compiled rules.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from ipaddress import IPv4Address, IPv4Interface, ip_address, ip_interface
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from meshlab.errors import MeshlabError
from meshlab.variants import Variants

if TYPE_CHECKING:
    from meshlab.istio.envoy import Service, Sidecar
    from meshlab.istio.ztunnel import Ztunnel
    from meshlab.netfilter.kernel import EphemeralPorts, FwmarkRoute, Interface, Netns
    from meshlab.netfilter.packet import IPAddress
    from meshlab.netfilter.ruleset import Ruleset


APP_UID = 1000
PROXY_UID = 1337
PROXY_GID = 1337
ENVOY = "envoy"
AGENT = "pilot-agent"
ANY = IPv4Address("0.0.0.0")
LOCALHOST = IPv4Address("127.0.0.1")

#: Envoy's ports: 15001 outbound, 15006 inbound, 15021 health, 15090 Prometheus, 15000 admin
#: (localhost only). pilot-agent: 15020 merged metrics/status, 15053 DNS proxy (localhost).
ENVOY_PORTS: tuple[tuple[IPAddress, int], ...] = (
    (ANY, 15001), (ANY, 15006), (ANY, 15021), (ANY, 15090), (LOCALHOST, 15000))
AGENT_SOCKETS: tuple[tuple[str, IPAddress, int], ...] = (
    ("tcp", ANY, 15020), ("udp", LOCALHOST, 15053), ("tcp", LOCALHOST, 15053))


@dataclass(frozen=True, slots=True)
class Process:
    """A process in the pod: its name, the identity its sockets carry, and its container."""

    name: str
    uid: int
    gid: int
    container: str = ""

    @property
    def owner(self) -> str:
        """``"uid 1000 gid 1000"``: what ``-m owner`` sees of this process's sockets."""
        return f"uid {self.uid} gid {self.gid}"


@dataclass(frozen=True, slots=True)
class Socket:
    """A listening socket: ``process`` listens on ``address:port`` for ``proto``.

    ``transparent`` is set for Envoy's listeners in TPROXY mode (``IP_TRANSPARENT``): the
    kernel's TPROXY target hands them connections addressed to *other* local ports.
    """

    process: str
    proto: str
    address: IPAddress
    port: int
    transparent: bool = False

    def accepts(self, proto: str, ip: IPAddress, port: int) -> bool:
        """Whether a connection to ``ip:port`` reaches this socket (wildcard or exact bind)."""
        if proto != self.proto or port != self.port:
            return False
        return self.address.is_unspecified or self.address == ip

    def __str__(self) -> str:
        return f"{self.process} {self.proto} {self.address}:{self.port}"


@dataclass(frozen=True)
class Pod:
    """One pod's network namespace and what runs in it.

    ``kind`` is ``"pod"`` or ``"host"`` (a machine outside the cluster). ``sidecar`` is
    ``None`` for a pod without Istio; ``ruleset`` then holds no rules. ``flags`` are the
    istio-iptables arguments the rules came from, ``removed_rules`` the rule texts taken out.
    ``fwmark_routes`` is the policy routing istio-iptables sets up after the rules (TPROXY
    only).
    """

    name: str
    ip: IPAddress
    processes: tuple[Process, ...]
    sockets: tuple[Socket, ...]
    ruleset: Ruleset
    sidecar: Sidecar | None = None
    namespace: str = "default"
    kind: str = "pod"
    flags: tuple[str, ...] | None = None
    removed_rules: tuple[str, ...] = ()
    interception_mode: str = "REDIRECT"
    prefix_len: int = 24
    services: tuple[Service, ...] = field(default=(), repr=False)
    inbound_ports: tuple[int, ...] = ()
    fwmark_routes: tuple[FwmarkRoute, ...] = ()
    ambient: AmbientSetup | None = None
    # Each pod its own store (init=False: a copy made with dataclasses.replace starts empty).
    _variants: Variants[Pod] = field(default_factory=Variants, init=False, repr=False,
                                     compare=False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def default(cls, *, name: str = "productpage", ip: str | IPAddress = "10.244.0.5",
                flags: Sequence[str] | str | None = None,
                services: Iterable[Service] | None = None,
                app_ports: Sequence[int] = (9080, 8081), inbound_ports: Sequence[int] = (9080,),
                app_uid: int = APP_UID) -> Pod:
        """An injected pod with the default ``istio-init`` flags (or ``flags``).

        The application (UID ``app_uid``) listens on ``app_ports`` (0.0.0.0); ``inbound_ports``
        are the ports a Service declares for it (Envoy builds an ``inbound|PORT||`` chain for
        each; the other app ports reach it through ``InboundPassthroughCluster``). ``services``
        are the Services the sidecar knows (default: the Bookinfo-like ones of
        :func:`default_services`).
        """
        if services is None:
            services = default_services()
        argv = _argv(flags)
        return _build_injected(name, ip_address(str(ip)), argv, tuple(services), tuple(app_ports),
                               tuple(inbound_ports), app_uid)

    @classmethod
    def from_manifest(cls, pod_yaml: str | Mapping[str, Any], *,
                      namespace_labels: Mapping[str, str] | None = None,
                      namespace: str | None = None, ip: str | IPAddress = "10.244.0.5",
                      services: Iterable[Service] | None = None,
                      interception_mode: str = "REDIRECT") -> Pod:
        """Inject ``pod_yaml`` (YAML text, a file or a dict, as
        :func:`meshlab.istio.inject.load_pod` reads them) and build the resulting pod.

        The injection webhook decides (:func:`meshlab.istio.inject.inject`); its
        ``istio-init`` arguments become the rules, its proxy UID/GID the identity of Envoy and
        pilot-agent. Every ``containerPort`` of the application containers becomes a socket of
        process ``app`` (the first container's ``runAsUser``, else UID 1000). A pod the webhook
        does not inject comes back as a plain pod (no rules, no sidecar), with the reasons
        available from :func:`meshlab.istio.inject.inject`.
        """
        from meshlab.istio.inject import inject

        result = inject(pod_yaml, namespace_labels, namespace,
                        interception_mode=interception_mode)
        manifest = result.pod
        meta = manifest.get("metadata") or {}
        name = str(meta.get("name") or "pod")
        ns = namespace or str(meta.get("namespace") or "default")
        app_ports: list[int] = []
        app_uid = APP_UID
        app_gid: int | None = None
        for container in (manifest.get("spec") or {}).get("containers") or []:
            if container.get("name") == "istio-proxy":
                continue
            for port in container.get("ports") or []:
                if str(port.get("protocol", "TCP")).upper() == "TCP":
                    app_ports.append(int(port["containerPort"]))
            security = container.get("securityContext") or {}
            if "runAsUser" in security and app_uid == APP_UID:
                app_uid = int(security["runAsUser"])
            if "runAsGroup" in security and app_gid is None:
                app_gid = int(security["runAsGroup"])
        pod_ip = ip_address(str(ip))
        if services is None:
            services = default_services()
        svcs = tuple(services)
        declared = tuple(dict.fromkeys(
            p.target_port for s in svcs if pod_ip in s.endpoints for p in s.ports))
        if not result.injected or result.init_args is None:
            listens = [("tcp", ANY, p) for p in app_ports]
            return cls.plain(name, pod_ip, listens, process="app", uid=app_uid,
                             gid=app_gid if app_gid is not None else app_uid, namespace=ns)
        return _build_injected(name, pod_ip, tuple(result.init_args), svcs, tuple(app_ports),
                               declared, app_uid, app_gid=app_gid, namespace=ns,
                               proxy_uid=result.proxy_uid, proxy_gid=result.proxy_gid)

    @classmethod
    def plain(cls, name: str, ip: str | IPAddress,
              listens: Iterable[tuple[str, str | IPAddress, int]], *, process: str | None = None,
              uid: int = APP_UID, gid: int | None = None, namespace: str = "default",
              kind: str = "pod", prefix_len: int = 24) -> Pod:
        """A pod (or, with ``kind="host"``, a machine) without a sidecar and without rules.

        ``listens`` are ``(proto, address, port)`` sockets of its one process (named
        ``process``, default ``name``).
        """
        proc = Process(process or name, uid, uid if gid is None else gid, name)
        sockets = tuple(Socket(proc.name, proto, ip_address(str(addr)), port)
                        for proto, addr, port in listens)
        return cls(name=name, ip=ip_address(str(ip)), processes=(proc,), sockets=sockets,
                   ruleset=_empty_ruleset(), namespace=namespace, kind=kind,
                   prefix_len=prefix_len)

    @classmethod
    def ambient_pod(cls, name: str, ip: str | IPAddress, *, app_ports: Sequence[int] = (9080,),
                    app_uid: int = APP_UID, annotations: Mapping[str, str] | None = None,
                    mesh: Iterable[str | IPAddress] = (), services: Iterable[Service] = (),
                    namespace: str = "default", dns_capture: bool = True,
                    extra_interfaces: Sequence[tuple[str, str]] = ()) -> Pod:
        """A pod in ambient mode: no sidecar; istio-cni's in-pod rules and ztunnel's sockets.

        The application (UID ``app_uid``) listens on ``app_ports``. ``annotations`` are the
        pod's own (the agent reads its overrides from them), ``dns_capture`` the agent's global
        setting (the chart's default: on). ``mesh`` are the IPs of the workloads ztunnel
        reaches over HBONE (the world's ambient pods), ``services`` the Services whose VIPs
        ztunnel resolves. ``extra_interfaces`` are ``(name, "ADDR/PLEN")`` interfaces beside
        ``eth0``, such as the one a VM in the pod sends through (``net1``).
        """
        from meshlab.netfilter.kernel import Interface

        ifaces = tuple(Interface(n, (ip_interface(a),)) for n, a in extra_interfaces)
        return _build_ambient(name, ip_address(str(ip)), tuple(app_ports), app_uid,
                              tuple(sorted((annotations or {}).items())),
                              frozenset(ip_address(str(m)) for m in mesh), tuple(services),
                              namespace, dns_capture, ifaces)

    def with_rules(self, *, flags: Sequence[str] | str | None = None,
                   without_rules: Sequence[str] = (),
                   annotations: Mapping[str, str] | None = None,
                   without_matches: Sequence[str] = ()) -> Pod:
        """This pod with other istio-iptables ``flags`` and/or without some rules (cached).

        ``without_rules`` are rule texts in restore form without ``-A CHAIN`` (e.g.
        ``-m owner --uid-owner 1337 -j RETURN``); each removes every equal rule. A text that
        matches no rule raises :class:`MeshlabError` listing the rules there are. A text that
        starts with ``ip rule`` or ``ip route`` removes that policy routing instead (e.g.
        ``ip rule add fwmark 0x111/0xfff pref 32764 lookup 100``).

        For an ambient pod, ``annotations`` are pod-level overrides of the istio-cni agent
        (``ambient.istio.io/dns-capture``, ...) merged over the pod's own, and
        ``without_matches`` are conditions (e.g. ``-m mark ! --mark 0x539/0xfff``) taken out
        of every rule that has them: "what if the rules did not exempt ztunnel?".
        """
        argv = None if flags is None else _argv(flags)
        extra = tuple(sorted((annotations or {}).items()))
        key = (argv, tuple(without_rules), extra, tuple(without_matches))
        cached = self._variants.get(key)
        if cached is not None:
            return cached
        pod = self
        if extra or without_matches:
            pod = _ambient_variant(self, dict(extra), tuple(without_matches), argv)
        if argv is not None and argv != self.flags:
            if self.sidecar is None:
                raise MeshlabError(f"{self.name} has no sidecar, so istio-iptables flags do "
                                   "not apply to it")
            pod = _build_injected(self.name, self.ip, argv, self.services,
                                  self.app_ports, self.inbound_ports, self.app.uid,
                                  app_gid=self.app.gid, namespace=self.namespace)
        if without_rules:
            ruleset = pod.ruleset
            routes = pod.fwmark_routes
            repeated = [t for i, t in enumerate(without_rules) if t in without_rules[:i]]
            if repeated:
                raise MeshlabError(f"the rule {repeated[0]!r} is given twice to remove; give "
                                   "each rule once (one removes every equal rule)")
            for text in without_rules:
                if text.split()[:2] in (["ip", "rule"], ["ip", "route"]):
                    routes = _without_route(routes, text, pod.name)
                else:
                    ruleset = _without(ruleset, text)
            pod = replace(pod, ruleset=ruleset, fwmark_routes=routes,
                          removed_rules=tuple(without_rules))
        return self._variants.keep(key, pod)

    # ------------------------------------------------------------------ reading
    @property
    def interfaces(self) -> tuple[Any, ...]:
        """``lo`` 127.0.0.1/8 and ``eth0`` with the pod IP, as the kernel model takes them
        (and an ambient pod's further interfaces, e.g. a VM's ``net1``)."""
        if self.ambient is not None and self.ambient.extra_interfaces:
            return _interfaces(self.ip, self.prefix_len) + self.ambient.extra_interfaces
        return _interfaces(self.ip, self.prefix_len)

    @property
    def app(self) -> Process:
        """The first process (the application; for a plain pod its only process)."""
        return self.processes[0]

    @property
    def app_ports(self) -> tuple[int, ...]:
        return tuple(s.port for s in self.sockets if s.process == self.app.name
                     and s.proto == "tcp")

    @property
    def proxy(self) -> Process | None:
        """Envoy, when the pod has a sidecar."""
        return self.find_process(ENVOY) if self.sidecar is not None else None

    def find_process(self, name: str) -> Process | None:
        for proc in self.processes:
            if proc.name == name:
                return proc
        return None

    def process(self, name: str) -> Process:
        """The process called ``name``; an unknown name lists the processes there are."""
        proc = self.find_process(name)
        if proc is None:
            names = ", ".join(p.name for p in self.processes)
            raise MeshlabError(f"{self.name} has no process {name!r}; it runs {names}")
        return proc

    def listener(self, proto: str, ip: IPAddress, port: int) -> Socket | None:
        """The socket a connection to ``ip:port`` reaches, or ``None`` (TCP: refused)."""
        return _listener_index(self.sockets).get((proto, ip, port)) or _listener_index(
            self.sockets).get((proto, ANY, port))

    def is_proxy_listener(self, socket: Socket) -> bool:
        """True for Envoy's virtual listeners (15001, 15006), which forward what they accept."""
        if self.sidecar is None or socket.process != ENVOY:
            return False
        return any(lst.port == socket.port for lst in self.sidecar.listeners)

    def netns(self, *, ports: EphemeralPorts | None = None) -> Netns:
        """A fresh network namespace (new conntrack, zero counters) over this pod's rules and
        policy routing. ``ports``: the ephemeral-port allocator to draw source ports from
        (share one across the pods of a world so that their tuples never collide)."""
        from meshlab.netfilter.kernel import Netns

        return Netns(self.ruleset, self.interfaces, fwmark_routes=self.fwmark_routes,
                     ports=ports)

    def rules_frame(self) -> Any:
        """The rules as a pandas DataFrame: table, chain, number, text."""
        import pandas

        return pandas.DataFrame(
            [(r.table, r.chain, r.index, r.rule.text) for r in self.ruleset.rules()],
            columns=["table", "chain", "rule", "text"])

    def describe(self) -> str:
        """A few lines a learner can read: addresses, processes, sockets."""
        lines = [f"{self.kind} {self.namespace}/{self.name}: eth0 {self.ip}/{self.prefix_len}, "
                 "lo 127.0.0.1/8"]
        if self.ambient is not None:
            lines[0] += "".join(f", {i.name} {i.addresses[0]}" for i in
                                self.ambient.extra_interfaces)
            lines.append("  ambient mode: no sidecar; istio-cni's rules, ztunnel's sockets "
                         "(mark 0x539) in this namespace")
        lines += [f"  process {p.name} ({p.owner}) in container {p.container}"
                  for p in self.processes]
        lines += [f"  listens: {s}" for s in self.sockets]
        if self.sidecar is not None:
            lines.append(f"  istio-init flags: {shlex.join(self.flags or ())}")
        if self.removed_rules:
            lines.append(f"  removed rules: {'; '.join(self.removed_rules)}")
        return "\n".join(lines)


# ---------------------------------------------------------------------- helpers (cached)


@lru_cache(maxsize=1)
def default_services() -> tuple[Service, ...]:
    """The Services of the default world (Bookinfo-like names, made-up addresses): what the
    default pod's sidecar knows, and the Services of :meth:`meshlab.world.World.default`."""
    from meshlab.istio.envoy import Service, ServicePort

    return (
        Service("productpage", "default", IPv4Address("10.96.0.30"),
                (ServicePort(9080, 9080, "TCP", "http"),), (IPv4Address("10.244.0.5"),)),
        Service("reviews", "default", IPv4Address("10.96.0.20"),
                (ServicePort(9080, 9080, "TCP", "http"),), (IPv4Address("10.244.0.9"),)),
        Service("kube-dns", "kube-system", IPv4Address("10.96.0.10"),
                (ServicePort(53, 53, "UDP", "dns"), ServicePort(53, 53, "TCP", "dns-tcp")),
                (IPv4Address("10.244.1.2"),)),
    )


def _argv(flags: Sequence[str] | str | None) -> tuple[str, ...]:
    from meshlab.istio.flags import DEFAULT_ISTIO_INIT_ARGS

    if flags is None:
        return tuple(DEFAULT_ISTIO_INIT_ARGS)
    if isinstance(flags, str):
        try:
            return tuple(shlex.split(flags))
        except ValueError as error:
            raise MeshlabError(f"cannot split the istio-iptables flags {flags!r} ({error}); "
                               "close the quotes") from None
    return tuple(flags)


@lru_cache(maxsize=64)
def _rules_for(argv: tuple[str, ...]) -> tuple[Ruleset, str, tuple[FwmarkRoute, ...]]:
    """istio-iptables ``argv`` -> (IPv4 ruleset, interception mode, policy routes); cached."""
    from meshlab.istio.capture import generate
    from meshlab.istio.flags import CaptureConfig
    from meshlab.netfilter.kernel import fwmark_routes

    config = CaptureConfig.from_args(list(argv))
    rules = generate(config)
    mode = str(getattr(config, "interception_mode", "") or "REDIRECT")
    if mode != "TPROXY":
        mode = "REDIRECT"
    return rules.ruleset_v4, mode, fwmark_routes(rules.post_commands)


@lru_cache(maxsize=64)
def _sidecar_for(ip: IPAddress, inbound_ports: tuple[int, ...], services: tuple[Service, ...],
                 mode: str) -> Sidecar:
    from meshlab.istio.envoy import Sidecar

    # Envoy's sidecar listeners proxy TCP only: a Service's UDP ports (kube-dns 53/udp) get no
    # outbound chain or cluster, so keep only the TCP ports of each Service.
    tcp_only = tuple(replace(s, ports=tcp) for s in services
                     if (tcp := tuple(p for p in s.ports if p.protocol.upper() == "TCP")))
    return Sidecar.build(pod_ip=ip, inbound_ports=inbound_ports, services=tcp_only,
                         interception_mode=mode)


@lru_cache(maxsize=128)
def _build_injected(name: str, ip: IPAddress, argv: tuple[str, ...],
                    services: tuple[Service, ...], app_ports: tuple[int, ...],
                    inbound_ports: tuple[int, ...], app_uid: int, *,
                    app_gid: int | None = None, namespace: str = "default",
                    proxy_uid: int | None = None, proxy_gid: int | None = None) -> Pod:
    ruleset, mode, routes = _rules_for(argv)
    if proxy_uid is None:
        # What the injector does: TPROXY needs IP_TRANSPARENT (NET_ADMIN), so istio-proxy runs
        # as root and only its GID 1337 is left for the owner rules to recognise.
        proxy_uid = 0 if mode == "TPROXY" else PROXY_UID
    if proxy_gid is None:
        proxy_gid = PROXY_GID
    app = Process("app", app_uid, app_uid if app_gid is None else app_gid, "app")
    envoy = Process(ENVOY, proxy_uid, proxy_gid, "istio-proxy")
    agent = Process(AGENT, proxy_uid, proxy_gid, "istio-proxy")
    tproxy = mode == "TPROXY"
    sockets = [Socket("app", "tcp", ANY, p) for p in app_ports]
    sockets += [Socket(ENVOY, "tcp", addr, p, transparent=tproxy and p in (15001, 15006))
                for addr, p in ENVOY_PORTS]
    sockets += [Socket(AGENT, proto, addr, p) for proto, addr, p in AGENT_SOCKETS]
    sidecar = _sidecar_for(ip, inbound_ports, services, mode)
    return Pod(name=name, ip=ip, processes=(app, envoy, agent), sockets=tuple(sockets),
               ruleset=ruleset, sidecar=sidecar, namespace=namespace, flags=argv,
               interception_mode=mode, services=services, inbound_ports=inbound_ports,
               fwmark_routes=routes)


def _without(ruleset: Ruleset, text: str) -> Ruleset:
    from meshlab.netfilter.parse import RulesParseError

    if not text.strip():
        raise MeshlabError("an empty rule text was given to remove; write a rule in restore "
                           "form without '-A CHAIN', e.g. -m owner --uid-owner 1337 -j RETURN")
    try:
        return ruleset.without_rule(text)
    except RulesParseError as error:
        raise MeshlabError(f"{text!r} is not an iptables rule: {error}") from None
    except MeshlabError:
        choices = "\n  ".join(dict.fromkeys(r.rule.text for r in ruleset.rules()))
        raise MeshlabError(
            f"no rule {text!r} in these rules; write a rule in restore form without "
            f"'-A CHAIN', one of:\n  {choices}") from None


@lru_cache(maxsize=1)
def _empty_ruleset() -> Ruleset:
    from meshlab.netfilter.ruleset import Ruleset

    return Ruleset.from_chains("ipv4", {})


@lru_cache(maxsize=256)
def _interfaces(ip: IPAddress, prefix_len: int) -> tuple[Any, ...]:
    from meshlab.netfilter.kernel import Interface

    return (Interface("lo", (IPv4Interface("127.0.0.1/8"),)),
            Interface("eth0", (ip_interface(f"{ip}/{prefix_len}"),)))


@lru_cache(maxsize=256)
def _listener_index(sockets: tuple[Socket, ...]) -> Mapping[tuple[str, IPAddress, int], Socket]:
    index: dict[tuple[str, IPAddress, int], Socket] = {}
    for sock in sockets:
        index.setdefault((sock.proto, sock.address, sock.port), sock)
    return index


# ---------------------------------------------------------------------- ambient mode


@dataclass(frozen=True)
class AmbientSetup:
    """What makes a pod an ambient one (:meth:`Pod.ambient_pod`).

    ``ztunnel`` decides where its sockets forward; ``annotations`` are the pod's annotations
    the istio-cni agent read its overrides from; ``dns_capture`` is the agent's global
    setting; ``extra_interfaces`` are interfaces beside ``eth0``; ``removed_matches`` the
    conditions taken out of the rules (:meth:`Pod.with_rules`).
    """

    ztunnel: Ztunnel
    annotations: tuple[tuple[str, str], ...] = ()
    dns_capture: bool = True
    extra_interfaces: tuple[Interface, ...] = ()
    removed_matches: tuple[str, ...] = ()


@lru_cache(maxsize=64)
def _ambient_rules(annotations: tuple[tuple[str, str], ...], dns_capture: bool
                   ) -> tuple[Ruleset, tuple[FwmarkRoute, ...]]:
    """The istio-cni agent's in-pod IPv4 rules and its policy routing, for these overrides
    (read from the annotations; a bad value raises ``AmbientInputError``)."""
    from meshlab.istio.ambient import AgentConfig, PodOverrides, inpod_rules

    rules = inpod_rules(AgentConfig(dns_capture=dns_capture),
                        PodOverrides.from_annotations(dict(annotations)))
    return rules.ruleset_v4, rules.fwmark_routes(4)


@lru_cache(maxsize=64)
def _build_ambient(name: str, ip: IPAddress, app_ports: tuple[int, ...], app_uid: int,
                   annotations: tuple[tuple[str, str], ...], mesh: frozenset[IPAddress],
                   services: tuple[Service, ...], namespace: str, dns_capture: bool,
                   extra_interfaces: tuple[Interface, ...]) -> Pod:
    from meshlab.istio.ztunnel import LISTENERS, ZTUNNEL, ZTUNNEL_UID, Ztunnel

    ruleset, routes = _ambient_rules(annotations, dns_capture)
    app = Process("app", app_uid, app_uid, "app")
    # ztunnel runs in its own pod on the node; only its sockets live in this namespace
    ztunnel = Process(ZTUNNEL, ZTUNNEL_UID, ZTUNNEL_UID, "ztunnel (node DaemonSet)")
    sockets = [Socket("app", "tcp", ANY, p) for p in app_ports]
    sockets += [Socket(ZTUNNEL, proto, ANY, port, transparent=True)
                for proto, port, _ in LISTENERS]
    setup = AmbientSetup(Ztunnel.build(pod_ip=ip, mesh=mesh, services=services), annotations,
                         dns_capture, extra_interfaces)
    return Pod(name=name, ip=ip, processes=(app, ztunnel), sockets=tuple(sockets),
               ruleset=ruleset, namespace=namespace, services=services,
               fwmark_routes=routes, ambient=setup)


def _ambient_variant(pod: Pod, annotations: dict[str, str], without_matches: tuple[str, ...],
                     argv: tuple[str, ...] | None) -> Pod:
    """``pod`` with other agent overrides and/or some conditions taken out of its rules."""
    setup = pod.ambient
    if setup is None:
        what = "annotations" if annotations else "conditions to remove"
        raise MeshlabError(f"{pod.name} is not an ambient pod, so {what} do not apply to it; "
                           "give them to an ambient pod (one built by Pod.ambient_pod)")
    if argv is not None:
        raise MeshlabError(f"{pod.name} is an ambient pod: istio-iptables flags do not apply; "
                           "change its rules with annotations instead")
    if annotations:
        merged = dict(setup.annotations)
        merged.update(annotations)
        pod = _build_ambient(pod.name, pod.ip, pod.app_ports, pod.app.uid,
                             tuple(sorted(merged.items())), setup.ztunnel.mesh,
                             setup.ztunnel.services, pod.namespace, setup.dns_capture,
                             setup.extra_interfaces)
    if without_matches:
        ruleset = pod.ruleset
        for i, text in enumerate(without_matches):
            if text in without_matches[:i]:
                raise MeshlabError(f"the condition {text!r} is given twice to remove; give it "
                                   "once (one removes it from every rule)")
            ruleset = _without_match(ruleset, text)
        assert pod.ambient is not None
        pod = replace(pod, ruleset=ruleset,
                      ambient=replace(pod.ambient, removed_matches=without_matches))
    return pod


def _without_match(ruleset: Ruleset, text: str) -> Ruleset:
    """A copy of ``ruleset`` where every rule containing the condition ``text`` (its words, in
    order, as the rule is written) has it taken out. None containing it: a clear error."""
    from meshlab.netfilter.parse import RulesParseError, parse_rule
    from meshlab.netfilter.ruleset import Chain, Ruleset, Table

    words = text.split()
    if not words or "-j" in words or "-A" in words:
        raise MeshlabError(f"{text!r} is not a condition to remove; write the match as the rule "
                           "writes it, e.g. -m mark ! --mark 0x539/0xfff")
    changed = 0
    tables = {}
    for tname, table in ruleset.tables.items():
        chains = {}
        for cname, chain in table.chains.items():
            rules = []
            for rule in chain.rules:
                have = rule.text.split()
                at = next((i for i in range(len(have) - len(words) + 1)
                           if have[i:i + len(words)] == words), None)
                if at is None:
                    rules.append(rule)
                    continue
                try:
                    rules.append(parse_rule(" ".join(have[:at] + have[at + len(words):])))
                except RulesParseError as error:
                    raise MeshlabError(f"taking {text!r} out of `{rule.text}` leaves no valid "
                                       f"rule ({error}); remove a whole condition") from None
                changed += 1
            chains[cname] = Chain(cname, chain.policy, tuple(rules))
        tables[tname] = Table(tname, MappingProxyType(chains))
    if not changed:
        raise MeshlabError(f"no rule contains the condition {text!r}; write it as the rules "
                           "show it (e.g. -m mark ! --mark 0x539/0xfff)")
    return Ruleset(ruleset.family, tables)


def _route_text(route: FwmarkRoute) -> str:
    return f"ip rule add fwmark {route.mark:#x}/{route.mask:#x} lookup {route.table}"


def _without_route(routes: tuple[FwmarkRoute, ...], text: str, pod: str) -> tuple[FwmarkRoute, ...]:
    """``routes`` without the ``ip rule ... fwmark M lookup T`` (or every rule whose table the
    ``ip route ... table T`` removed makes local) that ``text`` names."""
    words = text.split()
    kept: tuple[FwmarkRoute, ...] = routes
    try:
        if words[1] == "rule" and "fwmark" in words and "lookup" in words:
            mark_text, _, mask_text = words[words.index("fwmark") + 1].partition("/")
            mark, table = int(mark_text, 0), int(words[words.index("lookup") + 1])
            mask = int(mask_text, 0) if mask_text else 0xFFFFFFFF
            kept = tuple(r for r in routes if (r.mark, r.mask, r.table) != (mark, mask, table))
        elif words[1] == "route" and "table" in words:
            table = int(words[words.index("table") + 1])
            kept = tuple(r for r in routes if r.table != table)
    except (ValueError, IndexError):
        kept = routes
    if len(kept) == len(routes):
        have = "; ".join(_route_text(r) for r in routes) or "none"
        raise MeshlabError(f"{pod} has no policy routing {text!r} to remove; write e.g. "
                           f"'ip rule add fwmark 0x111/0xfff lookup 100' (it has: {have})")
    return kept
