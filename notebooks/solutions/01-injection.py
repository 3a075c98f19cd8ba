"""Solutions to 01-injection.ipynb."""

from __future__ import annotations

from typing import Any

ANSWERS: dict[str, Any] = {
    # 01.1 The webhook entry namespace.sidecar-injector.istio.io selects namespaces labelled
    # istio-injection=enabled (exactly "enabled"). {"istio.io/rev": "default"} is right too:
    # it selects the default revision through rev.namespace.sidecar-injector.istio.io.
    "check_injection_labels": {"istio-injection": "enabled"},
    # 01.2 -p is copied into ISTIO_REDIRECT's REDIRECT --to-ports, so 15999. Envoy must then
    # listen there too (meshConfig.proxyListenPort); otherwise every outbound call is refused.
    "check_proxy_port_flag": 15999,
    # 01.3 excludeInboundPorts becomes part of -d (-d 15090,15021,9091,15020), i.e. one more
    # "-p tcp --dport 9091 -j RETURN" in ISTIO_INBOUND before the jump to ISTIO_IN_REDIRECT.
    "check_exclude_inbound_annotation": {"traffic.sidecar.istio.io/excludeInboundPorts": "9091"},
}

if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from _run import show

    sys.exit(show(ANSWERS))
