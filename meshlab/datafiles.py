"""The files the library reads at run time, shipped inside the package (``meshlab/data/``).

A wheel installed anywhere carries them, so nothing depends on a checkout's layout:

``scenarios.yaml``
    the scenario catalog (:mod:`meshlab.scenarios`);
``pods/productpage-v1.yaml``
    the pod the annotation explorer and the injection exercises start from (the
    repository's ``data/pods/productpage-v1.yaml``, which learners pass to ``meshlab
    inject``, is a copy of it; a test keeps the two equal);
``live/recorded-run.json``
    the recording of the real-kernel lab that notebook 07 shows where the lab cannot run
    (:mod:`meshlab.live.record`).

They are read through :mod:`importlib.resources`::

    >>> from meshlab.datafiles import read_text
    >>> read_text("pods/productpage-v1.yaml").count("kind: Pod")
    1
"""

from __future__ import annotations

from importlib.resources import files
from typing import TYPE_CHECKING

from meshlab.errors import MeshlabError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

CATALOG = "scenarios.yaml"
PRODUCTPAGE_POD = "pods/productpage-v1.yaml"
RECORDED_RUN = "live/recorded-run.json"


def data_file(name: str) -> Traversable:
    """The packaged file ``name`` (``/``-separated, relative to ``meshlab/data``)."""
    where = files("meshlab") / "data"
    for part in name.split("/"):
        where = where / part
    return where


def read_text(name: str) -> str:
    """The UTF-8 text of the packaged file ``name``; a missing file says how to repair."""
    where = data_file(name)
    try:
        return where.read_text(encoding="utf-8")
    except OSError as error:
        raise MeshlabError(f"{where}: cannot read meshlab's packaged data file {name!r} "
                           f"({error.strerror}); the installation is incomplete: reinstall "
                           "meshlab (pip install --force-reinstall meshlab)") from None


__all__ = ["CATALOG", "PRODUCTPAGE_POD", "RECORDED_RUN", "data_file", "read_text"]
