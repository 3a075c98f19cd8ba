"""The lab's programs run as UID 1000/1337 whatever the checkout's permissions are."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import meshlab
from meshlab.live import LabError, proc, unavailable_reason

pytestmark = [pytest.mark.live,
              pytest.mark.skipif(unavailable_reason() is not None,
                                 reason=f"live lab unavailable: {unavailable_reason()}")]


@pytest.fixture
def private() -> Iterator[Path]:
    """A directory only root may enter (what `mktemp -d` makes, and /root is)."""
    path = Path(tempfile.mkdtemp(prefix="meshlab-test-private-"))
    assert path.stat().st_mode & 0o777 == 0o700
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def bundle() -> Iterator[Path]:
    workdir = Path(tempfile.mkdtemp(prefix="meshlab-test-bundle-"))
    workdir.chmod(0o755)
    try:
        yield proc.make_bundle(workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _unreachable_python(directory: Path) -> str:
    """A working interpreter, but behind a directory UID 1000 cannot enter."""
    wrapper = directory / "python"
    wrapper.write_text('#!/bin/sh\nexec /usr/bin/python3 "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def test_the_bundle_is_readable_by_everyone(bundle: Path) -> None:
    assert (bundle / "meshlab" / "live" / "proxy.py").stat().st_mode & 0o777 == 0o644
    assert all(p.stat().st_mode & 0o005 == 0o005 for p in bundle.rglob("*") if p.is_dir())
    found = proc.probe(sys.executable, 0, 0, bundle)
    assert found.ok, found.detail


def test_an_interpreter_uid_1000_cannot_run_is_replaced(private: Path, bundle: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    bad = _unreachable_python(private)
    assert not proc.probe(bad, 1000, 1000, bundle).ok
    good = [p for p in proc.candidates() if proc.probe(p, 1000, 1000, bundle).ok]
    assert good, "no interpreter on this machine runs as uid 1000"
    monkeypatch.setattr(proc, "candidates", lambda: [bad, good[0]])
    python, note = proc.interpreter(1000, 1000, bundle)
    assert python == good[0]
    assert note is None or "cannot run" in note


def test_no_usable_interpreter_is_a_clear_lab_error(private: Path, bundle: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    bad = _unreachable_python(private)
    monkeypatch.setattr(proc, "candidates", lambda: [bad])
    with pytest.raises(LabError, match="no Python interpreter can run the lab's programs"):
        proc.interpreter(1000, 1000, bundle)


def test_a_bundle_in_a_private_directory_says_so(private: Path) -> None:
    inner = private / "lab"
    inner.mkdir(mode=0o755)
    hidden = proc.make_bundle(inner)
    with pytest.raises(LabError, match=r"cannot enter .*TMPDIR"):
        proc.interpreter(1001, 1001, hidden)


def test_a_lab_runs_from_a_checkout_uid_1000_cannot_read(private: Path) -> None:
    """A CI clone in `mktemp -d` (mode 700): the parent reads it as root, the children
    run from the bundle."""
    package = Path(meshlab.__file__).resolve().parent
    shutil.copytree(package, private / "meshlab",
                    ignore=shutil.ignore_patterns("__pycache__"))
    code = textwrap.dedent("""
        import meshlab, sys
        assert meshlab.__file__.startswith(sys.argv[1]), meshlab.__file__
        from meshlab.live.lab import Lab
        from meshlab.istio.capture import default_rules
        with Lab(rules=default_rules()) as lab:
            seen = lab.connect("10.244.0.5", 9080, side="peer")
            print(seen.outcome, seen.delivered_to, seen.source_seen)
    """)
    env = {**os.environ, "PYTHONPATH": str(private)}
    done = subprocess.run([sys.executable, "-c", code, str(private)], cwd=private, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "answered" in done.stdout and "127.0.0.6" in done.stdout, done.stdout
