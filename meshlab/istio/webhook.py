"""Which pods get a sidecar: the injection webhook's selection, step by step.

Injection is decided in two places, and a learner needs to see both:

1. **The Kubernetes API server** evaluates the ``MutatingWebhookConfiguration``
   ``istio-sidecar-injector``. Each of its webhook entries has a ``namespaceSelector``
   (matched against the *namespace's* labels) and an ``objectSelector`` (matched against the
   *pod's* labels - never its annotations). Only when one entry matches is the pod sent to
   istiod at all. The entries are written so that at most one matches.
2. **istiod** (``injectRequired`` in ``pkg/kube/inject/inject.go``) then decides again: it
   never injects a ``hostNetwork`` pod (the rules would be written into the *node's*
   network namespace) nor a pod in a Kubernetes system namespace; an explicit
   ``sidecar.istio.io/inject`` label (or the deprecated annotation of the same name; the
   label wins when both are set) decides; otherwise the injection policy
   (``global.proxy.autoInject``, default ``enabled``) injects.

**Which values mean yes.** istiod compares the value as an exact string (see
:func:`inject_value_meaning`): ``"true"`` injects, ``"false"`` does not, and anything else
(``"yes"``, ``"True"``, ``"no"``, ``"FALSE"``) is logged as invalid and *ignored*: the
default policy decides, so in an ``istio-injection=enabled`` namespace a pod labelled
``sidecar.istio.io/inject: "False"`` **is** injected. The webhook's selectors are exact
strings too: ``NotIn ["false"]`` lets ``"False"`` through, and the ``object.`` entry's
``In ["true"]`` does not match ``"yes"``.

:func:`should_inject` runs both steps and records, in plain words, why the answer is what
it is. It models the default revision unless told otherwise, and no
``neverInjectSelector`` / ``alwaysInjectSelector`` (both empty by default).

**Ambient mode** (``istio.io/dataplane-mode=ambient`` on the namespace or the pod) is a third
party's decision: neither the webhook's selectors nor istiod read that label. The istio-cni
node agent enrolls a pod when the pod is labelled ``istio.io/dataplane-mode=ambient``, or its
namespace is and the pod is not labelled ``istio.io/dataplane-mode=none`` (the chart's
``ambient.enablementSelectors``), except ``hostNetwork`` pods and pods that *have a sidecar*
(``sidecar.istio.io/status``): one pod never gets both. So the precedence is:

1. the sidecar decision above, unchanged: an ambient namespace usually has no
   ``istio-injection`` label, so its pods get no sidecar - unless a pod asks for one with the
   label ``sidecar.istio.io/inject: "true"`` (the ``object.`` entry), or the namespace is
   *also* labelled ``istio-injection=enabled`` (``istioctl analyze`` warns about that);
2. a pod that got a sidecar is left out of ambient by istio-cni;
3. a pod with no sidecar that the enablement selectors match is an ambient pod: istio-cni
   writes its rules (:mod:`meshlab.istio.ambient`) and ztunnel proxies its traffic.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

#: Namespaces istiod never injects into, whatever their labels say.
SYSTEM_NAMESPACES: tuple[str, ...] = (
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "local-path-storage",
)

INJECT_LABEL = "sidecar.istio.io/inject"
DATAPLANE_MODE_LABEL = "istio.io/dataplane-mode"
REV_LABEL = "istio.io/rev"
NAMESPACE_LABEL = "istio-injection"
STATUS_ANNOTATION = "sidecar.istio.io/status"



def inject_value_meaning(value: str) -> bool | None:
    """What istiod makes of a ``sidecar.istio.io/inject`` value: ``True`` (inject),
    ``False`` (do not), or ``None`` (no decision: the default injection policy applies).

    istiod's ``injectRequired`` (``pkg/kube/inject/inject.go``, lines 223-239 at istio/istio
    master 86c9f01f, 2026-08-22) takes the label, else the annotation, and switches on the
    exact string: ``case "true"``, ``case "false"``,
    ``case ""`` (use the default), and ``default:`` logs "Invalid value ... Only 'true'
    and 'false' are accepted. Falling back to default injection policy." No other
    spelling counts, whatever its case.

    >>> inject_value_meaning("true"), inject_value_meaning("false")
    (True, False)
    >>> inject_value_meaning("yes") is None and inject_value_meaning("False") is None
    True
    """
    if value == "true":
        return True
    if value == "false":
        return False
    return None


@dataclass(frozen=True, slots=True)
class InjectionDecision:
    """Whether the webhook injects a pod, which webhook entry matched, and why.

    ``reasons`` are sentences for a person, in the order the decision was taken.
    """

    inject: bool
    webhook: str | None
    reasons: tuple[str, ...]


# --- label selectors, as Kubernetes evaluates them ---------------------------------------

Labels = Mapping[str, str]
Requirement = tuple[str, Callable[[Labels], bool]]


def _in(key: str, *values: str) -> Requirement:
    return (f"{key} In [{', '.join(values)}]", lambda labels: labels.get(key) in values)


def _not_in(key: str, *values: str) -> Requirement:
    # Kubernetes: NotIn also matches when the key is absent.
    return (f"{key} NotIn [{', '.join(values)}]", lambda labels: labels.get(key) not in values)


def _does_not_exist(key: str) -> Requirement:
    return (f"{key} DoesNotExist", lambda labels: key not in labels)


@dataclass(frozen=True)
class WebhookEntry:
    """One entry of the ``MutatingWebhookConfiguration`` (``webhooks[]``)."""

    name: str
    namespace_selector: tuple[Requirement, ...]
    object_selector: tuple[Requirement, ...]

    def failed(self, namespace_labels: Labels, pod_labels: Labels) -> list[str]:
        """The requirements that do not hold (empty list = this entry matches)."""
        failures = [f"namespaceSelector {text}" for text, test in self.namespace_selector
                    if not test(namespace_labels)]
        failures += [f"objectSelector {text}" for text, test in self.object_selector
                     if not test(pod_labels)]
        return failures


def webhook_entries(revision: str = "default", *,
                    enable_namespaces_by_default: bool = False) -> tuple[WebhookEntry, ...]:
    """The webhook entries Istio's chart renders for ``revision`` (facts section 3.5).

    The ``namespace.`` and ``object.`` entries exist only for the default revision; the
    ``rev.`` entries select ``istio.io/rev=<revision>``. ``auto.sidecar-injector.istio.io``
    exists only when ``sidecarInjectorWebhook.enableNamespacesByDefault`` is set.
    """
    entries = [
        WebhookEntry(
            "rev.namespace.sidecar-injector.istio.io",
            (_in(REV_LABEL, revision), _does_not_exist(NAMESPACE_LABEL)),
            (_not_in(INJECT_LABEL, "false"),),
        ),
        WebhookEntry(
            "rev.object.sidecar-injector.istio.io",
            (_does_not_exist(REV_LABEL), _does_not_exist(NAMESPACE_LABEL)),
            (_not_in(INJECT_LABEL, "false"), _in(REV_LABEL, revision)),
        ),
    ]
    if revision == "default":
        entries += [
            WebhookEntry(
                "namespace.sidecar-injector.istio.io",
                (_in(NAMESPACE_LABEL, "enabled"),),
                (_not_in(INJECT_LABEL, "false"),),
            ),
            WebhookEntry(
                "object.sidecar-injector.istio.io",
                (_does_not_exist(NAMESPACE_LABEL), _does_not_exist(REV_LABEL)),
                (_in(INJECT_LABEL, "true"), _does_not_exist(REV_LABEL)),
            ),
        ]
    if enable_namespaces_by_default:
        entries.append(WebhookEntry(
            "auto.sidecar-injector.istio.io",
            (_does_not_exist(NAMESPACE_LABEL), _does_not_exist(REV_LABEL)),
            (_does_not_exist(INJECT_LABEL), _does_not_exist(REV_LABEL)),
        ))
    return tuple(entries)


def _string_map(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): str(v) for k, v in value.items()}


def should_inject(pod: Mapping[str, Any], namespace_labels: Mapping[str, str] | None = None,
                  namespace: str = "default", *, revision: str = "default",
                  enable_namespaces_by_default: bool = False) -> InjectionDecision:
    """Decide, as the API server and then istiod would, whether ``pod`` gets a sidecar.

    ``pod`` is a Pod manifest as a dict (see :func:`meshlab.istio.inject.load_pod` to read
    YAML); ``namespace_labels`` are the labels of the namespace it is created in.
    """
    ns_labels = _string_map(namespace_labels or {})
    metadata: Mapping[str, Any] = pod["metadata"] if isinstance(pod.get("metadata"),
                                                                  Mapping) else {}
    pod_labels = _string_map(metadata.get("labels"))
    annotations = _string_map(metadata.get("annotations"))
    spec: Mapping[str, Any] = pod["spec"] if isinstance(pod.get("spec"), Mapping) else {}

    ambient = _ambient_enrollment(ns_labels, pod_labels, spec)
    decision = _sidecar_decision(pod_labels, annotations, spec, ns_labels, namespace, revision,
                                 enable_namespaces_by_default, ambient)
    if ambient is None or STATUS_ANNOTATION in annotations:
        return decision
    if decision.inject:
        return InjectionDecision(True, decision.webhook, (*decision.reasons, (
            f"{ambient}, but a pod with a sidecar is left out of ambient mode by istio-cni "
            "(a pod has a sidecar or ztunnel, never both)")))
    reasons = [*decision.reasons, (
        f"ambient mode: {ambient}, so the istio-cni node agent writes the pod's rules and "
        "ztunnel proxies its traffic; no sidecar is needed (see `meshlab rules --ambient`)")]
    if decision.webhook is None and not ns_labels.keys() & {NAMESPACE_LABEL, REV_LABEL}:
        reasons.append(f"to give this pod a sidecar instead, label it {INJECT_LABEL}: "
                       "\"true\" (istio-cni then leaves it out of ambient mode)")
    return InjectionDecision(False, decision.webhook, tuple(reasons))


def _ambient_enrollment(ns_labels: Labels, pod_labels: Labels,
                        spec: Mapping[str, Any]) -> str | None:
    """Why istio-cni's default enablement selectors take the pod into ambient mode (None:
    they do not). A pod that has a sidecar is opted out later, by :func:`should_inject`."""
    if spec.get("hostNetwork") is True:
        return None  # the agent cannot write rules into a namespace the pod does not own
    mode = f"{DATAPLANE_MODE_LABEL}=ambient"
    if pod_labels.get(DATAPLANE_MODE_LABEL) == "ambient":
        return f"the pod is labelled {mode}"
    if ns_labels.get(DATAPLANE_MODE_LABEL) == "ambient" \
            and pod_labels.get(DATAPLANE_MODE_LABEL) != "none":
        return f"the namespace is labelled {mode}"
    return None


def _sidecar_decision(pod_labels: Labels, annotations: Labels, spec: Mapping[str, Any],
                      ns_labels: Labels, namespace: str, revision: str,
                      enable_namespaces_by_default: bool,
                      ambient: str | None) -> InjectionDecision:
    """The webhook's and istiod's decision (the module's steps 1 and 2)."""
    reasons: list[str] = []
    if STATUS_ANNOTATION in annotations:
        return InjectionDecision(False, None, (
            f"the pod already carries the {STATUS_ANNOTATION} annotation, so it was already "
            "injected; the webhook runs once per pod (reinvocationPolicy: Never) and meshlab "
            "does not inject twice",
        ))

    # Step 1: the API server evaluates the webhook entries' selectors.
    ns_text = ", ".join(f"{k}={v}" for k, v in sorted(ns_labels.items())) or "no labels"
    matched: WebhookEntry | None = None
    misses: list[str] = []
    for entry in webhook_entries(revision,
                                 enable_namespaces_by_default=enable_namespaces_by_default):
        failures = entry.failed(ns_labels, pod_labels)
        if not failures:
            matched = entry
            break
        misses.append(f"{entry.name} needs {' and '.join(failures)}")
    if matched is None:
        reasons.append(
            f"no webhook entry of istio-sidecar-injector matches (namespace {namespace!r} has "
            f"{ns_text}), so the API server never sends the pod to istiod"
        )
        reasons.extend(f"  {miss}" for miss in misses)
        if ambient is None:  # (an ambient pod's hint is should_inject's)
            reasons.append(_how_to_enable(ns_labels, pod_labels, annotations, revision))
        return InjectionDecision(False, None, tuple(reasons))
    reasons.append(f"webhook {matched.name} matches ({_why_matched(matched.name, revision)})")

    # Step 2: istiod's injectRequired.
    if spec.get("hostNetwork") is True:
        reasons.append(
            "istiod skips pods with hostNetwork: true: istio-init would rewrite the node's own "
            "iptables rules, not the pod's"
        )
        return InjectionDecision(False, matched.name, tuple(reasons))
    if namespace in SYSTEM_NAMESPACES:
        reasons.append(
            f"istiod never injects into the system namespace {namespace!r} "
            f"(ignored: {', '.join(SYSTEM_NAMESPACES)})"
        )
        return InjectionDecision(False, matched.name, tuple(reasons))

    if INJECT_LABEL in pod_labels:
        value, where = pod_labels[INJECT_LABEL], "label"
        if INJECT_LABEL in annotations and annotations[INJECT_LABEL] != value:
            reasons.append(
                f"the pod has both the label and the deprecated annotation {INJECT_LABEL}; "
                f"the label ({value!r}) wins over the annotation ({annotations[INJECT_LABEL]!r})"
            )
    elif INJECT_LABEL in annotations:
        value, where = annotations[INJECT_LABEL], "deprecated annotation"
    else:
        value, where = "", ""

    meaning = inject_value_meaning(value)
    if meaning is True:
        reasons.append(f"{where} {INJECT_LABEL}={value!r} asks for injection: inject")
        return InjectionDecision(True, matched.name, tuple(reasons))
    if meaning is False:
        reasons.append(f"{where} {INJECT_LABEL}={value!r} refuses injection")
        return InjectionDecision(False, matched.name, tuple(reasons))
    if value == "":
        said = f"{where} {INJECT_LABEL} is empty" if where else \
            f"no {INJECT_LABEL} label or annotation"
        reasons.append(f"{said}, so istiod applies the injection policy 'enabled' "
                       "(global.proxy.autoInject): inject")
    else:
        reasons.append(
            f"{where} {INJECT_LABEL}={value!r} is neither \"true\" nor \"false\": istiod "
            "accepts only those two exact strings, logs this value as invalid and falls back "
            "to the injection policy 'enabled' (global.proxy.autoInject): inject. Write "
            "\"true\" or \"false\""
        )
    return InjectionDecision(True, matched.name, tuple(reasons))


def _why_matched(name: str, revision: str) -> str:
    return {
        "namespace.sidecar-injector.istio.io":
            "the namespace is labelled istio-injection=enabled and the pod is not labelled "
            "sidecar.istio.io/inject=false",
        "object.sidecar-injector.istio.io":
            "the pod is labelled sidecar.istio.io/inject=true and the namespace has no "
            "istio-injection or istio.io/rev label",
        "rev.namespace.sidecar-injector.istio.io":
            f"the namespace is labelled istio.io/rev={revision} and has no istio-injection label",
        "rev.object.sidecar-injector.istio.io":
            f"the pod is labelled istio.io/rev={revision} and the namespace has no istio labels",
        "auto.sidecar-injector.istio.io":
            "enableNamespacesByDefault is on and neither the namespace nor the pod has istio "
            "labels",
    }.get(name, "its selectors hold")


def _how_to_enable(ns_labels: Labels, pod_labels: Labels, annotations: Labels,
                   revision: str) -> str:
    if ns_labels.get(NAMESPACE_LABEL) not in (None, "enabled"):
        return (f"the namespace label {NAMESPACE_LABEL}={ns_labels[NAMESPACE_LABEL]} turns "
                "injection off for every pod in it; set it to 'enabled' to inject")
    if pod_labels.get(INJECT_LABEL) == "false":
        return f"the pod label {INJECT_LABEL}=false excludes it from every webhook entry"
    value = pod_labels.get(INJECT_LABEL)
    if value is not None and inject_value_meaning(value) is None:
        return (f"the pod label {INJECT_LABEL}={value!r} selects nothing: the object. entry "
                f"needs exactly \"true\" (selectors compare exact strings); write "
                f"{INJECT_LABEL}: \"true\"")
    if inject_value_meaning(annotations.get(INJECT_LABEL, "")) is True:
        return (f"the annotation {INJECT_LABEL} is only read by istiod after a webhook entry "
                "matched, and objectSelectors read labels only: use the label "
                f"{INJECT_LABEL}: \"true\" instead, or label the namespace "
                f"{NAMESPACE_LABEL}=enabled")
    if REV_LABEL in ns_labels or REV_LABEL in pod_labels:
        return (f"{REV_LABEL} selects a revision other than {revision!r}; meshlab models the "
                f"{revision!r} revision (label the namespace {REV_LABEL}={revision})")
    return (f"to inject, label the namespace {NAMESPACE_LABEL}=enabled "
            f"(kubectl label namespace NAME {NAMESPACE_LABEL}=enabled) or the pod "
            f"{INJECT_LABEL}=\"true\"")
