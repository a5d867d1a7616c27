"""Delivery through the falco-operator's Rulesfiles (issue 16): the real kopf and kubernetes client against kmock,
with the real Rulesfile resource (its CRD from ../shared/reference/falco-operator/) and the MISP emulator.

The test plays the falco-operator: it puts the in-use finalizer on every ConfigMap a Rulesfile references, sets the
Rulesfiles' ``ResolvedRefs`` and ``Programmed`` conditions, and releases a ConfigMap's finalizer once its Rulesfile
is gone. Every Rulesfile the operator creates is validated against the CRD's openAPIV3Schema (kmock checks none);
the order of the writes is read from kmock's record of requests; no DaemonSet or pod is ever asked.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import jsonschema
import kmock
import pytest
import yaml
from kubetest import (
    FEEDS,
    OPERATOR_TEST,
    TEST_CLIENT,
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
    live,
    misp_spec,
    request_count,
    running_operator,
    secret_body,
    status_of,
)

from deploy.chartkit import NAMESPACE, RELEASE, allows, grants, kube_errors, render
from emulators.misp import MispEmulator
from falco_misp.conditions import format_time
from helpers import misp_event, shared_dir
from k8s.test_rbac import recorded_calls, unused_grants

pytestmark = OPERATOR_TEST
GROUP, VERSION, PLURAL = "artifact.falcosecurity.dev", "v1alpha1", "rulesfiles"
RULESFILES = f"{GROUP}/{VERSION}/{PLURAL}"
CRD = shared_dir() / "reference" / "falco-operator" / "artifact.falcosecurity.dev_rulesfiles.yaml"
PREFIX = "misp-sec-intel"
IN_USE = "artifact.falcosecurity.dev/in-use"  # the falco-operator's finalizer on a referenced ConfigMap


@cache
def rulesfile_schema() -> dict[str, Any]:
    (version,) = yaml.safe_load(CRD.read_text(encoding="utf-8"))["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


@pytest.fixture(autouse=True)
def rulesfile_resource(kmock: kmock.KubernetesEmulator, resources: None) -> None:
    """The Rulesfile resource as the falco-operator's CRD declares it (namespaced, a status subresource)."""
    crd = yaml.safe_load(CRD.read_text(encoding="utf-8"))
    names = crd["spec"]["names"]
    assert (crd["spec"]["group"], names["plural"], crd["spec"]["scope"]) == (GROUP, PLURAL, "Namespaced")
    kmock.resources[RULESFILES] = kmock.ResourceInfo(
        kind=names["kind"],
        singular=names["singular"],
        namespaced=True,
        verbs={"list", "watch", "get", "patch", "create", "delete", "update"},
        subresources=set(crd["spec"]["versions"][0]["subresources"]),
    )


def rulesfiles(emulator: kmock.KubernetesEmulator) -> dict[str, dict[str, Any]]:
    return live(emulator, PLURAL, "falco")


def operator_requests(emulator: kmock.KubernetesEmulator, since: int = 0) -> list[tuple[str, str, str, Any]]:
    """(method, plural, name, body) of the operator's requests after request number ``since``, in order."""
    out = []
    for request in list(emulator)[since:]:
        if request.resource is None or request.resource.plural is None:
            continue
        if request.headers.get("User-Agent", "").startswith(TEST_CLIENT):
            continue
        method = str(getattr(request.method, "value", request.method)).upper()
        data = request.data if isinstance(request.data, dict) else {}
        name = request.name or (data.get("metadata") or {}).get("name") or ""
        out.append((method, request.resource.plural, name, data))
    return out


def writes_of(emulator: kmock.KubernetesEmulator, since: int = 0) -> list[str]:
    return [
        f"{method} {plural} {name}"
        for method, plural, name, _ in operator_requests(emulator, since)
        if method in ("POST", "PATCH", "PUT", "DELETE") and plural in ("configmaps", PLURAL)
    ]


async def set_conditions(emulator: kmock.KubernetesEmulator, name: str, **statuses: tuple[str, str, str]) -> None:
    """What the falco-operator writes: ``type=(status, reason, message)`` on one Rulesfile's status."""
    conditions = [
        {"type": t, "status": s, "reason": r, "message": m, "lastTransitionTime": "2026-01-05T12:00:00Z"}
        for t, (s, r, m) in statuses.items()
    ]
    url = f"/apis/{GROUP}/{VERSION}/namespaces/falco/{PLURAL}/{name}/status"
    resp = await emulator.patch(url, json={"status": {"conditions": conditions}})
    assert resp.status == 200, await resp.text()


async def set_finalizers(emulator: kmock.KubernetesEmulator, name: str, finalizers: list[str]) -> None:
    resp = await emulator.patch(
        f"/api/v1/namespaces/falco/configmaps/{name}", json={"metadata": {"finalizers": finalizers}}
    )
    assert resp.status == 200, await resp.text()


def delivered(emulator: kmock.KubernetesEmulator) -> dict[str, Any]:
    return cond(status_of(emulator, "sec", "intel"), "Delivered")


PROGRAMMED = {
    "ResolvedRefs": ("True", "ReferenceResolved", "Reference resolved successfully"),
    "Programmed": ("True", "Reconciled", "Rulesfile reconciled successfully"),
}


def rulesfiles_spec(misp: MispEmulator) -> dict[str, Any]:
    spec = misp_spec(
        misp,
        falco={
            "namespace": "falco",
            "shardBytes": 16384,
            "delivery": {
                "mode": "Rulesfiles",
                "rulesfile": {"selector": {"matchLabels": {"falco.example.org/enabled": "true"}}},
            },
        },
        limits={"maxDropPercent": 100},
    )
    return spec


async def test_rulesfiles_written_confirmed_pruned_and_removed_in_the_falco_operators_order(
    kmock: kmock.KubernetesEmulator, misp: MispEmulator, clock: FakeClock
) -> None:
    misp.add_event(misp_event(1, ip_attrs(ips(2000))))
    await create(kmock, secret_body("misp-auth", "sec", misp.api_key))
    start = request_count(kmock)

    async with running_operator(kmock, clock):
        await create(kmock, feed_body("intel", "sec", rulesfiles_spec(misp)))
        shards = await eventually(
            lambda: len(names := status_of(kmock, "sec", "intel").get("configMaps") or []) >= 2 and names,
            what="several shards applied",
        )
        assert shards == [f"{PREFIX}-{i}" for i in range(len(shards))]
        status = status_of(kmock, "sec", "intel")
        assert cond(status, "Ready")["status"] == "True" and status["rollout"]["mode"] == "Rulesfiles"

        # One ConfigMap (key rules.yaml) and one Rulesfile naming it per shard, valid against the real CRD.
        cms, rfs = configmaps(kmock, "falco"), rulesfiles(kmock)
        assert set(cms) == set(rfs) == set(shards)
        validator = jsonschema.Draft202012Validator(rulesfile_schema())
        created = [
            body for method, plural, _, body in operator_requests(kmock, start) if (method, plural) == ("POST", PLURAL)
        ]
        assert len(created) == len(shards)
        for body in created:
            assert [e.message for e in validator.iter_errors(body)] == []
        for name in shards:
            assert list(cms[name]["data"]) == ["rules.yaml"]
            assert f"list: {PREFIX.replace('-', '_')}_" in cms[name]["data"]["rules.yaml"]
            assert rfs[name]["spec"] == {
                "configMapRef": {"name": name},
                "priority": 60,
                "selector": {"matchLabels": {"falco.example.org/enabled": "true"}},
            }
            assert rfs[name]["metadata"]["labels"]["falco-misp.io/feed"] == "intel"
        # Each ConfigMap exists before the Rulesfile that references it.
        order = writes_of(kmock, start)
        for name in shards:
            assert order.index(f"POST configmaps {name}") < order.index(f"POST {PLURAL} {name}")

        # The falco-operator has not answered yet: Delivered is Unknown; then it programs every Rulesfile.
        waiting = await eventually(lambda: (c := delivered(kmock)) and c, what="first delivery check")
        assert (waiting["status"], waiting["reason"]) == ("Unknown", "Propagating")
        for name in shards:
            await set_finalizers(kmock, name, [IN_USE])
            await set_conditions(kmock, name, **PROGRAMMED)
        done = await eventually(lambda: (c := delivered(kmock)) and c["status"] == "True" and c, what="delivered")
        assert done["reason"] == "AllProgrammed" and f"{len(shards)}/{len(shards)} Rulesfiles" in done["message"]
        delivery = status_of(kmock, "sec", "intel")["delivery"]
        assert (delivery["rulesfiles"], delivery["rulesfilesProgrammed"], delivery["failing"]) == (
            len(shards),
            len(shards),
            [],
        )
        await eventually(lambda: ("Normal", "RulesDelivered") in [(t, r) for t, r, _ in events(kmock, "sec")])

        # A reference the falco-operator cannot resolve: Delivered False, naming the Rulesfile and its reason.
        await set_conditions(
            kmock, shards[-1],
            ResolvedRefs=("False", "ReferenceResolutionFailed", f'Failed to resolve Reference: "{shards[-1]}"'),
            Programmed=("False", "ReconcileFailed", "not programmed"),
        )  # fmt: skip
        clock.advance(minutes=6)  # a settled answer is rechecked every 5 minutes
        failed = await eventually(lambda: (c := delivered(kmock)) and c["status"] == "False" and c, what="failed")
        assert failed["reason"] == "ReferenceResolutionFailed"
        assert failed["message"].startswith(f"Rulesfile falco/{shards[-1]}: ResolvedRefs is False")
        assert status_of(kmock, "sec", "intel")["delivery"]["failing"] == [shards[-1]]
        await eventually(
            lambda: ("Warning", "ReferenceResolutionFailed") in [(t, r) for t, r, _ in events(kmock, "sec")]
        )

        # MISP shrinks to one shard: the surplus Rulesfiles go first, then their ConfigMaps, which the falco-operator's
        # finalizer holds in Terminating: left to it, never stripped, reported.
        mark = request_count(kmock)
        misp.add_event(misp_event(1, ip_attrs(ips(300))))  # replaces event 1
        clock.advance(hours=2)
        await eventually(lambda: status_of(kmock, "sec", "intel").get("configMaps") == [shards[0]], what="pruned")
        order = writes_of(kmock, mark)
        for name in shards[1:]:
            assert order.index(f"DELETE {PLURAL} {name}") < order.index(f"DELETE configmaps {name}")
        assert order.index(f"PATCH configmaps {shards[0]}") < order.index(f"PATCH {PLURAL} {shards[0]}")
        assert set(rulesfiles(kmock)) == {shards[0]}
        held = configmaps(kmock, "falco")
        for name in shards[1:]:
            assert held[name]["metadata"].get("deletionTimestamp") and held[name]["metadata"]["finalizers"] == [IN_USE]
        assert held[shards[0]]["metadata"]["finalizers"] == [IN_USE]  # our patches never touch finalizers
        await eventually(lambda: ("Normal", "ConfigMapsTerminating") in [(t, r) for t, r, _ in events(kmock, "sec")])
        await set_conditions(kmock, shards[0], **PROGRAMMED)
        clock.advance(minutes=6)
        terminating = await eventually(
            lambda: (d := status_of(kmock, "sec", "intel")["delivery"]).get("terminating") and d["lastCheck"] and d,
            what="terminating reported",
        )
        assert terminating["terminating"] == shards[1:]
        # The next sync leaves the held ConfigMaps alone: no second delete, no patch.
        mark = request_count(kmock)
        clock.advance(hours=2)
        await eventually(lambda: status_of(kmock, "sec", "intel")["lastAttempt"] != status["lastAttempt"] and
                         request_count(kmock) > mark, what="re-synced")  # fmt: skip
        await eventually(lambda: cond(status_of(kmock, "sec", "intel"), "Degraded").get("reason") == "Synced")
        assert [w for w in writes_of(kmock, mark) if any(n in w for n in shards[1:])] == []
        for name in shards[1:]:  # the falco-operator sees the Rulesfile gone and releases its ConfigMap
            await set_finalizers(kmock, name, [])
        assert set(configmaps(kmock, "falco")) == {shards[0]}

        # The feed is deleted: its Rulesfile first, then its ConfigMap (held, left to the falco-operator).
        mark = request_count(kmock)
        resp = await kmock.delete(feed_url("sec", "intel"))
        assert resp.status == 200
        await eventually(lambda: kmock.objects[FEEDS, "sec", "intel"].deleted, what="finalizer released")
        order = writes_of(kmock, mark)
        assert order == [f"DELETE {PLURAL} {shards[0]}", f"DELETE configmaps {shards[0]}"]
        assert rulesfiles(kmock) == {}
        assert configmaps(kmock, "falco")[shards[0]]["metadata"]["finalizers"] == [IN_USE]

    # Never a DaemonSet or a pod: the falco-operator runs Falco.
    asked = {plural for _, plural, _, _ in operator_requests(kmock, start)}
    assert asked.isdisjoint({"daemonsets", "pods"}), asked

    # The chart grants exactly the Rulesfile calls made, with falco.rulesfiles; without it, none.
    calls = recorded_calls(kmock, start)
    used = {c for c in calls if c.resource == f"{GROUP}/{PLURAL}"}
    assert {c.verb for c in used} == {"list", "create", "patch", "delete"}
    rendered = render({"falco": {"rulesfiles": True}})
    assert [e for role in rendered.of_kind("Role") for e in kube_errors(role)] == []
    granted = grants(rendered.objects, account=RELEASE, namespace=NAMESPACE)
    assert [c for c in used if not allows(granted, c.verb, c.resource, c.namespace, c.name)] == []
    assert [g for g in unused_grants(granted, used) if g.resource == f"{GROUP}/{PLURAL}"] == []
    default = grants(render({}).objects, account=RELEASE, namespace=NAMESPACE)
    assert not any(allows(default, c.verb, c.resource, c.namespace, c.name) for c in used)


async def test_a_foreign_rulesfile_with_our_name_is_never_overwritten(
    kmock: kmock.KubernetesEmulator, misp: MispEmulator, clock: FakeClock
) -> None:
    """Someone else's Rulesfile holds the name of shard 0: the feed is Degraded (RulesfileConflict) and retries."""
    misp.add_event(misp_event(1, ip_attrs(ips(5))))
    await create(kmock, secret_body("misp-auth", "sec", misp.api_key))
    foreign = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Rulesfile",
        "metadata": {"name": f"{PREFIX}-0", "namespace": "falco", "resourceVersion": "1"},
        "spec": {"configMapRef": {"name": "someone-elses"}, "priority": 50},
    }
    resp = await kmock.post(f"/apis/{GROUP}/{VERSION}/namespaces/falco/{PLURAL}", json=foreign)
    assert resp.status == 200, await resp.text()

    async with running_operator(kmock, clock):
        spec = rulesfiles_spec(misp)
        await create(kmock, feed_body("intel", "sec", spec))
        status = await eventually(
            lambda: (
                (s := status_of(kmock, "sec", "intel"))
                and cond(s, "Degraded").get("reason") == "RulesfileConflict"
                and s
            ),
            what="conflict reported",
        )
        assert (
            f"Rulesfile falco/{PREFIX}-0 exists and is not managed by this feed" in cond(status, "Degraded")["message"]
        )
        assert cond(status, "Ready")["status"] == "False"
        assert rulesfiles(kmock)[f"{PREFIX}-0"]["spec"] == foreign["spec"]  # never overwritten

    assert set(rulesfiles(kmock)) == {f"{PREFIX}-0"}


async def test_switching_back_to_configmaps_deletes_the_rulesfiles_and_keeps_the_rules(
    kmock: kmock.KubernetesEmulator, misp: MispEmulator, clock: FakeClock
) -> None:
    """Rulesfiles -> ConfigMaps (a Falco moved to the falcosecurity chart): the Rulesfiles go before the ConfigMaps
    change key, the ConfigMaps stay for the DaemonSet to mount, which is then rolled as usual."""
    misp.add_event(misp_event(1, ip_attrs(ips(5))))
    await create(kmock, secret_body("misp-auth", "sec", misp.api_key))
    await create(kmock, daemonset_body(mounts=(PREFIX,)))

    async with running_operator(kmock, clock):
        await create(kmock, feed_body("intel", "sec", rulesfiles_spec(misp)))
        await eventually(lambda: set(rulesfiles(kmock)) == {f"{PREFIX}-0"}, what="Rulesfile written")
        assert list(configmaps(kmock, "falco")[f"{PREFIX}-0"]["data"]) == ["rules.yaml"]
        await set_conditions(kmock, f"{PREFIX}-0", **PROGRAMMED)
        await eventually(lambda: delivered(kmock).get("reason") == "AllProgrammed", what="delivered")
        mark = request_count(kmock)
        spec = misp_spec(misp, falco={"rollout": "Restart", "delivery": {"mode": "ConfigMaps", "rulesfile": None}})
        resp = await kmock.patch(feed_url("sec", "intel"), json={"metadata": {"generation": 2}, "spec": spec})
        assert resp.status == 200
        status = await eventually(
            lambda: (s := status_of(kmock, "sec", "intel")) and s.get("appliedGeneration") == 2 and s, what="switched"
        )
        assert status["rollout"]["mode"] == "Restart" and status["rollout"]["daemonSets"] == ["falco"]
        # The falco-operator's answer says nothing of the DaemonSet's pods: gone with the switch, never left over.
        assert cond(status, "Delivered").get("reason") != "AllProgrammed"
        assert "rulesfiles" not in (status.get("delivery") or {})
        assert rulesfiles(kmock) == {}
        assert list(configmaps(kmock, "falco")[f"{PREFIX}-0"]["data"]) == [f"{PREFIX}-0.yaml"]
        order = writes_of(kmock, mark)
        assert order.index(f"DELETE {PLURAL} {PREFIX}-0") < order.index(f"PATCH configmaps {PREFIX}-0")
        assert f"DELETE configmaps {PREFIX}-0" not in order


async def test_without_the_falco_operators_crd_the_feed_says_so_and_writes_nothing(
    kmock: kmock.KubernetesEmulator, misp: MispEmulator, clock: FakeClock
) -> None:
    del kmock.resources[RULESFILES]  # a cluster without the falco-operator: the API server has no Rulesfile resource
    misp.add_event(misp_event(1, ip_attrs(ips(5))))
    await create(kmock, secret_body("misp-auth", "sec", misp.api_key))
    start = request_count(kmock)

    async with running_operator(kmock, clock):
        await create(kmock, feed_body("intel", "sec", rulesfiles_spec(misp)))
        status = await eventually(
            lambda: (s := status_of(kmock, "sec", "intel")) and cond(s, "Degraded").get("status") == "True" and s,
            what="degraded",
        )
    degraded = cond(status, "Degraded")
    assert degraded["reason"] == "RulesfileCRDNotFound"
    assert "install the falco-operator" in degraded["message"] and "delivery.mode" in degraded["message"]
    assert cond(status, "Ready")["status"] == "False"
    assert writes_of(kmock, start) == []  # not even the ConfigMaps: both kinds are listed before any write


async def test_last_change_counts_against_the_configmaps_rules_after_a_restart_too(
    kmock: kmock.KubernetesEmulator, misp: MispEmulator, clock: FakeClock
) -> None:
    """``status.lastChange`` and the RulesChanged Event in Rulesfiles mode: against what the ConfigMaps' rules.yaml
    held, as listed from the cluster (so the first sync after an operator restart counts only the real change)."""
    misp.add_event(misp_event(1, ip_attrs(ips(5))))
    await create(kmock, secret_body("misp-auth", "sec", misp.api_key))

    async with running_operator(kmock, clock):
        await create(kmock, feed_body("intel", "sec", rulesfiles_spec(misp)))
        status = await eventually(lambda: (s := status_of(kmock, "sec", "intel")).get("lastChange") and s)
        assert status["lastChange"] == {"time": format_time(clock()), "added": {"outbound_addresses": 5}, "removed": {}}

        misp.add_event(misp_event(1, ip_attrs(ips(4))))  # one address gone
        misp.add_event(misp_event(2, ip_attrs(["46.1.1.1", "46.1.1.2"])))  # two new
        later = format_time(clock.advance(hours=2))
        status = await eventually(lambda: (s := status_of(kmock, "sec", "intel"))["lastChange"]["time"] == later and s)
        assert status["lastChange"]["added"] == {"outbound_addresses": 2}
        assert status["lastChange"]["removed"] == {"outbound_addresses": 1}

    misp.add_event(misp_event(3, ip_attrs(["47.1.1.1"])))  # while the operator is down
    resumed = format_time(clock.advance(minutes=1))
    async with running_operator(kmock, clock):
        status = await eventually(
            lambda: (s := status_of(kmock, "sec", "intel"))["lastChange"]["time"] == resumed and s, what="resynced"
        )
        assert status["lastChange"]["added"] == {"outbound_addresses": 1} and status["lastChange"]["removed"] == {}
        await eventually(lambda: len(changed(kmock)) == 3, what="three RulesChanged Events")
    assert changed(kmock) == [
        "+5 outbound addresses (5 indicators now)",
        "+2 outbound addresses, -1 outbound addresses (6 indicators now)",
        "+1 outbound addresses (7 indicators now)",
    ]


def changed(emulator: kmock.KubernetesEmulator) -> list[str]:
    return [m for t, r, m in events(emulator, "sec") if (t, r) == ("Normal", "RulesChanged")]
