"""Solutions to 02-iptables-in-a-pod.ipynb."""

from __future__ import annotations

from typing import Any

ANSWERS: dict[str, Any] = {
    # 02.1 nat PREROUTING has one rule: -p tcp -j ISTIO_INBOUND.
    "check_first_chain": "ISTIO_INBOUND",
    # 02.2 The same shape as the -d exclusions: match TCP and the destination port, RETURN.
    # ("-p tcp -m tcp --dport 8081 -j RETURN" is the same rule as iptables-save prints it.)
    "check_bypass_rule": "-p tcp --dport 8081 -j RETURN",
    # 02.3 conntrack un-NATs the reply: the peer sees the address and port it called. No nat
    # rule sees the reply.
    "check_reply_source": "10.244.0.5:9080",
}

if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from _run import show

    sys.exit(show(ANSWERS))
