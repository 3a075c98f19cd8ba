"""meshlab works installed from its wheel, far from the checkout.

The wheel is built from a copy of the sources (so the checkout gets no ``build/`` or
``*.egg-info``), installed without ``-e`` into a fresh virtual environment, and the commands
and one lesson's key code run from a folder outside the checkout with no ``PYTHONPATH``: every
file the library reads at run time must come from inside the installed package.

The build uses pip's usual isolated environment, which fetches setuptools from the package
index; where the running interpreter already has setuptools >= 77, it builds without
isolation and needs no index at all. The fresh environment installs nothing from the index:
the wheel goes in with ``--no-deps``, and pandas and PyYAML are seen through a ``.pth`` file
pointing at this interpreter's site-packages, added after the install.
"""

from __future__ import annotations

import os
import re
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: What a wheel is built from (everything else in the checkout is not part of it).
SOURCES = ("pyproject.toml", "README.md", "meshlab")

RULES = """\
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:ISTIO_INBOUND - [0:0]
:ISTIO_IN_REDIRECT - [0:0]
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN
-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
COMMIT
"""

#: Lesson 07's key cells (the recorded run, read as the notebook reads it) and lesson 01's
#: injection of the packaged productpage pod.
LESSON = """\
from meshlab.exercises import PRODUCTPAGE_POD
from meshlab.istio.inject import inject, load_pod
from meshlab.live import record

recorded = record.load()
print(record.describe(recorded))
inbound = next(s for s in recorded["verify"]["scenarios"] if s["name"] == "inbound")
print("inbound agrees:", inbound["agree"])
result = inject(load_pod(PRODUCTPAGE_POD.read_text(encoding="utf-8")),
                {"istio-injection": "enabled"})
print("injected:", result.injected, "init:", result.init_args is not None)

import meshlab
from meshlab.exercises import check_inbound_capture_port

meshlab.set_language("ko")
print("in Korean:", check_inbound_capture_port(None).feedback)
"""


def _run(command: list[str], *, cwd: Path, env: dict[str, str] | None = None,
         timeout: float = 600) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert done.returncode == 0, (f"{' '.join(command)} exited {done.returncode}\n"
                                  f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}")
    return done


def _setuptools_builds_here() -> bool:
    """Can this interpreter build the wheel without pip's isolated build environment?"""
    try:
        import setuptools
    except ImportError:
        return False
    major = int(setuptools.__version__.split(".")[0])
    return major >= 77


def _build_wheel(tmp: Path) -> Path:
    source = tmp / "source"
    source.mkdir()
    for name in SOURCES:
        origin = ROOT / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, ignore=shutil.ignore_patterns(
                "__pycache__", "*.egg-info", ".ipynb_checkpoints"))
        else:
            shutil.copy2(origin, source / name)
    dist = tmp / "dist"
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dist)]
    if _setuptools_builds_here():
        command.append("--no-build-isolation")
    else:  # pip's isolated build environment fetches the build requirements from the index
        print("building in pip's isolated environment (setuptools>=77 from the package index; "
              "offline, install setuptools>=77 and wheel here to build without it)")
    _run([*command, str(source)], cwd=tmp)
    wheels = sorted(dist.glob("meshlab-*.whl"))
    assert len(wheels) == 1, f"expected one meshlab wheel in {dist}, found {wheels}"
    return wheels[0]


def _fresh_venv(tmp: Path, wheel: Path) -> Path:
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp)
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
          "--no-index", "--quiet", str(wheel)], cwd=tmp)
    # Only now let it see pandas and PyYAML (before the install pip would have taken the
    # shared environment's meshlab for an installed copy to replace). A .pth line adds the
    # directory after the venv's own site-packages and runs none of its .pth files, so the
    # shared environment's editable meshlab stays out of sight.
    own = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                    cwd=tmp).stdout.strip())
    shared = {*site.getsitepackages(), sysconfig.get_path("purelib")}
    (own / "meshlab-test-shared-deps.pth").write_text("".join(f"{p}\n" for p in sorted(shared)))
    return venv


@pytest.mark.slow
def test_the_installed_wheel_runs_outside_the_checkout(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    venv = _fresh_venv(tmp_path, wheel)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME"}}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    python, meshlab = str(venv / "bin" / "python"), str(venv / "bin" / "meshlab")

    where = _run([python, "-c", "import meshlab; print(meshlab.__file__)"],
                 cwd=elsewhere, env=env).stdout.strip()
    assert Path(where).is_relative_to(venv), f"meshlab was imported from {where}, not the wheel"
    assert not Path(where).is_relative_to(ROOT)

    walk = _run([meshlab, "walk", "inbound"], cwd=elsewhere, env=env).stdout
    assert "delivered" in walk and "127.0.0.6" in walk

    rules = _run([meshlab, "rules"], cwd=elsewhere, env=env).stdout
    assert "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT" in rules

    (elsewhere / "rules.txt").write_text(RULES)
    trace = _run([meshlab, "trace", "--rules", "rules.txt", "--to-pod", "--pod-ip", "10.244.0.5",
                  "--src", "10.244.0.9:43210", "--dst", "10.244.0.5:9080", "--json"],
                 cwd=elsewhere, env=env).stdout
    assert '"REDIRECT' in trace and "15006" in trace

    (elsewhere / "lesson.py").write_text(LESSON)
    lesson = _run([python, "lesson.py"], cwd=elsewhere, env=env).stdout
    assert "inbound agrees: True" in lesson
    assert "injected: True init: True" in lesson
    assert re.search("in Korean: .*[\uac00-\ud7a3]", lesson), "the wheel lacks messages/ko"
