"""MISP's ZeroMQ messages as values, whether one may change a feed, and when its sync is due (pure core, issue 7).

MISP's publisher (``app/files/scripts/mispzmq/mispzmq.py``) sends one frame per message, ``<topic> <json>``.
The topics read here:

- ``misp_json_attribute``: an attribute was added, edited or deleted, as MISP's ``Attribute::fetchAttribute``
  reads it: ``{"Attribute": {type, value, category, to_ids, timestamp, deleted, Tag...}, "Event": {id, uuid,
  orgc_id, published, threat_level_id, Orgc{name}...}, "action": "add" | "edit" | "delete"}`` (never the event's
  tags);
- ``misp_json_event``: an event was saved, published or deleted: ``{"Event": {...}, "action": ...}``;
- ``misp_json``: the whole event (its attributes included), sent when it is published;
- ``misp_json_self``: the heartbeat, every 10 s: ``{"status": "...", "uptime": seconds}``.

A message only says *that* something changed: the sync that follows reads the feed through the REST API again, so
nothing here builds state. The relevance test is cheap and conservative: a message is ignored only when it cannot
change what the feed's filters select. It reuses :func:`falco_misp.sources.filters.matches` on the fields the message
carries (a condition on a field the message lacks cannot rule it out):

========================================  ==========================================================================
message                                   relevant when, for some filter set of the feed
========================================  ==========================================================================
attribute ``add``                         the attribute passes the set on every field the message carries
attribute ``edit``/``delete``/no action   its type is selected and its event's creator org accepted (the other
                                          fields may just have changed, so they cannot rule it out)
event publish (``misp_json``, action      the creator org is accepted and the event carries no attribute list or an
``publish``, or saved as published)       attribute of a selected type
event ``delete``                          the same as a publish
event saved unpublished (add, edit)       the creator org is accepted and the set reads event fields an edit can
                                          change (``tags``, ``minThreatLevel``, ``published``)
========================================  ==========================================================================

An attribute whose type is edited from a selected type to another one is the blind spot of this test: the
refresh timer, which keeps running, picks that up.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from falco_misp.conditions import Condition
from falco_misp.feed.model import FilterSet, TagFilter
from falco_misp.sources.attributes import Attribute, EventContext, attribute_from_json, attributes_from_event
from falco_misp.sources.filters import matches, org_matches

#: The status condition telling whether the publisher is heard.
LIVE_UPDATES = "LiveUpdates"
#: A burst of relevant messages is synced at the latest this many debounce periods after its first message.
MAX_WAIT_DEBOUNCES = 3


class Topic(StrEnum):
    """The MISP ZeroMQ topics the operator subscribes to."""

    ATTRIBUTE = "misp_json_attribute"
    """An attribute was added, edited or deleted."""
    EVENT = "misp_json_event"
    """An event was saved, published or deleted."""
    PUBLISH = "misp_json"
    """A whole event, sent when it is published."""
    HEARTBEAT = "misp_json_self"
    """The publisher's heartbeat."""


#: ZeroMQ subscriptions (prefix matches): ``misp_json`` with its separator, so that the sightings, users and audit
#: topics, which all start with ``misp_json_``, are never sent to the operator.
SUBSCRIPTIONS: tuple[bytes, ...] = (b"misp_json_attribute", b"misp_json_event", b"misp_json ", b"misp_json_self")


class Known(StrEnum):
    """The filter fields a message may or may not carry."""

    TAGS = "tags"
    TO_IDS = "to_ids"
    CATEGORY = "category"
    TIMESTAMP = "timestamp"
    ORG = "org"
    THREAT_LEVEL = "threat_level"
    PUBLISHED = "published"
    PUBLISH_TIMESTAMP = "publish_timestamp"
    EVENT_TAGS = "event_tags"


class MessageError(ValueError):
    """A frame that is not a MISP message we read: counted by ``reason`` and ignored."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        """A short fixed label (a metric label): ``not_utf8``, ``unknown_topic``, ``invalid_json``..."""


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """``misp_json_self``: the publisher is alive."""

    uptime: int | None = None
    """Seconds since the publisher started, when it says."""


@dataclass(frozen=True, slots=True)
class AttributeChange:
    """``misp_json_attribute``: one attribute with what the message tells of its event."""

    attribute: Attribute
    """The attribute as it is now (a deleted one too)."""
    action: str
    """``add``, ``edit``, ``delete`` (also when the attribute is flagged deleted), or empty when MISP did not say."""
    known: frozenset[Known]
    """The filter fields the message carries; the others cannot rule the attribute out."""


@dataclass(frozen=True, slots=True)
class EventChange:
    """``misp_json_event`` or ``misp_json``: an event was saved, published or deleted."""

    topic: Topic
    """Which topic it came on."""
    action: str
    """``add``, ``edit``, ``publish``, ``delete``, or empty when MISP did not say."""
    published: bool | None
    """Whether the event is published now (None: the message does not say)."""
    org: str
    """The creator org's name (empty when the message does not say)."""
    org_id: str
    """The creator org's id (empty when the message does not say)."""
    attributes: tuple[Attribute, ...] | None
    """The event's attributes, objects' included (None: the message does not carry them)."""

    @property
    def is_publish(self) -> bool:
        """A publish: the whole event on ``misp_json``, the ``publish`` action, or a save of a published event."""
        if self.topic is Topic.PUBLISH or self.action == "publish":
            return True
        return self.action != "delete" and self.published is True

    @property
    def is_delete(self) -> bool:
        """The event was deleted."""
        return self.action == "delete"


LiveMessage = Heartbeat | AttributeChange | EventChange


def topic_of(message: LiveMessage) -> Topic:
    """The topic a message came on."""
    if isinstance(message, Heartbeat):
        return Topic.HEARTBEAT
    if isinstance(message, AttributeChange):
        return Topic.ATTRIBUTE
    return message.topic


# --------------------------------------------------------------------------------------------------- parsing
def parse_message(frame: bytes) -> LiveMessage:
    """One ZeroMQ frame, ``<topic> <json>``; :class:`MessageError` for anything else."""
    try:
        text = frame.decode("utf-8")
    except UnicodeDecodeError:
        raise MessageError("not_utf8", "the frame is not UTF-8 text") from None
    name, _, payload = text.partition(" ")
    try:
        topic = Topic(name)
    except ValueError:
        raise MessageError("unknown_topic", f"topic {name[:64]!r}") from None
    try:
        document = json.loads(payload)
    except ValueError:
        raise MessageError("invalid_json", f"{topic}: the payload is not JSON") from None
    if not isinstance(document, Mapping):
        raise MessageError("not_an_object", f"{topic}: the payload is {type(document).__name__}, not an object")
    if topic is Topic.HEARTBEAT:
        uptime = document.get("uptime")
        return Heartbeat(uptime if isinstance(uptime, int) and not isinstance(uptime, bool) else None)
    action = document.get("action")
    action = action.strip().lower() if isinstance(action, str) else ""
    if topic is Topic.ATTRIBUTE:
        return _attribute_change(document, action)
    return _event_change(topic, document, action)


def _attribute_change(document: Mapping[str, Any], action: str) -> AttributeChange:
    raw = document.get("Attribute")
    if not isinstance(raw, Mapping) or not isinstance(raw.get("type"), str) or not isinstance(raw.get("value"), str):
        raise MessageError("no_attribute", "misp_json_attribute without an Attribute with a type and a value")
    event_raw = document.get("Event")
    if not isinstance(event_raw, Mapping):  # some versions embed it in the attribute, as restSearch does
        event_raw = raw.get("Event")
    event = event_raw if isinstance(event_raw, Mapping) else {}
    deleted = raw.get("deleted") in (True, 1, "1", "true", "True")
    attribute = attribute_from_json({**raw, "deleted": False}, EventContext.from_event(event) if event else None)
    assert attribute is not None  # a type and a value, not deleted: always an attribute
    known = {Known.TAGS, Known.EVENT_TAGS} if isinstance(event.get("Tag"), list) else {Known.TAGS}
    for key, field in (("to_ids", Known.TO_IDS), ("category", Known.CATEGORY), ("timestamp", Known.TIMESTAMP)):
        if raw.get(key) is not None:
            known.add(field)
    known |= _event_fields(event)
    return AttributeChange(attribute, "delete" if deleted else action, frozenset(known))


def _event_fields(event: Mapping[str, Any]) -> set[Known]:
    known: set[Known] = set()
    orgc = event.get("Orgc")
    if isinstance(orgc, Mapping) and isinstance(orgc.get("name"), str) and orgc["name"]:
        known.add(Known.ORG)
    for key, field in (
        ("threat_level_id", Known.THREAT_LEVEL),
        ("published", Known.PUBLISHED),
        ("publish_timestamp", Known.PUBLISH_TIMESTAMP),
    ):
        if event.get(key) is not None:
            known.add(field)
    return known


def _event_change(topic: Topic, document: Mapping[str, Any], action: str) -> EventChange:
    event = document.get("Event")
    if not isinstance(event, Mapping):
        raise MessageError("no_event", f"{topic} without an Event object")
    context = EventContext.from_event(event)
    has_org = Known.ORG in _event_fields(event)
    carried = isinstance(event.get("Attribute"), list) or isinstance(event.get("Object"), list)
    published = event.get("published")
    return EventChange(
        topic=topic,
        action=action,
        published=None if published is None else context.published,
        org=context.org if has_org else "",
        org_id=context.org_id,
        attributes=tuple(attributes_from_event(event)) if carried else None,
    )


# ------------------------------------------------------------------------------------------------- relevance
def relaxed(filters: FilterSet, known: frozenset[Known]) -> FilterSet:
    """The filter set without its conditions on fields a message does not carry (those cannot rule it out).

    An attribute message always tells the attribute's own tags (MISP omits ``Tag`` when there is none), so
    ``tags.none`` applies to a new attribute; ``tags.any``/``tags.all`` may be met by the event's tags, which MISP's
    messages leave out.
    """
    if Known.TAGS not in known:
        tags = TagFilter()
    elif Known.EVENT_TAGS not in known:
        tags = TagFilter(none=filters.tags.none)
    else:
        tags = filters.tags
    return replace(
        filters,
        to_ids=filters.to_ids if Known.TO_IDS in known else None,
        categories=filters.categories if Known.CATEGORY in known else (),
        max_age_seconds=filters.max_age_seconds if Known.TIMESTAMP in known else None,
        orgs=filters.orgs if Known.ORG in known else (),
        max_threat_level_id=filters.max_threat_level_id if Known.THREAT_LEVEL in known else 4,
        published=filters.published if Known.PUBLISHED in known else None,
        published_within_seconds=filters.published_within_seconds if Known.PUBLISH_TIMESTAMP in known else None,
        tags=tags,
    )


def _org_accepted(filters: FilterSet, org: str, org_id: str) -> bool:
    """The creator org passes ``orgs`` (an unknown org cannot be ruled out)."""
    return not filters.orgs or not org or org_matches(filters.orgs, org, org_id)


def _reads_editable_event_fields(filters: FilterSet) -> bool:
    return bool(filters.tags) or filters.max_threat_level_id < 4 or filters.published is not None


def is_relevant(message: LiveMessage, filter_sets: tuple[FilterSet, ...], now: int) -> bool:
    """Whether the message may change what the feed selects (see the module's table); ``now`` in epoch seconds."""
    if isinstance(message, Heartbeat):
        return False
    if isinstance(message, AttributeChange):
        attr = message.attribute
        known = message.known if message.action == "add" else message.known & {Known.ORG}
        return any(matches(attr, relaxed(f, known), now) for f in filter_sets)
    for f in filter_sets:
        if not _org_accepted(f, message.org, message.org_id):
            continue
        if message.is_publish or message.is_delete:
            if message.attributes is None or any(a.type in f.types for a in message.attributes):
                return True
        elif _reads_editable_event_fields(f):
            return True
    return False


# -------------------------------------------------------------------------------------------------- debounce
@dataclass(frozen=True, slots=True)
class Burst:
    """Relevant messages waiting for their sync (monotonic seconds)."""

    first: float
    """When the first relevant message of the burst came."""
    last: float
    """When the latest one came: a sync that started after it has seen every change of the burst."""
    due: float
    """When the sync runs: ``debounce`` after the latest message, at most ``MAX_WAIT_DEBOUNCES`` after the first."""
    count: int = 1
    """Relevant messages in the burst."""


def add_to_burst(burst: Burst | None, now: float, debounce: float) -> Burst:
    """Start a burst with a relevant message, or extend one (its sync moves later, up to the maximum wait)."""
    if burst is None:
        return Burst(first=now, last=now, due=now + debounce)
    due = min(now + debounce, burst.first + MAX_WAIT_DEBOUNCES * debounce)
    return Burst(first=burst.first, last=now, due=max(due, burst.due), count=burst.count + 1)


def postpone(burst: Burst, until: float) -> Burst:
    """The same burst, synced no earlier than ``until`` (the sync could not run, or failed and is retried)."""
    return replace(burst, due=max(burst.due, until))


# ----------------------------------------------------------------------------------------------- the condition
def receiving(url: str) -> Condition:
    """LiveUpdates=True: the publisher is heard."""
    return Condition(LIVE_UPDATES, True, "Receiving", f"subscribed to {url}: changes in MISP trigger a sync")


def no_heartbeat(url: str, timeout: float, refresh_seconds: int) -> Condition:
    """LiveUpdates=False: nothing came for ``timeout`` seconds (MISP's heartbeat comes every 10 s)."""
    return Condition(
        LIVE_UPDATES,
        False,
        "NoHeartbeat",
        f"nothing from {url} for {timeout:g}s, reconnecting; the refresh timer still syncs every "
        f"{_duration(refresh_seconds)}",
    )


def connect_failed(url: str, detail: str) -> Condition:
    """LiveUpdates=False: the subscription could not even be set up (a bad address)."""
    return Condition(LIVE_UPDATES, False, "ConnectFailed", f"cannot subscribe to {url}: {detail}")


def _duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
