"""`meshlab live` as a person (or CI) runs it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from importlib.util import find_spec
from pathlib import Path

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
    # This runs the CLI itself as uid 1000, so that uid must be able to run a Python and import
    # meshlab. A checkout in a private directory (`mktemp -d`, mode 700), or a Python under
    # /root, is out of its reach: then the package is copied to a directory it can read and
    # run with the system's Python (the path to this error needs nothing but the standard
    # library). (The lab's own programs do not need this: see meshlab.live.proc.)
    with tempfile.TemporaryDirectory() as spare:
        argv = _uid_1000_python(Path(spare))
        done = subprocess.run(["setpriv", "--reuid", "1000", "--regid", "1000", "--clear-groups",
                               *argv, "-m", "meshlab.cli.main", "live", "verify"],
                              capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert "root" in done.stderr


def _uid_1000_python(spare: Path) -> list[str]:
    """A command line with which uid 1000 runs a Python that imports this meshlab."""
    def works(argv: list[str]) -> bool:
        return subprocess.run(["setpriv", "--reuid", "1000", "--regid", "1000",
                               "--clear-groups", *argv, "-c", "import meshlab.cli.main"],
                              capture_output=True, text=True, timeout=30,
                              check=False).returncode == 0

    if works([sys.executable]):
        return [sys.executable]
    spare.chmod(0o755)
    package = find_spec("meshlab").submodule_search_locations[0]  # type: ignore[union-attr]
    shutil.copytree(package, spare / "meshlab")
    for path in (spare / "meshlab").rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    system = shutil.which("python3", path="/usr/bin:/bin")
    argv = ["env", f"PYTHONPATH={spare}", system or "python3"]
    if system is None or not works(argv):
        pytest.skip("uid 1000 can neither import meshlab from this checkout nor run the "
                    "system's python3 (/usr/bin) on a copy of it")
    return argv
