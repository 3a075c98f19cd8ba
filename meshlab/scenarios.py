"""The scenario catalog: named requests with the outcome the model must produce.

The data lives in ``meshlab/data/scenarios.yaml``, shipped with the package: one entry per
case a learner or an SRE meets (the article's ``inbound`` and ``outbound`` cases, excluded
ports, undeclared ports, localhost, the pod calling itself, an app running as UID 1337, DNS,
TPROXY, BlackHoleCluster...). This module reads and checks it, and runs a scenario in
:meth:`meshlab.world.World.default`::

    >>> from meshlab.scenarios import run_scenario
    >>> walk = run_scenario("inbound")
    >>> walk.outcome, walk.delivered_to.sees_source
    ('delivered', '127.0.0.6')

A scenario may carry its own istio-iptables ``flags`` (e.g. ``-x 192.168.0.0/16``); the caller
may override them (``flags=``) and remove rules (``without_rules=``), which is how the rule lab
and ``meshlab walk --without-rule`` ask "what if this rule were not there?".

A mistake in the catalog is reported as :class:`ScenarioError` with the file, the line and what
to change, never as a traceback from the YAML library.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from meshlab.datafiles import CATALOG, data_file, read_text
from meshlab.errors import MeshlabError
from meshlab.walk import OUTCOMES, Delivery, Walk
from meshlab.world import Request

#: Where the catalog is read from (package data, see :mod:`meshlab.datafiles`).
CATALOG_PATH = data_file(CATALOG)

_SCENARIO_KEYS = ("name", "title", "why", "article", "request", "flags", "subject",
                  "annotations", "expect")
_REQUIRED_KEYS = ("name", "title", "request", "expect")
_REQUEST_KEYS = ("from", "process", "uid", "gid", "to", "port", "proto")
_EXPECT_KEYS = ("outcome", "delivered_to", "proxied", "listeners", "clusters")
_DELIVERY_KEYS = ("process", "port", "sees_source")
_ARTICLE_CASES = ("inbound", "outbound")


class ScenarioError(MeshlabError):
    """A scenario catalog entry is malformed, or a scenario name is unknown."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 column: int | None = None) -> None:
        where = ""
        if path is not None:
            where = path
            if line is not None:
                where += f":{line}"
                if column is not None:
                    where += f":{column}"
            where += ": "
        super().__init__(where + message)
        self.path = path
        self.line = line
        self.column = column


RequestSpec = Request
"""A catalog request is a :class:`meshlab.world.Request` (names resolved by the world)."""


@dataclass(frozen=True, slots=True)
class Expectation:
    """What the model must produce; ``None`` fields are not checked."""

    outcome: str
    delivered_to: Delivery | None = None
    proxied: bool | None = None
    listeners: tuple[int, ...] | None = None
    clusters: tuple[str, ...] | None = None

    def problems(self, walk: Walk) -> list[str]:
        """Every way ``walk`` differs from this expectation (empty when it matches)."""
        found: list[str] = []
        if walk.outcome != self.outcome:
            found.append(f"outcome is {walk.outcome!r}, expected {self.outcome!r}")
        if self.delivered_to is not None:
            got = walk.delivered_to
            want = self.delivered_to.to_json()
            if got is None or got.to_json() != want:
                found.append(f"delivered to {None if got is None else got.to_json()}, "
                             f"expected {want}")
        if self.proxied is not None and walk.proxied != self.proxied:
            found.append(f"proxied is {walk.proxied}, expected {self.proxied}")
        if self.listeners is not None:
            got_listeners = proxy_listeners(walk)
            if got_listeners != self.listeners:
                found.append(f"proxy listeners {list(got_listeners)}, "
                             f"expected {list(self.listeners)}")
        if self.clusters is not None:
            got_clusters = tuple(e.cluster for e in walk.events
                                 if e.kind == "proxy" and e.cluster)
            if got_clusters != self.clusters:
                found.append(f"clusters {list(got_clusters)}, expected {list(self.clusters)}")
        return found


@dataclass(frozen=True, slots=True)
class Scenario:
    """One catalog entry. ``flags`` is ``None`` for the default istio-init flags.

    ``subject`` names the pod under study when it is not ``productpage`` (an ambient pod's
    scenarios study ``details``); ``annotations`` are pod-level overrides given to an ambient
    subject's istio-cni agent (``ambient.istio.io/dns-capture: "false"``, ...).
    """

    name: str
    title: str
    why: str
    request: Request
    expect: Expectation
    flags: tuple[str, ...] | None = None
    article: str | None = None
    line: int = 0
    subject: str | None = None
    annotations: tuple[tuple[str, str], ...] = ()

    @property
    def ambient(self) -> bool:
        """True for the ambient-mode scenarios (their names start with ``ambient-``)."""
        return self.name.startswith("ambient-")


def proxy_listeners(walk: Walk) -> tuple[int, ...]:
    """The proxy listener ports that accepted a connection in ``walk``, in order."""
    ports: list[int] = []
    for event in walk.events:
        if event.kind == "accept" and event.actor == "proxy" and event.listener:
            ports.append(int(event.listener.rsplit(":", 1)[1]))
    return tuple(ports)


# --------------------------------------------------------------------------- loading


class _LineLoader(yaml.SafeLoader):
    """A safe YAML loader that remembers the line of every mapping and of each of its keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        mapping = super().construct_mapping(node, deep=True)
        mapping["__line__"] = node.start_mark.line + 1
        mapping["__lines__"] = {k.value: k.start_mark.line + 1 for k, _ in node.value
                                if isinstance(k, yaml.ScalarNode)}
        return mapping


def parse_catalog(text: str, path: str = "scenarios.yaml") -> dict[str, Scenario]:
    """Read and check a catalog document; raises :class:`ScenarioError` with file and line."""
    try:
        data = yaml.load(text, Loader=_LineLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        raise ScenarioError(
            f"not valid YAML ({getattr(error, 'problem', None) or error}); check the "
            "indentation and quote values that contain ': ' or start with '*'",
            path=path,
            line=None if mark is None else mark.line + 1,
            column=None if mark is None else mark.column + 1,
        ) from None
    if not isinstance(data, list):
        raise ScenarioError("the catalog must be a YAML list of scenarios (lines starting "
                            "with '- name: ...')", path=path, line=1)
    scenarios: dict[str, Scenario] = {}
    for entry in data:
        scenario = _scenario(entry, path)
        if scenario.name in scenarios:
            raise ScenarioError(
                f"scenario {scenario.name!r} is defined twice (first at line "
                f"{scenarios[scenario.name].line}); give each scenario a unique name",
                path=path, line=scenario.line)
        scenarios[scenario.name] = scenario
    return scenarios


def _check_keys(entry: dict[str, Any], allowed: Sequence[str], what: str, path: str) -> None:
    for key in entry:
        if key in ("__line__", "__lines__"):
            continue
        if key not in allowed:
            raise ScenarioError(f"{what}: unknown key {key!r}; allowed keys are "
                                f"{', '.join(allowed)}",
                                path=path, line=entry["__lines__"].get(key, entry["__line__"]))


def _line(entry: dict[str, Any], key: str) -> int:
    return int(entry["__lines__"].get(key, entry["__line__"]))


def _scenario(entry: Any, path: str) -> Scenario:
    if not isinstance(entry, dict):
        raise ScenarioError("each scenario must be a mapping with name, title, request and "
                            f"expect; found {entry!r}", path=path)
    line = entry["__line__"]
    name = entry.get("name")
    what = f"scenario {name!r}" if name else "scenario"
    _check_keys(entry, _SCENARIO_KEYS, what, path)
    for key in _REQUIRED_KEYS:
        if key not in entry:
            raise ScenarioError(f"{what}: missing key {key!r}", path=path, line=line)
    if not isinstance(name, str) or not name or any(c.isspace() for c in name):
        raise ScenarioError(f"name must be one word (letters, digits, '-'), got {name!r}",
                            path=path, line=_line(entry, "name"))
    article = entry.get("article")
    if article is not None and article not in _ARTICLE_CASES:
        raise ScenarioError(f"{what}: article must be one of {', '.join(_ARTICLE_CASES)}, "
                            f"got {article!r}", path=path, line=_line(entry, "article"))
    flags_value = entry.get("flags")
    flags: tuple[str, ...] | None = None
    if flags_value is not None:
        if not isinstance(flags_value, str):
            raise ScenarioError(f"{what}: flags must be one string of istio-iptables flags",
                                path=path, line=_line(entry, "flags"))
        try:
            flags = tuple(shlex.split(flags_value))
        except ValueError as error:
            raise ScenarioError(f"{what}: cannot split flags ({error}); close the quotes",
                                path=path, line=_line(entry, "flags")) from None
    subject = entry.get("subject")
    if subject is not None and (not isinstance(subject, str) or not subject.startswith("pod/")):
        raise ScenarioError(f"{what}: subject must be pod/NAME, got {subject!r}", path=path,
                            line=_line(entry, "subject"))
    annotations = entry.get("annotations") or {}
    if not isinstance(annotations, dict) or not all(
            isinstance(v, str) for k, v in annotations.items() if not k.startswith("__")):
        raise ScenarioError(f"{what}: annotations must be a mapping of strings, e.g. "
                            '{ambient.istio.io/dns-capture: "false"} (quote true/false)',
                            path=path, line=_line(entry, "annotations"))
    return Scenario(
        name=name,
        title=str(entry["title"]),
        why=str(entry.get("why", "")),
        request=_request(entry["request"], what, path, _line(entry, "request")),
        expect=_expect(entry["expect"], what, path, _line(entry, "expect")),
        flags=flags,
        article=article,
        line=line,
        subject=subject,
        annotations=tuple(sorted((k, v) for k, v in annotations.items()
                                 if not k.startswith("__"))),
    )


def _int(value: Any, what: str, path: str, line: int, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ScenarioError(f"{what} must be a whole number from {low} to {high}, got {value!r}",
                            path=path, line=line)
    return value


def _request(entry: Any, what: str, path: str, line: int) -> RequestSpec:
    if not isinstance(entry, dict):
        raise ScenarioError(f"{what}: request must be a mapping like "
                            "{from: pod/reviews, to: pod/productpage, port: 9080}",
                            path=path, line=line)
    _check_keys(entry, _REQUEST_KEYS, f"{what} request", path)
    for key in ("from", "to", "port"):
        if key not in entry:
            raise ScenarioError(f"{what}: request needs {key!r}", path=path,
                                line=entry["__line__"])
    source = entry["from"]
    if not isinstance(source, str) or not source.startswith(("pod/", "host/")):
        raise ScenarioError(f"{what}: request 'from' must be pod/NAME or host/NAME, got "
                            f"{source!r}", path=path, line=_line(entry, "from"))
    proto = entry.get("proto", "tcp")
    if proto not in ("tcp", "udp"):
        raise ScenarioError(f"{what}: proto must be tcp or udp, got {proto!r}", path=path,
                            line=_line(entry, "proto"))
    uid = entry.get("uid")
    gid = entry.get("gid")
    return Request(
        source=source,
        to=str(entry["to"]),
        port=_int(entry["port"], f"{what}: port", path, _line(entry, "port"), 1, 65535),
        proto=proto,
        process=None if entry.get("process") is None else str(entry["process"]),
        uid=None if uid is None else _int(uid, f"{what}: uid", path, _line(entry, "uid"),
                                          0, 2**32 - 2),
        gid=None if gid is None else _int(gid, f"{what}: gid", path, _line(entry, "gid"),
                                          0, 2**32 - 2),
    )


def _expect(entry: Any, what: str, path: str, line: int) -> Expectation:
    if not isinstance(entry, dict):
        raise ScenarioError(f"{what}: expect must be a mapping with at least 'outcome'",
                            path=path, line=line)
    _check_keys(entry, _EXPECT_KEYS, f"{what} expect", path)
    outcome = entry.get("outcome")
    if outcome not in OUTCOMES:
        raise ScenarioError(f"{what}: expect.outcome must be one of {', '.join(OUTCOMES)}, "
                            f"got {outcome!r}", path=path, line=_line(entry, "outcome")
                            if "outcome" in entry else entry["__line__"])
    delivery = None
    raw = entry.get("delivered_to")
    if raw is not None:
        dline = _line(entry, "delivered_to")
        if not isinstance(raw, dict) or any(k not in raw for k in _DELIVERY_KEYS):
            raise ScenarioError(f"{what}: delivered_to needs process, port and sees_source",
                                path=path, line=dline)
        _check_keys(raw, _DELIVERY_KEYS, f"{what} delivered_to", path)
        delivery = Delivery(str(raw["process"]),
                            _int(raw["port"], f"{what}: delivered_to.port", path, dline, 1, 65535),
                            str(raw["sees_source"]))
    if outcome == "delivered" and delivery is None:
        raise ScenarioError(f"{what}: outcome 'delivered' needs delivered_to "
                            "{process, port, sees_source}", path=path, line=entry["__line__"])
    proxied = entry.get("proxied")
    if proxied is not None and not isinstance(proxied, bool):
        raise ScenarioError(f"{what}: proxied must be true or false", path=path,
                            line=_line(entry, "proxied"))
    listeners = entry.get("listeners")
    if listeners is not None:
        if not isinstance(listeners, list):
            raise ScenarioError(f"{what}: listeners must be a list of ports like [15001]",
                                path=path, line=_line(entry, "listeners"))
        listeners = tuple(_int(p, f"{what}: listener", path, _line(entry, "listeners"), 1,
                               65535) for p in listeners)
    clusters = entry.get("clusters")
    if clusters is not None:
        if not isinstance(clusters, list):
            raise ScenarioError(f"{what}: clusters must be a list of cluster names",
                                path=path, line=_line(entry, "clusters"))
        clusters = tuple(str(c) for c in clusters)
    return Expectation(outcome, delivery, proxied, listeners, clusters)


@lru_cache(maxsize=4)
def _load(path: str | None) -> Mapping[str, Scenario]:
    if path is None:
        return parse_catalog(read_text(CATALOG), path=str(CATALOG_PATH))
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ScenarioError(f"cannot read the scenario catalog ({error.strerror})",
                            path=path) from None
    return parse_catalog(text, path=path)


def catalog(path: str | Path | None = None) -> Mapping[str, Scenario]:
    """Every scenario by name, in file order (read once, then cached).

    Without ``path``, the catalog shipped with the package (:data:`CATALOG_PATH`).
    """
    return _load(None if path is None else str(path))


def get_scenario(name: str) -> Scenario:
    """The scenario called ``name``; an unknown name lists the choices."""
    scenarios = catalog()
    try:
        return scenarios[name]
    except KeyError:
        raise ScenarioError(f"unknown scenario {name!r}; choose one of: "
                            f"{', '.join(scenarios)}") from None


def run_scenario(name: str | Scenario, *, without_rules: Sequence[str] = (),
                 flags: str | Sequence[str] | None = None,
                 without_matches: Sequence[str] = ()) -> Walk:
    """Run a catalog scenario in the default world and return its :class:`Walk`.

    ``flags`` (a string or an argv list) replaces the scenario's istio-iptables flags;
    ``without_rules`` removes each rule whose restore-form text (without ``-A CHAIN``) equals
    one of the given texts (or, for ``ip rule ...``/``ip route ...``, that policy routing);
    ``without_matches`` takes a condition out of every rule of an ambient subject
    (``-m mark ! --mark 0x539/0xfff``).
    """
    from meshlab.world import World

    scenario = name if isinstance(name, Scenario) else get_scenario(name)
    if isinstance(flags, str):
        try:
            flags = tuple(shlex.split(flags))
        except ValueError as error:
            raise MeshlabError(f"cannot split the flags {flags!r} ({error}); close the "
                               "quotes") from None
    chosen = tuple(flags) if flags is not None else scenario.flags
    return World.default().run_spec(
        scenario.request, scenario=scenario.name, flags=chosen,
        without_rules=tuple(without_rules),
        subject=None if scenario.subject is None else scenario.subject,
        annotations=dict(scenario.annotations) or None,
        without_matches=tuple(without_matches))
