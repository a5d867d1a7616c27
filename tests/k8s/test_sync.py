"""The operator end to end: MISP data -> ConfigMaps in Falco's namespace -> one DaemonSet rollout per change.

Each test is one operator run with several steps (an operator shutdown costs seconds). Time-driven steps
(refresh, minRolloutInterval) move a fake wall clock; the kopf timer ticks every 0.25 s of real time.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

import kmock
import kubetest
import pytest
import yaml
from kubetest import (
    DAEMONSETS,
    FEEDS,
    OPERATOR_TEST,
    SECRETS,
    FakeClock,
    cond,
    configmap_body,
    configmaps,
    create,
    daemonset_body,
    events,
    eventually,
    feed_body,
    ip_attrs,
    ips,
    request_count,
    running_operator,
    secret_body,
    status_of,
    writes,
)

from emulators.misp import DEFAULT_API_KEY, Fault, MispEmulator
from falco_misp.delivery.configmaps import LABEL_FEED, LABEL_FEED_NAMESPACE, LABEL_MANAGED_BY
from falco_misp.delivery.rollout import rollout_annotation_key
from helpers import misp_event

pytestmark = OPERATOR_TEST


def misp_spec(misp: MispEmulator, secret: str = "misp-auth", **sections: Any) -> dict[str, Any]:
    """These scenarios test the Restart rollout (one DaemonSet patch per change); HotReload: test_delivery.py."""
    falco = {"rollout": "Restart", **sections.pop("falco", {})}
    return kubetest.misp_spec(misp, secret, falco=falco, **sections)


def rule_items(cm: dict) -> list[str]:
    """Every list item in the rules file a ConfigMap holds."""
    (content,) = cm["data"].values()
    return [i for doc in yaml.safe_load(content) if "list" in doc for i in doc["items"]]


def pod_annotations(kmock: kmock.KubernetesEmulator, name: str = "falco", namespace: str = "falco") -> dict:
    return dict(kmock.objects[DAEMONSETS, namespace, name].raw["spec"]["template"]["metadata"]["annotations"])


async def test_apply_change_resync_and_secret_change(
    kmock: kmock.KubernetesEmulator, misp: MispEmulator, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    misp.add_event(misp_event(1, ip_attrs(ips(5))))
    await create(kmock, daemonset_body(mounts=("misp-security-intel",)))
    await create(kmock, configmap_body("falco-rules", "falco"))  # the chart's own rules: never touched
    await create(kmock, secret_body("misp-auth", "security", misp.api_key))
    key = rollout_annotation_key("security", "intel")

    async with running_operator(kmock, clock):
        # A feed in another namespace than Falco's: ConfigMaps go to Falco's namespace, tracked by labels.
        await create(kmock, feed_body("intel", "security", misp_spec(misp)))
        status = await eventually(
            lambda: (s := status_of(kmock, "security", "intel")) and cond(s, "Ready").get("status") == "True" and s,
            what="Ready",
        )
        assert status["observedGeneration"] == 1
        assert status["indicators"]["total"] == 5
        assert status["indicators"]["byKind"]["outbound_addresses"] == 5
        assert status["configMaps"] == ["misp-security-intel-0"]
        assert status["falcoNamespace"] == "falco"
        assert cond(status, "Degraded")["status"] == "False"
        meta = kmock.objects[FEEDS, "security", "intel"].raw["metadata"]
        assert meta["finalizers"] == ["falco-misp.io/finalizer"]
        assert "falco-misp.io/last-handled-configuration" in meta["annotations"]
        assert all(k.startswith("falco-misp.io/") for k in meta["annotations"])
        cms = configmaps(kmock, "falco")
        assert set(cms) == {"falco-rules", "misp-security-intel-0"}
        assert cms["falco-rules"]["data"] == {"rules.yaml": "# not ours\n"}
        intel = cms["misp-security-intel-0"]
        assert intel["metadata"]["labels"] == {
            LABEL_MANAGED_BY: "falco-misp-operator",
            LABEL_FEED: "intel",
            LABEL_FEED_NAMESPACE: "security",
        }
        assert sorted(rule_items(intel)) == sorted(ips(5))
        assert pod_annotations(kmock)[key] == status["rulesHash"]
        assert pod_annotations(kmock)["checksum/rules"] == "abc"  # the chart's annotation stays
        await eventually(lambda: {"RulesApplied", "RolloutTriggered"} <= {r for _, r, _ in events(kmock, "security")})
        first_hash = status["rulesHash"]

        # MISP data changes: at the next refresh the ConfigMap is updated and Falco rolls exactly once.
        mark = request_count(kmock)
        misp.add_event(misp_event(2, ip_attrs(ips(2, second=9))))
        clock.advance(hours=2)
        status = await eventually(
            lambda: (s := status_of(kmock, "security", "intel"))["rulesHash"] != first_hash and s, what="new hash"
        )
        assert status["indicators"]["total"] == 7
        assert sorted(rule_items(configmaps(kmock, "falco")["misp-security-intel-0"])) == sorted(
            ips(5) + ips(2, second=9)
        )
        assert pod_annotations(kmock)[key] == status["rulesHash"]
        changed = writes(kmock, mark)
        assert changed == ["PATCH configmaps falco/misp-security-intel-0", "PATCH daemonsets falco/falco"]

        # A resync with unchanged data: MISP is asked one small question (its event index: issue 14), nothing is
        # written.
        mark = request_count(kmock)
        asked = len(misp.requests)
        attempt = clock.advance(hours=2)
        await eventually(
            lambda: status_of(kmock, "security", "intel")["lastAttempt"] == attempt.strftime("%Y-%m-%dT%H:%M:%SZ"),
            what="resync",
        )
        data = [r.path for r in misp.requests[asked:] if r.path.startswith(("/attributes/restSearch", "/events/"))]
        assert data == ["/events/index"]
        assert writes(kmock, mark) == []

        # A new key in the Secret triggers a sync (the Secret is read each tick) without waiting for refresh.
        searches = len(misp.restsearch_requests())
        misp.api_key = "rotated-key"
        resp = await kmock.patch(
            "/api/v1/namespaces/security/secrets/misp-auth",
            json={"data": {"authkey": base64.b64encode(b"rotated-key").decode()}},
        )
        assert resp.status == 200
        await eventually(lambda: len(misp.restsearch_requests()) > searches, what="sync after Secret change")
        await eventually(lambda: cond(status_of(kmock, "security", "intel"), "Degraded")["status"] == "False")
        assert writes(kmock, mark) == []

    # The auth key never reaches the logs (even at debug level), the status, Events or any object written.
    for secret in (DEFAULT_API_KEY, "rotated-key"):
        assert secret not in caplog.text
        for request in list(kmock):
            if request.resource is not None and request.resource.plural == "secrets":
                continue
            assert secret not in request.text, (request.method, request.url)
    assert kmock.objects[SECRETS, "security", "misp-auth"]  # still there


async def test_source_failures_keep_the_rules(
    kmock: kmock.KubernetesEmulator, misp: MispEmulator, clock: FakeClock
) -> None:
    misp.add_event(misp_event(1, ip_attrs(ips(20))))
    await create(kmock, daemonset_body(mounts=("misp-falco-intel",)))
    await create(kmock, secret_body("misp-auth", "falco", misp.api_key))

    async with running_operator(kmock, clock):
        await create(kmock, feed_body("intel", "falco", misp_spec(misp)))
        await eventually(lambda: cond(status_of(kmock, "falco", "intel"), "Ready").get("status") == "True")
        applied = configmaps(kmock, "falco")["misp-falco-intel-0"]
        applied_hash = status_of(kmock, "falco", "intel")["rulesHash"]
        mark = request_count(kmock)

        # MISP refuses connections: the rules stay, Degraded says why, Ready keeps the last good rules.
        misp.fault = Fault.refused()
        clock.advance(hours=2)
        status = await eventually(
            lambda: (s := status_of(kmock, "falco", "intel")) and cond(s, "Degraded").get("status") == "True" and s,
            what="Degraded",
        )
        degraded = cond(status, "Degraded")
        assert degraded["reason"] == "SourceFailed"
        assert "ConnectionRefused" in degraded["message"]
        assert cond(status, "Ready")["status"] == "True"
        assert cond(status, "Ready")["reason"] == "LastGoodRules"
        assert status["indicators"]["total"] == 20
        await eventually(lambda: ("Warning", "SourceFailed") in [(t, r) for t, r, _ in events(kmock, "falco")])

        # MISP answers garbage: retried with backoff, still nothing written.
        misp.fault = Fault.invalid_json()
        await eventually(
            lambda: "InvalidJSON" in cond(status_of(kmock, "falco", "intel"), "Degraded")["message"],
            what="InvalidJSON reported",
        )
        misp.fault = Fault.status(500)
        await eventually(
            lambda: "HTTP5" in cond(status_of(kmock, "falco", "intel"), "Degraded")["message"], what="HTTP 500"
        )
        assert configmaps(kmock, "falco")["misp-falco-intel-0"] == applied
        assert writes(kmock, mark) == []

        # MISP is back: the next retry succeeds, Degraded clears, the unchanged rules are not rewritten.
        misp.fault = None
        status = await eventually(
            lambda: (s := status_of(kmock, "falco", "intel")) and cond(s, "Degraded").get("status") == "False" and s,
            what="recovery",
        )
        assert cond(status, "Ready")["reason"] == "RulesApplied"
        assert status["rulesHash"] == applied_hash
        assert writes(kmock, mark) == []

    # An operator restart resumes the feed: one sync, nothing written when nothing changed.
    searches = len(misp.restsearch_requests())
    resumed_at = clock.advance(minutes=1).strftime("%Y-%m-%dT%H:%M:%SZ")
    async with running_operator(kmock, clock):
        await eventually(lambda: status_of(kmock, "falco", "intel")["lastAttempt"] == resumed_at, what="resumed")
        assert len(misp.restsearch_requests()) > searches
        assert cond(status_of(kmock, "falco", "intel"), "Ready")["reason"] == "RulesApplied"
    assert writes(kmock, mark) == []


async def test_drop_held_back_then_prune_then_delete(
    kmock: kmock.KubernetesEmulator, misp: MispEmulator, clock: FakeClock
) -> None:
    misp.add_event(misp_event(1, ip_attrs(ips(2000)), org="Big"))
    misp.add_event(misp_event(2, ip_attrs(ips(3, second=50)), org="Small"))
    await create(kmock, daemonset_body(mounts=("misp-falco-big", "misp-team--b-small")))
    await create(kmock, configmap_body("misp-falco-big-9", "falco"))  # same prefix, not ours: never touched
    await create(kmock, secret_body("misp-auth", "falco", misp.api_key))
    await create(kmock, secret_body("misp-auth", "team-b", misp.api_key))
    big_spec = misp_spec(misp, filters={"orgs": ["Big"]}, falco={"shardBytes": 16384})
    big_key, small_key = rollout_annotation_key("falco", "big"), rollout_annotation_key("team-b", "small")

    async with running_operator(kmock, clock):
        await create(kmock, feed_body("big", "falco", big_spec))
        await create(kmock, feed_body("small", "team-b", misp_spec(misp, filters={"orgs": ["Small"]})))
        # 2000 addresses need several 16 KiB shards (how many depends on the rules' encoding)
        big_shards = await eventually(
            lambda: len(names := status_of(kmock, "falco", "big").get("configMaps") or []) >= 2 and names
        )
        assert big_shards == [f"misp-falco-big-{i}" for i in range(len(big_shards))]
        await eventually(lambda: status_of(kmock, "team-b", "small").get("configMaps") == ["misp-team--b-small-0"])
        before = configmaps(kmock, "falco")
        assert {*big_shards, "misp-falco-big-9", "misp-team--b-small-0"} <= set(before)
        annotations = pod_annotations(kmock)
        assert annotations[big_key] == status_of(kmock, "falco", "big")["rulesHash"]  # one key per feed
        assert annotations[small_key] == status_of(kmock, "team-b", "small")["rulesHash"]

        # MISP suddenly returns 300 of the 2000 (85% fewer, limit 50%): held back, nothing written.
        mark = request_count(kmock)
        misp.add_event(misp_event(1, ip_attrs(ips(300)), org="Big"))  # replaces event 1
        clock.advance(hours=2)
        status = await eventually(
            lambda: (
                (s := status_of(kmock, "falco", "big"))
                and cond(s, "Degraded").get("reason") == "DropLimitExceeded"
                and s
            ),
            what="drop held back",
        )
        assert "300 indicators fetched, 85% fewer than the 2000 applied" in cond(status, "Degraded")["message"]
        assert cond(status, "Ready")["status"] == "True"
        assert status["indicators"]["total"] == 2000
        await eventually(lambda: ("Warning", "DropLimitExceeded") in [(t, r) for t, r, _ in events(kmock, "falco")])
        await eventually(lambda: status_of(kmock, "team-b", "small")["lastAttempt"] == status["lastAttempt"])
        assert writes(kmock, mark) == []
        assert configmaps(kmock, "falco") == before

        # The user accepts the drop by raising the limit (a spec change): the shards shrink to 1, surplus pruned.
        mark = request_count(kmock)
        resp = await kmock.patch(
            "/apis/falco-misp.io/v1alpha1/namespaces/falco/mispfeeds/big",
            json={"metadata": {"generation": 2}, "spec": {"limits": {"maxDropPercent": 100}}},
        )
        assert resp.status == 200
        status = await eventually(
            lambda: (s := status_of(kmock, "falco", "big")) and s.get("appliedGeneration") == 2 and s, what="applied"
        )
        assert status["configMaps"] == ["misp-falco-big-0"]
        assert cond(status, "Degraded")["status"] == "False"
        after = configmaps(kmock, "falco")
        assert set(big_shards[1:]).isdisjoint(after)
        assert sorted(rule_items(after["misp-falco-big-0"])) == sorted(ips(300))
        assert after["misp-falco-big-9"] == before["misp-falco-big-9"]
        assert after["misp-team--b-small-0"] == before["misp-team--b-small-0"]
        assert sorted(writes(kmock, mark)) == [
            *(f"DELETE configmaps falco/{name}" for name in big_shards[1:]),
            "PATCH configmaps falco/misp-falco-big-0",
            "PATCH daemonsets falco/falco",
        ]

        # The feed is deleted: its ConfigMaps and its annotation go, everything else stays.
        resp = await kmock.delete("/apis/falco-misp.io/v1alpha1/namespaces/falco/mispfeeds/big")
        assert resp.status == 200
        await eventually(lambda: kmock.objects[FEEDS, "falco", "big"].deleted, what="finalizer released")
        remaining = configmaps(kmock, "falco")
        assert set(remaining) == {"misp-falco-big-9", "misp-team--b-small-0"}
        assert remaining["misp-team--b-small-0"] == before["misp-team--b-small-0"]
        annotations = pod_annotations(kmock)
        assert big_key not in annotations and small_key in annotations


async def test_invalid_spec_missing_daemonset_rollout_modes(
    kmock: kmock.KubernetesEmulator, misp: MispEmulator, clock: FakeClock
) -> None:
    misp.add_event(misp_event(1, ip_attrs(ips(4)), org="A"))
    misp.add_event(misp_event(2, ip_attrs(ips(4, second=20)), org="B"))
    await create(kmock, daemonset_body(mounts=("misp-feeds-hot", "misp-feeds-slow", "misp-feeds-clash")))
    await create(kmock, secret_body("misp-auth", "feeds", misp.api_key))

    async with running_operator(kmock, clock):
        # An invalid spec: a permanent error naming the field, in status; nothing fetched, nothing written.
        bad = misp_spec(misp, filters={"minThreatLevel": "severe"})
        await create(kmock, feed_body("bad", "feeds", bad))
        # No Falco DaemonSet in that namespace yet: rules written, the missing DaemonSet reported, not fatal.
        await create(
            kmock, feed_body("nods", "feeds", misp_spec(misp, filters={"orgs": ["A"]}, falco={"namespace": "falco-b"}))
        )
        # HotReload never touches the DaemonSet; a short refresh and a long minRolloutInterval defer rollouts.
        hot = misp_spec(misp, filters={"orgs": ["A"]}, falco={"rollout": "HotReload"})
        await create(kmock, feed_body("hot", "feeds", hot))
        slow = misp_spec(misp, filters={"orgs": ["B"]}, falco={"minRolloutInterval": "1h"}, refresh={"interval": "1m"})
        await create(kmock, feed_body("slow", "feeds", slow))
        # A ConfigMap of the same name that this feed does not own is never overwritten.
        await create(kmock, configmap_body("misp-feeds-clash-0", "falco"))
        await create(kmock, feed_body("clash", "feeds", misp_spec(misp)))

        status = await eventually(lambda: (s := status_of(kmock, "feeds", "bad")) and "conditions" in s and s)
        ready = cond(status, "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
        assert ready["message"].startswith("spec.filters.minThreatLevel: expected one of high, medium, low")
        assert cond(status, "Degraded")["reason"] == "InvalidSpec"
        assert "rulesHash" not in status

        status = await eventually(lambda: (s := status_of(kmock, "feeds", "nods")) and "rulesHash" in s and s)
        assert cond(status, "Ready")["status"] == "True"
        degraded = cond(status, "Degraded")
        assert (degraded["status"], degraded["reason"]) == ("True", "DaemonSetNotFound")
        assert "app.kubernetes.io/name=falco" in degraded["message"]
        assert status["rollout"]["pending"] is True
        assert set(configmaps(kmock, "falco-b")) == {"misp-feeds-nods-0"}

        status = await eventually(lambda: (s := status_of(kmock, "feeds", "clash")) and "conditions" in s and s)
        assert cond(status, "Degraded")["reason"] == "ConfigMapConflict"
        assert "falco/misp-feeds-clash-0 exists and is not managed by this feed" in cond(status, "Degraded")["message"]
        assert cond(status, "Ready")["status"] == "False"
        assert configmaps(kmock, "falco")["misp-feeds-clash-0"]["data"] == {"rules.yaml": "# not ours\n"}

        await eventually(lambda: "rulesHash" in status_of(kmock, "feeds", "hot"))
        await eventually(lambda: "rulesHash" in status_of(kmock, "feeds", "slow"))
        assert "misp-feeds-hot-0" in configmaps(kmock, "falco")
        hot = status_of(kmock, "feeds", "hot")
        assert hot["rollout"] == {
            "mode": "HotReload", "pending": False, "daemonSets": ["falco"], "hash": hot["rulesHash"]
        }  # fmt: skip
        slow_key = rollout_annotation_key("feeds", "slow")
        first = status_of(kmock, "feeds", "slow")["rulesHash"]
        assert pod_annotations(kmock)[slow_key] == first
        assert not any(k.endswith("feeds.hot") for k in pod_annotations(kmock))

        # Falco appears in falco-b: the pending rollout happens on a timer tick, Degraded clears.
        await create(kmock, daemonset_body(namespace="falco-b", mounts=("misp-feeds-nods", "misp-feeds-slow")))
        status = await eventually(
            lambda: (s := status_of(kmock, "feeds", "nods")) and not s["rollout"]["pending"] and s, what="rolled"
        )
        assert cond(status, "Degraded")["status"] == "False"
        assert (
            pod_annotations(kmock, namespace="falco-b")[rollout_annotation_key("feeds", "nods")] == status["rulesHash"]
        )

        # New data 2 minutes later: "slow" writes its ConfigMap but defers the rollout (minRolloutInterval 1h).
        misp.add_event(misp_event(3, ip_attrs(ips(2, second=40)), org="B"))
        clock.advance(minutes=2)
        status = await eventually(
            lambda: (s := status_of(kmock, "feeds", "slow")) and s["rulesHash"] != first and s, what="slow applied"
        )
        assert status["rollout"]["pending"] is True
        assert status["rollout"]["notBefore"] == "2026-01-05T13:00:00Z"
        assert pod_annotations(kmock)[slow_key] == first
        # ... and a tick after the interval does it (deferred, not lost).
        clock.advance(hours=1)
        await eventually(lambda: pod_annotations(kmock)[slow_key] == status["rulesHash"], what="deferred rollout")
        await eventually(lambda: not status_of(kmock, "feeds", "slow")["rollout"]["pending"], what="not pending")

        # The feed moves to another Falco: its ConfigMaps and annotation leave the old one.
        resp = await kmock.patch(
            "/apis/falco-misp.io/v1alpha1/namespaces/feeds/mispfeeds/slow",
            json={"metadata": {"generation": 2}, "spec": {"falco": {"namespace": "falco-b"}}},
        )
        assert resp.status == 200
        await eventually(lambda: status_of(kmock, "feeds", "slow").get("falcoNamespace") == "falco-b", what="moved")
        assert "misp-feeds-slow-0" in configmaps(kmock, "falco-b")
        assert "misp-feeds-slow-0" not in configmaps(kmock, "falco")
        assert slow_key not in pod_annotations(kmock)
        assert slow_key in pod_annotations(kmock, namespace="falco-b")

        # Deleting a feed whose Falco namespace and DaemonSet are gone does not hang.
        resp = await kmock.delete("/apis/apps/v1/namespaces/falco-b/daemonsets/falco")
        assert resp.status == 200
        for name in list(configmaps(kmock, "falco-b")):
            await kmock.delete(f"/api/v1/namespaces/falco-b/configmaps/{name}")
        resp = await kmock.delete("/apis/falco-misp.io/v1alpha1/namespaces/feeds/mispfeeds/nods")
        assert resp.status == 200
        await eventually(lambda: kmock.objects[FEEDS, "feeds", "nods"].deleted, what="deleted")
        resp = await kmock.delete("/apis/falco-misp.io/v1alpha1/namespaces/feeds/mispfeeds/bad")
        await eventually(lambda: kmock.objects[FEEDS, "feeds", "bad"].deleted, what="invalid feed deleted")

    # The permanent error is not retried (one Event), the timer leaves the invalid feed alone.
    assert [r for _, r, _ in events(kmock, "feeds")].count("InvalidSpec") == 1
