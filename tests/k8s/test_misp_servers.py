"""MISP servers as resources, and Secrets paired with the URL they may go to (issue 15), through the real kopf and
kubernetes client against kmock and the real PyMISP against the MISP emulator (which records every request, its
Authorization header included).

- a feed naming a ClusterMispServer from a namespace the server allows syncs with the server's key (a Secret in
  the operator's namespace); from a namespace it does not allow (by name or namespace label selector) it is
  refused with ``ServerNotAllowed`` naming the server and its rule, and MISP sees no request at all;
- an inline key Secret without the ``falco-misp.io/allowed-url`` annotation naming the feed's URL (or naming
  another origin) is never sent: ``SecretNotPaired``, and no request MISP received carries the key;
- a MispServer serves the feeds of its own namespace (a feed elsewhere naming it: ``ServerNotFound``);
- each server's status says whether MISP answers (``Reachable``) and takes the key (``KeyValid``); a server outside
  the operator's egress allow-list is not contacted.
"""

from __future__ import annotations

import copy
from typing import Any

import kmock
import pytest
from kmock._internal import parsing as kmock_parsing
from kubetest import (
    CLUSTER_SERVERS,
    GROUP,
    OPERATOR_TEST,
    SERVERS,
    VERSION,
    FakeClock,
    cond,
    configmaps,
    create,
    daemonset_body,
    eventually,
    feed_body,
    ip_attrs,
    ips,
    misp_spec,
    running_operator,
    secret_body,
    status_of,
)

from emulators.misp import MispEmulator
from falco_misp.delivery.kube import DEFAULT_OPERATOR_NAMESPACE
from falco_misp.feed.policy import Egress, Policy
from falco_misp.feed.servers import ALLOWED_URL_ANNOTATION
from helpers import misp_event

pytestmark = OPERATOR_TEST

OPERATOR_NS = DEFAULT_OPERATOR_NAMESPACE  # the KubeClient's namespace in running_operator


def server_spec(misp: MispEmulator, secret: str = "circl-key", **extra: Any) -> dict[str, Any]:
    return {"url": misp.url, "authKeySecretRef": {"name": secret, "key": "authkey"}, "timeoutSeconds": 2, **extra}


async def create_server(
    kmock: kmock.KubernetesEmulator, kind: str, name: str, spec: dict[str, Any], namespace: str | None = None
) -> None:
    meta: dict[str, Any] = {"name": name, "generation": 1, "resourceVersion": "1", "uid": f"uid-{namespace}-{name}"}
    if namespace is not None:
        meta["namespace"] = namespace
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "metadata": meta, "spec": spec}
    plural = "clustermispservers" if namespace is None else "mispservers"
    where = "" if namespace is None else f"/namespaces/{namespace}"
    resp = await kmock.post(f"/apis/{GROUP}/{VERSION}{where}/{plural}", json=body)
    assert resp.status == 200, await resp.text()


def server_status(kmock: kmock.KubernetesEmulator, name: str, namespace: str | None = None) -> dict[str, Any]:
    resource = CLUSTER_SERVERS if namespace is None else SERVERS
    return copy.deepcopy(kmock.objects[resource, namespace, name].raw.get("status") or {})


def ref(kind: str = "ClusterMispServer", name: str = "circl") -> dict[str, Any]:
    return {"source": {"misp": {"serverRef": {"kind": kind, "name": name}}}, "falco": {"namespace": "falco"}}


def degraded(kmock: kmock.KubernetesEmulator, namespace: str, name: str, reason: str) -> dict[str, Any] | None:
    status = status_of(kmock, namespace, name)
    return status if cond(status, "Degraded").get("reason") == reason else None


def sent_keys(misp: MispEmulator) -> list[str]:
    return [r.headers.get("Authorization", "") for r in misp.requests]


async def setup(kmock: kmock.KubernetesEmulator, misp: MispEmulator, *prefixes: str) -> None:
    misp.add_event(misp_event(1, ip_attrs(ips(4))))
    await create(kmock, daemonset_body(mounts=prefixes))


async def test_a_cluster_server_serves_the_namespaces_it_allows_and_no_other(
    kmock: kmock.KubernetesEmulator, misp: MispEmulator, clock: FakeClock
) -> None:
    await setup(kmock, misp, "misp-security-intel")
    # The administrator's Secret, in the operator's namespace: no pairing needed (feed authors cannot write there).
    await create(kmock, secret_body("circl-key", OPERATOR_NS, misp.api_key, allowed_url=None))
    await create_server(
        kmock, "ClusterMispServer", "circl", server_spec(misp, allowedNamespaces={"names": ["security"]})
    )
    async with running_operator(kmock, clock):
        # The server's own check first: MISP answers and takes the key.
        status = await eventually(
            lambda: (s := server_status(kmock, "circl")) and cond(s, "KeyValid").get("status") == "True" and s,
            what="the server checked",
        )
        assert cond(status, "Reachable")["status"] == "True"
        mark = len(misp.requests)

        # A feed in a namespace the server does not name: refused, MISP sees no request at all.
        await create(kmock, feed_body("intel", "team-b", ref()))
        status = await eventually(lambda: degraded(kmock, "team-b", "intel", "ServerNotAllowed"), what="refused")
        message = cond(status, "Degraded")["message"]
        assert "ClusterMispServer/circl does not allow namespace team-b" in message
        assert "spec.allowedNamespaces: names security" in message
        assert cond(status, "Ready")["status"] == "False"
        assert len(misp.requests) == mark
        assert not [name for name in configmaps(kmock, "falco") if "team" in name]

        # A feed in the allowed namespace: synced with the server's URL and key.
        await create(kmock, feed_body("intel", "security", ref()))
        status = await eventually(lambda: degraded(kmock, "security", "intel", "Synced"), what="synced")
        assert cond(status, "Ready")["status"] == "True"
        assert status["indicators"]["total"] == 4
        assert "misp-security-intel-0" in configmaps(kmock, "falco")
        assert any(r.path.startswith("/attributes/restSearch") for r in misp.requests[mark:])
        # Still nothing for team-b: its retries stay refused before any request.
        assert degraded(kmock, "team-b", "intel", "ServerNotAllowed")
        assert not [name for name in configmaps(kmock, "falco") if "team" in name]


async def test_a_cluster_server_without_allowed_namespaces_serves_none(
    kmock: kmock.KubernetesEmulator, misp: MispEmulator, clock: FakeClock
) -> None:
    await setup(kmock, misp, "misp-security-intel")
    await create(kmock, secret_body("circl-key", OPERATOR_NS, misp.api_key, allowed_url=None))
    await create_server(kmock, "ClusterMispServer", "circl", server_spec(misp))
    async with running_operator(kmock, clock):
        await eventually(lambda: cond(server_status(kmock, "circl"), "KeyValid").get("status") == "True")
        mark = len(misp.requests)
        await create(kmock, feed_body("intel", "security", ref()))
        status = await eventually(lambda: degraded(kmock, "security", "intel", "ServerNotAllowed"), what="refused")
        assert "allows no namespace" in cond(status, "Degraded")["message"]
        assert len(misp.requests) == mark

        # A missing server: ServerNotFound, named.
        await create(kmock, feed_body("other", "security", ref(name="gone")))
        status = await eventually(lambda: degraded(kmock, "security", "other", "ServerNotFound"), what="not found")
        assert "ClusterMispServer gone" in cond(status, "Degraded")["message"]
        assert len(misp.requests) == mark


async def test_an_unpaired_inline_secret_is_never_sent(
    kmock: kmock.KubernetesEmulator, misp: MispEmulator, clock: FakeClock
) -> None:
    await setup(kmock, misp, "misp-security-intel", "misp-security-elsewhere")
    await create(kmock, secret_body("misp-auth", "security", misp.api_key, allowed_url=None))
    await create(kmock, secret_body("paired-away", "security", misp.api_key, allowed_url="https://misp.example.org"))
    async with running_operator(kmock, clock):
        await create(kmock, feed_body("intel", "security", misp_spec(misp)))
        await create(kmock, feed_body("elsewhere", "security", misp_spec(misp, "paired-away")))
        status = await eventually(lambda: degraded(kmock, "security", "intel", "SecretNotPaired"), what="unpaired")
        message = cond(status, "Degraded")["message"]
        assert "Secret security/misp-auth is not paired" in message and ALLOWED_URL_ANNOTATION in message
        status = await eventually(lambda: degraded(kmock, "security", "elsewhere", "SecretNotPaired"), what="other")
        assert "paired with https://misp.example.org" in cond(status, "Degraded")["message"]
        assert misp.api_key not in sent_keys(misp)
        assert misp.requests == []

        # Its owner pairs it: the next retry syncs.
        resp = await kmock.patch(
            "/api/v1/namespaces/security/secrets/misp-auth",
            json={"metadata": {"annotations": {ALLOWED_URL_ANNOTATION: f"{misp.url}/"}}},
        )
        assert resp.status == 200, await resp.text()
        await eventually(lambda: degraded(kmock, "security", "intel", "Synced"), what="synced once paired")
        assert misp.api_key in sent_keys(misp)
        assert degraded(kmock, "security", "elsewhere", "SecretNotPaired")


async def test_a_namespaced_server_serves_its_own_namespace(
    kmock: kmock.KubernetesEmulator, misp: MispEmulator, clock: FakeClock
) -> None:
    await setup(kmock, misp, "misp-security-intel")
    await create(kmock, secret_body("circl-key", "security", misp.api_key))  # paired with the emulator's URL
    await create_server(kmock, "MispServer", "circl", server_spec(misp), namespace="security")
    async with running_operator(kmock, clock):
        await create(kmock, feed_body("intel", "security", ref("MispServer")))
        status = await eventually(lambda: degraded(kmock, "security", "intel", "Synced"), what="synced")
        assert status["indicators"]["total"] == 4
        status = await eventually(
            lambda: (s := server_status(kmock, "circl", "security")) and s.get("mispVersion") and s, what="checked"
        )
        assert cond(status, "KeyValid")["reason"] == "KeyAccepted"

        # The same name from another namespace resolves there, where no such server exists.
        mark = len(misp.requests)
        await create(kmock, feed_body("intel", "team-b", ref("MispServer")))
        status = await eventually(lambda: degraded(kmock, "team-b", "intel", "ServerNotFound"), what="not found")
        assert "MispServer team-b/circl" in cond(status, "Degraded")["message"]
        assert len(misp.requests) == mark


async def test_server_status_says_whether_misp_answers_and_takes_the_key(
    kmock: kmock.KubernetesEmulator, misp: MispEmulator, clock: FakeClock
) -> None:
    await create(kmock, secret_body("right", OPERATOR_NS, misp.api_key, allowed_url=None))
    await create(kmock, secret_body("wrong", OPERATOR_NS, "not-the-key", allowed_url=None))
    down = MispEmulator().start()
    gone = down.url
    down.stop()  # nothing listens there any more: connection refused
    await create_server(kmock, "ClusterMispServer", "good", server_spec(misp, "right"))
    await create_server(kmock, "ClusterMispServer", "rejected", server_spec(misp, "wrong"))
    await create_server(kmock, "ClusterMispServer", "down", {**server_spec(misp, "right"), "url": gone})
    await create_server(kmock, "ClusterMispServer", "keyless", server_spec(misp, "missing"))
    async with running_operator(kmock, clock):
        good = await eventually(lambda: server_status(kmock, "good").get("lastCheck") and server_status(kmock, "good"))
        assert (cond(good, "Reachable")["status"], cond(good, "KeyValid")["status"]) == ("True", "True")
        assert good["mispVersion"] and good["observedGeneration"] == 1

        rejected = await eventually(
            lambda: server_status(kmock, "rejected").get("lastCheck") and server_status(kmock, "rejected")
        )
        assert cond(rejected, "Reachable")["status"] == "True"
        assert (cond(rejected, "KeyValid")["status"], cond(rejected, "KeyValid")["reason"]) == ("False", "KeyRejected")
        assert "not-the-key" not in str(rejected)

        status = await eventually(
            lambda: server_status(kmock, "down").get("lastCheck") and server_status(kmock, "down")
        )
        assert cond(status, "Reachable")["status"] == "False"
        assert cond(status, "Reachable")["reason"] == "ConnectionRefused"
        assert cond(status, "KeyValid")["status"] == "Unknown"

        status = await eventually(
            lambda: server_status(kmock, "keyless").get("lastCheck") and server_status(kmock, "keyless")
        )
        assert (cond(status, "KeyValid")["status"], cond(status, "KeyValid")["reason"]) == ("False", "SecretNotFound")
    assert "not-the-key" in sent_keys(misp)  # the wrong key did reach MISP, which refused it


@pytest.fixture
def namespace_objects(monkeypatch: pytest.MonkeyPatch) -> None:
    """kmock 0.8 parses ``/api/v1/namespaces[/<name>]`` as the start of a namespaced path (see test_rbac.py): parse
    it as the cluster-scoped ``namespaces`` resource, so namespaces with labels can be created and read."""
    original = kmock_parsing.parse_path

    def parse_path(path: str) -> kmock_parsing.ParsedPath:
        parts = path.strip("/").split("/")
        if parts[:3] == ["api", "v1", "namespaces"] and len(parts) <= 4:
            name = parts[3] if len(parts) == 4 else None
            return kmock_parsing.ParsedPath(group="", version="v1", plural="namespaces", name=name)
        return original(path)

    monkeypatch.setattr(kmock_parsing, "parse_path", parse_path)


@pytest.mark.usefixtures("namespace_objects")
async def test_a_namespace_selector_reads_the_feed_namespace_labels(
    kmock: kmock.KubernetesEmulator, misp: MispEmulator, clock: FakeClock
) -> None:
    await setup(kmock, misp)
    for name, labels in (("team-a", {"misp-access": "circl"}), ("team-b", {"misp-access": "none"})):
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}
        resp = await kmock.post("/api/v1/namespaces", json=body)
        assert resp.status == 200, await resp.text()
    await create(kmock, secret_body("circl-key", OPERATOR_NS, misp.api_key, allowed_url=None))
    selector = {"selector": {"matchLabels": {"misp-access": "circl"}}}
    await create_server(kmock, "ClusterMispServer", "circl", server_spec(misp, allowedNamespaces=selector))
    async with running_operator(kmock, clock):
        await eventually(lambda: cond(server_status(kmock, "circl"), "KeyValid").get("status") == "True")
        mark = len(misp.requests)
        await create(kmock, feed_body("intel", "team-b", ref()))
        status = await eventually(lambda: degraded(kmock, "team-b", "intel", "ServerNotAllowed"), what="refused")
        assert "selector misp-access=circl" in cond(status, "Degraded")["message"]
        assert len(misp.requests) == mark
        await create(kmock, feed_body("intel", "team-a", ref()))
        status = await eventually(
            lambda: (
                (s := status_of(kmock, "team-a", "intel")) and cond(s, "Ready").get("reason") == "RulesApplied" and s
            ),
            what="applied",
        )
        assert status["indicators"]["total"] == 4


async def test_a_server_outside_the_egress_allow_list_is_never_contacted(
    kmock: kmock.KubernetesEmulator, misp: MispEmulator, clock: FakeClock
) -> None:
    """A MispServer's URL is its namespace owner's choice: the status check obeys the operator's egress allow-list
    like a feed's fetch (no Secret read, no connection)."""
    await create(kmock, secret_body("circl-key", "security", misp.api_key))
    await create_server(kmock, "MispServer", "circl", server_spec(misp), namespace="security")
    policy = Policy(egress=Egress(allow_loopback=True, allowed_hosts=("misp.example.org",)))
    async with running_operator(kmock, clock, tuning={"policy": policy}):
        status = await eventually(lambda: server_status(kmock, "circl", "security").get("lastCheck") and
                                  server_status(kmock, "circl", "security"), what="checked")  # fmt: skip
        reachable = cond(status, "Reachable")
        assert (reachable["status"], reachable["reason"]) == ("False", "HostNotAllowed")
        assert "'127.0.0.1' is not in the operator's egress allow-list" in reachable["message"]
        assert cond(status, "KeyValid")["status"] == "Unknown"
    assert misp.requests == []
