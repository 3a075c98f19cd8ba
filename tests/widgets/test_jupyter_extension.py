"""The IPython extension: a cell run out of order gets a short message, in a real kernel.

The kernel is started with jupyter_client, as JupyterLab starts it, and reads the very file
`make lab` and Binder install (``jupyter/ipython_config.py``) through ``--config``; another test
checks that IPython reads ``<sys.prefix>/etc/ipython``, where the installers put it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from meshlab.jupyter import name_error_lines

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "jupyter" / "ipython_config.py"


def test_message_names_the_missing_name_and_the_menu() -> None:
    try:
        player  # noqa: B018 (the point: a name no cell made)
    except NameError as error:
        lines = name_error_lines(error)
    assert lines[0] == "NameError: 'player' is not defined yet."
    assert "Run -> Run All Above Selected Cell" in " ".join(lines)
    assert len(lines) <= 3


def test_ipython_reads_the_environment_config_dir_that_the_installers_write() -> None:
    from IPython.core.application import ENV_CONFIG_DIRS, SYSTEM_CONFIG_DIRS

    env_dir = os.path.join(sys.prefix, "etc", "ipython")
    assert env_dir in ENV_CONFIG_DIRS + SYSTEM_CONFIG_DIRS
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "cp jupyter/ipython_config.py $(VENV)/etc/ipython/ipython_config.py" in makefile
    post_build = (ROOT / "postBuild").read_text(encoding="utf-8")
    assert 'cp jupyter/ipython_config.py "$prefix/etc/ipython/ipython_config.py"' in post_build


def _run_in_kernel(cells: list[str], extra: list[str]) -> list[dict]:
    jupyter_client = pytest.importorskip("jupyter_client")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH",
                                                                                   "")]))
    km = jupyter_client.KernelManager(kernel_name="python3")
    km.start_kernel(extra_arguments=extra, env=env)
    errors: list[dict] = []
    try:
        kc = km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=60)
        for cell in cells:
            reply = kc.execute_interactive(
                cell, timeout=60,
                output_hook=lambda m: errors.append(m["content"])
                if m["msg_type"] == "error" else None)
            assert reply["content"]["status"] in ("ok", "error")
        kc.stop_channels()
    finally:
        km.shutdown_kernel(now=True)
    return errors


def test_a_kernel_with_the_installed_config_shows_the_short_message() -> None:
    errors = _run_in_kernel(["x = 1", "print(player)", "1 / 0"], [f"--config={CONFIG}"])
    assert len(errors) == 2
    name_error, other = errors
    assert name_error["ename"] == "NameError"
    text = "\n".join(name_error["traceback"])
    assert "'player' is not defined yet" in text and "Run All Above Selected Cell" in text
    assert len(name_error["traceback"]) <= 3 and "Traceback" not in text
    assert other["ename"] == "ZeroDivisionError" and len(other["traceback"]) > 1, \
        "other errors keep IPython's traceback"
