"""Property tests: hostile values never reach a rules file unvalidated, and rendering is a pure function."""

from __future__ import annotations

import ipaddress
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from falco_misp.indicators import IndicatorBuilder
from falco_misp.render import render_rules
from falco_misp.spec import SUPPORTED_TYPES
from falco_misp.values import normalise_domain
from helpers import attr, feed
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
    emitted = ind.total
    assert emitted <= len(values) * 2  # domain|ip yields two entries at most


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
