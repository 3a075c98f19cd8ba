"""The catalog of exercises: every checker of the lessons with its notebook, in order.

:data:`EXERCISES` is what the tests walk (each checker against its solution and a wrong
answer) and what a lesson index can list; each :class:`Exercise` carries its id (``"03.1"``),
its notebook, its prompt (the checker's docstring) and the checker itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from meshlab.exercises.ambient import (
    check_ambient_app_sees_source,
    check_ambient_outbound_port,
    check_reply_path_piece,
    check_ztunnel_loop_condition,
)
from meshlab.exercises.edge_cases import (
    check_debug_dump,
    check_exclude_cidr,
    check_uid_1337_proxied,
)
from meshlab.exercises.inbound import (
    check_app_sees_source,
    check_bypass_port,
    check_inbound_capture_port,
)
from meshlab.exercises.injection import (
    check_exclude_inbound_annotation,
    check_injection_labels,
    check_proxy_port_flag,
)
from meshlab.exercises.iptables import check_bypass_rule, check_first_chain, check_reply_source
from meshlab.exercises.loop import (
    check_inbound_loop_rule,
    check_loop_port_exhaustion,
    check_loop_rules,
)
from meshlab.exercises.outbound import check_outbound_cluster, check_proxy_exempt_rule
from meshlab.exercises.real_kernel import check_nat_counts_connections, check_upstream_counter
from meshlab.exercises.result import CheckResult


@dataclass(frozen=True)
class Exercise:
    """One exercise: where it lives and which checker evaluates it."""

    id: str
    notebook: str
    prompt: str
    checker: Callable[[Any], CheckResult]


def _exercises() -> tuple[Exercise, ...]:
    table: list[tuple[str, Callable[[Any], CheckResult]]] = [
        ("01-injection", check_injection_labels),
        ("01-injection", check_exclude_inbound_annotation),
        ("01-injection", check_proxy_port_flag),
        ("02-iptables-in-a-pod", check_first_chain),
        ("02-iptables-in-a-pod", check_bypass_rule),
        ("02-iptables-in-a-pod", check_reply_source),
        ("03-inbound", check_inbound_capture_port),
        ("03-inbound", check_app_sees_source),
        ("03-inbound", check_bypass_port),
        ("04-outbound", check_proxy_exempt_rule),
        ("04-outbound", check_outbound_cluster),
        ("05-the-loop", check_loop_rules),
        ("05-the-loop", check_inbound_loop_rule),
        ("05-the-loop", check_loop_port_exhaustion),
        ("06-edge-cases", check_exclude_cidr),
        ("06-edge-cases", check_uid_1337_proxied),
        ("06-edge-cases", check_debug_dump),
        ("07-real-kernel", check_upstream_counter),
        ("07-real-kernel", check_nat_counts_connections),
        ("08-ambient", check_ambient_outbound_port),
        ("08-ambient", check_ztunnel_loop_condition),
        ("08-ambient", check_ambient_app_sees_source),
        ("08-ambient", check_reply_path_piece),
    ]
    return tuple(Exercise(fn.exercise, nb, (fn.__doc__ or "").strip(), fn)  # type: ignore[attr-defined]
                 for nb, fn in table)


#: Every exercise of the lessons, in order.
EXERCISES: tuple[Exercise, ...] = _exercises()
