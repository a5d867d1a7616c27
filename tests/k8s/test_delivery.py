"""Delivery confirmed on every Falco pod (issue 13), through the real kopf and kubernetes client against kmock.

Falco pods are kmock objects whose ``status.podIP`` is a loopback address (127.0.0.2, 127.0.0.3...) where a small
aiohttp server answers ``/metrics`` in Falco's Prometheus text format (the line format of reference/FALCO.md):
``falcosecurity_falco_sha256_rules_files_info{file_name=...,sha256=...} 1`` for the files that "Falco" loaded. The
test plays the kubelet and Falco's reload by setting what each server reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import kmock
from aiohttp import web
from kubetest import (
    OPERATOR_TEST,
    FakeClock,
    cond,
    configmaps,
    create,
    daemonset_body,
    events,
    eventually,
    feed_body,
    ip_attrs,
    ips,
    misp_spec,
    request_count,
    running_operator,
    secret_body,
    status_of,
    writes,
)

from emulators.misp import MispEmulator
from falco_misp.delivery.confirm import METRICS_VALUES
from helpers import misp_event

pytestmark = OPERATOR_TEST
PODS = {"falco-a": "127.0.0.2", "falco-b": "127.0.0.3"}
PREFIX = "misp-sec-intel"


class FakeFalco:
    """The metrics endpoint of one Falco pod: which rules files it loaded, with which sha256."""

    def __init__(self) -> None:
        self.files: dict[str, str] = {"falco_rules.yaml": "6f0078862a26528cb50a860f9ebebbfbe3162e5009187089c73cb0cdf9"}
        self.requests = 0

    async def handle(self, _: web.Request) -> web.Response:
        self.requests += 1
        lines = [
            "# HELP falcosecurity_falco_sha256_rules_files_info https://falco.org/docs/metrics/",
            "# TYPE falcosecurity_falco_sha256_rules_files_info gauge",
            *(f'falcosecurity_falco_sha256_rules_files_info{{file_name="{n}",sha256="{h}"}} 1'
              for n, h in sorted(self.files.items())),
        ]  # fmt: skip
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.2", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def falco_pods(port: int) -> AsyncIterator[dict[str, FakeFalco]]:
    """One fake Falco per pod, each on its own loopback address and the same port."""
    fakes = {name: FakeFalco() for name in PODS}
    runners = []
    try:
        for name, ip in PODS.items():
            app = web.Application()
            app.router.add_get("/metrics", fakes[name].handle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, ip, port).start()
            runners.append(runner)
        yield fakes
    finally:
        for runner in runners:
            await runner.cleanup()


def mounting_daemonset(shards: int = 2, mount: bool = True) -> dict[str, Any]:
    """The Falco DaemonSet, mounting ``PREFIX-0..`` as optional projected sources at /etc/falco/rules.d."""
    ds = daemonset_body()
    spec = ds["spec"]["template"]["spec"]
    sources = [{"configMap": {"name": f"{PREFIX}-{i}", "optional": True}} for i in range(shards)]
    spec["volumes"] = [{"name": "misp-rules", "projected": {"sources": sources}}] if mount else []
    spec["containers"][0]["volumeMounts"] = [{"name": "misp-rules", "mountPath": "/etc/falco/rules.d"}] if mount else []
    return ds


def pod_body(name: str, ip: str, ready: bool = True) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": "falco", "app.kubernetes.io/instance": "falco"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "falco", "labels": labels, "resourceVersion": "1"},
        "spec": {"containers": [{"name": "falco", "image": "falcosecurity/falco:0.44.1"}]},
        "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


async def create_pod(kmock: kmock.KubernetesEmulator, body: dict[str, Any]) -> None:
    resp = await kmock.post("/api/v1/namespaces/falco/pods", json=body)
    assert resp.status == 200, await resp.text()


def written(kmock: kmock.KubernetesEmulator) -> dict[str, str]:
    """``file_name -> sha256`` of the rules files in the feed's ConfigMaps: what a reloaded Falco reports."""
    return {
        key: hashlib.sha256(value.encode()).hexdigest()
        for name, cm in configmaps(kmock, "falco").items() if name.startswith(PREFIX)
        for key, value in cm["data"].items()
    }  # fmt: skip


def delivered(kmock: kmock.KubernetesEmulator) -> dict[str, Any]:
    return cond(status_of(kmock, "sec", "intel"), "Delivered")


async def setup(kmock: kmock.KubernetesEmulator, misp: MispEmulator, mount: bool = True) -> None:
    misp.add_event(misp_event(1, ip_attrs(ips(6))))
    await create(kmock, mounting_daemonset(mount=mount))
    await create(kmock, secret_body("misp-auth", "sec", misp.api_key))
    for name, ip in PODS.items():
        await create_pod(kmock, pod_body(name, ip))


async def test_hot_reload_confirmed_on_every_pod_then_a_refused_reload(
    kmock: kmock.KubernetesEmulator, misp: MispEmulator, clock: FakeClock
) -> None:
    await setup(kmock, misp)
    port = free_port()
    async with falco_pods(port) as fakes, running_operator(kmock, clock):
        await create(kmock, feed_body("intel", "sec", misp_spec(misp, falco={"metrics": {"port": port}})))
        await eventually(lambda: delivered(kmock).get("reason") == "Propagating", what="propagating")
        status = status_of(kmock, "sec", "intel")
        assert status["rollout"]["mode"] == "HotReload" and status["delivery"]["pods"] == 2
        assert status["delivery"]["podsCurrent"] == 0

        # The kubelet refreshes the volume and Falco reloads on both nodes: every pod runs the rules.
        for fake in fakes.values():
            fake.files.update(written(kmock))
        await eventually(lambda: delivered(kmock).get("status") == "True", what="delivered")
        status = status_of(kmock, "sec", "intel")
        assert delivered(kmock)["reason"] == "AllPodsCurrent"
        assert status["delivery"] == {**status["delivery"], "pods": 2, "podsCurrent": 2, "stale": []}
        assert ("Normal", "RulesDelivered") in [(t, r) for t, r, _ in events(kmock, "sec")]

        # New data: the ConfigMap changes; node b's Falco refuses the new file and keeps its old rules.
        before = written(kmock)
        misp.add_event(misp_event(2, ip_attrs(ips(3, second=9))))
        clock.advance(hours=2)
        await eventually(lambda: written(kmock) != before, what="new rules written")
        fakes["falco-a"].files.update(written(kmock))
        await eventually(lambda: delivered(kmock).get("reason") == "Propagating", what="new rules propagating")
        clock.advance(minutes=4)  # past falco.deliveryDeadline (3m)
        await eventually(lambda: delivered(kmock).get("reason") == "FalcoKeptOldRules", what="kept old rules")
        assert delivered(kmock)["status"] == "False" and "falco-b" in delivered(kmock)["message"]
        assert status_of(kmock, "sec", "intel")["delivery"]["stale"] == ["falco-b"]

        # It stays so without flapping: one Warning, and no write while the data does not change.
        mark = request_count(kmock)
        clock.advance(hours=2)
        await eventually(lambda: status_of(kmock, "sec", "intel")["lastAttempt"] == _stamp(clock), what="resync")
        await asyncio.sleep(1.0)
        assert writes(kmock, mark) == []
        assert [r for _, r, _ in events(kmock, "sec")].count("FalcoKeptOldRules") == 1

    assert not [w for w in writes(kmock) if "daemonsets" in w]  # HotReload never touches the DaemonSet


def _stamp(clock: FakeClock) -> str:
    return clock().strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_metrics_off_and_shards_not_mounted_are_said(
    kmock: kmock.KubernetesEmulator, misp: MispEmulator, clock: FakeClock
) -> None:
    await setup(kmock, misp, mount=False)
    port = free_port()  # nothing listens there: Falco's metrics are off
    async with running_operator(kmock, clock):
        await create(kmock, feed_body("intel", "sec", misp_spec(misp, falco={"metrics": {"port": port}})))
        await eventually(lambda: delivered(kmock).get("reason") == "MetricsOff", what="metrics off")
        assert delivered(kmock)["status"] == "Unknown"
        assert repr(METRICS_VALUES) in delivered(kmock)["message"]
        degraded = cond(status_of(kmock, "sec", "intel"), "Degraded")
        assert (degraded["status"], degraded["reason"]) == ("True", "ShardsNotMounted")
        assert f"DaemonSet falco/falco: {PREFIX}-0" in degraded["message"]
        assert "--format falco-values" in degraded["message"]
        assert cond(status_of(kmock, "sec", "intel"), "Ready")["status"] == "True"  # the ConfigMaps are written


async def test_restart_rolls_once_per_change(
    kmock: kmock.KubernetesEmulator, misp: MispEmulator, clock: FakeClock
) -> None:
    await setup(kmock, misp)
    async with running_operator(kmock, clock):
        spec = misp_spec(misp, falco={"rollout": "Restart", "minRolloutInterval": "1s"})
        await create(kmock, feed_body("intel", "sec", spec))
        await eventually(lambda: "rulesHash" in status_of(kmock, "sec", "intel"))
        await eventually(lambda: [w for w in writes(kmock) if "daemonsets" in w], what="rolled")
        for rolls, second in ((2, 20), (3, 30)):  # two changes, each rolls exactly once
            misp.add_event(misp_event(second, ip_attrs(ips(2, second=second))))
            clock.advance(hours=2)
            await eventually(lambda n=rolls: len([w for w in writes(kmock) if "daemonsets" in w]) == n, what="rolled")
        clock.advance(hours=2)
        await eventually(lambda: status_of(kmock, "sec", "intel")["lastAttempt"] == _stamp(clock), what="resync")
        await asyncio.sleep(1.0)
    assert [w for w in writes(kmock) if "daemonsets" in w] == ["PATCH daemonsets falco/falco"] * 3
