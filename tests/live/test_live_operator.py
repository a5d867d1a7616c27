"""Live updates end to end: a real ZeroMQ PUB socket on 127.0.0.1 speaking like MISP's, the MISP emulator, and the
operator (real kopf, real ``kubernetes`` client, real pyzmq) against kmock.

The wall clock is the fake one of tests/k8s and never moves here, so the refresh timer never syncs: every sync seen
is one the live updates asked for. Syncs are counted as restSearch requests in the MISP emulator (one page each).
The debounce is 1 s (the spec's minimum), the heartbeat timeout 1 s.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import kmock
import yaml
from kubetest import (
    FEEDS,
    OPERATOR_TEST,
    FakeClock,
    cond,
    configmaps,
    create,
    daemonset_body,
    events,
    eventually,
    feed_body,
    feed_url,
    ip_attrs,
    ips,
    misp_spec,
    running_operator,
    secret_body,
    status_of,
)
from mispzmq import MispPublisher, attribute_message
from prometheus_client import CollectorRegistry

from emulators.misp import MispEmulator
from falco_misp.live.follower import LiveTuning
from falco_misp.metrics import LiveMetrics
from helpers import misp_event

pytestmark = OPERATOR_TEST

DEBOUNCE = 1.0
FAST = LiveTuning(
    heartbeat_timeout_seconds=1.0,
    reconnect_min_seconds=0.1,
    reconnect_max_seconds=0.5,
    poll_seconds=0.05,
    recheck_seconds=0.5,
)


def rule_items(cm: dict[str, Any]) -> set[str]:
    (content,) = cm["data"].values()
    return {i for doc in yaml.safe_load(content) if "list" in doc for i in doc["items"]}


def live_spec(misp: MispEmulator, publisher: MispPublisher) -> dict[str, Any]:
    spec = misp_spec(misp)
    spec["source"]["misp"]["zmq"] = {"url": publisher.url, "debounce": f"{DEBOUNCE:g}s"}
    return spec


def running(kmock: kmock.KubernetesEmulator, clock: FakeClock, memo: dict[str, Any]) -> Any:
    """The operator with fast live-update timing and the given memo entries."""
    return running_operator(kmock, clock, tuning={"live": FAST}, memo=memo)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, {"feed": "falco/intel", **labels}) or 0.0


def searches(misp: MispEmulator) -> int:
    """Syncs that asked MISP: each begins with one read of MISP's event index (issue 14's incremental refresh)."""
    return len([r for r in list(misp.requests) if r.path.startswith("/events/index")])


def live_condition(kmock: kmock.KubernetesEmulator) -> dict[str, Any]:
    return cond(status_of(kmock, "falco", "intel"), "LiveUpdates")


async def wait_live(kmock: kmock.KubernetesEmulator, status: str, timeout: float = 10.0) -> dict[str, Any]:
    result: dict[str, Any] = await eventually(
        lambda: (c := live_condition(kmock)).get("status") == status and c,
        timeout=timeout,
        what=f"LiveUpdates={status}",
    )
    return result


async def test_zeromq_messages_trigger_debounced_syncs(
    kmock: kmock.KubernetesEmulator, misp: MispEmulator, clock: FakeClock, publisher: MispPublisher
) -> None:
    misp.add_event(misp_event(1, ip_attrs(ips(3))))
    await create(kmock, daemonset_body(mounts=("misp-falco-intel",)))
    await create(kmock, secret_body("misp-auth", "falco", misp.api_key))
    registry = CollectorRegistry()
    memo = {"live_metrics": LiveMetrics(registry)}

    async with running(kmock, clock, memo), publisher.beating():
        await create(kmock, feed_body("intel", "falco", live_spec(misp, publisher)))
        await eventually(lambda: cond(status_of(kmock, "falco", "intel"), "Ready").get("status") == "True")
        # PUB/SUB slow joiner: what is published before the subscription reached the publisher is lost. The
        # heartbeats flip the condition once the subscriber hears them; only then does a test message count.
        heard = await wait_live(kmock, "True")
        assert heard["reason"] == "Receiving" and publisher.url in heard["message"]
        assert sample(registry, "falco_misp_live_up") == 1.0
        assert searches(misp) == 1  # the change handler's sync only

        # A new matching attribute reaches the ConfigMap within debounce + one sync, through one more restSearch.
        misp.add_event(misp_event(2, ip_attrs(["45.9.1.7"]), published=False))
        sent = time.monotonic()
        publisher.send("misp_json_attribute", attribute_message(misp, "45.9.1.7"))
        await eventually(
            lambda: "45.9.1.7" in rule_items(configmaps(kmock, "falco")["misp-falco-intel-0"]), timeout=DEBOUNCE + 8
        )
        assert time.monotonic() - sent < DEBOUNCE + 5
        assert time.monotonic() - sent >= DEBOUNCE * 0.9  # debounced, not immediate
        assert searches(misp) == 2
        await eventually(lambda: status_of(kmock, "falco", "intel")["indicators"]["total"] == 4)  # written after
        await eventually(lambda: sample(registry, "falco_misp_live_update_latency_seconds_count") == 1)
        assert sample(registry, "falco_misp_live_relevant_messages_total") == 1
        assert sample(registry, "falco_misp_live_syncs_total") == 1
        # The live sync reports like the timer's: its Event is posted and its status written.
        await eventually(lambda: [r for _, r, _ in events(kmock, "falco")].count("RulesApplied") == 2)

        # Irrelevant messages (a type no filter selects, an attribute not flagged for IDS) and garbage: no sync.
        misp.add_event(misp_event(3, [{"type": "md5", "value": "d41d8cd98f00b204e9800998ecf8427e"}]))
        misp.add_event(misp_event(4, [{"type": "ip-dst", "value": "45.9.2.7", "to_ids": False}]))
        publisher.send("misp_json_attribute", attribute_message(misp, "d41d8cd98f00b204e9800998ecf8427e"))
        publisher.send("misp_json_attribute", attribute_message(misp, "45.9.2.7"))
        garbage = [
            b"misp_json_attribute {not json",
            b"misp_json_event []",
            b"misp_json_attribute \xff\xfe\x00",
            b'misp_json_attribute {"Attribute": {"type": 4}}',
            b"misp_json_event",
        ]
        for frame in garbage:
            publisher.send_frame(frame)
        await eventually(
            lambda: sample(registry, "falco_misp_live_messages_total", topic="invalid") == len(garbage), what="garbage"
        )
        assert sample(registry, "falco_misp_live_invalid_messages_total", reason="invalid_json") == 2
        assert sample(registry, "falco_misp_live_invalid_messages_total", reason="not_utf8") == 1
        assert sample(registry, "falco_misp_live_invalid_messages_total", reason="not_an_object") == 1
        assert sample(registry, "falco_misp_live_invalid_messages_total", reason="no_attribute") == 1
        assert sample(registry, "falco_misp_live_messages_total", topic="misp_json_attribute") == 3
        await asyncio.sleep(DEBOUNCE + 1.0)
        assert searches(misp) == 2
        assert sample(registry, "falco_misp_live_relevant_messages_total") == 1
        assert live_condition(kmock)["status"] == "True"  # garbage is ignored, the subscription lives on

        # A burst of 100 relevant messages gives one sync.
        burst = ips(100, second=20)
        misp.add_event(misp_event(5, ip_attrs(burst), published=False))
        for value in burst:
            publisher.send("misp_json_attribute", attribute_message(misp, value))
        await eventually(lambda: searches(misp) == 3, timeout=DEBOUNCE + 8, what="the burst's sync")
        await eventually(lambda: set(burst) <= rule_items(configmaps(kmock, "falco")["misp-falco-intel-0"]))
        await asyncio.sleep(DEBOUNCE * 2)
        assert searches(misp) == 3
        assert sample(registry, "falco_misp_live_relevant_messages_total") == 101
        assert sample(registry, "falco_misp_live_syncs_total") == 2
        assert status_of(kmock, "falco", "intel")["indicators"]["total"] == 104
        # conditions are keyed by type; their order depends on which writer came first
        assert sorted(c["type"] for c in status_of(kmock, "falco", "intel")["conditions"]) == [
            "Degraded", "Delivered", "LiveUpdates", "Ready", "Serving"
        ]  # fmt: skip


async def test_publisher_going_away_and_coming_back(
    kmock: kmock.KubernetesEmulator, misp: MispEmulator, clock: FakeClock, publisher: MispPublisher
) -> None:
    misp.add_event(misp_event(1, ip_attrs(ips(3))))
    await create(kmock, daemonset_body(mounts=("misp-falco-intel",)))
    await create(kmock, secret_body("misp-auth", "falco", misp.api_key))
    registry = CollectorRegistry()

    async with running(kmock, clock, {"live_metrics": LiveMetrics(registry)}):
        await create(kmock, feed_body("intel", "falco", live_spec(misp, publisher)))
        async with publisher.beating():
            await wait_live(kmock, "True")
        # The publisher stops beating, then goes away: LiveUpdates turns False after the heartbeat timeout.
        publisher.stop()
        lost = await wait_live(kmock, "False", timeout=FAST.heartbeat_timeout_seconds + 8)
        assert lost["reason"] == "NoHeartbeat"
        assert "refresh timer still syncs every 1h" in lost["message"]
        assert sample(registry, "falco_misp_live_up") == 0.0
        assert cond(status_of(kmock, "falco", "intel"), "Ready")["status"] == "True"  # the rules stay

        # It comes back on the same port: the subscriber reconnects and hears it again.
        publisher.start()
        async with publisher.beating():
            back = await wait_live(kmock, "True", timeout=10)
            assert back["reason"] == "Receiving"
            # ... and changes trigger syncs again.
            misp.add_event(misp_event(2, ip_attrs(["45.9.1.7"]), published=False))
            publisher.send("misp_json_attribute", attribute_message(misp, "45.9.1.7"))
            await eventually(
                lambda: "45.9.1.7" in rule_items(configmaps(kmock, "falco")["misp-falco-intel-0"]), timeout=DEBOUNCE + 8
            )

            # Live updates removed from the spec: the subscriber leaves and the condition goes away.
            resp = await kmock.patch(
                feed_url("falco", "intel"),
                json={"metadata": {"generation": 2}, "spec": {"source": {"misp": {"zmq": None}}}},
            )
            assert resp.status == 200
            await eventually(lambda: not live_condition(kmock), what="LiveUpdates removed")
            assert "zmq" not in kmock.objects[FEEDS, "falco", "intel"].raw["spec"]["source"]["misp"]
            assert cond(status_of(kmock, "falco", "intel"), "Ready")["status"] == "True"
            await eventually(lambda: sample(registry, "falco_misp_live_up") == 0.0)
