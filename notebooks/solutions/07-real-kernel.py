"""Solutions to 07-real-kernel.ipynb."""

from __future__ import annotations

from typing import Any

ANSWERS: dict[str, Any] = {
    # 07.1 Envoy's connection to the app, bound to 127.0.0.6 and leaving by lo, matches
    # ISTIO_OUTPUT rule 1 ("-s 127.0.0.6/32 -o lo -j RETURN"): step 7.
    "check_upstream_counter": 1,
    # 07.2 nat sees only the first packet of a connection: 1, however many packets follow.
    "check_nat_counts_connections": 1,
}

if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from _run import show

    sys.exit(show(ANSWERS))
