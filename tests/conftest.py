"""Shared fixtures: a throwaway network namespace for the tests that hold the model against
the real kernel (only ever that namespace: the host's own rules are never touched)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest
from live_tools import run, why_not_live


@pytest.fixture
def netns() -> Iterator[str]:
    """``meshlab-nf-test-<pid>``, with lo up; removed afterwards, whatever happens."""
    reason = why_not_live()
    if reason:
        pytest.skip(reason)
    name = f"meshlab-nf-test-{os.getpid()}"
    run("ip", "netns", "add", name)
    try:
        run("ip", "-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30,
                       check=False)
