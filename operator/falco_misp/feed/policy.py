"""The administrator's policy: where feeds may write, how much, and which hosts the operator may contact (issue 15).

A feed's author chooses filters; the administrator who installed the operator chooses reach. Anyone who may create a
MispFeed in some namespace could otherwise make the operator write rules into any Falco it can reach (every node's
Falco pays for each indicator on every connection), or GET any URL its pod can reach (in-cluster services, the cloud
metadata endpoint). :class:`Policy` is that administrator's word, read once at start (``falco-misp run --policy
FILE``, rendered by the chart from its values); the checks here are pure and name the rule a feed broke:

- :func:`check_feed`, before anything is fetched: ``FalcoNamespaceNotAllowed``, ``OverCeiling`` (a limit asked above
  the ceiling, e.g. ``limits.maxIndicators`` above ``maxIndicators`` or ``limits.minPrefixV4`` below
  ``minPrefixV4``), ``HostNotAllowed`` (the source URL);
- :func:`check_rendered`, after the render and before any write: ``OverCeiling`` when the rules hold more networks,
  domains or indicators than the ceilings;
- :func:`check_url` for any URL the operator is about to contact (also a MISP server resource's), and
  :func:`address_refused` for each address a host resolves to (the connection guard in
  :mod:`falco_misp.sources.egress` connects only to an address that passed).

:data:`UNRESTRICTED` (every check passes) is what ``falco-misp render`` uses on a laptop; the operator's default is
:class:`Policy()`: any namespace, any host, but never loopback, link-local (cloud metadata) or unspecified addresses.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import ipaddress
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from falco_misp.errors import SpecError
from falco_misp.feed.model import Feed

FALCO_NAMESPACE_NOT_ALLOWED = "FalcoNamespaceNotAllowed"
OVER_CEILING = "OverCeiling"
HOST_NOT_ALLOWED = "HostNotAllowed"
ADDRESS_NOT_ALLOWED = "AddressNotAllowed"
POLICY_REASONS = frozenset({FALCO_NAMESPACE_NOT_ALLOWED, OVER_CEILING, HOST_NOT_ALLOWED, ADDRESS_NOT_ALLOWED})
"""The condition reasons of a feed outside the policy (``Ready=False``: the spec or the policy must change)."""

_ANY = "*"


@dataclass(frozen=True)
class TargetRule:
    """Feeds in these namespaces may write into these Falco namespaces (``targets[]``)."""

    feed_namespaces: tuple[str, ...]
    """Feed namespaces (``*`` any; shell patterns such as ``team-*``)."""
    falco_namespaces: tuple[str, ...]
    """Falco namespaces (``spec.falco.namespace``) they may target (``*`` any)."""


@dataclass(frozen=True)
class Ceilings:
    """The most any one feed may ask for or produce (None: no ceiling)."""

    max_indicators: int | None = None
    """``limits.maxIndicators`` at most this, and at most this many indicators rendered."""
    max_networks: int | None = None
    """At most this many CIDR entries rendered, both directions (each is a linear scan per event in Falco)."""
    max_domains: int | None = None
    """``limits.maxDomains`` at most this, and at most this many domains rendered."""
    min_prefix_v4: int | None = None
    """``limits.minPrefixV4`` at least this (no broader IPv4 CIDR may be emitted)."""
    min_prefix_v6: int | None = None
    """``limits.minPrefixV6`` at least this."""


@dataclass(frozen=True)
class Egress:
    """Where the operator may connect to fetch (source URLs, MISP servers)."""

    allowed_hosts: tuple[str, ...] | None = None
    """Host names or IP literals (``*.example.org``: any subdomain); None: any host (addresses are still checked)."""
    allow_loopback: bool = False
    """Allow loopback and unspecified addresses (127.0.0.0/8, ::1, 0.0.0.0, ::): tests, a MISP in the same pod."""
    allow_link_local: bool = False
    """Allow link-local addresses (169.254.0.0/16, the cloud metadata endpoint, and fe80::/10)."""
    allow_private: bool = True
    """Allow private ranges (RFC 1918, fc00::/7, 100.64.0.0/10): on by default, MISP often runs in the cluster."""


@dataclass(frozen=True)
class Policy:
    """The administrator's policy (``falco-misp run --policy FILE``); the default restricts addresses only."""

    targets: tuple[TargetRule, ...] | None = None
    """Which feed namespaces may write into which Falco namespaces; None: any into any."""
    ceilings: Ceilings = field(default_factory=Ceilings)
    """Per-feed ceilings."""
    egress: Egress = field(default_factory=Egress)
    """Hosts and addresses the operator may contact."""


UNRESTRICTED = Policy(egress=Egress(allow_loopback=True, allow_link_local=True))
"""No rule at all: ``falco-misp render`` on a laptop (reading ``localhost`` is the user's own business)."""


@dataclass(frozen=True)
class Refusal:
    """Why a feed is outside the policy."""

    reason: str
    """The rule, as a condition reason (``FalcoNamespaceNotAllowed``, ``OverCeiling``, ``HostNotAllowed``...)."""
    message: str
    """What was refused and what the administrator allows (never a credential)."""


# ------------------------------------------------------------------------------------------------------ checks
def _matches(value: str, patterns: tuple[str, ...]) -> bool:
    return any(p == _ANY or fnmatch.fnmatchcase(value, p) for p in patterns)


def falco_namespace_refusal(policy: Policy, feed_namespace: str, falco_namespace: str) -> Refusal | None:
    """Whether feeds of ``feed_namespace`` may write into ``falco_namespace``."""
    if policy.targets is None:
        return None
    allowed = [r for r in policy.targets if _matches(feed_namespace, r.feed_namespaces)]
    if any(_matches(falco_namespace, r.falco_namespaces) for r in allowed):
        return None
    may = sorted({ns for r in allowed for ns in r.falco_namespaces})
    said = f"may target only {', '.join(may)}" if may else "may not target any Falco namespace"
    return Refusal(
        FALCO_NAMESPACE_NOT_ALLOWED,
        f"spec.falco.namespace {falco_namespace!r}: the operator's policy does not let feeds of namespace "
        f"{feed_namespace!r} write there (feeds of {feed_namespace!r} {said})",
    )


def _host_allowed(host: str, patterns: tuple[str, ...]) -> bool:
    host = host.lower().rstrip(".")
    for raw in patterns:
        pattern = raw.lower().rstrip(".")
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
        elif host == pattern:
            return True
    return False


def _safe(url: str) -> str:
    """``url`` without user-info (the same redaction as :func:`falco_misp.sources.locations.safe_url`)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()


def check_url(policy: Policy, url: str) -> str | None:
    """Why the operator must not contact ``url`` (a reason and what to do, credential-free), or None when it may.

    Only the host name is judged here (against ``egress.allowedHosts``); a literal IP address is also judged as an
    address (:func:`address_refused`). What a name resolves to is checked at connection time.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    shown = _safe(url)
    if not host:
        return f"{shown}: no host in the URL"
    allowed = policy.egress.allowed_hosts
    if allowed is not None and not _host_allowed(host, allowed):
        return (
            f"{shown}: host {host!r} is not in the operator's egress allow-list "
            f"({', '.join(allowed) if allowed else 'empty'}); ask the administrator to add it"
        )
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        return None
    return address_refused(policy, literal, host)


def address_refused(policy: Policy, address: ipaddress.IPv4Address | ipaddress.IPv6Address, host: str) -> str | None:
    """Why the operator must not connect to ``address`` (which ``host`` resolved to), or None when it may.

    IPv4-mapped IPv6 addresses (``::ffff:127.0.0.1``) are judged as the IPv4 address they carry.
    """
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    egress = policy.egress
    kind = None
    if address.is_loopback or address.is_unspecified:
        kind = None if egress.allow_loopback else "a loopback or unspecified address"
    elif address.is_link_local:
        kind = None if egress.allow_link_local else "a link-local address (cloud metadata lives there)"
    elif address.is_multicast:
        kind = "a multicast address"
    elif address.is_private and not address.is_global:
        kind = None if egress.allow_private else "a private address"
    if kind is None:
        return None
    return f"{host} resolves to {address}, {kind}, which the operator's egress policy refuses"


def source_urls(feed: Feed) -> tuple[tuple[str, str], ...]:
    """Every URL a sync of ``feed`` contacts, with the spec field naming it."""
    source = feed.spec.source
    out: list[tuple[str, str]] = []
    if source.misp is not None and source.misp.url:  # empty: a serverRef not resolved yet (checked once it is)
        out.append(("spec.source.misp.url", source.misp.url))
        if source.misp.zmq is not None:
            out.append(("spec.source.misp.zmq.url", source.misp.zmq.url))
    for kind, loc in (("mispFeed", source.misp_feed), ("file", source.file)):
        if loc is not None:
            out.append((f"spec.source.{kind}.url", loc.url))
    if source.text is not None:
        out.append(("spec.source.text.url", source.text.location.url))
    return tuple(out)


def _over(field_path: str, asked: int, ceiling: int, what: str) -> Refusal:
    return Refusal(
        OVER_CEILING,
        f"{field_path} is {asked}: the operator's policy allows {what} {ceiling} per feed; lower it (or ask the "
        "administrator)",
    )


def within_ceilings(policy: Policy, feed: Feed, set_limits: Collection[str]) -> Feed:
    """``feed`` with the limits its spec left unset (``set_limits``: the keys of ``spec.limits``) tightened to the
    ceilings, so only a feed that explicitly asks for more is refused by :func:`check_feed`."""
    limits, ceil = feed.spec.limits, policy.ceilings
    tightened: dict[str, int] = {}
    for key, attr, ceiling, pick in (
        ("maxIndicators", "max_indicators", ceil.max_indicators, min),
        ("maxDomains", "max_domains", ceil.max_domains, min),
        ("minPrefixV4", "min_prefix_v4", ceil.min_prefix_v4, max),
        ("minPrefixV6", "min_prefix_v6", ceil.min_prefix_v6, max),
    ):
        if ceiling is not None and key not in set_limits:
            tightened[attr] = pick(getattr(limits, attr), ceiling)
    if not tightened:
        return feed
    spec = dataclasses.replace(feed.spec, limits=dataclasses.replace(limits, **tightened))
    return dataclasses.replace(feed, spec=spec)


def check_feed(policy: Policy, feed: Feed) -> Refusal | None:
    """Whether ``feed`` may be synced at all: its Falco namespace, its limits against the ceilings, its source
    hosts. Checked before anything is fetched or written."""
    refused = falco_namespace_refusal(policy, feed.namespace, feed.spec.falco.namespace)
    if refused is not None:
        return refused
    limits, ceil = feed.spec.limits, policy.ceilings
    if ceil.max_indicators is not None and limits.max_indicators > ceil.max_indicators:
        return _over("spec.limits.maxIndicators", limits.max_indicators, ceil.max_indicators, "at most")
    if ceil.max_domains is not None and feed.spec.falco.domains and limits.max_domains > ceil.max_domains:
        return _over("spec.limits.maxDomains", limits.max_domains, ceil.max_domains, "at most")
    if ceil.min_prefix_v4 is not None and limits.min_prefix_v4 < ceil.min_prefix_v4:
        return _over("spec.limits.minPrefixV4", limits.min_prefix_v4, ceil.min_prefix_v4, "prefixes of at least /")
    if ceil.min_prefix_v6 is not None and limits.min_prefix_v6 < ceil.min_prefix_v6:
        return _over("spec.limits.minPrefixV6", limits.min_prefix_v6, ceil.min_prefix_v6, "prefixes of at least /")
    for field_path, url in source_urls(feed):
        why = check_url(policy, url)
        if why is not None:
            reason = HOST_NOT_ALLOWED if "allow-list" in why else ADDRESS_NOT_ALLOWED
            return Refusal(reason, f"{field_path}: {why}")
    return None


def check_rendered(policy: Policy, counts: Mapping[str, int], total: int) -> Refusal | None:
    """Whether rendered rules (``IndicatorSet.counts()`` and the total) fit the ceilings; checked before any write."""
    ceil = policy.ceilings
    networks = sum(n for kind, n in counts.items() if kind.endswith("_networks"))
    domains = sum(n for kind, n in counts.items() if kind.endswith("_domains"))
    for what, have, ceiling in (
        ("indicators", total, ceil.max_indicators),
        ("networks (CIDR entries)", networks, ceil.max_networks),
        ("domains", domains, ceil.max_domains),
    ):
        if ceiling is not None and have > ceiling:
            return Refusal(
                OVER_CEILING,
                f"the rendered rules hold {have} {what}: the operator's policy allows at most {ceiling} per feed "
                "(narrow the filters, or raise limits.minPrefixV4/V6 and exclusions); nothing was written",
            )
    return None


# ------------------------------------------------------------------------------------------------------ parsing
_TOP = {"targets", "ceilings", "egress"}
_CEILINGS = {
    "maxIndicators": ("max_indicators", 1, 10_000_000),
    "maxNetworks": ("max_networks", 0, 10_000_000),
    "maxDomains": ("max_domains", 0, 1_000),
    "minPrefixV4": ("min_prefix_v4", 0, 32),
    "minPrefixV6": ("min_prefix_v6", 0, 128),
}
_EGRESS_FLAGS = {
    "allowLoopback": "allow_loopback",
    "allowLinkLocal": "allow_link_local",
    "allowPrivate": "allow_private",
}


def _mapping(value: object, where: str, known: set[str]) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(where, f"must be a mapping, got {value!r}")
    unknown = sorted(set(map(str, value)) - known)
    if unknown:
        raise SpecError(
            f"{where}.{unknown[0]}" if where else unknown[0], f"unknown field (known: {', '.join(sorted(known))})"
        )
    return value


def _names(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise SpecError(where, f"must be a non-empty list of names, got {value!r}")
    return tuple(value)


def parse_policy(doc: object) -> Policy:
    """A :class:`Policy` from its document (the chart's ``policy`` values as YAML/JSON); raises SpecError."""
    top = _mapping(doc, "", _TOP)
    targets: tuple[TargetRule, ...] | None = None
    if top.get("targets") is not None:
        raw = top["targets"]
        if not isinstance(raw, list):
            raise SpecError("targets", f"must be a list, got {raw!r}")
        rules = []
        for i, item in enumerate(raw):
            r = _mapping(item, f"targets[{i}]", {"feedNamespaces", "falcoNamespaces"})
            rules.append(
                TargetRule(
                    feed_namespaces=_names(r.get("feedNamespaces"), f"targets[{i}].feedNamespaces"),
                    falco_namespaces=_names(r.get("falcoNamespaces"), f"targets[{i}].falcoNamespaces"),
                )
            )
        targets = tuple(rules)
    ceil_doc = _mapping(top.get("ceilings"), "ceilings", set(_CEILINGS))
    ceilings: dict[str, int | None] = {}
    for key, (attr, low, high) in _CEILINGS.items():
        value = ceil_doc.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise SpecError(f"ceilings.{key}", f"must be an integer from {low} to {high}, got {value!r}")
        ceilings[attr] = value
    egress_doc = _mapping(top.get("egress"), "egress", {"allowedHosts", *_EGRESS_FLAGS})
    hosts: tuple[str, ...] | None = None
    if egress_doc.get("allowedHosts") is not None:
        raw_hosts = egress_doc["allowedHosts"]
        if not isinstance(raw_hosts, list) or not all(isinstance(h, str) and _host_pattern(h) for h in raw_hosts):
            raise SpecError(
                "egress.allowedHosts",
                f"must be a list of host names, IP literals or *.domain patterns, got {raw_hosts!r}",
            )
        hosts = tuple(h.lower() for h in raw_hosts)
    flags: dict[str, bool] = {}
    for key, attr in _EGRESS_FLAGS.items():
        if egress_doc.get(key) is not None:
            if not isinstance(egress_doc[key], bool):
                raise SpecError(f"egress.{key}", f"must be true or false, got {egress_doc[key]!r}")
            flags[attr] = egress_doc[key]
    return Policy(targets=targets, ceilings=Ceilings(**ceilings), egress=Egress(allowed_hosts=hosts, **flags))


def _host_pattern(value: str) -> bool:
    name = value[2:] if value.startswith("*.") else value
    return bool(name) and (_is_ip(name) or not any(c in name for c in "/@:*?[] \t"))


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True
