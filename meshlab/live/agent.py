"""The client agent: makes one real connection per request, as any UID/GID, quickly.

The owner match (``-m owner --uid-owner 1337``) reads the UID and GID of the socket that
sends a packet, so the lab must open connections *as* a given identity. Starting a fresh
``setpriv --reuid U --regid G`` process per connection works but costs tens of
milliseconds; the randomized check makes hundreds of connections. So one agent runs as
root inside each namespace and, for every request, forks a child that drops to the
requested identity (``setgroups([])``, ``setresgid``, ``setresuid``: the same three steps
``setpriv --clear-groups`` takes), opens the connection and reports back. Forking keeps the
identity change confined to the child; the agent itself stays root.

Protocol: one JSON request per line on stdin, one JSON result per line on stdout::

    -> {"id": "c1", "uid": 1000, "gid": 1000, "src": null, "dst": "10.244.0.9",
        "dport": 80, "timeout": 2.0}
    <- {"id": "c1", "outcome": "answered", "local": "10.244.0.5:40312", "sport": 40312,
        "reply": {...what the server saw...}}

``outcome`` is ``answered`` (a server replied), ``closed`` (accepted, then closed without a
word: a BlackHole), ``refused`` (RST: nobody listens there), ``timeout`` (no answer in time:
dropped), ``reset`` or ``error`` (with ``error`` saying why, e.g. cannot bind the source).
The socket is bound before ``connect`` so the source port is known even when the
connection fails; the kernel's counters can then be matched to this exact connection.

A request may carry ``"tos"``: the socket's IPv4 TOS byte (IPv6 traffic class), which every
packet the socket sends carries. The lab uses it to mark a *first-packet probe* (see
:meth:`meshlab.live.lab.Lab.connect` with ``first_only``). It may also carry ``"mark"``:
the socket's ``SO_MARK`` (the firewall mark every packet it sends starts with; setting it
needs CAP_NET_ADMIN, so root), e.g. 0x539 for a socket like ambient ztunnel's. Such a socket
is also made ``IP_FREEBIND`` and ``IP_TRANSPARENT``, as ztunnel's are, so that it may bind a
source address that is not the namespace's own (the client's, when ztunnel connects to the
app on the client's behalf).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import sys
from typing import Any

from meshlab.live import wire


def _family(request: dict[str, Any]) -> socket.AddressFamily:
    """IPv6 when the destination is an IPv6 address (it has a colon), else IPv4."""
    return socket.AF_INET6 if ":" in str(request["dst"]) else socket.AF_INET


def _any(request: dict[str, Any]) -> str:
    return "::" if _family(request) == socket.AF_INET6 else "0.0.0.0"


def _mark_tos(sock: socket.socket, request: dict[str, Any]) -> None:
    """Put the request's TOS byte (traffic class for IPv6) on every packet of the socket."""
    tos = int(request.get("tos") or 0)
    if not tos:
        return
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, tos)
    else:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)


IP_FREEBIND = 15
IPV6_FREEBIND = 78


def _set_mark(sock: socket.socket, request: dict[str, Any]) -> None:
    """``SO_MARK`` (the firewall mark of every packet the socket sends), and the freedom to
    bind any source address (``IP_FREEBIND`` + ``IP_TRANSPARENT``), as ztunnel's sockets."""
    mark = int(request.get("mark") or 0)
    if not mark:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, wire.IPV6_TRANSPARENT, 1)
    else:
        sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        sock.setsockopt(socket.SOL_IP, wire.IP_TRANSPARENT, 1)


def attempt(request: dict[str, Any]) -> dict[str, Any]:
    """Open one connection as the current process identity and describe what happened."""
    timeout = float(request.get("timeout", 2.0))
    result: dict[str, Any] = {"id": request["id"], "outcome": "error"}
    sock = socket.socket(_family(request), socket.SOCK_STREAM)
    with sock:
        sock.settimeout(timeout)
        _mark_tos(sock, request)
        try:
            _set_mark(sock, request)
            sock.bind((request.get("src") or _any(request), int(request.get("sport") or 0)))
        except OSError as error:
            result["error"] = f"cannot bind source {request.get('src')}: {error.strerror}"
            return result
        result["sport"] = sock.getsockname()[1]
        try:
            sock.connect((request["dst"], int(request["dport"])))
        except ConnectionRefusedError:
            return {**result, "outcome": "refused"}
        except TimeoutError:
            return {**result, "outcome": "timeout"}
        except OSError as error:
            return {**result, "error": error.strerror or str(error)}
        result["local"] = wire.socket_endpoint(sock.getsockname())
        try:
            sock.sendall(wire.header(str(request["id"]), 0))
            line = wire.read_line(sock, limit=65536)
        except TimeoutError:
            return {**result, "outcome": "timeout"}
        except ConnectionResetError:
            return {**result, "outcome": "reset"}
        except OSError as error:
            return {**result, "error": error.strerror or str(error)}
        if not line:
            return {**result, "outcome": "closed"}
        try:
            result["reply"] = json.loads(line)
        except json.JSONDecodeError:
            result["reply"] = {"raw": line.decode(errors="replace")}
        return {**result, "outcome": "answered"}


def attempt_udp(request: dict[str, Any]) -> dict[str, Any]:
    """Send one datagram (the header) and wait for one back: UDP's idea of a request.

    The socket is *not* connected: it takes an answer from any address and reports who
    sent it (``from``). (A connected socket would refuse an answer from an address it did
    not ask - an answer that was not un-NATed - and the kernel would answer that with an
    ICMP port unreachable: a third packet, the client's reaction rather than the answer's
    path.) The source address is chosen as ``connect`` would (a throwaway connected socket
    asks the routing table) and bound, so ``local`` is known before anything is sent."""
    timeout = float(request.get("timeout", 2.0))
    result: dict[str, Any] = {"id": request["id"], "outcome": "error"}
    dst = (request["dst"], int(request["dport"]))
    with socket.socket(_family(request), socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        # a DNS server may listen on 0.0.0.0:53 here; binding port 53 beside it needs this
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        _mark_tos(sock, request)
        try:
            _set_mark(sock, request)
            src = request.get("src")
            if not src:
                with socket.socket(_family(request), socket.SOCK_DGRAM) as route:
                    route.connect(dst)  # sends nothing: a routing lookup
                    src = route.getsockname()[0]
            sock.bind((src, int(request.get("sport") or 0)))
            result["sport"] = sock.getsockname()[1]
            result["local"] = wire.socket_endpoint(sock.getsockname())
            sock.sendto(wire.header(str(request["id"]), 0), dst)
            data, sender = sock.recvfrom(65536)
            result["from"] = wire.socket_endpoint(sender)
        except TimeoutError:
            return {**result, "outcome": "timeout"}
        except OSError as error:
            return {**result, "error": error.strerror or str(error)}
    try:
        result["reply"] = json.loads(data.split(b"\n", 1)[0])
    except json.JSONDecodeError:
        result["reply"] = {"raw": data.decode(errors="replace")}
    return {**result, "outcome": "answered"}


def run_as(request: dict[str, Any]) -> dict[str, Any]:
    """Fork; the child becomes uid/gid and runs :func:`attempt`; bounded wait for its answer."""
    uid, gid = int(request.get("uid", 0)), int(request.get("gid", request.get("uid", 0)))
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(reader)
        try:
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            out = attempt_udp(request) if request.get("proto") == "udp" else attempt(request)
        except BaseException as error:  # report anything, never return into the agent loop
            out = {"id": request.get("id"), "outcome": "error", "error": repr(error)}
        os.write(writer, (json.dumps(out) + "\n").encode())
        os._exit(0)
    os.close(writer)
    deadline = float(request.get("timeout", 2.0)) * 2 + 1.0
    data = b""
    try:
        while True:
            ready, _, _ = select.select([reader], [], [], deadline)
            if not ready:
                break
            chunk = os.read(reader, 65536)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(reader)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
        os.waitpid(pid, 0)
    if not data:
        return {"id": request.get("id"), "outcome": "error", "error": "agent child gave no answer"}
    result: dict[str, Any] = json.loads(data)
    return result


def main() -> int:
    print("READY", flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        print(json.dumps(run_as(request)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
