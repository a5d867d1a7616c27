"""The kopf handlers of the MispFeed operator (an entry point: thin; the work is in :mod:`falco_misp.sync`).

- create / update (of the spec) / resume: sync now;
- a timer per feed, every ``Tuning.tick_seconds``: sync when ``refresh.interval`` passed or the referenced
  Secret changed (the Secret is read each tick: the operator needs ``get`` on Secrets, never ``list``/``watch``),
  else do a rollout deferred by ``falco.minRolloutInterval`` once its time comes;
- delete: remove the feed's ConfigMaps and its DaemonSet annotation (the finalizer never blocks for long: gone
  namespaces and DaemonSets are fine, API errors are retried a few times and then the deletion proceeds).

This is the only module that maps outcomes to ``kopf.TemporaryError`` (source or API down: retry with
exponential backoff) and ``kopf.PermanentError`` (the spec must change). Syncs of one feed are serialised by a
lock kept in kopf's per-object memo, with the status last written, so the timer never races a change handler.

``register()`` puts the handlers into a registry: ``falco-misp run`` and the tests use their own registry;
``kopf run -m falco_misp.kopf_main`` uses kopf's default one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kopf

from falco_misp.decisions import TickAction, retry_delay
from falco_misp.kube import KubeClient
from falco_misp.metrics import Metrics
from falco_misp.spec import API_GROUP, API_VERSION
from falco_misp.status import status_patch
from falco_misp.sync import Failure, FeedObject, SyncOutcome, cleanup_feed, rollout_feed, sync_feed, tick_action

PLURAL = "mispfeeds"
FEEDS = (API_GROUP, API_VERSION, PLURAL)
FINALIZER = f"{API_GROUP}/finalizer"


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Tuning:
    """Operator-wide timing (not per feed: that is in the spec)."""

    tick_seconds: float = 30.0
    """How often each feed's timer wakes up to check whether a refresh, a Secret change or a rollout is due."""
    retry_base_seconds: float = 15.0
    """First retry delay after a temporary failure; doubles on each retry."""
    retry_max_seconds: float = 600.0
    """Longest retry delay."""
    delete_retries: int = 5
    """Attempts to clean up a deleted feed before the finalizer is released anyway."""
    clock: Callable[[], datetime] = _utcnow
    """Wall clock (UTC) for status times, refresh and rollout intervals; tests pass a controllable one."""


class FeedState:
    """Per-feed memory kept in kopf's per-object memo (not a value: it holds a lock)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        """Serialises syncs of this feed across the change handlers and the timer."""
        self.status: dict[str, Any] | None = None
        """The status last written (fresher than the watched body right after a patch)."""
        self.handled_generation: int | None = None
        """The spec generation the change handler finished with (success or permanent failure)."""
        self.fingerprint: str | None = None
        """Digest of the Secret values the last sync used."""


def feed_state(memo: kopf.Memo) -> FeedState:
    """This feed's state, created on first use."""
    state = memo.get("feed_state")
    if not isinstance(state, FeedState):
        state = memo.setdefault("feed_state", FeedState())
    assert isinstance(state, FeedState)
    return state


def _generation(body: kopf.Body) -> int:
    return int(body.get("metadata", {}).get("generation") or 0)


def _body_status(body: kopf.Body) -> dict[str, Any]:
    raw = body.get("status")
    return dict(raw) if isinstance(raw, Mapping) else {}


def _feed_object(body: kopf.Body, state: FeedState) -> FeedObject:
    meta = body.get("metadata", {})
    return FeedObject(
        name=str(meta.get("name", "")),
        namespace=str(meta.get("namespace", "")),
        generation=_generation(body),
        spec=dict(body.get("spec") or {}),
        status=state.status if state.status is not None else _body_status(body),
    )


def _report(
    body: kopf.Body,
    patch: kopf.Patch,
    before: Mapping[str, Any],
    outcome: SyncOutcome,
    *,
    retry: int,
    tuning: Tuning,
    metrics: Metrics | None,
    seconds: float,
) -> None:
    """Write the status, post the Events, record metrics, and raise what kopf needs to retry (or not)."""
    if metrics is not None:
        feed = f"{body.get('metadata', {}).get('namespace')}/{body.get('metadata', {}).get('name')}"
        metrics.observe_sync(feed, outcome.status, tuple(n.reason for n in outcome.notices), seconds)
    for key, value in status_patch(before, outcome.status).items():
        patch.status[key] = value
    for notice in outcome.notices:
        kopf.event(body, type=notice.type, reason=notice.reason, message=notice.message)
    if outcome.failure is Failure.TEMPORARY:
        delay = retry_delay(retry, tuning.retry_base_seconds, tuning.retry_max_seconds)
        raise kopf.TemporaryError(outcome.message, delay=delay)
    if outcome.failure is Failure.PERMANENT:
        raise kopf.PermanentError(outcome.message)


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
        memo["kube"] = KubeClient.from_environment()


def on_change(body: kopf.Body, memo: kopf.Memo, patch: kopf.Patch, *, retry: int, tuning: Tuning) -> None:
    """Create, spec update, operator restart: sync now."""
    state = feed_state(memo)
    generation = _generation(body)
    if state.handled_generation == generation and retry == 0:
        return  # this spec was synced already (created and resumed at start-up, or a re-delivered event)
    with state.lock:
        obj = _feed_object(body, state)
        before = {**_body_status(body), **obj.status}
        started = time.monotonic()
        outcome = sync_feed(memo["kube"], obj, tuning.clock())
        seconds = time.monotonic() - started
        state.status = dict(outcome.status)
        state.fingerprint = outcome.secret_fingerprint
        if outcome.failure is not Failure.TEMPORARY:
            state.handled_generation = generation
    _report(body, patch, before, outcome, retry=retry, tuning=tuning, metrics=memo.get("metrics"), seconds=seconds)


def on_tick(body: kopf.Body, memo: kopf.Memo, patch: kopf.Patch, *, retry: int, tuning: Tuning) -> None:
    """The timer: refresh, Secret change or deferred rollout, when due."""
    state = feed_state(memo)
    if state.handled_generation != _generation(body) or not state.lock.acquire(blocking=False):
        return  # the change handler owns this generation (and its retries), or a sync is running
    outcome: SyncOutcome | None = None
    try:
        obj = _feed_object(body, state)
        before = {**_body_status(body), **obj.status}
        now = tuning.clock()
        kube: KubeClient = memo["kube"]
        action, fingerprint = (
            (TickAction.SYNC, state.fingerprint) if retry else tick_action(kube, obj, state.fingerprint, now)
        )
        started = time.monotonic()
        if action is TickAction.SYNC:
            outcome = sync_feed(kube, obj, now)
            state.fingerprint = outcome.secret_fingerprint
        elif action is TickAction.ROLLOUT:
            outcome = rollout_feed(kube, obj, now)
            state.fingerprint = fingerprint
        seconds = time.monotonic() - started
        if outcome is not None:
            state.status = dict(outcome.status)
    finally:
        state.lock.release()
    if outcome is not None:
        _report(body, patch, before, outcome, retry=retry, tuning=tuning, metrics=memo.get("metrics"), seconds=seconds)


def on_delete(body: kopf.Body, memo: kopf.Memo, *, retry: int, tuning: Tuning) -> None:
    """Remove what the feed created; never block the deletion for long."""
    state = feed_state(memo)
    with state.lock:
        outcome = cleanup_feed(memo["kube"], _feed_object(body, state))
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

    @kopf.on.delete(*FEEDS, registry=registry, id="cleanup", retries=tune.delete_retries)
    def cleanup(body: kopf.Body, memo: kopf.Memo, retry: int = 0, **_: Any) -> None:
        on_delete(body, memo, retry=retry, tuning=tune)
