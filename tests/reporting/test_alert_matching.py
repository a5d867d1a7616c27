"""Alert -> feed -> MISP attributes through the provenance index, and the report payloads (pure, tables)."""

from __future__ import annotations

import ipaddress
import uuid

import pytest
from reportkit import ALERT_EPOCH, OUTBOUND, attribute, falco_alert, make_feed, reporting_feed

from falco_misp.alerts import (
    MAX_MATCHES,
    Deduper,
    FeedRegistry,
    IndexBuilder,
    Outcome,
    daily_event,
    daily_event_uuid,
    event_attribute,
    match_alert,
    notice_message,
    parse_alerts,
    sighting_body,
)
from falco_misp.spec import Direction

NOW = float(ALERT_EPOCH + 60)
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
        (falco_alert("45.1.0.200", rule="misp_intel_0 outbound connection to a listed network"), Outcome.MATCHED,
         [uuids(4), uuids(3)]),  # most specific first
        (falco_alert("45.1.0.5", rule="misp_intel_1 outbound connection to a listed network"), Outcome.MATCHED,
         [uuids(3)]),
        (falco_alert("45.2.0.9"), Outcome.MATCHED, [uuids(5)]),
        (falco_alert("46.0.0.1", rule="misp_intel_0 inbound connection from a listed address"), Outcome.MATCHED,
         [uuids(6)]),
        (falco_alert("2001:db8:1:2::5", rule="misp_intel_0 outbound connection to a listed network"),
         Outcome.MATCHED, [uuids(7)]),
        (falco_alert("45.3.0.1"), Outcome.MATCHED, [uuids(8)]),
        (falco_alert("::ffff:45.0.0.7"), Outcome.MATCHED, [uuids(1), uuids(2)]),
        (falco_alert("45.4.0.1"), Outcome.MATCHED, [uuids(9)]),
        (falco_alert("45.0.0.7", tags=[]), Outcome.MATCHED, [uuids(1), uuids(2)]),  # tags not sent: rule name only
        # an ip-src attribute is matched on inbound connections only, and the other way round
        (falco_alert("46.0.0.1"), Outcome.UNLISTED, []),
        (falco_alert("45.0.0.7", rule="misp_intel_0 inbound connection from a listed address"), Outcome.UNLISTED, []),
        (falco_alert("45.5.0.1"), Outcome.UNLISTED, []),
        (falco_alert("45.6.0.1"), Outcome.UNLISTED, []),
        (falco_alert("45.9.9.9"), Outcome.UNLISTED, []),
        (falco_alert("45.0.0.7", rule="Outbound Connection to C2 Servers"), Outcome.NOT_OURS, []),
        (falco_alert("45.0.0.7", tags=["network", "mitre_command_and_control"]), Outcome.NOT_OURS, []),
        (falco_alert("45.0.0.7", tags=["misp", "misp_other"]), Outcome.UNKNOWN_FEED, []),
        (falco_alert("45.0.0.7", rule=f"misp_other_0 {OUTBOUND}"), Outcome.UNKNOWN_FEED, []),
        (falco_alert("not-an-address"), Outcome.NO_ADDRESS, []),
        (falco_alert("45.0.0.7", **{"fd.sip": None}), Outcome.NO_ADDRESS, []),
        (falco_alert("45.0.0.7", **{"fd.sip": None, "fd.rip": "45.0.0.7"}), Outcome.MATCHED, [uuids(1), uuids(2)]),
    ],
)  # fmt: skip
def test_matching(body: dict, outcome: Outcome, attributes: list[str]) -> None:
    assert match(body) == (outcome, attributes)


def test_hit_carries_the_attribute_context() -> None:
    (alert,) = parse_alerts(falco_alert("45.1.0.200", rule="misp_intel_0 outbound connection to a listed network"), NOW)
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
    body = falco_alert("45.4.0.1", rule="misp_dns_0 outbound connection to a listed domain", tags=["misp", "misp_dns"])
    body["output_fields"]["fd.sip.name"] = "evil.example.org"
    (alert,) = parse_alerts(body, NOW)
    result = match_alert(alert, registry)
    assert result.outcome is Outcome.MATCHED
    assert [(a.uuid, a.indicator) for a in result.hits[0].attributes] == [(uuids(1), "evil.example.org")]
    del body["output_fields"]["fd.sip.name"]
    (alert,) = parse_alerts(body, NOW)
    assert match_alert(alert, registry).outcome is Outcome.NO_ADDRESS


def test_feeds_of_the_same_name_in_two_namespaces_share_a_rule_prefix() -> None:
    a = reporting_feed(make_feed(namespace="team-a"), [attribute("45.0.0.1", n=1)])
    b = reporting_feed(make_feed(namespace="team-b"), [attribute("45.0.0.2", n=2)])
    registry = FeedRegistry().with_feed(a).with_feed(b)
    assert len(registry.by_ident["misp_intel"]) == 2
    for remote, namespace in (("45.0.0.1", "team-a"), ("45.0.0.2", "team-b")):
        (alert,) = parse_alerts(falco_alert(remote), NOW)
        assert [h.feed.feed.namespace for h in match_alert(alert, registry).hits] == [namespace]
    replaced = registry.with_feed(reporting_feed(make_feed(namespace="team-a"), [attribute("45.0.0.3", n=3)]))
    assert len(replaced.by_ident["misp_intel"]) == 2
    assert registry.without("team-a/intel").without("team-b/intel").by_ident == {}


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
