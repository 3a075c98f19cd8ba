"""Solutions to 05-the-loop.ipynb."""

from __future__ import annotations

from typing import Any

ANSWERS: dict[str, Any] = {
    # 05.1 Envoy runs as UID 1337 and GID 1337; each owner RETURN alone still exempts it, so
    # both must go. (Removing the two jumps to ISTIO_IN_REDIRECT or the -o lo rules does not
    # matter here: the connection leaves by eth0.)
    "check_loop_rules": [
        "-m owner --uid-owner 1337 -j RETURN",
        "-m owner --gid-owner 1337 -j RETURN",
    ],
    # 05.2 One ephemeral port per turn: 60999 - 32768 + 1 = 28232 turns.
    "check_loop_port_exhaustion": 28232,
    # 05.3 Without the 127.0.0.6 RETURN, Envoy's connection to the pod IP matches
    # "! -d 127.0.0.1/32 -o lo -p tcp ! --dport 15008 -m owner --uid-owner 1337
    #  -j ISTIO_IN_REDIRECT" and comes back to 15006.
    "check_inbound_loop_rule": "-s 127.0.0.6/32 -o lo -j RETURN",
}

if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from _run import show

    sys.exit(show(ANSWERS))
