"""Solutions to 04-outbound.ipynb."""

from __future__ import annotations

from typing import Any

ANSWERS: dict[str, Any] = {
    # 04.1 Rules 1-3 of ISTIO_OUTPUT need -o lo, and Envoy's connection to another pod leaves
    # by eth0; rule 4, "-m owner --uid-owner 1337 -j RETURN", matches.
    "check_proxy_exempt_rule": 4,
    # 04.2 Envoy knows the reviews Service: its outbound cluster, not PassthroughCluster.
    "check_outbound_cluster": "outbound|9080||reviews.default.svc.cluster.local",
}

if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from _run import show

    sys.exit(show(ANSWERS))
