"""Alert -> feed -> MISP attributes through the provenance index, and the report payloads (pure, tables)."""

from __future__ import annotations

import ipaddress
import uuid

import pytest
from reportkit import ALERT_EPOCH, OUTBOUND, attribute, falco_alert, make_feed, reporting_feed

from falco_misp.feed.model import Direction, Feed
from falco_misp.indicators.builder import IndicatorBuilder
from falco_misp.reporting.alerts import feed_tag, parse_alerts, rule_ident
from falco_misp.reporting.index import MAX_MATCHES, IndexBuilder
from falco_misp.reporting.matching import Deduper, FeedRegistry, Outcome, match_alert
from falco_misp.reporting.payloads import daily_event, daily_event_uuid, event_attribute, notice_message, sighting_body

NOW = float(ALERT_EPOCH + 60)
IDENT = "misp_security_intel"  # feed security/intel: default ConfigMap prefix misp-security-intel
OUT_NET = "outbound connection to a listed network"
IN_ADDR = "inbound connection from a listed address"
FEED = make_feed()
ATTRIBUTES = [
    attribute("45.0.0.7", "ip-dst", 1, event=42, event_info="C2 of APT-X", tags=("tlp:green", "apt-x")),
    attribute("45.0.0.7", "ip-dst", 2, event=43),  # the same value in another event
    attribute("45.1.0.0/24", "ip-dst", 3, event=44),
    attribute("45.1.0.128/25", "ip-dst", 4, event=45),  # nested in the /24
    attribute("45.2.0.9|443", "ip-dst|port", 5),
    attribute("46.0.0.1", "ip-src", 6),
    attribute("2001:db8:1::/48", "ip-dst", 7),
    attribute("::ffff:45.3.0.1", "ip-dst", 8),
    attribute("evil.example.org|45.4.0.1", "domain|ip", 9),
    attribute("45.5.0.0/8", "ip-dst", 10),  # broader than limits.minPrefixV4: never a rule, not indexed
    attribute("not-an-ip", "ip-dst", 11),
    attribute("45.6.0.1", "ip-dst", 12, uuid=""),  # no uuid: a sighting could not name it
    attribute("https://x.example/", "url", 13),  # not a type the feed renders
]
REGISTRY = FeedRegistry().with_feed(reporting_feed(FEED, ATTRIBUTES))


def uuids(n: int) -> str:
    return str(uuid.UUID(int=n))


def match(body: dict) -> tuple[Outcome, list[str]]:
    (alert,) = parse_alerts(body, NOW)
    result = match_alert(alert, REGISTRY)
    return result.outcome, [a.uuid for hit in result.hits for a in hit.attributes]


@pytest.mark.parametrize(
    ("body", "outcome", "attributes"),
    [
        (falco_alert("45.0.0.7"), Outcome.MATCHED, [uuids(1), uuids(2)]),
        (falco_alert("45.1.0.200", rule=f"{IDENT}_0 {OUT_NET}"), Outcome.MATCHED,
         [uuids(4), uuids(3)]),  # most specific first
        (falco_alert("45.1.0.5", rule=f"{IDENT}_1 {OUT_NET}"), Outcome.MATCHED,
         [uuids(3)]),
        (falco_alert("45.2.0.9"), Outcome.MATCHED, [uuids(5)]),
        (falco_alert("46.0.0.1", rule=f"{IDENT}_0 {IN_ADDR}"), Outcome.MATCHED,
         [uuids(6)]),
        (falco_alert("2001:db8:1:2::5", rule=f"{IDENT}_0 {OUT_NET}"),
         Outcome.MATCHED, [uuids(7)]),
        (falco_alert("45.3.0.1"), Outcome.MATCHED, [uuids(8)]),
        (falco_alert("::ffff:45.0.0.7"), Outcome.MATCHED, [uuids(1), uuids(2)]),
        (falco_alert("45.4.0.1"), Outcome.MATCHED, [uuids(9)]),
        (falco_alert("45.0.0.7", tags=[]), Outcome.MATCHED, [uuids(1), uuids(2)]),  # tags not sent: rule name only
        # an ip-src attribute is matched on inbound connections only, and the other way round
        (falco_alert("46.0.0.1"), Outcome.UNLISTED, []),
        (falco_alert("45.0.0.7", rule=f"{IDENT}_0 {IN_ADDR}"), Outcome.UNLISTED, []),
        (falco_alert("45.5.0.1"), Outcome.UNLISTED, []),
        (falco_alert("45.6.0.1"), Outcome.UNLISTED, []),
        (falco_alert("45.9.9.9"), Outcome.UNLISTED, []),
        (falco_alert("45.0.0.7", rule="Outbound Connection to C2 Servers"), Outcome.NOT_OURS, []),
        (falco_alert("45.0.0.7", tags=["network", "mitre_command_and_control"]), Outcome.NOT_OURS, []),
        (falco_alert("45.0.0.7", tags=["misp", "misp_feed:security/other"]), Outcome.UNKNOWN_FEED, []),
        (falco_alert("45.0.0.7", rule=f"misp_other_0 {OUTBOUND}"), Outcome.UNKNOWN_FEED, []),
        (falco_alert("not-an-address"), Outcome.NO_ADDRESS, []),
        (falco_alert("45.0.0.7", **{"fd.sip": None}), Outcome.NO_ADDRESS, []),
        (falco_alert("45.0.0.7", **{"fd.sip": None, "fd.rip": "45.0.0.7"}), Outcome.MATCHED, [uuids(1), uuids(2)]),
    ],
)  # fmt: skip
def test_matching(body: dict, outcome: Outcome, attributes: list[str]) -> None:
    assert match(body) == (outcome, attributes)


def test_hit_carries_the_attribute_context() -> None:
    (alert,) = parse_alerts(falco_alert("45.1.0.200", rule=f"{IDENT}_0 {OUT_NET}"), NOW)
    (hit,) = match_alert(alert, REGISTRY).hits
    assert hit.remote == "45.1.0.200"
    assert [(a.type, a.indicator, a.event.id, a.event.info) for a in hit.attributes] == [
        ("ip-dst", "45.1.0.128/25", "45", "event 45"),
        ("ip-dst", "45.1.0.0/24", "44", "event 44"),
    ]
    (alert,) = parse_alerts(falco_alert("45.0.0.7"), NOW)
    first = match_alert(alert, REGISTRY).hits[0].attributes[0]
    assert (first.indicator, first.event.info, first.tags) == ("45.0.0.7", "C2 of APT-X", ("tlp:green", "apt-x"))


def test_domain_rules_match_domain_attributes() -> None:
    feed = make_feed(name="dns", falco={"domains": True})
    registry = FeedRegistry().with_feed(
        reporting_feed(feed, [attribute("Evil.Example.org", "domain", 1), attribute("c2.example.net", "hostname", 2)])
    )
    body = falco_alert(
        "45.4.0.1",
        rule="misp_security_dns_0 outbound connection to a listed domain",
        tags=["misp", "misp_feed:security/dns"],
    )
    body["output_fields"]["fd.sip.name"] = "evil.example.org"
    (alert,) = parse_alerts(body, NOW)
    result = match_alert(alert, registry)
    assert result.outcome is Outcome.MATCHED
    assert [(a.uuid, a.indicator) for a in result.hits[0].attributes] == [(uuids(1), "evil.example.org")]
    del body["output_fields"]["fd.sip.name"]
    (alert,) = parse_alerts(body, NOW)
    assert match_alert(alert, registry).outcome is Outcome.NO_ADDRESS


def test_feeds_of_the_same_name_in_two_namespaces_have_their_own_rules() -> None:
    # both list 45.0.0.1: only the rule name (and tag) can tell which feed's rule fired
    a = reporting_feed(make_feed(namespace="team-a"), [attribute("45.0.0.1", n=1), attribute("45.0.0.9", n=9)])
    b = reporting_feed(make_feed(namespace="team-b"), [attribute("45.0.0.1", n=2)])
    registry = FeedRegistry().with_feed(a).with_feed(b)
    assert sorted(registry.by_ident) == ["misp_team__a_intel", "misp_team__b_intel"]  # a namespace's "-" doubled
    for namespace, uuid_n in (("team-a", 1), ("team-b", 2)):
        ident = f"misp_{namespace.replace('-', '__')}_intel"
        for tags in (None, []):  # with the feed's tag, and without tags (json_include_tags_property: false)
            body = falco_alert("45.0.0.1", rule=f"{ident}_0 {OUTBOUND}",
                               tags=tags if tags is not None else ["misp", f"misp_feed:{namespace}/intel"])  # fmt: skip
            (alert,) = parse_alerts(body, NOW)
            result = match_alert(alert, registry)
            assert [h.feed.ref for h in result.hits] == [f"{namespace}/intel"]
            assert [x.uuid for h in result.hits for x in h.attributes] == [uuids(uuid_n)]
    # team-b's rule never reports team-a's attributes, even for an address only team-a lists
    (alert,) = parse_alerts(falco_alert("45.0.0.9", rule=f"misp_team__b_intel_0 {OUTBOUND}", tags=[]), NOW)
    assert match_alert(alert, registry).outcome is Outcome.UNLISTED
    # a tag naming the other feed: not that feed's alert
    (alert,) = parse_alerts(falco_alert("45.0.0.1", rule=f"misp_team__a_intel_0 {OUTBOUND}",
                                        tags=["misp", "misp_feed:team-b/intel"]), NOW)  # fmt: skip
    assert match_alert(alert, registry).outcome is Outcome.UNKNOWN_FEED
    replaced = registry.with_feed(reporting_feed(make_feed(namespace="team-a"), [attribute("45.0.0.3", n=3)]))
    assert [f.ref for f in replaced.feeds()] == ["team-b/intel", "team-a/intel"]
    assert registry.without("team-a/intel").without("team-b/intel").by_ident == {}


def test_feeds_sharing_a_rule_prefix_in_two_falco_namespaces_are_told_apart_by_tag() -> None:
    shared = {"configMapPrefix": "misp-intel"}  # only a feed in its Falco namespace may choose it (issue 15)
    a = reporting_feed(
        make_feed(namespace="falco-a", falco={"namespace": "falco-a", **shared}), [attribute("45.0.0.1", n=1)]
    )
    b = reporting_feed(
        make_feed(namespace="falco-b", falco={"namespace": "falco-b", **shared}), [attribute("45.0.0.1", n=2)]
    )
    registry = FeedRegistry().with_feed(a).with_feed(b)
    assert list(registry.by_ident) == ["misp_intel"]
    for namespace, uuid_n in (("falco-a", 1), ("falco-b", 2)):
        body = falco_alert("45.0.0.1", rule=f"misp_intel_3 {OUTBOUND}", tags=["misp", f"misp_feed:{namespace}/intel"])
        (alert,) = parse_alerts(body, NOW)
        assert [x.uuid for h in match_alert(alert, registry).hits for x in h.attributes] == [uuids(uuid_n)]


def test_directions_and_domains_follow_the_feed() -> None:
    feed = make_feed(falco={"directions": ["outbound"]})
    builder = IndexBuilder(feed)
    for attr in (attribute("46.0.0.1", "ip-src", 1), attribute("x.example.org", "domain", 2), attribute("45.0.0.1")):
        builder.add(attr)
    index = builder.build()
    assert index.attributes == 1  # inbound type dropped (no inbound rules), domain dropped (falco.domains off)
    assert index.lookup(Direction.INBOUND, ipaddress.ip_address("46.0.0.1")) == ()


def test_index_is_compact_and_capped() -> None:
    builder = IndexBuilder(FEED)
    for i in range(20_000):
        builder.add(attribute(f"45.{i // 250}.{i % 250}.1", n=i + 1, event=i % 7))
    for i in range(40):
        builder.add(attribute("44.0.0.0/16", n=100_000 + i))
    index = builder.build()
    assert (index.attributes, index.entries) == (20_040, 20_040)
    assert index.approx_bytes() < 20_040 * 40  # ~33 bytes per IPv4 attribute
    assert len(index.lookup(Direction.OUTBOUND, ipaddress.ip_address("44.0.1.1"))) == MAX_MATCHES
    assert index.skipped == {}


@pytest.mark.parametrize(
    ("source", "cluster", "hostname", "expected"),
    [
        ("", "prod-eu", "node-1", "prod-eu/node-1"),
        ("", "", "node-1", "node-1"),
        ("", "", "", "falco-misp-operator"),
        ("falco@{cluster}:{node} ({namespace}/{feed})", "prod", "n1", "falco@prod:n1 (security/intel)"),
        ("static", "prod", "n1", "static"),
    ],
)
def test_sighting_source(source: str, cluster: str, hostname: str, expected: str) -> None:
    feed = make_feed(sightings={"enabled": True, "source": source} if source else None)
    registry = FeedRegistry().with_feed(reporting_feed(feed, ATTRIBUTES))
    (alert,) = parse_alerts(falco_alert(hostname=hostname), NOW)
    (hit,) = match_alert(alert, registry).hits
    assert sighting_body(hit, cluster) == {"type": "0", "source": expected, "timestamp": ALERT_EPOCH}


def test_daily_event_payloads() -> None:
    feed = make_feed(events={"enabled": True, "tags": ["tlp:amber"], "distribution": 1, "threatLevel": "high"})
    registry = FeedRegistry().with_feed(reporting_feed(feed, ATTRIBUTES))
    (alert,) = parse_alerts(falco_alert("45.0.0.7"), NOW)
    (hit,) = match_alert(alert, registry).hits
    attr = event_attribute(hit, to_ids=False)
    assert {k: attr[k] for k in ("type", "category", "value", "to_ids")} == {
        "type": "ip-dst", "category": "Network activity", "value": "45.0.0.7", "to_ids": False,
    }  # fmt: skip
    assert "node node-1" in attr["comment"] and "pod shop/web-1" in attr["comment"]
    assert uuids(1) in attr["comment"] and "process /usr/bin/curl" in attr["comment"]
    assert attr["first_seen"].startswith("2026-01-05T12:00:00")
    event = daily_event(hit, "prod", [attr])
    assert event["uuid"] == daily_event_uuid(feed, "prod", "2026-01-05")
    assert event["uuid"] != daily_event_uuid(feed, "prod", "2026-01-06")
    assert event["uuid"] != daily_event_uuid(make_feed(namespace="other"), "prod", "2026-01-05")
    assert (event["date"], event["distribution"], event["threat_level_id"], event["analysis"]) == (
        "2026-01-05", "1", "1", "0",
    )  # fmt: skip
    assert event["published"] is False and event["Tag"] == [{"name": "tlp:amber"}]
    assert "security/intel" in event["info"] and "prod" in event["info"]
    message = notice_message(hit, hit.attributes)
    assert "45.0.0.7" in message and "C2 of APT-X" in message and "apt-x" in message and len(message) <= 1024


def test_deduper_window_capacity_and_forget() -> None:
    dedupe = Deduper(capacity=3)
    assert dedupe.admit("a", 0, 10) and not dedupe.admit("a", 5, 10) and dedupe.admit("a", 10, 10)
    assert dedupe.admit("b", 11, 10) and dedupe.admit("c", 11, 10) and dedupe.admit("d", 11, 10)
    assert len(dedupe) == 3  # "a", the oldest, made room
    assert dedupe.admit("a", 12, 10)
    dedupe.forget("b")
    assert dedupe.admit("b", 12, 10)
    assert dedupe.admit("e", 100, 10) and len(dedupe) == 1  # expired entries go


# Issue 11 item 5: one domain normaliser and one IP reader for the rules and the alert index. The rules carry an
# internationalised domain as punycode (IDNA); Falco may write either form in fd.sip.name.
IDN_FORMS = ["bücher.example", "xn--bcher-kva.example", "BÜCHER.Example.", "XN--BCHER-KVA.EXAMPLE"]


def _domain_alert(feed: Feed, name: str) -> dict:
    body = falco_alert(
        "45.4.0.1", rule=f"{rule_ident(feed)}_0 outbound connection to a listed domain", tags=["misp", feed_tag(feed)]
    )
    body["output_fields"]["fd.sip.name"] = name
    return body


@pytest.mark.parametrize("listed", IDN_FORMS)
@pytest.mark.parametrize("seen", IDN_FORMS)
def test_internationalised_domains_match_in_either_form(listed: str, seen: str) -> None:
    feed = make_feed(name="dns", falco={"domains": True}, filters={"types": ["domain"]})
    attributes = [attribute(listed, "domain", 1), attribute("other.example", "hostname", 2)]
    rules = IndicatorBuilder(feed.spec).add_all(attributes).build()
    assert "xn--bcher-kva.example" in rules.domains  # what the rules file lists
    registry = FeedRegistry().with_feed(reporting_feed(feed, attributes))
    (alert,) = parse_alerts(_domain_alert(feed, seen), NOW)
    result = match_alert(alert, registry)
    assert result.outcome is Outcome.MATCHED
    assert [(a.uuid, a.indicator) for a in result.hits[0].attributes] == [(uuids(1), "xn--bcher-kva.example")]


@pytest.mark.parametrize(
    ("type_", "value"),
    [
        ("domain", "ev_il.example"),  # underscores: never a rule
        ("domain", "*.evil.example"),
        ("domain", "xn--zz.example"),  # punycode that does not decode
        ("hostname", "-evil.example"),
        ("domain|ip", "c2.example.org"),  # no |
        ("ip-dst|port", "45.2.0.9|99999"),  # no such port
        ("ip-dst|port", "45.2.0.9|"),
        ("ip-dst", "045.2.0.9"),
        ("ip-dst", "fe80::1%eth0"),
    ],
)
def test_the_index_keeps_only_what_the_rules_list(type_: str, value: str) -> None:
    feed = make_feed(name="dns", falco={"domains": True}, filters={"types": [type_]})
    rules = IndicatorBuilder(feed.spec).add_all([attribute(value, type_, 1)]).build()
    assert rules.total == 0
    builder = IndexBuilder(feed)
    builder.add(attribute(value, type_, 1))
    index = builder.build()
    assert (index.attributes, index.skipped) == (0, {"invalid_value": 1})
    assert index.lookup_domain(value.partition("|")[0]) == ()


def test_carved_cidr_attributes_match_their_global_addresses() -> None:
    # 203.0.0.0/16 holds 203.0.113.0/24 (documentation): the rules list the rest, and alerts there match it
    feed = make_feed()
    attributes = [attribute("203.0.0.0/16", "ip-dst", 1)]
    assert "203.0.128.0/17" in IndicatorBuilder(feed.spec).add_all(attributes).build().networks[Direction.OUTBOUND]
    registry = FeedRegistry().with_feed(reporting_feed(feed, attributes))
    (alert,) = parse_alerts(falco_alert("203.0.200.1", rule=f"{rule_ident(feed)}_0 {OUT_NET}"), NOW)
    assert [a.indicator for h in match_alert(alert, registry).hits for a in h.attributes] == ["203.0.0.0/16"]
