"""ZeroMQ PLAIN credentials (MISP's ``Plugin.ZeroMQ_username`` / ``ZeroMQ_password``; issue 15): a publisher on
127.0.0.1 that authenticates subscribers with PLAIN (pyzmq's ThreadAuthenticator, as MISP's ``mispzmq.py`` does)
delivers messages to a follower with the right credentials and none to one with wrong or no credentials; in the
operator, the credentials come from a ClusterMispServer's ``zmq.credentialsSecretRef``."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any, Self

import kmock
import pytest
import zmq
from kubetest import (
    GROUP,
    VERSION,
    FakeClock,
    cond,
    create,
    daemonset_body,
    eventually,
    feed_body,
    running_operator,
    status_of,
)
from mispzmq import MispPublisher
from zmq.auth.thread import ThreadAuthenticator

from emulators.misp import MispEmulator
from falco_misp.conditions import Condition
from falco_misp.delivery.kube import DEFAULT_OPERATOR_NAMESPACE
from falco_misp.feed.model import FilterSet
from falco_misp.live.follower import LiveFollower, LiveSync, LiveTarget, LiveTuning
from falco_misp.live.messages import LIVE_UPDATES

FAST = LiveTuning(
    heartbeat_timeout_seconds=1.0, reconnect_min_seconds=0.1, reconnect_max_seconds=0.2, poll_seconds=0.02,
    recheck_seconds=0.3,
)  # fmt: skip
USERS = {"falco": "s3cret-zmq"}
MATCHING = {
    "Attribute": {"type": "ip-dst", "value": "45.9.1.7", "to_ids": True, "category": "Network activity"},
    "Event": {"id": "2", "published": True, "threat_level_id": "1", "Orgc": {"id": "1", "name": "CIRCL"}},
    "action": "add",
}


class PlainPublisher(MispPublisher):
    """The MISP-like publisher with ZMTP PLAIN: only the users in ``passwords`` may subscribe."""

    def __init__(self, passwords: dict[str, str]) -> None:
        super().__init__()
        self.auth = ThreadAuthenticator(self.context)
        self.auth.start()
        self.auth.configure_plain(domain="*", passwords=passwords)

    def start(self) -> Self:
        socket = self.context.socket(zmq.PUB)
        socket.setsockopt(zmq.LINGER, 0)
        socket.plain_server = True  # before bind: the ZAP handler above checks every connecting subscriber
        self.port = socket.bind_to_random_port("tcp://127.0.0.1")
        self.socket = socket
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.auth.stop()
        self.context.term()


@pytest.fixture
def plain() -> Iterator[PlainPublisher]:
    with PlainPublisher(USERS) as pub:
        yield pub


class Link:
    """A FeedLink that records the syncs asked for and the LiveUpdates condition."""

    def __init__(self, target: LiveTarget) -> None:
        self.name = "ns/feed"
        self.current = target
        self.syncs: list[float] = []
        self.conditions: list[Condition | None] = []

    def target(self) -> LiveTarget | None:
        return self.current

    def now(self) -> int:
        return 1_767_614_400

    async def sync(self, since: float) -> LiveSync:
        self.syncs.append(since)
        return LiveSync.APPLIED

    async def set_condition(self, condition: Condition | None) -> bool:
        self.conditions.append(condition)
        return True


@contextlib.asynccontextmanager
async def following(link: Link) -> AsyncIterator[None]:
    stop = asyncio.Event()
    follower = LiveFollower(
        link, tuning=FAST, retry_base_seconds=0.1, retry_max_seconds=0.4, stopped=stop.is_set,
        logger=logging.getLogger("test.live"),
    )  # fmt: skip
    task = asyncio.create_task(follower.run())
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=5)


def target(url: str, credentials: tuple[str, str] | None) -> LiveTarget:
    return LiveTarget(url, 0.1, (FilterSet(),), 3600, credentials=credentials)


async def test_the_right_credentials_receive_messages(plain: PlainPublisher) -> None:
    link = Link(target(plain.url, ("falco", "s3cret-zmq")))
    async with following(link), plain.beating(0.05):
        await eventually(lambda: link.conditions and link.conditions[-1] and link.conditions[-1].status, what="heard")
        plain.send("misp_json_attribute", MATCHING)
        await eventually(lambda: link.syncs, timeout=5, what="a sync for the message")


@pytest.mark.parametrize("credentials", [("falco", "wrong"), ("mallory", "s3cret-zmq"), None])
async def test_wrong_or_no_credentials_receive_nothing(
    plain: PlainPublisher, credentials: tuple[str, str] | None
) -> None:
    link = Link(target(plain.url, credentials))
    async with following(link), plain.beating(0.05):
        for _ in range(10):  # two heartbeat timeouts: long enough for a refused subscriber to be told nothing
            plain.send("misp_json_attribute", MATCHING)
            await asyncio.sleep(0.2)
    assert link.syncs == []
    assert not any(c is not None and c.status for c in link.conditions)  # never heard
    assert any(c is not None and c.reason == "NoHeartbeat" for c in link.conditions)


# ----------------------------------------------------------------------------------- through the operator
def _secret(name: str, namespace: str, data: dict[str, str]) -> dict[str, Any]:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace,
            "resourceVersion": "1"}, "data": encoded}  # fmt: skip


@pytest.mark.usefixtures("resources", "api_calls")
@pytest.mark.filterwarnings("ignore:read_binary is deprecated:DeprecationWarning")  # inside kmock 0.8
@pytest.mark.parametrize(("password", "heard"), [("s3cret-zmq", True), ("wrong", False)])
async def test_a_cluster_server_gives_its_feeds_the_publisher_credentials(
    kmock: kmock.KubernetesEmulator, misp: MispEmulator, clock: FakeClock, plain: PlainPublisher, password: str,
    heard: bool,
) -> None:  # fmt: skip
    ns = DEFAULT_OPERATOR_NAMESPACE
    await create(kmock, daemonset_body(mounts=("misp-security-intel",)))
    await create(kmock, _secret("circl-key", ns, {"authkey": misp.api_key}))
    await create(kmock, _secret("circl-zmq", ns, {"username": "falco", "password": password}))
    spec = {
        "url": misp.url, "authKeySecretRef": {"name": "circl-key", "key": "authkey"}, "timeoutSeconds": 2,
        "zmq": {"url": plain.url, "credentialsSecretRef": {"name": "circl-zmq"}, "debounce": "1s"},
        "allowedNamespaces": {"names": ["security"]},
    }  # fmt: skip
    meta = {"name": "circl", "generation": 1, "resourceVersion": "1", "uid": "uid-circl"}
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ClusterMispServer", "metadata": meta, "spec": spec}
    resp = await kmock.post(f"/apis/{GROUP}/{VERSION}/clustermispservers", json=body)
    assert resp.status == 200, await resp.text()
    feed = {
        "source": {"misp": {"serverRef": {"kind": "ClusterMispServer", "name": "circl"}}},
        "falco": {"namespace": "falco"},
    }
    tuning = {"live": FAST}
    async with running_operator(kmock, clock, tuning=tuning), plain.beating(0.05):
        await create(kmock, feed_body("intel", "security", feed))
        live = await eventually(
            lambda: cond(status_of(kmock, "security", "intel"), LIVE_UPDATES) or None, timeout=10, what="LiveUpdates"
        )
        if heard:
            assert live["status"] == "True", live
        else:
            assert (live["status"], live["reason"]) == ("False", "NoHeartbeat"), live
        assert "s3cret-zmq" not in str(status_of(kmock, "security", "intel"))
