"""Attributes -> validated, classified, deduplicated indicators (pure, streaming-friendly).

Every value is parsed with :mod:`ipaddress` or strict domain rules before it can reach a rules file; anything
else is counted by reason and dropped. The builder takes attributes one at a time (a fetch can stream pages
through it) and holds only compact state: integers for addresses and networks, plus the newest timestamp of
each, which orders the ``maxIndicators`` cap (newest first).

What happens to a value, in order:

1. type -> direction(s): ``ip-src*`` inbound, ``ip-dst*`` outbound, domains and ``domain|ip`` outbound;
   ``|port`` types are split and matched on the address (the port is validated, not matched);
2. parse: ``::ffff:a.b.c.d`` is unmapped to IPv4; a CIDR with host bits set is normalised to its network;
   a /32 or /128 becomes an address; zone ids, leading zeros and garbage are rejected;
3. CIDRs broader than ``limits.minPrefixV4``/``minPrefixV6`` are rejected (``0.0.0.0/0`` must never reach Falco);
4. non-global addresses (private, loopback, link-local, multicast, reserved, documentation...) are dropped
   unless ``exclusions.keepNonGlobal`` / ``keepDocumentation``; allow-listed values are dropped;
5. on build: the cap, allow-list carving of CIDRs, CIDR collapse (never broader than the minimum prefix),
   and addresses already covered by a listed CIDR of the same direction are dropped.
"""

from __future__ import annotations

import ipaddress
import socket
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from falco_misp.attributes import Attribute
from falco_misp.spec import SUPPORTED_TYPES, Direction, FeedSpec, IPNetwork
from falco_misp.values import ipv4_range_reason, non_global_reason, normalise_domain

# Why a value was dropped. Keys are stable: they appear in status, metrics and the CLI summary.
REJECT_REASONS: Mapping[str, str] = {
    "unsupported_type": "attribute type the feed does not render",
    "direction_disabled": "direction not in falco.directions",
    "invalid_address": "not a valid IP address or CIDR",
    "invalid_port": "port missing or outside 0-65535",
    "invalid_domain": "not a valid domain name",
    "domains_disabled": "domain rules not enabled (falco.domains)",
    "too_broad": "CIDR broader than limits.minPrefixV4/minPrefixV6",
    "private": "private address (RFC 1918, ULA...)",
    "loopback": "loopback address",
    "link_local": "link-local address",
    "multicast": "multicast address",
    "unspecified": "unspecified address",
    "reserved": "reserved address",
    "documentation": "documentation range",
    "non_global": "other non-global address (shared, benchmarking...)",
    "allowlisted": "in exclusions",
    "over_limit": "beyond limits.maxIndicators (oldest dropped)",
    "over_domain_limit": "beyond limits.maxDomains (oldest dropped)",
    "invalid_line": "text list line that is not `value [score]`",
}

_MAX_VALUE_LEN = 300  # longer than any valid domain (253) or address|port: rejected without parsing

# What was changed or merged without losing coverage.
ADJUSTMENTS: Mapping[str, str] = {
    "duplicate": "value already seen",
    "host_bits_cleared": "CIDR with host bits normalised to its network",
    "unmapped_ipv4": "::ffff:a.b.c.d unmapped to a.b.c.d",
    "single_host_network": "/32 or /128 turned into an address",
    "covered_by_network": "address inside a listed CIDR of the same direction",
    "collapsed": "CIDRs merged into fewer entries",
    "carved": "CIDR split around an allow-listed range",
    "expanded_networks": "narrow CIDRs turned into single addresses (limits.expandPrefixV4/V6)",
    "expanded_addresses": "addresses those CIDRs became",
}


@dataclass(frozen=True)
class IndicatorSet:
    """The validated indicators of one feed, sorted and ready to render.

    Addresses and networks are canonical strings (``ipaddress`` formatting), domains lower-case ASCII.
    """

    addresses: Mapping[Direction, tuple[str, ...]]
    """Single addresses per direction, IPv4 then IPv6, in numeric order."""
    networks: Mapping[Direction, tuple[str, ...]]
    """CIDRs per direction, IPv4 then IPv6, in numeric order."""
    domains: tuple[str, ...] = ()
    """Domain names (outbound), sorted."""
    rejected: Mapping[str, int] = field(default_factory=dict)
    """Dropped values by reason (see ``REJECT_REASONS``)."""
    adjusted: Mapping[str, int] = field(default_factory=dict)
    """Values changed or merged without losing coverage (see ``ADJUSTMENTS``)."""

    @property
    def total(self) -> int:
        """Number of emitted entries."""
        return sum(map(len, self.addresses.values())) + sum(map(len, self.networks.values())) + len(self.domains)

    def counts(self) -> dict[str, int]:
        """Emitted entries by ``<direction>_<kind>``, e.g. ``outbound_addresses``; zero counts included."""
        out: dict[str, int] = {}
        for d in Direction:
            out[f"{d.value}_addresses"] = len(self.addresses.get(d, ()))
            out[f"{d.value}_networks"] = len(self.networks.get(d, ()))
        out["outbound_domains"] = len(self.domains)
        return out


_T = TypeVar("_T")
_Key = tuple[Direction, int]  # (direction, IP version)
_Net = tuple[int, int]  # (network address as int, prefix length)


class IndicatorBuilder:
    """Accumulates attributes; :meth:`build` returns the :class:`IndicatorSet`. One builder per sync."""

    def __init__(self, spec: FeedSpec) -> None:
        self._limits = spec.limits
        self._exclusions = spec.exclusions
        self._directions = frozenset(spec.falco.directions)
        self._domains_enabled = spec.falco.domains
        self._excluded_domains = spec.exclusions.domains
        self._min_prefix = {4: spec.limits.min_prefix_v4, 6: spec.limits.min_prefix_v6}
        self._allow = {v: _Intervals([n for n in spec.exclusions.networks if n.version == v]) for v in (4, 6)}
        self._addresses: dict[_Key, dict[int, int]] = {}
        self._networks: dict[_Key, dict[_Net, int]] = {}
        self._domain_ts: dict[str, int] = {}
        self.rejected: Counter[str] = Counter()
        self.adjusted: Counter[str] = Counter()

    def add_all(self, attributes: Iterable[Attribute]) -> IndicatorBuilder:
        """Add every attribute; returns self for chaining."""
        for attr in attributes:
            self.add(attr)
        return self

    def add(self, attr: Attribute) -> None:
        """Classify, validate and record one attribute."""
        directions = SUPPORTED_TYPES.get(attr.type)
        if directions is None:
            self.rejected["unsupported_type"] += 1
            return
        wanted = [d for d in directions if d in self._directions]
        if not wanted:
            self.rejected["direction_disabled"] += 1
            return
        value = attr.value
        if len(value) > _MAX_VALUE_LEN:
            self.rejected["invalid_domain" if attr.type in ("domain", "hostname") else "invalid_address"] += 1
            return
        if attr.type in ("domain", "hostname"):
            self._add_domain(value, attr.timestamp)
        elif attr.type == "domain|ip":
            domain, sep, ip = value.partition("|")
            if not sep:
                self.rejected["invalid_address"] += 1
                return
            self._add_domain(domain, attr.timestamp)
            self._add_ip(ip, wanted, attr.timestamp)
        elif attr.type.endswith("|port"):
            ip, sep, port = value.rpartition("|")
            if not sep or not port.isascii() or not port.isdigit() or int(port) > 65535:
                self.rejected["invalid_port"] += 1
                return
            self._add_ip(ip, wanted, attr.timestamp)
        else:
            self._add_ip(value, wanted, attr.timestamp)

    def _add_domain(self, value: str, ts: int) -> None:
        if not self._domains_enabled:
            self.rejected["domains_disabled"] += 1
            return
        domain = normalise_domain(value)
        if domain is None:
            self.rejected["invalid_domain"] += 1
            return
        if any(domain == ex or domain.endswith("." + ex) for ex in self._excluded_domains):
            self.rejected["allowlisted"] += 1
            return
        self._record(self._domain_ts, domain, ts)

    def _record(self, bucket: dict[_T, int], key: _T, ts: int) -> None:
        """Remember ``key`` with the newest timestamp seen for it; count repeats."""
        old = bucket.get(key)
        if old is None:
            bucket[key] = ts
            return
        self.adjusted["duplicate"] += 1
        if ts > old:
            bucket[key] = ts

    def _add_ip(self, text: str, directions: list[Direction], ts: int) -> None:
        text = text.strip()
        if "/" not in text and ":" not in text:  # fast path: the bulk of every feed is plain IPv4
            try:
                value = int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
            except (OSError, ValueError):  # inet_pton is strict: no leading zeros, no short forms
                self.rejected["invalid_address"] += 1
                return
            self._add_address(4, value, directions, ts)
            return
        parsed = self._parse_ip(text)
        if parsed is None:
            self.rejected["invalid_address"] += 1
            return
        if isinstance(parsed, ipaddress.IPv6Network) and parsed.prefixlen >= 96:
            mapped = parsed.network_address.ipv4_mapped
            if mapped is not None:
                parsed = ipaddress.IPv4Network((int(mapped), parsed.prefixlen - 96))
                self.adjusted["unmapped_ipv4"] += 1
        if isinstance(parsed, ipaddress.IPv4Network | ipaddress.IPv6Network):
            if parsed.prefixlen != parsed.max_prefixlen:
                self._add_network(parsed, directions, ts)
                return
            self.adjusted["single_host_network"] += 1
            parsed = parsed.network_address
        if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
            parsed = parsed.ipv4_mapped
            self.adjusted["unmapped_ipv4"] += 1
        self._add_address(parsed.version, int(parsed), directions, ts)

    def _parse_ip(self, text: str) -> IPNetwork | ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        if "%" in text:  # IPv6 zone ids mean nothing on another host
            return None
        try:
            if "/" not in text:
                return ipaddress.ip_address(text)
            net = ipaddress.ip_network(text, strict=False)
            if int(ipaddress.ip_address(text.partition("/")[0])) != int(net.network_address):
                self.adjusted["host_bits_cleared"] += 1
            return net
        except ValueError:
            return None

    def _drop_reason(self, version: int, first: int, last: int) -> str | None:
        """Why a range may not be emitted: not globally reachable (unless kept), or allow-listed."""
        keep_doc = self._exclusions.keep_documentation
        if version == 4:
            reason = ipv4_range_reason(first, last, keep_doc)
        else:
            reason = non_global_reason(ipaddress.IPv6Address(first), keep_doc) or non_global_reason(
                ipaddress.IPv6Address(last), keep_doc
            )
        # keepNonGlobal keeps private, loopback... addresses; never the unspecified address (not a host at all)
        if reason not in (None, "documentation", "unspecified") and self._exclusions.keep_non_global:
            reason = None
        if reason is None and self._allow[version].covers(first, last):
            reason = "allowlisted"
        return reason

    def _add_address(self, version: int, value: int, directions: list[Direction], ts: int) -> None:
        reason = self._drop_reason(version, value, value)
        if reason is not None:
            self.rejected[reason] += 1
            return
        for d in directions:
            self._record(self._addresses.setdefault((d, version), {}), value, ts)

    def _add_network(self, net: IPNetwork, directions: list[Direction], ts: int) -> None:
        if net.prefixlen < self._min_prefix[net.version]:
            self.rejected["too_broad"] += 1
            return
        first, last = int(net.network_address), int(net.broadcast_address)
        reason = self._drop_reason(net.version, first, last)
        if reason is not None:
            self.rejected[reason] += 1
            return
        key_net = (first, net.prefixlen)
        for d in directions:
            self._record(self._networks.setdefault((d, net.version), {}), key_net, ts)

    def build(self) -> IndicatorSet:
        """Apply the caps, carve, collapse and containment; return the sorted :class:`IndicatorSet`."""
        self._cap_domains()
        self._cap_total()
        addresses: dict[Direction, tuple[str, ...]] = {}
        networks: dict[Direction, tuple[str, ...]] = {}
        expand_budget = self._limits.max_expanded_addresses
        for d in Direction:
            addr_out: list[str] = []
            net_out: list[str] = []
            for version in (4, 6):
                nets = self._final_networks(d, version)
                addrs = self._addresses.get((d, version), {})
                single = [n for n in nets if n.prefixlen == n.max_prefixlen]
                nets = [n for n in nets if n.prefixlen != n.max_prefixlen]
                kept = _not_covered(sorted(set(addrs) | {int(n.network_address) for n in single}), nets)
                self.adjusted["covered_by_network"] += len(addrs) + len(single) - len(kept)
                nets, expanded, expand_budget = self._expand(nets, expand_budget)
                if expanded:
                    kept = sorted(set(kept).union(*expanded))
                addr_out.extend(_format_addresses(kept, version))
                net_out.extend(str(n) for n in nets)
            if addr_out:
                addresses[d] = tuple(addr_out)
            if net_out:
                networks[d] = tuple(net_out)
        return IndicatorSet(
            addresses=addresses,
            networks=networks,
            domains=tuple(sorted(self._domain_ts)),
            rejected=dict(sorted((k, v) for k, v in self.rejected.items() if v)),
            adjusted=dict(sorted((k, v) for k, v in self.adjusted.items() if v)),
        )

    def _expand(self, nets: list[IPNetwork], budget: int) -> tuple[list[IPNetwork], list[range], int]:
        """Turn narrow CIDRs into address ranges (a hash-set lookup in Falco instead of a linear scan).

        The narrowest CIDRs go first, in address order, while the budget lasts. The addresses matched stay
        exactly the same: each expanded CIDR becomes every address it holds.
        """
        if not nets:
            return nets, [], budget
        threshold = self._limits.expand_prefix_v4 if nets[0].version == 4 else self._limits.expand_prefix_v6
        if not threshold:
            return nets, [], budget
        candidates = sorted((n for n in nets if n.prefixlen >= threshold), key=lambda n: (-n.prefixlen, n))
        chosen: set[IPNetwork] = set()
        for net in candidates:
            if net.num_addresses > budget:
                break  # sorted by size: every later CIDR is at least as large
            budget -= net.num_addresses
            chosen.add(net)
        expanded = [range(int(n.network_address), int(n.broadcast_address) + 1) for n in sorted(chosen)]
        if chosen:
            self.adjusted["expanded_networks"] += len(chosen)
            self.adjusted["expanded_addresses"] += sum(len(r) for r in expanded)
        return [n for n in nets if n not in chosen], expanded, budget

    def _cap_domains(self) -> None:
        excess = len(self._domain_ts) - self._limits.max_domains
        if excess > 0:
            newest = sorted(self._domain_ts.items(), key=lambda kv: (-kv[1], kv[0]))
            self._domain_ts = dict(newest[: self._limits.max_domains])
            self.rejected["over_domain_limit"] += excess

    def _cap_total(self) -> None:
        """Keep the ``maxIndicators`` newest entries; ties broken by kind, direction and value (deterministic)."""
        total = len(self._domain_ts) + sum(map(len, self._addresses.values())) + sum(map(len, self._networks.values()))
        excess = total - self._limits.max_indicators
        if excess <= 0:
            return
        order: list[tuple[int, int, str, int, int, int]] = []
        for (d, version), addr_bucket in self._addresses.items():
            order.extend((-ts, 0, d.value, version, a, 0) for a, ts in addr_bucket.items())
        for (d, version), net_bucket in self._networks.items():
            order.extend((-ts, 1, d.value, version, n, p) for (n, p), ts in net_bucket.items())
        domains = sorted(self._domain_ts)
        order.extend((-ts, 2, "", 0, i, 0) for i, (name, ts) in enumerate(sorted(self._domain_ts.items())))
        order.sort()
        del order[: self._limits.max_indicators]
        for _, kind, dvalue, version, key, prefix in order:
            if kind == 0:
                del self._addresses[(Direction(dvalue), version)][key]
            elif kind == 1:
                del self._networks[(Direction(dvalue), version)][(key, prefix)]
            else:
                del self._domain_ts[domains[key]]
        self.rejected["over_limit"] += excess

    def _final_networks(self, direction: Direction, version: int) -> list[IPNetwork]:
        bucket = self._networks.get((direction, version), {})
        if not bucket:
            return []
        cls = ipaddress.IPv4Network if version == 4 else ipaddress.IPv6Network
        nets: list[IPNetwork] = [cls(key) for key in bucket]
        excluded = [ex for ex in self._exclusions.networks if ex.version == version]
        if excluded:
            carved: list[IPNetwork] = []
            for net in nets:
                pieces = [net]
                for ex in excluded:
                    if any(p.overlaps(ex) for p in pieces):
                        self.adjusted["carved"] += 1
                        pieces = [q for p in pieces for q in (_carve(p, ex) if p.overlaps(ex) else [p])]
                carved.extend(pieces)
            nets = carved
        collapsed: list[IPNetwork] = list(ipaddress.collapse_addresses(nets))  # type: ignore[type-var]
        # Merging adjacent CIDRs keeps the same addresses but may build a CIDR broader than the minimum prefix;
        # split those back so no emitted entry is broader than what the feed was allowed to list.
        floor = self._min_prefix[version]
        bounded: list[IPNetwork] = []
        for net in collapsed:
            bounded.extend(net.subnets(new_prefix=floor) if net.prefixlen < floor else (net,))
        if len(bounded) < len(nets):
            self.adjusted["collapsed"] += len(nets) - len(bounded)
        return bounded


def _carve(net: IPNetwork, excluded: IPNetwork) -> list[IPNetwork]:
    if net.subnet_of(excluded):  # type: ignore[arg-type]
        return []
    return list(net.address_exclude(excluded))  # type: ignore[arg-type]


class _Intervals:
    """Sorted, non-overlapping integer ranges of a set of networks: containment by bisection."""

    def __init__(self, nets: Iterable[IPNetwork]) -> None:
        merged = list(ipaddress.collapse_addresses(nets))  # type: ignore[type-var]
        self.starts = [int(n.network_address) for n in merged]
        self.ends = [int(n.broadcast_address) for n in merged]

    def covers(self, first: int, last: int) -> bool:
        """Whether ``first..last`` lies inside one range."""
        i = bisect_right(self.starts, first) - 1
        return i >= 0 and last <= self.ends[i]


def _not_covered(addresses: list[int], nets: list[IPNetwork]) -> list[int]:
    """Addresses (sorted ints) not inside any of the networks."""
    if not nets:
        return addresses
    covered = _Intervals(nets)
    return [a for a in addresses if not covered.covers(a, a)]


def _format_addresses(values: list[int], version: int) -> list[str]:
    if version == 4:
        return [socket.inet_ntoa(v.to_bytes(4, "big")) for v in values]
    return [str(ipaddress.IPv6Address(v)) for v in values]
