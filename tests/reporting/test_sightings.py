"""Alerts -> MISP sightings through the real endpoint, the real PyMISP and the MISP emulator (loopback).

The feed is fetched and indexed from the emulator through the same pipeline a sync uses; alerts are POSTed to the
running endpoint; what reaches MISP is read back from the emulator. Backoff is shortened to tens of milliseconds;
dedup windows are crossed by moving the reporter's clock, never by sleeping.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from reportkit import ALERT_EPOCH, TOKEN, emulator_feed, falco_alert, sidekick_alert, synced_feed, wait_for

from emulators.misp import Fault, MispEmulator
from falco_misp.metrics import ReportingMetrics
from falco_misp.reporting.intake import AlertIntake, IntakeConfig
from falco_misp.reporting.sightings import Reporter, ReporterConfig
from helpers import misp_event

ATTRS = [
    {"type": "ip-dst", "value": "45.0.0.7"},
    {"type": "ip-dst", "value": "45.1.0.0/24"},
    {"type": "ip-src", "value": "46.0.0.1"},
    *({"type": "ip-dst", "value": f"45.2.0.{i}"} for i in range(1, 6)),
]


def uuid_of(event: int, index: int) -> str:
    """The uuid helpers.misp_event gives attribute ``index`` of event ``event``."""
    return f"00000000-0000-4000-8000-{event * 1000 + index:012d}"


class Clock:
    """time.monotonic, movable forward (dedup windows are an hour)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


@dataclass
class Stack:
    misp: MispEmulator
    reporter: Reporter
    intake: AlertIntake
    clock: Clock
    session: aiohttp.ClientSession
    metrics: ReportingMetrics
    registry: CollectorRegistry
    notices: list[tuple[dict[str, str], str, str, str]] = field(default_factory=list)

    async def post(self, body: Any) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.intake.port}/alerts"
        async with self.session.post(url, json=body, headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
            assert resp.status == 202, await resp.text()
            answer: dict[str, Any] = await resp.json()
            return answer

    def sighted(self) -> list[tuple[str, str, str]]:
        """(attribute uuid, source, date) of every sighting MISP recorded."""
        return [(s["attribute_uuid"], s["source"], s["date_sighting"]) for s in self.misp._sighting_records]

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples named ``name`` whose labels include ``labels``."""
        return sum(
            sample.value
            for family in self.registry.collect()
            for sample in family.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        )


@pytest.fixture
def misp() -> Iterator[MispEmulator]:
    with MispEmulator() as server:
        server.add_event(misp_event(42, ATTRS, info="APT-X infrastructure", tags=("tlp:green",)))
        yield server


async def make_stack(misp: MispEmulator, config: ReporterConfig | None = None, **spec: Any) -> Stack:
    clock = Clock()
    registry = CollectorRegistry()
    metrics = ReportingMetrics(registry)
    notices: list[tuple[dict[str, str], str, str, str]] = []
    reporter = Reporter(
        config or ReporterConfig(cluster="prod", retry_base_seconds=0.05, retry_max_seconds=0.2),
        metrics=metrics, clock=clock, post_notice=lambda *args: notices.append(args),  # type: ignore[arg-type]
    )  # fmt: skip
    feed = synced_feed(misp.url, misp.api_key, emulator_feed(misp.url, **spec))
    reporter.update_feed(feed.feed.namespace, feed.feed.name, feed)
    await reporter.start()
    intake = AlertIntake(IntakeConfig(port=0, address="127.0.0.1", token=TOKEN), reporter.receive, metrics=metrics)
    await intake.start()
    return Stack(misp, reporter, intake, clock, aiohttp.ClientSession(), metrics, registry, notices)


@pytest.fixture
async def stack(misp: MispEmulator) -> AsyncIterator[Stack]:
    s = await make_stack(misp)
    yield s
    await s.session.close()
    await s.intake.stop()
    await s.reporter.stop()


async def test_falco_and_falcosidekick_alerts_each_give_one_sighting(stack: Stack) -> None:
    answer = await stack.post(falco_alert("45.0.0.7"))
    assert answer == {"received": 1, "outcomes": {"matched": 1}}
    await wait_for(stack.sighted, what="sighting")
    assert stack.sighted() == [(uuid_of(42, 0), "prod/node-1", str(ALERT_EPOCH))]
    (request,) = [r for r in stack.misp.requests if r.path.startswith("/sightings/add")]
    assert request.path == f"/sightings/add/{uuid_of(42, 0)}"  # by attribute uuid, not by value
    assert request.json == {"type": "0", "source": "prod/node-1", "timestamp": ALERT_EPOCH}

    await stack.post(sidekick_alert("46.0.0.1", rule="misp_security_intel_0 inbound connection from a listed address",
                                    hostname="node-2"))  # fmt: skip
    await wait_for(lambda: len(stack.sighted()) == 2, what="second sighting")
    assert stack.sighted()[1] == (uuid_of(42, 2), "prod/node-2", str(ALERT_EPOCH))

    # the context: one Kubernetes Event per new hit, naming the MISP event and tags
    await wait_for(lambda: len(stack.notices) == 2, what="notices")
    involved, type_, reason, message = stack.notices[0]
    assert involved == {"apiVersion": "falco-misp.io/v1alpha1", "kind": "MispFeed", "namespace": "security",
                        "name": "intel", "uid": "uid-1"}  # fmt: skip
    assert (type_, reason) == ("Warning", "AlertMatched")
    assert 'MISP event 42 "APT-X infrastructure"' in message and "tlp:green" in message and "node node-1" in message
    await wait_for(lambda: stack.metric("falco_misp_sightings_sent_total", feed="security/intel", kind="sighting") == 2)
    assert stack.metric("falco_misp_alerts_received_total", outcome="matched") == 2


async def test_duplicates_within_the_window_give_no_sighting(stack: Stack) -> None:
    await stack.post(falco_alert("45.0.0.7"))
    await wait_for(stack.sighted, what="sighting")
    for hostname in ("node-1", "node-2", "node-3"):
        answer = await stack.post(falco_alert("45.0.0.7", hostname=hostname))
        assert answer["outcomes"] == {"matched": 1}
    await stack.post([falco_alert("45.0.0.7")] * 5)
    await wait_for(lambda: stack.reporter.pending == 0, what="queue drained")
    assert len(stack.sighted()) == 1
    assert len(stack.notices) == 1  # the Kubernetes Events are paced the same way
    assert stack.metric("falco_misp_alerts_deduplicated_total", feed="security/intel") == 8
    stack.clock.offset += 3601  # dedupWindow (default 1h) over
    await stack.post(falco_alert("45.0.0.7", hostname="node-4"))
    await wait_for(lambda: len(stack.sighted()) == 2, what="sighting after the window")
    assert stack.sighted()[1][1] == "prod/node-4"


async def test_a_cidr_hit_is_sighted_on_its_cidr_attribute(stack: Stack) -> None:
    await stack.post(falco_alert("45.1.0.99", rule="misp_security_intel_0 outbound connection to a listed network"))
    await wait_for(stack.sighted, what="sighting")
    assert [s[0] for s in stack.sighted()] == [uuid_of(42, 1)]
    await wait_for(lambda: stack.notices, what="notice")
    assert f"ip-dst 45.1.0.0/24 (attribute {uuid_of(42, 1)})" in stack.notices[0][3]


async def test_alerts_that_are_not_ours_are_ignored(stack: Stack) -> None:
    before = len(stack.misp.requests)
    answers = [
        await stack.post({"rule": "Terminal shell in container", "output_fields": {"fd.sip": "45.0.0.7"}}),
        await stack.post(falco_alert("45.0.0.7", rule="Outbound Connection to C2 Servers", tags=["network"])),
        await stack.post(
            falco_alert(
                "45.0.0.7",
                rule="misp_other_0 outbound connection to a listed address",
                tags=["misp", "misp_feed:security/other"],
            )
        ),
        await stack.post(falco_alert("45.9.9.9")),
    ]
    assert [a["outcomes"] for a in answers] == [{"not_ours": 1}, {"not_ours": 1}, {"unknown_feed": 1}, {"unlisted": 1}]
    assert stack.reporter.pending == 0
    assert stack.misp.requests[before:] == [] and stack.notices == []


async def test_misp_down_retried_later_with_a_bounded_queue(misp: MispEmulator) -> None:
    config = ReporterConfig(cluster="prod", max_queue=3, retry_base_seconds=0.05, retry_max_seconds=0.1)
    stack = await make_stack(misp, config)
    try:
        constructions = sum(r.path == "/users/view/me" for r in misp.requests)  # the sync's own PyMISP client
        misp.refuse()
        for i in range(1, 6):  # five different attributes, three fit in the queue
            await stack.post(falco_alert(f"45.2.0.{i}"))
        assert stack.reporter.dropped["queue_full"] == 2
        assert stack.metric("falco_misp_sightings_dropped_total", reason="queue_full") == 2
        await wait_for(lambda: stack.metric("falco_misp_sightings_failed_total", reason="ConnectionRefused") >= 2,
                       what="failed attempts")  # fmt: skip
        assert stack.reporter.pending == 3 and stack.sighted() == []
        misp.resume()
        await wait_for(lambda: len(stack.sighted()) == 3, what="retried sightings")
        assert [s[0] for s in stack.sighted()] == [uuid_of(42, i) for i in (3, 4, 5)]  # in order
        # the dropped ones were forgotten by the dedupe: the next alert for them is reported
        await stack.post([falco_alert("45.2.0.4"), falco_alert("45.2.0.5"), falco_alert("45.2.0.1")])
        await wait_for(lambda: len(stack.sighted()) == 5, what="sightings of the dropped ones")
        assert {s[0] for s in stack.sighted()[3:]} == {uuid_of(42, 6), uuid_of(42, 7)}

        # a server error after the client exists: kept, retried, then sent
        misp.fault = Fault.status(503)
        stack.clock.offset += 3601
        await stack.post(falco_alert("45.0.0.7"))
        await wait_for(lambda: stack.metric("falco_misp_sightings_failed_total", reason="HTTP5xx") >= 1, what="5xx")
        misp.fault = None
        await wait_for(lambda: len(stack.sighted()) == 6, what="sighting after the 5xx")
        await wait_for(lambda: stack.reporter.pending == 0, what="queue drained")
        # one PyMISP client (its construction calls /users/view/me) served every successful round
        assert sum(r.path == "/users/view/me" for r in misp.requests) == constructions + 1
    finally:
        await stack.session.close()
        await stack.intake.stop()
        await stack.reporter.stop()


async def test_a_sighting_misp_refuses_is_dropped_not_retried(stack: Stack) -> None:
    stack.misp.clear()  # the attribute is gone from MISP since the last sync: MISP answers 403
    await stack.post(falco_alert("45.0.0.7"))
    await wait_for(lambda: stack.reporter.dropped["rejected"] == 1, what="rejected")
    assert stack.reporter.pending == 0 and stack.sighted() == []
    assert stack.metric("falco_misp_sightings_failed_total", reason="HTTP403") == 1
    attempts = [r for r in stack.misp.requests if r.path.startswith("/sightings/add")]
    assert len(attempts) == 1


@pytest.mark.parametrize(
    ("status", "client_exists"), [(403, True), (401, True), (403, False)],
    ids=["403-authentication-failed", "401", "403-before-the-first-sighting"],
)  # fmt: skip
async def test_a_rejected_key_keeps_reports_until_a_sync_brings_the_new_one(
    misp: MispEmulator, status: int, client_exists: bool
) -> None:
    """An expired or rotated key (issue 11 item 8): reports stay queued (within the bound), the feed says it waits
    for a key, and the sync that brings the new key sends them at once (the old key's backoff is 30 s)."""
    config = ReporterConfig(cluster="prod", max_queue=2, retry_base_seconds=30, retry_max_seconds=60)
    stack = await make_stack(misp, config)
    reporter = stack.reporter
    try:
        if client_exists:
            await stack.post(falco_alert("45.0.0.7"))
            await wait_for(lambda: len(stack.sighted()) == 1, what="first sighting")
        misp.auth_failure_status, misp.api_key = status, "rotated-key-0123456789"
        await stack.post(falco_alert("45.2.0.1"))
        await wait_for(lambda: stack.metric("falco_misp_sightings_auth_failures_total", feed="security/intel") >= 1,
                       what="the key refused")  # fmt: skip
        # The report is queued again and the sender backs off (30 s): the next two find one free place.
        await stack.post([falco_alert(f"45.2.0.{i}") for i in (2, 3)])  # the queue holds two
        assert reporter.dropped == {"queue_full": 1} and reporter.pending == 2
        state = reporter.key_rejected("security", "intel")
        assert state is not None and state.waiting == 2 and state.since > 0
        assert "rejected the API key" in state.message and "2 reports" in state.message
        assert stack.metric("falco_misp_sightings_waiting_for_key", feed="security/intel") == 2
        assert stack.metric("falco_misp_sightings_failed_total", reason="Unauthorized") >= 1
        assert reporter.key_rejected("security", "other") is None

        synced = synced_feed(misp.url, misp.api_key, emulator_feed(misp.url))  # the Secret now holds the new key
        reporter.update_feed("security", "intel", synced)
        await wait_for(lambda: len(stack.sighted()) == (3 if client_exists else 2), timeout=10, what="sent")
        await wait_for(lambda: reporter.pending == 0, what="queue drained")
        assert [s[0] for s in stack.sighted()[-2:]] == [uuid_of(42, 3), uuid_of(42, 4)]  # in order
        assert reporter.key_rejected("security", "intel") is None
        assert stack.metric("falco_misp_sightings_waiting_for_key", feed="security/intel") == 0
        assert reporter.dropped == {"queue_full": 1}
        sent = [r for r in misp.requests if r.path.startswith("/sightings/add")][-2:]
        assert {r.headers.get("Authorization") for r in sent} == {"rotated-key-0123456789"}
    finally:
        await stack.session.close()
        await stack.intake.stop()
        await reporter.stop()
