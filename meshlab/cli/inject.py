"""``meshlab inject``: show what Istio's sidecar injector does to a pod, and why.

Standard output is always valid YAML, so it can be piped to ``kubectl apply -f -``: the
reasons come first as ``#`` comment lines, then the pod (injected, or unchanged when the
webhook would not inject it), and with ``--rules`` the iptables rules istio-init would
write, again as comments. Errors go to standard error with exit status 2.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable
from typing import Any

from meshlab.cli._input import read_text
from meshlab.errors import MeshlabError
from meshlab.istio.inject import (
    DEFAULT_ISTIO_VERSION,
    DEFAULT_KUBELET_VERSION,
    MAX_MANIFEST_BYTES,
)

#: ``--native-sidecar`` values -> the library's setting (None: the Istio version's default)
_NATIVE_SETTINGS = {None: None, "auto": "auto", "true": True, "false": False}

DESCRIPTION = """\
Run Istio's sidecar injection webhook on one Pod manifest: decide whether it injects
(namespace labels istio-injection / istio.io/rev, the pod's sidecar.istio.io/inject label,
hostNetwork, system namespaces) and print the pod the injection template produces:
istio-init with its istio-iptables arguments (from the pod's traffic annotations) and
istio-proxy (UID/GID 1337; TPROXY: UID 0, GID 1337), as a native sidecar or a regular
container depending on the Istio and kubelet versions; with --cni, istio-validation in
place of istio-init."""

EPILOG = """\
output:
  Standard output is valid YAML (pipe it to `kubectl apply -f -`). The reasons for the
  decision are a `#` comment header at the top; with --rules the istio-iptables restore
  document(s) follow the manifest, also as `#` comments. A pod the webhook would not
  inject is printed unchanged. Exit status 0 whether or not it injects; 2 on bad input
  (bad YAML, not a Pod, no containers, a malformed annotation), with the reason on stderr.

the cluster (defaults: Istio {istio}, kubelet {kubelet}, no istio-cni):
  Layout: Istio 1.27+ makes istio-proxy a native sidecar (the second init container,
  restartPolicy: Always) when the node's kubelet is 1.33 or newer; Istio 1.19-1.26 keeps
  it in spec.containers unless asked. The pod annotation sidecar.istio.io/nativeSidecar:
  "true"|"false" overrides both (Istio 1.24+); --native-sidecar sets istiod's
  ENABLE_NATIVE_SIDECARS (auto only from Istio 1.27).
  --cni: istio-cni is installed, so the pod gets istio-validation (checks only, UID 1337,
  no capabilities) instead of istio-init, and the CNI plugin writes the rules.

examples:
  meshlab inject data/pods/productpage-v1.yaml --namespace-label istio-injection=enabled
  meshlab inject data/pods/productpage-v1.yaml -l istio-injection=enabled \\
      --istio-version 1.26          # the classic layout: istio-proxy in containers
  meshlab inject data/pods/productpage-v1.yaml -l istio-injection=enabled --cni --rules
  meshlab inject data/pods/ratings-traffic-annotations.yaml \\
      --namespace-label istio-injection=enabled --rules
  kubectl get pod mypod -o yaml | meshlab inject - --namespace-label istio.io/rev=default
"""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "inject", help="show the pod Istio's sidecar injector produces, and why",
        description=DESCRIPTION,
        epilog=EPILOG.format(istio=DEFAULT_ISTIO_VERSION, kubelet=DEFAULT_KUBELET_VERSION),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pod", metavar="POD.yaml",
                   help="the path of a Pod manifest (YAML); '-' reads the YAML from stdin")
    p.add_argument("--namespace", "-n", metavar="NAME", default=None,
                   help="namespace the pod is created in (default: the pod's "
                        "metadata.namespace, else 'default')")
    p.add_argument("--namespace-label", "-l", metavar="KEY=VALUE", action="append", default=[],
                   help="a label of that namespace, e.g. istio-injection=enabled (repeatable)")
    p.add_argument("--interception-mode", choices=("REDIRECT", "TPROXY", "NONE"),
                   default="REDIRECT",
                   help="mesh-wide default interception mode (the pod's "
                        "sidecar.istio.io/interceptionMode annotation overrides it)")
    p.add_argument("--native-sidecar", choices=("auto", "true", "false"), default=None,
                   help="istiod's ENABLE_NATIVE_SIDECARS: true puts istio-proxy in "
                        "initContainers (Kubernetes native sidecar), false in containers, auto "
                        "decides by the kubelet version (default: the Istio version's "
                        "default: false before 1.27, auto from 1.27)")
    p.add_argument("--istio-version", metavar="X.Y", default=DEFAULT_ISTIO_VERSION,
                   help=f"the Istio release (default {DEFAULT_ISTIO_VERSION})")
    p.add_argument("--kubelet-version", metavar="X.Y", default=DEFAULT_KUBELET_VERSION,
                   help="the kubelet version of the pod's node, as kubectl get nodes shows it "
                        f"(default {DEFAULT_KUBELET_VERSION})")
    p.add_argument("--cni", action="store_true",
                   help="istio-cni is installed: istio-validation replaces istio-init and the "
                        "CNI plugin writes the rules")
    p.add_argument("--rules", action="store_true",
                   help="also print the iptables rules istio-init writes for these arguments")
    p.set_defaults(func=run)


def parse_labels(items: Iterable[str]) -> dict[str, str]:
    """``["k=v", ...]`` -> ``{"k": "v"}``; a malformed item raises MeshlabError."""
    labels: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or any(c.isspace() for c in key.strip()):
            raise MeshlabError(f"--namespace-label {item!r} is not KEY=VALUE. Write e.g. "
                               "--namespace-label istio-injection=enabled.")
        labels[key.strip()] = value.strip()
    return labels


_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_POD_HINT = "one Pod manifest as YAML (e.g. kubectl get pod NAME -o yaml)"


def check_namespace(name: str) -> None:
    """A Kubernetes namespace name is a DNS label: a-z, 0-9 and '-', at most 63 characters."""
    if not _DNS_LABEL.fullmatch(name):
        raise MeshlabError(f"--namespace {name!r} is not a namespace name: use lowercase "
                           "letters, digits and '-', starting and ending with a letter or "
                           "digit, at most 63 characters (e.g. default, bookinfo)")


def check_pod_argument(argument: str) -> None:
    """POD.yaml is a path or '-'; YAML text given in its place is refused, saying how."""
    text = argument.lstrip()
    if "\n" in argument or text.startswith(("apiVersion:", "kind:", "{", "---")):
        raise MeshlabError("POD.yaml is the path of a manifest, but this looks like the YAML "
                           "itself; pipe the YAML on standard input and give '-', e.g. "
                           "kubectl get pod NAME -o yaml | meshlab inject - -l "
                           "istio-injection=enabled")


def _comment(lines: Iterable[str]) -> str:
    return "".join(f"# {line}".rstrip() + "\n" for line in lines)


def render(args: argparse.Namespace) -> str:
    """The whole standard output for parsed ``args`` (raises MeshlabError on bad input)."""
    from meshlab.istio.inject import inject

    labels = parse_labels(args.namespace_label)
    if args.namespace is not None:
        check_namespace(args.namespace)
    check_pod_argument(args.pod)
    name = "<stdin>" if args.pod == "-" else args.pod
    # The argument is always a path ('-': stdin). The text handed on ends with a newline,
    # which the library reads as YAML text, never as a file name.
    source = read_text(args.pod, what="pod manifest", limit=MAX_MANIFEST_BYTES,
                       hint=_POD_HINT).rstrip("\n") + "\n"
    result = inject(source, labels, args.namespace, interception_mode=args.interception_mode,
                    native_sidecar=_NATIVE_SETTINGS[args.native_sidecar],
                    istio_version=args.istio_version, kubelet_version=args.kubelet_version,
                    cni=args.cni, source_name=name)
    verdict = "injected" if result.injected else "NOT injected"
    cluster = (f"cluster: Istio {args.istio_version}, kubelet {args.kubelet_version}, "
               + ("istio-cni installed" if args.cni else "no istio-cni"))
    header = [f"meshlab inject: {name}: {verdict}", cluster,
              *(f"    {r.strip()}" if r.startswith("  ") else f"- {r}" for r in result.reasons)]
    out = _comment(header) + result.to_yaml()
    if args.rules:
        out += _comment(["", *_rules_lines(result)])
    return out


def _rules_lines(result: Any) -> list[str]:
    if result.capture_args is None:
        return ["--rules: no istio-init, so no iptables rules (see the reasons above)"]
    rules = result.rules()
    writer = "the istio-cni plugin" if result.cni else "istio-init"
    lines = [f"iptables-restore input {writer} writes (IPv4):", *rules.restore_v4.splitlines()]
    if rules.restore_v6:
        lines += ["", "ip6tables-restore input (IPv6):", *rules.restore_v6.splitlines()]
    if rules.post_commands:
        lines += ["", "then runs (TPROXY routing):", *rules.post_commands]
    return lines


def run(args: argparse.Namespace) -> int:
    sys.stdout.write(render(args))
    return 0
