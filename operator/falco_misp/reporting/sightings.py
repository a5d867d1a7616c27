"""Matched Falco alerts -> MISP sightings, a daily MISP event, Kubernetes Events (a service; issue 5).

The alert endpoint (:mod:`falco_misp.reporting.intake`) hands parsed alerts to :meth:`Reporter.receive` on the
operator's event loop. Matching is pure and fast (:mod:`falco_misp.reporting.matching`); what must reach MISP goes
into one bounded queue, drained by one asyncio task that runs the blocking PyMISP calls on a thread of its own, so
neither the endpoint nor the syncs (kopf's threads) ever wait for MISP:

- dedupe: one sighting per attribute within the feed's ``reporting.sightings.dedupWindow`` (which also paces the
  Kubernetes Events: a beaconing process must not flood the API server), one entry per address and day in the
  daily event; each matched alert is still logged and counted;
- batching: up to ``batch_size`` reports per round for one MISP server over one keep-alive PyMISP session; hits
  for the daily event are added with one call per event;
- retries: a server that fails (refused, timeout, 5xx, 408/429, bad answer) is paused with exponential backoff
  and its reports stay queued, in order; a report MISP refuses for good (another 4xx: the attribute is gone, the
  key lacks the permission) is dropped and counted;
- a rejected API key (401, or MISP's 403 "Authentication failed": expired, revoked, rotated) is not the report's
  fault: its reports stay queued, retried with the same backoff, until a sync of the feed brings a key MISP takes
  (:meth:`Reporter.update_feed` moves them to the feed's new credentials at once); meanwhile
  :meth:`Reporter.key_rejected` says so for the feed's status and ``falco_misp_sightings_waiting_for_key`` counts
  them (issue 11);
- bounds: at most ``max_queue`` reports wait (those in flight included); more are dropped and counted, and their
  dedupe entry is forgotten so a later alert can try again.

Sightings are posted per attribute UUID (``POST /sightings/add/<uuid>``), with the alert's time, so a retried
sighting keeps the moment Falco saw the connection, and a CIDR attribute is sighted although no sighting by value
would match it. The daily event has a UUID derived from cluster, feed and day (:func:`alerts.daily_event_uuid`):
after a restart or on another replica the same event is found and appended to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import partial

from falco_misp.delivery.kube import KubeClient
from falco_misp.feed.model import API_GROUP, API_VERSION, KIND
from falco_misp.metrics import ReportingMetrics
from falco_misp.reporting.alerts import Alert
from falco_misp.reporting.matching import Deduper as _Deduper
from falco_misp.reporting.matching import FeedRegistry, Hit, MispTarget, Outcome, ReportingFeed, match_alert
from falco_misp.reporting.misp_writes import (
    UNAUTHORIZED,
    Kind,
    MispClients,
    Report,
    SendFailure,
    call_misp,
    send_event_group,
)
from falco_misp.reporting.payloads import (
    alert_day,
    daily_event,
    daily_event_uuid,
    describe_attribute,
    event_attribute,
    notice_message,
    sighting_body,
)

log = logging.getLogger(__name__)

EVENT_DEDUP_SECONDS = 26 * 3600  # a value goes into a day's event once (a day, plus clock skew between nodes)
NOTICE_REASON = "AlertMatched"

#: Posts a Kubernetes Event: (involved object reference, type, reason, message).
PostNotice = Callable[[Mapping[str, str], str, str, str], None]


@dataclass(frozen=True)
class ReporterConfig:
    """Operator-wide settings of the reporter (``falco-misp run`` options; per-feed ones are in the spec)."""

    cluster: str = ""
    """Cluster name for the default sighting source (``<cluster>/<node>``) and the daily event."""
    max_queue: int = 10_000
    """Reports waiting for MISP (in flight included); more are dropped and counted."""
    batch_size: int = 50
    """Reports sent per round to one server."""
    retry_base_seconds: float = 1.0
    """First pause after a server failed; doubles on each consecutive failure."""
    retry_max_seconds: float = 300.0
    """Longest pause."""
    max_notices: int = 1_000
    """Kubernetes Events waiting to be posted; more are dropped and counted."""
    dedup_capacity: int = 100_000
    """Remembered attributes (and, apart, event entries); the oldest go first when full."""


class _Result(StrEnum):
    SENT = "sent"
    REJECTED = "rejected"
    RETRY = "retry"
    NOT_TRIED = "not_tried"


@dataclass(frozen=True)
class KeyRejected:
    """MISP refuses the API key of a feed's reports: they wait for a sync that brings a working key."""

    since: float
    """When (epoch seconds) MISP first refused the key, in this run of failures."""
    waiting: int
    """Reports of the feed held for it (sightings and event attributes, within the queue bound)."""

    @property
    def message(self) -> str:
        """One line for the feed's status or an Event."""
        return (
            f"MISP rejected the API key: {self.waiting} reports wait for a sync with a working key (rotate the "
            "key in the feed's Secret)"
        )


class Reporter:
    """Receives alerts, matches them to feeds and attributes, and reports to MISP and Kubernetes (see module doc).

    ``update_feed``/``remove_feed`` are called from the sync handlers (kopf's threads); everything else runs on
    the operator's event loop.
    """

    def __init__(
        self,
        config: ReporterConfig | None = None,
        *,
        metrics: ReportingMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        post_notice: PostNotice | None = None,
    ) -> None:
        self.config = config or ReporterConfig()
        self.metrics = metrics
        self._clock = clock
        self._wall = wall
        self._post_notice = post_notice
        self._registry = FeedRegistry()
        self._registry_lock = threading.Lock()
        self._dedupe = _Deduper(self.config.dedup_capacity)  # (feed, attribute uuid): sightings and notices
        self._event_dedupe = _Deduper(self.config.dedup_capacity)  # (day's event, type, address)
        self._queue: deque[Report] = deque()
        self._in_flight = 0
        self._paused: dict[str, float] = {}
        self._failures: dict[str, int] = {}
        self._targets: dict[str, MispTarget] = {}  # feed ref -> the target of its last sync (set on kopf threads)
        self._rejected_keys: dict[str, float] = {}  # target key -> when MISP first refused it (event loop only)
        self._waiting: dict[str, KeyRejected] = {}  # feed ref -> reports held for a key (replaced whole)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flying: Sequence[Report] = ()  # the batch being sent
        self._clients = MispClients()
        self._wake: asyncio.Event | None = None
        self._notices: asyncio.Queue[tuple[Mapping[str, str], str]] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._misp_thread: ThreadPoolExecutor | None = None
        self._kube_thread: ThreadPoolExecutor | None = None
        self.dropped: Counter[str] = Counter()
        """Reports and notices given up, by reason (also in the metrics)."""

    # ------------------------------------------------------------------------------------------ feeds
    @property
    def registry(self) -> FeedRegistry:
        """The feeds reporting now."""
        return self._registry

    def update_feed(self, namespace: str, name: str, feed: ReportingFeed | None) -> None:
        """After a sync applied rules: the feed's new index and target, or None when its reporting is off."""
        with self._registry_lock:
            ref = f"{namespace}/{name}"
            self._registry = self._registry.with_feed(feed) if feed is not None else self._registry.without(ref)
            previous = self._targets.pop(ref, None)
            if feed is not None:
                self._targets[ref] = feed.target
        if feed is not None:
            log.debug("feed %s reports alerts: %d attributes indexed", ref, feed.index.attributes)
            if previous is not None and previous.key != feed.target.key:
                self._wake_threadsafe()  # queued reports move to the new credentials (a rotated key) right away

    def key_rejected(self, namespace: str, name: str) -> KeyRejected | None:
        """Whether reports of this feed wait because MISP refuses its API key (for the feed's status)."""
        return self._waiting.get(f"{namespace}/{name}")

    def _wake_threadsafe(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop is stopping
                loop.call_soon_threadsafe(wake.set)

    def remove_feed(self, namespace: str, name: str) -> None:
        """The feed is gone."""
        self.update_feed(namespace, name, None)

    # --------------------------------------------------------------------------------------- lifecycle
    async def start(self, kube: KubeClient | None = None) -> None:
        """Start the MISP and Kubernetes Event workers (on the running loop)."""
        if kube is not None and self._post_notice is None:
            self._post_notice = lambda involved, type_, reason, message: kube.create_event(
                involved, type_, reason, message, datetime.now(UTC)
            )
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._notices = asyncio.Queue(maxsize=self.config.max_notices)
        self._misp_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="falco-misp-report")
        self._kube_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="falco-misp-notice")
        self._tasks = [
            asyncio.create_task(self._run_misp(), name="falco-misp reporter"),
            asyncio.create_task(self._run_notices(), name="falco-misp notices"),
        ]

    async def stop(self) -> None:
        """Stop the workers; reports still queued are logged as lost (they are in memory only)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for executor in (self._misp_thread, self._kube_thread):
            if executor is not None:
                executor.shutdown(wait=False, cancel_futures=True)
        self._misp_thread = self._kube_thread = None
        self._wake = None
        self._clients.close()
        if self._queue:
            log.warning("stopping with %d reports for MISP not sent", len(self._queue))

    @property
    def pending(self) -> int:
        """Reports queued or in flight."""
        return len(self._queue) + self._in_flight

    # ----------------------------------------------------------------------------------------- intake
    def receive(self, alerts: Sequence[Alert]) -> dict[str, int]:
        """Match alerts and queue their reports; the alerts by outcome (never blocks: runs on the event loop)."""
        registry = self._registry
        outcomes: Counter[str] = Counter()
        for alert in alerts:
            match = match_alert(alert, registry)
            outcomes[match.outcome.value] += 1
            if self.metrics is not None:
                self.metrics.alerts.labels(match.outcome.value).inc()
            if match.outcome is not Outcome.MATCHED:
                log.debug("alert %r from %s: %s", alert.rule[:80], alert.hostname or "?", match.outcome.value)
                continue
            for hit in match.hits:
                self._report(hit)
        return dict(outcomes)

    def _report(self, hit: Hit) -> None:
        feed = hit.feed
        reporting = feed.feed.spec.reporting
        now = self._clock()
        window = reporting.sightings.dedup_window_seconds
        fresh = [a for a in hit.attributes if self._dedupe.admit((feed.ref, a.uuid), now, window)]
        log.info(
            "alert matched: feed %s, node %s, %s %s, rule %r, MISP %s%s",
            feed.ref, hit.alert.hostname or "?", hit.rule.direction.value, hit.remote, hit.alert.rule,
            "; ".join(describe_attribute(a) for a in hit.attributes[:4]),
            "" if fresh else " (already reported within the dedup window)",
            extra={
                "feed": feed.ref, "node": hit.alert.hostname, "remote": hit.remote, "rule": hit.alert.rule,
                "attributes": [a.uuid for a in hit.attributes], "events": sorted({a.event.id for a in hit.attributes}),
            },
        )  # fmt: skip
        if self.metrics is not None:
            self.metrics.matched.labels(feed.ref).inc()
        cluster = self.config.cluster
        events = reporting.events
        if events.enabled:  # once per address and day in the day's event, whatever the dedup window
            attribute = event_attribute(hit, events.to_ids)
            event_uuid = daily_event_uuid(feed.feed, cluster, alert_day(hit.alert))
            key = ("event", event_uuid, attribute["type"], hit.remote)
            if self._event_dedupe.admit(key, now, EVENT_DEDUP_SECONDS):
                skeleton = daily_event(hit, cluster, [])
                report = Report(Kind.EVENT_ATTRIBUTE, feed.ref, feed.target, key, attribute, event=skeleton)
                report.publish = events.published
                self._enqueue(report)
        if not fresh:
            if self.metrics is not None:
                self.metrics.deduplicated.labels(feed.ref).inc()
            return
        if reporting.sightings.enabled:
            body = sighting_body(hit, cluster)
            for attr in fresh:
                report = Report(Kind.SIGHTING, feed.ref, feed.target, (feed.ref, attr.uuid), dict(body), attr.uuid)
                self._enqueue(report)
        self._notify(feed, notice_message(hit, fresh))

    def _enqueue(self, report: Report) -> None:
        if self.pending >= self.config.max_queue or self._wake is None:
            reason = "queue_full" if self._wake is not None else "not_running"
            self._drop(report, reason)
            dedupe = self._dedupe if report.kind is Kind.SIGHTING else self._event_dedupe
            dedupe.forget(report.dedupe_key)  # a later alert may try again
            return
        self._queue.append(report)
        self._gauge(key_state=report.target.key in self._rejected_keys)
        self._wake.set()

    def _drop(self, report: Report, reason: str) -> None:
        self.dropped[reason] += 1
        count = self.dropped[reason]
        if self.metrics is not None:
            self.metrics.dropped.labels(report.feed, report.kind.value, reason).inc()
        if count in (1, 10, 100) or count % 1000 == 0:
            log.warning("%s for MISP dropped (%s); %d so far", report.kind.value, reason, count)

    def _gauge(self, *, key_state: bool = True) -> None:
        """Queue gauges, and (``key_state``) which feeds' reports wait for a working API key (on the event loop)."""
        if self.metrics is not None:
            self.metrics.queued.set(self.pending)
        if not key_state or (not self._rejected_keys and not self._waiting):
            return
        held: Counter[str] = Counter()
        since: dict[str, float] = {}
        reports = [*self._queue, *self._flying]
        for report in reports:
            rejected = self._rejected_keys.get(report.target.key)
            if rejected is not None:
                held[report.feed] += 1
                since[report.feed] = min(rejected, since.get(report.feed, rejected))
        queued_keys = {report.target.key for report in reports}
        for key in [k for k in self._rejected_keys if k not in queued_keys]:
            del self._rejected_keys[key]  # nothing waits for it any more (moved to a new key, or dropped)
        waiting = {feed: KeyRejected(since=since[feed], waiting=count) for feed, count in held.items()}
        if self.metrics is not None:
            for feed in set(self._waiting) - set(waiting):
                self.metrics.waiting_for_key.labels(feed).set(0)
            for feed, state in waiting.items():
                self.metrics.waiting_for_key.labels(feed).set(state.waiting)
        self._waiting = waiting

    def _notify(self, feed: ReportingFeed, message: str) -> None:
        if self._notices is None or self._post_notice is None:
            return
        involved = {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": KIND,
            "namespace": feed.feed.namespace,
            "name": feed.feed.name,
            "uid": feed.uid,
        }
        try:
            self._notices.put_nowait((involved, message))
        except asyncio.QueueFull:
            self.dropped["notice_queue_full"] += 1
            if self.metrics is not None:
                self.metrics.notices.labels("dropped").inc()

    # ------------------------------------------------------------------------------------------ MISP
    def _take(self, now: float) -> tuple[list[Report], float | None]:
        """The next batch (one server, not paused), and how long to wait when every server is paused.

        A report whose feed synced since with other credentials for the same server moves to them first.
        """
        batch: list[Report] = []
        keep: deque[Report] = deque()
        server: str | None = None
        wait: float | None = None
        moved = False
        for report in self._queue:
            current = self._targets.get(report.feed)
            if (
                current is not None
                and current.key != report.target.key
                and current.server.url == report.target.server.url
            ):
                report.target = current
                moved = True
            key = report.target.key
            paused = self._paused.get(key, 0.0)
            if paused > now:
                wait = paused - now if wait is None else min(wait, paused - now)
                keep.append(report)
            elif len(batch) < self.config.batch_size and (server is None or key == server):
                server = key
                batch.append(report)
            else:
                keep.append(report)
        self._queue = keep
        if moved:
            self._gauge()
        return batch, wait

    async def _run_misp(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            batch, wait = self._take(self._clock())
            if not batch:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=wait)
                continue
            self._in_flight, self._flying = len(batch), batch
            try:
                results = await loop.run_in_executor(self._misp_thread, self._send_batch, batch)
            except asyncio.CancelledError:
                self._queue.extendleft(reversed(batch))
                raise
            except Exception:  # a bug: keep the reports, pause like a failure
                log.exception("sending reports to MISP failed")
                results = [(_Result.RETRY, "InternalError")] * len(batch)
            finally:
                self._in_flight, self._flying = 0, ()
            self._settle(batch, results, self._clock())

    def _send_batch(self, batch: Sequence[Report]) -> list[tuple[_Result, str]]:
        """On the reporter's thread: send in order, stop at the first failure that is worth a retry."""
        results: list[tuple[_Result, str]] = [(_Result.NOT_TRIED, "")] * len(batch)
        try:
            client = self._clients.get(batch[0].target)
        except SendFailure as failure:
            results[0] = (_Result.RETRY, failure.reason)
            return results
        groups: dict[str, list[int]] = {}
        for i, report in enumerate(batch):
            if report.kind is Kind.EVENT_ATTRIBUTE and report.event is not None:
                groups.setdefault(str(report.event["uuid"]), []).append(i)
        done: set[int] = set()
        for i, report in enumerate(batch):
            if i in done:
                continue
            members = groups.get(str(report.event["uuid"]), [i]) if report.event is not None else [i]
            try:
                if report.kind is Kind.SIGHTING:
                    call_misp(partial(client.add_sighting, report.body, attribute=report.attribute_uuid))
                else:
                    send_event_group(client, self._clients, [batch[m] for m in members])
            except SendFailure as failure:
                if failure.retry:
                    for m in members:
                        results[m] = (_Result.RETRY, failure.reason)
                    return results
                for m in members:
                    results[m] = (_Result.REJECTED, failure.reason)
            else:
                for m in members:
                    results[m] = (_Result.SENT, "")
            done.update(members)
        return results

    def _settle(self, batch: Sequence[Report], results: Sequence[tuple[_Result, str]], now: float) -> None:
        retry: list[Report] = []
        failed_reason = ""
        for report, (result, reason) in zip(batch, results, strict=True):
            if result is _Result.SENT:
                if self.metrics is not None:
                    self.metrics.sent.labels(report.feed, report.kind.value).inc()
            elif result is _Result.REJECTED:
                if self.metrics is not None:
                    self.metrics.failed.labels(report.feed, report.kind.value, reason).inc()
                self._drop(report, "rejected")
                log.warning("MISP at %s refused a %s (%s): dropped", report.target.server.url, report.kind, reason)
            else:
                if result is _Result.RETRY:
                    failed_reason = reason
                    if self.metrics is not None:
                        self.metrics.failed.labels(report.feed, report.kind.value, reason).inc()
                retry.append(report)
        key = batch[0].target.key
        if failed_reason:
            failures = self._failures[key] = self._failures.get(key, 0) + 1
            delay = min(self.config.retry_max_seconds, self.config.retry_base_seconds * 2 ** (failures - 1))
            self._paused[key] = now + delay
            log.warning(
                "MISP at %s failed (%s): %d reports kept, next attempt in %.1fs%s",
                batch[0].target.server.url, failed_reason, len(retry) + len(self._queue), delay,
                " or as soon as a sync brings another API key" if failed_reason == UNAUTHORIZED else "",
            )  # fmt: skip
            if failed_reason == UNAUTHORIZED:
                self._rejected_keys.setdefault(key, self._wall())
                if self.metrics is not None:
                    self.metrics.auth_failures.labels(batch[0].feed).inc()
            if failed_reason in (UNAUTHORIZED, "TLS"):
                self._clients.drop(key)  # a rotated key or CA comes with the next sync: build a new client then
        else:
            self._failures.pop(key, None)
            self._paused.pop(key, None)
            self._rejected_keys.pop(key, None)
        self._queue.extendleft(reversed(retry))
        self._gauge()

    # ------------------------------------------------------------------------------------ Kubernetes
    async def _run_notices(self) -> None:
        assert self._notices is not None
        loop = asyncio.get_running_loop()
        while True:
            involved, message = await self._notices.get()
            post = self._post_notice
            if post is None:
                continue
            try:
                await loop.run_in_executor(self._kube_thread, post, involved, "Warning", NOTICE_REASON, message)
            except Exception as exc:  # the API server is down: the alert is logged and counted anyway
                log.warning("posting an Event about %s/%s failed: %s", involved["namespace"], involved["name"], exc)
                if self.metrics is not None:
                    self.metrics.notices.labels("failed").inc()
            else:
                if self.metrics is not None:
                    self.metrics.notices.labels("posted").inc()
