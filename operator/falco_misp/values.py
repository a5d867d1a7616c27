"""Validation primitives for single values: domain names and address scopes (pure).

Shared by the spec parser (allow-lists the user writes) and the indicator builder (values a feed sends), so
both apply exactly the same rules.
"""

from __future__ import annotations

import ipaddress
import re
from bisect import bisect_right
from itertools import pairwise

import idna

DOCUMENTATION_NETWORKS: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
    ipaddress.ip_network("192.0.2.0/24"),
    ipaddress.ip_network("198.51.100.0/24"),
    ipaddress.ip_network("203.0.113.0/24"),
    ipaddress.ip_network("2001:db8::/32"),
    ipaddress.ip_network("3fff::/20"),
)

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


# IANA IPv4 Special-Purpose Address Registry, the blocks that are not globally reachable (explicit here rather
# than ipaddress's is_private/is_global, whose IPv4 tables changed between Python patch releases and which are
# too slow for a million values: this is one bisect per address).
_IPV4_SPECIAL: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/32", "unspecified"),
    ("0.0.0.0/8", "reserved"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "non_global"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link_local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "reserved"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "reserved"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "non_global"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
)


def _ranges() -> tuple[list[int], list[int], list[str]]:
    """Non-overlapping (start, end, reason) intervals; a more specific block wins over the one containing it."""
    bounds: set[int] = {0, 2**32}
    nets = [(ipaddress.IPv4Network(n), r) for n, r in _IPV4_SPECIAL]
    for net, _ in nets:
        bounds |= {int(net.network_address), int(net.broadcast_address) + 1}
    points = sorted(bounds)
    starts, ends, reasons = [], [], []
    for lo, hi in pairwise(points):
        inside = ipaddress.IPv4Address(lo)
        covering = [(n.prefixlen, r) for n, r in nets if n.network_address <= inside <= n.broadcast_address]
        if covering:
            starts.append(lo)
            ends.append(hi - 1)
            reasons.append(max(covering)[1])
    return starts, ends, reasons


_V4_STARTS, _V4_ENDS, _V4_REASONS = _ranges()


def ipv4_range_reason(first: int, last: int, keep_documentation: bool) -> str | None:
    """Why any address in ``first..last`` (IPv4 ints) is not globally reachable, or ``None``."""
    i = bisect_right(_V4_STARTS, last) - 1
    while i >= 0 and _V4_ENDS[i] >= first:
        reason = _V4_REASONS[i]
        if not (keep_documentation and reason == "documentation"):
            return reason
        i -= 1
    return None


def non_global_reason(addr: ipaddress.IPv4Address | ipaddress.IPv6Address, keep_documentation: bool) -> str | None:
    """Why an address is not a public internet address, or ``None`` when it is."""
    if isinstance(addr, ipaddress.IPv4Address):
        return ipv4_range_reason(int(addr), int(addr), keep_documentation)
    if any(addr in net for net in DOCUMENTATION_NETWORKS if net.version == 6):
        return None if keep_documentation else "documentation"
    if addr.is_unspecified:
        return "unspecified"
    if addr.is_loopback:
        return "loopback"
    if addr.is_link_local:
        return "link_local"
    if addr.is_multicast:
        return "multicast"
    if addr.is_reserved:
        return "reserved"
    if addr.is_private:
        return "private"
    if not addr.is_global:
        return "non_global"
    return None
