"""Prometheus metrics of the operator (prometheus-client), read off sync outcomes at the handler edge.

One :class:`Metrics` object per operator process, created by ``falco-misp run`` and kept in kopf's memo (no
module-level registry). Its own registry is served on the metrics port next to kopf's liveness endpoint.
Labels are the feed (``namespace/name``) and small fixed sets (kind, reason), never indicator values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from falco_misp.status import DEGRADED, condition, parse_time

ROLLOUT_REASONS = frozenset({"RolloutTriggered"})


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
        self._rejected_reasons: dict[str, set[str]] = {}  # per feed, to drop reasons that no longer occur

    def serve(self, port: int, address: str = "0.0.0.0") -> None:  # noqa: S104 - a pod listens on all interfaces
        """Serve ``/metrics`` from a background thread."""
        start_http_server(port, addr=address, registry=self.registry)

    def observe_sync(self, feed: str, status: Mapping[str, Any], notices: tuple[str, ...], seconds: float) -> None:
        """Record one sync from its outcome: the new status, the Event reasons it posted, and its duration."""
        self.sync_seconds.labels(feed).observe(seconds)
        if any(reason in ROLLOUT_REASONS for reason in notices):
            self.rollouts.labels(feed).inc()
        degraded = condition(status, DEGRADED)
        if degraded is not None and degraded.get("status") == "True":
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
