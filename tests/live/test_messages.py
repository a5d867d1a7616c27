"""The pure side of live updates: parsing MISP's ZeroMQ frames, deciding relevance against a feed's filters,
debouncing bursts, the spec's ``source.misp.zmq`` (and the CRD agreeing with it), and the LiveUpdates condition
surviving the syncs' own conditions.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from falco_misp.conditions import Condition, build_conditions
from falco_misp.errors import SpecError
from falco_misp.feed.model import FilterSet, TagFilter
from falco_misp.feed.parse import parse_spec
from falco_misp.live.messages import (
    LIVE_UPDATES,
    SUBSCRIPTIONS,
    AttributeChange,
    EventChange,
    Heartbeat,
    Known,
    MessageError,
    Topic,
    add_to_burst,
    is_relevant,
    parse_message,
    postpone,
    topic_of,
)
from helpers import feed, misp_event

NOW = 1_767_614_400  # 2026-01-05T12:00:00Z
CRD = Path(__file__).resolve().parents[2] / "deploy" / "crds" / "mispfeeds.falco-misp.io.yaml"


def frame(topic: str, payload: Any) -> bytes:
    return f"{topic} {json.dumps(payload)}".encode()


def attribute(
    type_: str = "ip-dst",
    value: str = "45.9.1.7",
    *,
    action: str | None = "add",
    event: dict[str, Any] | None = None,
    **fields: Any,
) -> bytes:
    """``misp_json_attribute`` as MISP's Attribute::fetchAttribute builds it (Tag only when there are tags)."""
    raw: dict[str, Any] = {
        "id": "2000", "event_id": "2", "type": type_, "value": value, "category": "Network activity",
        "to_ids": True, "uuid": "5f0c3b1e-0000-4000-8000-000000002000", "timestamp": str(NOW - 60), "deleted": False,
    }  # fmt: skip
    raw.update(fields)
    ev: dict[str, Any] = {
        "id": "2", "uuid": "5f0c3b1e-0000-4000-9000-000000000002", "info": "event 2", "org_id": "1", "orgc_id": "7",
        "published": False, "threat_level_id": "2", "Orgc": {"id": "7", "name": "CIRCL", "uuid": "55f6ea5e"},
    }  # fmt: skip
    if event is not None:
        ev = {k: v for k, v in {**ev, **event}.items() if v is not None}
    payload: dict[str, Any] = {"Attribute": raw, "Event": ev}
    if action is not None:
        payload["action"] = action
    return frame("misp_json_attribute", payload)


def event(
    topic: str = "misp_json_event", *, action: str | None = "edit", attrs: list[dict[str, Any]] | None = None, **ev: Any
) -> bytes:
    body = misp_event(2, attrs or [], org="CIRCL")["Event"]
    if attrs is None:
        body.pop("Attribute", None)
        body.pop("Object", None)
    body.update(ev)
    payload: dict[str, Any] = {"Event": {k: v for k, v in body.items() if v is not None}}
    if action is not None:
        payload["action"] = action
    return frame(topic, payload)


def filters(**spec: Any) -> tuple[FilterSet, ...]:
    return feed(source={"misp": {"url": "https://misp.example.org"}}, filters=spec).spec.filters


# ------------------------------------------------------------------------------------------------- parsing
def test_heartbeat() -> None:
    message = parse_message(frame("misp_json_self", {"status": "And believe me I am still alive.", "uptime": 3600}))
    assert message == Heartbeat(uptime=3600)
    assert topic_of(message) is Topic.HEARTBEAT
    assert parse_message(frame("misp_json_self", {"status": "x", "uptime": "soon"})) == Heartbeat(uptime=None)


def test_an_attribute_with_what_the_message_tells_of_its_event() -> None:
    message = parse_message(attribute(Tag=[{"name": "tlp:white"}]))
    assert isinstance(message, AttributeChange)
    assert topic_of(message) is Topic.ATTRIBUTE
    assert message.action == "add"
    a = message.attribute
    assert (a.type, a.value, a.category, a.to_ids, a.timestamp) == ("ip-dst", "45.9.1.7", "Network activity", True,
                                                                     NOW - 60)  # fmt: skip
    assert (a.org, a.org_id, a.threat_level, a.published, a.tags) == ("CIRCL", "7", 2, False, ("tlp:white",))
    assert message.known == {
        Known.TAGS, Known.TO_IDS, Known.CATEGORY, Known.TIMESTAMP, Known.ORG, Known.THREAT_LEVEL, Known.PUBLISHED
    }  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "action"),
    [
        (attribute(action="edit"), "edit"),
        (attribute(action="EDIT"), "edit"),
        (attribute(action="edit", deleted=True), "delete"),
        (attribute(action=None, deleted="1"), "delete"),
        (attribute(action="delete"), "delete"),
        (attribute(action=None), ""),
    ],
)
def test_attribute_actions(raw: bytes, action: str) -> None:
    message = parse_message(raw)
    assert isinstance(message, AttributeChange)
    assert message.action == action


def test_what_a_message_does_not_carry_is_unknown() -> None:
    bare = frame("misp_json_attribute", {"Attribute": {"type": "ip-dst", "value": "45.9.1.7"}, "action": "add"})
    message = parse_message(bare)
    assert isinstance(message, AttributeChange)
    assert message.known == {Known.TAGS}  # no Tag: no tags (MISP omits the key)
    with_tags = parse_message(attribute(event={"Tag": [{"name": "osint"}], "publish_timestamp": str(NOW)}))
    assert isinstance(with_tags, AttributeChange)
    assert {Known.EVENT_TAGS, Known.PUBLISH_TIMESTAMP} <= with_tags.known
    assert with_tags.attribute.tags == ("osint",)


def test_events() -> None:
    edit = parse_message(event(published=False))
    assert isinstance(edit, EventChange)
    assert (edit.topic, edit.action, edit.published, edit.org, edit.attributes) == (
        Topic.EVENT, "edit", False, "CIRCL", None
    )  # fmt: skip
    assert not edit.is_publish and not edit.is_delete
    whole = parse_message(event("misp_json", action=None, attrs=[{"type": "ip-src", "value": "45.1.1.1"}]))
    assert isinstance(whole, EventChange)
    assert whole.is_publish and topic_of(whole) is Topic.PUBLISH
    assert [a.value for a in whole.attributes or ()] == ["45.1.1.1"]
    assert parse_message(event(action="publish", published=False)).is_publish  # type: ignore[union-attr]
    assert parse_message(event(action="edit", published=True)).is_publish  # type: ignore[union-attr]
    deleted = parse_message(event(action="delete", published=True))
    assert isinstance(deleted, EventChange)
    assert deleted.is_delete and not deleted.is_publish


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe misp", "not_utf8"),
        (b"misp_json_attribute \xff\xfe\x00", "not_utf8"),
        (b"", "unknown_topic"),
        (b'misp_json_sighting {"Sighting": {}}', "unknown_topic"),
        (b"misp_json_attributes {}", "unknown_topic"),
        (b"misp_json_attribute {not json", "invalid_json"),
        (b"misp_json_attribute", "invalid_json"),
        (b"misp_json_self", "invalid_json"),
        (b"misp_json_event []", "not_an_object"),
        (b'misp_json_self "alive"', "not_an_object"),
        (b'misp_json_attribute {"Attribute": {"type": 4, "value": "x"}}', "no_attribute"),
        (b'misp_json_attribute {"Attribute": "45.9.1.7"}', "no_attribute"),
        (b'misp_json_attribute {"action": "add"}', "no_attribute"),
        (b'misp_json_event {"action": "edit"}', "no_event"),
        (b'misp_json {"Event": []}', "no_event"),
    ],
)
def test_garbage_is_refused_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(MessageError) as caught:
        parse_message(raw)
    assert caught.value.reason == reason


def test_subscriptions_match_exactly_the_topics_read() -> None:
    def subscribed(topic: str) -> bool:
        return any(f"{topic} {{}}".encode().startswith(s) for s in SUBSCRIPTIONS)

    assert all(subscribed(t.value) for t in Topic)
    assert not any(subscribed(t) for t in ("misp_json_sighting", "misp_json_user", "misp_json_audit", "misp_json_tag"))


# ----------------------------------------------------------------------------------------------- relevance
DEFAULT = filters()
RELEVANCE = [
    # (case, filter sets, message, relevant)
    ("a new matching attribute", DEFAULT, attribute(), True),
    ("an ip-src too", DEFAULT, attribute("ip-src"), True),
    ("a type no filter selects", DEFAULT, attribute("md5", "d41d8cd98f00b204e9800998ecf8427e"), False),
    ("a type no filter selects, edited", DEFAULT, attribute("url", "http://x.example", action="edit"), False),
    ("a new attribute not for IDS", DEFAULT, attribute(to_ids=False), False),
    ("an attribute no longer for IDS", DEFAULT, attribute(to_ids=False, action="edit"), True),
    ("a deleted attribute", DEFAULT, attribute(deleted=True, action="edit"), True),
    ("MISP did not say the action", DEFAULT, attribute(to_ids=False, action=None), True),
    ("toIds null: both", filters(toIds=None), attribute(to_ids=False), True),
    ("another creator org", filters(orgs=["MyOrg"]), attribute(), False),
    ("another creator org, edited", filters(orgs=["MyOrg"]), attribute(action="delete"), False),
    ("the org by name", filters(orgs=["circl"]), attribute(), True),
    ("the org by id", filters(orgs=["7"]), attribute(), True),
    ("an unknown org", filters(orgs=["MyOrg"]), attribute(event={"Orgc": None}), True),
    ("a category not selected", filters(categories=["Payload delivery"]), attribute(), False),
    ("a selected category", filters(categories=["network activity"]), attribute(), True),
    ("too old for maxAge", filters(maxAge="1d"), attribute(timestamp=str(NOW - 3 * 86400)), False),
    ("within maxAge", filters(maxAge="1d"), attribute(), True),
    ("publishedWithin: not in the message", filters(publishedWithin="1d"), attribute(), True),
    ("published only, event unpublished", filters(published=True), attribute(), False),
    ("published only, edited in an unpublished event", filters(published=True), attribute(action="edit"), True),
    ("published only, event published", filters(published=True), attribute(event={"published": True}), True),
    ("a lower threat level", filters(minThreatLevel="high"), attribute(), False),
    ("a threat level high enough", filters(minThreatLevel="medium"), attribute(), True),
    (
        "no threat level in the message",
        filters(minThreatLevel="high"),
        attribute(event={"threat_level_id": None}),
        True,
    ),
    ("tags.any: the event's tags may have it", filters(tags={"any": ["tlp:white"]}), attribute(), True),
    ("tags.any, event tags known", filters(tags={"any": ["tlp:white"]}), attribute(event={"Tag": []}), False),
    (
        "tags.any on the event",
        filters(tags={"any": ["tlp:%"]}),
        attribute(event={"Tag": [{"name": "tlp:white"}]}),
        True,
    ),
    ("tags.none on the attribute", filters(tags={"none": ["tlp:red"]}), attribute(Tag=[{"name": "TLP:RED"}]), False),
    (
        "tags.none, edited",
        filters(tags={"none": ["tlp:red"]}),
        attribute(Tag=[{"name": "tlp:red"}], action="edit"),
        True,
    ),
    (
        "anyOf: the domain group's org",
        filters(anyOf=[{"types": ["domain"], "orgs": ["CIRCL"]}, {"orgs": ["X"]}]),
        attribute("domain", "evil.example"),
        True,
    ),
    (
        "anyOf: no group takes it",
        filters(anyOf=[{"types": ["domain"], "orgs": ["Y"]}, {"orgs": ["X"]}]),
        attribute("domain", "evil.example"),
        False,
    ),
    (
        "a publish of the whole event",
        DEFAULT,
        event("misp_json", action=None, attrs=[{"type": "ip-dst", "value": "45.1.1.1"}]),
        True,
    ),
    (
        "a publish of an event without selected types",
        DEFAULT,
        event("misp_json", action=None, attrs=[{"type": "md5", "value": "d41d8cd98f00b204e9800998ecf8427e"}]),
        False,
    ),
    ("a publish without the attributes", DEFAULT, event(action="publish", published=True), True),
    ("saved as published", DEFAULT, event(action="edit", published=True), True),
    ("a publish by another org", filters(orgs=["MyOrg"]), event(action="publish"), False),
    ("an event deleted", DEFAULT, event(action="delete"), True),
    ("an event deleted by another org", filters(orgs=["MyOrg"]), event(action="delete"), False),
    ("an unpublished event edited", DEFAULT, event(published=False), False),
    ("an unpublished event edited, published filter", filters(published=True), event(published=False), True),
    ("an unpublished event edited, tag filter", filters(tags={"none": ["tlp:red"]}), event(published=False), True),
    ("an unpublished event edited, threat filter", filters(minThreatLevel="low"), event(published=False), True),
    ("a heartbeat", DEFAULT, frame("misp_json_self", {"status": "alive", "uptime": 10}), False),
]


@pytest.mark.parametrize(("case", "filter_sets", "raw", "relevant"), RELEVANCE, ids=[c[0] for c in RELEVANCE])
def test_relevance(case: str, filter_sets: tuple[FilterSet, ...], raw: bytes, relevant: bool) -> None:
    assert is_relevant(parse_message(raw), filter_sets, NOW) is relevant, case


def test_relevance_uses_the_filter_module() -> None:
    """A filter set that rules nothing out takes any message; one that selects nothing takes none."""
    anything = (FilterSet(types=("ip-dst",), to_ids=None, tags=TagFilter()),)
    assert is_relevant(parse_message(attribute(to_ids=False)), anything, NOW)
    assert not is_relevant(parse_message(attribute()), (FilterSet(types=("domain",)),), NOW)


# ------------------------------------------------------------------------------------------------ debounce
def test_a_burst_is_synced_once_after_a_quiet_debounce() -> None:
    burst = add_to_burst(None, 100.0, 10.0)
    assert (burst.first, burst.last, burst.due, burst.count) == (100.0, 100.0, 110.0, 1)
    for t in (101.0, 105.0, 109.5):
        burst = add_to_burst(burst, t, 10.0)
    assert (burst.first, burst.last, burst.due, burst.count) == (100.0, 109.5, 119.5, 4)


def test_a_steady_stream_is_synced_at_the_latest_three_debounces_after_its_first_message() -> None:
    burst = add_to_burst(None, 0.0, 10.0)
    for t in range(1, 100):
        burst = add_to_burst(burst, float(t), 10.0)
    assert burst.due == 30.0
    assert burst.count == 100


def test_postpone_never_moves_a_sync_earlier() -> None:
    burst = add_to_burst(None, 0.0, 10.0)
    assert postpone(burst, 25.0).due == 25.0
    assert postpone(burst, 5.0).due == 10.0


# ---------------------------------------------------------------------------------------------------- spec
def misp_source(**zmq: Any) -> dict[str, Any]:
    return {"misp": {"url": "https://misp.example.org", "zmq": zmq}}


def test_spec_zmq() -> None:
    spec = parse_spec({"source": misp_source(url="tcp://misp.misp.svc:50000")})
    assert spec.source.misp is not None and spec.source.misp.zmq is not None
    assert (spec.source.misp.zmq.url, spec.source.misp.zmq.debounce_seconds) == ("tcp://misp.misp.svc:50000", 10)
    spec = parse_spec({"source": misp_source(url="tcp://[2001:db8::7]:50000", debounce="2m")})
    assert spec.source.misp is not None and spec.source.misp.zmq is not None
    assert spec.source.misp.zmq.debounce_seconds == 120
    assert parse_spec({"source": {"misp": {"url": "https://misp.example.org"}}}).source.misp.zmq is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("zmq", "path"),
    [
        ({}, "spec.source.misp.zmq.url"),
        ({"url": "misp:50000"}, "spec.source.misp.zmq.url"),
        ({"url": "http://misp:50000"}, "spec.source.misp.zmq.url"),
        ({"url": "tcp://misp"}, "spec.source.misp.zmq.url"),
        ({"url": "tcp://misp:65536"}, "spec.source.misp.zmq.url"),
        ({"url": "tcp://misp:050000"}, "spec.source.misp.zmq.url"),
        ({"url": "tcp://[not:v6:zz]:50000"}, "spec.source.misp.zmq.url"),
        ({"url": "tcp://misp:50000/x"}, "spec.source.misp.zmq.url"),
        ({"url": "tcp://*:50000"}, "spec.source.misp.zmq.url"),
        ({"url": "tcp://misp:50000", "debounce": "10"}, "spec.source.misp.zmq.debounce"),
        ({"url": "tcp://misp:50000", "debounce": "6m"}, "spec.source.misp.zmq.debounce"),
        ({"url": "tcp://misp:50000", "debounce": "0s"}, "spec.source.misp.zmq.debounce"),
        ({"url": "tcp://misp:50000", "debounce": 5}, "spec.source.misp.zmq.debounce"),
        ({"url": "tcp://misp:50000", "heartbeat": "10s"}, "spec.source.misp.zmq.heartbeat"),
    ],
)
def test_spec_zmq_errors_name_the_field(zmq: dict[str, Any], path: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec({"source": misp_source(**zmq)})
    assert str(caught.value).startswith(path)


URLS = [
    "tcp://misp:50000", "tcp://misp.misp.svc.cluster.local:50000", "tcp://10.0.0.7:1", "tcp://[::1]:65535",
    "tcp://MISP-1:9", "tcp://misp:65536", "tcp://misp:0", "tcp://misp:050000", "tcp://misp", "tcp://-misp:5",
    "tcp://misp-:5", "tcp://*:50000", "http://misp:50000", "tcp://misp:5 ", " tcp://misp:5", "tcp://mi sp:5",
]  # fmt: skip


def test_the_crd_accepts_the_same_zmq_urls_as_spec_py() -> None:
    (version,) = yaml.safe_load(CRD.read_text(encoding="utf-8"))["spec"]["versions"]
    misp = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["source"]["properties"]["misp"]
    node = misp["properties"]["zmq"]
    assert node["required"] == ["url"]
    assert node["properties"]["debounce"]["default"] == "10s"
    pattern = node["properties"]["url"]["pattern"]
    for url in URLS:
        try:
            parse_spec({"source": misp_source(url=url)})
            accepted = True
        except SpecError:
            accepted = False
        assert bool(re.search(pattern, url)) is accepted, url
    assert "<= 300" in node["properties"]["debounce"]["x-kubernetes-validations"][0]["rule"]


# ----------------------------------------------------------------------------------------------- condition
def test_a_sync_keeps_the_live_updates_condition_where_it_was() -> None:
    t0, t1 = datetime(2026, 1, 5, 12, tzinfo=UTC), datetime(2026, 1, 5, 13, tzinfo=UTC)
    live = Condition(LIVE_UPDATES, True, "Receiving", "subscribed")
    first = build_conditions(None, [Condition("Ready", True, "RulesApplied", "ok"), Condition("Degraded", False,
                             "Synced", "ok")], t0, 1)  # fmt: skip
    with_live = build_conditions(first, [live], t0, 1)
    assert [c["type"] for c in with_live] == ["Ready", "Degraded", LIVE_UPDATES]
    synced = build_conditions(with_live, [Condition("Ready", True, "RulesApplied", "ok"), Condition("Degraded", True,
                              "SourceFailed", "down")], t1, 2)  # fmt: skip
    assert [c["type"] for c in synced] == ["Ready", "Degraded", LIVE_UPDATES]
    assert synced[2] == with_live[2]  # untouched, lastTransitionTime and observedGeneration included
    assert synced[1]["lastTransitionTime"] == "2026-01-05T13:00:00Z"
    removed = build_conditions(synced, [], t1, 2, remove=(LIVE_UPDATES,))
    assert [c["type"] for c in removed] == ["Ready", "Degraded"]
