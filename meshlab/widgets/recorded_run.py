"""The recorded-run browser: one scenario of the real-kernel lab, the model beside the kernel.

Lesson 07 cannot run the live lab on Binder or a laptop without root. It reads the recorded run
instead (``meshlab/data/live/recorded-run.json``, made by ``meshlab live record`` as root on a
real Linux kernel). Choose a scenario and the widget shows, side by side, what the model and
the kernel found: the outcome, who got the connection, Envoy's listeners and clusters, and
every nat counter, with an "agree" column. A caption says where and when the numbers were
recorded. ``static()`` is the same table for pages that show no live widgets;
:func:`meshlab.widgets.tables.recorded_scenarios` is the whole run in one table.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ipywidgets as widgets
import pandas

from meshlab.i18n import tr, translatable
from meshlab.widgets.common import LiveWidget, error_widget, esc, guarded, html_table
from meshlab.widgets.tables import recorded_caption, recorded_scenario


class RecordedRunBrowser(LiveWidget, widgets.VBox):
    """A scenario dropdown over the recorded live run -> model and kernel side by side."""

    def __init__(self, document: Mapping[str, Any] | None = None,
                 scenario: str = "inbound") -> None:
        from meshlab.live.record import load

        self.error = error_widget()
        self.caption = widgets.HTML("").add_class("meshlab-recorded-caption")
        self.result = widgets.HTML("").add_class("meshlab-recorded-result")
        self.document: Mapping[str, Any] = (document if document is not None else
                                            guarded(load, self.error) or {})
        names = [s["name"] for s in self.document.get("verify", {}).get("scenarios", [])]
        self.scenario = widgets.Dropdown(options=names, description=tr("scenario"),
                                         value=scenario if scenario in names else
                                         (names[0] if names else None))
        self.scenario.add_class("meshlab-recorded-scenario")
        self._frame = pandas.DataFrame()
        super().__init__([self.scenario, self.caption, self.error, self.result])
        self.add_class("meshlab-recorded-run-browser")
        if self.document:
            self.caption.value = f"<p><i>{esc(recorded_caption(self.document))}</i></p>"
        self.scenario.observe(self._update, names="value")
        self._update()

    def _update(self, change: object = None) -> None:
        name = self.scenario.value
        if name is None:
            self.result.value = f"<i>{tr('The recorded run has no scenarios.')}</i>"
            return
        frame = guarded(lambda: recorded_scenario(self.document, name), self.error)
        if frame is None:
            self.result.value = ""
            return
        self._frame = frame
        rows = [(index, *row) for index, row in zip(frame.index, frame.itertuples(index=False),
                                                     strict=True)]
        agree = all(r[-1] == "yes" for r in rows)
        verdict = (f"<b>{tr('model and kernel agree on every line')}</b>" if agree else
                   tr("{differ} on the lines marked NO",
                      differ=f"<b>{tr('model and kernel DIFFER')}</b>"))
        header = ["", translatable("model"), translatable("real kernel"), translatable("agree")]
        self.result.value = (f"<p>{verdict}.</p>"
                             + html_table(header, rows, [r[-1] != "yes" for r in rows]))

    def static(self) -> pandas.DataFrame:
        """The chosen scenario's table: model and kernel side by side."""
        return self._frame
