"""An IPython extension for the lessons: a cell run out of order says which cells to run.

After a kernel restart (or when a learner opens a lesson and runs a cell in the middle), a
name the lesson made in an earlier cell does not exist yet, and Python answers with a
``NameError`` and its traceback. This extension replaces that traceback with three lines
that name the missing name and say what to do::

    NameError: 'player' is not defined yet.
    A cell above this one makes it, and it has not run in this kernel (after a restart, none has).
    Run the cells above first: Run -> Run All Above Selected Cell (or Run -> Run All Cells).

Every other exception keeps IPython's usual traceback. ``%tb`` still shows the full one.

The lessons' environment loads it in every kernel: ``make lab`` / ``make test`` and Binder's
``postBuild`` copy ``jupyter/ipython_config.py`` to ``<sys.prefix>/etc/ipython/``, one of the
directories IPython reads its configuration from. By hand: ``%load_ext meshlab.jupyter``.
"""

from __future__ import annotations

import re
from types import TracebackType
from typing import Any

from meshlab.i18n import tr


def name_error_lines(error: NameError) -> list[str]:
    """The short message for ``error``: which name is missing, and which cells to run."""
    name = getattr(error, "name", None)
    if not name:
        found = re.search(r"name '([^']+)'", str(error))
        name = found.group(1) if found else None
    missing = tr("{name} is not defined yet.", name=repr(name)) if name else f"{error}."
    return [
        f"NameError: {missing}",
        tr("A cell above this one makes it, and it has not run in this kernel (after a "
           "restart, none has)."),
        tr("Run the cells above first: Run -> Run All Above Selected Cell (or Run -> Run All "
           "Cells). If no cell above makes it, check its spelling."),
    ]


def _show_name_error(shell: Any, etype: type[BaseException], value: BaseException,
                     tb: TracebackType | None, tb_offset: int | None = None) -> list[str]:
    lines = name_error_lines(value) if isinstance(value, NameError) else [str(value)]
    shell._showtraceback(etype, value, lines)
    return lines


def load_ipython_extension(ipython: Any) -> None:
    """Called by ``%load_ext meshlab.jupyter`` and by the ``extensions`` configuration."""
    ipython.set_custom_exc((NameError,), _show_name_error)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext meshlab.jupyter``: NameErrors get IPython's usual traceback again."""
    ipython.set_custom_exc((), None)
