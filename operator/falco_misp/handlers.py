"""The kopf handlers of the MispFeed operator (an entry point: thin; the work is in :mod:`falco_misp.sync`).

- create / update (of the spec) / resume: sync now;
- a timer per feed, every ``Tuning.tick_seconds``: sync when ``refresh.interval`` passed or the referenced
  Secret changed (the Secret is read each tick: the operator needs ``get`` on Secrets, never ``list``/``watch``),
  else do a rollout deferred by ``falco.minRolloutInterval`` once its time comes;
- a daemon per feed (:mod:`falco_misp.live`): with ``source.misp.zmq``, runs the timer's sync, forced, within seconds
  of a relevant change announced on MISP's ZeroMQ publisher, and keeps the ``LiveUpdates`` condition;
- delete: remove the feed's ConfigMaps and its DaemonSet annotation (the finalizer never blocks for long: gone
  namespaces and DaemonSets are fine, API errors are retried a few times and then the deletion proceeds).

This is the only module that maps outcomes to ``kopf.TemporaryError`` (source or API down: retry with
exponential backoff) and ``kopf.PermanentError`` (the spec must change). Syncs of one feed are serialised by a
lock kept in kopf's per-object memo, with the status last written, so the timer never races a change handler.

``register()`` puts the handlers into a registry: ``falco-misp run`` and the tests use their own registry;
``kopf run -m falco_misp.kopf_main`` uses kopf's default one.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf

from falco_misp.alerts import with_uid
from falco_misp.decisions import TickAction, retry_delay
from falco_misp.errors import SpecError
from falco_misp.intake import AlertIntake, IntakeError
from falco_misp.kube import KubeClient, KubeError
from falco_misp.live import LiveFollower, LiveSync, LiveTarget, LiveTuning
from falco_misp.metrics import LiveMetrics, Metrics, ReportingMetrics
from falco_misp.sightings import Reporter
from falco_misp.sources import DEFAULT_MAX_RESPONSE_BYTES
from falco_misp.spec import API_GROUP, API_VERSION
from falco_misp.status import Condition, build_conditions, condition, status_patch
from falco_misp.sync import (
    Failure,
    FeedObject,
    SyncOptions,
    SyncOutcome,
    cleanup_feed,
    parse_feed_object,
    refresh_reporting,
    rollout_feed,
    sync_feed,
    tick_action,
)
from falco_misp.zmq_messages import LIVE_UPDATES

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
    live: LiveTuning = field(default_factory=LiveTuning)
    """Timing of the ZeroMQ subscribers (``spec.source.misp.zmq``)."""
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    """The largest answer read from a source (``--max-response-bytes``)."""


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
        self.sync_started: float | None = None
        """When (``time.monotonic()``) the latest sync began: it saw every MISP change made before (live updates)."""


def feed_state(memo: kopf.Memo) -> FeedState:
    """This feed's state, created on first use."""
    state = memo.get("feed_state")
    if not isinstance(state, FeedState):
        state = memo.setdefault("feed_state", FeedState())
    assert isinstance(state, FeedState)
    return state


def _generation(body: kopf.Body) -> int:
    return int(body.get("metadata", {}).get("generation") or 0)


def _ref(body: kopf.Body) -> str:
    """``namespace/name``: the feed label of the metrics."""
    meta = body.get("metadata", {})
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


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
        reasons = tuple(n.reason for n in outcome.notices)
        if outcome.synced:
            metrics.observe_sync(_ref(body), outcome.status, reasons, seconds, applied=outcome.applied)
        else:
            metrics.observe_rollout(_ref(body), reasons)
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
        started = state.sync_started = time.monotonic()
        outcome = sync_feed(memo["kube"], obj, tuning.clock(), _options(memo, body, tuning))
        seconds = time.monotonic() - started
        state.status = dict(outcome.status)
        state.fingerprint = outcome.secret_fingerprint
        if outcome.failure is not Failure.TEMPORARY:
            state.handled_generation = generation
    _update_reporting(memo, body, outcome)
    _report(body, patch, before, outcome, retry=retry, tuning=tuning, metrics=memo.get("metrics"), seconds=seconds)


@dataclass(frozen=True)
class _TickStep:
    """What one timer step did under the feed's lock, for the report that follows."""

    before: Mapping[str, Any]
    """The status before it."""
    outcome: SyncOutcome
    """What the sync or the rollout did."""
    seconds: float
    """How long it took."""


def _tick_step(body: kopf.Body, memo: kopf.Memo, state: FeedState, tuning: Tuning, *, force: bool) -> _TickStep | None:
    """The timer's work, the caller holding the feed's lock: a sync, a deferred rollout, or nothing when none is due.

    ``force``: sync without asking whether one is due (a retry, or live updates).
    """
    obj = _feed_object(body, state)
    before = {**_body_status(body), **obj.status}
    now = tuning.clock()
    kube: KubeClient = memo["kube"]
    action, fingerprint = (
        (TickAction.SYNC, state.fingerprint) if force else tick_action(kube, obj, state.fingerprint, now)
    )
    started = time.monotonic()
    outcome: SyncOutcome | None = None
    if action is TickAction.SYNC:
        state.sync_started = started
        outcome = sync_feed(kube, obj, now, _options(memo, body, tuning))
        state.fingerprint = outcome.secret_fingerprint
    elif action is TickAction.ROLLOUT:
        outcome = rollout_feed(kube, obj, now)
        state.fingerprint = fingerprint
    elif _reporter(memo) is not None:  # between syncs: MISP may have begun (or stopped) refusing the reports' key
        outcome = refresh_reporting(obj, now, _options(memo, body, tuning))
    if outcome is None:
        return None
    state.status = dict(outcome.status)
    return _TickStep(before, outcome, time.monotonic() - started)


def on_tick(body: kopf.Body, memo: kopf.Memo, patch: kopf.Patch, *, retry: int, tuning: Tuning) -> None:
    """The timer: refresh, Secret change or deferred rollout, when due."""
    state = feed_state(memo)
    if state.handled_generation != _generation(body) or not state.lock.acquire(blocking=False):
        return  # the change handler owns this generation (and its retries), or a sync is running
    try:
        step = _tick_step(body, memo, state, tuning, force=bool(retry))
    finally:
        state.lock.release()
    if step is not None:
        _update_reporting(memo, body, step.outcome)
        _report(
            body, patch, step.before, step.outcome, retry=retry, tuning=tuning, metrics=memo.get("metrics"),
            seconds=step.seconds,
        )  # fmt: skip


def on_delete(body: kopf.Body, memo: kopf.Memo, *, retry: int, tuning: Tuning) -> None:
    """Remove what the feed created; never block the deletion for long."""
    state = feed_state(memo)
    _forget_reporting(memo, body)
    for metrics in (memo.get("metrics"), memo.get("live_metrics"), getattr(_reporter(memo), "metrics", None)):
        if isinstance(metrics, Metrics | LiveMetrics | ReportingMetrics):
            metrics.forget(_ref(body))
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

    # Every feed gets one; it idles without spec.source.misp.zmq. kopf cancels it at once on deletion and exit: every
    # wait in it is a cancellation point (a sync it waits for finishes in its thread, under the feed's lock).
    @kopf.daemon(*FEEDS, registry=registry, id="live-updates", cancellation_timeout=5.0)
    async def live_updates(
        body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped, logger: kopf.Logger, **_: Any
    ) -> None:
        await follow_live_updates(body, memo, stopped, logger, tuning=tune)


# ------------------------------------------------------------------------- alerts -> MISP sightings (issue 5)
def _reporter(memo: kopf.Memo) -> Reporter | None:
    reporter = memo.get("reporter")
    return reporter if isinstance(reporter, Reporter) else None


def _options(memo: kopf.Memo, body: kopf.Body, tuning: Tuning) -> SyncOptions:
    """What a sync of this feed needs to know of the operator: the alert endpoint, the body limit, a rejected key."""
    reporter = _reporter(memo)
    meta = body.get("metadata", {})
    rejected = reporter.key_rejected(str(meta.get("namespace", "")), str(meta.get("name", ""))) if reporter else None
    return SyncOptions(
        provenance=reporter is not None,
        max_response_bytes=tuning.max_response_bytes,
        key_problem=rejected.message if rejected is not None else None,
    )


def _update_reporting(memo: kopf.Memo, body: kopf.Body, outcome: SyncOutcome) -> None:
    """A sync that applied rules tells alert matching what the feed's rules came from (or that it reports no more)."""
    reporter = _reporter(memo)
    if reporter is None or not outcome.applied:
        return
    meta = body.get("metadata", {})
    feed = outcome.reporting
    if feed is not None:
        feed = with_uid(feed, str(meta.get("uid") or ""))
    reporter.update_feed(str(meta.get("namespace", "")), str(meta.get("name", "")), feed)


def _forget_reporting(memo: kopf.Memo, body: kopf.Body) -> None:
    reporter = _reporter(memo)
    if reporter is not None:
        meta = body.get("metadata", {})
        reporter.remove_feed(str(meta.get("namespace", "")), str(meta.get("name", "")))


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


# ----------------------------------------------------------------------- live updates over ZeroMQ (issue 7)
log = logging.getLogger(__name__)
# The Event reason sync_feed posts when it wrote ConfigMaps.
_RULES_APPLIED = "RulesApplied"


def on_live_update(body: kopf.Body, memo: kopf.Memo, *, since: float, tuning: Tuning) -> LiveSync:
    """A sync asked for by the feed's ZeroMQ subscriber: the timer's step, forced, under the same lock.

    Its status is written at once (kopf applies a daemon's patch only when the daemon exits). Not run while the
    change handler owns the spec generation (BUSY: asked again later) or when a sync began after ``since``, the
    burst's latest message (COVERED: that sync saw the change).
    """
    state = feed_state(memo)
    if state.handled_generation != _generation(body):
        return LiveSync.BUSY
    with state.lock:
        if state.sync_started is not None and state.sync_started >= since:
            return LiveSync.COVERED
        step = _tick_step(body, memo, state, tuning, force=True)
        assert step is not None  # forced: always a sync
        applied = any(n.reason == _RULES_APPLIED for n in step.outcome.notices)
        result = LiveSync.APPLIED if applied else LiveSync.UNCHANGED
        patch = kopf.Patch()
        try:
            _update_reporting(memo, body, step.outcome)
            _report(
                body, patch, step.before, step.outcome, retry=0, tuning=tuning, metrics=memo.get("metrics"),
                seconds=step.seconds,
            )  # fmt: skip
        except kopf.TemporaryError:
            result = LiveSync.RETRY
        except kopf.PermanentError:
            result = LiveSync.FAILED
        finally:
            if not _write_status(memo, body, dict(patch.get("status") or {})):
                state.status = None  # the object's status is the truth again; the retry writes the whole difference
                result = LiveSync.RETRY
    return result


def set_live_condition(body: kopf.Body, memo: kopf.Memo, live: Condition | None, *, tuning: Tuning) -> bool:
    """Write (None: remove) the LiveUpdates condition, under the feed's lock so a sync never writes an older list.

    Writes only when the object or the last written status differs. False when a sync holds the lock or the write
    failed: the subscriber tries again shortly.
    """
    state = feed_state(memo)
    if not state.lock.acquire(blocking=False):
        return False
    try:
        base = state.status if state.status is not None else _body_status(body)
        now, generation = tuning.clock(), _generation(body)
        if live is None:
            conditions = build_conditions(base.get("conditions"), [], now, generation, remove=(LIVE_UPDATES,))
        else:
            conditions = build_conditions(base.get("conditions"), [live], now, generation)
        wanted = next((c for c in conditions if c.get("type") == LIVE_UPDATES), None)
        seen = condition(_body_status(body), LIVE_UPDATES)
        if conditions == list(base.get("conditions") or ()) and (dict(seen) if seen is not None else None) == wanted:
            return True
        if not _write_status(memo, body, {"conditions": conditions}):
            return False
        state.status = {**base, "conditions": conditions}
        return True
    finally:
        state.lock.release()


def _write_status(memo: kopf.Memo, body: kopf.Body, status: Mapping[str, Any]) -> bool:
    """Merge-patch the feed's status through the API; False when that failed (logged)."""
    if not status:
        return True
    meta = body.get("metadata", {})
    namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
    try:
        memo["kube"].patch_feed_status(namespace, name, status)
    except KubeError as exc:
        log.warning("feed %s/%s: cannot write the status: %s", namespace, name, exc)
        return False
    return True


class _LiveLink:
    """The feed side of a :class:`~falco_misp.live.LiveFollower`: kopf's live body and per-object memo."""

    def __init__(self, body: kopf.Body, memo: kopf.Memo, tuning: Tuning) -> None:
        self.body = body
        self.memo = memo
        self.tuning = tuning
        meta = body.get("metadata", {})
        self.name = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
        self._spec: object = None
        self._target: LiveTarget | None = None

    def target(self) -> LiveTarget | None:
        spec = self.body.get("spec")
        if spec == self._spec:
            return self._target
        self._spec = copy.deepcopy(spec)
        try:
            feed = parse_feed_object(_feed_object(self.body, feed_state(self.memo)))
        except SpecError:
            self._target = None  # the change handler reports it (Ready=False, InvalidSpec)
            return None
        zmq = feed.spec.source.misp.zmq if feed.spec.source.misp is not None else None
        if zmq is None:
            self._target = None
        else:
            self._target = LiveTarget(zmq.url, zmq.debounce_seconds, feed.spec.filters, feed.spec.refresh_seconds)
        return self._target

    def now(self) -> int:
        return int(self.tuning.clock().timestamp())

    async def sync(self, since: float) -> LiveSync:
        return await asyncio.to_thread(on_live_update, self.body, self.memo, since=since, tuning=self.tuning)

    async def set_condition(self, condition: Condition | None) -> bool:
        return await asyncio.to_thread(set_live_condition, self.body, self.memo, condition, tuning=self.tuning)


async def follow_live_updates(
    body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped, logger: kopf.Logger, *, tuning: Tuning
) -> None:
    """The live-updates daemon of one feed (see :mod:`falco_misp.live`); returns when kopf stops it."""
    metrics = memo.get("live_metrics")
    follower = LiveFollower(
        _LiveLink(body, memo, tuning),
        tuning=tuning.live,
        retry_base_seconds=tuning.retry_base_seconds,
        retry_max_seconds=tuning.retry_max_seconds,
        stopped=lambda: bool(stopped),
        logger=logger,
        metrics=metrics if isinstance(metrics, LiveMetrics) else None,
    )
    await follower.run()
