"""The "predict, then check" checkers of the lessons.

Every exercise in ``notebooks/`` asks the learner to *predict* something (a port, a chain, a
rule, a flag, a number) and write it in a code cell::

    answer = None  # your prediction: the port the kernel steers the connection to
    check_inbound_capture_port(answer)

The checker never compares the answer with a stored solution. It *asks the model*: it runs
the walk, the trace or the rule generator that the answer implies and reports what the model
shows and why. A right answer is one the model agrees with (so several answers may be right,
e.g. any inbound port that bypasses Envoy); a wrong one gets what the model does with *that*
answer and the first hint of a ladder, and each further wrong try of the same exercise (in
the same kernel) the next hint. The right answer and the model's evidence stay in a collapsed
"Show the answer" block, never shown unasked. Solutions live apart, in
``notebooks/solutions/``.

Each ``check_*`` function returns a :class:`CheckResult`. In a notebook its rich display is a
short HTML message; in a test, read :attr:`CheckResult.correct`, the texts and
:attr:`CheckResult.answer_block`. Bad input (a
rule that does not parse, a flag istio-iptables would refuse) is never a traceback: it is an
``"invalid"`` result that says what is wrong and how to fix it.

The package, one job per module (import everything from ``meshlab.exercises``):

* :mod:`~meshlab.exercises.result` -- :class:`CheckResult` and how it displays;
* :mod:`~meshlab.exercises.answers` -- reading a learner's answer, and the ``checker``
  decorator that turns unreadable answers into "invalid" results;
* :mod:`~meshlab.exercises.model` -- the lessons' world (pod, peer, Services) and the helpers
  that ask the model (rules for some flags, a packet's trace, a scenario's walk);
* one module per lesson: :mod:`~meshlab.exercises.injection` (01),
  :mod:`~meshlab.exercises.iptables` (02), :mod:`~meshlab.exercises.inbound` (03),
  :mod:`~meshlab.exercises.outbound` (04), :mod:`~meshlab.exercises.loop` (05),
  :mod:`~meshlab.exercises.edge_cases` (06), :mod:`~meshlab.exercises.real_kernel` (07),
  :mod:`~meshlab.exercises.ambient` (08);
* :mod:`~meshlab.exercises.catalog` -- :data:`EXERCISES`, every exercise in order.
"""

from __future__ import annotations

from meshlab.exercises.ambient import (
    check_ambient_app_sees_source,
    check_ambient_outbound_port,
    check_reply_path_piece,
    check_ztunnel_loop_condition,
)
from meshlab.exercises.answers import reset_tries
from meshlab.exercises.catalog import EXERCISES, Exercise
from meshlab.exercises.edge_cases import (
    DEBUG_FLAGS,
    check_debug_dump,
    check_exclude_cidr,
    check_uid_1337_proxied,
    debug_dump,
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
from meshlab.exercises.model import (
    APP_UID,
    LEGACY_DB_IP,
    PEER_IP,
    PEER_SPORT,
    POD_IP,
    PRODUCTPAGE_POD,
    REVIEWS_VIP,
)
from meshlab.exercises.outbound import check_outbound_cluster, check_proxy_exempt_rule
from meshlab.exercises.real_kernel import check_nat_counts_connections, check_upstream_counter
from meshlab.exercises.result import CheckResult

__all__ = [
    "APP_UID",
    "DEBUG_FLAGS",
    "EXERCISES",
    "LEGACY_DB_IP",
    "PEER_IP",
    "PEER_SPORT",
    "POD_IP",
    "PRODUCTPAGE_POD",
    "REVIEWS_VIP",
    "CheckResult",
    "Exercise",
    "check_ambient_app_sees_source",
    "check_ambient_outbound_port",
    "check_app_sees_source",
    "check_bypass_port",
    "check_bypass_rule",
    "check_debug_dump",
    "check_exclude_cidr",
    "check_exclude_inbound_annotation",
    "check_first_chain",
    "check_inbound_capture_port",
    "check_inbound_loop_rule",
    "check_injection_labels",
    "check_loop_port_exhaustion",
    "check_loop_rules",
    "check_nat_counts_connections",
    "check_outbound_cluster",
    "check_proxy_exempt_rule",
    "check_proxy_port_flag",
    "check_reply_path_piece",
    "check_reply_source",
    "check_uid_1337_proxied",
    "check_upstream_counter",
    "check_ztunnel_loop_condition",
    "debug_dump",
    "reset_tries",
]
