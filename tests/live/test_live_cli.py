"""`meshlab live` as a person (or CI) runs it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from meshlab.live import unavailable_reason

pytestmark = pytest.mark.live
needs_lab = pytest.mark.skipif(unavailable_reason() is not None,
                               reason=f"live lab unavailable: {unavailable_reason()}")


def meshlab(*args: str, user: int | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "meshlab.cli.main", "live", *args]
    if user is not None:
        argv = ["setpriv", "--reuid", str(user), "--regid", str(user), "--clear-groups", *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


@needs_lab
def test_verify_json_shape_and_exit_status() -> None:
    done = meshlab("verify", "--scenario", "inbound", "--scenario", "outbound", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["agree"] is True
    assert [s["name"] for s in out["scenarios"]] == ["inbound", "outbound"]
    for s in out["scenarios"]:
        assert set(s) >= {"name", "agree", "model", "kernel", "diff"}


@needs_lab
def test_run_without_the_exemption_shows_the_loop() -> None:
    done = meshlab("run", "outbound", "--without-rule", "-m owner --uid-owner 1337 -j RETURN",
                   "--without-rule", "-m owner --gid-owner 1337 -j RETURN", "--json")
    out = json.loads(done.stdout)
    assert out["model"]["outcome"] == "loop"
    assert out["kernel"]["outcome"] == "loop"
    assert out["kernel"]["hops"] == 9


@needs_lab
def test_clean_runs() -> None:
    assert meshlab("clean").returncode == 0


@pytest.mark.skipif(shutil.which("setpriv") is None or unavailable_reason() is not None,
                    reason="needs root and setpriv to run the command as another user")
def test_not_root_exits_2_and_says_why() -> None:
    # This runs the CLI itself as uid 1000, so that uid must be able to import meshlab and
    # its dependencies from this checkout; a clone in a private directory (`mktemp -d`,
    # mode 700) cannot. (The lab's own programs do not need this: see meshlab.live.proc.)
    can = subprocess.run(["setpriv", "--reuid", "1000", "--regid", "1000", "--clear-groups",
                          sys.executable, "-c", "import meshlab.cli.main"],
                         capture_output=True, text=True, timeout=30, check=False)
    if can.returncode != 0:
        last = (can.stderr.strip().splitlines() or ["?"])[-1]
        pytest.skip(f"uid 1000 cannot import meshlab from this checkout ({last})")
    done = meshlab("verify", user=1000)
    assert done.returncode == 2
    assert "root" in done.stderr
