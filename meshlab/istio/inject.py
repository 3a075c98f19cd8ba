"""Sidecar injection: the pod the webhook really produces, and the ``istio-init`` arguments.

When the webhook injects (see :mod:`meshlab.istio.webhook` for *whether* it does), istiod
renders Istio's injection template against the pod and merges the result into it. This
module renders the parts that decide where traffic goes, as the template at Istio HEAD
does (``ISTIO-FACTS.md`` sections 3.1-3.4):

* ``istio-init``, an init container that runs ``istio-iptables`` once, as root with
  ``NET_ADMIN``/``NET_RAW``, to write the nat rules into the pod's network namespace.
  Its arguments come from the pod's annotations, always in the order
  ``-p -z -u -m -i -x -b -d``, then ``-q -o -k -c`` when asked for, then
  ``--log_output_level=...``. :attr:`InjectionResult.init_args` feeds them straight into
  :mod:`meshlab.istio.capture`, so "annotations -> flags -> rules" is one call.
* ``istio-proxy``, the Envoy sidecar (started by ``pilot-agent``), running as UID/GID 1337.
  That identity is what the rules exempt (``-m owner --uid-owner 1337 -j RETURN``), so the
  proxy's own connections are not captured again. In TPROXY mode it runs as UID 0 with GID
  1337 and ``NET_ADMIN`` (it must bind non-local addresses), so only the GID rules exempt it.
* The ``sidecar.istio.io/status`` annotation (JSON) recording what was added.

**Why ``-d`` always starts with ``15090,15021``.** ``-d`` lists inbound ports that are *not*
redirected to Envoy. 15090 (Envoy's Prometheus stats) and 15021 (the health-check port the
kubelet's readiness probe calls) are served by the sidecar itself; redirecting a connection
to them into port 15006 would hand the kubelet's probe to the inbound listener instead of to
the port that answers it. The template therefore writes them unconditionally, then the
user's ``excludeInboundPorts``, then the agent's status port (15020) unless it is ``0`` or
already listed - exactly the template's ``excludeInboundPort`` helper
(:func:`exclude_inbound_port`). Nothing is de-duplicated.

**Layout: native sidecars.** The classic layout puts ``istio-proxy`` in ``spec.containers``
after the application containers, as most articles show. Since Kubernetes has *sidecar
containers* (an init container with ``restartPolicy: Always``: started before the
application containers, kept running beside them, stopped after them), Istio can put
``istio-proxy`` there instead, as the second init container after ``istio-init``. That is
why a Job's pod can now finish: the sidecar no longer keeps it alive. Which layout a pod
gets is :func:`native_sidecar_for`'s rule: Istio 1.19-1.26 only on request, Istio 1.27+
when the node's kubelet is 1.33 or newer, and (since Istio 1.24) the pod's
``sidecar.istio.io/nativeSidecar`` annotation overrides both. meshlab's defaults are a
current cluster's (Istio :data:`DEFAULT_ISTIO_VERSION`, kubelet
:data:`DEFAULT_KUBELET_VERSION`), so native sidecars by default. The capture rules are the
same in both layouts.

**istio-cni.** ``istio-init`` needs ``NET_ADMIN`` and ``NET_RAW``, which Pod Security's
``restricted`` level forbids. With the istio-cni node agent installed (``cni=True``) the
rules are written instead by the CNI plugin while the kubelet sets up the pod's network,
before any container starts, from the pod's annotations (the injector writes the capture
annotations onto the pod for it to read; :func:`cni_args_for` is what the plugin makes of
them). The injector adds ``istio-validation`` in place of ``istio-init``: the same
``istio-iptables`` arguments plus ``--run-validation --skip-rule-apply``, run as UID 1337
with no capabilities, which only checks that a connection really is redirected (to port
15002) and fails the pod if not. The plugin's rules differ from istio-init's in two
details: ``-d`` lists the annotation's ports then ``15020,15021,15090`` (de-duplicated), and
outbound port 15020 is excluded (``-o 15020``) unless the pod says otherwise.

Simplifications (they do not change where traffic goes): no probe rewriting
(``ISTIO_KUBE_APP_PROBERS``), no ``proxyMetadata`` env, no resource requests, a fixed
proxy image, one revision (``default``), no Prometheus annotation merging beyond adding
the three ``prometheus.io/*`` annotations when absent.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from meshlab.errors import MeshlabError
from meshlab.istio.webhook import InjectionDecision, should_inject

if TYPE_CHECKING:  # imported lazily at run time: written concurrently by another module
    from meshlab.istio.capture import CaptureRules
    from meshlab.istio.flags import CaptureConfig

__all__ = [
    "ANNOTATIONS",
    "DEFAULT_PROXY_IMAGE",
    "InjectionDecision",
    "InjectionResult",
    "NativeSidecarChoice",
    "PodError",
    "cni_annotations",
    "cni_args_for",
    "exclude_inbound_port",
    "init_args_for",
    "inject",
    "load_pod",
    "native_sidecar_for",
    "parse_version",
    "should_inject",
]

DEFAULT_PROXY_IMAGE = "docker.io/istio/proxyv2:1.27.0"
PROXY_UID = 1337
PROXY_GID = 1337
PROXY_PORT = 15001          # -p: where ISTIO_REDIRECT sends outbound connections
INBOUND_CAPTURE_PORT = 15006  # -z: where ISTIO_IN_REDIRECT sends inbound connections
STATUS_PORT = "15020"       # pilot-agent's status/merged-metrics port (global.proxy.statusPort)
HEALTH_PORT = 15021         # Envoy's health-check listener (/healthz/ready)
INTERCEPTION_MODES = ("REDIRECT", "TPROXY", "NONE")

# Annotation names (istio/api annotation/annotations.yaml).
A_INTERCEPTION = "sidecar.istio.io/interceptionMode"
A_INCLUDE_OUT_CIDRS = "traffic.sidecar.istio.io/includeOutboundIPRanges"
A_EXCLUDE_OUT_CIDRS = "traffic.sidecar.istio.io/excludeOutboundIPRanges"
A_INCLUDE_IN_PORTS = "traffic.sidecar.istio.io/includeInboundPorts"
A_EXCLUDE_IN_PORTS = "traffic.sidecar.istio.io/excludeInboundPorts"
A_INCLUDE_OUT_PORTS = "traffic.sidecar.istio.io/includeOutboundPorts"
A_EXCLUDE_OUT_PORTS = "traffic.sidecar.istio.io/excludeOutboundPorts"
A_EXCLUDE_IFACES = "traffic.sidecar.istio.io/excludeInterfaces"
A_KUBEVIRT = "traffic.sidecar.istio.io/kubevirtInterfaces"
A_REROUTE = "istio.io/reroute-virtual-interfaces"
A_STATUS_PORT = "status.sidecar.istio.io/port"
A_AGENT_LOG = "sidecar.istio.io/agentLogLevel"
A_PROXY_LOG = "sidecar.istio.io/logLevel"
A_COMPONENT_LOG = "sidecar.istio.io/componentLogLevel"
A_CAP_BIND = "sidecar.istio.io/capNetBindService"
A_STATUS = "sidecar.istio.io/status"
A_NATIVE_SIDECAR = "sidecar.istio.io/nativeSidecar"

#: The Istio release meshlab's defaults follow (a cluster of late 2026) and the kubelet of
#: a current node: together they give native sidecars.
DEFAULT_ISTIO_VERSION = "1.28"
DEFAULT_KUBELET_VERSION = "1.34"
#: The kubelet minor version from which Istio's ``auto`` mode turns native sidecars on
#: (``minVersion := 33`` in ``pkg/kube/inject/webhook.go``: sidecar containers are GA in
#: Kubernetes 1.33).
NATIVE_SIDECAR_MIN_KUBELET_MINOR = 33
#: The Istio releases that brought native sidecars (``ENABLE_NATIVE_SIDECARS``, a boolean
#: off by default), the per-pod annotation, and the ``auto`` mode (then the default).
NATIVE_SIDECARS_SINCE = (1, 19)
NATIVE_SIDECAR_ANNOTATION_SINCE = (1, 24)
NATIVE_SIDECAR_AUTO_SINCE = (1, 27)

#: The annotations that shape capture, and the istio-iptables flag each one fills.
ANNOTATIONS: Mapping[str, str] = {
    A_INTERCEPTION: "-m",
    A_INCLUDE_OUT_CIDRS: "-i",
    A_EXCLUDE_OUT_CIDRS: "-x",
    A_INCLUDE_IN_PORTS: "-b",
    A_EXCLUDE_IN_PORTS: "-d",
    A_STATUS_PORT: "-d",
    A_INCLUDE_OUT_PORTS: "-q",
    A_EXCLUDE_OUT_PORTS: "-o",
    A_REROUTE: "-k",
    A_KUBEVIRT: "-k",
    A_EXCLUDE_IFACES: "-c",
}

_VOLUMES: tuple[tuple[str, dict[str, Any], str], ...] = (
    # (volume name, volume source, mount path in istio-proxy)
    ("workload-socket", {"emptyDir": {}}, "/var/run/secrets/workload-spiffe-uds"),
    ("credential-socket", {"emptyDir": {}}, "/var/run/secrets/credential-uds"),
    ("workload-certs", {"emptyDir": {}}, "/var/run/secrets/workload-spiffe-credentials"),
    ("istio-envoy", {"emptyDir": {"medium": "Memory"}}, "/etc/istio/proxy"),
    ("istio-data", {"emptyDir": {}}, "/var/lib/istio/data"),
    ("istio-podinfo", {"downwardAPI": {"items": [
        {"fieldRef": {"fieldPath": "metadata.labels"}, "path": "labels"},
        {"fieldRef": {"fieldPath": "metadata.annotations"}, "path": "annotations"},
    ]}}, "/etc/istio/pod"),
    ("istio-token", {"projected": {"sources": [{"serviceAccountToken": {
        "audience": "istio-ca", "expirationSeconds": 43200, "path": "istio-token"}}]}},
     "/var/run/secrets/tokens"),
    ("istiod-ca-cert", {"configMap": {"name": "istio-ca-root-cert"}}, "/var/run/secrets/istio"),
)


# --- errors and where they are ------------------------------------------------------------

class PodError(MeshlabError):
    """A Pod manifest meshlab (or Kubernetes, or Istio's injector) cannot accept.

    ``line``/``column`` are 1-based and ``None`` when the pod was given as a dict;
    ``field`` is the dotted path of the offending field (``"metadata.annotations[...]"``).
    """

    def __init__(self, message: str, *, line: int | None = None, column: int | None = None,
                 field: str | None = None) -> None:
        super().__init__(message)
        self.line = line
        self.column = column
        self.field = field


PathPart = str | int


@dataclass(frozen=True)
class _Where:
    """Maps a field path of a loaded manifest back to its line and column in the text."""

    source: str                      # file name, "<stdin>", "<text>" or "<dict>"
    root: yaml.Node | None = None

    def locate(self, path: Sequence[PathPart]) -> tuple[int, int] | None:
        node = self.root
        if node is None:
            return None
        best = node
        for part in path:
            nxt: yaml.Node | None = None
            if isinstance(node, yaml.MappingNode) and isinstance(part, str):
                for key, value in node.value:
                    if isinstance(key, yaml.ScalarNode) and key.value == part:
                        nxt = value
                        break
            elif (isinstance(node, yaml.SequenceNode) and isinstance(part, int)
                  and 0 <= part < len(node.value)):
                nxt = node.value[part]
            if nxt is None:
                break
            node = best = nxt
        return best.start_mark.line + 1, best.start_mark.column + 1

    def error(self, what: str, fix: str, path: Sequence[PathPart] = ()) -> PodError:
        dotted = _dotted(path)
        position = self.locate(path)
        if position is None and self.source == "<dict>":
            # a pod given as a dict has no file or line to point at: the sentence leads, and
            # names the field only when it does not already (an annotation's name, say)
            field = f" (in the pod's {dotted})" if dotted and str(path[-1]) not in what else ""
            return PodError(f"{what[:1].upper()}{what[1:]}{field}. {fix}", field=dotted or None)
        where = self.source
        if position is not None:
            where += f", line {position[0]}, column {position[1]}"
        if dotted:
            where += f" ({dotted})"
        return PodError(f"{where}: {what}. {fix}", line=position[0] if position else None,
                        column=position[1] if position else None, field=dotted or None)


def _dotted(path: Sequence[PathPart]) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif "." in part or "/" in part:
            text += f"[{part!r}]"
        else:
            text += f".{part}" if text else part
    return text


# --- loading and validating a Pod ----------------------------------------------------------

def load_pod(source: str | Path | Mapping[str, Any], *, name: str | None = None
             ) -> dict[str, Any]:
    """Read a Pod manifest from YAML text, a file, or a dict; check it; return a dict.

    A file is a :class:`~pathlib.Path`, or a ``str`` without a newline ending in .yaml, .yml
    or .json (``load_pod("../data/pods/productpage-v1.yaml")``); any other ``str`` is the
    YAML text (text read from a file ends with a newline).
    ``name`` labels YAML text in error messages (e.g. ``"<stdin>"``); a path labels itself.

    Raises :class:`PodError` (a :class:`~meshlab.errors.MeshlabError`) saying what is wrong,
    where (line and column for text) and how to fix it: bad YAML, more than one document,
    a kind other than ``Pod``, no containers, a label or annotation that is not a string.
    """
    return _load(source, name)[0]


def _load(source: str | Path | Mapping[str, Any], name: str | None = None
          ) -> tuple[dict[str, Any], _Where]:
    if isinstance(source, Mapping):
        where = _Where(name or "<dict>")
        pod = copy.deepcopy(dict(source))
    else:
        text, label = _read_text(source)
        where, pod = _parse_yaml(text, name if label == "<text>" and name else label)
    _validate_pod(pod, where)
    return pod, where


#: A ``str`` without a newline ending so is a file name; any other ``str`` is YAML text.
_FILE_SUFFIXES = (".yaml", ".yml", ".json")


def _read_text(source: str | Path) -> tuple[str, str]:
    """The text and its label. A ``Path`` is a file, and so is a ``str`` without a newline
    ending in .yaml, .yml or .json; any other ``str`` is the YAML itself. The form alone
    decides: whether a file of that name happens to exist never does."""
    if isinstance(source, str):
        one_line = "\n" not in source
        if not (one_line and source.strip().endswith(_FILE_SUFFIXES)):
            if one_line and ":" not in source:
                raise PodError(f"{source!r} is neither a Pod manifest (YAML text) nor a file "
                               "name ending in .yaml, .yml or .json. To read a file of another "
                               f"name, pass pathlib.Path({source!r}).")
            return source, "<text>"
    path = Path(source.strip() if isinstance(source, str) else source)
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except FileNotFoundError:
        raise PodError(f"{path}: no such file. Check the path, or pass the YAML text "
                       "itself (or '-' on the command line to read standard input)."
                       ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise PodError(f"{path}: cannot read it ({error}). Pass a readable UTF-8 YAML "
                       "file.") from None


#: The largest manifest read: the API server refuses objects over 1.5 MiB (etcd's request
#: limit), so no real Pod is bigger, and PyYAML reads ~1 MiB a second: a wrong file is named
#: as such instead of keeping the command busy for minutes.
MAX_MANIFEST_BYTES = 3 * 1024 * 1024 // 2
#: The most values a manifest may hold once its YAML aliases (``*name``) are expanded. A real
#: Pod has a few hundred; a "billion laughs" document (aliases of aliases of lists) expands to
#: billions, which printing the injected pod would try to write out.
MAX_EXPANDED_NODES = 100_000


def _expanded_size(root: yaml.Node, name: str) -> None:
    """Raise PodError if ``root`` expands (aliases followed) to over MAX_EXPANDED_NODES nodes.

    The composed graph shares an aliased node instead of copying it, so the expanded size is
    computed with one memo per node: linear in the text, however large the expansion."""
    sizes: dict[int, int] = {}
    pending: set[int] = set()
    aliased = False

    def size(node: yaml.Node) -> int:
        nonlocal aliased
        key = id(node)
        if key in sizes:
            aliased = True  # the same node met twice: an alias
            return sizes[key]
        if key in pending:
            mark = node.start_mark
            raise PodError(f"{name}, line {mark.line + 1}, column {mark.column + 1}: a YAML "
                           "alias refers to a value that contains it (a recursive value). "
                           "Write the value out instead of using an anchor and alias.",
                           line=mark.line + 1, column=mark.column + 1)
        pending.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
            _no_duplicate_keys(node, name)
        else:
            children = []
        for child in children:
            total += size(child)
            if total > MAX_EXPANDED_NODES:
                mark = child.start_mark
                what, fix = ((" with its YAML aliases (*name) expanded", " (a 'billion laughs' "
                              "document?). Write the values out instead of nesting anchors "
                              "and aliases.") if aliased else
                             ("", ". Check that it is the right file (one Pod)."))
                raise PodError(
                    f"{name}, line {mark.line + 1}, column {mark.column + 1}:{what} the "
                    f"manifest holds over {MAX_EXPANDED_NODES:,} values; a Pod has a few "
                    f"hundred{fix}", line=mark.line + 1, column=mark.column + 1)
        pending.discard(key)
        sizes[key] = total
        return total

    size(root)


def _no_duplicate_keys(node: yaml.MappingNode, name: str) -> None:
    """Kubernetes refuses a mapping that repeats a key; PyYAML would silently keep the last."""
    seen: dict[str, yaml.Node] = {}
    for key, _value in node.value:
        if not isinstance(key, yaml.ScalarNode):
            continue
        first = seen.setdefault(key.value, key)
        if first is not key:
            mark = key.start_mark
            raise PodError(
                f"{name}, line {mark.line + 1}, column {mark.column + 1}: the key "
                f"{key.value!r} appears twice in one mapping (first on line "
                f"{first.start_mark.line + 1}); Kubernetes refuses that. Keep one of them.",
                line=mark.line + 1, column=mark.column + 1)


def _parse_yaml(text: str, name: str) -> tuple[_Where, dict[str, Any]]:
    if len(text) > MAX_MANIFEST_BYTES:
        raise PodError(f"{name}: the manifest is {len(text) / 2**20:.1f} MiB; Kubernetes "
                       "refuses objects over 1.5 MiB, so this is not one Pod. Check that it is "
                       "the right file (one Pod, e.g. kubectl get pod NAME -o yaml).")
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
        problem = getattr(error, "problem", None) or str(error)
        context = getattr(error, "context", None)
        if mark is not None:
            place = f"{name}, line {mark.line + 1}, column {mark.column + 1}"
            line, column = mark.line + 1, mark.column + 1
        else:
            place, line, column = name, None, None
        detail = f"{context} ... {problem}" if context else problem
        raise PodError(
            f"{place}: not valid YAML: {detail}. Check the indentation (spaces, not tabs) and "
            "quote values that contain ': ' or start with '*', '&', '!' or '{'.",
            line=line, column=column) from None
    nodes = [node for node in nodes if node is not None]
    if not nodes:
        raise PodError(f"{name}: the document is empty. Pass one Pod manifest "
                       "(apiVersion: v1, kind: Pod, metadata, spec.containers).")
    if len(nodes) > 1:
        second = nodes[1].start_mark.line + 1
        raise PodError(f"{name}: found {len(nodes)} YAML documents (the second starts at line "
                       f"{second}). meshlab inject takes exactly one Pod; split the file.",
                       line=second, column=1)
    root = nodes[0]
    _expanded_size(root, name)
    loader = yaml.SafeLoader("")
    try:
        data = loader.construct_document(root)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
        line = mark.line + 1 if mark else None
        column = mark.column + 1 if mark else None
        place = f"{name}, line {line}, column {column}" if mark else name
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise PodError(f"{place}: cannot read this YAML value ({problem}). A manifest holds "
                       "only plain values: quote it as a string, or drop the '!' tag.",
                       line=line, column=column) from None
    finally:
        loader.dispose()
    where = _Where(name, root)
    if not isinstance(data, dict):
        raise where.error(f"the document is a {_yaml_type(data)}, not a mapping",
                          "A Pod manifest is a mapping with apiVersion, kind, metadata, spec.")
    return where, data


def _validate_pod(pod: dict[str, Any], where: _Where) -> None:
    kind = pod.get("kind")
    if kind is None:
        raise where.error("the manifest has no 'kind'", "Add 'kind: Pod' and 'apiVersion: v1'.")
    if kind != "Pod":
        hint = ("Copy its spec.template (metadata and spec) into a manifest with "
                "'apiVersion: v1' and 'kind: Pod'."
                if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job")
                else "Pass a manifest with 'kind: Pod'.")
        raise where.error(f"kind is {kind!r}, not 'Pod'; the injector mutates Pods", hint,
                          ["kind"])
    metadata = pod.setdefault("metadata", {})
    if metadata is None:
        metadata = pod["metadata"] = {}
    if not isinstance(metadata, dict):
        raise where.error("metadata is not a mapping", "Write 'metadata:' followed by indented "
                          "fields such as name and labels.", ["metadata"])
    for key in ("labels", "annotations"):
        values = metadata.get(key)
        if values is None:
            metadata.pop(key, None)
            continue
        if not isinstance(values, dict):
            raise where.error(f"metadata.{key} is not a mapping", f"Write one 'key: \"value\"' "
                              f"per line under '{key}:'.", ["metadata", key])
        for name, value in values.items():
            if not isinstance(value, str):
                shown = json.dumps(value) if isinstance(value, (bool, int, float)) else repr(value)
                raise where.error(
                    f"the value of {key[:-1]} {name!r} is "
                    + ("empty (null)" if value is None else f"{shown} ({type(value).__name__})")
                    + "; Kubernetes only accepts strings here",
                    f"Quote it: {name}: \"{_plain(value)}\"." if value is not None else
                    f"Give it a value in quotes (e.g. {name}: \"true\") or remove the line.",
                    ["metadata", key, str(name)])
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        raise where.error("the pod has no spec (or it is not a mapping)",
                          "Add 'spec:' with a 'containers:' list.", ["spec"])
    containers = spec.get("containers")
    if containers is not None and not isinstance(containers, list):
        raise where.error(f"spec.containers is a {_yaml_type(containers)}, not a list",
                          "Write each container as a '- name: ...' item under containers:.",
                          ["spec", "containers"])
    if not containers:
        raise where.error("the pod has no containers", "Add at least one container under "
                          "spec.containers (each with a name and an image).",
                          ["spec", "containers"] if "containers" in spec else ["spec"])
    for group in ("initContainers", "containers"):
        items = spec.get(group) or []
        if not isinstance(items, list):
            raise where.error(f"spec.{group} is not a list", "Write each container as a "
                              "'- name: ...' item.", ["spec", group])
        for index, container in enumerate(items):
            if not isinstance(container, dict):
                raise where.error(
                    f"spec.{group}[{index}] is a {_yaml_type(container)}, not a mapping",
                    "Write each container as fields under its '- ', e.g. '- name: app' "
                    "then '  image: nginx'.", ["spec", group, index])
            if not isinstance(container.get("name"), str):
                raise where.error(f"spec.{group}[{index}] has no name",
                                  "Give every container a 'name:'.", ["spec", group, index])
            ports = container.get("ports") or []
            if not isinstance(ports, list):
                raise where.error(
                    f"spec.{group}[{index}].ports is a {_yaml_type(ports)}, not a list",
                    "Write each port as a list item, e.g. '- containerPort: 8080'.",
                    ["spec", group, index, "ports"])
            for p_index, port in enumerate(ports):
                number = port.get("containerPort") if isinstance(port, dict) else None
                if not isinstance(number, int) or isinstance(number, bool) \
                        or not 1 <= number <= 65535:
                    raise where.error(
                        f"containerPort {number!r} is not a port number",
                        "Use an integer from 1 to 65535 (unquoted).",
                        ["spec", group, index, "ports", p_index])
    if "hostNetwork" in spec and not isinstance(spec["hostNetwork"], bool):
        raise where.error(f"hostNetwork is {spec['hostNetwork']!r}, not true or false",
                          "Write hostNetwork: true or hostNetwork: false (unquoted).",
                          ["spec", "hostNetwork"])


def _yaml_type(value: Any) -> str:
    """How YAML would call the type of ``value``: mapping, list, string, number, ..."""
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, list):
        return "list"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return f"number ({value})"
    if value is None:
        return "null"
    return f"string ({value!r})" if isinstance(value, str) else type(value).__name__


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --- annotation values ---------------------------------------------------------------------

_PORT = re.compile(r"[0-9]+")
_BITS = re.compile(r"0|[1-9][0-9]*")


def _check_port(text: str) -> str | None:
    """The problem with one port (after trimming), or None. Like Go's ParseUint(s, 10, 16)."""
    item = text.strip()
    if not _PORT.fullmatch(item):
        return f"{text!r} is not a port number"
    if int(item) > 65535:
        return f"{item} is larger than 65535"
    return None


def _check_port_list(value: str) -> str | None:
    if not value.strip():
        return None
    for item in value.strip().split(","):
        problem = _check_port(item)
        if problem:
            return problem + (" (an empty item: remove the extra comma)" if not item.strip()
                              else "")
    return None


def _check_cidr_list(value: str) -> str | None:
    """Like Go's netip.ParsePrefix for each comma-separated item (no spaces allowed)."""
    if value == "":
        return None
    for item in value.split(","):
        if item != item.strip():
            return f"{item!r} has spaces around it (write the list without spaces)"
        address, slash, bits = item.partition("/")
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return f"{address!r} in {item!r} is not an IP address"
        if not slash:
            return f"{item!r} has no prefix length (write e.g. {item}/{ip.max_prefixlen})"
        if not _BITS.fullmatch(bits) or int(bits) > ip.max_prefixlen:
            return (f"prefix length {bits!r} in {item!r} is not a number from 0 to "
                    f"{ip.max_prefixlen}")
    return None


def _validators() -> dict[str, tuple[Any, str]]:
    def ports_or_star(value: str) -> str | None:
        return None if value == "*" else _check_port_list(value)

    def cidrs_or_star(value: str) -> str | None:
        return None if value == "*" else _check_cidr_list(value)

    def mode(value: str) -> str | None:
        if value in INTERCEPTION_MODES:
            return None
        upper = " (interception modes are upper case)" if value.upper() in \
            INTERCEPTION_MODES else ""
        return f"{value!r} is not an interception mode{upper}"

    def uint32(value: str) -> str | None:
        return None if value.isdigit() and int(value) < 2**32 else f"{value!r} is not a number"

    example_ports = 'e.g. "8080,9090"'
    return {
        A_INTERCEPTION: (mode, "Use REDIRECT, TPROXY or NONE."),
        A_STATUS_PORT: (_check_port, "Use one port number, or \"0\" to disable the status port."),
        A_INCLUDE_IN_PORTS: (ports_or_star, f"Use \"*\", \"\" or a comma list of ports, "
                                            f"{example_ports}."),
        A_EXCLUDE_IN_PORTS: (_check_port_list, f"Use a comma list of ports, {example_ports}."),
        A_EXCLUDE_OUT_PORTS: (_check_port_list, f"Use a comma list of ports, {example_ports}."),
        # Istio's injector does not check includeOutboundPorts; istio-iptables would then
        # fail inside istio-init and the pod would never start. meshlab reports it here.
        A_INCLUDE_OUT_PORTS: (_check_port_list, f"Use a comma list of ports, {example_ports}."),
        A_INCLUDE_OUT_CIDRS: (cidrs_or_star, "Use \"*\", \"\" or CIDRs such as "
                                             "\"10.96.0.0/12,10.244.0.0/16\"."),
        A_EXCLUDE_OUT_CIDRS: (_check_cidr_list, "Use CIDRs such as \"10.96.0.2/32\" ('*' is "
                                                "not allowed here)."),
        "readiness.status.sidecar.istio.io/initialDelaySeconds": (uint32, "Use a whole number."),
        "readiness.status.sidecar.istio.io/periodSeconds": (uint32, "Use a whole number."),
        "readiness.status.sidecar.istio.io/failureThreshold": (uint32, "Use a whole number."),
    }


_VALIDATORS = _validators()


def _validate_annotations(annotations: Mapping[str, str], where: _Where) -> None:
    """Check annotation values as istiod's ``validateAnnotations`` does before rendering.

    Istio rejects the whole injection on a bad value, and since the webhook's
    ``failurePolicy`` is ``Fail``, the pod is not created at all.
    """
    for name in sorted(annotations):
        if name not in _VALIDATORS:
            continue
        check, fix = _VALIDATORS[name]
        problem = check(annotations[name])
        if problem:
            raise where.error(
                f"invalid value {annotations[name]!r} for annotation {name}: {problem}; Istio's "
                "injector rejects the pod (failurePolicy: Fail, so it is not created)",
                fix, ["metadata", "annotations", name])


# --- native sidecars: which layout a pod gets ----------------------------------------------

NativeSidecarSetting = bool | Literal["auto"] | None
_VERSION = re.compile(r"v?([0-9]+)\.([0-9]+)(?:\.[0-9]+)?(?:[-+][0-9A-Za-z.+-]*)?")


def parse_version(text: str, what: str) -> tuple[int, int]:
    """``"1.33"``, ``"v1.33.2"`` or ``"v1.33.2-eks-1"`` -> ``(1, 33)``; else MeshlabError.

    Only major and minor matter to the rule (Istio itself compares the kubelet's minor).
    ``what`` names the input in the error (e.g. ``"kubelet version"``).
    """
    match = _VERSION.fullmatch(text.strip())
    if match is None:
        raise MeshlabError(f"{what} {text!r} is not a version: write MAJOR.MINOR, e.g. 1.33 "
                           "(v1.33.2, as `kubectl get nodes` prints it, works too).")
    return int(match.group(1)), int(match.group(2))


def _native_annotation_problem(value: str) -> tuple[str, str]:
    """What is wrong with a ``sidecar.istio.io/nativeSidecar`` value, and the fix."""
    # istiod does not check the value: its template reads every value but "false" as on
    return (f"invalid value {value!r} for annotation {A_NATIVE_SIDECAR}: it accepts \"true\" "
            "or \"false\". istiod does not check it (its template treats every value except "
            f"\"false\" as \"true\", so {value!r} would quietly mean a native sidecar)",
            f"Write {A_NATIVE_SIDECAR}: \"true\" or \"false\" (lower case, in quotes).")


@dataclass(frozen=True)
class NativeSidecarChoice:
    """Whether ``istio-proxy`` is a native sidecar, and the sentence that says why."""

    native: bool
    reason: str


def native_sidecar_for(annotations: Mapping[str, str], *,
                       istio_version: str = DEFAULT_ISTIO_VERSION,
                       kubelet_version: str = DEFAULT_KUBELET_VERSION,
                       setting: NativeSidecarSetting = None) -> NativeSidecarChoice:
    """The layout istiod chooses: native sidecar (``initContainers``) or classic.

    ``setting`` is istiod's ``ENABLE_NATIVE_SIDECARS``: ``True`` or ``False`` force it,
    ``"auto"`` detects, ``None`` takes that Istio version's default. The rule, in order
    (istio/istio's release tags):

    1. the pod annotation ``sidecar.istio.io/nativeSidecar`` (``"true"`` or ``"false"``)
       decides for that pod (``pkg/kube/inject/inject.go``: it "takes precedence over the
       global feature flag"); Istio reads it from 1.24 on and ignores it before;
    2. Istio 1.19-1.26: ``ENABLE_NATIVE_SIDECARS`` is a boolean, ``false`` by default:
       classic unless the mesh turns it on;
    3. Istio 1.27+: it defaults to ``auto``: native when the kubelet of the pod's node (or
       of every node, for a pod not yet scheduled) is 1.33 or newer
       (``DetectNativeSidecar`` in ``pkg/kube/inject/webhook.go``; only the minor number
       is compared).

    Istio before 1.19 has no native sidecars. Raises :class:`MeshlabError` for a bad
    version or setting (``"auto"`` before 1.27, ``True`` before 1.19) and
    :class:`PodError` for a bad annotation value where Istio reads it.
    """
    istio = parse_version(istio_version, "Istio version")
    kubelet = parse_version(kubelet_version, "kubelet version")
    if istio[0] != 1 or kubelet[0] != 1:
        raise MeshlabError(f"meshlab knows Istio 1.x and Kubernetes 1.x versions, not Istio "
                           f"{istio_version} with kubelet {kubelet_version}.")
    if setting not in (True, False, "auto", None):
        raise MeshlabError(f"native sidecar setting {setting!r} is unknown: use True, False, "
                           "'auto' or None (the Istio version's default).")
    if setting == "auto" and istio < NATIVE_SIDECAR_AUTO_SINCE:
        raise MeshlabError(f"Istio {istio_version} has no 'auto' native sidecar mode (it came "
                           "in Istio 1.27; before, ENABLE_NATIVE_SIDECARS is true or false): "
                           "use True or False, or Istio 1.27 or later.")
    if setting is True and istio < NATIVE_SIDECARS_SINCE:
        raise MeshlabError(f"Istio {istio_version} has no native sidecars (they came in "
                           "Istio 1.19): drop the request or use Istio 1.19 or later.")
    value = annotations.get(A_NATIVE_SIDECAR)
    ignored = ""
    if value is not None and istio < NATIVE_SIDECAR_ANNOTATION_SINCE:
        ignored = (f"Istio {istio_version} ignores the annotation {A_NATIVE_SIDECAR} "
                   "(read since 1.24); ")
    elif value is not None and value not in ("true", "false"):
        raise _Where("<dict>").error(*_native_annotation_problem(value),
                                     ["metadata", "annotations", A_NATIVE_SIDECAR])
    elif value is not None:
        where = "initContainers (native sidecar)" if value == "true" else "containers"
        return NativeSidecarChoice(value == "true", f"the annotation {A_NATIVE_SIDECAR}: "
                                   f"\"{value}\" puts istio-proxy in {where}, whatever the "
                                   "cluster's default")
    if istio < NATIVE_SIDECARS_SINCE:
        return NativeSidecarChoice(False, f"{ignored}Istio {istio_version} predates native "
                                          "sidecars (1.19): istio-proxy is a regular container")
    if setting is None:
        setting = "auto" if istio >= NATIVE_SIDECAR_AUTO_SINCE else False
        how = (f"Istio {istio_version} defaults ENABLE_NATIVE_SIDECARS to "
               + ("auto" if setting == "auto" else "false (native sidecars only on request)"))
    else:
        how = f"ENABLE_NATIVE_SIDECARS={str(setting).lower()}"
    if setting == "auto":
        native = kubelet[1] >= NATIVE_SIDECAR_MIN_KUBELET_MINOR
        compare = ">=" if native else "<"
        how += (f" and the node's kubelet {kubelet_version} is {compare} "
                f"1.{NATIVE_SIDECAR_MIN_KUBELET_MINOR}")
    else:
        native = bool(setting)
    where = ("initContainers with restartPolicy: Always (native sidecar)" if native
             else "containers (classic layout)")
    return NativeSidecarChoice(native, f"{ignored}{how}: istio-proxy goes in {where}")


# --- the template ----------------------------------------------------------------------------

def exclude_inbound_port(status_port: str, excludes: str) -> str:
    """The template helper ``excludeInboundPort``: append the status port to the excludes.

    Returns ``excludes`` unchanged when the status port is empty or ``"0"`` or already one of
    the (untrimmed) items; otherwise the trimmed, non-empty items plus the status port.

    >>> exclude_inbound_port("15020", "")
    '15020'
    >>> exclude_inbound_port("15020", "4, 5,,6")
    '4,5,6,15020'
    >>> exclude_inbound_port("0", "4,5")
    '4,5'
    """
    port = status_port.strip()
    if not port or port == "0":
        return excludes
    kept: list[str] = []
    for item in excludes.split(","):
        if item == port:
            return excludes
        if item.strip():
            kept.append(item.strip())
    kept.append(port)
    return ",".join(kept)


def init_args_for(annotations: Mapping[str, str], *, interception_mode: str = "REDIRECT",
                  proxy_uid: int = PROXY_UID) -> tuple[str, ...]:
    """The ``istio-iptables`` arguments the template renders for these pod annotations.

    Without the leading ``istio-iptables`` and the trailing ``--log_output_level=...``.
    ``interception_mode`` is the mesh-wide default (``ProxyConfig.interceptionMode``);
    the annotation overrides it. Annotation values are used as written (validate first).
    """
    mode = annotations.get(A_INTERCEPTION, interception_mode)
    status = annotations.get(A_STATUS_PORT, STATUS_PORT)
    excludes = exclude_inbound_port(status, annotations.get(A_EXCLUDE_IN_PORTS, ""))
    args = [
        "-p", str(PROXY_PORT),
        "-z", str(INBOUND_CAPTURE_PORT),
        "-u", "1337" if mode == "TPROXY" else str(proxy_uid),
        "-m", mode,
        "-i", annotations.get(A_INCLUDE_OUT_CIDRS, "*"),
        "-x", annotations.get(A_EXCLUDE_OUT_CIDRS, ""),
        "-b", annotations.get(A_INCLUDE_IN_PORTS, "*"),
        "-d", f"15090,15021,{excludes}" if excludes else "15090,15021",
    ]
    if A_INCLUDE_OUT_PORTS in annotations:
        args += ["-q", annotations[A_INCLUDE_OUT_PORTS]]
    if A_EXCLUDE_OUT_PORTS in annotations:
        args += ["-o", annotations[A_EXCLUDE_OUT_PORTS]]
    if A_REROUTE in annotations:
        args += ["-k", annotations[A_REROUTE]]
    elif A_KUBEVIRT in annotations:
        args += ["-k", annotations[A_KUBEVIRT]]
    if A_EXCLUDE_IFACES in annotations:
        args += ["-c", annotations[A_EXCLUDE_IFACES]]
    return tuple(args)


#: Inbound ports the CNI plugin always excludes, after the pod's own
#: (``cni/pkg/plugin/sidecar_redirect.go``); its outbound exclusion defaults to 15020.
CNI_EXCLUDED_INBOUND_PORTS = "15020,15021,15090"


def cni_annotations(annotations: Mapping[str, str], *,
                    interception_mode: str = "REDIRECT") -> dict[str, str]:
    """The capture annotations the injector writes onto the pod in istio-cni mode.

    The template's ``pilot.cni.enabled`` block: the interception mode, the include/exclude
    lists (empty IP ranges and interface lists are left out) and ``excludeInboundPorts``
    with the status port appended (:func:`exclude_inbound_port`). The CNI plugin reads
    these, not ``istio-validation``'s arguments.
    """
    status = annotations.get(A_STATUS_PORT, STATUS_PORT)
    written = {A_INTERCEPTION: annotations.get(A_INTERCEPTION, interception_mode)}
    for name, default in ((A_INCLUDE_OUT_CIDRS, "*"), (A_EXCLUDE_OUT_CIDRS, "")):
        if annotations.get(name, default):
            written[name] = annotations.get(name, default)
    written[A_INCLUDE_IN_PORTS] = annotations.get(A_INCLUDE_IN_PORTS, "*")
    written[A_EXCLUDE_IN_PORTS] = exclude_inbound_port(status,
                                                       annotations.get(A_EXCLUDE_IN_PORTS, ""))
    for name in (A_INCLUDE_OUT_PORTS, A_EXCLUDE_OUT_PORTS):
        if name in annotations:
            written[name] = annotations[name]
    for name in (A_KUBEVIRT, A_REROUTE, A_EXCLUDE_IFACES):
        if annotations.get(name):
            written[name] = annotations[name]
    return written


def cni_args_for(annotations: Mapping[str, str], *, proxy_uid: int = PROXY_UID,
                 proxy_gid: int = PROXY_GID) -> tuple[str, ...]:
    """The rules the istio-cni plugin writes, as the ``istio-iptables`` arguments they equal.

    The plugin (``NewRedirect`` in ``cni/pkg/plugin/sidecar_redirect.go``) reads the
    injected pod's annotations (see :func:`cni_annotations`) and the ``istio-proxy``
    container's ``runAsUser``/``runAsGroup`` (``proxy_uid``/``proxy_gid``; 0 means 1337),
    and hands the same rule generator as istio-iptables this configuration:

    * ``-d``: the ``excludeInboundPorts`` annotation, then ``15020,15021,15090``, with
      repeats dropped (so ``15020,15021,15090`` by default, where istio-init has
      ``15090,15021,15020``: the same three RETURN rules in the other order);
    * ``-o``: the ``excludeOutboundPorts`` annotation, else ``15020`` (istio-init excludes
      no outbound port);
    * ``-m`` only ``REDIRECT`` or ``TPROXY``: with ``NONE`` the plugin fails the pod.
    """
    mode = annotations.get(A_INTERCEPTION, "REDIRECT")
    if mode not in ("REDIRECT", "TPROXY"):
        raise MeshlabError(f"with istio-cni, interception mode {mode!r} stops the pod from "
                           "starting: the CNI plugin accepts only REDIRECT or TPROXY "
                           "(\"interceptionMode invalid\") and fails the pod's network setup. "
                           "Use REDIRECT or TPROXY, or a cluster without istio-cni.")
    excludes = annotations.get(A_EXCLUDE_IN_PORTS, STATUS_PORT).strip()
    if excludes and not excludes.endswith(","):
        excludes += ","
    excludes = ",".join(dict.fromkeys((excludes + CNI_EXCLUDED_INBOUND_PORTS).split(",")))
    args = [
        "-p", str(PROXY_PORT),
        "-z", str(INBOUND_CAPTURE_PORT),
        "-u", str(proxy_uid or PROXY_UID),
        "-g", str(proxy_gid or PROXY_GID),
        "-m", mode,
        "-i", annotations.get(A_INCLUDE_OUT_CIDRS, "*"),
        "-x", annotations.get(A_EXCLUDE_OUT_CIDRS, ""),
        "-b", annotations.get(A_INCLUDE_IN_PORTS, "*"),
        "-d", excludes,
        "-o", annotations.get(A_EXCLUDE_OUT_PORTS, STATUS_PORT),
    ]
    if annotations.get(A_INCLUDE_OUT_PORTS):
        args += ["-q", annotations[A_INCLUDE_OUT_PORTS]]
    reroute = annotations[A_REROUTE] if A_REROUTE in annotations else annotations.get(A_KUBEVIRT)
    if reroute:
        args += ["-k", reroute]
    if annotations.get(A_EXCLUDE_IFACES):
        args += ["-c", annotations[A_EXCLUDE_IFACES]]
    return tuple(args)


def _validation_container(args: Sequence[str], log_level: str, image: str) -> dict[str, Any]:
    return {
        "args": ["istio-iptables", *args, f"--log_output_level={log_level}",
                 "--run-validation", "--skip-rule-apply"],
        "image": image,
        "name": "istio-validation",
        "resources": {},
        # Checks only: it writes no rules, so it needs no capabilities and runs as the proxy.
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "runAsGroup": PROXY_GID,
            "runAsNonRoot": True,
            "runAsUser": PROXY_UID,
        },
    }


def _init_container(args: Sequence[str], log_level: str, image: str) -> dict[str, Any]:
    return {
        "args": ["istio-iptables", *args, f"--log_output_level={log_level}"],
        "image": image,
        "name": "istio-init",
        "resources": {},
        # Root with NET_ADMIN/NET_RAW: writing iptables rules needs both, and nothing else.
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
            "privileged": False,
            "readOnlyRootFilesystem": False,
            "runAsGroup": 0,
            "runAsNonRoot": False,
            "runAsUser": 0,
        },
    }


def _proxy_container(*, mode: str, annotations: Mapping[str, str], app_ports: list[Any],
                     app_names: list[str], workload: str, image: str, native: bool,
                     uid: int, gid: int, cap_bind: bool) -> dict[str, Any]:
    log_level = annotations.get(A_AGENT_LOG, "default:info")
    added = (["NET_ADMIN"] if mode == "TPROXY" else []) + (["NET_BIND_SERVICE"] if cap_bind
                                                           else [])
    capabilities: dict[str, Any] = {"drop": ["ALL"]}
    if added:
        capabilities = {"add": added, "drop": ["ALL"]}
    env: list[dict[str, Any]] = [
        {"name": "PILOT_CERT_PROVIDER", "value": "istiod"},
        {"name": "CA_ADDR", "value": "istiod.istio-system.svc:15012"},
        *({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}} for name, path in (
            ("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace"),
            ("INSTANCE_IP", "status.podIP"), ("SERVICE_ACCOUNT", "spec.serviceAccountName"),
            ("HOST_IP", "status.hostIP"))),
        {"name": "ISTIO_META_POD_PORTS", "value": json.dumps(app_ports, separators=(",", ":"))},
        {"name": "ISTIO_META_APP_CONTAINERS", "value": ",".join(app_names)},
        {"name": "ISTIO_META_CLUSTER_ID", "value": "Kubernetes"},
        {"name": "ISTIO_META_INTERCEPTION_MODE", "value": mode},
        {"name": "ISTIO_META_WORKLOAD_NAME", "value": workload},
        {"name": "ISTIO_META_MESH_ID", "value": "cluster.local"},
        {"name": "TRUST_DOMAIN", "value": "cluster.local"},
    ]
    container: dict[str, Any] = {
        "args": [
            "proxy", "sidecar", "--domain", "$(POD_NAMESPACE).svc.cluster.local",
            f"--proxyLogLevel={annotations.get(A_PROXY_LOG, 'warning')}",
            f"--proxyComponentLogLevel={annotations.get(A_COMPONENT_LOG, 'misc:error')}",
            f"--log_output_level={log_level}",
        ],
        "env": env,
        "image": image,
        "name": "istio-proxy",
        "ports": [{"containerPort": 15090, "name": "http-envoy-prom", "protocol": "TCP"}],
        "resources": {},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": capabilities,
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "runAsGroup": gid,
            "runAsNonRoot": uid != 0,
            "runAsUser": uid,
        },
        "volumeMounts": [{"mountPath": path, "name": name} for name, _, path in _VOLUMES],
    }
    if annotations.get(A_STATUS_PORT, STATUS_PORT) != "0":
        # The kubelet asks Envoy's health listener; that is why -d always excludes 15021.
        def probe(**timing: int) -> dict[str, Any]:
            return {"httpGet": {"path": "/healthz/ready", "port": HEALTH_PORT}, **timing}

        container["readinessProbe"] = probe(failureThreshold=4, initialDelaySeconds=0,
                                            periodSeconds=15, timeoutSeconds=3)
        container["startupProbe"] = probe(failureThreshold=600, initialDelaySeconds=0,
                                          periodSeconds=1, timeoutSeconds=3)
    if native:
        container["restartPolicy"] = "Always"
    return container


class _NoAliasDumper(yaml.SafeDumper):
    """Writes shared objects out in full (kubectl never prints YAML anchors)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


# --- the result ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class InjectionResult:
    """What injection did to one pod.

    ``pod`` is the injected manifest (or the original, unchanged, when not injected).
    ``init_args`` are the ``istio-init`` arguments after ``istio-iptables`` and without the
    log flag (``None`` when there is no ``istio-init``: not injected, mode ``NONE``, or
    istio-cni). With istio-cni, ``cni_args`` are the rules the CNI plugin writes, as
    istio-iptables arguments (:func:`cni_args_for`); :attr:`capture_args` is whichever of
    the two writes the pod's rules. ``proxy_uid``/``proxy_gid`` are the identity
    ``istio-proxy`` runs as; ``native_sidecar`` says where it is, ``notes`` say why.
    """

    decision: InjectionDecision
    pod: dict[str, Any]
    init_args: tuple[str, ...] | None
    proxy_uid: int
    proxy_gid: int
    interception_mode: str
    native_sidecar: bool = False
    notes: tuple[str, ...] = field(default=())
    cni: bool = False
    cni_args: tuple[str, ...] | None = None

    @property
    def capture_args(self) -> tuple[str, ...] | None:
        """The arguments of what writes the rules: istio-init, or the istio-cni plugin."""
        return self.cni_args if self.cni else self.init_args

    @property
    def injected(self) -> bool:
        return self.decision.inject

    @property
    def reasons(self) -> tuple[str, ...]:
        """Why (not) injected, then what was rendered: sentences for a person."""
        return self.decision.reasons + self.notes

    def capture_config(self) -> CaptureConfig:
        """The ``istio-iptables`` configuration the rules are written with (from
        :attr:`capture_args`: istio-init's, or the istio-cni plugin's)."""
        if self.capture_args is None:
            if not self.decision.inject:
                raise MeshlabError("the pod was not injected, so there is no istio-init and no "
                                   "capture configuration. Make the webhook inject it first "
                                   "(see the reasons).")
            raise MeshlabError("interception mode NONE removes istio-init: nothing writes "
                               "iptables rules, so there is no capture configuration. Use "
                               "REDIRECT or TPROXY to capture traffic.")
        try:
            from meshlab.istio.flags import CaptureConfig
        except ImportError:  # the contract also allows it to live in capture.py
            from meshlab.istio.capture import CaptureConfig  # type: ignore[no-redef,unused-ignore]
        return CaptureConfig.from_args(list(self.capture_args))

    def rules(self) -> CaptureRules:
        """The rules istio-init (or istio-cni) writes: annotations -> flags -> rules."""
        from meshlab.istio.capture import generate

        return generate(self.capture_config())

    def to_yaml(self) -> str:
        """The pod as ``kubectl get pod -o yaml`` would order it (keys sorted)."""
        return str(yaml.dump(self.pod, Dumper=_NoAliasDumper, sort_keys=True,
                             default_flow_style=False, width=1000))


def inject(pod: str | Path | Mapping[str, Any], namespace_labels: Mapping[str, str] | None = None,
           namespace: str | None = None, *, revision: str = "default",
           interception_mode: str = "REDIRECT", native_sidecar: NativeSidecarSetting = None,
           istio_version: str = DEFAULT_ISTIO_VERSION,
           kubelet_version: str = DEFAULT_KUBELET_VERSION, cni: bool = False,
           proxy_image: str = DEFAULT_PROXY_IMAGE,
           enable_namespaces_by_default: bool = False,
           source_name: str | None = None) -> InjectionResult:
    """Run the webhook on ``pod`` (YAML text, a file or a dict, as :func:`load_pod` reads
    them) and return the result.

    ``namespace`` defaults to the pod's ``metadata.namespace``, else ``"default"``; when both
    are given they must agree (as ``kubectl apply -n`` insists). ``interception_mode`` is the
    mesh-wide default; the ``sidecar.istio.io/interceptionMode`` annotation overrides it.

    The cluster: ``istio_version`` and the node's ``kubelet_version`` choose the layout
    (:func:`native_sidecar_for`; today's defaults give a native sidecar), and
    ``native_sidecar`` is istiod's ``ENABLE_NATIVE_SIDECARS`` (``True``/``False`` force it,
    ``"auto"`` detects, ``None`` is that Istio version's default). ``cni=True``: the
    istio-cni node agent is installed, so ``istio-validation`` replaces ``istio-init`` and
    the CNI plugin writes the rules.

    ``source_name`` labels YAML text in error messages. Raises :class:`PodError` for a
    manifest or annotation Istio would refuse.
    """
    manifest, where = _load(pod, source_name)
    metadata = manifest["metadata"]
    declared = metadata.get("namespace")
    if declared is not None and namespace is not None and declared != namespace:
        raise where.error(
            f"the pod says namespace {declared!r} but it is being created in {namespace!r}",
            "Drop metadata.namespace or pass the same namespace.", ["metadata", "namespace"])
    ns = namespace or declared or "default"
    if interception_mode not in INTERCEPTION_MODES:
        raise MeshlabError(f"interception mode {interception_mode!r} is unknown. Use REDIRECT, "
                           "TPROXY or NONE.")
    # the cluster's inputs are checked whether or not this pod is injected
    native_sidecar_for({}, istio_version=istio_version, kubelet_version=kubelet_version,
                       setting=native_sidecar)
    decision = should_inject(manifest, namespace_labels, ns, revision=revision,
                             enable_namespaces_by_default=enable_namespaces_by_default)
    annotations: dict[str, str] = dict(metadata.get("annotations") or {})
    if not decision.inject:
        return InjectionResult(decision, manifest, None, PROXY_UID, PROXY_GID,
                               annotations.get(A_INTERCEPTION, interception_mode)
                               if annotations.get(A_INTERCEPTION) in INTERCEPTION_MODES
                               else interception_mode, cni=cni)

    _validate_annotations(annotations, where)
    if annotations.get(A_NATIVE_SIDECAR, "true") not in ("true", "false") \
            and parse_version(istio_version, "Istio version") >= NATIVE_SIDECAR_ANNOTATION_SINCE:
        raise where.error(*_native_annotation_problem(annotations[A_NATIVE_SIDECAR]),
                          ["metadata", "annotations", A_NATIVE_SIDECAR])
    layout = native_sidecar_for(annotations, istio_version=istio_version,
                                kubelet_version=kubelet_version, setting=native_sidecar)
    native = layout.native
    mode = annotations.get(A_INTERCEPTION, interception_mode)
    cap_bind = annotations.get(A_CAP_BIND, "false") == "true"
    # TPROXY: the proxy must bind the client's address (IP_TRANSPARENT needs NET_ADMIN), so
    # it runs as root; only its GID 1337 is left for the owner rules to recognise it.
    uid = 0 if mode == "TPROXY" or cap_bind else PROXY_UID
    gid = PROXY_GID
    spec = manifest["spec"]
    labels: dict[str, str] = dict(metadata.get("labels") or {})
    app_names = [c["name"] for c in spec["containers"] if c["name"] != "istio-proxy"]
    app_ports = [port for c in spec["containers"] for port in (c.get("ports") or [])]
    workload = (labels.get("app.kubernetes.io/name") or labels.get("app")
                or metadata.get("name") or metadata.get("generateName", "").rstrip("-")
                or "unknown")

    iptables_args = None if mode == "NONE" else init_args_for(annotations,
                                                               interception_mode=mode)
    proxy = _proxy_container(mode=mode, annotations=annotations, app_ports=app_ports,
                             app_names=app_names, workload=workload, image=proxy_image,
                             native=native, uid=uid, gid=gid, cap_bind=cap_bind)
    log_level = annotations.get(A_AGENT_LOG, "default:info")
    rule_writer: list[dict[str, Any]] = []
    if iptables_args is not None:
        rule_writer.append(_validation_container(iptables_args, log_level, proxy_image) if cni
                           else _init_container(iptables_args, log_level, proxy_image))
    init_args = None if cni else iptables_args
    init_containers = _ordered_init_containers(list(spec.get("initContainers") or []),
                                               rule_writer, proxy if native else None)
    added = [*rule_writer, proxy]
    added_init = [c["name"] for c in init_containers if any(c is a for a in added)]
    containers = list(spec["containers"])
    added_containers: list[str] | None = None
    if not native:
        containers.append(proxy)
        added_containers = ["istio-proxy"]
    if init_containers:
        spec["initContainers"] = init_containers
    else:
        spec.pop("initContainers", None)
    spec["containers"] = containers
    spec["volumes"] = list(spec.get("volumes") or []) + [
        {"name": name, **source} for name, source, _ in _VOLUMES]

    labels.setdefault("security.istio.io/tlsMode", "istio")
    labels.setdefault("service.istio.io/canonical-name", workload[:63].rstrip("-"))
    labels.setdefault("service.istio.io/canonical-revision",
                      labels.get("app.kubernetes.io/version") or labels.get("version") or "latest")
    metadata["labels"] = labels
    status = {
        "initContainers": added_init or None,
        "containers": added_containers,
        "volumes": [name for name, _, _ in _VOLUMES],
        "imagePullSecrets": None,
        "revision": revision,
    }
    new_annotations = dict(annotations)
    new_annotations.setdefault("istio.io/rev", revision)
    if app_names:
        new_annotations.setdefault("kubectl.kubernetes.io/default-container", app_names[0])
        new_annotations.setdefault("kubectl.kubernetes.io/default-logs-container", app_names[0])
    if annotations.get(A_STATUS_PORT, STATUS_PORT) != "0":
        new_annotations.setdefault("prometheus.io/path", "/stats/prometheus")
        new_annotations.setdefault("prometheus.io/port", STATUS_PORT)
        new_annotations.setdefault("prometheus.io/scrape", "true")
    cni_args = None
    if cni:
        new_annotations.update(cni_annotations(annotations, interception_mode=mode))
        cni_args = cni_args_for(new_annotations, proxy_uid=uid, proxy_gid=gid)
    new_annotations[A_STATUS] = json.dumps(status, separators=(",", ":"))
    metadata["annotations"] = new_annotations

    notes = (*_capture_notes(mode, iptables_args, cni_args, annotations), layout.reason,
             _proxy_note(mode, uid, gid, native))
    return InjectionResult(decision, manifest, init_args, uid, gid, mode, native, notes,
                           cni=cni, cni_args=cni_args)


def _ordered_init_containers(user: list[dict[str, Any]], rule_writer: list[dict[str, Any]],
                             native_proxy: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The init containers in the order istiod's ``reorderPod`` (``webhook.go``) leaves them.

    With a native sidecar: ``istio-init`` (or ``istio-validation``), ``istio-proxy``, then
    the pod's own init containers, which thus run inside the mesh. Classic layout:
    ``istio-validation`` first (it must block everything until capture works), the pod's
    own init containers, and ``istio-init`` *last*, so the pod's init containers still
    reach the network before the rules send everything to a proxy that is not running yet.
    """
    if native_proxy is not None:
        return [*rule_writer, native_proxy, *user]
    if rule_writer and rule_writer[0]["name"] == "istio-validation":
        return [*rule_writer, *user]
    return [*user, *rule_writer]


def _capture_notes(mode: str, iptables_args: tuple[str, ...] | None,
                   cni_args: tuple[str, ...] | None,
                   annotations: Mapping[str, str]) -> list[str]:
    """Who writes the rules, with which arguments, and which annotations chose them."""
    if iptables_args is None:
        return ["interception mode NONE: no istio-init, so no iptables rules; traffic "
                "reaches the proxy only if the application sends it there"]
    notes: list[str] = []
    if cni_args is None:
        notes.append("istio-init runs: istio-iptables " + _shell_words(iptables_args))
    else:
        notes.append("istio-cni: no istio-init; the CNI plugin writes the rules while the pod's "
                     "network is set up, before any container starts, like istio-iptables "
                     + _shell_words(cni_args))
        notes.append("istio-validation runs as UID 1337 with no capabilities: istio-iptables "
                     + _shell_words(iptables_args) + " --run-validation --skip-rule-apply "
                     "(checks that redirection works; writes nothing)")
    used = [name for name in ANNOTATIONS if name in annotations]
    if used:
        notes.append("from annotations: " + ", ".join(
            f"{name} -> {ANNOTATIONS[name]}" for name in used))
    return notes


def _proxy_note(mode: str, uid: int, gid: int, native: bool) -> str:
    who = f"UID {uid}, GID {gid}"
    if mode == "TPROXY":
        who += " (TPROXY: root with NET_ADMIN; the GID 1337 rules exempt its traffic)"
    return f"istio-proxy runs as {who} in " + (
        "initContainers (native sidecar)" if native else "containers")


def _shell_words(args: Sequence[str]) -> str:
    return " ".join(_shell_word(arg) for arg in args)


def _shell_word(arg: str) -> str:
    if arg == "":
        return '""'
    if re.fullmatch(r"[A-Za-z0-9_.,:/=+-]+", arg):
        return arg
    return "'" + arg.replace("'", "'\\''") + "'"
