"""Indicator validation and classification: one table of values and what becomes of them."""

from __future__ import annotations

import ipaddress

import pytest

from falco_misp.indicators import IndicatorBuilder
from falco_misp.spec import Direction
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
