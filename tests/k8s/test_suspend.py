"""Preview and control in the cluster (issue 17, item 2): ``status.lastChange`` with a ``RulesChanged`` Event for every
change applied, right after an operator restart too, and ``spec.suspend`` (no fetch, no writes, nothing deleted).

"Nothing happens" is waited for with a witness: a second feed, read from another MISP emulator, whose timer ticks with
the suspended feed's; once the witness has synced after each step of the clock, so has the suspended feed's timer
ticked (and done nothing).
"""

from __future__ import annotations

from typing import Any

import kmock
import kopf
import pytest
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
    feed_url,
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
from falco_misp.conditions import format_time
from falco_misp.controller.feeds import Tuning
from falco_misp.controller.live_sync import _LiveLink
from helpers import misp_event
from k8s.crdcheck import load_crd, pruned_fields, schema_of

pytestmark = OPERATOR_TEST


def changed(kmock: kmock.KubernetesEmulator, namespace: str) -> list[str]:
    """Messages of the RulesChanged Events of a namespace, in order."""
    return [m for t, r, m in events(kmock, namespace) if (t, r) == ("Normal", "RulesChanged")]


def reasons(kmock: kmock.KubernetesEmulator, namespace: str) -> list[str]:
    return [r for _, r, _ in events(kmock, namespace)]


async def patch_spec(kmock: kmock.KubernetesEmulator, namespace: str, name: str, generation: int, **spec: Any) -> None:
    resp = await kmock.patch(feed_url(namespace, name), json={"metadata": {"generation": generation}, "spec": spec})
    assert resp.status == 200


async def test_last_change_counts_each_applied_change_and_survives_a_restart(
    kmock: kmock.KubernetesEmulator, misp: MispEmulator, clock: FakeClock
) -> None:
    misp.add_event(misp_event(1, ip_attrs(ips(5))))
    await create(kmock, daemonset_body(mounts=("misp-sec-intel",)))
    await create(kmock, secret_body("misp-auth", "sec", misp.api_key))

    async with running_operator(kmock, clock):
        await create(kmock, feed_body("intel", "sec", misp_spec(misp)))
        status = await eventually(lambda: (s := status_of(kmock, "sec", "intel")).get("lastChange") and s)
        assert status["lastChange"] == {
            "time": format_time(clock()), "added": {"outbound_addresses": 5}, "removed": {}
        }  # fmt: skip
        await eventually(lambda: changed(kmock, "sec") == ["+5 outbound addresses (5 indicators now)"])

        # One address gone, two inbound ones new: exactly that, by kind.
        misp.add_event(misp_event(1, ip_attrs(ips(4))))
        misp.add_event(misp_event(2, ip_attrs(["46.1.1.1", "46.1.1.2"], "ip-src")))
        first = status["rulesHash"]
        later = clock.advance(hours=2)
        status = await eventually(lambda: (s := status_of(kmock, "sec", "intel"))["rulesHash"] != first and s)
        assert status["lastChange"] == {
            "time": format_time(later), "added": {"inbound_addresses": 2}, "removed": {"outbound_addresses": 1}
        }  # fmt: skip
        await eventually(lambda: len(changed(kmock, "sec")) == 2)
        assert changed(kmock, "sec")[1] == "+2 inbound addresses, -1 outbound addresses (6 indicators now)"

    # A restart with nothing changed: one sync, nothing written, no change claimed.
    mark = request_count(kmock)
    resumed = format_time(clock.advance(minutes=1))
    async with running_operator(kmock, clock):
        await eventually(lambda: status_of(kmock, "sec", "intel")["lastAttempt"] == resumed, what="resumed")
        assert status_of(kmock, "sec", "intel")["lastChange"] == status["lastChange"]
        assert writes(kmock, mark) == []
        assert len(changed(kmock, "sec")) == 2

    # MISP changes while the operator is down: the first sync after the restart counts against the ConfigMaps.
    misp.add_event(misp_event(3, ip_attrs(["47.1.1.1"])))
    resumed_at = clock.advance(minutes=1)
    async with running_operator(kmock, clock):
        status = await eventually(
            lambda: (s := status_of(kmock, "sec", "intel"))["lastChange"]["time"] == format_time(resumed_at) and s,
            what="change after restart",
        )
        assert status["lastChange"]["added"] == {"outbound_addresses": 1}
        assert status["lastChange"]["removed"] == {}
        await eventually(lambda: len(changed(kmock, "sec")) == 3)
        assert changed(kmock, "sec")[2] == "+1 outbound addresses (7 indicators now)"


async def test_suspend_stops_syncs_without_deleting_and_resumes_at_once(
    kmock: kmock.KubernetesEmulator, misp: MispEmulator, clock: FakeClock
) -> None:
    misp.add_event(misp_event(1, ip_attrs(ips(3))))
    await create(kmock, daemonset_body(mounts=("misp-sec-intel", "misp-sec-witness", "misp-sec-born")))
    await create(kmock, secret_body("misp-auth", "sec", misp.api_key))
    with MispEmulator() as other:
        other.add_event(misp_event(1, ip_attrs(ips(2, second=80))))
        await create(kmock, secret_body("other-auth", "sec", other.api_key, allowed_url=other.url))

        async with running_operator(kmock, clock):
            await create(kmock, feed_body("intel", "sec", misp_spec(misp)))
            await create(kmock, feed_body("witness", "sec", misp_spec(other, "other-auth", refresh={"interval": "1m"})))
            status = await eventually(lambda: (s := status_of(kmock, "sec", "intel")).get("rulesHash") and s)
            applied = configmaps(kmock, "falco")["misp-sec-intel-0"]
            await eventually(lambda: status_of(kmock, "sec", "witness").get("rulesHash"))

            # Suspended: the status says so, at once.
            await patch_spec(kmock, "sec", "intel", 2, suspend=True)
            status = await eventually(
                lambda: (s := status_of(kmock, "sec", "intel")) and cond(s, "Suspended").get("status") == "True" and s,
                what="Suspended",
            )
            suspended = cond(status, "Suspended")
            assert suspended["reason"] == "SpecSuspend"
            assert "nothing is fetched, written or rolled out" in suspended["message"]
            assert "the 3 indicators applied at" in suspended["message"]
            assert status["message"] == suspended["message"]
            assert status["observedGeneration"] == 2
            assert "Suspended" in reasons(kmock, "sec")

            # MISP changes, refresh intervals pass: nothing is asked, nothing written, nothing deleted.
            mark, asked = request_count(kmock), len(misp.requests)
            misp.add_event(misp_event(2, ip_attrs(["47.2.2.2"])))
            for _ in range(2):
                witnessed = format_time(clock.advance(hours=2))
                await eventually(lambda w=witnessed: status_of(kmock, "sec", "witness")["lastAttempt"] == w)
            assert len(misp.requests) == asked
            assert [w for w in writes(kmock, mark) if "intel" in w] == []
            assert configmaps(kmock, "falco")["misp-sec-intel-0"] == applied
            assert status_of(kmock, "sec", "intel")["lastAttempt"] == status["lastAttempt"]
            assert reasons(kmock, "sec").count("Suspended") == 1

            # Suspend off: a sync at once (the clock does not move), the change made meanwhile applied.
            await patch_spec(kmock, "sec", "intel", 3, suspend=False)
            status = await eventually(
                lambda: (s := status_of(kmock, "sec", "intel")).get("appliedGeneration") == 3 and s, what="resumed"
            )
            resumed = cond(status, "Suspended")
            assert (resumed["status"], resumed["reason"]) == ("False", "NotSuspended")
            assert status["indicators"]["total"] == 4
            assert status["lastChange"]["added"] == {"outbound_addresses": 1}
            assert "Resumed" in reasons(kmock, "sec")
            assert len(misp.requests) > asked

            # A feed created suspended: no fetch, no ConfigMap; then deleting suspended feeds still cleans up.
            asked = len(misp.requests)
            await create(kmock, feed_body("born", "sec", {**misp_spec(misp), "suspend": True}))
            born = await eventually(
                lambda: (s := status_of(kmock, "sec", "born")) and cond(s, "Suspended").get("status") == "True" and s
            )
            assert "no rules were applied before" in cond(born, "Suspended")["message"]
            assert "rulesHash" not in born
            await patch_spec(kmock, "sec", "intel", 4, suspend=True)
            await eventually(lambda: cond(status_of(kmock, "sec", "intel"), "Suspended").get("status") == "True")
            assert len(misp.requests) == asked
            assert not any(name.startswith("misp-sec-born") for name in configmaps(kmock, "falco"))
            for name in ("intel", "born"):
                resp = await kmock.delete(feed_url("sec", name))
                assert resp.status == 200
                await eventually(lambda n=name: kmock.objects["falco-misp.io/v1alpha1/mispfeeds", "sec", n].deleted)
            assert "misp-sec-intel-0" not in configmaps(kmock, "falco")
            assert "misp-sec-witness-0" in configmaps(kmock, "falco")


@pytest.mark.parametrize(("suspend", "follows"), [(True, False), (False, True)])
def test_a_suspended_feed_does_not_follow_live_updates(suspend: bool, follows: bool) -> None:
    spec: dict[str, Any] = {
        "source": {
            "misp": {
                "url": "https://misp.example.org",
                "authKeySecretRef": {"name": "misp-auth", "key": "authkey"},
                "zmq": {"url": "tcp://misp.example.org:50000"},
            }
        },
        "suspend": suspend,
    }
    body = kopf.Body(feed_body("live", "sec", spec))
    link = _LiveLink(body, kopf.Memo(), Tuning())
    assert (link.target() is not None) is follows


def test_the_crd_shows_suspend_and_admits_last_change() -> None:
    crd = load_crd()
    (version,) = crd["spec"]["versions"]
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert columns["Suspend"]["jsonPath"] == ".spec.suspend" and "priority" not in columns["Suspend"]
    schema = schema_of(crd)
    assert schema["properties"]["spec"]["properties"]["suspend"]["default"] is False
    status = {"lastChange": {"time": "2026-01-05T12:00:00Z", "added": {"outbound_addresses": 3}, "removed": {}}}
    assert pruned_fields(status, schema["properties"]["status"], ".status") == []
