"""Pictures of the model (matplotlib only): hooks, chains, a sequence, a loop, the ablation.

Every function returns a :class:`matplotlib.figure.Figure` built from what the model produced
(a :class:`~meshlab.walk.Walk`, a :class:`~meshlab.netfilter.ruleset.Ruleset`, a
:class:`~meshlab.walk.LoopReport`, the ablation table); none of them decides anything. They
share one look (:mod:`meshlab.viz.style`): white paper, greys, and meaning carried by line
styles, markers, hatching and labels, never by colour alone. Figures are not registered with
pyplot, so nothing leaks between cells; a notebook shows a figure when it is a cell's value.
"""

from __future__ import annotations

from meshlab.viz.ablation import ablation_figure
from meshlab.viz.chains import chains_figure
from meshlab.viz.hooks import hooks_figure
from meshlab.viz.loop import loop_growth_figure
from meshlab.viz.sequence import sequence_figure

__all__ = [
    "ablation_figure",
    "chains_figure",
    "hooks_figure",
    "loop_growth_figure",
    "sequence_figure",
]
