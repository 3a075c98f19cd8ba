"""A real TCP server that answers every connection with what it sees.

Run inside a namespace, as the application's UID (1000 in the pod), or as a stand-in for a
peer. It listens on one or more ports and, for each connection it accepts, reads the
one-line header (see :mod:`meshlab.live.wire`) and writes back one line of JSON::

    {"server": "app", "listener": 9080, "local": "10.244.0.5:9080",
     "peer": "127.0.0.6:41235", "original_dst": "10.244.0.5:9080", "id": "c3", "hops": 1}

``peer`` is the source address the application sees: 127.0.0.6 when the sidecar relayed
the connection (Istio binds its inbound upstream connections there), the real client
otherwise. Every accepted connection is also appended to the ``--log`` file as a JSON line.

The same program is the "catcher" of the per-connection checks: listening on the proxy's
ports without relaying, it shows which listening socket the kernel delivered a connection
to. With ``--transparent`` its sockets carry ``IP_TRANSPARENT`` so that a TPROXY rule may
hand them connections addressed elsewhere (this needs CAP_NET_ADMIN).

The process ends when its standard input closes (the lab that started it went away, however
it ended) or after ``--ttl`` seconds, whichever comes first: it can never outlive the lab.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import sys
import threading
import time
from collections.abc import Sequence

from meshlab.live import wire


def _exit_when_stdin_closes(ttl: float) -> None:
    """End the process when the parent's pipe closes, or when the time-to-live runs out."""

    def watch() -> None:
        try:
            sys.stdin.buffer.read()
        finally:
            os._exit(0)

    threading.Thread(target=watch, daemon=True).start()
    threading.Timer(ttl, lambda: os._exit(0)).start()


class Recorder:
    """Appends JSON lines to a log file, one per event, flushed at once (thread-safe)."""

    def __init__(self, path: str | None) -> None:
        self._lock = threading.Lock()
        self._file = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115

    def record(self, event: dict[str, object]) -> None:
        if self._file is None:
            return
        line = json.dumps({"t": round(time.time(), 6), **event}, separators=(",", ":"))
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()


def listen(host: str, port: int, *, transparent: bool = False) -> socket.socket:
    """A listening TCP socket on host:port (SO_REUSEADDR, optionally IP_TRANSPARENT)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if transparent:
        sock.setsockopt(socket.SOL_IP, wire.IP_TRANSPARENT, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


def answer(conn: socket.socket, name: str, listener: int, recorder: Recorder) -> None:
    """Read the header, say what this end of the connection sees, close."""
    with conn:
        conn.settimeout(2.0)
        local = conn.getsockname()
        peer = conn.getpeername()
        odst = wire.original_dst(conn)
        try:
            head = wire.parse_header(wire.read_line(conn))
        except OSError:
            head = {"id": "?", "hops": 0}
        seen = {
            "server": name,
            "listener": listener,
            "local": wire.endpoint(local),
            "peer": wire.endpoint(peer),
            "original_dst": wire.endpoint(odst) if odst else None,
            "id": head["id"],
            "hops": head["hops"],
        }
        recorder.record({"event": "accept", **seen})
        wire.send_json(conn, seen)


def parse_spec(spec: str, host: str) -> tuple[str, str, int]:
    """``"9080"``, ``"127.0.0.1:15053"``, ``"udp/53"`` -> (proto, host, port)."""
    proto, _, rest = spec.rpartition("/")
    where, _, port = rest.rpartition(":")
    return proto or "tcp", where or host, int(port)


def answer_datagram(sock: socket.socket, name: str, listener: int, recorder: Recorder) -> None:
    """UDP: read one datagram (a header line), send back what this socket sees."""
    data, peer = sock.recvfrom(65536)
    head = wire.parse_header(data.split(b"\n", 1)[0])
    seen = {"server": name, "listener": listener, "local": wire.endpoint(sock.getsockname()),
            "peer": wire.endpoint(peer), "original_dst": None, "id": head["id"],
            "hops": head["hops"], "proto": "udp"}
    recorder.record({"event": "datagram", **seen})
    sock.sendto(json.dumps(seen).encode() + b"\n", peer)


def serve(name: str, host: str, specs: Sequence[str], *, transparent: bool,
          recorder: Recorder) -> None:
    """Serve every port forever; each TCP connection is answered on its own thread."""
    selector = selectors.DefaultSelector()
    for spec in specs:
        proto, where, port = parse_spec(spec, host)
        if proto == "udp":
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((where, port))
        else:
            sock = listen(where, port, transparent=transparent)
        selector.register(sock, selectors.EVENT_READ, (proto, port))
    print("READY", flush=True)
    while True:
        for key, _ in selector.select():
            sock = key.fileobj  # type: ignore[assignment]
            proto, port = key.data
            if proto == "udp":
                answer_datagram(sock, name, port, recorder)
                continue
            try:
                conn, _peer = sock.accept()
            except OSError:
                continue
            threading.Thread(target=answer, args=(conn, name, port, recorder),
                             daemon=True).start()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="app")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--ports", required=True,
                        help="comma-separated [udp/][HOST:]PORT, e.g. 9080,127.0.0.1:15053,udp/53")
    parser.add_argument("--log")
    parser.add_argument("--transparent", action="store_true")
    parser.add_argument("--ttl", type=float, default=900.0)
    args = parser.parse_args(argv)
    _exit_when_stdin_closes(args.ttl)
    specs = [p for p in args.ports.split(",") if p]
    try:
        serve(args.name, args.host, specs, transparent=args.transparent,
              recorder=Recorder(args.log))
    except OSError as error:
        print(f"ERROR {args.name} cannot listen on {args.host}:{args.ports}: {error}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
