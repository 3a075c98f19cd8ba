"""Helpers for the tests that hold the model against the real kernel in a scratch network
namespace (the ``netns`` fixture is in ``tests/conftest.py``)."""

from __future__ import annotations

import os
import shutil
import subprocess


def why_not_live() -> str | None:
    """Why the real-kernel tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root to create a network namespace (run as root, or in CI)"
    for tool in ("ip", "iptables-restore", "iptables-save", "ip6tables-restore",
                 "ip6tables-save"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install iptables iproute2)"
    return None


def run(*cmd: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command (bounded: 30 s); with ``check``, fail the test if it fails."""
    done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=30,
                          check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed: {done.stderr.strip()}")
    return done
