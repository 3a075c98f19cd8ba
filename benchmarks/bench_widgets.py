"""How fast each widget answers a change made from code (target: under 100 ms), how soon the
step player shows its first picture (target: 150 ms), and how long each lesson takes to run
top to bottom (target: 5 s).

Each widget is driven the way a learner drives it, by setting a trait (``slider.value = k``,
``checkbox.value = False``, ``text.value = '...'``), and timed until its HTML is up to date.
The baseline, measured in the same run, is the model call alone (what the widget must at
least wait for), so the difference is what the widget itself adds.
"""

from __future__ import annotations

import itertools
import shlex
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from benchmarks.harness import Result, median_time

TARGET = 0.100
FIRST_FRAME_TARGET = 0.150
UID = "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN"
GID = "-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN"


def _step_player_first_frame() -> Result:
    """Building the player (run the walk, draw step 1) against drawing every step up front,
    as the player did before it drew lazily."""
    from meshlab.widgets import StepPlayer

    StepPlayer("outbound")  # imports and font caches, as the lesson's import cell warms them
    first = median_time(lambda: StepPlayer("outbound"), repeat=10)
    eager = median_time(lambda: StepPlayer("outbound").prerender(), repeat=3)
    return Result("StepPlayer: first frame shown (walk + step 1 drawn)", first,
                  FIRST_FRAME_TARGET, "every frame drawn up front", eager)


def _step_player() -> Result:
    from meshlab.scenarios import run_scenario
    from meshlab.widgets import StepPlayer

    player = StepPlayer("outbound")
    player.prerender()  # what the kernel's idle turns do after the cell has run
    values = itertools.cycle(range(player.slider.max + 1))
    median = median_time(lambda: setattr(player.slider, "value", next(values)), repeat=50)
    base = median_time(lambda: run_scenario("outbound"), repeat=20)
    return Result("StepPlayer: slider.value = k (pictures drawn)", median, TARGET,
                  "run_scenario('outbound')", base)


def _rule_lab() -> Result:
    from meshlab.scenarios import run_scenario
    from meshlab.widgets import RuleLab

    lab = RuleLab()
    boxes = {b.description: b for b in lab.toggles}

    def toggle() -> None:  # a set never seen before: the cache cannot help
        lab._cache.clear()
        boxes[GID].value = not boxes[GID].value

    boxes[UID].value = False
    median = median_time(toggle, repeat=20)
    names = list(lab._names)  # the sidecar scenarios: the rules it toggles are a sidecar pod's
    base = median_time(lambda: [run_scenario(n, without_rules=[UID, GID]) for n in names],
                       repeat=10)
    return Result("RuleLab: checkbox.value = False (sidecar scenarios, uncached)", median, TARGET,
                  f"run_scenario x {len(names)} scenarios", base)


def _flag_explorer() -> Result:
    from meshlab.istio.capture import CaptureConfig, generate
    from meshlab.widgets import FlagExplorer
    from meshlab.widgets.flag_explorer import DEFAULT_FLAGS, _restore

    explorer = FlagExplorer()
    texts = itertools.cycle([DEFAULT_FLAGS + " -o 5432", DEFAULT_FLAGS + " -o 3306"])

    def change() -> None:
        _restore.cache_clear()
        explorer.flags.value = next(texts)

    median = median_time(change, repeat=30)
    argv = shlex.split(DEFAULT_FLAGS + " -o 5432")
    base = median_time(lambda: generate(CaptureConfig.from_args(argv)), repeat=30)
    return Result("FlagExplorer: text.value = '...' (uncached)", median, TARGET,
                  "generate(CaptureConfig.from_args(...))", base)


def _packet_builder() -> Result:
    from meshlab.pod import Pod
    from meshlab.widgets import PacketBuilder

    builder = PacketBuilder()
    ports = itertools.cycle(["9080", "8080"])
    median = median_time(lambda: setattr(builder.port, "value", next(ports)), repeat=30)
    pod = Pod.default()
    base = median_time(lambda: pod.netns().connect(proto="tcp", dst="10.244.0.9", dport=9080,
                                                   uid=1000, gid=1000), repeat=30)
    return Result("PacketBuilder: port.value = n", median, TARGET, "Netns.connect", base)


def _lessons() -> list[Result]:
    """Each lesson executed top to bottom in one kernel (nbclient), the kernel's start not
    counted; the baseline is that start, measured in the same run."""
    import time

    import nbformat
    from nbclient import NotebookClient

    notebooks = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob(
        "[0-9][0-9]-*.ipynb"))
    results = []
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        client = NotebookClient(nb, timeout=120, kernel_name="python3",
                                resources={"metadata": {"path": str(path.parent)}},
                                extra_arguments=[f"--config={CONFIG}"])
        start = time.perf_counter()
        with client.setup_kernel():
            started = time.perf_counter()
            for index, cell in enumerate(nb.cells):
                client.execute_cell(cell, index)
            done = time.perf_counter()
        results.append(Result(f"lesson {path.stem}: all cells (kernel start excluded)",
                              done - started, LESSON_TARGET, "kernel start",
                              started - start))
    return results


LESSON_TARGET = 5.0
#: The IPython configuration `make lab` and Binder install: lessons are timed as they run there.
CONFIG = Path(__file__).resolve().parent.parent / "jupyter" / "ipython_config.py"


def run() -> list[Result]:
    return [_step_player_first_frame(), _step_player(), _rule_lab(), _flag_explorer(),
            _packet_builder(), *_lessons()]


if __name__ == "__main__":
    for result in run():
        print(result.row())
