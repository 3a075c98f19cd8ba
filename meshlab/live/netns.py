"""Network namespaces for the lab: made, remembered, and always removed.

A *network namespace* is a private copy of the kernel's network stack: its own interfaces,
addresses, routes, conntrack table and netfilter rules. ``ip netns add NAME`` creates one
(and pins it at ``/run/netns/NAME``); ``ip netns exec NAME CMD`` runs a command inside it;
``ip netns del NAME`` removes it, and with it every interface, rule and route inside. The lab
builds a pod and its peers this way, so nothing it does can reach the host's own rules.

Safety rules kept here:

- every name starts with :data:`PREFIX` and carries the creating process's PID
  (``meshlab-4242-a1b2-pod``), so ``meshlab live clean`` can tell a leftover of a killed run
  (its PID is gone) from the namespaces of a run still going;
- veth pairs are created *directly inside* the namespaces
  (``ip -n A link add eth0 type veth peer name eth0 netns B``), so no interface ever
  appears in the host namespace, not even for a moment;
- every command runs with a timeout (:func:`run`);
- a :class:`Registry` remembers each namespace, process and temporary directory it made and
  removes them in :meth:`Registry.cleanup` - called on success, on error, on Ctrl-C and
  SIGTERM (:func:`guarded` installs handlers and restores the previous ones afterwards), on
  an overall deadline (SIGALRM), and from ``atexit`` as a last resort.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from meshlab.errors import MeshlabError

PREFIX = "meshlab-"
"""Every namespace and temporary directory the lab makes starts with this."""

TMP_PREFIX = "meshlab-live-"
COMMAND_TIMEOUT = 10.0
_NAME = re.compile(r"^meshlab-(\d+)-[0-9a-f]+-[a-z0-9]+$")


class LabError(MeshlabError):
    """A command the lab needed failed; the message names it and shows its error output."""


class LabUnavailable(MeshlabError):
    """The lab cannot run here (not root, no iptables, no ip netns); says why."""


class LabTimeout(LabError):
    """The lab ran past its overall deadline; everything it made has been removed."""


def run(argv: Sequence[str], *, input: str | None = None, timeout: float = COMMAND_TIMEOUT,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command with a bounded wait; raise :class:`LabError` if it fails or hangs."""
    try:
        done = subprocess.run(list(argv), input=input, capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired as error:
        raise LabError(f"`{' '.join(argv)}` did not finish within {timeout:g} s") from error
    except FileNotFoundError as error:
        raise LabUnavailable(f"`{argv[0]}` is not installed (needed for `{' '.join(argv)}`); "
                             "install iproute2 / iptables / util-linux") from error
    if check and done.returncode != 0:
        raise LabError(f"`{' '.join(argv)}` failed (exit {done.returncode}): "
                       f"{(done.stderr or done.stdout).strip()}")
    return done


def in_ns(ns: str, argv: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` inside namespace ``ns`` (``ip netns exec``); same contract as :func:`run`."""
    return run(["ip", "netns", "exec", ns, *argv], **kwargs)  # type: ignore[arg-type]


@dataclass
class Registry:
    """Everything one lab created, so that all of it can be removed, in the right order."""

    namespaces: list[str] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    tempdirs: list[Path] = field(default_factory=list)
    token: str = field(default_factory=lambda: f"{os.getpid()}-{secrets.token_hex(2)}")
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def name(self, role: str) -> str:
        """A namespace name for ``role`` ("pod", "peer"), unique to this lab."""
        return f"{PREFIX}{self.token}-{role}"

    def add_namespace(self, role: str) -> str:
        name = self.name(role)
        self.namespaces.append(name)  # remembered first: a half-made one is removed too
        run(["ip", "netns", "add", name])
        in_ns(name, ["ip", "link", "set", "lo", "up"])
        return name

    def tempdir(self) -> Path:
        path = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{self.token}-"))
        path.chmod(0o755)
        self.tempdirs.append(path)
        return path

    def cleanup(self) -> None:
        """Stop processes, delete namespaces, remove temp dirs. Safe to call twice."""
        with self._lock:
            for proc in self.processes:
                stop_process(proc)
            self.processes.clear()
            for ns in reversed(self.namespaces):
                delete_namespace(ns)
            self.namespaces.clear()
            for path in self.tempdirs:
                shutil.rmtree(path, ignore_errors=True)
            self.tempdirs.clear()


def veth(registry: Registry, a: str, b: str, a_name: str = "eth0", b_name: str = "eth0") -> None:
    """Join namespaces ``a`` and ``b`` with a veth pair, created inside them (never on the host)."""
    run(["ip", "-n", a, "link", "add", a_name, "type", "veth", "peer", "name", b_name,
         "netns", b])
    in_ns(a, ["ip", "link", "set", a_name, "up"])
    in_ns(b, ["ip", "link", "set", b_name, "up"])


def stop_process(proc: subprocess.Popen[bytes], grace: float = 1.0) -> None:
    """Close its stdin (our processes exit then), wait briefly, then SIGKILL by PID."""
    with contextlib.suppress(OSError, ValueError):
        if proc.stdin:
            proc.stdin.close()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    for stream in (proc.stdout, proc.stderr):
        with contextlib.suppress(OSError, ValueError):
            if stream:
                stream.close()


def pids_in(ns: str) -> list[int]:
    """PIDs of the processes living in namespace ``ns`` (``ip netns pids``)."""
    done = run(["ip", "netns", "pids", ns], check=False)
    return [int(p) for p in done.stdout.split() if p.isdigit()]


def delete_namespace(ns: str) -> None:
    """Kill what still runs inside ``ns`` (only there), then delete it. Never raises."""
    if not ns.startswith(PREFIX):  # the one guard that keeps us off others' namespaces
        return
    with contextlib.suppress(MeshlabError):
        for pid in pids_in(ns):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        run(["ip", "netns", "del", ns], check=False)


def list_namespaces() -> list[str]:
    """Names of existing namespaces that start with :data:`PREFIX`."""
    done = run(["ip", "netns", "list"], check=False)
    names = [line.split()[0] for line in done.stdout.splitlines() if line.strip()]
    return [n for n in names if n.startswith(PREFIX)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean(*, everything: bool = False) -> list[str]:
    """Remove leftovers of killed runs; return what was removed.

    A namespace or temp dir is a leftover when the PID in its name no longer runs (or with
    ``everything=True``, any with the prefix - only do that when no other lab is running).
    Processes inside are killed first (``ip netns pids``), then the namespace is deleted.
    """
    removed: list[str] = []
    for ns in list_namespaces():
        match = _NAME.match(ns)
        if everything or match is None or not _alive(int(match.group(1))):
            delete_namespace(ns)
            removed.append(f"namespace {ns}")
    for path in Path(tempfile.gettempdir()).glob(f"{TMP_PREFIX}*"):
        pid = path.name[len(TMP_PREFIX):].split("-")[0]
        if everything or not pid.isdigit() or not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(f"directory {path}")
    return removed


@contextlib.contextmanager
def guarded(registry: Registry, deadline: float | None = None) -> Iterator[Registry]:
    """Make sure ``registry`` is cleaned up however the block ends.

    In the main thread, SIGINT raises KeyboardInterrupt (as usual) and SIGTERM is turned into
    SystemExit, so ``finally`` runs; with ``deadline`` seconds, SIGALRM raises
    :class:`LabTimeout`. The previous handlers (and any previous alarm) are restored on the
    way out. ``atexit`` covers an interpreter exit that skips ``finally``.
    """
    main = threading.current_thread() is threading.main_thread()
    saved: dict[int, object] = {}
    old_timer = (0.0, 0.0)

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise LabTimeout(f"the lab did not finish within {deadline:g} s; everything it "
                         "made has been removed")

    atexit.register(registry.cleanup)
    if main:
        saved[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
        saved[signal.SIGTERM] = signal.signal(signal.SIGTERM, on_term)
        if deadline:
            saved[signal.SIGALRM] = signal.signal(signal.SIGALRM, on_alarm)
            old_timer = signal.setitimer(signal.ITIMER_REAL, deadline)
    try:
        yield registry
    finally:
        try:
            if main:  # a second Ctrl-C must not interrupt the cleanup itself
                if deadline:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
            registry.cleanup()
        finally:
            if main:
                for signum, handler in saved.items():
                    signal.signal(signum, handler)  # type: ignore[arg-type]
                if deadline and old_timer[0] > 0:
                    signal.setitimer(signal.ITIMER_REAL, *old_timer)
            atexit.unregister(registry.cleanup)
