"""The fast paths of the pure core answer exactly as ``ipaddress`` does: the one IP reader and the CIDR collapse.

``parse_ip`` reads the common shapes (an IPv4 CIDR, a plain IPv6 address or CIDR) without ``ipaddress``, which is
4-6x slower per value, and leaves every other shape to it (issue 14): these properties hold the two to the same
answer, adjustments included, on well-formed values written every way and on garbage made of the same characters.
"""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from falco_misp.feed.model import Direction
from falco_misp.values import _parse_ipaddress, parse_ip
from helpers import feed, indicators


def _written(address: ipaddress.IPv4Address | ipaddress.IPv6Address, style: int) -> str:
    if isinstance(address, ipaddress.IPv4Address):
        return str(address)
    return [address.compressed, address.exploded, address.compressed.upper()][style]


@settings(max_examples=3000, deadline=None)
@given(
    address=st.ip_addresses(),
    style=st.integers(0, 2),
    prefix=st.one_of(st.none(), st.integers(0, 130).map(str), st.sampled_from(["024", "", "x", "255.255.0.0", "-1"])),
    blank=st.sampled_from(["", " ", "\t"]),
)
def test_well_formed_values_read_as_ipaddress_reads_them(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, style: int, prefix: str | None, blank: str
) -> None:
    text = _written(address, style) + ("" if prefix is None else "/" + prefix)
    if "/" not in text and ":" not in text:
        return  # plain IPv4: its own path, not this one
    assert parse_ip(blank + text + blank) == _parse_ipaddress(text)


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet="0123456789abcdefABCDEF:./", min_size=1, max_size=45))
def test_garbage_reads_as_ipaddress_reads_it(text: str) -> None:
    if "/" not in text and ":" not in text:
        return
    assert parse_ip(text) == _parse_ipaddress(text)


def test_the_fast_path_keeps_the_adjustments() -> None:
    assert parse_ip("45.33.7.9/16") == (4, int(ipaddress.IPv4Address("45.33.0.0")), 16, ("host_bits_cleared",))
    assert parse_ip("45.33.7.9/32") == (4, int(ipaddress.IPv4Address("45.33.7.9")), 32, ("single_host_network",))
    assert parse_ip("2a00::1/128") == (6, int(ipaddress.IPv6Address("2a00::1")), 128, ("single_host_network",))
    assert parse_ip("::ffff:45.33.7.9") == (4, int(ipaddress.IPv4Address("45.33.7.9")), 32, ("unmapped_ipv4",))
    assert parse_ip("2a00::1%eth0") is None and parse_ip("45.33.7.9/33") is None


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 2**12 - 1), st.integers(16, 32)).map(
            lambda t: str(ipaddress.IPv4Network(((0x2D00 << 16) + (t[0] << 8) & ~((1 << (32 - t[1])) - 1), t[1])))
        ),
        min_size=1,
        max_size=60,
    )
)
def test_networks_collapse_as_ipaddress_collapses_them(cidrs: list[str]) -> None:
    """The builder merges CIDRs in integers; ipaddress.collapse_addresses (split back to the minimum prefix, /16)
    gives the same networks, and addresses inside them are dropped."""
    f = feed(exclusions={"keepNonGlobal": True, "keepDocumentation": True})
    built = indicators(cidrs, f)
    reference = [
        sub
        for net in ipaddress.collapse_addresses(ipaddress.IPv4Network(c) for c in cidrs)
        for sub in (net.subnets(new_prefix=16) if net.prefixlen < 16 else (net,))
    ]
    wanted = [str(n) for n in reference if n.prefixlen < 32]
    assert list(built.networks.get(Direction.OUTBOUND, ())) == wanted
    assert list(built.addresses.get(Direction.OUTBOUND, ())) == [str(n.network_address) for n in reference
                                                                   if n.prefixlen == 32]  # fmt: skip
