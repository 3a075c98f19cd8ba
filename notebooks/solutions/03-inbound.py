"""Solutions to 03-inbound.ipynb."""

from __future__ import annotations

from typing import Any

ANSWERS: dict[str, Any] = {
    # 03.1 ISTIO_IN_REDIRECT: REDIRECT --to-ports 15006 (-z), Envoy's virtualInbound.
    "check_inbound_capture_port": 15006,
    # 03.2 inbound|9080|| binds its upstream socket to 127.0.0.6, and
    # "-s 127.0.0.6/32 -o lo -j RETURN" lets that connection reach the app.
    "check_app_sees_source": "127.0.0.6",
    # 03.3 Any port ISTIO_INBOUND returns: 15008 (tunnel, -e), 15090, 15021, 15020 (-d).
    "check_bypass_port": 15021,
}

if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from _run import show

    sys.exit(show(ANSWERS))
