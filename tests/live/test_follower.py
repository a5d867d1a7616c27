"""The subscriber loop on its own: a real ZeroMQ PUB socket on 127.0.0.1 and a scripted feed side (what the handlers
provide in the operator), for the paths the operator tests do not reach: a sync that is busy or failed, a sync
already covered by another, and the spec moving or dropping the publisher.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import replace

from kubetest import eventually
from mispzmq import MispPublisher
from prometheus_client import CollectorRegistry

from falco_misp.conditions import Condition
from falco_misp.feed.model import FilterSet
from falco_misp.live.follower import LiveFollower, LiveSync, LiveTarget, LiveTuning
from falco_misp.metrics import LiveMetrics

FAST = LiveTuning(
    heartbeat_timeout_seconds=1.0, reconnect_min_seconds=0.1, reconnect_max_seconds=0.2, poll_seconds=0.02,
    recheck_seconds=0.3,
)  # fmt: skip
MATCHING = {
    "Attribute": {"type": "ip-dst", "value": "45.9.1.7", "to_ids": True, "category": "Network activity"},
    "Event": {"id": "2", "published": True, "threat_level_id": "1", "Orgc": {"id": "1", "name": "CIRCL"}},
    "action": "add",
}


class ScriptedFeed:
    """A FeedLink whose syncs answer from a script and whose conditions are recorded."""

    def __init__(self, url: str, *, debounce: float = 0.2) -> None:
        self.name = "ns/feed"
        self.current: LiveTarget | None = LiveTarget(url, debounce, (FilterSet(),), 3600)
        self.answers: list[LiveSync] = []
        self.syncs: list[float] = []
        self.conditions: list[Condition | None] = []
        self.busy = False

    def target(self) -> LiveTarget | None:
        return self.current

    def now(self) -> int:
        return 1_767_614_400

    async def sync(self, since: float) -> LiveSync:
        self.syncs.append(since)
        return self.answers.pop(0) if self.answers else LiveSync.APPLIED

    async def set_condition(self, condition: Condition | None) -> bool:
        if self.busy:
            return False
        if not self.conditions or self.conditions[-1] != condition:
            self.conditions.append(condition)
        return True

    def live(self) -> bool | None:
        last = self.conditions[-1] if self.conditions else None
        return None if last is None else last.status


@contextlib.asynccontextmanager
async def following(feed: ScriptedFeed, metrics: LiveMetrics | None = None) -> AsyncIterator[LiveFollower]:
    stop = asyncio.Event()
    follower = LiveFollower(
        feed, tuning=FAST, retry_base_seconds=0.1, retry_max_seconds=0.4, stopped=stop.is_set,
        logger=logging.getLogger("test.live"), metrics=metrics,
    )  # fmt: skip
    task = asyncio.create_task(follower.run())
    try:
        yield follower
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=5)


async def test_retry_busy_and_covered(publisher: MispPublisher) -> None:
    feed = ScriptedFeed(publisher.url)
    registry = CollectorRegistry()
    async with following(feed, LiveMetrics(registry)), publisher.beating(0.05):
        await eventually(lambda: feed.live() is True, what="heard")
        label = {"feed": "ns/feed"}

        # A temporary failure is retried with the operator's backoff; the latency counts once it is applied.
        feed.answers = [LiveSync.RETRY, LiveSync.RETRY, LiveSync.APPLIED]
        publisher.send("misp_json_attribute", MATCHING)
        await eventually(lambda: len(feed.syncs) == 3, timeout=5, what="retries")
        assert len(set(feed.syncs)) == 1  # the same burst each time
        assert registry.get_sample_value("falco_misp_live_syncs_total", label) == 3
        assert registry.get_sample_value("falco_misp_live_update_latency_seconds_count", label) == 1

        # Busy (the change handler owns the generation): asked again a debounce later. Covered: not counted.
        feed.answers = [LiveSync.BUSY, LiveSync.COVERED]
        publisher.send("misp_json_attribute", MATCHING)
        await eventually(lambda: len(feed.syncs) == 5, timeout=5, what="busy, then covered")
        assert feed.syncs[3] == feed.syncs[4]
        await asyncio.sleep(0.5)
        assert len(feed.syncs) == 5
        assert registry.get_sample_value("falco_misp_live_syncs_total", label) == 3
        assert registry.get_sample_value("falco_misp_live_relevant_messages_total", label) == 2
        assert registry.get_sample_value("falco_misp_live_up", label) == 1


async def test_condition_waits_for_a_busy_feed_and_follows_the_spec(publisher: MispPublisher) -> None:
    feed = ScriptedFeed(publisher.url)
    feed.busy = True  # a sync holds the feed: the condition is written once it is free
    async with following(feed), publisher.beating(0.05):
        await asyncio.sleep(0.3)
        assert feed.conditions == []
        feed.busy = False
        await eventually(lambda: feed.live() is True, what="written once free")

        # Another publisher (the spec changed): nothing is said until it is heard, or stays silent.
        with MispPublisher() as other:
            assert feed.current is not None
            feed.current = replace(feed.current, url=other.url)
            silent = await eventually(lambda: feed.live() is False and feed.conditions[-1], timeout=5)
            assert silent.reason == "NoHeartbeat" and other.url in silent.message
            async with other.beating(0.05):
                await eventually(lambda: feed.live() is True, timeout=5, what="the other publisher heard")

        # Live updates removed from the spec: the condition goes.
        feed.current = None
        await eventually(lambda: feed.conditions[-1] is None, timeout=5, what="condition removed")
