"""The Binder environment and the Python package must ask for the same things.

Binder builds from environment.yml; `make lab`/`make test` install from pyproject.toml. If the
two drift, a lesson can pass here and break on Binder (or the other way round).
"""

from __future__ import annotations

import re
from pathlib import Path

import tomllib
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [*project["dependencies"], *project["optional-dependencies"]["lab"]]
    return {Requirement(r).name.lower(): str(Requirement(r).specifier) for r in reqs}


def _environment_requirements() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    found: dict[str, str] = {}
    pip = [d for dep in env["dependencies"] if isinstance(dep, dict) for d in dep.get("pip", [])]
    for dep in [d for d in env["dependencies"] if isinstance(d, str)] + pip:
        name, spec = re.match(r"([A-Za-z0-9_.-]+)(.*)", dep).groups()  # type: ignore[union-attr]
        if name.lower() in {"python", "pip"}:
            continue
        # conda writes "pkg>=1,<2" like pip does; normalise through packaging for comparison.
        found[name.lower()] = str(Requirement(f"{name}{spec}").specifier)
    return found


def test_environment_yml_lists_the_same_packages_as_pyproject() -> None:
    assert _environment_requirements() == _pyproject_requirements()


def test_binder_post_build_installs_meshlab_and_the_lab_settings() -> None:
    post_build = (ROOT / "postBuild").read_text()
    assert "pip install --no-deps -e ." in post_build
    assert "jupyter/overrides.json" in post_build
    assert (ROOT / "jupyter" / "overrides.json").is_file()


def test_pinned_majors_for_the_lesson_stack() -> None:
    reqs = _pyproject_requirements()
    assert reqs["jupyterlab"] == "<5,>=4"
    assert reqs["ipywidgets"] == "<9,>=8"


def test_console_script_is_declared() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["meshlab"] == "meshlab.cli.main:main"


def test_the_sample_pod_learners_pass_to_inject_is_the_packaged_one() -> None:
    # The library reads meshlab/data/pods/productpage-v1.yaml (package data, the source);
    # the lessons and README point learners at the copy in data/pods/.
    packaged = ROOT / "meshlab" / "data" / "pods" / "productpage-v1.yaml"
    copy = ROOT / "data" / "pods" / "productpage-v1.yaml"
    assert copy.read_bytes() == packaged.read_bytes(), (
        f"{copy} differs from {packaged}; edit the packaged file and copy it over: "
        f"cp {packaged.relative_to(ROOT)} {copy.relative_to(ROOT)}")


def test_pyproject_ships_every_packaged_data_file() -> None:
    from fnmatch import fnmatch

    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["meshlab"]
    data = ROOT / "meshlab" / "data"
    files = [p.relative_to(ROOT / "meshlab").as_posix() for p in data.rglob("*") if p.is_file()]
    assert files
    unshipped = [f for f in files if not any(fnmatch(f, pattern) for pattern in patterns)]
    assert not unshipped, f"add these to [tool.setuptools.package-data] in pyproject: {unshipped}"
