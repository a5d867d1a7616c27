"""Indicator validation and classification: one table of values and what becomes of them."""

from __future__ import annotations

import ipaddress

import pytest

from falco_misp.feed.model import Direction
from falco_misp.indicators.builder import IndicatorBuilder
from falco_misp.values import normalise_domain
from helpers import attr, feed, indicators

OUT, IN = Direction.OUTBOUND, Direction.INBOUND
DOMAINS = feed(filters={"types": ["ip-dst", "domain", "hostname", "domain|ip"]}, falco={"domains": True})

# (type, value) -> where it lands: ("address"|"network", direction, canonical) or ("domain", canonical)
# or ("rejected", reason).
CASES: list[tuple[str, str, tuple[str, ...]]] = [
    ("ip-dst", "8.8.4.4", ("address", "outbound", "8.8.4.4")),
    ("ip-src", "8.8.4.4", ("address", "inbound", "8.8.4.4")),
    ("ip-dst|port", "8.8.4.4|443", ("address", "outbound", "8.8.4.4")),
    ("ip-src|port", "2a00:1450::1|22", ("address", "inbound", "2a00:1450::1")),
    ("ip-dst", " 8.8.4.4 ", ("address", "outbound", "8.8.4.4")),
    ("ip-dst", "2A00:1450:4001::1", ("address", "outbound", "2a00:1450:4001::1")),
    ("ip-dst", "::ffff:8.8.4.4", ("address", "outbound", "8.8.4.4")),
    ("ip-dst", "::ffff:1.2.3.0/120", ("network", "outbound", "1.2.3.0/24")),
    ("ip-dst", "1.2.3.4/24", ("network", "outbound", "1.2.3.0/24")),
    ("ip-dst", "8.8.4.4/32", ("address", "outbound", "8.8.4.4")),
    ("ip-dst", "2a00:1450::1/128", ("address", "outbound", "2a00:1450::1")),
    ("ip-dst", "2a00:1450::/32", ("network", "outbound", "2a00:1450::/32")),
    ("ip-dst", "1.2.0.0/16", ("network", "outbound", "1.2.0.0/16")),
    ("ip-dst", "1.0.0.0/15", ("rejected", "too_broad")),
    ("ip-dst", "0.0.0.0/0", ("rejected", "too_broad")),
    ("ip-dst", "::/0", ("rejected", "too_broad")),
    ("ip-dst", "2a00::/31", ("rejected", "too_broad")),
    ("ip-dst", "10.1.2.3", ("rejected", "private")),
    ("ip-dst", "192.168.0.0/24", ("rejected", "private")),
    ("ip-dst", "fd00::1", ("rejected", "private")),
    ("ip-dst", "127.0.0.1", ("rejected", "loopback")),
    ("ip-dst", "::1", ("rejected", "loopback")),
    ("ip-dst", "169.254.1.1", ("rejected", "link_local")),
    ("ip-dst", "fe80::1", ("rejected", "link_local")),
    ("ip-dst", "224.0.0.1", ("rejected", "multicast")),
    ("ip-dst", "0.0.0.0", ("rejected", "unspecified")),
    ("ip-dst", "240.0.0.1", ("rejected", "reserved")),
    ("ip-dst", "100.64.0.1", ("rejected", "non_global")),
    ("ip-dst", "192.0.2.1", ("rejected", "documentation")),
    ("ip-dst", "2001:db8::1", ("rejected", "documentation")),
    ("ip-dst", "3fff::1", ("rejected", "documentation")),
    ("ip-dst", "192.0.0.8", ("rejected", "reserved")),
    ("ip-dst", "192.0.0.9", ("address", "outbound", "192.0.0.9")),  # IANA: globally reachable (PCP anycast)
    ("ip-dst", "2001:2::1", ("rejected", "private")),  # IETF protocol assignments, benchmarking
    ("ip-dst", "2001:4:112::1", ("address", "outbound", "2001:4:112::1")),  # IANA: globally reachable (AS112)
    ("ip-dst", "fec0::1", ("rejected", "reserved")),  # deprecated site-local
    ("ip-dst", "64:ff9b::808:808", ("rejected", "reserved")),
    ("ip-dst", "fe80::1%eth0", ("rejected", "invalid_address")),
    ("ip-dst", "01.2.3.4", ("rejected", "invalid_address")),
    ("ip-dst", "1.2.3.4) or (proc.name=sh", ("rejected", "invalid_address")),
    ("ip-dst", '1.2.3.4"\n- rule: x', ("rejected", "invalid_address")),
    ("ip-dst", "1.2.3.256", ("rejected", "invalid_address")),
    ("ip-dst", "", ("rejected", "invalid_address")),
    ("ip-dst", "8.8.4.4" + " " * 400, ("rejected", "invalid_address")),
    ("ip-dst|port", "8.8.4.4|99999", ("rejected", "invalid_port")),
    ("ip-dst|port", "8.8.4.4", ("rejected", "invalid_port")),
    ("ip-dst|port", "8.8.4.4|", ("rejected", "invalid_port")),
    ("ip-dst|port", "8.8.4.4|٣", ("rejected", "invalid_port")),
    ("url", "http://evil.example/", ("rejected", "unsupported_type")),
    ("domain", "Evil.Example.COM.", ("domain", "evil.example.com")),
    ("hostname", "c2.bad-domain.net", ("domain", "c2.bad-domain.net")),
    ("domain", "bücher.example", ("domain", "xn--bcher-kva.example")),
    ("domain", "*.evil.com", ("rejected", "invalid_domain")),
    ("domain", "evil", ("rejected", "invalid_domain")),
    ("domain", "-evil.com", ("rejected", "invalid_domain")),
    ("domain", "ev_il.com", ("rejected", "invalid_domain")),
    ("domain", "1.2.3.4", ("rejected", "invalid_domain")),
    ("domain", "a" * 64 + ".com", ("rejected", "invalid_domain")),
    ("domain", 'evil.com") or (proc.name=sh', ("rejected", "invalid_domain")),
    ("domain", "xn--zz.com", ("rejected", "invalid_domain")),
]


@pytest.mark.parametrize(("type_", "value", "expected"), CASES, ids=[f"{c[0]}:{c[1]!r}"[:60] for c in CASES])
def test_value_table(type_: str, value: str, expected: tuple[str, ...]) -> None:
    got = indicators([(type_, value)], DOMAINS)
    kind = expected[0]
    if kind == "rejected":
        assert got.total == 0
        assert got.rejected == {expected[1]: 1}
    elif kind == "domain":
        assert got.domains == (expected[1],)
        assert got.total == 1
    else:
        bucket = got.addresses if kind == "address" else got.networks
        assert bucket == {Direction(expected[1]): (expected[2],)}
        assert got.total == 1


def test_domain_ip_gives_both_parts() -> None:
    got = indicators([("domain|ip", "c2.example.org|8.8.4.4")], DOMAINS)
    assert got.domains == ("c2.example.org",) and got.addresses == {OUT: ("8.8.4.4",)}


def test_domains_need_opt_in() -> None:
    got = indicators([("domain|ip", "c2.example.org|8.8.4.4"), ("domain", "a.example.org")])
    assert got.domains == () and got.addresses == {OUT: ("8.8.4.4",)}
    assert got.rejected == {"domains_disabled": 2}


def test_dedupe_containment_collapse_and_order() -> None:
    got = indicators(
        ["9.9.9.9", "8.8.4.4", "8.8.4.4", "1.2.3.0/25", "1.2.3.128/25", "1.2.3.7", "2a00:1450::1", "1.1.1.1"]
    )
    assert got.addresses == {OUT: ("1.1.1.1", "8.8.4.4", "9.9.9.9", "2a00:1450::1")}
    assert got.networks == {OUT: ("1.2.3.0/24",)}
    assert got.adjusted == {"duplicate": 1, "covered_by_network": 1, "collapsed": 1}


def test_containment_is_per_direction() -> None:
    got = indicators([("ip-src", "1.2.3.0/24"), ("ip-dst", "1.2.3.4")])
    assert got.networks == {IN: ("1.2.3.0/24",)} and got.addresses == {OUT: ("1.2.3.4",)}


def test_collapse_never_broader_than_minimum_prefix() -> None:
    f = feed(limits={"minPrefixV4": 24})
    got = indicators(["1.2.2.0/24", "1.2.3.0/24"], f)
    assert got.networks == {OUT: ("1.2.2.0/24", "1.2.3.0/24")}


def test_allowlist_drops_and_carves() -> None:
    f = feed(
        exclusions={"cidrs": ["1.2.3.0/26"], "values": ["8.8.4.4", "good.example.com"]},
        falco={"domains": True},
        filters={"types": ["ip-dst", "domain"]},
    )
    got = indicators(
        [("ip-dst", "8.8.4.4"), ("ip-dst", "1.2.3.10"), ("ip-dst", "1.2.3.0/24"), ("domain", "www.good.example.com")],
        f,
    )
    assert got.networks == {OUT: ("1.2.3.64/26", "1.2.3.128/25")}
    assert got.addresses == {}
    assert got.rejected == {"allowlisted": 3}


def test_keep_non_global_and_documentation_on_request() -> None:
    f = feed(exclusions={"keepNonGlobal": True})
    assert indicators(["10.0.0.1", "192.0.2.1"], f).addresses == {OUT: ("10.0.0.1",)}
    f = feed(exclusions={"keepDocumentation": True})
    assert indicators(["10.0.0.1", "192.0.2.1"], f).addresses == {OUT: ("192.0.2.1",)}


def test_direction_disabled() -> None:
    got = indicators([("ip-src", "8.8.4.4"), ("ip-dst", "8.8.8.8")], feed(falco={"directions": ["outbound"]}))
    assert got.addresses == {OUT: ("8.8.8.8",)} and got.rejected == {"direction_disabled": 1}


def test_cap_keeps_newest_deterministically() -> None:
    f = feed(limits={"maxIndicators": 2})
    b = IndicatorBuilder(f.spec)
    for value, ts in [("8.8.8.1", 10), ("8.8.8.2", 30), ("8.8.8.3", 20), ("8.8.8.1", 40)]:
        b.add(attr(value, ts=ts))
    got = b.build()
    assert got.addresses == {OUT: ("8.8.8.1", "8.8.8.2")}
    assert got.rejected == {"over_limit": 1}


def test_domain_cap() -> None:
    f = feed(limits={"maxDomains": 1}, falco={"domains": True}, filters={"types": ["domain"]})
    b = IndicatorBuilder(f.spec)
    b.add(attr("old.example.com", "domain", ts=1))
    b.add(attr("new.example.com", "domain", ts=2))
    got = b.build()
    assert got.domains == ("new.example.com",) and got.rejected == {"over_domain_limit": 1}


@pytest.mark.parametrize(
    ("value", "expected"),
    [("EXAMPLE.com", "example.com"), ("例え.テスト", "xn--r8jz45g.xn--zckzah"), ("a..b", None), ("a.b-", None)],
)
def test_normalise_domain(value: str, expected: str | None) -> None:
    assert normalise_domain(value) == expected


def test_counts_shape() -> None:
    got = indicators([("ip-src", "8.8.4.4"), ("ip-dst", "1.2.3.0/24")])
    assert got.counts() == {
        "inbound_addresses": 1,
        "inbound_networks": 0,
        "outbound_addresses": 0,
        "outbound_networks": 1,
        "outbound_domains": 0,
    }
    assert ipaddress.ip_network(got.networks[OUT][0]).num_addresses == 256


# Issue 11 item 4: a CIDR overlapping non-global blocks keeps its global rest (as CIDRs); only a CIDR with nothing
# global left is rejected, with the reason covering most of it. (feed sections, value, addresses, networks,
# rejected, adjusted).
CARVE_CASES: list[tuple[dict, str, tuple[str, ...], tuple[str, ...], dict[str, int], dict[str, int]]] = [
    ({}, "203.0.0.0/16", (), (
        "203.0.0.0/18", "203.0.64.0/19", "203.0.96.0/20", "203.0.112.0/24", "203.0.114.0/23", "203.0.116.0/22",
        "203.0.120.0/21", "203.0.128.0/17",
    ), {}, {"carved_documentation": 1}),
    ({}, "192.0.0.0/16", ("192.0.0.9", "192.0.0.10"), (  # 192.0.0.0/24 but its two global anycast addresses
        "192.0.1.0/24", "192.0.3.0/24", "192.0.4.0/22", "192.0.8.0/21", "192.0.16.0/20", "192.0.32.0/19",
        "192.0.64.0/18", "192.0.128.0/17",
    ), {}, {"carved_reserved": 2, "carved_documentation": 1}),
    ({"exclusions": {"keepDocumentation": True}}, "203.0.0.0/16", (), ("203.0.0.0/16",), {}, {}),
    ({"exclusions": {"keepNonGlobal": True}}, "0.0.0.0/30", ("0.0.0.1",), ("0.0.0.2/31",), {},
     {"carved_unspecified": 1}),  # keepNonGlobal never keeps the unspecified address, inside a CIDR neither
    ({"exclusions": {"cidrs": ["203.0.0.0/17"]}}, "203.0.0.0/16", (), ("203.0.128.0/17",), {},
     {"carved": 1, "carved_documentation": 1}),
    ({"limits": {"minPrefixV4": 8}}, "198.0.0.0/8", (), (
        "198.0.0.0/12", "198.16.0.0/15", "198.20.0.0/14", "198.24.0.0/13", "198.32.0.0/12", "198.48.0.0/15",
        "198.50.0.0/16", "198.51.0.0/18", "198.51.64.0/19", "198.51.96.0/22", "198.51.101.0/24", "198.51.102.0/23",
        "198.51.104.0/21", "198.51.112.0/20", "198.51.128.0/17", "198.52.0.0/14", "198.56.0.0/13", "198.64.0.0/10",
        "198.128.0.0/9",
    ), {}, {"carved_non_global": 1, "carved_documentation": 1}),
    # entirely non-global: rejected, with the reason of the largest part
    ({}, "0.0.0.0/16", (), (), {"reserved": 1}, {}),
    ({"limits": {"minPrefixV4": 8}}, "10.0.0.0/8", (), (), {"private": 1}, {}),
    ({"exclusions": {"cidrs": ["198.51.101.0/24"]}}, "198.51.100.0/23", (), (), {"documentation": 1}, {}),
    ({"exclusions": {"cidrs": ["8.8.0.0/16"]}}, "8.8.8.0/24", (), (), {"allowlisted": 1}, {}),
    # IPv6: every block inside the CIDR counts, not only its first and last address
    ({"limits": {"minPrefixV6": 28}}, "2001:db0::/28", (),
     ("2001:db0::/29", "2001:db9::/32", "2001:dba::/31", "2001:dbc::/30"), {}, {"carved_documentation": 1}),
    ({}, "2001:4::/32", (), ("2001:4:112::/48",), {}, {"carved_private": 2}),
    ({}, "2001:1::/32", ("2001:1::1",), ("2001:1::2/127",), {}, {"carved_private": 2}),
    ({"limits": {"minPrefixV6": 16}}, "fe80::/16", (), (), {"link_local": 1}, {}),
    ({}, "2001:db8::/32", (), (), {"documentation": 1}, {}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("sections", "value", "addresses", "networks", "rejected", "adjusted"),
    CARVE_CASES,
    ids=[f"{c[1]}{'-' + '-'.join(c[0]) if c[0] else ''}" for c in CARVE_CASES],
)
def test_cidrs_are_carved_around_non_global_blocks(
    sections: dict, value: str, addresses: tuple[str, ...], networks: tuple[str, ...], rejected: dict, adjusted: dict
) -> None:
    got = indicators([value], feed(**sections))
    assert got.addresses == ({OUT: addresses} if addresses else {})
    assert got.networks == ({OUT: networks} if networks else {})
    assert (got.rejected, got.adjusted) == (rejected, adjusted)


def test_carved_pieces_follow_the_collapse_and_containment_rules() -> None:
    # the pieces of 203.0.0.0/16 merge with the feed's other CIDRs, never broader than the minimum prefix, and
    # cover the feed's addresses inside them
    f = feed(limits={"minPrefixV4": 16})
    got = indicators(["203.0.0.0/16", "203.1.0.0/16", "203.0.5.5", "203.0.113.7", "203.0.112.0/24"], f)
    assert got.networks[OUT][-2:] == ("203.0.128.0/17", "203.1.0.0/16")
    assert "203.0.112.0/24" in got.networks[OUT] and got.addresses == {}
    assert got.rejected == {"documentation": 1}
    assert got.adjusted["covered_by_network"] == 1 and got.adjusted["carved_documentation"] == 1
    assert all(ipaddress.ip_network(n).prefixlen >= 16 for n in got.networks[OUT])
