"""Live updates, the operator's side: the syncs a feed's ZeroMQ subscriber asks for, and its condition.

:func:`follow_live_updates` runs a :class:`~falco_misp.live.follower.LiveFollower` per feed (a kopf daemon); its syncs
are the timer's step, forced, under the feed's lock, and their status is written at once (kopf applies a daemon's
patch only when the daemon exits).
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from falco_misp.conditions import Condition, build_conditions, condition
from falco_misp.controller.feeds import (
    Tuning,
    body_status,
    feed_object,
    feed_state,
    generation_of,
    report_outcome,
    tick_step,
    update_reporting,
)
from falco_misp.controller.servers import ServerZmq
from falco_misp.controller.sync import (
    parse_feed_object,
)
from falco_misp.delivery.kube import KubeError
from falco_misp.errors import SpecError
from falco_misp.live.follower import LiveFollower, LiveSync, LiveTarget
from falco_misp.live.messages import LIVE_UPDATES
from falco_misp.metrics import LiveMetrics

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
    if state.handled_generation != generation_of(body):
        return LiveSync.BUSY
    with state.lock:
        if state.sync_started is not None and state.sync_started >= since:
            return LiveSync.COVERED
        step = tick_step(body, memo, state, tuning, force=True)
        if step is None:  # forced: a sync, unless spec.suspend holds the feed (issue 17)
            return LiveSync.UNCHANGED
        applied = any(n.reason == _RULES_APPLIED for n in step.outcome.notices)
        result = LiveSync.APPLIED if applied else LiveSync.UNCHANGED
        patch = kopf.Patch()
        try:
            update_reporting(memo, body, step.outcome)
            report_outcome(
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
        base = state.status if state.status is not None else body_status(body)
        now, generation = tuning.clock(), generation_of(body)
        if live is None:
            conditions = build_conditions(base.get("conditions"), [], now, generation, remove=(LIVE_UPDATES,))
        else:
            conditions = build_conditions(base.get("conditions"), [live], now, generation)
        wanted = next((c for c in conditions if c.get("type") == LIVE_UPDATES), None)
        seen = condition(body_status(body), LIVE_UPDATES)
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
    """The feed side of a :class:`~falco_misp.live.follower.LiveFollower`: kopf's live body and per-object memo."""

    def __init__(self, body: kopf.Body, memo: kopf.Memo, tuning: Tuning) -> None:
        self.body = body
        self.memo = memo
        self.tuning = tuning
        meta = body.get("metadata", {})
        self.name = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
        self._spec: object = None
        self._server: ServerZmq | None = None
        self._target: LiveTarget | None = None

    def target(self) -> LiveTarget | None:
        spec = self.body.get("spec")
        server = feed_state(self.memo).server_zmq  # a serverRef's, as the last sync resolved it (issue 15)
        if (spec, server) == (self._spec, self._server):
            return self._target
        self._spec, self._server = copy.deepcopy(spec), server
        try:
            feed = parse_feed_object(feed_object(self.body, feed_state(self.memo)))
        except SpecError:
            self._target = None  # the change handler reports it (Ready=False, InvalidSpec)
            return None
        misp = feed.spec.source.misp
        zmq = misp.zmq if misp is not None else None
        creds = None
        if misp is not None and misp.server_ref is not None:  # the server's publisher, once a sync allowed the feed
            zmq = server.zmq if server is not None else None
            found = server.credentials if server is not None else None
            creds = (found.username, found.password) if found is not None else None
        if zmq is None or feed.spec.suspend:  # a suspended feed ignores live updates (issue 17)
            self._target = None
        else:
            self._target = LiveTarget(
                zmq.url, zmq.debounce_seconds, feed.spec.filters, feed.spec.refresh_seconds, credentials=creds
            )
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
    """The live-updates daemon of one feed (see :mod:`falco_misp.live.follower`); returns when kopf stops it."""
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
