"""Reading single value words of a rule: ports, port ranges, numbers, marks, ids, addresses.

Each function takes one word and ``i``, that word's index on the line, and either returns the
value or raises :class:`~meshlab.netfilter.source.Bad` with ``i``, a message and a hint, so
the error can point at the word. They know nothing of options or rules: the option reader
(:mod:`meshlab.netfilter.options`) decides *which* word is a port or an address and calls
these to read it.

Addresses are read the way iptables reads them, not the way :mod:`ipaddress` does: each part
of a dotted IPv4 address and a prefix length are numbers as C reads them (``010`` is octal 8),
and IPv6 goes through ``inet_pton``; the usual spelling is read first, without any of that.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from socket import AF_INET, AF_INET6, inet_pton

from meshlab.netfilter.packet import IPAddress
from meshlab.netfilter.rules import ALL_ONES
from meshlab.netfilter.source import Bad


def read_port(tok: str, i: int, base: int = 0) -> int:
    """A port number 0-65535 (``--dport 80``), read as iptables reads numbers
    (:func:`c_unsigned`: ``010`` is port 8, ``0x50`` is 80; but ``-m udp`` reads its ports in
    ``base`` 10, where ``010`` is 10)."""
    if tok.isdigit() and tok.isascii() and (tok[0] != "0" or tok == "0"):  # plain decimal
        port = int(tok)
        if port <= 65535:
            return port
    port = c_unsigned(tok, 65535, base)
    if port is not None:
        return port
    if base == 10 and c_unsigned(tok, 0xFFFFFFFF, base) is not None:
        raise Bad(i, f"port {tok} is past 65535: iptables 1.8.9 takes it for -m udp and keeps "
                  "only its last 16 bits; this model refuses it", "give a port from 0 to "
                  "65535", model_limit=True)
    name = tok[:1].isalpha()  # iptables would look a service name up in /etc/services
    raise Bad(i, f"bad port {tok!r}" + (": iptables would look the service name up, which "
                                        "this model does not do" if name else ""),
              "give a port number from 0 to 65535", model_limit=name)


def read_decimal_port(tok: str, i: int) -> int:
    """A port number 0-65535 in decimal (TPROXY's ``--on-port``: iptables reads ``010``
    there as 10, not as octal)."""
    if tok.isdigit() and tok.isascii() and int(tok) <= 65535:
        return int(tok)
    raise Bad(i, f"bad port {tok!r}", "give a port number from 0 to 65535")


def read_port_range(tok: str, i: int, sep: str = ":", base: int = 0) -> tuple[int, int]:
    """``PORT`` or ``LO{sep}HI`` -> (lo, hi); an empty end means 0 or 65535, as in iptables
    (``sep`` is ``:`` for matches, ``-`` for ``--to-ports``/``--to-destination``; ``base``
    as for :func:`read_port`)."""
    if tok.isdigit() and tok.isascii() and tok[0] != "0":  # one port, the most common case
        port = int(tok)
        if port <= 65535:
            return port, port
    lo_s, found, hi_s = tok.partition(sep)
    lo = read_port(lo_s, i, base) if lo_s else 0
    hi = (read_port(hi_s, i, base) if hi_s else 65535) if found else lo
    if lo > hi:  # -m udp takes it (and matches nothing); the others refuse it
        raise Bad(i, f"port range {tok!r} runs backwards", f"write it as {hi}{sep}{lo}",
                  model_limit=base == 10)
    return lo, hi


def read_number(tok: str, i: int, what: str, limit: int = ALL_ONES) -> int:
    """A number from 0 to ``limit`` (marks, masks, zones), read as iptables reads numbers
    (:func:`c_unsigned`: ``0x539`` is hex, ``010`` is octal 8)."""
    value = c_unsigned(tok, limit)
    if value is None:
        raise Bad(i, f"bad {what} {tok!r}", f"give a number from 0 to {limit} (hex like 0x539 "
                  "is fine)")
    return value


def read_value_mask(tok: str, i: int, default_mask: int = ALL_ONES) -> tuple[int, int]:
    """``VALUE[/MASK]`` (``--mark 0x539/0xffff``) -> (value, mask)."""
    value, found, mask = tok.partition("/")
    return read_number(value, i, "mark"), (read_number(mask, i, "mask") if found else default_mask)


MAX_ID = 4294967294
"""The largest uid or gid (2**32 - 2): 2**32 - 1 is the kernel's "no id", which iptables
refuses."""


def read_id_range(tok: str, i: int, what: str) -> tuple[int, int]:
    """A uid/gid or ``LO-HI`` range (``--uid-owner 1337``) -> (lo, hi), each number read as
    iptables reads numbers (:func:`c_unsigned`), at most :data:`MAX_ID`."""
    lo_s, found, hi_s = tok.partition("-")
    lo = c_unsigned(lo_s, MAX_ID)
    hi = c_unsigned(hi_s, MAX_ID) if found else lo
    if lo is None or hi is None:
        name = not found and tok[:1].isalpha()  # iptables would look the name up
        raise Bad(i, f"bad {what} {tok!r}" + (": iptables would look the name up, which this "
                                              "model does not do" if name else ""),
                  f"give a numeric {what} from 0 to {MAX_ID}, e.g. 1337 or 1000-1999",
                  model_limit=name)
    if lo > hi:
        raise Bad(i, f"bad {what} {tok!r}: the range runs backwards", f"write it as {hi}-{lo}")
    return lo, hi


_OCTET = {str(n): n for n in range(256)}  # the usual spelling of each octet, read at once
_PLEN = {str(n): n for n in range(129)}
_MASKS4 = [0xFFFFFFFF ^ ((1 << (32 - n)) - 1) for n in range(33)]  # by prefix length
_ADDR_HINT = ("give an IP address or CIDR such as 10.0.0.0/8 or fd00::/64 (host names and "
              "lists are not read; write one rule per address)")
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_")
_DIGITS = {8: frozenset("01234567"), 10: frozenset("0123456789"),
           16: frozenset("0123456789abcdefABCDEF")}


def c_unsigned(text: str, limit: int, base: int = 0) -> int | None:
    """``text`` read as iptables reads a number (C's ``strtoul``, then a limit): an optional
    sign, then with ``base`` 0 (most options) hex after ``0x``, *octal after a leading 0*, else
    decimal; with ``base`` 10 (``-m udp`` ports) decimal only. The whole word must be read
    and the value be at most ``limit``. None if it is not such a number."""
    body = text[1:] if text[:1] in ("+", "-") else text
    if base == 10:
        digits = body
    elif body[:2] in ("0x", "0X") and len(body) > 2:
        digits, base = body[2:], 16
    elif body[:1] == "0" and len(body) > 1:
        digits, base = body[1:], 8
    else:
        digits, base = body, 10
    if not digits or not _DIGITS[base].issuperset(digits):
        return None
    value = int(digits, base)
    if text[:1] == "-" and value:  # strtoul turns -N into a huge number: past any limit
        return None
    return value if value <= limit else None


def ipv4_number(text: str) -> int | None:
    """A dotted IPv4 address as iptables reads it (``xtables_numeric_to_ipaddr``): exactly four
    numbers between dots, each read by :func:`c_unsigned` (so ``010.0.0.1`` is 8.0.0.1 and
    ``0x0a.0.0.1`` is 10.0.0.1), at most 255, from the first 19 characters. None for anything
    else (a host name, ``10.1``), which iptables would go on to look up by name."""
    try:  # the usual spelling, at once
        a, b, c, d = text.split(".")
        return (_OCTET[a] << 24) | (_OCTET[b] << 16) | (_OCTET[c] << 8) | _OCTET[d]
    except (ValueError, KeyError):
        pass
    octets = text[:19].split(".", 3)
    if len(octets) != 4:
        return None
    value = 0
    for octet in octets:
        number = c_unsigned(octet, 255)
        if number is None:
            return None
        value = (value << 8) | number
    return value


def read_ip(text: str, *, strict: bool = False) -> IPAddress | None:
    """One address of a target (TPROXY's ``--on-ip``; ``strict`` for DNAT's
    ``--to-destination``), or None: IPv6 through ``inet_pton``; IPv4 as iptables reads
    addresses (:func:`ipv4_number`) or, ``strict``, as ``inet_pton`` does (decimal only)."""
    if ":" in text:
        value = ipv6_number(text)
        return None if value is None else IPv6Address(value)
    if not strict:
        value = ipv4_number(text)
        return None if value is None else IPv4Address(value)
    try:
        return IPv4Address(inet_pton(AF_INET, text))
    except (OSError, ValueError):
        return None


def ipv6_number(text: str) -> int | None:
    """An IPv6 address as iptables reads it (``inet_pton``: no ``%scope``), or None."""
    try:
        return int.from_bytes(inet_pton(AF_INET6, text), "big")
    except (OSError, ValueError):
        return None


def _prefix(mask: int, bits: int) -> int | None:
    """The prefix length of a netmask, or None if its ones are not contiguous."""
    plen = bits - ((mask ^ ((1 << bits) - 1)).bit_length())
    return plen if mask == ((1 << bits) - 1) ^ ((1 << (bits - plen)) - 1) else None


def read_address(tok: str, i: int) -> tuple[int, int, int]:
    """``ADDR[/LEN]`` or ``ADDR/NETMASK`` -> (version, masked network int, prefix length),
    read as iptables reads them (``xtables_ipparse_any`` and its IPv6 twin): the length may be
    written as C reads a number (``/010`` is /8, ``/0x18`` is /24), the mask as an address;
    with a mask of 0 the address is not even read (``any/0`` is everything). The family is
    the address's: IPv6 if it has a colon."""
    addr, found, mask_s = tok.partition("/")
    try:  # the usual spellings, at once
        a, b, c, d = addr.split(".")
        value = (_OCTET[a] << 24) | (_OCTET[b] << 16) | (_OCTET[c] << 8) | _OCTET[d]
        plen = _PLEN[mask_s] if found else 32
        if plen <= 32:
            return 4, value & _MASKS4[plen], plen
    except (ValueError, KeyError):
        pass
    version, bits = (6, 128) if ":" in addr or ":" in mask_s else (4, 32)
    plen = bits if not found else _read_mask(mask_s, version, bits, i, tok)
    if plen == 0:
        return version, 0, 0
    value = ipv4_number(addr) if version == 4 else ipv6_number(addr)
    if value is None:
        if "," in addr:  # iptables makes one rule per address of a list
            raise Bad(i, f"{addr!r} is a list: iptables makes one rule per address, this "
                      "model reads one address per rule", "write one rule per address",
                      model_limit=True)
        if addr and _NAME_CHARS.issuperset(addr):  # iptables would ask the resolver
            raise Bad(i, f"{addr!r} is not a numeric address: iptables would look it up as "
                      "a host or network name, which this model does not do", "write the "
                      "address in numbers, e.g. 10.1.0.0 or fd00::1", model_limit=True)
        raise Bad(i, f"bad address {tok!r}", _ADDR_HINT)
    return version, value & (((1 << bits) - 1) ^ ((1 << (bits - plen)) - 1)), plen


def _read_mask(text: str, version: int, bits: int, i: int, tok: str) -> int:
    """The prefix length written after the ``/`` of ``tok``: a number or a netmask."""
    mask = (ipv4_number(text) if text.count(".") == 3 else None) if version == 4 else (
        ipv6_number(text) if ":" in text else None)
    if mask is None:
        plen = c_unsigned(text, bits)
        if plen is None:
            raise Bad(i, f"bad address {tok!r}: invalid mask {text!r}",
                      f"give a prefix length from 0 to {bits}, e.g. /24")
        return plen
    plen = _prefix(mask, bits)
    if plen is None:
        raise Bad(i, f"the netmask {text!r} is not contiguous: iptables takes it, but this "
                  "model only reads masks made of one run of ones", "write a prefix length "
                  "(/N), or one rule per network", model_limit=True)
    return plen
