"""Solutions to 08-ambient.ipynb."""

from __future__ import annotations

from typing import Any

ANSWERS: dict[str, Any] = {
    # 08.1 The app's connection passes nat OUTPUT -> ISTIO_OUTPUT; nothing exempts it (not to
    # 127.0.0.1, not out by lo, no mark), so the last rule redirects it to ztunnel's 15001.
    "check_ambient_outbound_port": 15001,
    # 08.2 ztunnel's sockets carry SO_MARK 0x539; only this condition tells its packets from
    # the app's. Without it the REDIRECT to 15001 catches ztunnel's own connection.
    "check_ztunnel_loop_condition": "-m mark ! --mark 0x539/0xfff",
    # 08.3 ztunnel binds the client's own address (IP_FREEBIND + IP_TRANSPARENT) when it
    # connects to the app, so the app sees reviews-v2 itself, not 127.0.0.6.
    "check_ambient_app_sees_source": "10.244.0.13",
    # 08.4 Any of the four pieces of the reply path: the connmark set in mangle ISTIO_PRERT,
    # its restore in mangle ISTIO_OUTPUT, the ip rule, or the table-100 route.
    "check_reply_path_piece": "ip rule add fwmark 0x111/0xfff pref 32764 lookup 100",
}

if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from _run import show

    sys.exit(show(ANSWERS))
