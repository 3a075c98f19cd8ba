"""The packet builder: choose who sends, to where, and read the kernel's trace.

Pick a process of the sidecar pod (the app as UID 1000, Envoy or pilot-agent as UID 1337) or
type any UID/GID, a destination address, a port and a protocol. The widget asks the kernel
model (:meth:`meshlab.netfilter.kernel.Netns.connect`) to send the first packet of a new
connection from the pod, and shows every rule it was tested against, in order, with the rules
that matched in bold and marked ``*`` (and, for those it passed over, the first condition that
failed), then where the connection goes: the rewritten destination (REDIRECT to Envoy), the
interface it leaves by, and the socket that would accept it. Each trace starts from a fresh
namespace, so the same input always gives the same trace.

The UID and GID boxes show the chosen process's IDs and are greyed out while a process is
chosen (a note beside them says so); choose "custom UID/GID" to type your own. Every number
is checked as typed: a port must be 1-65535 and an ID 0-4294967294, and a value out of range
is refused with a message, never silently changed. Boxes update on Enter or when you leave
them, not at every keystroke.

``PacketBuilder(ruleset=...)`` traces through other rules, e.g. an ``iptables-save`` pasted
from a real pod and parsed with :func:`meshlab.netfilter.parse.parse_ruleset`.
"""

from __future__ import annotations

from ipaddress import ip_address
from typing import Any

import ipywidgets as widgets
import pandas

from meshlab.errors import MeshlabError
from meshlab.i18n import tr, translatable
from meshlab.netfilter.ruleset import Ruleset
from meshlab.widgets.common import LiveWidget, error_widget, esc, guarded, html_table
from meshlab.widgets.reasons import reasons_html

CUSTOM = translatable("custom UID/GID")
"""The process menu's value for typing a UID and GID (its label is ``tr(CUSTOM)``)."""
#: The largest UID/GID Linux accepts (2^32 - 1 is "no ID").
MAX_ID = 2**32 - 2


def read_number(text: str, what: str, low: int, high: int) -> int:
    """A whole number typed in a box, or MeshlabError saying what is wrong and what fits.

    ``what`` names the box, in the learner's language (``tr("port")``)."""
    value = text.strip()
    if not value.isdigit():
        raise MeshlabError(tr("{what} {value} is not a whole number; write one from {low} to "
                              "{high}", what=what, value=repr(value), low=low, high=high))
    number = int(value)
    if not low <= number <= high:
        raise MeshlabError(tr("{what} {number} is out of range: it must be from {low} to "
                              "{high}", what=what, number=number, low=low, high=high))
    return number


#: A trace table's columns (the frame's names; the HTML table shows them translated).
TRACE_COLUMNS = [translatable("hook"), translatable("table"), translatable("chain"), "#",
                 translatable("rule"), translatable("matched"), translatable("verdict")]


class PacketBuilder(LiveWidget, widgets.VBox):
    """Process/UID, destination, port, protocol -> the trace, as an HTML table."""

    def __init__(self, *, ruleset: Ruleset | None = None, pod_ip: str = "10.244.0.5") -> None:
        from meshlab.pod import Pod

        self.error = error_widget()
        self._frame = pandas.DataFrame(columns=TRACE_COLUMNS)
        self._pod = Pod.default()
        self._ruleset = ruleset
        self._pod_ip = pod_ip
        options = [(f"{p.name} (uid {p.uid} gid {p.gid})", p.name) for p in self._pod.processes]
        self.process = widgets.Dropdown(options=[*options, (tr(CUSTOM), CUSTOM)], value="app",
                                        description=tr("process"))
        self.uid = widgets.Text(value="1000", description="uid", continuous_update=False,
                                layout=widgets.Layout(width="170px"))
        self.gid = widgets.Text(value="1000", description="gid", continuous_update=False,
                                layout=widgets.Layout(width="170px"))
        self.id_note = widgets.HTML("").add_class("meshlab-id-note")
        self.destination = widgets.Text(value="10.244.0.9", description=tr("destination"),
                                        continuous_update=False)
        self.port = widgets.Text(value="9080", description=tr("port"), continuous_update=False,
                                 layout=widgets.Layout(width="170px"))
        self.proto = widgets.Dropdown(options=["tcp", "udp"], value="tcp",
                                      description=tr("proto"),
                                      layout=widgets.Layout(width="170px"))
        self.summary = widgets.HTML("")
        self.result = widgets.HTML("").add_class("meshlab-trace-result")
        for control in (self.uid, self.gid, self.destination, self.port, self.proto):
            control.observe(self._update, names="value")
        self.process.observe(self._on_process, names="value")
        super().__init__([
            widgets.HBox([self.process, self.uid, self.gid],
                         layout=widgets.Layout(flex_flow="row wrap")),
            self.id_note,
            widgets.HBox([self.destination, self.port, self.proto],
                         layout=widgets.Layout(flex_flow="row wrap")),
            self.error, self.summary, self.result,
        ])
        self.add_class("meshlab-packet-builder")
        self._on_process()

    def _on_process(self, change: object = None) -> None:
        name = self.process.value
        custom = name == CUSTOM
        self.uid.disabled = self.gid.disabled = not custom
        self.id_note.value = ("" if custom else
                              "<i>" + tr("uid and gid are those of {name} (greyed out: the "
                                         "kernel reads them from the process that owns the "
                                         "socket). Choose '{custom}' to type others.",
                                         name=esc(name), custom=tr(CUSTOM)) + "</i>")
        if not custom:
            proc = self._pod.process(name)
            with self.hold_trait_notifications():
                self.uid.unobserve(self._update, names="value")
                self.gid.unobserve(self._update, names="value")
                self.uid.value, self.gid.value = str(proc.uid), str(proc.gid)
                self.uid.observe(self._update, names="value")
                self.gid.observe(self._update, names="value")
        self._update()

    def _netns(self) -> Any:
        from meshlab.netfilter.kernel import Netns, pod_interfaces

        if self._ruleset is None:
            return self._pod.netns()
        return Netns(self._ruleset, pod_interfaces(self._pod_ip))

    def _trace(self) -> tuple[Any, Any]:
        text = self.destination.value.strip()
        try:
            dst = ip_address(text)
        except ValueError:
            raise MeshlabError(tr("destination {text} is not an IP address; write one like "
                                  "10.244.0.9 or 127.0.0.1", text=repr(text))) from None
        port = read_number(self.port.value, tr("port"), 1, 65535)
        uid = read_number(self.uid.value, "uid", 0, MAX_ID)
        gid = read_number(self.gid.value, "gid", 0, MAX_ID)
        ns = self._netns()
        trace = ns.connect(proto=self.proto.value, dst=dst, dport=port, uid=uid, gid=gid)
        return ns, trace

    def _update(self, change: object = None) -> None:
        found = guarded(self._trace, self.error)
        if found is None:
            self.summary.value = ""
            self.result.value = f"<i>{tr('No trace: fix the input above.')}</i>"
            return
        ns, trace = found
        rows = [(e.hook, e.table, e.chain, e.rule if e.rule else "policy", e.text,
                 "yes" if e.matched else "no", e.verdict) for e in trace.evaluations]
        self._frame = pandas.DataFrame(rows, columns=TRACE_COLUMNS)
        marked = [e.matched for e in trace.evaluations]
        self.summary.value = self._summary(ns, trace) + reasons_html(trace.evaluations)
        self.result.value = (html_table(TRACE_COLUMNS,
                                        [(("* " if m else "") + str(r[0]), *r[1:])
                                         for r, m in zip(rows, marked, strict=True)], marked)
                             if rows else f"<i>{no_rule_evaluated()}</i>")

    def _summary(self, ns: Any, trace: Any) -> str:
        odst = f"{trace.original_dst[0]}:{trace.original_dst[1]}"
        ddst = f"{trace.delivered[0]}:{trace.delivered[1]}"
        verdict = tr("verdict {verdict}", verdict=esc(trace.verdict))
        parts = [f"<b>{verdict}</b>"]
        if trace.nat is not None:
            parts.append(tr("{target} in {table} {chain} rule {rule}: {odst} becomes {ddst} "
                            "(SO_ORIGINAL_DST keeps {odst})", target=esc(trace.nat.target),
                            table=esc(trace.nat.table), chain=esc(trace.nat.chain),
                            rule=trace.nat.rule, odst=esc(odst), ddst=f"<b>{esc(ddst)}</b>"))
        else:
            parts.append(tr("destination unchanged: {ddst}", ddst=esc(ddst)))
        if trace.out_iface:
            parts.append(tr("leaves by {iface}", iface=f"<b>{esc(trace.out_iface)}</b>"))
        if trace.local and trace.verdict == "ACCEPT" and self._ruleset is None:
            sock = self._pod.listener(self.proto.value, trace.delivered[0], trace.delivered[1])
            parts.append(tr("reaches {socket}", socket=f"<b>{esc(sock)}</b>")
                         if sock is not None else tr("nothing listens there: refused"))
        for note in getattr(trace, "notes", ()):
            parts.append(esc(note))
        return "<p>" + "; ".join(parts) + ".</p>"

    def static(self) -> pandas.DataFrame:
        """The current trace: one row per rule evaluated (hook, table, chain, #, rule,
        matched, verdict)."""
        return self._frame


def no_rule_evaluated() -> str:
    """What a trace table says when no rule was evaluated."""
    return tr("No rule was evaluated: the tables are empty, every policy is ACCEPT.")
