"""``reporting.events``: hits go into one MISP event per feed and day, created on the first hit, appended after
(also by a restarted operator), through the real PyMISP and the MISP emulator."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from reportkit import falco_alert, wait_for
from test_sightings import ATTRS, Stack, make_stack, uuid_of

from emulators.misp import MispEmulator
from falco_misp.reporting.payloads import daily_event_uuid
from falco_misp.reporting.sightings import ReporterConfig
from helpers import misp_event

EVENTS = {"enabled": True, "tags": ["tlp:amber", "falco"], "distribution": 1, "threatLevel": "high",
          "analysis": "ongoing"}  # fmt: skip


@pytest.fixture
def misp() -> Iterator[MispEmulator]:
    with MispEmulator() as server:
        server.add_event(misp_event(42, ATTRS, info="APT-X infrastructure", tags=("tlp:green",)))
        yield server


async def close(stack: Stack) -> None:
    await stack.session.close()
    await stack.intake.stop()
    await stack.reporter.stop()


def attribute_adds(misp: MispEmulator) -> list[str]:
    return [r.path for r in misp.requests if r.path.startswith(("/attributes/add/", "/events/add"))]


async def test_daily_event_is_created_then_appended(misp: MispEmulator) -> None:
    stack = await make_stack(misp, sightings={"enabled": False}, events=EVENTS)
    feed = next(iter(stack.reporter.registry.feeds())).feed
    event_uuid = daily_event_uuid(feed, "prod", "2026-01-05")
    try:
        await stack.post(falco_alert("45.0.0.7"))
        view = await wait_for(lambda: misp.event_view(event_uuid), what="daily event")
        event = view["Event"]
        assert (
            event["info"] == "Falco: connections to addresses of MISP feed security/intel in cluster prod on 2026-01-05"
        )
        assert (event["date"], event["distribution"], event["threat_level_id"], event["analysis"]) == (
            "2026-01-05", "1", "1", "1",
        )  # fmt: skip
        assert event["published"] is False
        assert [t["name"] for t in event["Tag"]] == ["tlp:amber", "falco"]
        (attr,) = event["Attribute"]
        assert (attr["type"], attr["value"], attr["to_ids"], attr["category"]) == (
            "ip-dst", "45.0.0.7", False, "Network activity",
        )  # fmt: skip
        assert uuid_of(42, 0) in attr["comment"] and "node node-1" in attr["comment"]
        assert stack.sighted() == []  # sightings are off for this feed

        await stack.post(falco_alert("46.0.0.1", rule="misp_security_intel_0 inbound connection from a listed address"))
        await wait_for(lambda: len(misp.event_view(event_uuid)["Event"]["Attribute"]) == 2, what="appended")
        assert attribute_adds(misp) == ["/events/add", f"/attributes/add/{event_uuid}"]
        # the same address again, after the dedup window: still once in the day's event
        stack.clock.offset += 3601
        await stack.post(falco_alert("45.0.0.7", hostname="node-9"))
        await wait_for(lambda: len(stack.notices) == 3, what="notice of the repeated hit")
        await wait_for(lambda: stack.reporter.pending == 0, what="drained")
        assert len(misp.event_view(event_uuid)["Event"]["Attribute"]) == 2
        # another day, another event
        await stack.post(falco_alert("45.0.0.7", time="2026-01-06T08:00:00Z", hostname="node-2"))
        next_day = daily_event_uuid(feed, "prod", "2026-01-06")
        await wait_for(lambda: misp.event_view(next_day), what="next day's event")
    finally:
        await close(stack)

    # a restarted operator (nothing in memory) finds the day's event and appends to it
    stack = await make_stack(misp, sightings={"enabled": True}, events={**EVENTS, "published": True})
    try:
        await stack.post(falco_alert("45.1.0.5", rule="misp_security_intel_0 outbound connection to a listed network"))
        await wait_for(lambda: len(misp.event_view(event_uuid)["Event"]["Attribute"]) == 3, what="appended again")
        await wait_for(lambda: misp.event_view(event_uuid)["Event"]["published"], what="published")
        assert sum(e["uuid"] == event_uuid for e in misp.events) == 1
        assert attribute_adds(misp)[-1] == f"/attributes/add/{event_uuid}"
        assert any(r.path == f"/events/publish/{event_uuid}" for r in misp.requests)
        await wait_for(stack.sighted, what="sighting too")
        assert [s[0] for s in stack.sighted()] == [uuid_of(42, 1)]
    finally:
        await close(stack)


async def test_event_writes_are_retried_when_misp_is_down(misp: MispEmulator) -> None:
    config = ReporterConfig(cluster="prod", retry_base_seconds=0.05, retry_max_seconds=0.1)
    stack = await make_stack(misp, config, sightings={"enabled": False}, events=EVENTS)
    feed = next(iter(stack.reporter.registry.feeds())).feed
    event_uuid = daily_event_uuid(feed, "prod", "2026-01-05")
    try:
        misp.refuse()
        await stack.post([falco_alert("45.0.0.7"), falco_alert("45.2.0.1")])
        await wait_for(lambda: stack.metric("falco_misp_sightings_failed_total", kind="event_attribute") >= 2,
                       what="failed attempts")  # fmt: skip
        misp.resume()
        view = await wait_for(lambda: misp.event_view(event_uuid), what="event after the outage")
        assert sorted(a["value"] for a in view["Event"]["Attribute"]) == ["45.0.0.7", "45.2.0.1"]
        assert attribute_adds(misp) == ["/events/add"]  # both hits in the one creating call
        await wait_for(lambda: stack.metric("falco_misp_sightings_sent_total", kind="event_attribute") == 2)
    finally:
        await close(stack)
