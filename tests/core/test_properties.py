"""Property tests: hostile values never reach a rules file unvalidated, and rendering is a pure function."""

from __future__ import annotations

import ipaddress
import string
import uuid

import idna
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from falco_misp.feed.model import SUPPORTED_TYPES, Direction, Feed
from falco_misp.indicators.builder import IndicatorBuilder, IndicatorSet
from falco_misp.rendering.shards import render_rules
from falco_misp.reporting.alerts import parse_address
from falco_misp.reporting.index import IndexBuilder
from falco_misp.values import normalise_domain
from helpers import attr, feed, indicators
from rulecheck import falco_shape_errors, load

FEED = feed(
    name="prop",
    filters={"types": list(SUPPORTED_TYPES)},
    falco={"domains": True, "shardBytes": 16 * 1024, "maxShards": 256},
    exclusions={"keepNonGlobal": True, "keepDocumentation": True},
)

INJECTIONS = [
    "1.2.3.4) or (proc.name=x",
    '1.2.3.4"\n- rule: pwn\n  condition: always_true',
    "1.2.3.4\n",
    "evil.com) or evt.type=open or (fd.sip=1.1.1.1",
    "evil.com\n- macro: x",
    "1.2.3.4, 5.6.7.8",
    "'1.2.3.4'",
    "1.2.3.4 #",
    "${items}",
    "%proc.name",
    "1.2.3.4/8/8",
    "::ffff:1.2.3.4%eth0",
]
hostile = st.one_of(
    st.sampled_from(INJECTIONS),
    st.text(max_size=60),
    st.text(alphabet=string.printable, max_size=40),
    st.text(alphabet="0123456789abcdef.:/|%*-_ \n\"')(", max_size=45),
    st.text(min_size=1000, max_size=5000),
    st.ip_addresses().map(str),
    st.builds(lambda a, p: f"{a}/{p}", st.ip_addresses(v=4), st.integers(0, 40)),
    st.builds(lambda a, p: f"{a}|{p}", st.ip_addresses(), st.integers(-5, 70000)),
)


def _every_item(content: bytes) -> list[str]:
    return [item for d in load(content) if "list" in d for item in d["items"]]


def _valid_item(item: str) -> bool:
    try:
        ipaddress.ip_address(item)
        return True
    except ValueError:
        pass
    try:
        net = ipaddress.ip_network(item, strict=True)
        return "/" in item and net.prefixlen < net.max_prefixlen
    except ValueError:
        return normalise_domain(item) == item


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from([*SUPPORTED_TYPES, "url", "md5"]), hostile), max_size=25))
def test_hostile_values_never_reach_rules_unvalidated(values: list[tuple[str, str]]) -> None:
    b = IndicatorBuilder(FEED.spec)
    for type_, value in values:
        b.add(attr(value, type_))
    ind = b.build()
    bundle = render_rules(FEED, ind)
    for shard in bundle.shards:
        docs = load(shard.content)  # still YAML: nothing broke out of its quotes
        assert falco_shape_errors(docs) == []
        assert all(_valid_item(i) for i in _every_item(shard.content))
        assert len([d for d in docs if "rule" in d]) <= 5  # no injected rule
    # domain|ip yields two entries at most; a CIDR with h >= 1 ranges cut out of it (non-global blocks, allow-listed
    # ranges) leaves at most h + 1 <= 2h stretches, each at most 2 x 128 CIDRs
    carved = sum(v for k, v in ind.adjusted.items() if k.startswith("carved"))
    assert ind.total <= len(values) * 2 + carved * 2 * 2 * 128


@settings(max_examples=100, deadline=None)
@given(st.lists(st.ip_addresses(v=4).map(str) | st.ip_addresses(v=6).map(str), max_size=50), st.randoms())
def test_order_of_input_does_not_change_bytes(values: list[str], rnd: object) -> None:
    def render(vals: list[str]) -> bytes:
        b = IndicatorBuilder(FEED.spec)
        for v in vals:
            b.add(attr(v))
        return b"".join(s.content for s in render_rules(FEED, b.build()).shards)

    shuffled = list(values)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert render(values) == render(shuffled)


# Issue 11 item 4: a CIDR keeps exactly the addresses that would be kept if each were listed alone (the carving of
# non-global blocks out of CIDRs agrees with the one-address classification).
BLOCKS = [ipaddress.ip_network(n) for n in (
    "0.0.0.0/32", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.0.0.0/24",
    "192.0.0.9/32", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
    "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4", "8.8.8.0/24",
    "::1/128", "2001::/23", "2001:1::1/128", "2001:4:112::/48", "2001:20::/28", "2001:db8::/32", "3fff::/20",
    "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8", "2a00:1450::/32",
)]  # fmt: skip
SCOPES = [{}, {"keepDocumentation": True}, {"keepNonGlobal": True}, {"keepNonGlobal": True, "keepDocumentation": True}]
SCOPE_FEEDS = [feed(name="carve", limits={"minPrefixV4": 8, "minPrefixV6": 16}, exclusions=s) for s in SCOPES]


def _emitted(ind: IndicatorSet) -> list[tuple[int, int, int]]:
    """(version, first, last) of every emitted entry."""
    nets = [ipaddress.ip_network(v) for d in Direction for v in (*ind.addresses.get(d, ()), *ind.networks.get(d, ()))]
    return [(n.version, int(n.network_address), int(n.broadcast_address)) for n in nets]


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(BLOCKS),
    st.integers(0, 12),
    st.sampled_from(SCOPE_FEEDS),
    st.lists(st.integers(min_value=0), max_size=8),
)
def test_a_cidr_keeps_exactly_the_addresses_kept_alone(
    block: ipaddress.IPv4Network | ipaddress.IPv6Network, widen: int, f: Feed, offsets: list[int]
) -> None:
    floor = 8 if block.version == 4 else 16
    if block.prefixlen > floor:  # the block and some of what surrounds it
        net = block.supernet(new_prefix=max(floor, block.prefixlen - widen))
    else:  # a part of a block broader than a CIDR may be
        net = next(block.subnets(new_prefix=min(block.max_prefixlen - 1, floor + widen)))
    if net.prefixlen == net.max_prefixlen:
        return
    listed = _emitted(indicators([str(net)], f))
    assert all(net.version == v and int(net.network_address) <= lo <= hi <= int(net.broadcast_address)
               for v, lo, hi in listed)  # fmt: skip
    first, last = int(block.network_address), int(block.broadcast_address)
    probes = {int(net.network_address), int(net.broadcast_address), first, last, first - 1, last + 1}
    probes |= {int(net.network_address) + o % net.num_addresses for o in offsets}
    cls = ipaddress.IPv4Address if net.version == 4 else ipaddress.IPv6Address
    for value in sorted(p for p in probes if int(net.network_address) <= p <= int(net.broadcast_address)):
        alone = indicators([str(cls(value))], f).total == 1
        assert alone == any(lo <= value <= hi for _, lo, hi in listed), (str(net), str(cls(value)))


# Issue 11 item 5: the alert index finds every value the rules list, in the form the rules carry it and, for
# domains, in its Unicode form too; and it indexes nothing the rules reject.
INDEX_FEED = feed(
    name="idx",
    filters={"types": list(SUPPORTED_TYPES)},
    falco={"domains": True},
    exclusions={"keepNonGlobal": True, "keepDocumentation": True},
    limits={"minPrefixV6": 16, "maxDomains": 1000},
)
label = st.text(alphabet="abz09-_.ßüÜé例テ*", max_size=12)
domain_like = st.builds(
    lambda labels, tld: ".".join([*labels, tld]),
    st.lists(label, max_size=3),
    st.sampled_from(["com", "example", "テスト", "xn--zckzah", "COM.", "1", "xn--zz", "ORG"]),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(domain_like | hostile, max_size=12))
def test_the_alert_index_finds_every_domain_the_rules_list(values: list[str]) -> None:
    attributes = [attr(v, "domain", uuid=str(uuid.UUID(int=i + 1))) for i, v in enumerate(values)]
    rules = IndicatorBuilder(INDEX_FEED.spec).add_all(attributes).build()
    builder = IndexBuilder(INDEX_FEED)
    for a in attributes:
        builder.add(a)
    index = builder.build()
    assert index.entries == len(values) - sum(rules.rejected.values())  # the same values accepted
    for name in rules.domains:
        unicode_form = idna.decode(name)
        for form in (name, name.upper() + ".", unicode_form, unicode_form + "."):
            refs = index.lookup_domain(form)
            assert refs and {r.indicator for r in refs} == {name}, form


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["ip-dst", "ip-src", "ip-dst|port", "domain|ip"]), hostile), max_size=12))
def test_the_alert_index_matches_every_address_the_rules_list(values: list[tuple[str, str]]) -> None:
    attributes = [attr(v, t, uuid=str(uuid.UUID(int=i + 1))) for i, (t, v) in enumerate(values)]
    rules = IndicatorBuilder(INDEX_FEED.spec).add_all(attributes).build()
    builder = IndexBuilder(INDEX_FEED)
    for a in attributes:
        builder.add(a)
    index = builder.build()
    for d in Direction:
        for entry in (*rules.addresses.get(d, ()), *rules.networks.get(d, ())):
            net = ipaddress.ip_network(entry)
            for address in (net.network_address, net.broadcast_address):
                found = parse_address(str(address))
                assert found is not None and index.lookup(d, found), (d, entry)
