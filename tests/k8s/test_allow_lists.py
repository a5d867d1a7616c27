"""MispAllowLists in the cluster: a feed naming one syncs with its networks excluded and its exceptions on the rules;
a change to the list re-renders the feed without waiting for the refresh interval (the wall clock never moves); a
missing or invalid list fails the sync with a reason naming it, writes nothing and keeps the last good rules; the
list coming back syncs the feed again. The real kopf and kubernetes client run against kmock, MISP is emulated."""

from __future__ import annotations

from typing import Any

import kmock
import yaml
from kubetest import (
    OPERATOR_TEST,
    FakeClock,
    allow_list_url,
    cond,
    configmaps,
    create,
    create_allow_list,
    daemonset_body,
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
from helpers import misp_event

pytestmark = OPERATOR_TEST

SCANNER = {"name": "scanner", "fields": ["proc.name", "fd.sport"], "comps": ["=", "in"], "values": [["nessusd", [443]]]}
CM = "misp-security-intel-0"


def rules_file(kmock: kmock.KubernetesEmulator) -> list[dict[str, Any]]:
    (content,) = configmaps(kmock, "falco")[CM]["data"].values()
    docs: list[dict[str, Any]] = yaml.safe_load(content)
    return docs


def items(kmock: kmock.KubernetesEmulator) -> list[str]:
    return sorted(str(i) for d in rules_file(kmock) if "list" in d for i in d["items"])


def exception_names(kmock: kmock.KubernetesEmulator) -> set[tuple[str, ...]]:
    return {tuple(e["name"] for e in d.get("exceptions", [])) for d in rules_file(kmock) if "rule" in d}


def degraded(kmock: kmock.KubernetesEmulator, reason: str) -> dict[str, Any] | None:
    status = status_of(kmock, "security", "intel")
    return status if cond(status, "Degraded").get("reason") == reason else None


async def setup(kmock: kmock.KubernetesEmulator, misp: MispEmulator) -> None:
    misp.add_event(misp_event(1, ip_attrs(ips(6))))  # 45.0.1.7 .. 45.0.6.7
    await create(kmock, daemonset_body(mounts=("misp-security-intel",)))
    await create(kmock, secret_body("misp-auth", "security", misp.api_key))


async def test_a_feed_follows_its_allow_list(
    kmock: kmock.KubernetesEmulator, misp: MispEmulator, clock: FakeClock
) -> None:
    await setup(kmock, misp)
    await create_allow_list(kmock, "corp", {"networks": ["45.0.1.0/24"], "exceptions": [SCANNER]})
    spec = misp_spec(misp, exclusions={"allowLists": ["corp"]})
    async with running_operator(kmock, clock):
        await create(kmock, feed_body("intel", "security", spec))
        status = await eventually(lambda: degraded(kmock, "Synced"), what="synced")
        assert cond(status, "Ready")["status"] == "True"
        assert status["indicators"]["total"] == 5
        assert items(kmock) == sorted(ips(6)[1:])  # 45.0.1.7 is inside the list's network
        assert exception_names(kmock) == {("corp:scanner",)}
        first = status["rulesHash"]

        # The list changes: the feed re-renders at its next tick, long before its refresh interval (1h).
        mark = request_count(kmock)
        resp = await kmock.patch(allow_list_url("corp"), json={"spec": {"networks": ["45.0.1.0/24", "45.0.2.0/24"]}})
        assert resp.status == 200, await resp.text()
        status = await eventually(
            lambda: (s := status_of(kmock, "security", "intel")).get("rulesHash") not in (None, first) and s,
            what="re-rendered after the list changed",
        )
        assert status["indicators"]["total"] == 4
        assert items(kmock) == sorted(ips(6)[2:])
        assert exception_names(kmock) == {("corp:scanner",)}  # a merge patch: the exceptions stay
        assert writes(kmock, mark) == [f"PATCH configmaps falco/{CM}"]
        second = status["rulesHash"]

        # The list is deleted: the sync fails naming it, nothing is written, the last good rules stay.
        mark = request_count(kmock)
        resp = await kmock.delete(allow_list_url("corp"))
        assert resp.status == 200, await resp.text()
        status = await eventually(lambda: degraded(kmock, "AllowListNotFound"), what="AllowListNotFound")
        assert "corp" in cond(status, "Degraded")["message"]
        assert cond(status, "Ready")["reason"] == "LastGoodRules"
        assert status["rulesHash"] == second
        assert writes(kmock, mark) == []
        assert items(kmock) == sorted(ips(6)[2:])

        # It comes back: the feed syncs again without being touched.
        await create_allow_list(kmock, "corp", {"networks": ["45.0.3.0/24"]})
        status = await eventually(lambda: degraded(kmock, "Synced"), what="synced again")
        assert items(kmock) == sorted(ip for ip in ips(6) if not ip.startswith("45.0.3."))


async def test_a_missing_or_invalid_list_writes_nothing(
    kmock: kmock.KubernetesEmulator, misp: MispEmulator, clock: FakeClock
) -> None:
    await setup(kmock, misp)
    spec = misp_spec(misp, exclusions={"allowLists": ["corp", "lab"]})
    async with running_operator(kmock, clock):
        await create_allow_list(kmock, "lab", {"networks": ["45.0.6.0/24"]})
        await create(kmock, feed_body("intel", "security", spec))
        status = await eventually(lambda: degraded(kmock, "AllowListNotFound"), what="AllowListNotFound")
        message = cond(status, "Degraded")["message"]
        assert "corp" in message and "lab" not in message.split("MispAllowList(s)")[1].split("in spec")[0]
        assert cond(status, "Ready")["status"] == "False"
        assert CM not in configmaps(kmock, "falco")
        assert not status.get("rulesHash")

        # Created invalid: the sync names the field and the value; still nothing written.
        bad = {"exceptions": [{"name": "x", "fields": ["fd.sport"], "values": [["https"]]}]}
        await create_allow_list(kmock, "corp", bad)
        status = await eventually(lambda: degraded(kmock, "InvalidAllowList"), what="InvalidAllowList")
        assert "mispallowlists/corp.spec.exceptions[0].values[0][0]" in cond(status, "Degraded")["message"]
        assert "'https'" in cond(status, "Degraded")["message"]
        assert CM not in configmaps(kmock, "falco")

        # Fixed: synced with both lists' networks excluded.
        fixed = {"networks": ["45.0.1.0/24"], "exceptions": [SCANNER]}
        resp = await kmock.patch(allow_list_url("corp"), json={"spec": fixed})
        assert resp.status == 200, await resp.text()
        await eventually(lambda: degraded(kmock, "Synced"), what="synced")
        assert items(kmock) == sorted(ips(6)[1:5])
        assert exception_names(kmock) == {("corp:scanner",)}
