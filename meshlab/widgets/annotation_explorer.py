"""The annotation explorer: edit a pod's annotations; istio-init's arguments and rules follow.

This is the path a learner really walks: you rarely type ``istio-iptables`` flags, you annotate
a pod. The text box holds the pod's annotations, one ``key: value`` per line (YAML). On every
change the model injects Bookinfo's ``productpage`` pod, carrying those annotations, into a
namespace labelled ``istio-injection=enabled`` (:func:`meshlab.istio.inject.inject`), shows the
``istio-init`` arguments the injector renders and the rules they generate, with each line that
differs from a pod without annotations marked ``+`` (added, bold) or ``-`` (gone, struck
through), so the change is visible without colour. An annotation Istio's injector would reject
(``excludeOutboundPorts: abc``) shows the injector's message in ``meshlab-error`` and the last
valid result stays on screen. The result follows the box when you leave it (click outside),
not at every keystroke, so a half-typed annotation never flashes an error.
"""

from __future__ import annotations

import copy
import shlex
from functools import lru_cache
from typing import Any

import ipywidgets as widgets

from meshlab import datafiles
from meshlab.errors import MeshlabError
from meshlab.i18n import tr
from meshlab.widgets.common import LiveWidget, error_widget, esc, guarded
from meshlab.widgets.flag_explorer import _counts, _render, diff_lines

POD = datafiles.PRODUCTPAGE_POD
"""The packaged pod the explorer injects (Bookinfo's productpage, no annotations of its own)."""

NAMESPACE_LABELS = {"istio-injection": "enabled"}

EXAMPLE = (
    "traffic.sidecar.istio.io/excludeInboundPorts: \"9091\"\n"
    "traffic.sidecar.istio.io/excludeOutboundIPRanges: \"169.254.169.254/32\"\n"
)
"""What the box holds at first: two annotations, so that the marks show at once."""


@lru_cache(maxsize=1)
def _pod() -> dict:
    from meshlab.istio.inject import load_pod

    return load_pod(datafiles.read_text(POD), name=str(datafiles.data_file(POD)))


def parse_annotations(text: str) -> dict[str, str]:
    """``key: value`` lines (YAML) -> annotations; bad text -> MeshlabError saying where.

    Kubernetes annotation values are strings; numbers and booleans written without quotes
    (``excludeInboundPorts: 9091``) are read as the text you wrote.
    """
    import yaml

    if not text.strip():
        return {}
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        if mark is None:
            raise MeshlabError(tr("cannot read the annotations: write one 'key: value' per "
                                  "line, e.g. traffic.sidecar.istio.io/excludeOutboundPorts: "
                                  "\"5432\"")) from None
        raise MeshlabError(tr("cannot read the annotations at line {line}, column {column}: "
                              "write one 'key: value' per line, e.g. "
                              "traffic.sidecar.istio.io/excludeOutboundPorts: \"5432\"",
                              line=mark.line + 1, column=mark.column + 1)) from None
    if not isinstance(loaded, dict):
        raise MeshlabError(tr("the annotations must be 'key: value' lines, e.g. "
                              "sidecar.istio.io/interceptionMode: TPROXY"))
    out: dict[str, str] = {}
    for key, value in loaded.items():
        if isinstance(value, (dict, list)):
            raise MeshlabError(tr("annotation {key}: a value must be one line of text, not "
                                  "{kind}", key=repr(key), kind=type(value).__name__))
        text_value = "" if value is None else str(value).lower() if isinstance(value, bool) \
            else str(value)
        out[str(key)] = text_value
    return out


@lru_cache(maxsize=256)
def _inject(items: tuple[tuple[str, str], ...]) -> tuple[tuple[str, ...], str, int, int, str]:
    from meshlab.istio.inject import inject

    pod: dict[str, Any] = copy.deepcopy(_pod())
    if items:
        pod.setdefault("metadata", {})["annotations"] = dict(items)
    result = inject(pod, NAMESPACE_LABELS)
    if result.init_args is None:
        return (), "", result.proxy_uid, result.proxy_gid, result.interception_mode
    return (tuple(result.init_args), result.rules().restore_v4, result.proxy_uid,
            result.proxy_gid, result.interception_mode)


class AnnotationExplorer(LiveWidget, widgets.VBox):
    """Pod annotations in, ``istio-init`` arguments and rules out, changes marked."""

    def __init__(self, annotations: str = EXAMPLE) -> None:
        self.error = error_widget()
        self.annotations = widgets.Textarea(
            value="", description=tr("annotations"),
            layout=widgets.Layout(width="100%", height="7em"),
            style={"description_width": "initial"},
            placeholder="traffic.sidecar.istio.io/excludeOutboundPorts: \"5432\"",
            continuous_update=False)
        self.annotations.add_class("meshlab-annotations-input")
        self.args_text = widgets.HTML("").add_class("meshlab-init-args")
        self.summary = widgets.HTML("")
        self.rules_text = widgets.HTML("").add_class("meshlab-annotation-rules")
        self._args: tuple[str, ...] = ()
        self._lines: list[tuple[str, str]] = []
        self._default = guarded(lambda: _inject(())[1], self.error) or ""
        super().__init__([self.annotations, self.error, self.args_text, self.summary,
                          self.rules_text])
        self.add_class("meshlab-annotation-explorer")
        self.annotations.observe(self._update, names="value")
        self.annotations.value = annotations
        if annotations == "":
            self._update()

    def _update(self, change: object = None) -> None:
        text = self.annotations.value
        done = guarded(lambda: _inject(tuple(sorted(parse_annotations(text).items()))),
                       self.error)
        if done is None:
            last = tr("Showing the result of the last valid annotations.")
            self.summary.value = f"<i>{last}</i>"
            return
        args, restore, uid, gid, mode = done
        self._args = args
        if not args:
            none = tr("No istio-init container (interception mode NONE).")
            self.args_text.value = f"<i>{none}</i>"
            self._lines = []
            self.summary.value = ""
            self.rules_text.value = ""
            return
        runs = tr("istio-init runs: istio-iptables {args}", args=esc(shlex.join(args)))
        proxy = tr("istio-proxy runs as UID {uid}, GID {gid} (interception mode {mode})",
                   uid=uid, gid=gid, mode=esc(mode))
        self.args_text.value = (
            f"<pre style='font-size:12px;white-space:pre-wrap'>{runs}\n{proxy}</pre>")
        self._lines = diff_lines(self._default, restore)
        added = sum(1 for m, _ in self._lines if m == "+")
        gone = sum(1 for m, _ in self._lines if m == "-")
        self.summary.value = (f"<i>{tr('Same rules as a pod without annotations.')}</i>"
                              if not added + gone else
                              tr("{counts} against a pod without annotations.",
                                 counts=f"<b>{_counts(added, gone)}</b>"))
        self.rules_text.value = _render(self._lines)

    def static(self) -> str:
        """The fallback for pages that show no live widgets: the ``istio-init`` arguments,
        then only the rule lines that differ from a pod without annotations (``+``/``-``)."""
        head = (f"istio-iptables {shlex.join(self._args)}" if self._args else
                tr("no istio-init"))
        changed = [f"{mark} {line}" for mark, line in self._lines if mark != " "]
        return "\n".join([head, "", *(changed or [tr("(same rules as without annotations)")])])
