"""The rules tracer: paste your own pod's ``iptables-save``, choose a connection, read its trace.

This is lesson 06's "debug your own pod" as a widget. The text area takes what
``iptables-save`` (or ``iptables-restore`` input, or ``iptables -t nat -A ...`` lines) printed
inside a pod's network namespace; the boxes below describe one connection:

* **outbound**: a process of the pod (owner ``uid``/``gid``, optional socket ``mark``, in
  decimal or as iptables prints it, ``0x539``) opens a connection to ``dst:port`` -- the
  packet passes nat OUTPUT, where ``-m owner`` can match;
* **inbound**: a peer ``src`` connects to ``dst:port`` (the pod's own address), the packet
  arrives on eth0 and passes nat PREROUTING. It has no local socket yet, so it has no owner:
  the uid box is greyed out, and a note says why.

The trace lists every rule the packet was tested against, in order, whether it matched, and,
for each rule that did not, *why not* (the first condition that failed). Rules text that does
not parse shows the parser's own message (line, column, the token, how to fix it) in a few
lines, never a traceback.
"""

from __future__ import annotations

from ipaddress import ip_address
from typing import Any

import ipywidgets as widgets
import pandas

from meshlab.errors import MeshlabError
from meshlab.i18n import tr, translatable
from meshlab.widgets.common import LiveWidget, error_widget, esc, guarded, html_table
from meshlab.widgets.packet_builder import (
    MAX_ID,
    TRACE_COLUMNS,
    no_rule_evaluated,
    read_number,
)

_COLUMNS = [*TRACE_COLUMNS, translatable("why not")]


def _address(text: str, what: str) -> Any:
    try:
        return ip_address(text.strip())
    except ValueError:
        raise MeshlabError(tr("{what} {text} is not an IP address; write one like 10.244.0.9",
                              what=what, text=repr(text.strip()))) from None


def read_mark(text: str) -> int:
    """A socket mark as iptables prints it (``0x539``) or in decimal (``1337``)."""
    value = text.strip()
    if value.lower().startswith("0x"):
        try:
            number = int(value, 16)
        except ValueError:
            raise MeshlabError(tr("mark {value} is not a hexadecimal number; write one like "
                                  "0x539 (or 1337 in decimal)", value=repr(value))) from None
        if number > 2**32 - 1:
            raise MeshlabError(tr("mark {value} is out of range: it must fit in 32 bits (0 to "
                                  "0xffffffff)", value=value))
        return number
    return read_number(value, tr("mark"), 0, 2**32 - 1)


def reason(evaluation: Any) -> str:
    """Why a rule the packet was tested against did not match, in the model's words
    (:attr:`~meshlab.netfilter.trace.RuleEval.why_not`); "" when it matched, or for a
    chain's policy."""
    return evaluation.why_not or ""


class RulesTracer(LiveWidget, widgets.VBox):
    """A pasted ruleset, a connection (direction, addresses, port, owner, mark) -> the trace,
    each rule with the reason it did not match."""

    def __init__(self, rules: str = "", *, pod_ip: str = "10.244.0.5") -> None:
        self.error = error_widget()
        small = widgets.Layout(width="190px")
        self.rules = widgets.Textarea(
            value=rules, placeholder=tr("paste your pod's iptables-save here"),
            description="iptables-save", continuous_update=False,
            layout=widgets.Layout(width="100%", height="12em"),
            style={"description_width": "initial"})
        self.rules.add_class("meshlab-rules-input")
        self.direction = widgets.ToggleButtons(
            options=[(tr("outbound"), "outbound"), (tr("inbound"), "inbound")],
            value="outbound", description=tr("connection"))
        self.pod_ip = widgets.Text(value=pod_ip, description=tr("pod IP"),
                                   continuous_update=False, layout=small)
        self.src = widgets.Text(value="10.244.0.9", description="src", continuous_update=False,
                                layout=small)
        self.dst = widgets.Text(value="10.96.0.20", description="dst", continuous_update=False,
                                layout=small)
        self.port = widgets.Text(value="9080", description=tr("port"), continuous_update=False,
                                 layout=small)
        self.proto = widgets.Dropdown(options=["tcp", "udp"], value="tcp",
                                      description=tr("proto"), layout=small)
        self.uid = widgets.Text(value="1000", description="uid", continuous_update=False,
                                layout=small)
        self.mark = widgets.Text(value="0", description=tr("mark"), continuous_update=False,
                                 layout=small)
        self.note = widgets.HTML("").add_class("meshlab-tracer-note")
        self.summary = widgets.HTML("")
        self.result = widgets.HTML("").add_class("meshlab-trace-result")
        self._frame = pandas.DataFrame(columns=_COLUMNS)
        wrap = widgets.Layout(flex_flow="row wrap")
        super().__init__([
            self.rules, self.direction,
            widgets.HBox([self.pod_ip, self.src, self.dst, self.port], layout=wrap),
            widgets.HBox([self.proto, self.uid, self.mark], layout=wrap),
            self.note, self.error, self.summary, self.result,
        ])
        self.add_class("meshlab-rules-tracer")
        for control in (self.rules, self.direction, self.pod_ip, self.src, self.dst,
                        self.port, self.proto, self.uid, self.mark):
            control.observe(self._update, names="value")
        self._update()

    # ------------------------------------------------------------------ model -> widget
    def _trace(self) -> Any:
        from meshlab.netfilter.kernel import Netns, pod_interfaces
        from meshlab.netfilter.packet import Packet
        from meshlab.netfilter.parse import parse_ruleset

        if not self.rules.value.strip():
            raise MeshlabError(tr("paste the output of iptables-save (run inside the pod's "
                                  "network namespace) in the box above"))
        ruleset = parse_ruleset(self.rules.value)
        pod = _address(self.pod_ip.value, tr("pod IP"))
        ns = Netns(ruleset, pod_interfaces(pod))
        port = read_number(self.port.value, tr("port"), 1, 65535)
        mark = read_mark(self.mark.value)
        dst = _address(self.dst.value, "dst")
        if self.direction.value == "inbound":
            src = _address(self.src.value, "src")
            packet = Packet(self.proto.value, src, 43210, dst, port, iif="eth0", mark=mark)
            return ns.receive(packet, "eth0")
        uid = read_number(self.uid.value, "uid", 0, MAX_ID)
        return ns.connect(proto=self.proto.value, dst=dst, dport=port, uid=uid, gid=uid,
                          mark=mark)

    def _update(self, change: object = None) -> None:
        inbound = self.direction.value == "inbound"
        self.uid.disabled = inbound
        self.src.disabled = not inbound
        self.note.value = "<i>" + (
            tr("uid is greyed out: an arriving packet has no local socket yet, so it has no "
               "owner, and {owner} rules never match it.", owner="<code>-m owner</code>")
            if inbound else
            tr("src is greyed out: the kernel picks the source of a connection the pod opens "
               "(by the route); gid is taken equal to uid.")) + "</i>"
        trace = guarded(self._trace, self.error)
        if trace is None:
            self.summary.value = ""
            self.result.value = f"<i>{tr('No trace: fix the input above.')}</i>"
            return
        rows = [(e.hook, e.table, e.chain, e.rule if e.rule else "policy", e.text,
                 "yes" if e.matched else "no", e.verdict, reason(e))
                for e in trace.evaluations]
        self._frame = pandas.DataFrame(rows, columns=_COLUMNS)
        marked = [e.matched for e in trace.evaluations]
        self.summary.value = _summary(trace)
        self.result.value = (html_table(_COLUMNS,
                                        [(("* " if m else "") + str(r[0]), *r[1:])
                                         for r, m in zip(rows, marked, strict=True)], marked)
                             if rows else f"<i>{no_rule_evaluated()}</i>")

    def static(self) -> pandas.DataFrame:
        """The current trace, one row per rule evaluated (with the reason it did not
        match): the fallback for pages that show no live widgets."""
        return self._frame


def _summary(trace: Any) -> str:
    odst = f"{trace.original_dst[0]}:{trace.original_dst[1]}"
    ddst = f"{trace.delivered[0]}:{trace.delivered[1]}"
    verdict = tr("verdict {verdict}", verdict=esc(trace.verdict))
    parts = [f"<b>{verdict}</b>"]
    if trace.nat is not None:
        parts.append(tr("{target} in {table} {chain} rule {rule}: {odst} becomes {ddst}",
                        target=esc(trace.nat.target), table=esc(trace.nat.table),
                        chain=esc(trace.nat.chain), rule=trace.nat.rule, odst=esc(odst),
                        ddst=f"<b>{esc(ddst)}</b>"))
    else:
        parts.append(tr("destination unchanged: {ddst}", ddst=esc(ddst)))
    if trace.out_iface:
        parts.append(tr("leaves by {iface}", iface=f"<b>{esc(trace.out_iface)}</b>"))
    elif trace.local:
        parts.append(tr("delivered to a socket in the pod"))
    return "<p>" + "; ".join(parts) + ".</p>"
