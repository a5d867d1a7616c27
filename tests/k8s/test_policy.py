"""The administrator's policy in the cluster (issue 15): a feed outside it gets ``Ready=False`` with a reason naming
the rule, the MISP emulator sees no request, nothing is written, and the last good rules stay. The real kopf and
kubernetes client run against kmock; the emulator records every request it receives."""

from __future__ import annotations

from typing import Any

import kmock
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
    running_operator,
    secret_body,
    status_of,
    writes,
)

from emulators.misp import MispEmulator
from falco_misp.feed.policy import Ceilings, Egress, Policy, TargetRule
from helpers import misp_event

pytestmark = OPERATOR_TEST

LOOPBACK = Egress(allow_loopback=True)


def refused(kmock: kmock.KubernetesEmulator, namespace: str, name: str, reason: str) -> dict[str, Any] | None:
    status = status_of(kmock, namespace, name)
    ready = cond(status, "Ready")
    return status if ready.get("status") == "False" and ready.get("reason") == reason else None


async def setup(kmock: kmock.KubernetesEmulator, misp: MispEmulator, namespace: str = "team-a") -> None:
    misp.add_event(misp_event(1, ip_attrs(ips(6))))
    await create(kmock, daemonset_body(mounts=(f"misp-{namespace.replace('-', '--')}-intel",)))
    secret = secret_body("misp-auth", namespace, misp.api_key)
    secret["metadata"]["annotations"] = {"falco-misp.io/allowed-url": misp.url}  # paired with the emulator
    await create(kmock, secret)


async def test_a_feed_may_not_write_into_a_falco_namespace_the_policy_does_not_give_it(
    kmock: kmock.KubernetesEmulator, misp: MispEmulator, clock: FakeClock
) -> None:
    await setup(kmock, misp)
    policy = Policy(
        targets=(TargetRule(("security",), ("falco",)), TargetRule(("team-*",), ("falco-teams",))), egress=LOOPBACK
    )
    async with running_operator(kmock, clock, tuning={"policy": policy}):
        await create(kmock, feed_body("intel", "team-a", misp_spec(misp)))  # targets falco
        status = await eventually(lambda: refused(kmock, "team-a", "intel", "FalcoNamespaceNotAllowed"))
        assert "'team-a'" in status["message"] and "falco-teams" in status["message"]
        assert misp.requests == []  # nothing fetched
        assert configmaps(kmock, "falco") == {} and writes(kmock) == []
        assert ("Warning", "FalcoNamespaceNotAllowed") in {(t, r) for t, r, _ in events(kmock, "team-a")}


async def test_a_feed_over_a_ceiling_is_refused_before_any_fetch(
    kmock: kmock.KubernetesEmulator, misp: MispEmulator, clock: FakeClock
) -> None:
    await setup(kmock, misp)
    policy = Policy(ceilings=Ceilings(max_indicators=10_000, min_prefix_v4=20), egress=LOOPBACK)
    async with running_operator(kmock, clock, tuning={"policy": policy}):
        await create(kmock, feed_body("intel", "team-a", misp_spec(misp, limits={"minPrefixV4": 8})))
        status = await eventually(lambda: refused(kmock, "team-a", "intel", "OverCeiling"))
        assert status["message"].startswith("spec.limits.minPrefixV4 is 8")
        assert misp.requests == [] and writes(kmock) == []


async def test_rendered_rules_over_the_network_ceiling_are_not_written_and_the_last_good_stay(
    kmock: kmock.KubernetesEmulator, misp: MispEmulator, clock: FakeClock
) -> None:
    await setup(kmock, misp)
    policy = Policy(ceilings=Ceilings(max_indicators=10_000, max_networks=3), egress=LOOPBACK)
    nets = ["45.1.0.0/24", "45.2.0.0/24", "45.3.0.0/24", "45.4.0.0/24"]
    async with running_operator(kmock, clock, tuning={"policy": policy}):
        await create(kmock, feed_body("intel", "team-a", misp_spec(misp, refresh={"interval": "1h"})))
        await eventually(lambda: cond(status_of(kmock, "team-a", "intel"), "Ready").get("reason") == "RulesApplied")
        before = configmaps(kmock, "falco")
        assert list(before) == ["misp-team--a-intel-0"]
        misp.add_event(misp_event(2, ip_attrs(nets)))  # 4 networks: one more than the ceiling
        mark = len(list(kmock))
        clock.advance(hours=2)
        status = await eventually(lambda: cond(status_of(kmock, "team-a", "intel"), "Degraded").get("reason")
                                  == "OverCeiling" and status_of(kmock, "team-a", "intel"))  # fmt: skip
        assert "4 networks" in status["message"] and "at most 3" in status["message"]
        assert cond(status, "Ready")["status"] == "False"
        assert writes(kmock, mark) == []
        assert configmaps(kmock, "falco")["misp-team--a-intel-0"]["data"] == before["misp-team--a-intel-0"]["data"]


async def test_a_source_host_outside_the_allow_list_is_never_contacted(
    kmock: kmock.KubernetesEmulator, misp: MispEmulator, clock: FakeClock
) -> None:
    await setup(kmock, misp)
    misp.texts["ipsum.txt"] = "45.0.0.1\t5\n"
    policy = Policy(egress=Egress(allowed_hosts=("misp.example.org",), allow_loopback=True))
    text = {"source": {"text": {"url": f"{misp.url}/text/ipsum.txt"}}, "falco": {"namespace": "falco"}}
    async with running_operator(kmock, clock, tuning={"policy": policy}):
        await create(kmock, feed_body("intel", "team-a", text))
        await create(kmock, feed_body("misp", "team-a", misp_spec(misp)))
        for name, field in (("intel", "spec.source.text.url"), ("misp", "spec.source.misp.url")):
            status = await eventually(lambda n=name: refused(kmock, "team-a", n, "HostNotAllowed"))  # type: ignore[misc]
            assert status["message"].startswith(field) and "misp.example.org" in status["message"]
        assert misp.requests == [] and writes(kmock) == []


async def test_loopback_sources_are_refused_by_the_default_policy(
    kmock: kmock.KubernetesEmulator, misp: MispEmulator, clock: FakeClock
) -> None:
    await setup(kmock, misp)
    async with running_operator(kmock, clock, tuning={"policy": Policy()}):  # what `falco-misp run` uses by default
        await create(kmock, feed_body("intel", "team-a", misp_spec(misp)))
        status = await eventually(lambda: refused(kmock, "team-a", "intel", "AddressNotAllowed"))
        assert "loopback" in status["message"]
        assert misp.requests == [] and writes(kmock) == []


async def test_credentials_in_a_source_url_are_refused_and_never_shown(
    kmock: kmock.KubernetesEmulator, misp: MispEmulator, clock: FakeClock
) -> None:
    await setup(kmock, misp)
    host = misp.url.removeprefix("http://")
    text = {"source": {"text": {"url": f"http://reader:s3cr3t-pw@{host}/text/x"}}, "falco": {"namespace": "falco"}}
    async with running_operator(kmock, clock):
        await create(kmock, feed_body("intel", "team-a", text))
        status = await eventually(lambda: refused(kmock, "team-a", "intel", "InvalidSpec"))
        assert status["message"].startswith("spec.source.text.url")
        shown = repr(status) + repr(events(kmock, "team-a"))
        assert "s3cr3t-pw" not in shown and "reader" not in shown and "***@" in shown
        assert misp.requests == []
