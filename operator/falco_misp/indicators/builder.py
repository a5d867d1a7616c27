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
4. non-global addresses (private, loopback, link-local, multicast, reserved, documentation...: the IANA
   special-purpose blocks in values.py) are dropped unless ``exclusions.keepNonGlobal`` / ``keepDocumentation``;
   allow-listed values are dropped; a CIDR is dropped (with the reason) only when nothing of it is left;
5. on build: the cap, carving of CIDRs (the non-global blocks and allow-listed ranges inside a CIDR are cut
   out, the rest is kept as narrower CIDRs and each cut is counted as ``carved_<reason>`` or ``carved``), CIDR
   collapse (never broader than the minimum prefix), and addresses already covered by a listed CIDR of the
   same direction are dropped.
"""

from __future__ import annotations

import ipaddress
import socket
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from falco_misp.feed.model import SUPPORTED_TYPES, Direction, FeedSpec, IPNetwork
from falco_misp.sources.attributes import Attribute
from falco_misp.values import (
    ipv4_range_reason,
    normalise_domain,
    parse_ip,
    parse_ipv4,
    range_reason,
    special_ranges,
    split_port,
)

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

# The reasons an address is not globally reachable (values.py's tables), in REJECT_REASONS' order.
SCOPE_REASONS = (
    "private",
    "loopback",
    "link_local",
    "multicast",
    "unspecified",
    "reserved",
    "documentation",
    "non_global",
)

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
    **{
        f"carved_{r}": f"CIDR split around a non-global range, the rest kept: {REJECT_REASONS[r]}"
        for r in SCOPE_REASONS
    },
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
        # the non-global reasons that drop a value (keepNonGlobal keeps private, loopback... addresses, never the
        # unspecified address: not a host at all; keepDocumentation keeps the documentation ranges)
        keep_doc, keep_other = spec.exclusions.keep_documentation, spec.exclusions.keep_non_global
        self._dropped_scopes = frozenset(
            r for r in SCOPE_REASONS if not (keep_doc if r == "documentation" else keep_other and r != "unspecified")
        )
        self._addresses: dict[_Key, dict[int, int]] = {}
        self._networks: dict[_Key, dict[_Net, int]] = {}
        self._domain_ts: dict[str, int] = {}
        self._built: tuple[Counter[str], Counter[str]] | None = None  # the counts after adding, before any build
        self._cap = 0  # the cap of the last build
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
            address = split_port(value)
            if address is None:
                self.rejected["invalid_port"] += 1
                return
            self._add_ip(address, wanted, attr.timestamp)
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
        if "/" not in text and ":" not in text:  # the bulk of every feed: parse_ip's own IPv4 path, inlined
            value = parse_ipv4(text)
            if value is None:
                self.rejected["invalid_address"] += 1
            else:
                self._add_address(4, value, directions, ts)
            return
        parsed = parse_ip(text)
        if parsed is None:
            self.rejected["invalid_address"] += 1
            return
        version, value, prefix, adjustments = parsed
        for note in adjustments:
            self.adjusted[note] += 1
        if prefix == (32 if version == 4 else 128):
            self._add_address(version, value, directions, ts)
        else:
            self._add_network(version, value, prefix, directions, ts)

    def _add_address(self, version: int, value: int, directions: list[Direction], ts: int) -> None:
        keep_doc = self._exclusions.keep_documentation
        if version == 4:  # the hot path: one bisect
            reason = ipv4_range_reason(value, value, keep_doc)
        else:
            reason = range_reason(version, value, value, keep_doc)
        if reason is not None and reason not in self._dropped_scopes:
            reason = None
        if reason is None and self._allow[version].covers(value, value):
            reason = "allowlisted"
        if reason is not None:
            self.rejected[reason] += 1
            return
        for d in directions:
            self._record(self._addresses.setdefault((d, version), {}), value, ts)

    def _holes(self, version: int, first: int, last: int) -> list[tuple[int, int, str]]:
        """The parts of ``first..last`` that may not be emitted, with why, in address order (may overlap)."""
        holes = [h for h in special_ranges(version, first, last) if h[2] in self._dropped_scopes]
        allowed = self._allow[version].overlapping(first, last)
        if allowed:
            holes = sorted([*holes, *((lo, hi, "allowlisted") for lo, hi in allowed)])
        return holes

    def _add_network(self, version: int, first: int, prefix: int, directions: list[Direction], ts: int) -> None:
        if prefix < self._min_prefix[version]:
            self.rejected["too_broad"] += 1
            return
        last = first + (1 << ((32 if version == 4 else 128) - prefix)) - 1
        holes = self._holes(version, first, last)
        if holes and not _gaps(first, last, holes):  # nothing of it may be emitted: dropped with the main reason
            size: Counter[str] = Counter()
            for lo, hi, reason in holes:
                size[reason] += hi - lo + 1
            self.rejected[size.most_common(1)[0][0]] += 1
            return
        for d in directions:
            self._record(self._networks.setdefault((d, version), {}), (first, prefix), ts)

    def build(self, max_indicators: int | None = None) -> IndicatorSet:
        """Apply the caps, carve, collapse and containment; return the sorted :class:`IndicatorSet`.

        ``max_indicators``: a tighter cap than ``limits.maxIndicators`` (what fits in ``falco.maxShards``:
        :func:`~falco_misp.rendering.shards.render_within_capacity`). Build may be called again with a lower cap;
        the counts describe the last build, and entries left out for capacity are not counted as ``over_limit``.
        """
        if self._built is None:  # the first build: the spec's caps, counted as rejected
            self._cap_domains()
            self._cap_total(self._limits.max_indicators, "over_limit")
            self._built = (Counter(self.rejected), Counter(self.adjusted))
            self._cap = self._limits.max_indicators
        elif max_indicators is None or max_indicators > self._cap:
            raise ValueError("a second build needs a lower cap than the one before")  # entries were dropped
        self.rejected, self.adjusted = Counter(self._built[0]), Counter(self._built[1])
        if max_indicators is not None:  # capacity: RulesBundle.capped counts what this leaves out
            self._cap = min(max_indicators, self._cap)
            self._cap_total(self._cap, None)
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

    def _cap_total(self, cap: int, reason: str | None) -> None:
        """Keep the ``cap`` newest entries, the dropped ones counted under ``reason``; ties broken by kind,
        direction and value (deterministic)."""
        total = len(self._domain_ts) + sum(map(len, self._addresses.values())) + sum(map(len, self._networks.values()))
        excess = total - cap
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
        del order[:cap]
        for _, kind, dvalue, version, key, prefix in order:
            if kind == 0:
                del self._addresses[(Direction(dvalue), version)][key]
            elif kind == 1:
                del self._networks[(Direction(dvalue), version)][(key, prefix)]
            else:
                del self._domain_ts[domains[key]]
        if reason is not None:
            self.rejected[reason] += excess

    def _final_networks(self, direction: Direction, version: int) -> list[IPNetwork]:
        bucket = self._networks.get((direction, version), {})
        if not bucket:
            return []
        cls = ipaddress.IPv4Network if version == 4 else ipaddress.IPv6Network
        bits = 32 if version == 4 else 128
        ranges: list[tuple[int, int]] = []  # each network (or carved piece) as first..last
        for first, prefix in bucket:
            last = first + (1 << (bits - prefix)) - 1
            holes = self._holes(version, first, last)
            if not holes:
                ranges.append((first, last))
                continue
            for _, _, reason in holes:  # each range cut out, by why
                self.adjusted["carved" if reason == "allowlisted" else f"carved_{reason}"] += 1
            ranges.extend(
                (lo, lo + (1 << (bits - p)) - 1) for a, b in _gaps(first, last, holes) for lo, p in _cidrs(a, b, bits)
            )
        # Collapse as ipaddress.collapse_addresses does, in integers: the union of the ranges, then the fewest CIDRs
        # covering each part exactly. Merging adjacent CIDRs keeps the same addresses but may build a CIDR broader
        # than the minimum prefix; split those back so no emitted entry is broader than the feed may list.
        floor = self._min_prefix[version]
        bounded: list[IPNetwork] = []
        for lo, hi in _union(ranges):
            for net, prefix in _cidrs(lo, hi, bits):
                if prefix >= floor:
                    bounded.append(cls((net, prefix)))
                else:
                    step = 1 << (bits - floor)
                    bounded.extend(cls((sub, floor)) for sub in range(net, net + (1 << (bits - prefix)), step))
        if len(bounded) < len(ranges):
            self.adjusted["collapsed"] += len(ranges) - len(bounded)
        return bounded


def _gaps(first: int, last: int, holes: list[tuple[int, int, str]]) -> list[tuple[int, int]]:
    """The parts of ``first..last`` outside every hole (holes sorted by start, inside ``first..last``)."""
    out: list[tuple[int, int]] = []
    at = first
    for lo, hi, _ in holes:
        if lo > at:
            out.append((at, lo - 1))
        at = max(at, hi + 1)
    if at <= last:
        out.append((at, last))
    return out


def _union(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The union of integer ranges ``first..last`` as sorted, disjoint, non-adjacent ranges."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


def _cidrs(lo: int, hi: int, bits: int) -> Iterator[tuple[int, int]]:
    """The fewest CIDRs ``(network, prefix)`` covering exactly ``lo..hi`` (ipaddress.summarize_address_range)."""
    while lo <= hi:
        size = min(bits if lo == 0 else (lo & -lo).bit_length() - 1, (hi - lo + 1).bit_length() - 1)
        yield lo, bits - size
        lo += 1 << size


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

    def overlapping(self, first: int, last: int) -> list[tuple[int, int]]:
        """The parts of the ranges inside ``first..last``, in order."""
        i = bisect_right(self.starts, last) - 1
        out: list[tuple[int, int]] = []
        while i >= 0 and self.ends[i] >= first:
            out.append((max(self.starts[i], first), min(self.ends[i], last)))
            i -= 1
        out.reverse()
        return out


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
