"""The step player: walk through the article's numbered steps of a request, one at a time.

Press **Play** (or **Next** / **Back**, or drag the slider) and, for each step, the hooks
picture shows where the packet is (that place hatched and outlined, the road ahead faded), the
text says what happens there and why, and the list on the side marks the current step. Steps
the configuration skipped or changed (an excluded port, a removed rule, a loop) say so.

Speed: every step's picture is drawn once, when the player is built, and kept as PNG bytes;
moving the slider only swaps the bytes and two bits of HTML (well under 100 ms).
"""

from __future__ import annotations

import ipywidgets as widgets
import pandas

from meshlab.walk import Walk
from meshlab.widgets.common import error_widget, esc, guarded
from meshlab.widgets.reasons import passed_over_before, reasons_html

_PNG_DPI = 80


class StepPlayer(widgets.VBox):
    """Play / Back / Next / a slider over a walk's numbered steps (1-8 or 9-15).

    ``walk`` is a :class:`~meshlab.walk.Walk` or the name of a catalog scenario (``"inbound"``,
    ``"outbound"``, ...). A bad name shows a message in the widget (``meshlab-error``).
    """

    def __init__(self, walk: Walk | str = "inbound") -> None:
        self.error = error_widget()
        self.walk: Walk | None = None
        self.steps: list = []
        self._pngs: list[bytes] = []
        self.play = widgets.Play(value=0, min=0, max=0, step=1, interval=1500,
                                 show_repeat=False, layout=widgets.Layout(display="none"))
        self.play_button = widgets.Button(description="Play", icon="play",
                                          tooltip="play the steps one after another")
        self.play_button.add_class("meshlab-play")
        self.back = widgets.Button(description="Back", icon="step-backward").add_class(
            "meshlab-back")
        self.next = widgets.Button(description="Next", icon="step-forward").add_class(
            "meshlab-next")
        self.slider = widgets.IntSlider(value=0, min=0, max=0, description="step",
                                        readout=False, continuous_update=True)
        self.slider.add_class("meshlab-step-slider")
        self.image = widgets.Image(format="png", layout=widgets.Layout(width="100%",
                                                                       max_width="960px"))
        self.text = widgets.HTML("").add_class("meshlab-step-text")
        self.step_list = widgets.HTML("").add_class("meshlab-step-list")
        self.step_list.layout = widgets.Layout(min_width="280px")
        widgets.link((self.play, "value"), (self.slider, "value"))
        self.play.observe(self._on_playing, names="playing")
        self.play_button.on_click(self._toggle_play)
        self.back.on_click(lambda _: self._move(-1))
        self.next.on_click(lambda _: self._move(+1))
        self.slider.observe(self._show, names="value")
        controls = widgets.HBox([self.play_button, self.back, self.next, self.slider, self.play])
        body = widgets.HBox([self.image, self.step_list])
        super().__init__([controls, self.error, self.text, body])
        self.add_class("meshlab-step-player")
        self._load(walk)

    # ------------------------------------------------------------------ model -> widget
    def _load(self, walk: Walk | str) -> None:
        def build() -> tuple[Walk, list, list[bytes]]:
            from meshlab.lesson import numbered_steps
            from meshlab.scenarios import run_scenario
            from meshlab.viz.hooks import hooks_figure
            from meshlab.viz.style import png_bytes

            chosen = run_scenario(walk) if isinstance(walk, str) else walk
            steps = numbered_steps(chosen)
            pngs = [png_bytes(hooks_figure(chosen, step=s.n), dpi=_PNG_DPI) for s in steps]
            return chosen, steps, pngs

        built = guarded(build, self.error)
        if built is None:
            for control in (self.play_button, self.back, self.next, self.slider):
                control.disabled = True
            self.text.value = "<i>No walk to play.</i>"
            return
        self.walk, self.steps, self._pngs = built
        last = max(len(self.steps) - 1, 0)
        self.slider.max = self.play.max = last
        self.slider.value = 0
        self._show()

    def _show(self, change: object = None) -> None:
        if not self.steps:
            self.text.value = "<i>This walk has none of the article's numbered steps.</i>"
            self.step_list.value = ""
            return
        k = min(max(self.slider.value, 0), len(self.steps) - 1)
        step = self.steps[k]
        self.image.value = self._pngs[k]
        self.slider.description = f"step {step.n}"
        status = "" if step.status == "ok" else f" <b>[{esc(step.status)}]</b>"
        what = ""
        if step.event is not None:
            what = f"<br><span style='font-family:monospace'>{esc(step.event.decision)}</span>"
        self.text.value = (f"<b>Step {step.n}: {esc(step.title)}</b>{status}"
                           f"<p style='margin:4px 0'>{esc(step.explanation)}{what}</p>"
                           + reasons_html(passed_over_before(self.walk, step.event)))
        self.step_list.value = _step_list(self.steps, k)

    def _move(self, delta: int) -> None:
        self.slider.value = min(max(self.slider.value + delta, 0), self.slider.max)

    def _toggle_play(self, _button: object = None) -> None:
        if not self.play.playing and self.slider.value >= self.slider.max:
            self.slider.value = 0
        self.play.playing = not self.play.playing

    def _on_playing(self, change: dict) -> None:
        playing = bool(change["new"])
        self.play_button.description = "Pause" if playing else "Play"
        self.play_button.icon = "pause" if playing else "play"

    # ------------------------------------------------------------------ fallback
    def static(self) -> pandas.DataFrame:
        """The steps as a table (n, title, status, what happened): the fallback for pages
        that show no live widgets. ``figure()`` gives the matching picture."""
        rows = [(s.n, s.title, s.status, "" if s.event is None else s.event.decision,
                 s.explanation) for s in self.steps]
        frame = pandas.DataFrame(rows, columns=["step", "title", "status", "what happened",
                                                "why"])
        return frame.set_index("step")

    def figure(self, step: int | None = None):  # type: ignore[no-untyped-def]
        """The hooks picture of the whole walk (or of one ``step``), as a Figure."""
        from meshlab.viz.hooks import hooks_figure

        return hooks_figure(self.walk, step=step)


def _step_list(steps: list, current: int) -> str:
    items = []
    for k, step in enumerate(steps):
        label = f"{step.n}. {esc(step.title)}"
        if step.status == "skipped":
            label = f"<s>{label}</s> (skipped)"
        elif step.status == "changed":
            label = f"{label} <b>(changed)</b>"
        if k == current:
            items.append(f"<li class='meshlab-current-step' style='list-style:none;"
                         f"border-left:4px solid #000;padding-left:4px'><b>&#9654; {label}"
                         "</b></li>")
        else:
            items.append(f"<li style='list-style:none;padding-left:8px'>{label}</li>")
    return f"<ul style='padding-left:0;margin:0'>{''.join(items)}</ul>"
