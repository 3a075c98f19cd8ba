"""The lab is safe: host rules untouched, everything removed however a run ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from meshlab.live import unavailable_reason

pytestmark = [pytest.mark.live,
              pytest.mark.skipif(unavailable_reason() is not None,
                                 reason=f"live lab unavailable: {unavailable_reason()}")]

REPO = Path(__file__).resolve().parents[2]


def _host_rules() -> tuple[str, str]:
    def save(tool: str) -> str:
        done = subprocess.run([tool], capture_output=True, text=True, timeout=10, check=False)
        # drop the "# Generated/Completed ... on <date>" comments, which carry the time
        return "\n".join(line for line in done.stdout.splitlines() if not line.startswith("#"))
    return save("iptables-save"), save("ip6tables-save")


def _ours() -> list[str]:
    from meshlab.live.netns import list_namespaces
    token = f"meshlab-{os.getpid()}-"
    return [n for n in list_namespaces() if n.startswith(token)]


def test_full_lab_run_leaves_host_rules_and_namespaces_as_they_were() -> None:
    from meshlab.live.verify import verify_catalog

    before = _host_rules()
    report = verify_catalog(["inbound", "outbound", "tproxy-inbound"])
    assert report.comparisons
    assert _host_rules() == before
    assert _ours() == []


def _host_routing() -> tuple[str, str]:
    """The host's policy routing rules and its table 100 (the ambient lab adds both, in its
    pods' namespaces only)."""
    def show(*argv: str) -> str:
        return subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=10,
                              check=False).stdout
    return show("rule", "show"), show("route", "show", "table", "100")


def test_ambient_lab_run_leaves_host_rules_routing_and_namespaces_as_they_were() -> None:
    from meshlab.live.ambient_lab import PEER_IP, POD_IP, AmbientLab
    from meshlab.live.lab import FLUSH_DOCUMENT

    before, routing = _host_rules(), _host_routing()
    rules = FLUSH_DOCUMENT.replace("*mangle\n", "*mangle\n-A PREROUTING -m mark --mark "
                                   "0x539/0xfff -j CONNMARK --set-xmark 0x111/0xfff\n")
    with AmbientLab(rules=rules, deadline=60.0) as lab:
        names = [lab.pod, lab.peer, lab.node, lab.vm, *lab.plain.values()]
        assert all(_exists(n) for n in names)
        assert lab.connect(PEER_IP, 9080, side="pod").outcome == "answered"
        assert lab.connect(POD_IP, 9080, side="reviews").outcome == "answered"
        assert "lookup 100" in subprocess.run(
            ["ip", "-n", lab.pod, "rule", "show"], capture_output=True, text=True,
            timeout=10, check=False).stdout
    assert _host_rules() == before
    assert _host_routing() == routing
    assert not any(n in _ours() for n in names)


def test_error_inside_the_ambient_lab_removes_everything() -> None:
    from meshlab.live.ambient_lab import AmbientLab

    with pytest.raises(RuntimeError), AmbientLab() as lab:
        names = [lab.pod, lab.peer, lab.node, lab.vm, *lab.plain.values()]
        workdir = lab.workdir
        raise RuntimeError("boom")
    assert not any(n in _ours() for n in names)
    assert not workdir.exists()


def test_error_inside_the_lab_removes_everything() -> None:
    from meshlab.live.lab import Lab

    with pytest.raises(RuntimeError), Lab(proxy=None) as lab:
        names = [lab.pod, lab.peer]
        workdir = lab.workdir
        raise RuntimeError("boom")
    assert not any(n in _ours() for n in names)
    assert not workdir.exists()


def test_deadline_removes_everything_and_says_so() -> None:
    from meshlab.live.lab import Lab
    from meshlab.live.netns import LabTimeout

    previous = signal.getsignal(signal.SIGALRM)
    with pytest.raises(LabTimeout), Lab(proxy=None, deadline=1.5):
        time.sleep(5)
    assert _ours() == []
    assert signal.getsignal(signal.SIGALRM) is previous


def _child(body: str) -> subprocess.Popen[str]:
    code = textwrap.dedent(f"""
        import sys, time
        from meshlab.live.lab import Lab
        {body}
    """)
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _pod_of(proc: subprocess.Popen[str]) -> str:
    line = proc.stdout.readline().strip() if proc.stdout else ""
    assert line.startswith("meshlab-"), proc.stderr.read() if proc.stderr else line
    return line


def _exists(ns: str) -> bool:
    done = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=5,
                          check=False)
    return any(line.split()[0] == ns for line in done.stdout.splitlines() if line.strip())


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_and_sigterm_remove_everything(signum: int) -> None:
    proc = _child("""
        with Lab() as lab:
            print(lab.pod, flush=True)
            time.sleep(30)
    """)
    try:
        pod = _pod_of(proc)
        assert _exists(pod)
        proc.send_signal(signum)
        proc.wait(timeout=15)
        assert not _exists(pod)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)


def test_clean_removes_what_a_killed_run_left() -> None:
    from meshlab.live.netns import clean, pids_in

    proc = _child("""
        with Lab() as lab:
            print(lab.pod, flush=True)
            time.sleep(30)
    """)
    pod = _pod_of(proc)
    proc.kill()  # SIGKILL: no finally, no atexit
    proc.wait(timeout=5)
    assert _exists(pod)
    deadline = time.monotonic() + 5  # our processes exit when the dead lab's pipes close
    while pids_in(pod) and time.monotonic() < deadline:
        time.sleep(0.1)
    removed = clean()
    assert f"namespace {pod}" in removed
    assert not _exists(pod)
