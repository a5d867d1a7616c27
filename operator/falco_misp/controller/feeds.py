"""One feed's state in kopf's memo and the steps run under its lock (a service of the handlers).

:class:`FeedState` (a lock, the status last written, the generation handled, the Secret fingerprint) serialises the
change handler, the timer and live updates; :func:`tick_step` is one timer step (a sync, a deferred rollout, or the
``Reporting`` condition refreshed); :func:`report_outcome` is the one place an outcome becomes a status patch,
Events, metrics and ``kopf.TemporaryError``/``kopf.PermanentError`` (STYLE.md #6: mapped at the edge).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf

from falco_misp.backoff import retry_delay
from falco_misp.conditions import status_patch
from falco_misp.controller.allow_lists import allow_lists_changed
from falco_misp.controller.confirm import check_delivery, delivery_due
from falco_misp.controller.servers import ServerZmq
from falco_misp.controller.suspend import hold
from falco_misp.controller.sync import (
    Failure,
    FeedObject,
    SyncOptions,
    SyncOutcome,
    refresh_reporting,
    rollout_feed,
    sync_feed,
)
from falco_misp.controller.ticks import TickAction, tick_action
from falco_misp.delivery.kube import KubeClient
from falco_misp.feed.policy import Policy
from falco_misp.live.follower import LiveTuning
from falco_misp.metrics import Metrics
from falco_misp.pipeline import IncrementalRefresh
from falco_misp.reporting.matching import with_uid
from falco_misp.reporting.sightings import Reporter
from falco_misp.sources.locations import DEFAULT_MAX_RESPONSE_BYTES


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
    server_check_seconds: float = 300.0
    """How often each ClusterMispServer and MispServer is asked whether it answers and takes its key (issue 15)."""
    delivery_recheck_seconds: float = 300.0
    """How often the Falco pods are checked again once the answer is settled (all current, stale past the deadline,
    metrics off): new nodes, restarted or recovered pods. While new rules propagate, every tick checks."""
    policy: Policy = field(default_factory=Policy)
    """The administrator's policy (``--policy FILE``, issue 15): Falco namespaces, ceilings, egress. The default
    refuses loopback, link-local and unspecified addresses only."""


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
        self.incremental = IncrementalRefresh()
        """What the last MISP fetch saw, so the next asks only for changes (issue 14); lost on restart: full fetch."""
        self.allow_lists: Mapping[str, str | None] | None = None
        """The MispAllowLists the last sync read (name -> spec digest): a change reported by the watch syncs again."""
        self.server_zmq: ServerZmq | None = None
        """The ZeroMQ publisher and credentials of the server resource the last sync resolved (``serverRef``)."""


def feed_state(memo: kopf.Memo) -> FeedState:
    """This feed's state, created on first use."""
    state = memo.get("feed_state")
    if not isinstance(state, FeedState):
        state = memo.setdefault("feed_state", FeedState())
    assert isinstance(state, FeedState)
    return state


def generation_of(body: kopf.Body) -> int:
    return int(body.get("metadata", {}).get("generation") or 0)


def feed_ref(body: kopf.Body) -> str:
    """``namespace/name``: the feed label of the metrics."""
    meta = body.get("metadata", {})
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def body_status(body: kopf.Body) -> dict[str, Any]:
    raw = body.get("status")
    return dict(raw) if isinstance(raw, Mapping) else {}


def feed_object(body: kopf.Body, state: FeedState) -> FeedObject:
    meta = body.get("metadata", {})
    return FeedObject(
        name=str(meta.get("name", "")),
        namespace=str(meta.get("namespace", "")),
        generation=generation_of(body),
        spec=dict(body.get("spec") or {}),
        status=state.status if state.status is not None else body_status(body),
    )


@dataclass(frozen=True)
class TickStep:
    """What one timer step did under the feed's lock, for the report that follows."""

    before: Mapping[str, Any]
    """The status before it."""
    outcome: SyncOutcome
    """What the sync or the rollout did."""
    seconds: float
    """How long it took."""


def tick_step(body: kopf.Body, memo: kopf.Memo, state: FeedState, tuning: Tuning, *, force: bool) -> TickStep | None:
    """The timer's work, the caller holding the feed's lock: a sync, a deferred rollout, or nothing when none is due.

    ``force``: sync without asking whether one is due (a retry, or live updates).
    """
    obj = feed_object(body, state)
    before = {**body_status(body), **obj.status}
    now = tuning.clock()
    kube: KubeClient = memo["kube"]
    held = hold(obj, now)  # spec.suspend (issue 17): nothing fetched, written, rolled out or checked
    if held is not None:
        state.status = dict(held.status)
        return TickStep(before, held, 0.0) if held.status != obj.status else None
    force = force or allow_lists_changed(memo, state.allow_lists)  # a MispAllowList it names changed
    action, fingerprint = (
        (TickAction.SYNC, state.fingerprint) if force else tick_action(kube, obj, state.fingerprint, now)
    )
    started = time.monotonic()
    outcome: SyncOutcome | None = None
    if action is TickAction.SYNC:
        state.sync_started = started
        outcome = sync_feed(kube, obj, now, sync_options(memo, body, tuning))
        state.fingerprint = outcome.secret_fingerprint
        state.allow_lists = outcome.allow_lists
        state.server_zmq = outcome.server_zmq
    elif action is TickAction.ROLLOUT:
        outcome = rollout_feed(kube, obj, now)
        state.fingerprint = fingerprint
    else:  # between syncs: is every Falco pod running the rules? Does MISP refuse the reports' key?
        outcome = _between_syncs(memo, body, obj, now, tuning=tuning)
    if outcome is None:
        return None
    state.status = dict(outcome.status)
    return TickStep(before, outcome, time.monotonic() - started)


def _between_syncs(
    memo: kopf.Memo, body: kopf.Body, obj: FeedObject, now: datetime, *, tuning: Tuning
) -> SyncOutcome | None:
    """A timer step without a sync: the delivery check when due, then the ``Reporting`` condition."""
    outcome = None
    if delivery_due(dict(obj.status), now, tuning.delivery_recheck_seconds):
        outcome = check_delivery(memo["kube"], obj, now)
    if reporter_of(memo) is not None:
        current = dataclasses.replace(obj, status=outcome.status) if outcome is not None else obj
        refreshed = refresh_reporting(current, now, sync_options(memo, body, tuning))
        if refreshed is not None:
            notices = outcome.notices if outcome is not None else ()
            outcome = dataclasses.replace(refreshed, notices=notices + refreshed.notices)
    return outcome


# ------------------------------------------------------------------------- alerts -> MISP sightings (issue 5)
def reporter_of(memo: kopf.Memo) -> Reporter | None:
    reporter = memo.get("reporter")
    return reporter if isinstance(reporter, Reporter) else None


def sync_options(memo: kopf.Memo, body: kopf.Body, tuning: Tuning) -> SyncOptions:
    """What a sync of this feed needs to know of the operator: the alert endpoint, the body limit, a rejected key."""
    reporter = reporter_of(memo)
    meta = body.get("metadata", {})
    rejected = reporter.key_rejected(str(meta.get("namespace", "")), str(meta.get("name", ""))) if reporter else None
    return SyncOptions(
        provenance=reporter is not None,
        max_response_bytes=tuning.max_response_bytes,
        policy=tuning.policy,
        key_problem=rejected.message if rejected is not None else None,
        incremental=feed_state(memo).incremental,
    )


def update_reporting(memo: kopf.Memo, body: kopf.Body, outcome: SyncOutcome) -> None:
    """A sync that applied rules tells alert matching what the feed's rules came from (or that it reports no more)."""
    reporter = reporter_of(memo)
    if reporter is None or not outcome.applied:
        return
    meta = body.get("metadata", {})
    feed = outcome.reporting
    if feed is not None:
        feed = with_uid(feed, str(meta.get("uid") or ""))
    reporter.update_feed(str(meta.get("namespace", "")), str(meta.get("name", "")), feed)


def forget_reporting(memo: kopf.Memo, body: kopf.Body) -> None:
    reporter = reporter_of(memo)
    if reporter is not None:
        meta = body.get("metadata", {})
        reporter.remove_feed(str(meta.get("namespace", "")), str(meta.get("name", "")))


def report_outcome(
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
            metrics.observe_sync(feed_ref(body), outcome.status, reasons, seconds, applied=outcome.applied)
        else:
            metrics.observe_rollout(feed_ref(body), reasons)
        metrics.observe_delivery(feed_ref(body), outcome.status)
        metrics.observe_feed(feed_ref(body), body.get("spec") or {}, outcome.status)  # what the alerts read
    for key, value in status_patch(before, outcome.status).items():
        patch.status[key] = value
    for notice in outcome.notices:
        kopf.event(body, type=notice.type, reason=notice.reason, message=notice.message)
    if outcome.failure is Failure.TEMPORARY:
        delay = retry_delay(retry, tuning.retry_base_seconds, tuning.retry_max_seconds)
        raise kopf.TemporaryError(outcome.message, delay=delay)
    if outcome.failure is Failure.PERMANENT:
        raise kopf.PermanentError(outcome.message)
