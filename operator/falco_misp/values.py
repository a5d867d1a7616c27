"""Validation primitives for single values: domain names, IP addresses and address scopes (pure).

Shared by the spec parser (allow-lists the user writes), the indicator builder (values a feed sends) and the
alert index and alert matching (values a feed sent, fields Falco writes), so all apply exactly the same rules:
one domain normaliser (:func:`normalise_domain`), one IP reader (:func:`parse_ip`), one scope table.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from bisect import bisect_right
from itertools import pairwise
from typing import NamedTuple

import idna

_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def normalise_domain(value: str) -> str | None:
    """A strictly valid DNS name in lower-case ASCII (IDNA 2008 / UTS 46 for unicode), or ``None``.

    No wildcards, no underscores, at least two labels, labels of 1-63 letters/digits/hyphens not starting
    or ending with a hyphen, at most 253 characters, a top-level label that is not all digits.
    """
    v = value.strip().removesuffix(".")
    if not v or len(v) > 253 or "*" in v:
        return None
    if not v.isascii():
        try:
            v = idna.encode(v, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError, ValueError):
            return None
    v = v.lower()
    labels = v.split(".")
    if len(labels) < 2 or len(v) > 253 or labels[-1].isdigit():
        return None
    if not all(_LABEL.match(label) for label in labels):
        return None
    if any(label.startswith("xn--") for label in labels):
        try:
            idna.decode(v)
        except (idna.IDNAError, UnicodeError, ValueError):
            return None
    return v


# IANA IPv4 and IPv6 Special-Purpose Address Registries (and, for IPv6, the unallocated space of the IPv6 Address
# Space registry): the blocks that are not globally reachable. Explicit here rather than ipaddress's
# is_private/is_global, whose tables changed between Python patch releases and which are too slow for a million
# values: this is one bisect per address. The most specific entry wins; ``None`` marks a globally reachable
# block inside a non-global one (the registries' "Globally Reachable: True" exceptions, as Python 3.13 has them).
_IPV4_SPECIAL: tuple[tuple[str, str | None], ...] = (
    ("0.0.0.0/32", "unspecified"),
    ("0.0.0.0/8", "reserved"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "non_global"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link_local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "reserved"),
    ("192.0.0.9/32", None),  # Port Control Protocol anycast (RFC 7723)
    ("192.0.0.10/32", None),  # TURN anycast (RFC 8155)
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "reserved"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "non_global"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
)
_IPV6_SPECIAL: tuple[tuple[str, str | None], ...] = (
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::/8", "reserved"),  # IPv4-mapped (unmapped before this), IPv4-compatible, NAT64 64:ff9b::/96 and /48
    ("100::/8", "reserved"),  # discard-only 100::/64, dummy prefix 100:0:0:1::/64
    ("200::/7", "reserved"),
    ("400::/6", "reserved"),
    ("800::/5", "reserved"),
    ("1000::/4", "reserved"),
    ("2001::/23", "private"),  # IETF protocol assignments: Teredo, benchmarking, ORCHID...
    ("2001:1::1/128", None),  # PCP anycast (RFC 7723)
    ("2001:1::2/128", None),  # TURN anycast (RFC 8155)
    ("2001:1::3/128", None),  # DNS-SD service registration anycast (RFC 9665)
    ("2001:3::/32", None),  # AMT (RFC 7450)
    ("2001:4:112::/48", None),  # AS112-v6 (RFC 7535)
    ("2001:20::/28", None),  # ORCHIDv2 (RFC 7343)
    ("2001:30::/28", None),  # drone remote ID (RFC 9374)
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"),
    ("4000::/3", "reserved"),  # 4000::/3 to f800::/6: not allocated (5f00::/16 SRv6 SIDs among them)
    ("6000::/3", "reserved"),
    ("8000::/3", "reserved"),
    ("a000::/3", "reserved"),
    ("c000::/3", "reserved"),
    ("e000::/4", "reserved"),
    ("f000::/5", "reserved"),
    ("f800::/6", "reserved"),
    ("fc00::/7", "private"),  # unique local
    ("fe00::/9", "reserved"),
    ("fe80::/10", "link_local"),
    ("fec0::/10", "reserved"),  # deprecated site-local (RFC 3879)
    ("ff00::/8", "multicast"),
)

_Table = tuple[list[int], list[int], list[str]]


def _ranges(table: tuple[tuple[str, str | None], ...]) -> _Table:
    """Sorted, non-overlapping ``(start, end, reason)`` intervals; a more specific block wins over the one
    containing it, and adjacent intervals of the same reason are merged."""
    nets = [(ipaddress.ip_network(n), r) for n, r in table]
    bounds: set[int] = {0, 2 ** nets[0][0].max_prefixlen}
    for net, _ in nets:
        bounds |= {int(net.network_address), int(net.broadcast_address) + 1}
    starts: list[int] = []
    ends: list[int] = []
    reasons: list[str] = []
    for lo, hi in pairwise(sorted(bounds)):
        covering = [(n.prefixlen, r) for n, r in nets if int(n.network_address) <= lo <= int(n.broadcast_address)]
        reason = max(covering, key=lambda c: c[0])[1] if covering else None
        if reason is None:
            continue
        if reasons and reasons[-1] == reason and ends[-1] == lo - 1:
            ends[-1] = hi - 1
        else:
            starts.append(lo)
            ends.append(hi - 1)
            reasons.append(reason)
    return starts, ends, reasons


_TABLES: dict[int, _Table] = {4: _ranges(_IPV4_SPECIAL), 6: _ranges(_IPV6_SPECIAL)}
_V4_STARTS, _V4_ENDS, _V4_REASONS = _TABLES[4]


def ipv4_range_reason(first: int, last: int, keep_documentation: bool) -> str | None:
    """Why any address in ``first..last`` (IPv4 ints) is not globally reachable, or ``None`` (the hot path)."""
    i = bisect_right(_V4_STARTS, last) - 1
    while i >= 0 and _V4_ENDS[i] >= first:
        reason = _V4_REASONS[i]
        if not (keep_documentation and reason == "documentation"):
            return reason
        i -= 1
    return None


def range_reason(version: int, first: int, last: int, keep_documentation: bool) -> str | None:
    """Why any address in ``first..last`` (ints of IP ``version``) is not globally reachable, or ``None``."""
    if version == 4:
        return ipv4_range_reason(first, last, keep_documentation)
    starts, ends, reasons = _TABLES[6]
    i = bisect_right(starts, last) - 1
    while i >= 0 and ends[i] >= first:
        if not (keep_documentation and reasons[i] == "documentation"):
            return reasons[i]
        i -= 1
    return None


def special_ranges(version: int, first: int, last: int) -> list[tuple[int, int, str]]:
    """The non-global parts of ``first..last`` as ``(start, end, reason)``, clipped to it, in address order."""
    starts, ends, reasons = _TABLES[version]
    i = bisect_right(starts, last) - 1
    out: list[tuple[int, int, str]] = []
    while i >= 0 and ends[i] >= first:
        out.append((max(starts[i], first), min(ends[i], last), reasons[i]))
        i -= 1
    out.reverse()
    return out


# ---------------------------------------------------------------------------------------------------- URLs
# scheme://user:password@host -> scheme://***@host (also a bare token before the @)
URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@?#]+@")


def safe_url(url: str) -> str:
    """A URL without the credentials it may carry (``https://user:pw@host/x`` -> ``https://***@host/x``): what may be
    shown in a status, an Event, a log or an error."""
    return URL_CREDENTIALS.sub(r"\1***@", url)


# ------------------------------------------------------------------------------------------------ IP parsing
MAX_IP_TEXT = 64
"""Longer than any address or CIDR written out (``ffff:...:255.255.255.255/128`` is 49 characters)."""


class ParsedIP(NamedTuple):
    """An address or CIDR read by :func:`parse_ip`."""

    version: int
    """4 or 6 (IPv4-mapped IPv6 is IPv4)."""
    value: int
    """The address, or the network address of a CIDR (host bits cleared)."""
    prefix: int
    """Prefix length: 32 or 128 for a single address."""
    adjustments: tuple[str, ...] = ()
    """What reading changed (``host_bits_cleared``, ``unmapped_ipv4``, ``single_host_network``)."""


def parse_ipv4(text: str) -> int | None:
    """A dotted-quad IPv4 address as an int, or ``None`` (strict: no leading zeros, no short forms, no spaces)."""
    try:
        return int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
    except (OSError, ValueError):
        return None


def parse_ip(text: str) -> ParsedIP | None:
    """The one reader of IP values (what feeds send, what Falco writes in alerts), or ``None`` when not one.

    Surrounding blanks are ignored; an IPv4 address is read strictly; ``::ffff:a.b.c.d`` (and a CIDR of
    prefix 96 or longer inside ``::ffff:0:0/96``) becomes IPv4; a CIDR with host bits set becomes its network;
    zone ids (``fe80::1%eth0``) and anything longer than :data:`MAX_IP_TEXT` are refused.
    """
    text = text.strip()
    if "/" not in text and ":" not in text:  # the bulk of every feed: plain IPv4
        value = parse_ipv4(text)
        return None if value is None else ParsedIP(4, value, 32)
    if len(text) > MAX_IP_TEXT or "%" in text:
        return None
    fast = _parse_common(text)
    return fast if fast is not None else _parse_ipaddress(text)


def _parse_common(text: str) -> ParsedIP | None:
    """The common shapes without ``ipaddress`` (~10x faster): an IPv4 CIDR with a decimal prefix, a plain IPv6
    address or CIDR (no embedded dotted quad, no mapped IPv4). ``None``: not one of them (``ipaddress`` decides)."""
    address, slash, length = text.partition("/")
    if slash and not (length.isascii() and length.isdigit() and len(length) <= 3):
        return None
    if ":" not in address:  # an IPv4 CIDR
        value = parse_ipv4(address)
        prefix = int(length) if slash else 32
        if value is None or prefix > 32:
            return None
        network = value & ~((1 << (32 - prefix)) - 1)
        notes = ("host_bits_cleared",) * (network != value) + ("single_host_network",) * (prefix == 32)
        return ParsedIP(4, network, prefix, notes)
    if "." in address:
        return None
    try:
        value = int.from_bytes(socket.inet_pton(socket.AF_INET6, address), "big")
    except (OSError, ValueError):
        return None
    prefix = int(length) if slash else 128
    if prefix > 128 or value >> 32 == 0xFFFF:  # ::ffff:0:0/96 becomes IPv4: ipaddress's path
        return None
    network = value & ~((1 << (128 - prefix)) - 1)
    notes = ("host_bits_cleared",) * (network != value) + ("single_host_network",) * (bool(slash) and prefix == 128)
    return ParsedIP(6, network, prefix, notes)


def _parse_ipaddress(text: str) -> ParsedIP | None:
    """:func:`parse_ip` for any shape, through ``ipaddress`` (the reference the fast path is tested against)."""
    adjustments: list[str] = []
    try:
        if "/" in text:
            net = ipaddress.ip_network(text, strict=False)
            version, value, prefix = net.version, int(net.network_address), net.prefixlen
            if int(ipaddress.ip_address(text.partition("/")[0])) != value:
                adjustments.append("host_bits_cleared")
        else:
            address = ipaddress.ip_address(text)
            version, value, prefix = address.version, int(address), address.max_prefixlen
    except ValueError:
        return None
    if version == 6 and prefix >= 96 and value >> 32 == 0xFFFF:
        version, value, prefix = 4, value & 0xFFFFFFFF, prefix - 96
        adjustments.append("unmapped_ipv4")
    if "/" in text and prefix == (32 if version == 4 else 128):
        adjustments.append("single_host_network")
    return ParsedIP(version, value, prefix, tuple(adjustments))


def split_port(value: str) -> str | None:
    """The address part of ``address|port`` when the port is 0-65535 in ASCII digits, else ``None``."""
    address, sep, port = value.rpartition("|")
    if not sep or not port.isascii() or not port.isdigit() or len(port) > 5 or int(port) > 65535:
        return None
    return address
