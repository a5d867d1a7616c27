"""The kopf handlers of the MispFeed operator (an entry point: thin; the work is in the services).

- create / update (of the spec) / resume: sync now (:func:`on_change`);
- a timer per feed, every ``Tuning.tick_seconds``: sync when ``refresh.interval`` passed or the referenced Secret
  changed, else a rollout deferred by ``falco.minRolloutInterval`` once its time comes (:func:`on_tick`);
- a daemon per feed (:mod:`falco_misp.controller.live_sync`): with ``source.misp.zmq``, the timer's sync within
  seconds of a relevant change announced on MISP's ZeroMQ publisher;
- delete: remove the feed's ConfigMaps and its DaemonSet annotation (:func:`on_delete`; never blocks for long).
- a timer per ClusterMispServer and MispServer, every ``Tuning.server_check_seconds``: its ``Reachable`` and
  ``KeyValid`` conditions (:func:`falco_misp.controller.servers.check_server`).
- every watch event of a MispAllowList (cluster-scoped): its spec digest recorded, so the feeds whose last sync read
  it sync again at their next tick (:mod:`falco_misp.controller.allow_lists`).

``register()`` puts the handlers into a registry: ``falco-misp run`` and the tests use their own registry;
``kopf run -m falco_misp.kopf_main`` uses kopf's default one.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import kopf

from falco_misp.backoff import retry_delay
from falco_misp.conditions import status_patch
from falco_misp.controller.allow_lists import allow_list_watch
from falco_misp.controller.cleanup import cleanup_feed
from falco_misp.controller.feeds import (
    Tuning,
    body_status,
    feed_object,
    feed_ref,
    feed_state,
    forget_reporting,
    generation_of,
    report_outcome,
    reporter_of,
    sync_options,
    tick_step,
    update_reporting,
)
from falco_misp.controller.live_sync import follow_live_updates
from falco_misp.controller.servers import check_server, server_object
from falco_misp.controller.suspend import sync_unless_suspended
from falco_misp.controller.sync import (
    Failure,
)
from falco_misp.delivery.kube import KubeClient
from falco_misp.feed.allowlist import ALLOW_LIST_PLURAL
from falco_misp.feed.model import API_GROUP, API_VERSION, ServerKind
from falco_misp.feed.servers import CLUSTER_PLURAL, NAMESPACED_PLURAL
from falco_misp.metrics import LiveMetrics, Metrics, ReportingMetrics
from falco_misp.reporting.intake import AlertIntake, IntakeError
from falco_misp.reporting.sightings import Reporter

PLURAL = "mispfeeds"
FEEDS = (API_GROUP, API_VERSION, PLURAL)
CLUSTER_SERVERS = (API_GROUP, API_VERSION, CLUSTER_PLURAL)
SERVERS = (API_GROUP, API_VERSION, NAMESPACED_PLURAL)
ALLOW_LISTS = (API_GROUP, API_VERSION, ALLOW_LIST_PLURAL)
FINALIZER = f"{API_GROUP}/finalizer"


def configure(settings: kopf.OperatorSettings, memo: kopf.Memo) -> None:
    """Operator settings: our own finalizer and annotation prefix, watch timeouts, explicit Events only."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=API_GROUP, key="last-handled-configuration"
    )
    # Events come from sync.Notice (one per applied change or failure), not from every log line.
    settings.posting.level = logging.CRITICAL
    # Ask the API server to close each watch after 5 minutes and give up client-side a bit later, so a watch
    # that died silently (a proxy, a load balancer) is re-established (kopf docs: "API timeouts").
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 120
    # A deleted feed's finalizer waits until its timer has exited; kopf re-checks every 60 s by default.
    settings.background.cancellation_polling = 2
    if not isinstance(memo.get("kube"), KubeClient):
        namespace = memo.get("operator_namespace")
        memo["kube"] = KubeClient.from_environment(namespace if isinstance(namespace, str) else None)
    allow_list_watch(memo)  # in the operator's memo, so every feed's memo (a copy) shares it


def on_change(body: kopf.Body, memo: kopf.Memo, patch: kopf.Patch, *, retry: int, tuning: Tuning) -> None:
    """Create, spec update, operator restart: sync now."""
    state = feed_state(memo)
    generation = generation_of(body)
    if state.handled_generation == generation and retry == 0:
        return  # this spec was synced already (created and resumed at start-up, or a re-delivered event)
    with state.lock:
        obj = feed_object(body, state)
        before = {**body_status(body), **obj.status}
        started = state.sync_started = time.monotonic()
        outcome = sync_unless_suspended(memo["kube"], obj, tuning.clock(), sync_options(memo, body, tuning))
        seconds = time.monotonic() - started
        state.status = dict(outcome.status)
        state.fingerprint = outcome.secret_fingerprint
        state.allow_lists = outcome.allow_lists
        state.server_zmq = outcome.server_zmq
        if outcome.failure is not Failure.TEMPORARY:
            state.handled_generation = generation
    update_reporting(memo, body, outcome)
    report_outcome(
        body, patch, before, outcome, retry=retry, tuning=tuning, metrics=memo.get("metrics"), seconds=seconds
    )


def on_tick(body: kopf.Body, memo: kopf.Memo, patch: kopf.Patch, *, retry: int, tuning: Tuning) -> None:
    """The timer: refresh, Secret change or deferred rollout, when due."""
    state = feed_state(memo)
    if state.handled_generation != generation_of(body) or not state.lock.acquire(blocking=False):
        return  # the change handler owns this generation (and its retries), or a sync is running
    try:
        step = tick_step(body, memo, state, tuning, force=bool(retry))
    finally:
        state.lock.release()
    if step is not None:
        update_reporting(memo, body, step.outcome)
        report_outcome(
            body, patch, step.before, step.outcome, retry=retry, tuning=tuning, metrics=memo.get("metrics"),
            seconds=step.seconds,
        )  # fmt: skip


def on_delete(body: kopf.Body, memo: kopf.Memo, *, retry: int, tuning: Tuning) -> None:
    """Remove what the feed created; never block the deletion for long."""
    state = feed_state(memo)
    forget_reporting(memo, body)
    for metrics in (memo.get("metrics"), memo.get("live_metrics"), getattr(reporter_of(memo), "metrics", None)):
        if isinstance(metrics, Metrics | LiveMetrics | ReportingMetrics):
            metrics.forget(feed_ref(body))
    with state.lock:
        outcome = cleanup_feed(memo["kube"], feed_object(body, state))
    for notice in outcome.notices:
        kopf.event(body, type=notice.type, reason=notice.reason, message=notice.message)
    if outcome.error is not None:
        delay = retry_delay(retry, tuning.retry_base_seconds, tuning.retry_max_seconds)
        raise kopf.TemporaryError(f"cleanup failed: {outcome.error}", delay=delay)


def register(registry: kopf.OperatorRegistry, tuning: Tuning | None = None) -> None:
    """Register every handler of the operator into ``registry``."""
    tune = tuning or Tuning()

    @kopf.on.startup(registry=registry, id="configure")
    def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        configure(settings, memo)

    @kopf.on.create(*FEEDS, registry=registry, id="sync")
    @kopf.on.update(*FEEDS, registry=registry, id="sync", field="spec")
    @kopf.on.resume(*FEEDS, registry=registry, id="sync")
    def sync(body: kopf.Body, memo: kopf.Memo, patch: kopf.Patch, retry: int = 0, **_: Any) -> None:
        on_change(body, memo, patch, retry=retry, tuning=tune)

    @kopf.timer(*FEEDS, registry=registry, id="refresh", interval=tune.tick_seconds)
    def refresh(body: kopf.Body, memo: kopf.Memo, patch: kopf.Patch, retry: int = 0, **_: Any) -> None:
        on_tick(body, memo, patch, retry=retry, tuning=tune)

    # MispAllowLists (cluster-scoped): every watch event records the list's spec digest; each feed's timer syncs
    # at its next tick when a list its last sync read changed, appeared or went away. Nothing is written to them.
    @kopf.on.event(*ALLOW_LISTS, registry=registry, id="allow-lists")
    def allow_list_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
        allow_list_watch(memo).note(event.get("type"), event.get("object") or {})

    # ClusterMispServers and MispServers (issue 15): each asked every few minutes whether it answers and takes its
    # key; the feeds read them at each sync (controller/secrets.py), nothing else is written to them.
    for kind, resource in ((ServerKind.CLUSTER, CLUSTER_SERVERS), (ServerKind.NAMESPACED, SERVERS)):
        _register_server_check(registry, kind, resource, tune)

    @kopf.on.delete(*FEEDS, registry=registry, id="cleanup", retries=tune.delete_retries)
    def cleanup(body: kopf.Body, memo: kopf.Memo, retry: int = 0, **_: Any) -> None:
        on_delete(body, memo, retry=retry, tuning=tune)

    # Every feed gets one; it idles without spec.source.misp.zmq. kopf cancels it at once on deletion and exit: every
    # wait in it is a cancellation point (a sync it waits for finishes in its thread, under the feed's lock).
    @kopf.daemon(*FEEDS, registry=registry, id="live-updates", cancellation_timeout=5.0)
    async def live_updates(
        body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped, logger: kopf.Logger, **_: Any
    ) -> None:
        await follow_live_updates(body, memo, stopped, logger, tuning=tune)


def _register_server_check(
    registry: kopf.OperatorRegistry, kind: ServerKind, resource: tuple[str, str, str], tune: Tuning
) -> None:
    @kopf.timer(*resource, registry=registry, id="check", interval=tune.server_check_seconds)
    def check(body: kopf.Body, memo: kopf.Memo, patch: kopf.Patch, **_: Any) -> None:
        obj = server_object(kind, body)
        for key, value in status_patch(obj.status, check_server(memo["kube"], obj, tune.clock(), tune.policy)).items():
            patch.status[key] = value


def register_alerts(registry: kopf.OperatorRegistry) -> None:
    """Serve the alert endpoint with the operator: ``memo["reporter"]`` and ``memo["intake"]`` are set by the caller.

    Started after ``configure`` (which provides the Kubernetes client for the Events) and before any feed is
    handled, so the first syncs already index their attributes; stopped when the operator exits.
    """

    @kopf.on.startup(registry=registry, id="alerts")
    async def start_alerts(memo: kopf.Memo, **_: Any) -> None:
        kube = memo.get("kube")
        reporter: Reporter = memo["reporter"]
        intake: AlertIntake = memo["intake"]
        await reporter.start(kube if isinstance(kube, KubeClient) else None)
        try:
            await intake.start()
        except IntakeError as exc:
            await reporter.stop()
            raise kopf.PermanentError(str(exc)) from None

    @kopf.on.cleanup(registry=registry, id="alerts")
    async def stop_alerts(memo: kopf.Memo, **_: Any) -> None:
        await memo["intake"].stop()
        await memo["reporter"].stop()
