"""Reading single value words of a rule: ports, port ranges, numbers, marks, ids, addresses.

Each function takes one word and ``i``, that word's index on the line, and either returns the
value or raises :class:`~meshlab.netfilter.source.Bad` with ``i``, a message and a hint, so
the error can point at the word. They know nothing of options or rules: the option reader
(:mod:`meshlab.netfilter.options`) and the shape plans (:mod:`meshlab.netfilter.shapes`)
decide *which* word is a port or an address and call these to read it.

The two address readers take the common case (dotted IPv4) without :mod:`ipaddress`, which
checks each octet in a loop of its own; anything else goes to ``ipaddress`` as usual.
"""

from __future__ import annotations

from ipaddress import IPv4Address, ip_address, ip_network

from meshlab.netfilter.rules import ALL_ONES
from meshlab.netfilter.source import Bad


def read_port(tok: str, i: int) -> int:
    """A port number 0-65535, in decimal digits only (``--dport 80``)."""
    if tok.isdigit() and tok.isascii():
        port = int(tok)
        if port <= 65535:
            return port
    raise Bad(i, f"bad port {tok!r}", "give a port number from 0 to 65535 (names like "
              "'http' are not read)")


def read_port_range(tok: str, i: int, sep: str = ":") -> tuple[int, int]:
    """``PORT`` or ``LO{sep}HI`` -> (lo, hi); an empty end means 0 or 65535, as in iptables
    (``sep`` is ``:`` for matches, ``-`` for ``--to-ports``/``--to-destination``)."""
    if tok.isdigit() and tok.isascii():  # one port, by far the most common: no range to split
        port = int(tok)
        if port <= 65535:
            return port, port
    lo_s, found, hi_s = tok.partition(sep)
    lo = read_port(lo_s, i) if lo_s else 0
    hi = (read_port(hi_s, i) if hi_s else 65535) if found else lo
    if lo > hi:
        raise Bad(i, f"port range {tok!r} runs backwards", f"write it as {hi}{sep}{lo}")
    return lo, hi


def read_number(tok: str, i: int, what: str, limit: int = ALL_ONES) -> int:
    """A number from 0 to ``limit``, decimal or ``0x`` hex (marks, masks, zones)."""
    try:
        value = int(tok, 0)
    except ValueError:
        value = -1
    if not 0 <= value <= limit:
        raise Bad(i, f"bad {what} {tok!r}", f"give a number from 0 to {limit} (hex like 0x539 "
                  "is fine)")
    return value


def read_value_mask(tok: str, i: int, default_mask: int = ALL_ONES) -> tuple[int, int]:
    """``VALUE[/MASK]`` (``--mark 0x539/0xffff``) -> (value, mask)."""
    value, found, mask = tok.partition("/")
    return read_number(value, i, "mark"), (read_number(mask, i, "mask") if found else default_mask)


def read_id_range(tok: str, i: int, what: str) -> tuple[int, int]:
    """A numeric uid/gid or ``LO-HI`` range (``--uid-owner 1337``) -> (lo, hi)."""
    lo_s, found, hi_s = tok.partition("-")
    if not lo_s.isdigit() or (found and not hi_s.isdigit()):
        raise Bad(i, f"bad {what} {tok!r}", f"give a numeric {what} (names are not looked up "
                  "here), e.g. 1337 or 1000-1999")
    lo = int(lo_s)
    return lo, (int(hi_s) if found else lo)


_OCTET = {str(n): n for n in range(256)}  # "010" is not an octet here, as in iptables
_PLEN = {str(n): n for n in range(129)}
_ADDR_HINT = ("give an IP address or CIDR such as 10.0.0.0/8 or fd00::/64 (host names and "
              "lists are not read; write one rule per address)")


def read_ipv4(text: str) -> IPv4Address | None:
    """A plain dotted IPv4 address, read faster than ``ip_address`` (which checks each octet
    in a loop of its own); None for anything else, which ``ip_address`` then reads (or
    refuses) as usual."""
    octets = text.split(".")
    if len(octets) != 4:
        return None
    try:
        a, b, c, d = (_OCTET[o] for o in octets)
    except KeyError:
        return None
    return IPv4Address((a << 24) | (b << 16) | (c << 8) | d)


def read_address(tok: str, i: int) -> tuple[int, int, int]:
    """``ADDR[/LEN]`` or ``ADDR/NETMASK`` -> (version, masked network int, prefix length)."""
    addr, found, plen_s = tok.partition("/")
    try:
        a, b, c, d = addr.split(".")
        value = (_OCTET[a] << 24) | (_OCTET[b] << 16) | (_OCTET[c] << 8) | _OCTET[d]
        version, bits = 4, 32
    except (ValueError, KeyError):
        try:
            parsed = ip_address(addr)
        except ValueError:
            raise Bad(i, f"bad address {tok!r}", _ADDR_HINT) from None
        version, bits, value = parsed.version, parsed.max_prefixlen, int(parsed)
    if not found:
        plen = bits
    elif plen_s in _PLEN and _PLEN[plen_s] <= bits:
        plen = _PLEN[plen_s]
    else:
        try:
            plen = ip_network(f"0.0.0.0/{plen_s}" if version == 4 else f"::/{plen_s}").prefixlen
        except ValueError:
            raise Bad(i, f"bad address {tok!r}", _ADDR_HINT) from None
    mask = ((1 << bits) - 1) ^ ((1 << (bits - plen)) - 1)
    return version, value & mask, plen
