"""What an incremental MISP refresh knows, and the pure steps that keep it equal to a full fetch (issue 14, goal 3).

A :class:`MispSnapshot` is the feed's attributes as a full fetch would return them (each with the filter sets that
selected it and its MISP id, which order a full fetch), plus every event's mark from MISP's slim event index
(``/events/index`` with ``minimal``: id, uuid, timestamp, published). MISP sets an event's ``timestamp`` whenever
the event or any of its attributes is saved (an attribute added, edited, soft-deleted, tagged, its ``to_ids``
flipped; event tags or threat level changed), and deleting an event removes it from the index. So comparing two
indexes names every event whose attributes may have changed (:func:`diff_events`): new, re-stamped, published or
unpublished, gone. Those events alone are asked for again, with the feed's own filters (server-side, as in a full
fetch), and :func:`merge` replaces their attributes: state + delta -> state, no I/O, no clock.

What this cannot see is a reason for a full fetch instead (:func:`incremental_blocker`, :func:`full_reason`): MISP's
warninglist and decay post-filters (they change without any event changing), ``publishedWithin`` (the publish time is
not in MISP 2.5's restSearch answer), a spec or key change, an event stamped earlier than before (a restored
database: the watermark went back), too many changed events, and the slower full schedule. ``maxAge`` is applied to
the kept attributes on each refresh (:func:`age_out`), as MISP applies it to a full fetch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from falco_misp.feed.model import Feed
from falco_misp.sources.attributes import Attribute, EventContext, attribute_from_json

# A refresh that finds more changed events than this share of the known ones fetches everything instead: one
# paged query costs MISP less than that many event-scoped ones.
MAX_CHANGED_SHARE = 0.25
MAX_CHANGED_EVENTS = 500  # eventid lists stay short enough for one query each


@dataclass(frozen=True, slots=True)
class EventMark:
    """One event's line in MISP's slim index."""

    id: str
    """MISP's numeric event id (what restSearch's ``eventid`` takes)."""
    timestamp: int
    """When the event or one of its attributes was last saved."""
    published: bool
    """Whether the event is published (publishing does not change ``timestamp``)."""


@dataclass(frozen=True, slots=True)
class Member:
    """One attribute of the feed, as a full fetch returns it."""

    group: int
    """The first filter set (``anyOf`` group) that selects it: a full fetch yields it with that group's page."""
    id: int
    """MISP's attribute id (pages ascend by it)."""
    groups: int
    """Every filter set that selects it (bit ``i`` for group ``i``)."""
    attribute: Attribute
    """The attribute."""


@dataclass(frozen=True)
class MispSnapshot:
    """A MISP feed's attributes and the event index they were read against."""

    key: str
    """Digest of what shapes the fetch (spec, API key): another key means another feed, a full fetch."""
    events: Mapping[str, EventMark]
    """Every event in MISP's index (uuid -> mark), read before the attributes."""
    members: Mapping[str, Member]
    """The feed's attributes (by uuid, or uuid and MISP id: :func:`members_from_pages`)."""
    full_at: int
    """When (epoch seconds) the last full fetch began."""
    unsettled: frozenset[str] = frozenset()
    """Events stamped within a second of the index read (MISP stamps whole seconds): asked for again next time."""


@dataclass(frozen=True)
class EventChanges:
    """What two event indexes say changed."""

    changed: frozenset[str]
    """Events to ask for again: new, re-stamped, (un)published, or unsettled."""
    deleted: frozenset[str]
    """Events gone from MISP: their attributes go."""
    doubt: str | None = None
    """Why the indexes cannot be trusted for a delta (a full fetch follows), else None."""


def snapshot_key(feed: Feed, auth_key: str | None) -> str:
    """What a snapshot is valid for: the whole spec (any change: a full fetch) and the key (what MISP shows)."""
    key = hashlib.sha256((auth_key or "").encode("utf-8", "surrogatepass")).hexdigest()
    return hashlib.sha256(f"{feed.namespace}/{feed.name}\0{feed.spec!r}\0{key}".encode()).hexdigest()


def incremental_blocker(feed: Feed) -> str | None:
    """Why this feed is always fetched in full, or None when it can be refreshed incrementally."""
    if feed.spec.source.misp is None:
        return f"a {feed.spec.source.kind} source has no change index"
    for filters in feed.spec.filters:
        if filters.enforce_warninglist:
            return "enforceWarninglist: MISP's warninglists change without any event changing"
        if filters.exclude_decayed:
            return "excludeDecayed: decay scores change with time, without any event changing"
        if filters.published_within_seconds is not None:
            return "publishedWithin: MISP's restSearch answer does not carry the event's publish time"
    return None


def event_marks(rows: object) -> dict[str, EventMark]:
    """MISP's slim event index (``/events/index`` with ``minimal``) as marks; raises ``ValueError`` on another
    shape."""
    if isinstance(rows, Mapping) and "response" in rows:
        rows = rows["response"]
    if not isinstance(rows, list):
        raise ValueError(f"not an event index: expected a list of events, got {type(rows).__name__}")
    marks: dict[str, EventMark] = {}
    for entry in rows:
        row = entry["Event"] if isinstance(entry, Mapping) and isinstance(entry.get("Event"), Mapping) else entry
        uuid, event_id, stamp = (row.get(k) if isinstance(row, Mapping) else None for k in ("uuid", "id", "timestamp"))
        if not isinstance(uuid, str) or not uuid or not str(event_id or "").isdigit() or not str(stamp).isdigit():
            raise ValueError("not an event index: an entry without uuid, numeric id and timestamp")
        assert isinstance(row, Mapping)
        published = row.get("published")
        flag = published if isinstance(published, bool) else str(published).strip().lower() in ("1", "true")
        marks[uuid] = EventMark(id=str(event_id), timestamp=int(str(stamp)), published=flag)
    return marks


def unsettled_events(events: Mapping[str, EventMark], read_at: int | None) -> frozenset[str]:
    """Events MISP may stamp again within the second it stamped them (``read_at``: the index answer's time)."""
    if read_at is None:
        return frozenset()
    return frozenset(uuid for uuid, mark in events.items() if mark.timestamp >= read_at - 1)


def diff_events(snapshot: MispSnapshot, events: Mapping[str, EventMark]) -> EventChanges:
    """The events whose attributes may differ from the snapshot's, by the index read now."""
    changed: set[str] = set()
    for uuid, mark in events.items():
        old = snapshot.events.get(uuid)
        if old is None or uuid in snapshot.unsettled or old != mark:
            changed.add(uuid)
        if old is not None and (mark.timestamp < old.timestamp or mark.id != old.id):
            return EventChanges(frozenset(), frozenset(), f"event {uuid} went back in time or changed id")
    deleted = frozenset(snapshot.events.keys() - events.keys())
    if len(changed) > MAX_CHANGED_EVENTS or (len(changed) > 10 and len(changed) > len(events) * MAX_CHANGED_SHARE):
        return EventChanges(frozenset(changed), deleted, f"{len(changed)} of {len(events)} events changed")
    return EventChanges(frozenset(changed), deleted)


def members_from_pages(pages: Iterable[tuple[int, list[dict[str, Any]]]], *, dedupe: bool) -> dict[str, Member]:
    """The members in restSearch pages ``(group, rows)``, read as a full fetch reads them (groups in order, pages
    by ascending id; the first group selecting an attribute is its group).

    ``dedupe`` (several filter sets): one member per attribute uuid, as the full fetch yields each uuid once;
    otherwise one per MISP attribute id (a server repeating a uuid keeps every row, as the full fetch does).
    """
    members: dict[str, Member] = {}
    events: dict[str, EventContext] = {}
    for group, rows in pages:
        for raw in rows:
            attr = attribute_from_json(raw, cache=events)
            if attr is None:
                continue
            raw_id = raw.get("id")
            attr_id = int(raw_id) if isinstance(raw_id, str | int) and str(raw_id).isdigit() else 0
            key = attr.uuid if dedupe else f"{attr.uuid}#{attr_id}"
            known = members.get(key)
            if known is not None:
                if dedupe:
                    members[key] = Member(known.group, known.id, known.groups | 1 << group, known.attribute)
                    continue
                key = f"{key}#{len(members)}"  # the same row twice: kept twice, as the full fetch yields it
            members[key] = Member(group, attr_id, 1 << group, attr)
    return members


def merge(
    snapshot: MispSnapshot,
    events: Mapping[str, EventMark],
    changes: EventChanges,
    fetched: Mapping[str, Member],
    unsettled: frozenset[str] = frozenset(),
) -> MispSnapshot:
    """The snapshot after a delta: the attributes of changed and deleted events replaced by ``fetched`` (the
    current attributes of the changed events, by the feed's filters), the index replaced by ``events``."""
    replaced = changes.changed | changes.deleted
    members = {u: m for u, m in snapshot.members.items() if m.attribute.event_uuid not in replaced}
    for uuid, member in fetched.items():
        members[uuid] = member
    return MispSnapshot(snapshot.key, dict(events), members, snapshot.full_at, unsettled)


def age_out(snapshot: MispSnapshot, feed: Feed, now: int) -> MispSnapshot:
    """``maxAge`` applied at ``now``: a group no longer selects attributes stamped before ``now - maxAge``, as in a
    full fetch made now. The same snapshot when nothing aged out."""
    limits = [(i, now - f.max_age_seconds) for i, f in enumerate(feed.spec.filters) if f.max_age_seconds is not None]
    if not limits:
        return snapshot
    changed: dict[str, Member | None] = {}
    for uuid, member in snapshot.members.items():
        groups = member.groups
        for group, oldest in limits:
            if groups >> group & 1 and member.attribute.timestamp < oldest:
                groups &= ~(1 << group)
        if groups != member.groups:
            first = (groups & -groups).bit_length() - 1
            changed[uuid] = Member(first, member.id, groups, member.attribute) if groups else None
    if not changed:
        return snapshot
    members = {u: m for u, m in snapshot.members.items() if u not in changed}
    members.update({u: m for u, m in changed.items() if m is not None})
    return MispSnapshot(snapshot.key, snapshot.events, members, snapshot.full_at, snapshot.unsettled)


def ordered_attributes(snapshot: MispSnapshot) -> list[Attribute]:
    """The attributes in the order a full fetch yields them (group by group, ascending MISP id)."""
    return [m.attribute for m in sorted(snapshot.members.values(), key=lambda m: (m.group, m.id))]


def group_counts(snapshot: MispSnapshot, groups: int) -> list[int]:
    """How many attributes each filter set selects (what MISP's ``X-Result-Count`` of its query says)."""
    counts = [0] * groups
    for member in snapshot.members.values():
        for group in range(groups):
            counts[group] += member.groups >> group & 1
    return counts
