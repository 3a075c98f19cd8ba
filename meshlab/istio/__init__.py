"""Istio's side: the rules istio-iptables writes, sidecar injection, and a simplified Envoy."""
