"""Interactive lessons (ipywidgets 8): each widget asks the model and shows its answer.

* :class:`StepPlayer`: play a walk's numbered steps on the hooks picture;
* :class:`RuleLab`: untick rules of a sidecar pod and see which requests break;
* :class:`FlagExplorer`: type istio-iptables flags and read the rules, changes marked;
* :class:`AnnotationExplorer`: edit a pod's annotations; istio-init's arguments and the rules
  follow;
* :class:`PacketBuilder`: choose a sender and a destination and read the kernel's trace.

Every widget works in plain Python too (set a trait, read the HTML), never shows a
traceback (bad input becomes a message in an HTML widget with class ``meshlab-error``), and has
``.static()``: a DataFrame or text to show beside it where live widgets do not render
(GitHub, nbviewer). The CSS classes follow the "Widget DOM contract" the browser tests use.
"""

from __future__ import annotations

from meshlab.widgets.annotation_explorer import AnnotationExplorer
from meshlab.widgets.flag_explorer import FlagExplorer
from meshlab.widgets.packet_builder import PacketBuilder
from meshlab.widgets.rule_lab import RuleLab
from meshlab.widgets.step_player import StepPlayer

__all__ = ["AnnotationExplorer", "FlagExplorer", "PacketBuilder", "RuleLab", "StepPlayer"]
