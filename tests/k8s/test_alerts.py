"""Closing the loop end to end (issue 5): the operator against kmock and the MISP emulator, with its alert endpoint.

A feed with sightings on syncs (its attributes indexed on the way), a Falco alert is POSTed to the running
endpoint, the sighting reaches MISP for the right attribute and a Kubernetes Event is posted on the MispFeed.
Turning reporting off, then deleting the feed, takes it out of alert matching.
"""

from __future__ import annotations

import base64
import logging

import aiohttp
import kmock
import pytest
from kubetest import (
    FEEDS,
    OPERATOR_TEST,
    FakeClock,
    cond,
    create,
    daemonset_body,
    events,
    eventually,
    feed_body,
    feed_url,
    ip_attrs,
    misp_spec,
    running_operator,
    secret_body,
    status_of,
)

from emulators.misp import DEFAULT_API_KEY, MispEmulator
from falco_misp.reporting.intake import AlertIntake, IntakeConfig
from falco_misp.reporting.sightings import Reporter, ReporterConfig
from helpers import misp_event

pytestmark = OPERATOR_TEST
TOKEN = "e2e-token-0123456789abcdef"
RULE = "misp_security_intel_0 outbound connection to a listed address"


def alert(remote: str) -> dict:
    return {
        "hostname": "node-7",
        "priority": "Warning",
        "rule": RULE,
        "source": "syscall",
        "tags": ["misp", "misp_feed:security/intel", "mitre_command_and_control", "network"],
        "time": "2026-01-05T12:00:00.5Z",
        "output": f"Outbound connection to MISP-listed address (feed=security/intel remote={remote}:443)",
        "output_fields": {"fd.sip": remote, "fd.sport": 443, "fd.cip": "10.0.0.5", "proc.exepath": "/usr/bin/curl",
                          "k8s.ns.name": "shop", "k8s.pod.name": "web-1"},
    }  # fmt: skip


async def test_alert_to_sighting_and_kubernetes_event(
    kmock: kmock.KubernetesEmulator, misp: MispEmulator, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    misp.add_event(misp_event(1, ip_attrs(["45.0.0.7", "45.0.0.8"]), info="APT-X infrastructure", tags=("tlp:green",)))
    await create(kmock, daemonset_body(mounts=("misp-security-intel",)))
    await create(kmock, secret_body("misp-auth", "security", misp.api_key))
    reporter = Reporter(ReporterConfig(cluster="e2e"))
    intake = AlertIntake(IntakeConfig(port=0, address="127.0.0.1", token=TOKEN), reporter.receive)
    headers = {"Authorization": f"Bearer {TOKEN}"}

    async with (
        running_operator(kmock, clock, memo={"reporter": reporter, "intake": intake}),
        aiohttp.ClientSession() as http,
    ):
        spec = misp_spec(misp, reporting={"sightings": {"enabled": True}})
        await create(kmock, feed_body("intel", "security", spec))
        await eventually(lambda: cond(status_of(kmock, "security", "intel"), "Ready").get("status") == "True")
        await eventually(lambda: reporter.registry.by_ident.get("misp_security_intel"), what="feed registered")
        (registered,) = reporter.registry.by_ident["misp_security_intel"]
        assert registered.uid == "uid-security-intel" and registered.index.attributes == 2

        endpoint = f"http://127.0.0.1:{intake.port}/alerts"
        async with http.post(endpoint, json=alert("45.0.0.8"), headers=headers) as resp:
            assert resp.status == 202
            assert (await resp.json())["outcomes"] == {"matched": 1}
        await eventually(lambda: misp.sightings, what="sighting in MISP")
        (record,) = misp._sighting_records
        assert (record["attribute_uuid"], record["source"]) == ("00000000-0000-4000-8000-000000001001", "e2e/node-7")
        (notice,) = await eventually(
            lambda: [e for e in events(kmock, "security") if e[1] == "AlertMatched"], what="Kubernetes Event"
        )
        assert notice[0] == "Warning"
        assert 'MISP event 1 "APT-X infrastructure"' in notice[2] and "pod shop/web-1" in notice[2]

        # reporting off: the next sync takes the feed out of alert matching
        resp = await kmock.patch(
            feed_url("security", "intel"), json={"metadata": {"generation": 2}, "spec": {"reporting": None}}
        )
        assert resp.status == 200
        await eventually(lambda: "misp_security_intel" not in reporter.registry.by_ident, what="feed unregistered")
        async with http.post(endpoint, json=alert("45.0.0.7"), headers=headers) as resp:
            assert (await resp.json())["outcomes"] == {"unknown_feed": 1}

        resp = await kmock.delete(feed_url("security", "intel"))
        assert resp.status == 200
        await eventually(lambda: kmock.objects[FEEDS, "security", "intel"].deleted, what="feed deleted")

    assert intake._runner is None  # the cleanup handler stopped the endpoint
    assert len(misp.sightings) == 1
    assert DEFAULT_API_KEY not in caplog.text and TOKEN not in caplog.text


async def test_a_rejected_key_is_said_in_the_feed_status_until_a_sync_brings_a_working_one(
    kmock: kmock.KubernetesEmulator, misp: MispEmulator, clock: FakeClock
) -> None:
    misp.add_event(misp_event(1, ip_attrs(["45.0.0.7"])))
    await create(kmock, daemonset_body(mounts=("misp-security-intel",)))
    await create(kmock, secret_body("misp-auth", "security", misp.api_key))
    reporter = Reporter(ReporterConfig(cluster="e2e"))
    intake = AlertIntake(IntakeConfig(port=0, address="127.0.0.1", token=TOKEN), reporter.receive)
    headers = {"Authorization": f"Bearer {TOKEN}"}

    def reporting() -> dict:
        return cond(status_of(kmock, "security", "intel"), "Reporting")

    async with (
        running_operator(kmock, clock, memo={"reporter": reporter, "intake": intake}),
        aiohttp.ClientSession() as http,
    ):
        await create(kmock, feed_body("intel", "security", misp_spec(misp, reporting={"sightings": {"enabled": True}})))
        await eventually(lambda: reporting().get("reason") == "AlertEndpointOn", what="reporting on")

        misp.api_key = "rotated-in-misp"  # the key in the Secret no longer works
        async with http.post(f"http://127.0.0.1:{intake.port}/alerts", json=alert("45.0.0.7"), headers=headers) as r:
            assert (await r.json())["outcomes"] == {"matched": 1}
        await eventually(lambda: reporting().get("reason") == "KeyRejected", timeout=15, what="key rejected said")
        assert reporting()["status"] == "False" and "rotate" in reporting()["message"]
        assert not misp.sightings

        resp = await kmock.patch(
            "/api/v1/namespaces/security/secrets/misp-auth",
            json={"data": {"authkey": base64.b64encode(b"rotated-in-misp").decode()}},
        )
        assert resp.status == 200
        await eventually(lambda: misp.sightings, timeout=15, what="the queued sighting sent with the new key")
        await eventually(lambda: reporting().get("reason") == "AlertEndpointOn", timeout=15, what="reporting back")
