"""The kernel's own rule trace, from ``xtables-monitor --trace`` (nft backend only).

With the nf_tables backend, iptables rules live in nftables tables, and nftables can mark
packets for tracing (``meta nftrace set 1``); the kernel then reports, for each marked
packet, every rule that *matched* with its verdict (CONTINUE, JUMP, RETURN, ACCEPT ...) and
every chain policy applied. ``xtables-monitor --trace`` prints those events in iptables
words::

    PACKET: 2 f9406a13 OUT=eth0 SRC=10.244.0.5 DST=10.244.0.9 ... SPORT=56708 DPORT=80 SYN
     TRACE: 2 f9406a13 nat:OUTPUT:rule:0xa:JUMP:ISTIO_OUTPUT  -4 -t nat -A OUTPUT -j ISTIO_OUTPUT

Rather than adding ``-j TRACE`` rules to the raw table (which would shift the numbering of
the rules under test and show up in ``iptables-save``), the lab adds a separate nftables
table, ``meshlab_trace``, whose two chains run before raw (priority -350) and set
``nftrace`` on TCP packets. ``iptables-save`` does not list it.

Rules are reported by handle; :meth:`Tracer.first_packet` maps each one to its 1-based
position in its chain by its text, using ``iptables-save``, so the kernel's trace reads in
the same terms as the model's ``Trace.hits``. Needs ``nft`` and ``xtables-monitor``; with
iptables-legacy there is no such trace and the lab compares counters only.

**Not for counting.** ``xtables-monitor`` looks every traced rule up again over netlink
(a fresh dump per event), so it falls behind a busy trace; its netlink socket overflows and
it exits with "cannot receive from nfnetlink socket: No buffer space available" - after
which every trace is silently empty - and, before that, a packet's later hooks arrive after
any fixed wait. That is why first-packet *counters* come from probes
(:data:`meshlab.live.lab.GATE_TABLE`), not from here; this trace is for showing a path.
Once the monitor has died, :attr:`Tracer.failure` says so (the lab copies it into its
notes) instead of traces silently going empty.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshlab.live import netns
from meshlab.live.netns import Registry

NFT_TABLE = """\
table ip meshlab_trace {
    chain pre { type filter hook prerouting priority -350; meta l4proto tcp meta nftrace set 1; }
    chain out { type filter hook output priority -350; meta l4proto tcp meta nftrace set 1; }
}
"""
_TRACE = re.compile(
    r"^ TRACE: \d+ ([0-9a-f]+) (\w+):([^:]+):(rule|policy|return):(.*?)(?:  (.*))?$")
_PACKET = re.compile(r"^PACKET: \d+ ([0-9a-f]+) (.*)$")
TABLES = {"raw", "mangle", "nat", "filter"}
VERDICTS = {"0xfffffffb": "RETURN", "0xfffffffd": "JUMP", "0xffffffff": "CONTINUE"}
"""nftables verdict codes xtables-monitor prints as numbers (NFT_RETURN = -5 ...)."""


@dataclass
class Tracer:
    """A running ``xtables-monitor --trace`` writing to a file; read by offsets."""

    path: Path
    process: subprocess.Popen[bytes]
    failure: str | None = None

    @classmethod
    def start(cls, registry: Registry, ns: str, workdir: Path) -> Tracer | None:
        if not (shutil.which("nft") and shutil.which("xtables-monitor")):
            return None
        if netns.in_ns(ns, ["nft", "-f", "-"], input=NFT_TABLE, check=False).returncode:
            return None
        path = workdir / "xtrace.log"
        argv = ["ip", "netns", "exec", ns, "xtables-monitor", "--trace"]
        if shutil.which("stdbuf"):
            argv[4:4] = ["stdbuf", "-oL"]
        with open(path, "wb") as out:
            process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=out,
                                       stderr=subprocess.DEVNULL)
        registry.processes.append(process)
        time.sleep(0.3)  # let it subscribe before the first traced packet
        if process.poll() is not None:
            return None
        return cls(path, process)

    def mark(self) -> int:
        return self.path.stat().st_size

    def lines_since(self, mark: int) -> list[str]:
        with open(self.path, "rb") as f:
            f.seek(mark)
            return f.read().decode(errors="replace").splitlines()

    def first_packet(self, mark: int, sport: int, save_text: str,
                     wait: float = 0.5) -> Iterator[dict[str, Any]]:
        """The matched rules, in order, for the SYN packets with source port ``sport``."""
        if self.process.poll() is not None:
            self.failure = (f"xtables-monitor --trace exited (status "
                            f"{self.process.returncode}; usually ENOBUFS: it fell behind the "
                            "trace): kernel traces after that are missing")
            return
        deadline = time.monotonic() + wait
        needle = f"SPORT={sport} "
        lines = self.lines_since(mark)
        while not any(needle in line for line in lines) and time.monotonic() < deadline:
            time.sleep(0.02)
            lines = self.lines_since(mark)
        time.sleep(0.03)  # the monitor writes a packet's later hooks a moment after
        lines = self.lines_since(mark)
        positions = rule_positions(save_text)
        # A trace id names an skb, and the kernel reuses skbs: the same id comes back for
        # later packets. So each TRACE line belongs to the latest PACKET line with its id.
        current: dict[str, bool] = {}
        for line in lines:
            packet = _PACKET.match(line)
            if packet:
                words = packet.group(2).split()
                current[packet.group(1)] = (needle.strip() in words and "SYN" in words
                                            and "ACK" not in words)
                continue
            event = _TRACE.match(line)
            if not event or not current.get(event.group(1)) or event.group(2) not in TABLES:
                continue
            _, table, chain, kind, verdict, text = event.groups()
            verdict = verdict.strip()
            if kind == "rule":
                verdict = verdict.split(":", 1)[1] if ":" in verdict else verdict
                body = re.sub(r"^-4 -t \S+ -A \S+ ?", "", (text or "").strip())
                index = positions.get((table, chain, body), -1)
            else:
                index, body = 0, kind
            yield {"table": table, "chain": chain, "rule": index,
                   "verdict": VERDICTS.get(verdict, verdict), "text": body}


def rule_positions(save_text: str) -> dict[tuple[str, str, str], int]:
    """(table, chain, rule text) -> 1-based index, from ``iptables-save`` (no counters)."""
    positions: dict[tuple[str, str, str], int] = {}
    seen: dict[tuple[str, str], int] = {}
    table = ""
    for line in save_text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif line.startswith("-A "):
            chain, _, body = line[3:].partition(" ")
            seen[(table, chain)] = seen.get((table, chain), 0) + 1
            positions.setdefault((table, chain, body), seen[(table, chain)])
    return positions
