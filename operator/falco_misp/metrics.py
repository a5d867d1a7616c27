"""Prometheus metrics of the operator (prometheus-client), read off sync outcomes at the handler edge.

One :class:`Metrics` object per operator process, created by ``falco-misp run`` and kept in kopf's memo (no
module-level registry). Its own registry is served on the metrics port next to kopf's liveness endpoint.
Labels are the feed (``namespace/name``) and small fixed sets (kind, reason), never indicator values.

The chart's PrometheusRule and Grafana dashboard (issue 17) use only the names defined here; a feed's state
(``falco_misp_feed_*``, :meth:`Metrics.observe_feed`) is exported as gauges so that each alert is one PromQL
expression: "stale" is ``time() - last_success > 3 * refresh_interval``, "not Ready" is ``feed_ready == 0``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.metrics import MetricWrapperBase

from falco_misp.conditions import DEGRADED, READY, condition, parse_time
from falco_misp.errors import SpecError
from falco_misp.feed.parse import parse_duration

ROLLOUT_REASONS = frozenset({"RolloutTriggered"})
DROP_HELD_BACK = "DropLimitExceeded"
"""The Degraded reason of a sync whose list shrank by more than ``limits.maxDropPercent`` (nothing written)."""
DEFAULT_REFRESH_SECONDS = 3600
"""``refresh.interval`` when the spec does not say (the CRD's default)."""


class Metrics:
    """Every metric the operator exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.indicators = Gauge(
            "falco_misp_indicators", "Indicators in the applied rules, by kind", ["feed", "kind"], registry=r
        )
        self.rejected = Gauge(
            "falco_misp_rejected_values", "Values dropped in the last applied sync, by reason", ["feed", "reason"],
            registry=r,
        )  # fmt: skip
        self.sync_seconds = Histogram(
            "falco_misp_sync_duration_seconds", "Duration of a sync (fetch, render, apply)", ["feed"],
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300), registry=r,
        )  # fmt: skip
        self.last_success = Gauge(
            "falco_misp_last_success_timestamp_seconds", "When the feed's rules were last applied", ["feed"], registry=r
        )
        self.failures = Counter(
            "falco_misp_sync_failures", "Syncs that did not apply rules, by reason", ["feed", "reason"], registry=r
        )
        self.rollouts = Counter("falco_misp_rollouts", "Falco DaemonSet rollouts triggered", ["feed"], registry=r)
        self.delivery_pods = Gauge(
            "falco_misp_delivery_pods", "Ready Falco pods of the feed's target at the last delivery check", ["feed"],
            registry=r,
        )  # fmt: skip
        self.delivery_current = Gauge(
            "falco_misp_delivery_pods_current", "Of those, the pods that loaded the feed's current rules", ["feed"],
            registry=r,
        )  # fmt: skip
        # A feed's state, from its status and spec after every outcome (observe_feed): what the alerts read.
        self.ready = Gauge(
            "falco_misp_feed_ready", "1 while condition Ready is True (the current spec's rules are in Falco's "
            "ConfigMaps), else 0", ["feed"], registry=r,
        )  # fmt: skip
        self.degraded = Gauge(
            "falco_misp_feed_degraded", "1 while condition Degraded is True, labelled with its reason (no series "
            "when not degraded)", ["feed", "reason"], registry=r,
        )  # fmt: skip
        self.drop_held_back = Gauge(
            "falco_misp_drop_held_back", "1 while the latest sync held a shrunken list back (Degraded reason "
            "DropLimitExceeded: more than limits.maxDropPercent fewer indicators; nothing written), else 0",
            ["feed"], registry=r,
        )  # fmt: skip
        self.refresh_interval = Gauge(
            "falco_misp_feed_refresh_interval_seconds", "The feed's spec.refresh.interval", ["feed"], registry=r
        )
        self.suspended = Gauge(
            "falco_misp_feed_suspended", "1 when the feed's spec.suspend is true (no syncs on purpose), else 0",
            ["feed"], registry=r,
        )  # fmt: skip
        self._rejected_reasons: dict[str, set[str]] = {}  # per feed, to drop reasons that no longer occur
        self._degraded_reasons: dict[str, str] = {}  # per feed, the reason of its degraded series

    def serve(self, port: int, address: str = "0.0.0.0") -> WSGIServer:  # noqa: S104 - a pod listens on all interfaces
        """Serve ``/metrics`` from a background thread; the server is returned so a test can stop it (port 0: any
        free port, ``server.server_port``)."""
        server, _thread = start_http_server(port, addr=address, registry=self.registry)
        return server

    def observe_sync(
        self, feed: str, status: Mapping[str, Any], notices: tuple[str, ...], seconds: float, *, applied: bool
    ) -> None:
        """Record one sync (a fetch): the new status, the Event reasons it posted, its duration, and whether it
        applied rules (``applied``: True even when a later step such as the rollout had a problem)."""
        self.sync_seconds.labels(feed).observe(seconds)
        self.observe_rollout(feed, notices)
        if not applied:
            degraded = condition(status, DEGRADED) or {}
            self.failures.labels(feed, str(degraded.get("reason") or "Unknown")).inc()
            return
        indicators = status.get("indicators") or {}
        for kind, count in (indicators.get("byKind") or {}).items():
            self.indicators.labels(feed, kind).set(count)
        rejected = dict(indicators.get("rejected") or {})
        for gone in self._rejected_reasons.get(feed, set()) - set(rejected):
            self.rejected.remove(feed, gone)
        for reason, count in rejected.items():
            self.rejected.labels(feed, reason).set(count)
        self._rejected_reasons[feed] = set(rejected)
        last = parse_time(str(status.get("lastSuccess") or ""))
        if last is not None:
            self.last_success.labels(feed).set(last.timestamp())

    def observe_feed(self, feed: str, spec: Mapping[str, Any], status: Mapping[str, Any]) -> None:
        """Record the feed's state after any outcome (sync, rollout, delivery check): conditions Ready and
        Degraded, a held-back drop, the last success (kept in the status across failures and restarts), and the
        refresh interval and suspension from the spec."""
        ready = condition(status, READY) or {}
        self.ready.labels(feed).set(1 if ready.get("status") == "True" else 0)
        degraded = condition(status, DEGRADED) or {}
        reason = str(degraded.get("reason") or "Unknown") if degraded.get("status") == "True" else None
        previous = self._degraded_reasons.pop(feed, None)
        if previous is not None and previous != reason:
            self.degraded.remove(feed, previous)
        if reason is not None:
            self.degraded.labels(feed, reason).set(1)
            self._degraded_reasons[feed] = reason
        self.drop_held_back.labels(feed).set(1 if reason == DROP_HELD_BACK else 0)
        last = parse_time(status.get("lastSuccess"))
        if last is not None:
            self.last_success.labels(feed).set(last.timestamp())
        self.refresh_interval.labels(feed).set(refresh_seconds(spec))
        self.suspended.labels(feed).set(1 if spec.get("suspend") is True else 0)

    def observe_rollout(self, feed: str, notices: tuple[str, ...]) -> None:
        """Record the rollouts a sync or a rollout-only timer step triggered (neither a sync nor a failure)."""
        if any(reason in ROLLOUT_REASONS for reason in notices):
            self.rollouts.labels(feed).inc()

    def observe_delivery(self, feed: str, status: Mapping[str, Any]) -> None:
        """Record the latest delivery check (``status.delivery``), when there is one."""
        delivery = status.get("delivery")
        if isinstance(delivery, Mapping) and isinstance(delivery.get("pods"), int):
            self.delivery_pods.labels(feed).set(delivery["pods"])
            self.delivery_current.labels(feed).set(int(delivery.get("podsCurrent") or 0))

    def forget(self, feed: str) -> None:
        """Remove every series of a deleted feed."""
        forget_feed(feed, self.indicators, self.rejected, self.sync_seconds, self.last_success, self.failures,
                    self.rollouts, self.delivery_pods, self.delivery_current, self.ready, self.degraded,
                    self.drop_held_back, self.refresh_interval, self.suspended)  # fmt: skip
        self._rejected_reasons.pop(feed, None)
        self._degraded_reasons.pop(feed, None)


def refresh_seconds(spec: Mapping[str, Any]) -> int:
    """``spec.refresh.interval`` in seconds (the default when absent or unreadable: an invalid spec is reported by
    the sync, not here)."""
    refresh = spec.get("refresh")
    value = refresh.get("interval") if isinstance(refresh, Mapping) else None
    if value is None:
        return DEFAULT_REFRESH_SECONDS
    try:
        return parse_duration(value, "spec.refresh.interval")
    except SpecError:
        return DEFAULT_REFRESH_SECONDS


def forget_feed(feed: str, *metrics: MetricWrapperBase) -> None:
    """Remove the series of one feed (label ``feed``) from each metric."""
    for metric in metrics:
        metric.remove_by_labels({"feed": feed})


# ------------------------------------------------------------------------- alerts -> MISP sightings (issue 5)
class ReportingMetrics:
    """Alerts received on the intake endpoint and what became of them; sightings and event attributes sent.

    Registered in the operator's registry next to :class:`Metrics` (``ReportingMetrics(metrics.registry)``).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.requests = Counter(
            "falco_misp_alert_requests", "Requests to the alert endpoint, by HTTP status", ["status"], registry=r
        )
        self.alerts = Counter(
            "falco_misp_alerts_received", "Alerts received, by outcome (matched, not_ours, unknown_feed, no_address, "
            "unlisted)", ["outcome"], registry=r,
        )  # fmt: skip
        self.matched = Counter(
            "falco_misp_alerts_matched", "Alerts mapped to a feed's MISP attributes", ["feed"], registry=r
        )
        self.deduplicated = Counter(
            "falco_misp_alerts_deduplicated", "Matched alerts not reported again within the feed's dedupWindow",
            ["feed"], registry=r,
        )  # fmt: skip
        self.sent = Counter(
            "falco_misp_sightings_sent", "Reports accepted by MISP, by kind (sighting, event_attribute)",
            ["feed", "kind"], registry=r,
        )  # fmt: skip
        self.failed = Counter(
            "falco_misp_sightings_failed", "Report attempts MISP did not accept, by kind and reason (retried unless "
            "the reason is Rejected)", ["feed", "kind", "reason"], registry=r,
        )  # fmt: skip
        self.dropped = Counter(
            "falco_misp_sightings_dropped", "Reports given up, by kind and reason (queue_full, rejected)",
            ["feed", "kind", "reason"], registry=r,
        )  # fmt: skip
        self.queued = Gauge("falco_misp_sightings_queued", "Reports waiting to be sent to MISP", registry=r)
        self.auth_failures = Counter(
            "falco_misp_sightings_auth_failures", "Rounds MISP refused the feed's API key (401, 403 Authentication "
            "failed): the reports stay queued until a sync brings a working key", ["feed"], registry=r,
        )  # fmt: skip
        self.waiting_for_key = Gauge(
            "falco_misp_sightings_waiting_for_key", "Reports held because MISP refuses the feed's API key (0 once a "
            "sync brought one it takes)", ["feed"], registry=r,
        )  # fmt: skip
        self.notices = Counter(
            "falco_misp_alert_notices", "Kubernetes Events about matched alerts, by result (posted, failed, dropped)",
            ["result"], registry=r,
        )  # fmt: skip

    def forget(self, feed: str) -> None:
        """Remove every series of a deleted feed."""
        forget_feed(feed, self.matched, self.deduplicated, self.sent, self.failed, self.dropped, self.auth_failures,
                    self.waiting_for_key)  # fmt: skip


# ------------------------------------------------------------------------------ live updates over ZeroMQ (issue 7)
class LiveMetrics:
    """What each feed's ZeroMQ subscriber hears and the syncs it triggers.

    Registered in the operator's registry next to :class:`Metrics` (``LiveMetrics(metrics.registry)``) and kept in
    kopf's memo as ``live_metrics``. Labels: the feed, the topic, and a fixed reason for frames that are not MISP
    messages.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.messages = Counter(
            "falco_misp_live_messages", "ZeroMQ messages received, by topic (invalid: not a MISP message)",
            ["feed", "topic"], registry=r,
        )  # fmt: skip
        self.invalid = Counter(
            "falco_misp_live_invalid_messages", "ZeroMQ frames ignored as not MISP messages, by reason",
            ["feed", "reason"], registry=r,
        )  # fmt: skip
        self.relevant = Counter(
            "falco_misp_live_relevant_messages", "Messages that may change the feed (each schedules a debounced sync)",
            ["feed"], registry=r,
        )  # fmt: skip
        self.syncs = Counter(
            "falco_misp_live_syncs", "Syncs run because of relevant messages (one per debounced burst)", ["feed"],
            registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "falco_misp_live_update_latency_seconds",
            "From the first relevant message of a burst to the ConfigMaps holding the change",
            ["feed"], buckets=(0.5, 1, 2.5, 5, 10, 15, 30, 60, 120, 300, 600), registry=r,
        )  # fmt: skip
        self.up = Gauge(
            "falco_misp_live_up", "1 while the feed's ZeroMQ publisher is heard (condition LiveUpdates)", ["feed"],
            registry=r,
        )  # fmt: skip
        self._up_feeds: set[str] = set()

    def forget(self, feed: str) -> None:
        """Remove every series of a deleted feed."""
        forget_feed(feed, self.messages, self.invalid, self.relevant, self.syncs, self.latency, self.up)
        self._up_feeds.discard(feed)

    def heard(self, feed: str, up: bool | None) -> None:
        """Set the feed's ``falco_misp_live_up``; None removes it (the feed's subscriber stopped)."""
        if up is not None:
            self.up.labels(feed).set(1 if up else 0)
            self._up_feeds.add(feed)
        elif feed in self._up_feeds:
            self.up.remove(feed)
            self._up_feeds.discard(feed)
