"""Incremental MISP refresh (issue 14, goal 3): whatever MISP changes, the incremental state equals a full fetch.

Through the real PyMISP against the MISP emulator on loopback. The emulator changes its data as MISP 2.5 does
(timestamps included: tests/emulators/misp.py, "changes, as MISP makes them"); after each change, a refresh that
keeps its state between calls must render the same indicators and the same bytes as a fresh full fetch.
An unchanged MISP costs one small request (the slim event index) and renders nothing new.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulators.misp import MispEmulator
from falco_misp.feed.model import Feed
from falco_misp.feed.parse import parse_feed
from falco_misp.pipeline import IncrementalRefresh, fetch_and_render, refresh_and_render
from falco_misp.sources.incremental import (
    EventMark,
    MispSnapshot,
    diff_events,
    event_marks,
    unsettled_events,
)
from falco_misp.sources.locations import FetchContext
from falco_misp.sources.refresh import DELTA, FULL, UNCHANGED
from helpers import misp_event

NOW = 1_790_000_000  # before the wall clock: the emulator's Date header must come after every stamp
TAGS = ["tlp:green", "tlp:red", "osint"]
VALUES = [f"45.0.{i}.{j}" for i in range(3) for j in range(1, 4)] + ["not-an-ip", "46.1.0.0/24", "2a00:1::5"]

FILTERS: dict[str, dict[str, Any]] = {
    "plain": {"types": ["ip-dst", "ip-src"]},
    "tags-published": {"types": ["ip-dst", "ip-src"], "tags": {"none": ["tlp:red"]}, "published": True},
    "any-of": {"anyOf": [{"types": ["ip-dst"], "tags": {"any": ["osint"]}}, {"types": ["ip-src", "ip-dst"],
                                                                            "orgs": ["OrgA"]}]},
    "max-age": {"types": ["ip-dst", "ip-src"], "maxAge": "30d"},
}  # fmt: skip


def events() -> list[dict[str, Any]]:
    out = []
    for e in range(1, 4):
        attrs = [
            {"type": ["ip-dst", "ip-src"][i % 2], "value": VALUES[(e * 3 + i) % len(VALUES)], "to_ids": i != 2,
             "Tag": [TAGS[(e + i) % 3]], "timestamp": str(NOW - 86400 * {1: 40, 3: 25}.get(i, 0) - e)}
            for i in range(4)
        ]  # fmt: skip
        out.append(misp_event(e, attrs, org="OrgA" if e != 2 else "OrgB", publish_timestamp=NOW - 100))
    return out


class Clock:
    """MISP's "now": one second later at each change (MISP stamps whole seconds)."""

    def __init__(self) -> None:
        self.now = NOW - 50

    def __call__(self) -> float:
        self.now += 1
        return self.now


@pytest.fixture(scope="module")
def server() -> Iterator[MispEmulator]:
    with MispEmulator() as misp:
        yield misp


CLOCK = Clock()  # one for the whole module: the emulator's stamps outlive clear(), MISP time never goes back


def reset(misp: MispEmulator) -> None:
    misp.clear()
    misp.clock = CLOCK
    for event in events():
        misp.add_event(event)


def feed_for(misp: MispEmulator, filters: dict[str, Any], page_size: int = 3, full: str = "30d") -> Feed:
    spec = {"source": {"misp": {"url": misp.url, "timeoutSeconds": 5, "pageSize": page_size}}, "filters": filters,
            "refresh": {"fullInterval": full}}  # fmt: skip
    return parse_feed({"metadata": {"name": "incr"}, "spec": spec})


def ctx_for(misp: MispEmulator, now: int = NOW) -> FetchContext:
    return FetchContext(now=now, auth_key=misp.api_key)


# One change to MISP: (kind, which attribute or event, a parameter), applied by `apply`.
change = st.tuples(
    st.sampled_from(["add", "value", "to_ids", "delete", "tag", "event_tag", "unpublish", "publish",
                     "delete_event", "threat", "type", "nothing"]),
    st.integers(0, 100),
    st.integers(0, 100),
)  # fmt: skip


def apply(misp: MispEmulator, kind: str, which: int, param: int) -> None:
    live = [e for e in misp.events]
    if not live:
        return
    event = live[which % len(live)]
    uuids = [a["uuid"] for a in misp.search({"eventid": event["id"], "deleted": [0, 1]})[0]]
    attr = uuids[param % len(uuids)] if uuids else None
    if kind == "add":
        misp.add_attribute(event["uuid"], {"type": ["ip-dst", "ip-src"][param % 2], "value": VALUES[which % len(
            VALUES)], "to_ids": param % 3 != 0, "Tag": [{"name": TAGS[param % 3]}]})  # fmt: skip
    elif kind == "value" and attr:
        misp.edit_attribute(attr, value=VALUES[param % len(VALUES)])
    elif kind == "to_ids" and attr:
        misp.edit_attribute(attr, to_ids=param % 2 == 0)
    elif kind == "delete" and attr:
        misp.delete_attribute(attr)
    elif kind == "tag" and attr:
        misp.edit_attribute(attr, Tag=[{"name": TAGS[param % 3]}])
    elif kind == "type" and attr:
        misp.edit_attribute(attr, type=["ip-dst", "ip-src", "domain"][param % 3])
    elif kind == "event_tag":
        misp.edit_event(event["uuid"], Tag=[{"name": TAGS[param % 3]}] if param % 4 else [])
    elif kind == "threat":
        misp.edit_event(event["uuid"], threat_level_id=str(1 + param % 4))
    elif kind in ("unpublish", "publish"):
        misp.publish_event(event["uuid"], kind == "publish")
    elif kind == "delete_event":
        misp.delete_event(event["uuid"])


def same(feed: Feed, misp: MispEmulator, refresh: IncrementalRefresh, now: int = NOW) -> None:
    incremental = refresh_and_render(feed, ctx_for(misp, now), refresh)
    full = fetch_and_render(feed, ctx_for(misp, now))
    assert incremental.indicators == full.indicators
    assert incremental.fetched == full.fetched
    assert [(s.filename, s.content) for s in incremental.bundle.shards] == [
        (s.filename, s.content) for s in full.bundle.shards
    ]


@pytest.mark.parametrize("filters", sorted(FILTERS))
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.lists(st.lists(change, min_size=0, max_size=3), min_size=1, max_size=4))
def test_incremental_state_equals_a_full_fetch(server: MispEmulator, filters: str, changes: list[Any]) -> None:
    reset(server)
    feed = feed_for(server, FILTERS[filters])
    refresh = IncrementalRefresh()
    same(feed, server, refresh)
    assert refresh.last is not None and refresh.last.mode == FULL
    for step, batch in enumerate(changes):
        for kind, which, param in batch:
            apply(server, kind, which, param)
        same(feed, server, refresh, NOW + step * 86400 * 3)  # maxAge: attributes also age out between refreshes
        assert refresh.last is not None
        assert refresh.last.mode != FULL, refresh.last.reason  # every change is seen as a delta


def test_unchanged_misp_costs_one_small_request(server: MispEmulator) -> None:
    reset(server)
    feed = feed_for(server, FILTERS["tags-published"])
    refresh = IncrementalRefresh()
    first = refresh_and_render(feed, ctx_for(server), refresh)
    before = len(server.requests)
    again = refresh_and_render(feed, ctx_for(server), refresh)
    made = server.requests[before:]
    data = [r for r in made if r.path.startswith(("/attributes/restSearch", "/events/index"))]
    assert [r.path for r in data] == ["/events/index"]
    assert refresh.last is not None and (refresh.last.mode, refresh.last.requests) == (UNCHANGED, 1)
    assert again is first  # nothing rendered again: same bytes, same hash, no write
    assert len(made[-1].body) < 200 and data[0].json == {"minimal": True}


def test_a_change_asks_only_for_the_changed_event(server: MispEmulator) -> None:
    reset(server)
    feed = feed_for(server, FILTERS["plain"])
    refresh = IncrementalRefresh()
    refresh_and_render(feed, ctx_for(server), refresh)
    event = server.events[1]
    server.add_attribute(event["uuid"], {"type": "ip-dst", "value": "47.1.1.1", "to_ids": True})
    before = len(server.requests)
    result = refresh_and_render(feed, ctx_for(server), refresh)
    searches = [r.json or {} for r in server.requests[before:] if r.path.startswith("/attributes/restSearch")]
    assert refresh.last is not None and refresh.last.mode == DELTA
    assert any("47.1.1.1" in v for v in result.indicators.addresses.values())
    scoped = [s for s in searches if s.get("limit") != 1]  # the count checks ask for one attribute each
    assert scoped and all(s.get("eventid") == [event["id"]] for s in scoped)


def test_spec_change_and_full_interval_fetch_everything(server: MispEmulator) -> None:
    reset(server)
    refresh = IncrementalRefresh()
    refresh_and_render(feed_for(server, FILTERS["plain"]), ctx_for(server), refresh)
    refresh_and_render(feed_for(server, FILTERS["tags-published"]), ctx_for(server), refresh)
    assert refresh.last is not None and refresh.last.mode == FULL and "spec" in refresh.last.reason
    feed = feed_for(server, FILTERS["tags-published"])
    refresh_and_render(feed, ctx_for(server, NOW + 3600), refresh)
    assert refresh.last.mode == UNCHANGED
    refresh_and_render(feed, ctx_for(server, NOW + 30 * 86400), refresh)
    assert refresh.last.mode == FULL and "fullInterval" in refresh.last.reason


def test_deleted_event_outside_the_index_is_dropped(server: MispEmulator) -> None:
    reset(server)
    feed = feed_for(server, FILTERS["plain"])
    refresh = IncrementalRefresh()
    refresh_and_render(feed, ctx_for(server), refresh)
    server.delete_event(server.events[0]["uuid"])
    same(feed, server, refresh)
    assert refresh.last is not None and refresh.last.mode == DELTA


def test_event_stamped_earlier_is_a_doubt() -> None:
    snapshot = MispSnapshot("k", {"e": EventMark("1", 10, True)}, {}, 0)
    assert diff_events(snapshot, {"e": EventMark("1", 9, True)}).doubt
    assert diff_events(snapshot, {"e": EventMark("1", 10, False)}).changed == {"e"}
    assert diff_events(snapshot, {}).deleted == {"e"}


def test_events_stamped_in_the_second_of_the_read_are_asked_for_again() -> None:
    marks = event_marks([{"id": "1", "uuid": "a", "timestamp": "100", "published": True},
                         {"id": "2", "uuid": "b", "timestamp": "90", "published": "0"}])  # fmt: skip
    assert marks["b"] == EventMark("2", 90, False)
    assert unsettled_events(marks, 101) == {"a"}
    snapshot = MispSnapshot("k", marks, {}, 0, unsettled_events(marks, 101))
    assert diff_events(snapshot, marks).changed == {"a"}
    with pytest.raises(ValueError, match="event index"):
        event_marks({"errors": "no"})


def test_source_failure_keeps_the_state(server: MispEmulator) -> None:
    from emulators.misp import Fault
    from falco_misp.errors import SourceError

    reset(server)
    feed = feed_for(server, FILTERS["plain"])
    refresh = IncrementalRefresh()
    refresh_and_render(feed, ctx_for(server), refresh)
    kept = refresh.snapshot
    server.add_attribute(server.events[0]["uuid"], {"type": "ip-dst", "value": "47.2.2.2", "to_ids": True})
    server.fault = Fault.status(500, paths=("/attributes/restSearch",))
    try:
        with pytest.raises(SourceError):
            refresh_and_render(feed, ctx_for(server), refresh)
    finally:
        server.fault = None
    assert refresh.snapshot is kept
    same(feed, server, refresh)
