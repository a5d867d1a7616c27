"""Correctness of the scale features on small inputs: CIDR collapse/expansion keep exactly the same addresses."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from falco_misp.errors import SpecError
from falco_misp.feed.model import Direction
from falco_misp.indicators.builder import IndicatorSet
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
