"""Correctness of the scale features on small inputs: CIDR collapse/expansion and the guarded network tries keep
exactly the same addresses."""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from falco_misp.errors import SpecError
from falco_misp.feed.model import Direction
from falco_misp.indicators.builder import IndicatorSet
from falco_misp.rendering.shards import render_rules
from helpers import feed, indicators

BASE = int(ipaddress.IPv4Address("11.0.0.0"))  # a public /20 to play in: 4,096 addresses


def matched(ind: IndicatorSet) -> dict[Direction, set[int]]:
    """Every address a Falco rule of this set matches, per direction."""
    out: dict[Direction, set[int]] = {}
    for d in Direction:
        hits = {int(ipaddress.ip_address(a)) for a in ind.addresses.get(d, ())}
        for n in ind.networks.get(d, ()):
            net = ipaddress.ip_network(n)
            hits.update(range(int(net.network_address), int(net.broadcast_address) + 1))
        out[d] = hits
    return out


entries = st.lists(
    st.tuples(
        st.sampled_from(["ip-src", "ip-dst"]),
        st.integers(0, 4095),
        st.integers(20, 32),
    ),
    max_size=40,
)


def _values(raw: list[tuple[str, int, int]]) -> list[tuple[str, str]]:
    return [(t, f"{ipaddress.IPv4Address(BASE + offset)}/{prefix}") for t, offset, prefix in raw]


def _expected(raw: list[tuple[str, int, int]]) -> dict[Direction, set[int]]:
    out: dict[Direction, set[int]] = {d: set() for d in Direction}
    for t, offset, prefix in raw:
        net = ipaddress.ip_network(f"{ipaddress.IPv4Address(BASE + offset)}/{prefix}", strict=False)
        d = Direction.INBOUND if t == "ip-src" else Direction.OUTBOUND
        out[d].update(range(int(net.network_address), int(net.broadcast_address) + 1))
    return out


@settings(max_examples=200, deadline=None)
@given(entries, st.sampled_from([0, 24, 26, 28, 30]), st.integers(0, 3000))
def test_collapse_and_expansion_match_the_same_addresses(raw: list[tuple[str, int, int]], expand: int,
                                                         budget: int) -> None:  # fmt: skip
    f = feed(limits={"minPrefixV4": 20, "expandPrefixV4": expand, "maxExpandedAddresses": budget})
    ind = indicators(_values(raw), f)
    assert matched(ind) == _expected(raw)  # nothing lost, nothing new
    expanded = ind.adjusted.get("expanded_addresses", 0)
    assert expanded <= budget
    if expand:
        assert all(ipaddress.ip_network(n).prefixlen < expand for nets in ind.networks.values() for n in nets) or (
            expanded + 2 ** (32 - expand) > budget
        )
    else:
        assert "expanded_networks" not in ind.adjusted
    for nets in ind.networks.values():  # collapsed: no entry inside or adjacent-mergeable with another
        parsed = [ipaddress.ip_network(n) for n in nets]
        assert list(ipaddress.collapse_addresses(parsed)) == parsed or any(p.prefixlen == 20 for p in parsed)


def test_expansion_narrowest_first_within_budget() -> None:
    f = feed(limits={"expandPrefixV4": 24, "maxExpandedAddresses": 300})
    ind = indicators(["11.0.1.0/24", "11.0.2.0/28", "11.0.3.0/25", "11.0.4.0/30"], f)
    # /30 (4) and /28 (16) fit, then the /25 (128): 148 addresses; the /24 (256) would exceed 300
    assert ind.networks == {Direction.OUTBOUND: ("11.0.1.0/24",)}
    assert len(ind.addresses[Direction.OUTBOUND]) == 148
    assert ind.adjusted["expanded_networks"] == 3 and ind.adjusted["expanded_addresses"] == 148


def test_expansion_bounds_in_spec() -> None:
    with pytest.raises(SpecError, match="expandPrefixV4"):
        feed(limits={"expandPrefixV4": 8})
    with pytest.raises(SpecError, match="expandPrefixV6"):
        feed(limits={"expandPrefixV6": 64})


# ------------------------------------------------ issue 14: guarded network tries match exactly the plain lists
BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))
from falco_cost import Counter, Ruleset, evaluate  # noqa: E402

V4_BASE = int(ipaddress.IPv4Address("11.0.0.0"))  # a public /12 to play in, so networks overlap and probes hit
V6_BASE = int(ipaddress.IPv6Address("2a00::"))

v4_nets = st.tuples(st.integers(0, 2**20 - 1), st.integers(12, 32)).map(
    lambda t: str(ipaddress.IPv4Network((V4_BASE + t[0], t[1]), strict=False))
)
v6_nets = st.tuples(st.integers(0, 2**40 - 1), st.integers(16, 64)).map(
    lambda t: str(ipaddress.IPv6Network((V6_BASE + (t[0] << 80), t[1]), strict=False))
)


def _probes(nets: list[str], extra: list[int]) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    out: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for text in nets:  # both ends of every network and just outside
        n = ipaddress.ip_network(text)
        lo, hi = int(n.network_address), int(n.broadcast_address)
        cls = ipaddress.IPv4Address if n.version == 4 else ipaddress.IPv6Address
        out += [cls(v) for v in (lo - 1, lo, (lo + hi) // 2, hi, hi + 1) if 0 <= v < 2**n.max_prefixlen]
    out += [ipaddress.IPv4Address(V4_BASE + e) for e in extra]
    out += [ipaddress.IPv6Address(V6_BASE + (e << 80)) for e in extra]
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(v4_nets, max_size=400), st.lists(v6_nets, max_size=120), st.lists(st.integers(0, 2**20 - 1),
       max_size=50))  # fmt: skip
def test_guarded_networks_match_exactly_the_listed_networks(v4: list[str], v6: list[str], extra: list[int]) -> None:
    """The rendered rules (tries behind guards, evaluated as Falco does) against ipaddress on the plain list, in
    both directions (outbound fd.snet/fd.sip, inbound fd.cnet/fd.cip); the networks are given uncollapsed, with
    overlaps and duplicates, the way a hand-built IndicatorSet may hold them."""
    nets = tuple(dict.fromkeys(v4 + v6))
    if not nets:
        return
    ind = IndicatorSet(addresses={}, networks={Direction.OUTBOUND: nets, Direction.INBOUND: nets[::-1]})
    bundle = render_rules(feed(name="guards"), ind)
    rs = Ruleset.load(s.content for s in bundle.shards)
    rules = {r.name.split(" ", 1)[1]: r for r in rs.rules}
    out_rule, in_rule = (
        rules["outbound connection to a listed network"],
        rules["inbound connection from a listed network"],
    )
    parsed = [ipaddress.ip_network(n) for n in nets]
    local = ipaddress.IPv4Address("10.0.0.1")
    for probe in _probes(list(nets), extra):
        listed = any(probe in n for n in parsed)
        out_event = {"evt.type": "connect", "evt.dir": "<", "fd.typechar": str(probe.version), "fd.sip": probe,
                     "fd.cip": local}  # fmt: skip
        in_event = {"evt.type": "accept", "evt.dir": "<", "fd.typechar": str(probe.version), "fd.cip": probe,
                    "fd.sip": local}  # fmt: skip
        assert evaluate(out_rule.condition, out_event, Counter()) == listed, probe
        assert evaluate(in_rule.condition, in_event, Counter()) == listed, probe
        # the other end of the connection never matches: outbound looks at the server, inbound at the client
        swapped = {**out_event, "fd.sip": local, "fd.cip": probe}
        assert not evaluate(out_rule.condition, swapped, Counter())


def test_a_large_trie_costs_a_few_dozen_checks() -> None:
    """13,000 networks (the FALCO.md case): an event walks one path, not the list."""
    nets = tuple(str(ipaddress.IPv4Network((V4_BASE + 4096 * i + 256 * (i % 7), 24))) for i in range(13_000))
    bundle = render_rules(feed(name="wide"), IndicatorSet(addresses={}, networks={Direction.OUTBOUND: nets}))
    rs = Ruleset.load(s.content for s in bundle.shards)
    (rule,) = rs.rules
    worst = Counter()
    for probe in _probes(list(nets[::97]), []):
        c = Counter()
        event = {"evt.type": "connect", "evt.dir": "<", "fd.typechar": "4", "fd.sip": probe}
        evaluate(rule.condition, event, c)
        worst = max(worst, c, key=lambda x: x.checks * 40 + x.items * 3)
    assert worst.checks <= 40 and worst.items <= 64 + worst.checks, worst  # a flat list: 13,000 items
