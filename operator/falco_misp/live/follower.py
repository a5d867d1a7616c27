"""Live updates from MISP's ZeroMQ publisher (a service: the socket and its loop; the decisions are pure, in
:mod:`falco_misp.live.messages`). Issue 7.

One :class:`LiveFollower` per MispFeed runs as a kopf daemon (``handlers.register``). It subscribes to MISP's
attribute, event and publish topics and to its heartbeat, then:

- a relevant message starts (or extends) a burst; once no relevant message came for ``zmq.debounce`` (and at the
  latest three debounce periods after the first one) it asks the feed for a sync: the very sync the timer runs,
  under the same per-feed lock (``handlers.on_live_update``), so a burst gives one sync and nothing is synced from
  the messages themselves. A sync that failed for a temporary reason is retried with the operator's backoff;
- any frame proves the publisher alive (condition ``LiveUpdates`` True). Nothing for ``heartbeat_timeout``
  (MISP beats every 10 s) sets it False; the socket is then closed and opened again after a backoff (1 s,
  doubling to 60 s), and libzmq itself reconnects a dropped TCP connection within the same bounds;
- a spec change that moves ``source.misp.zmq`` subscribes anew; removing it removes the condition.

The refresh timer keeps running whatever happens here: live updates only make changes arrive sooner.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

import zmq
import zmq.asyncio

from falco_misp.backoff import retry_delay
from falco_misp.conditions import Condition
from falco_misp.feed.model import FilterSet
from falco_misp.live.messages import (
    SUBSCRIPTIONS,
    Burst,
    MessageError,
    add_to_burst,
    connect_failed,
    is_relevant,
    no_heartbeat,
    parse_message,
    postpone,
    receiving,
    topic_of,
)
from falco_misp.metrics import LiveMetrics


@dataclass(frozen=True)
class LiveTuning:
    """Operator-wide timing of the ZeroMQ subscribers (per-feed settings are in the spec)."""

    heartbeat_timeout_seconds: float = 30.0
    """LiveUpdates turns False after this long without any message (MISP's heartbeat comes every 10 s)."""
    reconnect_min_seconds: float = 1.0
    """First delay before a silent subscription is opened again; libzmq's first TCP reconnect delay."""
    reconnect_max_seconds: float = 60.0
    """Longest such delay (it doubles while the publisher stays silent)."""
    poll_seconds: float = 0.25
    """Longest wait for a message before the loop checks for a stop, a spec change or a due sync."""
    recheck_seconds: float = 10.0
    """How often the LiveUpdates condition in the object is compared with what the subscriber knows."""


@dataclass(frozen=True)
class LiveTarget:
    """What a follower needs from the feed's spec."""

    url: str
    """``tcp://host:port`` of the publisher."""
    debounce_seconds: float
    """Quiet time after the latest relevant message before the sync."""
    filters: tuple[FilterSet, ...]
    """The feed's filter sets (OR): what makes a message relevant."""
    refresh_seconds: int
    """The feed's refresh interval (named in the LiveUpdates=False message)."""
    credentials: tuple[str, str] | None = field(default=None, repr=False)
    """ZeroMQ PLAIN user name and password (a server resource's ``zmq.credentialsSecretRef``, issue 15); None: none."""


class LiveSync(StrEnum):
    """What became of a sync the follower asked for."""

    APPLIED = "applied"
    """It ran and changed the ConfigMaps."""
    UNCHANGED = "unchanged"
    """It ran; the rules were already right (or a drop was held back)."""
    COVERED = "covered"
    """Not needed: another sync started after the burst's latest message."""
    BUSY = "busy"
    """Not now: the change handler owns the current spec generation; ask again later."""
    RETRY = "retry"
    """It failed for a temporary reason (source or API down): retry with backoff."""
    FAILED = "failed"
    """It failed because of the spec: nothing to retry until the spec changes."""


class FeedLink(Protocol):
    """The feed side of a follower, implemented by the handlers over kopf's live body and memo."""

    @property
    def name(self) -> str:
        """``namespace/name``, for logs and metric labels."""
        ...

    def target(self) -> LiveTarget | None:
        """The current spec's live-update settings (None: not configured, or the spec does not parse)."""
        ...

    def now(self) -> int:
        """Wall-clock epoch seconds (the filters' ``maxAge``)."""
        ...

    async def sync(self, since: float) -> LiveSync:
        """Run the timer's sync unless one started after ``since`` (monotonic seconds)."""
        ...

    async def set_condition(self, condition: Condition | None) -> bool:
        """Write (None: remove) the LiveUpdates condition; False when a sync holds the feed (try again soon)."""
        ...


class Subscriber:
    """One SUB socket on one publisher, subscribed to the topics in :data:`~falco_misp.live.messages.SUBSCRIPTIONS`."""

    def __init__(
        self, context: zmq.asyncio.Context, url: str, tuning: LiveTuning, credentials: tuple[str, str] | None = None
    ) -> None:
        socket = context.socket(zmq.SUB)
        try:
            socket.setsockopt(zmq.LINGER, 0)
            if credentials is not None:  # ZMTP PLAIN: MISP's ZeroMQ_username/ZeroMQ_password, set before connect
                socket.plain_username = credentials[0].encode()
                socket.plain_password = credentials[1].encode()
            # libzmq reconnects a dropped connection by itself, with a delay doubling between these bounds.
            socket.setsockopt(zmq.RECONNECT_IVL, _ms(tuning.reconnect_min_seconds))
            socket.setsockopt(zmq.RECONNECT_IVL_MAX, _ms(tuning.reconnect_max_seconds))
            # ZMTP pings notice a peer that vanished without closing the connection (a node gone, a NAT timeout).
            socket.setsockopt(zmq.HEARTBEAT_IVL, _ms(tuning.heartbeat_timeout_seconds / 3))
            socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, _ms(tuning.heartbeat_timeout_seconds))
            for topic in SUBSCRIPTIONS:
                socket.setsockopt(zmq.SUBSCRIBE, topic)
            socket.connect(url)
        except zmq.ZMQError:
            socket.close(linger=0)
            raise
        self.socket = socket

    async def receive(self, timeout: float) -> bytes | None:
        """The next message (frames joined by a space), or None after ``timeout`` seconds."""
        if not await self.socket.poll(_ms(timeout)):  # POLLIN
            return None
        frames = await self.socket.recv_multipart()
        return b" ".join(frames)

    def close(self) -> None:
        """Close the socket at once (nothing is ever sent)."""
        self.socket.close(linger=0)


def _ms(seconds: float) -> int:
    return max(int(seconds * 1000), 1)


class LiveFollower:
    """The subscriber loop of one feed; :meth:`run` returns when ``stopped()`` turns true (or on cancellation)."""

    def __init__(
        self,
        link: FeedLink,
        *,
        tuning: LiveTuning,
        retry_base_seconds: float,
        retry_max_seconds: float,
        stopped: Callable[[], bool],
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
        metrics: LiveMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.link = link
        self.tuning = tuning
        self.retry_base_seconds = retry_base_seconds
        self.retry_max_seconds = retry_max_seconds
        self.stopped = stopped
        self.log = logger
        self.metrics = metrics
        self.clock = clock
        self._target: LiveTarget | None = None
        self._sub: Subscriber | None = None
        self._opened_at = 0.0  # when the current socket was opened
        self._heard_at: float | None = None  # when the latest frame came on it
        self._reopen_at = 0.0  # when a closed (silent) subscription may be opened again
        self._backoff = 0.0  # the latest reopen delay (0: none yet)
        self._burst: Burst | None = None
        self._retries = 0  # consecutive temporary failures of live-triggered syncs
        self._decided = False  # whether the follower knows what LiveUpdates should say
        self._desired: Condition | None = None
        self._written: Condition | None = None
        self._checked_at = float("-inf")
        self._condition_retry_at = 0.0  # a write found the feed busy (a sync runs): not before then

    async def run(self) -> None:
        """Follow the publisher until stopped."""
        context = zmq.asyncio.Context()
        try:
            while not self.stopped():
                await self._step(context)
        finally:
            self._close()
            context.destroy(linger=0)
            if self.metrics is not None:
                self.metrics.heard(self.link.name, None)

    async def _step(self, context: zmq.asyncio.Context) -> None:
        now = self.clock()
        target = self.link.target()
        if target != self._target:
            self._retarget(target)
        if self._target is None:
            await self._settle_condition(now)
            await asyncio.sleep(max(self.tuning.poll_seconds, 1.0))  # only a spec change can matter now
            return
        if self._sub is None and now >= self._reopen_at:
            self._open(context, self._target, now)
        frame = await self._receive(now)
        now = self.clock()
        if frame is not None:
            self._on_frame(frame, self._target, now)
        else:
            self._check_silence(self._target, now)
        await self._settle_condition(now)
        if self._burst is not None and now >= self._burst.due:
            await self._sync(self._burst, self._target)

    # ----------------------------------------------------------------------------------------------- the socket
    def _retarget(self, target: LiveTarget | None) -> None:
        old = self._target
        self._target = target
        if target is None:
            self._close()
            self._burst = None
            self._decide(None)
            if old is not None:
                self.log.info("live updates off: unsubscribed from %s", old.url)
            return
        if old is None or (old.url, old.credentials) != (target.url, target.credentials):
            self._close()
            self._reopen_at = 0.0
            self._backoff = 0.0
            self._decided = False  # say nothing until the new publisher is heard or stays silent

    def _open(self, context: zmq.asyncio.Context, target: LiveTarget, now: float) -> None:
        try:
            self._sub = Subscriber(context, target.url, self.tuning, target.credentials)
        except zmq.ZMQError as exc:
            self._decide(connect_failed(target.url, str(exc)))
            self._schedule_reopen(now)
            self.log.warning("live updates: cannot subscribe to %s (%s)", target.url, exc)
            return
        self._opened_at = now
        self._heard_at = None
        self.log.info("live updates: subscribed to %s", target.url)

    def _close(self) -> None:
        if self._sub is not None:
            self._sub.close()
            self._sub = None

    def _schedule_reopen(self, now: float) -> None:
        low, high = self.tuning.reconnect_min_seconds, self.tuning.reconnect_max_seconds
        self._backoff = min(max(self._backoff * 2, low), high)
        self._reopen_at = now + self._backoff

    async def _receive(self, now: float) -> bytes | None:
        wait = self.tuning.poll_seconds
        if self._burst is not None:
            wait = min(wait, max(self._burst.due - now, 0.0))
        if self._sub is None:
            await asyncio.sleep(max(min(wait, self._reopen_at - now), 0.0))
            return None
        return await self._sub.receive(wait)

    def _check_silence(self, target: LiveTarget, now: float) -> None:
        if self._sub is None:
            return
        since = self._heard_at if self._heard_at is not None else self._opened_at
        timeout = self.tuning.heartbeat_timeout_seconds
        if now - since < timeout:
            return
        self._close()
        self._schedule_reopen(now)
        self._decide(no_heartbeat(target.url, timeout, target.refresh_seconds))
        self.log.warning(
            "live updates: nothing from %s for %gs, subscribing again in %gs", target.url, timeout, self._backoff
        )

    # ---------------------------------------------------------------------------------------------- messages
    def _on_frame(self, frame: bytes, target: LiveTarget, now: float) -> None:
        self._heard_at = now
        self._backoff = 0.0
        self._decide(receiving(target.url))
        feed = self.link.name
        try:
            message = parse_message(frame)
        except MessageError as exc:
            if self.metrics is not None:
                self.metrics.messages.labels(feed, "invalid").inc()
                self.metrics.invalid.labels(feed, exc.reason).inc()
            self.log.debug("live updates: ignored a frame from %s: %s", target.url, exc)
            return
        if self.metrics is not None:
            self.metrics.messages.labels(feed, topic_of(message)).inc()
        if not is_relevant(message, target.filters, self.link.now()):
            return
        if self.metrics is not None:
            self.metrics.relevant.labels(feed).inc()
        self._burst = add_to_burst(self._burst, now, target.debounce_seconds)

    async def _sync(self, burst: Burst, target: LiveTarget) -> None:
        self.log.info("live updates: %d relevant message(s) from %s, syncing", burst.count, target.url)
        result = await self.link.sync(burst.last)
        now = self.clock()
        feed = self.link.name
        if self.metrics is not None and result not in (LiveSync.COVERED, LiveSync.BUSY):
            self.metrics.syncs.labels(feed).inc()
            if result is LiveSync.APPLIED:
                self.metrics.latency.labels(feed).observe(now - burst.first)
        if result is LiveSync.BUSY:
            self._burst = postpone(burst, now + target.debounce_seconds)
        elif result is LiveSync.RETRY:
            delay = retry_delay(self._retries, self.retry_base_seconds, self.retry_max_seconds)
            self._retries += 1
            self._burst = postpone(burst, now + delay)
            self.log.warning("live updates: the sync failed, retrying in %gs", delay)
        else:
            self._retries = 0
            self._burst = None

    # --------------------------------------------------------------------------------------------- condition
    def _decide(self, condition: Condition | None) -> None:
        if self._decided and condition == self._desired:
            return
        self._decided = True
        self._desired = condition
        if self.metrics is not None:
            self.metrics.heard(self.link.name, None if condition is None else condition.status)

    async def _settle_condition(self, now: float) -> None:
        """Write the condition when it changed, and compare it with the object's now and then (a sync's status
        patch computed before the change could have put the old one back)."""
        if not self._decided or now < self._condition_retry_at:
            return
        if self._desired == self._written and now < self._checked_at + self.tuning.recheck_seconds:
            return
        if await self.link.set_condition(self._desired):
            self._written = self._desired
            self._checked_at = now
        else:
            self._condition_retry_at = now + min(1.0, self.tuning.recheck_seconds)
