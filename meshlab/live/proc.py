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
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from meshlab.live.netns import LabError, Registry

READY_TIMEOUT = 15.0


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


def command(ns: str, module: str, args: Sequence[str], *, uid: int | None = None,
            gid: int | None = None, caps: Sequence[str] = ()) -> list[str]:
    """The argv that runs ``python -m module args`` inside ``ns`` as ``uid``/``gid``."""
    argv = ["ip", "netns", "exec", ns]
    if uid is not None:
        argv += ["setpriv", "--reuid", str(uid), "--regid", str(gid if gid is not None else uid),
                 "--clear-groups"]
        if caps:
            wanted = ",".join(f"+{c}" for c in caps)
            argv += ["--inh-caps", wanted, "--ambient-caps", wanted]
    return [*argv, sys.executable, "-m", module, *args]


def start(registry: Registry, ns: str, module: str, args: Sequence[str], *, name: str,
          uid: int | None = None, gid: int | None = None, caps: Sequence[str] = (),
          workdir: Path, ready_timeout: float = READY_TIMEOUT) -> LineChannel:
    """Start a lab program and wait (bounded) until it prints ``READY``.

    Lines before READY that start with ``NOTE`` are kept in ``channel.notes``. The process is
    added to ``registry`` before the wait, so it is stopped even if it never becomes ready.
    """
    stderr_path = workdir / f"{name}.stderr"
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen(command(ns, module, args, uid=uid, gid=gid, caps=caps),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                                env=env, cwd=str(workdir))
    registry.processes.append(proc)
    channel = LineChannel(proc, name, stderr_path)
    while True:
        line = channel.readline(ready_timeout)
        if line == "READY":
            return channel
        if line.startswith("ERROR"):
            raise LabError(f"{name} could not start: {line[6:]}")
        channel.notes.append(line)
