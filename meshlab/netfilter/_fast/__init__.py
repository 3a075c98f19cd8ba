"""Optional speed for the rule traversal, behind one switch: :data:`ENABLED`.

The reference traversal is :meth:`meshlab.netfilter.kernel.Netns._chain`: it tries a chain's
rules one by one with :meth:`~meshlab.netfilter.rules.Rule.matches` and records, for every rule
it passes over, the reason (:meth:`~meshlab.netfilter.rules.Rule.why_not`). Read that one to
learn how the kernel decides. This package gives the same answer faster, in two ways, each
kept because a benchmark (``python -m benchmarks.bench_netfilter``) misses its target without
it:

* :mod:`.index`: a long chain (kube-proxy's KUBE-SERVICES has thousands of rules) is bucketed
  by destination and port once, so a packet is tested only against the rules that could match
  it (a trace to a late match in the 20,000-rule benchmark dumps: 5-20 ms without, 0.02-0.04
  ms with; the target is 2 ms);
* :mod:`.record`: a run of rules that did not match is recorded as one entry, and the
  :class:`~meshlab.netfilter.trace.RuleEval` objects (with their reasons) are made only when
  somebody reads :attr:`~meshlab.netfilter.trace.Trace.evaluations` (a trace through the
  sidecar rules: about 95 us on the reference path, 30 us here; the target is 50 us).

Two smaller things in :mod:`.chains`: each rule's conditions are kept as ``(match._fails,
side)`` pairs, tried directly (8% fewer instructions per sidecar trace than calling
``Rule.matches``), and each rule's text is written once per ruleset, not on every expansion
(a walk, which reads every evaluation, is held to 1 ms by ``benchmarks.bench_walk``).

Rules the index skipped were never tested; their reasons are worked out from the packet as it
was, when the trace is expanded, by the same :meth:`Rule.why_not`. Tests run both paths and
hold them equal (``tests/netfilter/test_nf_explain.py``).

:data:`ENABLED` is read when a :class:`~meshlab.netfilter.kernel.Netns` is made; it starts as
``True`` unless the environment sets ``MESHLAB_NETFILTER_FAST=0`` (to run any program or test
suite on the reference path).
"""

from __future__ import annotations

import os

from meshlab.netfilter._fast.chains import FastChain, compile_ruleset
from meshlab.netfilter._fast.traverse import traverse

ENABLED: bool = os.environ.get("MESHLAB_NETFILTER_FAST", "1") != "0"
"""Whether new namespaces trace with this package (``True``) or the reference path."""

__all__ = ["ENABLED", "FastChain", "compile_ruleset", "traverse"]
