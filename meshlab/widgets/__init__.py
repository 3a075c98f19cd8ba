"""Interactive lessons (ipywidgets 8): each widget asks the model and shows its answer.

* :class:`StepPlayer`: play a walk's numbered steps on the hooks picture;
* :class:`RuleLab`: untick rules of a sidecar pod and see which requests break;
* :class:`FlagExplorer`: type istio-iptables flags and read the rules, changes marked;
* :class:`AnnotationExplorer`: edit a pod's annotations; istio-init's arguments and the rules
  follow;
* :class:`PacketBuilder`: choose a sender and a destination and read the kernel's trace;
* :class:`RulesTracer`: paste a pod's ``iptables-save``, choose a connection, read the trace
  with the reason each rule did not match;
* :class:`RecordedRunBrowser`: one scenario of the recorded real-kernel run, the model's and
  the kernel's counters side by side.

:mod:`meshlab.widgets.tables` gives lessons readable tables and sentences (no Python lists);
:data:`STORED_WIDGET_NOTE` is the one line that says a saved widget comes alive once the lesson
runs.

Every widget works in plain Python too (set a trait, read the HTML), never shows a
traceback (bad input becomes a message in an HTML widget with class ``meshlab-error``), and has
``.static()``: a DataFrame or text to show beside it where live widgets do not render
(GitHub, nbviewer). The CSS classes follow the "Widget DOM contract" the browser tests use.
"""

from __future__ import annotations

from meshlab.widgets.annotation_explorer import AnnotationExplorer
from meshlab.widgets.common import STORED_WIDGET_NOTE
from meshlab.widgets.flag_explorer import FlagExplorer
from meshlab.widgets.packet_builder import PacketBuilder
from meshlab.widgets.recorded_run import RecordedRunBrowser
from meshlab.widgets.rule_lab import RuleLab
from meshlab.widgets.rules_tracer import RulesTracer
from meshlab.widgets.step_player import StepPlayer
from meshlab.widgets.tables import (
    delivery_text,
    listing,
    recorded_caption,
    recorded_scenario,
    recorded_scenarios,
    scenario_overview,
)

__all__ = [
    "STORED_WIDGET_NOTE",
    "AnnotationExplorer",
    "FlagExplorer",
    "PacketBuilder",
    "RecordedRunBrowser",
    "RuleLab",
    "RulesTracer",
    "StepPlayer",
    "delivery_text",
    "listing",
    "recorded_caption",
    "recorded_scenario",
    "recorded_scenarios",
    "scenario_overview",
]
