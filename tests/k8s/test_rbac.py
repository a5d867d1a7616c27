"""The Helm chart's RBAC is exactly what the operator uses: one short scenario per watch mode (two feeds in two
namespaces created, synced, MISP data changed and re-synced with a DaemonSet rollout, one feed deleted) runs the real
operator against kmock, every call it makes is recorded with its verb, resource, namespace and object name, and the
chart rendered with the matching values must allow each call and grant nothing that no call used.

- cluster-wide (the chart's defaults): ``falco-misp run --all-namespaces``;
- namespaced: ``operator.watchNamespaces`` (``falco-misp run -n security -n team-b``) with
  ``rbac.secrets.names`` narrowing Secret reads to the one the feeds reference.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import kmock
import pytest
from kmock._internal import parsing as kmock_parsing
from kubetest import (
    CLUSTER_SERVERS,
    FEEDS,
    OPERATOR_TEST,
    SERVERS,
    TEST_CLIENT,
    FakeClock,
    cond,
    configmaps,
    create,
    create_allow_list,
    daemonset_body,
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
)

from deploy.chartkit import NAMESPACE, RELEASE, Grant, allows, grants, render
from emulators.misp import MispEmulator
from falco_misp.cli import build_parser
from helpers import misp_event

pytestmark = [*OPERATOR_TEST, pytest.mark.usefixtures("cluster_scoped_namespaces")]

FEED_NAMESPACES = ("security", "team-b")
FALCO_NAMESPACE = "falco"
OPERATOR_NAMESPACE = NAMESPACE  # the release namespace, where the KubeClient of running_operator says it runs
SECRET = "misp-auth"
# Granted for kopf's own needs although this scenario may not exercise them: none so far. Add an entry only with the
# reason the operator needs it (for example a call kopf makes only on a CRD change or a namespace creation).
KOPF_ALLOWANCES: dict[tuple[str, str], str] = {}


@pytest.fixture
def cluster_scoped_namespaces(monkeypatch: pytest.MonkeyPatch) -> None:
    """kmock 0.8 cannot parse ``/api/v1/namespaces`` (its path parser takes ``namespaces`` for the start of
    ``namespaces/<ns>/...`` and fails with HTTP 500), so kopf could never list or watch namespaces, which it does
    when it serves a fixed set of them. Parse that one path as the cluster-scoped ``namespaces`` resource."""
    original = kmock_parsing.parse_path

    def parse_path(path: str) -> kmock_parsing.ParsedPath:
        if path.strip("/") == "api/v1/namespaces":
            return kmock_parsing.ParsedPath(group="", version="v1", plural="namespaces")
        parts = path.strip("/").split("/")
        if parts[:3] == ["api", "v1", "namespaces"] and len(parts) == 4:  # one namespace (a server's selector)
            return kmock_parsing.ParsedPath(group="", version="v1", plural="namespaces", name=parts[3])
        return original(path)

    monkeypatch.setattr(kmock_parsing, "parse_path", parse_path)


@dataclass(frozen=True)
class Call:
    """One request the operator made to the API server."""

    verb: str
    """The RBAC verb: get, list, watch, create, patch, update, delete, deletecollection."""
    resource: str
    """``<group>/<plural>[/<subresource>]`` (core group without a prefix)."""
    namespace: str | None
    """None: a cluster-scoped object, or a list/watch across all namespaces."""
    name: str | None
    """The object's name when the URL has one."""


def recorded_calls(emulator: kmock.KubernetesEmulator, since: int = 0) -> set[Call]:
    """The operator's requests to Kubernetes resources (discovery and the test's own requests excluded)."""
    calls: set[Call] = set()
    for request in list(emulator)[since:]:
        if request.resource is None or request.resource.plural is None:
            continue
        if request.headers.get("User-Agent", "").startswith(TEST_CLIENT):
            continue
        method = str(getattr(request.method, "value", request.method)).upper()
        action = str(getattr(request.action, "value", request.action) or "").upper()
        if action == "WATCH":
            verb = "watch"
        elif method == "GET":
            verb = "get" if request.name else "list"
        elif method == "DELETE":
            verb = "delete" if request.name else "deletecollection"
        else:
            verb = {"POST": "create", "PATCH": "patch", "PUT": "update"}[method]
        group = f"{request.resource.group}/" if request.resource.group else ""
        resource = f"{group}{request.resource.plural}"
        if request.subresource:
            resource += f"/{request.subresource}"
        calls.add(Call(verb, resource, request.namespace or None, request.name or None))
    return calls


def ready(emulator: kmock.KubernetesEmulator, namespace: str, name: str) -> dict[str, Any] | None:
    status = status_of(emulator, namespace, name)
    return status if cond(status, "Ready").get("status") == "True" and status.get("rulesHash") else None


def resynced(emulator: kmock.KubernetesEmulator, namespace: str, name: str, before: str) -> bool:
    return status_of(emulator, namespace, name).get("rulesHash") not in (None, before)


async def scenario(
    emulator: kmock.KubernetesEmulator, misp: MispEmulator, clock: FakeClock, namespaces: list[str]
) -> set[Call]:
    """Create two feeds, sync, change the data, re-sync and roll Falco, delete one feed: the calls made."""
    misp.add_event(misp_event(1, ip_attrs(ips(5))))
    for namespace in (*FEED_NAMESPACES, FALCO_NAMESPACE):
        labels = {"misp-access": "circl"} if namespace == "team-b" else {}  # the ClusterMispServer's selector
        resp = await emulator.post("/api/v1/namespaces", json={"metadata": {"name": namespace, "labels": labels}})
        assert resp.status == 200, await resp.text()
    await create(
        emulator, daemonset_body(namespace=FALCO_NAMESPACE, mounts=("misp-security-named", "misp-team--b-selected"))
    )
    for namespace in FEED_NAMESPACES:
        await create(emulator, secret_body(SECRET, namespace, misp.api_key))
    await create_allow_list(emulator, "corp", {"networks": ["45.0.1.0/24"]})  # read (get) and watched (list, watch)
    # Issue 15: "named" reads a MispServer of its namespace, "selected" a ClusterMispServer whose selector matches
    # team-b's labels (get namespaces), its key in the operator's namespace; both servers' status is checked.
    await create(emulator, secret_body(SECRET, OPERATOR_NAMESPACE, misp.api_key, allowed_url=None))
    key = {"url": misp.url, "authKeySecretRef": {"name": SECRET, "key": "authkey"}, "timeoutSeconds": 2}
    selector = {"selector": {"matchLabels": {"misp-access": "circl"}}}
    for kind, namespace, spec in (("ClusterMispServer", None, {**key, "allowedNamespaces": selector}),
                                  ("MispServer", "security", key), ("MispServer", "team-b", key)):  # fmt: skip
        meta = {"name": "circl", "generation": 1, "resourceVersion": "1", "uid": f"uid-{kind}-{namespace}"}
        if namespace is not None:
            meta["namespace"] = namespace
        where, plural = ("", "clustermispservers") if namespace is None else (f"/namespaces/{namespace}", "mispservers")
        body = {"apiVersion": "falco-misp.io/v1alpha1", "kind": kind, "metadata": meta, "spec": spec}
        resp = await emulator.post(f"/apis/falco-misp.io/v1alpha1{where}/{plural}", json=body)
        assert resp.status == 200, await resp.text()
    mark = request_count(emulator)

    async with running_operator(emulator, clock, namespaces=namespaces):
        # One feed rolls the DaemonSet it names (get), the other finds it by label selector (list).
        named = misp_spec(
            misp, SECRET, falco={"namespace": FALCO_NAMESPACE, "daemonSet": "falco", "rollout": "Restart"},
            exclusions={"allowLists": ["corp"]},
        )  # fmt: skip
        selected = misp_spec(
            misp,
            SECRET,
            falco={"namespace": FALCO_NAMESPACE, "rollout": "Restart"},
        )
        named["source"] = {"misp": {"serverRef": {"kind": "MispServer", "name": "circl"}}}
        selected["source"] = {"misp": {"serverRef": {"kind": "ClusterMispServer", "name": "circl"}}}
        await create(emulator, feed_body("named", "security", named))
        await create(emulator, feed_body("selected", "team-b", selected))
        local = misp_spec(misp, SECRET, falco={"namespace": FALCO_NAMESPACE, "daemonSet": "falco"})
        local["source"] = {"misp": {"serverRef": {"kind": "MispServer", "name": "circl"}}}
        await create(emulator, feed_body("local", "team-b", local))  # team-b's own MispServer
        await eventually(lambda: cond(status_of(emulator, "team-b", "local"), "Ready").get("status") == "True")
        for resource, where in ((CLUSTER_SERVERS, None), (SERVERS, "security"), (SERVERS, "team-b")):
            await eventually(
                lambda r=resource, w=where: (emulator.objects[r, w, "circl"].raw.get("status") or {}).get("lastCheck"),
                what="the servers checked",
            )
        feeds = (("security", "named"), ("team-b", "selected"))
        first: dict[str, str] = {}
        for namespace, name in feeds:
            status = await eventually(functools.partial(ready, emulator, namespace, name), what=f"{name} Ready")
            first[name] = status["rulesHash"]
        assert {"misp-security-named-0", "misp-team--b-selected-0"} <= set(configmaps(emulator, FALCO_NAMESPACE))
        for namespace, name in feeds:  # the delivery check lists the Falco pods (a timer step between syncs)
            await eventually(lambda ns=namespace, n=name: status_of(emulator, ns, n).get("delivery"), what="checked")

        # New MISP data: at the next refresh both feeds patch their ConfigMap and roll Falco.
        misp.add_event(misp_event(2, ip_attrs(ips(3, second=9))))
        clock.advance(hours=2)
        for namespace, name in feeds:
            await eventually(
                functools.partial(resynced, emulator, namespace, name, first[name]), what=f"{name} re-synced"
            )

        # One feed deleted: its ConfigMaps are deleted and its annotation removed.
        resp = await emulator.delete(feed_url("security", "named"))
        assert resp.status == 200
        await eventually(lambda: emulator.objects[FEEDS, "security", "named"].deleted, what="finalizer released")
        assert "misp-security-named-0" not in configmaps(emulator, FALCO_NAMESPACE)

    return recorded_calls(emulator, mark)


def unused_grants(granted: Iterable[Grant], calls: set[Call]) -> list[Grant]:
    """Grants no call used (and kopf's explicit allowances aside)."""
    unused: list[Grant] = []
    for grant in granted:
        if (grant.verb, grant.resource) in KOPF_ALLOWANCES:
            continue
        used = any(
            c.verb == grant.verb
            and c.resource == grant.resource
            and (grant.namespace is None or c.namespace == grant.namespace)
            and (grant.names is None or c.name in grant.names)
            for c in calls
        )
        if not used:
            unused.append(grant)
    return unused


def check_rbac(calls: set[Call], values: dict[str, Any]) -> list[Grant]:
    """Assert the chart rendered with ``values`` allows every call and grants nothing unused; the grants."""
    granted = grants(render(values).objects, account=RELEASE, namespace=NAMESPACE)
    denied = sorted((c for c in calls if not allows(granted, c.verb, c.resource, c.namespace, c.name)), key=repr)
    assert denied == [], "calls the chart's RBAC would refuse"
    assert unused_grants(granted, calls) == [], "grants no call used"
    # Falco's namespace only ever sees ConfigMap and DaemonSet calls, and only there are they granted.
    assert {c.resource for c in calls if c.namespace == FALCO_NAMESPACE} == {"configmaps", "apps/daemonsets", "pods"}
    falco_side = ("configmaps", "apps/daemonsets", "pods")
    assert {g.namespace for g in granted if g.resource in falco_side} == {FALCO_NAMESPACE}
    # A cluster-wide grant must be justified by a cluster-wide call or by calls in the feeds' namespaces.
    for grant in (g for g in granted if g.namespace is None):
        assert any(
            c.verb == grant.verb and c.resource == grant.resource and c.namespace != FALCO_NAMESPACE for c in calls
        ), grant
    return granted


async def test_cluster_wide_rbac_matches_the_calls(
    kmock: kmock.KubernetesEmulator, misp: MispEmulator, clock: FakeClock
) -> None:
    calls = await scenario(kmock, misp, clock, namespaces=[])
    used = {(c.verb, c.resource) for c in calls}
    assert {("watch", "falco-misp.io/mispfeeds"), ("get", "secrets"), ("get", "apps/daemonsets")} <= used
    assert {("list", "apps/daemonsets"), ("patch", "apps/daemonsets"), ("delete", "configmaps")} <= used
    assert ("create", "events") in used
    assert Call("list", "falco-misp.io/mispfeeds", None, None) in calls  # one watch over every namespace
    granted = check_rbac(calls, {})
    assert {g.resource for g in granted if g.namespace is None} == {
        "apiextensions.k8s.io/customresourcedefinitions",
        "falco-misp.io/mispfeeds",
        "falco-misp.io/mispfeeds/status",
        "falco-misp.io/mispallowlists",
        "falco-misp.io/clustermispservers",
        "falco-misp.io/clustermispservers/status",
        "falco-misp.io/mispservers",
        "falco-misp.io/mispservers/status",
        "namespaces",
        "events",
        "secrets",
    }


async def test_namespaced_rbac_matches_the_calls(
    kmock: kmock.KubernetesEmulator, misp: MispEmulator, clock: FakeClock
) -> None:
    watched = list(FEED_NAMESPACES)
    calls = await scenario(kmock, misp, clock, namespaces=watched)
    # Watching a fixed set: MispFeeds per namespace; of ours, only the (cluster-scoped) MispAllowLists cluster-wide.
    assert {c.namespace for c in calls if c.resource == "falco-misp.io/mispfeeds" and c.verb == "watch"} == set(watched)
    cluster = {(c.verb, c.resource) for c in calls if c.namespace is None}
    assert cluster <= {
        ("list", "apiextensions.k8s.io/customresourcedefinitions"),
        ("watch", "apiextensions.k8s.io/customresourcedefinitions"),
        ("list", "namespaces"),
        ("watch", "namespaces"),
        ("get", "falco-misp.io/mispallowlists"),
        ("list", "falco-misp.io/mispallowlists"),
        ("watch", "falco-misp.io/mispallowlists"),
        ("get", "falco-misp.io/clustermispservers"),  # issue 15: cluster-scoped, read, watched, status written
        ("list", "falco-misp.io/clustermispservers"),
        ("watch", "falco-misp.io/clustermispservers"),
        ("patch", "falco-misp.io/clustermispservers"),
        ("patch", "falco-misp.io/clustermispservers/status"),
        ("get", "namespaces"),  # the ClusterMispServer's namespace selector
    }
    assert ("get", "falco-misp.io/mispallowlists") in cluster
    values = {"operator": {"watchNamespaces": watched}, "rbac": {"secrets": {"names": [SECRET]}}}
    granted = check_rbac(calls, values)
    secrets = {(g.namespace, g.names) for g in granted if g.resource == "secrets"}
    assert secrets == {(ns, frozenset({SECRET})) for ns in (*watched, OPERATOR_NAMESPACE)}  # a ClusterMispServer's


def test_a_missing_grant_is_caught() -> None:
    """The checks above have teeth: a call outside the chart's RBAC is refused, an unused grant is reported."""
    granted = grants(render({}).objects, account=RELEASE, namespace=NAMESPACE)
    assert not allows(granted, "list", "secrets", "security", None)
    assert not allows(granted, "patch", "apps/daemonsets", FALCO_NAMESPACE, "not-falco")
    assert not allows(granted, "create", "configmaps", "kube-system", "x")
    assert allows(granted, "patch", "apps/daemonsets", FALCO_NAMESPACE, "falco")
    calls = {Call("get", "secrets", "security", SECRET)}
    assert {(g.verb, g.resource) for g in unused_grants(granted, calls)} >= {("list", "configmaps")}


@pytest.mark.parametrize("namespaces", [[], list(FEED_NAMESPACES)], ids=["cluster-wide", "namespaced"])
def test_chart_args_start_the_operator_the_same_way(namespaces: list[str]) -> None:
    """The scenario's kopf scope is the one the chart's arguments give ``falco-misp run``."""
    rendered = render({"operator": {"watchNamespaces": namespaces}})
    (container,) = rendered.one("Deployment")["spec"]["template"]["spec"]["containers"]
    args = build_parser().parse_args(["run", *container["args"]])
    assert args.namespaces == namespaces
    assert args.all_namespaces is (not namespaces)
