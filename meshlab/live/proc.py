"""Starting the lab's processes inside a namespace, as a given UID/GID, with bounded waits.

The command line is the whole lesson::

    ip netns exec meshlab-4242-a1b2-pod \\
        setpriv --reuid 1337 --regid 1337 --clear-groups \\
        python -m meshlab.live.proxy --pod-ip 10.244.0.5 ...

``ip netns exec`` enters the namespace and ``exec``\\ s the rest; ``setpriv`` changes the
real, effective and saved UID and GID (and drops supplementary groups) and ``exec``\\ s
Python. Both replace themselves, so the PID :class:`subprocess.Popen` knows *is* the
Python process: the lab can always stop exactly that process and no other.

Each program prints ``READY`` once it listens (or ``ERROR ...`` if it cannot);
:func:`start` waits for that line for a bounded time. Programs also exit when their
standard input closes, so they die with the lab even if the lab is killed with SIGKILL.

**Which Python, and which meshlab, a UID 1000 process can run.** The lab runs as root, but
the application and the proxy run as UID 1000 and 1337, and those UIDs must be able to
*reach* an interpreter and the ``meshlab`` source. That is not a given:

* a checkout or a virtualenv under ``/root`` (mode 700), or a CI clone in ``mktemp -d``
  (also mode 700), cannot be read by UID 1000;
* it can look as if it could: util-linux's ``setpriv`` (2.38) changes the UID with
  ``PR_SET_KEEPCAPS`` and raises its capabilities again to change the GID, so its own
  ``execve`` still holds CAP_DAC_OVERRIDE and walks through ``/root``. The kernel then drops
  the capabilities for the new, non-root program, and everything *after* exec runs as plain
  UID 1000: the dynamic loader cannot read the RUNPATH (``/root/.pyenv/.../lib``) and quietly
  takes the system's ``libpython3.11.so`` instead, and Python cannot find its standard
  library under ``/root`` and falls back to ``/usr/lib/python3.11``. A pyenv 3.11.7 venv
  "runs" as Debian's 3.11.2 - by luck of a matching minor version. Elsewhere it fails.

So the lab does not trust luck. :func:`start` runs every program from a *bundle*: a copy of
the ``meshlab`` package's ``.py`` files in the lab's own temporary directory (mode 755,
files 644; the child programs need nothing but the standard library and ``meshlab``), with
``PYTHONPATH`` pointing there. For each identity it first *probes* the interpreter
(:func:`probe`: ``setpriv ... python -c "import meshlab.live.proxy ..."``, bounded, cached
per process) and falls back from ``sys.executable`` to its real path, the base interpreter
and ``/usr/bin/python3`` (:func:`candidates`). If none works, :class:`LabError` says why and
what to do. The children therefore always run the very code the lab itself runs.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import meshlab
from meshlab.live.netns import LabError, Registry

READY_TIMEOUT = 15.0
PROBE_TIMEOUT = 10.0
"""How long one interpreter probe may take (a Python start and a few imports: ~50 ms)."""

CHILD_MODULES = ("meshlab.live.app", "meshlab.live.proxy", "meshlab.live.agent",
                 "meshlab.istio.envoy")
"""What the lab's programs import; a probe imports them all, so a broken import shows at once
(the proxy would otherwise fall back to its built-in decider)."""

BUNDLE = "py"
"""The bundle's directory name inside the lab's temporary directory."""

FALLBACK_PYTHONS = ("/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3")


class LineChannel:
    """Line-oriented talk with a child process over its stdin/stdout, every read bounded."""

    def __init__(self, proc: subprocess.Popen[bytes], name: str,
                 stderr_path: Path | None = None) -> None:
        self.proc = proc
        self.name = name
        self.stderr_path = stderr_path
        self.notes: list[str] = []
        self._buffer = b""

    def readline(self, timeout: float) -> str:
        """The next line from the child, or :class:`LabError` after ``timeout`` seconds."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(left, 0))
            if not ready:
                raise LabError(f"{self.name} said nothing for {timeout:g} s")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise LabError(f"{self.name} exited (status {self.proc.poll()}); "
                               f"{self.stderr_tail()}")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def request(self, value: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send one JSON line, read one JSON line back."""
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(value) + "\n").encode())
        self.proc.stdin.flush()
        answer: dict[str, Any] = json.loads(self.readline(timeout))
        return answer

    def stderr_tail(self) -> str:
        path = self.stderr_path
        if path and path.exists():
            text = path.read_text(errors="replace").strip()
            return f"its error output ends: {text[-600:]}" if text else "no error output"
        return "no error output"


def as_identity(uid: int | None, gid: int | None, caps: Sequence[str] = ()) -> list[str]:
    """The ``setpriv`` prefix that runs a command as ``uid``/``gid`` (empty: stay root)."""
    if uid is None:
        return []
    argv = ["setpriv", "--reuid", str(uid), "--regid", str(gid if gid is not None else uid),
            "--clear-groups"]
    if caps:
        wanted = ",".join(f"+{c}" for c in caps)
        argv += ["--inh-caps", wanted, "--ambient-caps", wanted]
    return argv


def command(ns: str, module: str, args: Sequence[str], *, uid: int | None = None,
            gid: int | None = None, caps: Sequence[str] = (),
            python: str | None = None) -> list[str]:
    """The argv that runs ``python -m module args`` inside ``ns`` as ``uid``/``gid``."""
    return ["ip", "netns", "exec", ns, *as_identity(uid, gid, caps),
            python or sys.executable, "-m", module, *args]


# -- an interpreter and a meshlab the child's UID can read ---------------------------------

@dataclass(frozen=True)
class Probe:
    """What one probe found: can ``python`` run the lab's programs as ``uid``/``gid``?"""

    python: str
    uid: int
    gid: int
    ok: bool
    detail: str   # "3.11.2 /usr/bin/python3" when ok; the error output otherwise


_probes: dict[tuple[str, int, int], Probe] = {}
_probe_lock = threading.Lock()


def make_bundle(workdir: Path) -> Path:
    """Copy the ``meshlab`` package's ``.py`` files to ``workdir/py``, readable by everyone.

    Returns the directory to put on ``PYTHONPATH``. Copying (about 60 small files, a few
    milliseconds) is what makes the lab independent of where the checkout lives: its files
    may sit in a directory UID 1000 cannot enter; the bundle sits in the lab's own 755
    temporary directory and is removed with it.
    """
    source = Path(meshlab.__file__).resolve().parent
    root = workdir / BUNDLE
    if (root / "meshlab" / "__init__.py").exists():
        return root
    shutil.copytree(source, root / "meshlab",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


def candidates() -> list[str]:
    """Interpreters to try, best first: the lab's own, its real file, its base, the system's."""
    found = [sys.executable, os.path.realpath(sys.executable),
             getattr(sys, "_base_executable", "") or "", *FALLBACK_PYTHONS]
    which = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
    if which:
        found.append(which)
    unique: list[str] = []
    for python in found:
        if python and python not in unique and os.path.isfile(python):
            unique.append(python)
    return unique


def child_env(bundle: Path) -> dict[str, str]:
    """The environment of a lab program: ours, with ``PYTHONPATH`` = the bundle only."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH")}
    env.update(PYTHONPATH=str(bundle), PYTHONDONTWRITEBYTECODE="1", PYTHONNOUSERSITE="1",
               PYTHONSAFEPATH="1")  # (3.11+: the working directory is not put on sys.path)
    return env


PROBE_CODE = (
    "import sys\n"
    "if sys.version_info < (3, 10): sys.exit('Python >= 3.10 is needed, this is ' + sys.version)\n"
    "import meshlab\n"
    "{imports}\n"
    "print(sys.version.split()[0], meshlab.__file__)\n"
)


def probe(python: str, uid: int, gid: int, bundle: Path, *,
          timeout: float = PROBE_TIMEOUT) -> Probe:
    """Run ``python`` as ``uid``/``gid`` and import the lab's programs from ``bundle``.

    Checks that the interpreter starts (the file and its shared libraries can be read), is
    Python >= 3.10, and imports ``meshlab`` *from the bundle* (not from somewhere else).
    Bounded by ``timeout``. A success is cached per (interpreter, uid, gid) for the life of
    the process, so a run that builds many labs probes each identity once.
    """
    key = (python, uid, gid)
    with _probe_lock:
        if key in _probes:
            return _probes[key]
    code = PROBE_CODE.format(imports="\n".join(f"import {m}" for m in CHILD_MODULES))
    try:
        done = subprocess.run([*as_identity(uid, gid), python, "-c", code],
                              capture_output=True, text=True, timeout=timeout,
                              env=child_env(bundle), cwd=str(bundle), check=False)
        out, err = done.stdout.strip(), done.stderr.strip()
        version, _, where = out.partition(" ")
        ok = done.returncode == 0 and where.startswith(str(bundle))
        detail = (f"{version} {python}" if ok else
                  (err.splitlines()[-1] if err else f"exit status {done.returncode}, "
                   f"meshlab imported from {where or '?'}"))
    except (OSError, subprocess.TimeoutExpired) as error:
        ok, detail = False, f"{type(error).__name__}: {error}"
    result = Probe(python, uid, gid, ok, detail)
    if ok:   # a failure may be passing (a timeout on a busy machine): ask again next time
        with _probe_lock:
            _probes[key] = result
    return result


def unreachable(path: Path, uid: int, gid: int) -> Path | None:
    """The first directory on the way to ``path`` that ``uid``/``gid`` may not enter."""
    for parent in [*reversed(path.parents), path]:
        try:
            st = parent.stat()
        except OSError:
            return parent
        bits = (stat.S_IXUSR if st.st_uid == uid else
                stat.S_IXGRP if st.st_gid == gid else stat.S_IXOTH)
        if stat.S_ISDIR(st.st_mode) and not st.st_mode & bits:
            return parent
    return None


def interpreter(uid: int | None, gid: int | None, bundle: Path) -> tuple[str, str | None]:
    """The interpreter to run a lab program as ``uid``/``gid``, and a note if it is not ours.

    Root can read anything, so it gets ``sys.executable``. Another UID gets the first of
    :func:`candidates` whose :func:`probe` succeeds; if none does, :class:`LabError`.
    """
    if not uid:   # root (or a root process with another GID: same rights to read)
        return sys.executable, None
    gid = uid if gid is None else gid
    tried = []
    for python in candidates():
        found = probe(python, uid, gid, bundle)
        if found.ok:
            note = None if python == sys.executable else (
                f"NOTE uid {uid} cannot run {sys.executable} ({tried[0].detail if tried else '?'}"
                f"); its programs use Python {found.detail}")
            return python, note
        tried.append(found)
    blocked = unreachable(bundle, uid, gid)
    hint = (f"uid {uid} cannot enter {blocked} (mode {blocked.stat().st_mode & 0o777:o}): "
            "set TMPDIR to a directory everyone may enter, such as /tmp"
            if blocked else "install Python >= 3.10 for everyone, e.g. `apt-get install "
            "python3` (the lab's programs need only the standard library)")
    lines = "; ".join(f"{p.python}: {p.detail}" for p in tried)
    raise LabError(f"no Python interpreter can run the lab's programs as uid {uid} gid {gid} "
                   f"(tried {lines}); {hint}")


def start(registry: Registry, ns: str, module: str, args: Sequence[str], *, name: str,
          uid: int | None = None, gid: int | None = None, caps: Sequence[str] = (),
          workdir: Path, ready_timeout: float = READY_TIMEOUT) -> LineChannel:
    """Start a lab program and wait (bounded) until it prints ``READY``.

    The program runs from the lab's bundle (:func:`make_bundle`) with an interpreter its
    UID can run (:func:`interpreter`). Lines before READY (``NOTE ...``) are kept in
    ``channel.notes``, with a note when the interpreter is not ``sys.executable``. The process
    is added to ``registry`` before the wait, so it is stopped even if it never becomes ready.
    """
    stderr_path = workdir / f"{name}.stderr"
    bundle = make_bundle(workdir)
    python, note = interpreter(uid, gid, bundle)
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen(command(ns, module, args, uid=uid, gid=gid, caps=caps,
                                        python=python),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                                env=child_env(bundle), cwd=str(workdir))
    registry.processes.append(proc)
    channel = LineChannel(proc, name, stderr_path)
    if note:
        channel.notes.append(note)
    while True:
        line = channel.readline(ready_timeout)
        if line == "READY":
            return channel
        if line.startswith("ERROR"):
            raise LabError(f"{name} could not start: {line[6:]}")
        channel.notes.append(line)
