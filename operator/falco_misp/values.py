"""Validation primitives for single values: domain names and address scopes (pure).

Shared by the spec parser (allow-lists the user writes) and the indicator builder (values a feed sends), so
both apply exactly the same rules.
"""

from __future__ import annotations

import ipaddress
import re

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


def non_global_reason(addr: ipaddress.IPv4Address | ipaddress.IPv6Address, keep_documentation: bool) -> str | None:
    """Why an address is not a public internet address, or ``None`` when it is."""
    if any(addr in net for net in DOCUMENTATION_NETWORKS if net.version == addr.version):
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
