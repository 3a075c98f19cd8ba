"""Rules fed to ``iptables-restore --noflush`` in a scratch namespace, and the rule lines
``iptables-save`` (v1.8.9, nf_tables) printed back, table by table. Written down once from a
real kernel; the live test re-checks them on this machine."""

RESTORE = """\
*mangle
:ISTIO_DIVERT - [0:0]
:ISTIO_TPROXY - [0:0]
:ISTIO_INBOUND - [0:0]
-A ISTIO_DIVERT -j MARK --set-mark 1337
-A ISTIO_DIVERT -j ACCEPT
-A ISTIO_TPROXY ! -d 127.0.0.1/32 -p tcp -j TPROXY --tproxy-mark 1337/0xffffffff --on-port 15006
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A ISTIO_INBOUND -p tcp -m conntrack --ctstate RELATED,ESTABLISHED -j ISTIO_DIVERT
-A ISTIO_INBOUND -p tcp -j ISTIO_TPROXY
-A PREROUTING -p tcp -m mark --mark 1337 -j CONNMARK --save-mark
-A OUTPUT -p tcp -o lo -m mark --mark 1337 -j RETURN
-A OUTPUT ! -d 127.0.0.1/32 -p tcp -o lo -m owner --uid-owner 1337 -j MARK --set-mark 1338
-A OUTPUT -p tcp -m connmark --mark 1337 -j CONNMARK --restore-mark
-A OUTPUT -p udp -m multiport --dports 53,15008:15010 -m comment --comment "hello world" -j LOG --log-prefix "x y"
-A OUTPUT -p tcp --sport 1000:2000 ! -s 10.0.0.0/8 -j TRACE
-A OUTPUT -p tcp -m mark ! --mark 0x10/0xff -j ACCEPT
-A OUTPUT -m conntrack ! --ctstate NEW -j ACCEPT
COMMIT
*raw
:ISTIO_OUTPUT_DNS - [0:0]
-A OUTPUT -j ISTIO_OUTPUT_DNS
-A ISTIO_OUTPUT_DNS -p udp --dport 53 -m owner --uid-owner 1337 -j CT --zone 1
-A ISTIO_OUTPUT_DNS -p udp -m udp --sport 15053 -m owner --gid-owner 1337 -j CT --zone 2
COMMIT
*nat
:ISTIO_OUTPUT - [0:0]
-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -p tcp --dport 53 -d 10.0.0.1/32 -j REDIRECT --to-ports 15053
-A ISTIO_OUTPUT -p udp --dport 53 -j REDIRECT --to-port 15053
-A ISTIO_OUTPUT -p tcp -j DNAT --to-destination 10.1.2.3:80
-A ISTIO_OUTPUT -p tcp -j DNAT --to-destination 10.1.2.3
-A ISTIO_OUTPUT -p tcp ! --dport 15008 -m owner ! --uid-owner 1337 -o lo -j RETURN
-A ISTIO_OUTPUT -d 10.0.0.0/255.0.0.0 -j RETURN
-A ISTIO_OUTPUT -p tcp -m multiport ! --dports 53,15008 -j RETURN
-A ISTIO_OUTPUT -p tcp -j REDIRECT --to-ports 15001-15002
-A ISTIO_OUTPUT -p tcp -j REDIRECT
COMMIT
*filter
:INPUT DROP [0:0]
-A INPUT -s 10.0.0.1 -j ACCEPT
-A FORWARD -j DROP
COMMIT
"""

SAVED = {
    "mangle": """\
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A PREROUTING -p tcp -m mark --mark 0x539 -j CONNMARK --save-mark --nfmask 0xffffffff --ctmask 0xffffffff
-A OUTPUT -o lo -p tcp -m mark --mark 0x539 -j RETURN
-A OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m owner --uid-owner 1337 -j MARK --set-xmark 0x53a/0xffffffff
-A OUTPUT -p tcp -m connmark --mark 0x539 -j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff
-A OUTPUT -p udp -m multiport --dports 53,15008:15010 -m comment --comment "hello world" -j LOG --log-prefix "x y"
-A OUTPUT ! -s 10.0.0.0/8 -p tcp -m tcp --sport 1000:2000 -j TRACE
-A OUTPUT -p tcp -m mark ! --mark 0x10/0xff -j ACCEPT
-A OUTPUT -m conntrack ! --ctstate NEW -j ACCEPT
-A ISTIO_DIVERT -j MARK --set-xmark 0x539/0xffffffff
-A ISTIO_DIVERT -j ACCEPT
-A ISTIO_INBOUND -p tcp -m conntrack --ctstate RELATED,ESTABLISHED -j ISTIO_DIVERT
-A ISTIO_INBOUND -p tcp -j ISTIO_TPROXY
-A ISTIO_TPROXY ! -d 127.0.0.1/32 -p tcp -j TPROXY --on-port 15006 --on-ip 0.0.0.0 --tproxy-mark 0x539/0xffffffff""",
    "raw": """\
-A OUTPUT -j ISTIO_OUTPUT_DNS
-A ISTIO_OUTPUT_DNS -p udp -m udp --dport 53 -m owner --uid-owner 1337 -j CT --zone 1
-A ISTIO_OUTPUT_DNS -p udp -m udp --sport 15053 -m owner --gid-owner 1337 -j CT --zone 2""",
    "filter": """\
-A INPUT -s 10.0.0.1/32 -j ACCEPT
-A FORWARD -j DROP""",
    "nat": """\
-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -d 10.0.0.1/32 -p tcp -m tcp --dport 53 -j REDIRECT --to-ports 15053
-A ISTIO_OUTPUT -p udp -m udp --dport 53 -j REDIRECT --to-ports 15053
-A ISTIO_OUTPUT -p tcp -j DNAT --to-destination 10.1.2.3:80
-A ISTIO_OUTPUT -p tcp -j DNAT --to-destination 10.1.2.3
-A ISTIO_OUTPUT -o lo -p tcp -m tcp ! --dport 15008 -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -d 10.0.0.0/8 -j RETURN
-A ISTIO_OUTPUT -p tcp -m multiport ! --dports 53,15008 -j RETURN
-A ISTIO_OUTPUT -p tcp -j REDIRECT --to-ports 15001-15002
-A ISTIO_OUTPUT -p tcp -j REDIRECT""",
}


def rule_lines(save_text: str) -> dict[str, list[str]]:
    """``-A`` lines of a save document, per table (counters prefixes removed)."""
    out: dict[str, list[str]] = {}
    table = None
    for line in save_text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
            out[table] = []
        elif "-A " in line and table is not None:
            out[table].append(line[line.index("-A "):])
    return out
