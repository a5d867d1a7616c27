"""What the status and the metrics say when something goes wrong on the Kubernetes side (issue 10, items 4, 6, 8, 9).

- Ready speaks of the current spec generation; ``Serving`` says whose rules Falco still has.
- A foreign ConfigMap in the way is the user's to resolve: reported once, then the feed waits for that object
  (or the spec) to change instead of retrying and posting an Event every time.
- Metrics count syncs that happened: rollout-only timer steps are neither syncs nor failures; a deleted feed's
  series disappear.
- Reporting switched on while the operator runs without the alert endpoint is said in a condition.
"""

from __future__ import annotations

import asyncio
import re

import kmock
from kubetest import (
    OPERATOR_TEST,
    FakeClock,
    cond,
    configmap_body,
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
from prometheus_client import generate_latest

from emulators.misp import Fault, MispEmulator, Paging
from falco_misp.metrics import Metrics
from helpers import misp_event
from k8s.crdcheck import load_crd, schema_of, validate

pytestmark = OPERATOR_TEST
STATUS_SCHEMA = schema_of(load_crd())["properties"]["status"]


def unpruned(status: dict[str, object]) -> dict[str, object]:
    """The status, checked against the CRD: a real API server silently prunes fields its schema lacks."""
    assert validate(status, STATUS_SCHEMA, ".status") == []
    return status


async def test_ready_describes_the_current_generation(
    kmock: kmock.KubernetesEmulator, misp: MispEmulator, clock: FakeClock
) -> None:
    misp.add_event(misp_event(1, ip_attrs(ips(6))))
    await create(kmock, daemonset_body(mounts=("misp-sec-intel", "misp-sec-clash")))
    await create(kmock, secret_body("misp-auth", "sec", misp.api_key))

    async with running_operator(kmock, clock):
        await create(kmock, feed_body("intel", "sec", misp_spec(misp)))
        status = await eventually(
            lambda: (s := status_of(kmock, "sec", "intel")) and cond(s, "Ready").get("status") == "True" and s
        )
        serving = cond(status, "Serving")
        assert (serving["status"], serving["reason"]) == ("True", "CurrentGeneration")
        applied = configmaps(kmock, "falco")[status["configMaps"][0]]

        # A spec change whose first sync fails: Falco still has generation 1's rules, so Ready is False for
        # generation 2 while Serving says the previous generation's rules are in place.
        misp.fault = Fault.refused()
        resp = await kmock.patch(
            feed_url("sec", "intel"), json={"metadata": {"generation": 2}, "spec": {"limits": {"maxDropPercent": 90}}}
        )
        assert resp.status == 200
        status = await eventually(
            lambda: (s := status_of(kmock, "sec", "intel")) and s.get("observedGeneration") == 2 and s,
            what="generation 2 attempted",
        )
        ready = cond(status, "Ready")
        assert (ready["status"], ready["reason"], ready["observedGeneration"]) == ("False", "SourceFailed", 2)
        assert "generation 2 not applied yet (generation 1's rules still serve)" in ready["message"]
        serving = cond(unpruned(status), "Serving")
        assert (serving["status"], serving["reason"]) == ("True", "PreviousGeneration")
        assert status["appliedGeneration"] == 1
        assert configmaps(kmock, "falco")[status["configMaps"][0]] == applied  # nothing lost

        # MISP is back: the retry applies generation 2.
        misp.fault = None
        status = await eventually(
            lambda: (s := status_of(kmock, "sec", "intel")) and s.get("appliedGeneration") == 2 and s, what="applied"
        )
        assert cond(status, "Ready")["status"] == "True"
        assert cond(status, "Serving")["reason"] == "CurrentGeneration"


async def test_a_conflict_waits_for_the_object_in_the_way(
    kmock: kmock.KubernetesEmulator, misp: MispEmulator, clock: FakeClock
) -> None:
    misp.add_event(misp_event(1, ip_attrs(ips(3))))
    await create(kmock, daemonset_body(mounts=("misp-sec-intel", "misp-sec-clash")))
    await create(kmock, secret_body("misp-auth", "sec", misp.api_key))
    await create(kmock, configmap_body("misp-sec-clash-0", "falco"))  # someone else's, with the name the feed wants

    async with running_operator(kmock, clock):
        await create(kmock, feed_body("clash", "sec", misp_spec(misp)))
        status = await eventually(
            lambda: (s := status_of(kmock, "sec", "clash")) and cond(s, "Degraded").get("reason") == "ConfigMapConflict"
            and s
        )  # fmt: skip
        assert unpruned(status)["conflict"]["configMap"] == "falco/misp-sec-clash-0"
        searches = len(misp.restsearch_requests())

        # Hours of timer ticks (refresh due every hour): no fetch, no write, no second Event while nothing changed.
        for _ in range(3):
            clock.advance(hours=2)
            await asyncio.sleep(1.0)  # four timer ticks of 0.25 s
        assert len(misp.restsearch_requests()) == searches
        assert [r for _, r, _ in events(kmock, "sec")].count("ConfigMapConflict") == 1
        assert configmaps(kmock, "falco")["misp-sec-clash-0"]["data"] == {"rules.yaml": "# not ours\n"}

        # The owner removes the object in the way: the next tick notices and the feed syncs.
        resp = await kmock.delete("/api/v1/namespaces/falco/configmaps/misp-sec-clash-0")
        assert resp.status == 200
        status = await eventually(
            lambda: (s := status_of(kmock, "sec", "clash")) and cond(s, "Ready").get("status") == "True" and s,
            what="synced after the conflict went away",
        )
        assert "conflict" not in status
        assert configmaps(kmock, "falco")["misp-sec-clash-0"]["metadata"]["labels"]["falco-misp.io/feed"] == "clash"


async def test_metrics_count_syncs_not_rollout_ticks_and_forget_deleted_feeds(
    kmock: kmock.KubernetesEmulator, misp: MispEmulator, clock: FakeClock
) -> None:
    misp.add_event(misp_event(1, ip_attrs(ips(4))))
    await create(kmock, secret_body("misp-auth", "sec", misp.api_key))
    metrics = Metrics()

    def text() -> str:
        return generate_latest(metrics.registry).decode()

    async with running_operator(kmock, clock, memo={"metrics": metrics}):
        # No Falco DaemonSet: the rules are written, the rollout stays pending and every tick tries it again.
        await create(kmock, feed_body("intel", "sec", misp_spec(misp, falco={"rollout": "Restart"})))
        await eventually(
            lambda: cond(status_of(kmock, "sec", "intel"), "Degraded").get("reason") == "DaemonSetNotFound"
        )
        await asyncio.sleep(2.5)  # ten ticks of 0.25 s, each a rollout-only step
        out = text()
        assert 'falco_misp_sync_duration_seconds_count{feed="sec/intel"} 1.0' in out
        assert "falco_misp_sync_failures_total{" not in out  # the sync applied rules; the rollout is not a sync
        assert 'falco_misp_indicators{feed="sec/intel",kind="outbound_addresses"} 4.0' in out

        # Falco appears: the pending rollout is counted as a rollout, still one sync.
        await create(kmock, daemonset_body(mounts=("misp-sec-intel",)))
        await eventually(lambda: 'falco_misp_rollouts_total{feed="sec/intel"} 1.0' in text(), what="rollout counted")
        assert 'falco_misp_sync_duration_seconds_count{feed="sec/intel"} 1.0' in text()

        resp = await kmock.delete(feed_url("sec", "intel"))
        assert resp.status == 200
        await eventually(lambda: 'feed="sec/intel"' not in text(), what="series removed")


async def test_reporting_without_the_alert_endpoint_is_said(
    kmock: kmock.KubernetesEmulator, misp: MispEmulator, clock: FakeClock
) -> None:
    misp.add_event(misp_event(1, ip_attrs(ips(2))))
    await create(kmock, daemonset_body(mounts=("misp-sec-intel", "misp-sec-clash")))
    await create(kmock, secret_body("misp-auth", "sec", misp.api_key))

    async with running_operator(kmock, clock):  # no memo["intake"]: started without --alerts-port
        await create(kmock, feed_body("intel", "sec", misp_spec(misp, reporting={"sightings": {"enabled": True}})))
        status = await eventually(lambda: (s := status_of(kmock, "sec", "intel")) and cond(s, "Reporting") and s)
        reporting = cond(unpruned(status), "Reporting")
        assert (reporting["status"], reporting["reason"]) == ("False", "AlertEndpointOff")
        assert "--alerts-port" in reporting["message"]
        assert cond(status, "Ready")["status"] == "True"  # the rules are fine; only reporting is off

        # Reporting turned off in the spec: the condition goes away.
        resp = await kmock.patch(
            feed_url("sec", "intel"), json={"metadata": {"generation": 2}, "spec": {"reporting": None}}
        )
        assert resp.status == 200
        await eventually(
            lambda: (s := status_of(kmock, "sec", "intel")).get("observedGeneration") == 2 and not cond(s, "Reporting"),
            what="condition removed",
        )


async def test_unbounded_answers_fail_the_fetch_and_keep_the_rules(
    kmock: kmock.KubernetesEmulator, misp: MispEmulator, clock: FakeClock
) -> None:
    misp.add_event(misp_event(1, ip_attrs(ips(30))))
    await create(kmock, daemonset_body(mounts=("misp-sec-intel", "misp-sec-clash")))
    await create(kmock, secret_body("misp-auth", "sec", misp.api_key))

    async with running_operator(kmock, clock, tuning={"max_response_bytes": 64 * 1024}):
        spec = misp_spec(misp)
        spec["source"]["misp"]["pageSize"] = 10
        await create(kmock, feed_body("intel", "sec", spec))
        status = await eventually(lambda: (s := status_of(kmock, "sec", "intel")) and "rulesHash" in s and s)
        applied = configmaps(kmock, "falco")[status["configMaps"][0]]

        misp.paging = Paging.IGNORE  # every page holds every match: paged forever before
        # an unchanged MISP is not paged again (issue 14: its event index says nothing changed): change an event
        misp.add_event(misp_event(1, ip_attrs(ips(30))))
        clock.advance(hours=2)
        degraded = await eventually(
            lambda: (c := cond(status_of(kmock, "sec", "intel"), "Degraded")).get("status") == "True" and c
        )
        assert degraded["reason"] == "SourceFailed" and "PagingIgnored" in degraded["message"]

        misp.paging = Paging.HONOUR
        misp.fault = Fault.large_body(256 * 1024)  # four times the operator's --max-response-bytes
        await eventually(
            lambda: "ResponseTooLarge" in cond(status_of(kmock, "sec", "intel"), "Degraded")["message"],
            what="body cap",
        )
        status = status_of(kmock, "sec", "intel")
        assert cond(status, "Ready")["reason"] == "LastGoodRules"
        assert status["indicators"]["total"] == 30
        assert configmaps(kmock, "falco")[status["configMaps"][0]] == applied


async def test_more_indicators_than_fit_keep_the_newest_and_say_how_many_were_left_out(
    kmock: kmock.KubernetesEmulator, misp: MispEmulator, clock: FakeClock
) -> None:
    misp.add_event(misp_event(1, ip_attrs(ips(2000)), publish_timestamp=1_700_000_000))
    misp.add_event(misp_event(2, ip_attrs(ips(500, second=100)), publish_timestamp=1_700_000_100))  # newest
    await create(kmock, daemonset_body(mounts=("misp-sec-intel", "misp-sec-clash")))
    await create(kmock, secret_body("misp-auth", "sec", misp.api_key))

    async with running_operator(kmock, clock):
        spec = misp_spec(misp, falco={"shardBytes": 16384, "maxShards": 1})  # about 1,000 bare IPv4 items fit
        await create(kmock, feed_body("intel", "sec", spec))
        status = await eventually(lambda: (s := status_of(kmock, "sec", "intel")) and "rulesHash" in s and s)
        assert cond(status, "Ready")["status"] == "True"
        assert cond(status, "Degraded")["status"] == "False"  # capping is not a failure
        capped, total = unpruned(status)["capped"], status["indicators"]["total"]
        assert 0 < total < 2500 and total + capped == 2500
        assert "oldest left out: no more fit in falco.maxShards" in cond(status, "Ready")["message"]
        (cm,) = configmaps(kmock, "falco").values()
        (content,) = cm["data"].values()
        assert set(ips(500, second=100)) <= set(re.split(r'[\s",\[\]]+', content))  # the newest event is all in
