"""Solutions to 06-edge-cases.ipynb."""

from __future__ import annotations

from typing import Any

ANSWERS: dict[str, Any] = {
    # 06.1 Any range holding 192.168.10.20 but not 10.244.0.9: 192.168.0.0/16,
    # 192.168.10.0/24 or 192.168.10.20/32.
    "check_exclude_cidr": "192.168.10.0/24",
    # 06.2 "-m owner --uid-owner 1337 -j RETURN" (ISTIO_OUTPUT rule 4) matches the app's
    # connection too, and RETURN skips the final jump to ISTIO_REDIRECT: it bypasses Envoy
    # (no mTLS, no policy). Hence "applications must not run as UID 1337" (IST0144).
    "check_uid_1337_proxied": {"proxied": False,
                               "rule": "-m owner --uid-owner 1337 -j RETURN"},
    # 06.3 The dump captures only -i 10.96.0.0/12: "-d 10.96.0.0/12 -j ISTIO_REDIRECT"
    # sends the VIP to 127.0.0.1:15001. (10.244.0.9 would not be captured.)
    "check_debug_dump": 15001,
}

if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from _run import show

    sys.exit(show(ANSWERS))
