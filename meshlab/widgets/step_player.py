"""The step player: walk through the article's numbered steps of a request, one at a time.

Press **Play** (or **Next** / **Back**, or drag the slider) and, for each step, the hooks
picture shows where the packet is (that place hatched and outlined, the road ahead faded), the
text says what happens there and why, and the list below the picture marks the current step.
Steps the configuration skipped or changed (an excluded port, a removed rule, a loop) say so.

Layout: the picture is as wide as the notebook's output area (never wider than its own
pixels) and keeps its proportions; the step list wraps below it, so nothing falls outside
the widget in a narrow JupyterLab (1280 px with the file browser open).

Speed: only the first step's picture is drawn when the player is built, so it shows at once.
The other pictures are drawn one by one while the kernel is idle (:meth:`StepPlayer.prerender`
scheduled on the kernel's event loop), each kept as SVG bytes; a step whose picture is not
drawn yet is drawn when it is shown. Once drawn, moving the slider only swaps the bytes and
two bits of HTML. The pictures are SVG with their text as text: about twice as fast to write
as a PNG, and sharp at whatever width the output area has.
"""

from __future__ import annotations

import asyncio
import sys

import ipywidgets as widgets
import pandas

from meshlab.i18n import tr, translatable
from meshlab.walk import Walk
from meshlab.widgets.common import LiveWidget, error_widget, esc, guarded
from meshlab.widgets.reasons import passed_over_before, reasons_html

#: How a step that did not happen as the article tells is marked (its ``status``).
_STATUS = {"changed": translatable("changed"), "skipped": translatable("skipped")}


def _status(status: str) -> str:
    return tr(_STATUS[status]) if status in _STATUS else status


class StepPlayer(LiveWidget, widgets.VBox):
    """Play / Back / Next / a slider over a walk's numbered steps (1-8 or 9-15).

    ``walk`` is a :class:`~meshlab.walk.Walk` or the name of a catalog scenario (``"inbound"``,
    ``"outbound"``, ...). A bad name shows a message in the widget (``meshlab-error``).
    """

    def __init__(self, walk: Walk | str = "inbound") -> None:
        self.error = error_widget()
        self.walk: Walk | None = None
        self.steps: list = []
        self._frames: dict[int, bytes] = {}
        self.play = widgets.Play(value=0, min=0, max=0, step=1, interval=1500,
                                 show_repeat=False, layout=widgets.Layout(display="none"))
        self.play_button = widgets.Button(description=tr("Play"), icon="play",
                                          tooltip=tr("play the steps one after another"))
        self.play_button.add_class("meshlab-play")
        self.back = widgets.Button(description=tr("Back"), icon="step-backward").add_class(
            "meshlab-back")
        self.next = widgets.Button(description=tr("Next"), icon="step-forward").add_class(
            "meshlab-next")
        self.slider = widgets.IntSlider(value=0, min=0, max=0, description=tr("step"),
                                        readout=False, continuous_update=True)
        self.slider.add_class("meshlab-step-slider")
        self.image = widgets.Image(format="svg+xml", layout=widgets.Layout(
            width="100%", max_width="900px", height="auto", margin="0", object_fit="contain"))
        self.image.add_class("meshlab-step-image")
        self.text = widgets.HTML("").add_class("meshlab-step-text")
        self.step_list = widgets.HTML("").add_class("meshlab-step-list")
        self.step_list.layout = widgets.Layout(width="100%", margin="0")
        widgets.link((self.play, "value"), (self.slider, "value"))
        self.play.observe(self._on_playing, names="playing")
        self.play_button.on_click(self._toggle_play)
        self.back.on_click(lambda _: self._move(-1))
        self.next.on_click(lambda _: self._move(+1))
        self.slider.observe(self._show, names="value")
        controls = widgets.HBox([self.play_button, self.back, self.next, self.slider, self.play],
                                layout=widgets.Layout(flex_flow="row wrap", width="100%"))
        super().__init__([controls, self.error, self.text, self.image, self.step_list],
                         layout=widgets.Layout(width="100%", max_width="980px"))
        self.add_class("meshlab-step-player")
        self._load(walk)
        self._schedule_prerender()

    # ------------------------------------------------------------------ model -> widget
    def _load(self, walk: Walk | str) -> None:
        def build() -> tuple[Walk, list]:
            from meshlab.lesson import numbered_steps
            from meshlab.scenarios import run_scenario

            chosen = run_scenario(walk) if isinstance(walk, str) else walk
            return chosen, numbered_steps(chosen)

        built = guarded(build, self.error)
        if built is None:
            for control in (self.play_button, self.back, self.next, self.slider):
                control.disabled = True
            self.text.value = f"<i>{tr('No walk to play.')}</i>"
            return
        self.walk, self.steps = built
        self._frames = {}
        last = max(len(self.steps) - 1, 0)
        self.slider.max = self.play.max = last
        self.slider.value = 0
        self._show()

    def _show(self, change: object = None) -> None:
        if not self.steps:
            none = tr("This walk has none of the article's numbered steps.")
            self.text.value = f"<i>{none}</i>"
            self.step_list.value = ""
            return
        k = min(max(self.slider.value, 0), len(self.steps) - 1)
        step = self.steps[k]
        self.image.value = self.frame(k)
        self.slider.description = tr("step {n}", n=step.n)
        status = "" if step.status == "ok" else f" <b>[{esc(_status(step.status))}]</b>"
        what = ""
        if step.event is not None:
            what = f"<br><span style='font-family:monospace'>{esc(step.event.decision)}</span>"
        heading = tr("Step {n}: {title}", n=step.n, title=esc(step.title))
        self.text.value = (f"<b>{heading}</b>{status}"
                           f"<p style='margin:4px 0'>{esc(step.explanation)}{what}</p>"
                           + reasons_html(passed_over_before(self.walk, step.event)))
        self.step_list.value = _step_list(self.steps, k)

    def frame(self, k: int) -> bytes:
        """The picture (SVG) of step number ``k`` (0 is the first), drawn the first time it is
        asked for and kept."""
        if k not in self._frames:
            from meshlab.viz.hooks import hooks_figure
            from meshlab.viz.style import svg_bytes

            self._frames[k] = svg_bytes(hooks_figure(self.walk, step=self.steps[k].n))
        return self._frames[k]

    def prerender(self, count: int | None = None) -> int:
        """Draw up to ``count`` (default: all) pictures not drawn yet, in step order; return
        how many are still missing."""
        missing = [k for k in range(len(self.steps)) if k not in self._frames]
        for k in missing[:count]:
            self.frame(k)
        return len(missing) - len(missing[:count])

    def _schedule_prerender(self) -> None:
        """In a running kernel, draw the other pictures one per idle turn of its event loop,
        so that a click is never kept waiting for more than one picture."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # ipykernel runs its event loop between cells, not inside them
            kernel_app = sys.modules.get("ipykernel.kernelapp")
            if kernel_app is None or not kernel_app.IPKernelApp.initialized():
                return
            try:
                loop = asyncio.get_event_loop()
            except RuntimeError:
                return

        def one() -> None:
            if self.walk is not None and self.prerender(1):
                loop.call_later(0.01, one)

        loop.call_later(0.05, one)

    def _move(self, delta: int) -> None:
        self.slider.value = min(max(self.slider.value + delta, 0), self.slider.max)

    def _toggle_play(self, _button: object = None) -> None:
        if not self.play.playing and self.slider.value >= self.slider.max:
            self.slider.value = 0
        self.play.playing = not self.play.playing

    def _on_playing(self, change: dict) -> None:
        playing = bool(change["new"])
        self.play_button.description = tr("Pause") if playing else tr("Play")
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
    """The steps as a list that wraps in rows below the picture, the current one marked by a
    bar and an arrow (not by colour)."""
    items = []
    for k, step in enumerate(steps):
        label = f"{step.n}. {esc(step.title)}"
        if step.status == "skipped":
            label = f"<s>{label}</s> ({_status('skipped')})"
        elif step.status == "changed":
            label = f"{label} <b>({_status('changed')})</b>"
        if k == current:
            items.append(f"<li class='meshlab-current-step' style='list-style:none;"
                         f"border-left:4px solid #000;padding-left:4px'><b>&#9654; {label}"
                         "</b></li>")
        else:
            items.append(f"<li style='list-style:none;padding-left:8px'>{label}</li>")
    return ("<ul style='padding-left:0;margin:4px 0;display:flex;flex-wrap:wrap;"
            f"column-gap:16px;row-gap:2px'>{''.join(items)}</ul>")
