"""The Linux netfilter side of meshlab: rules, rulesets, parsing, conntrack and the traversal.

This package knows nothing of Istio. Typical use::

    from meshlab.netfilter import Netns, parse_ruleset, pod_interfaces
    ns = Netns(parse_ruleset(open("rules.txt").read()), pod_interfaces("10.244.0.5"))
    trace = ns.connect(proto="tcp", dst="10.244.0.9", dport=8080, uid=1000, gid=1000)
    trace.delivered, trace.hits
"""

from meshlab.netfilter.conntrack import Connection, ConntrackTable, FlowTuple
from meshlab.netfilter.kernel import Interface, Netns, pod_interfaces
from meshlab.netfilter.packet import IPAddress, Packet, endpoint, parse_endpoint
from meshlab.netfilter.parse import RulesParseError, parse_rule, parse_rule_spec, parse_ruleset
from meshlab.netfilter.rules import Rule
from meshlab.netfilter.ruleset import BUILTIN_CHAINS, Chain, RuleRef, Ruleset, Table
from meshlab.netfilter.trace import NatDecision, RuleEval, Trace

__all__ = [
    "BUILTIN_CHAINS",
    "Chain",
    "Connection",
    "ConntrackTable",
    "FlowTuple",
    "IPAddress",
    "Interface",
    "NatDecision",
    "Netns",
    "Packet",
    "Rule",
    "RuleEval",
    "RuleRef",
    "RulesParseError",
    "Ruleset",
    "Table",
    "Trace",
    "endpoint",
    "parse_endpoint",
    "parse_rule",
    "parse_rule_spec",
    "parse_ruleset",
    "pod_interfaces",
]
