"""Helpers for the operator tests against kmock: running the operator, waiting, building objects.

The operator runs inside the test body (not a fixture: kopf cancels every task created after its start on exit,
including pytest-asyncio's fixture teardown). kmock never bumps resourceVersion, so assertions wait for outcomes
rather than counting handler calls.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import threading
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import kmock
import kopf
import pytest
from kubernetes import client

from emulators.misp import MispEmulator
from falco_misp.controller.feeds import Tuning
from falco_misp.controller.handlers import register, register_alerts
from falco_misp.delivery.kube import KubeClient
from falco_misp.feed.policy import Egress, Policy
from falco_misp.feed.servers import ALLOWED_URL_ANNOTATION

GROUP, VERSION, PLURAL = "falco-misp.io", "v1alpha1", "mispfeeds"
FEEDS = f"{GROUP}/{VERSION}/{PLURAL}"
ALLOW_LISTS = f"{GROUP}/{VERSION}/mispallowlists"
CLUSTER_SERVERS, SERVERS = f"{GROUP}/{VERSION}/clustermispservers", f"{GROUP}/{VERSION}/mispservers"  # issue 15
CONFIGMAPS, DAEMONSETS, SECRETS, EVENTS = "v1/configmaps", "apps/v1/daemonsets", "v1/secrets", "v1/events"
START = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
LOOPBACK_POLICY = Policy(egress=Egress(allow_loopback=True))
"""The operator's default policy but for loopback, where the test emulators listen (``--egress-allow-loopback``)."""

# What the operator may call: (verb, resource). The Helm chart's RBAC grants exactly this (namespaces: the
# MispFeeds' for mispfeeds, Secrets and Events; Falco's for ConfigMaps and DaemonSets).
EXPECTED_CALLS = frozenset({
    ("list", "falco-misp.io/mispfeeds"),
    ("watch", "falco-misp.io/mispfeeds"),
    ("patch", "falco-misp.io/mispfeeds"),  # kopf's finalizer and progress annotations
    ("patch", "falco-misp.io/mispfeeds/status"),
    ("list", "apiextensions.k8s.io/customresourcedefinitions"),  # kopf's resource scanning
    ("watch", "apiextensions.k8s.io/customresourcedefinitions"),
    ("list", "namespaces"),  # kopf, when watching namespaces by pattern
    ("watch", "namespaces"),
    ("get", "secrets"),
    ("get", "falco-misp.io/mispallowlists"),  # the allow-lists a feed names, read before each sync
    ("list", "falco-misp.io/mispallowlists"),  # watched: a change syncs the feeds naming the list
    ("watch", "falco-misp.io/mispallowlists"),
    # ClusterMispServers and MispServers (issue 15): read by each sync that names one, watched for their status
    # checks, whose results are patched into their status; namespaces read for a server's namespace selector.
    ("get", "falco-misp.io/clustermispservers"),
    ("patch", "falco-misp.io/clustermispservers"),  # kopf's finalizer: a timer stops before the object goes
    ("list", "falco-misp.io/clustermispservers"),
    ("watch", "falco-misp.io/clustermispservers"),
    ("patch", "falco-misp.io/clustermispservers/status"),
    ("get", "falco-misp.io/mispservers"),
    ("patch", "falco-misp.io/mispservers"),
    ("list", "falco-misp.io/mispservers"),
    ("watch", "falco-misp.io/mispservers"),
    ("patch", "falco-misp.io/mispservers/status"),
    ("get", "namespaces"),
    ("create", "events"),
    ("list", "configmaps"),
    ("create", "configmaps"),
    ("patch", "configmaps"),
    ("list", "pods"),  # the Falco pods of the target DaemonSet: which rules each loaded (Delivered)
    ("delete", "configmaps"),
    ("get", "apps/daemonsets"),
    ("list", "apps/daemonsets"),
    ("patch", "apps/daemonsets"),
    # delivery.mode Rulesfiles (issue 16; chart value falco.rulesfiles): the falco-operator's Rulesfiles
    ("list", "artifact.falcosecurity.dev/rulesfiles"),
    ("create", "artifact.falcosecurity.dev/rulesfiles"),
    ("patch", "artifact.falcosecurity.dev/rulesfiles"),
    ("delete", "artifact.falcosecurity.dev/rulesfiles"),
})  # fmt: skip
# Marks for a module of operator tests: kmock with our resource, the record of the operator's calls.
OPERATOR_TEST = [
    pytest.mark.usefixtures("resources", "api_calls"),
    pytest.mark.filterwarnings("ignore:read_binary is deprecated:DeprecationWarning"),  # inside kmock 0.8
]
TEST_CLIENT = "kmock/"  # User-Agent prefix of the test's own requests (kmock's aiohttp client)


class FakeClock:
    """A wall clock the test moves forward (refresh and rollout intervals are minutes and hours)."""

    def __init__(self, start: datetime = START) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, **delta: float) -> datetime:
        with self._lock:
            self._now += timedelta(**delta)
            return self._now


@contextlib.asynccontextmanager
async def running_operator(
    kmock: kmock.KubernetesEmulator,
    clock: FakeClock,
    *,
    tick: float = 0.25,
    namespaces: list[str] | None = None,
    tuning: dict[str, Any] | None = None,
    memo: dict[str, Any] | None = None,
) -> AsyncIterator[None]:
    """The operator with a fresh registry, fast ticks and retries, talking to kmock (not a fixture: see README).

    ``namespaces``: watch only these, as ``falco-misp run -n`` does (default: all namespaces). ``tuning``: more
    :class:`Tuning` fields; ``memo``: more operator memo entries (``live_metrics``...).
    """
    registry = kopf.OperatorRegistry()
    fields: dict[str, Any] = {"policy": LOOPBACK_POLICY, **(tuning or {})}  # the emulators listen on 127.0.0.1
    tune = Tuning(tick_seconds=tick, retry_base_seconds=0.2, retry_max_seconds=1.0, clock=clock, **fields)
    register(registry, tune)
    if memo and "intake" in memo:  # the alert endpoint (issue 5): the memo brings the reporter and the intake
        register_alerts(registry)

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=str(kmock.url))

    kube = KubeClient(client.ApiClient(client.Configuration(host=str(kmock.url))))
    settings = kopf.OperatorSettings()
    settings.persistence.consistency_timeout = 0.5  # kmock never bumps resourceVersion
    stop = asyncio.Event()
    task = asyncio.create_task(
        kopf.operator(
            registry=registry,
            settings=settings,
            clusterwide=not namespaces,
            namespaces=namespaces or [],
            standalone=True,
            stop_flag=stop,
            memo=kopf.Memo(kube=kube, **(memo or {})),
        )
    )
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=20)


async def eventually(check: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Wait until ``check()`` returns something truthy (and return it); fail after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            result = check()
        except (KeyError, TypeError, IndexError):
            result = None
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        await asyncio.sleep(0.05)


# ------------------------------------------------------------------------------------------------ builders
def ips(count: int, second: int = 0, last: int = 7) -> list[str]:
    """Globally routable IPv4 addresses (45.0.0.0/8 is ordinary unicast space)."""
    return [f"45.{second + i // 250}.{i % 250 + 1}.{last}" for i in range(count)]


def ip_attrs(values: list[str], type_: str = "ip-dst") -> list[dict[str, Any]]:
    return [{"type": type_, "value": v} for v in values]


def feed_body(name: str, namespace: str, spec: dict[str, Any], generation: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MispFeed",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{namespace}-{name}",
            "resourceVersion": "1",
            "generation": generation,
        },
        "spec": spec,
    }


def misp_spec(misp: MispEmulator, secret: str = "misp-auth", **sections: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "source": {
            "misp": {"url": misp.url, "authKeySecretRef": {"name": secret, "key": "authkey"}, "timeoutSeconds": 2}
        },
        "falco": {"namespace": "falco"},
    }
    for key, value in sections.items():
        spec[key] = {**spec.get(key, {}), **value}
    return spec


PAIRED_URLS: list[str] = []
"""The URLs of the MISP emulators the ``misp`` fixture runs: what :func:`secret_body` pairs a Secret with by default."""


def secret_body(
    name: str, namespace: str, value: str, *, allowed_url: str | None = "", data: dict[str, str] | None = None
) -> dict[str, Any]:
    """A Secret (key ``authkey``, or ``data``) paired with the ``misp`` fixture's emulator (issue 15: the annotation
    ``falco-misp.io/allowed-url``); ``allowed_url``: another value, None: not paired."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "resourceVersion": "1"}
    paired = " ".join(PAIRED_URLS) if allowed_url == "" else allowed_url
    if paired is not None:
        meta["annotations"] = {ALLOWED_URL_ANNOTATION: paired}
    values = data if data is not None else {"authkey": value}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta,
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
    }


def daemonset_body(
    name: str = "falco", namespace: str = "falco", labels: dict[str, str] | None = None, mounts: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A Falco DaemonSet; ``mounts``: ConfigMap prefixes whose shards 0..15 it mounts (one projected volume at
    /etc/falco/rules.d, as the falcosecurity chart values in examples/ do)."""
    labels = labels or {"app.kubernetes.io/name": "falco", "app.kubernetes.io/instance": "falco"}
    sources = [{"configMap": {"name": f"{p}-{i}", "optional": True}} for p in mounts for i in range(16)]
    container: dict[str, Any] = {"name": "falco", "image": "falcosecurity/falco:0.44.1"}
    volumes = []
    if sources:
        volumes = [{"name": "misp-rules", "projected": {"sources": sources}}]
        container["volumeMounts"] = [{"name": "misp-rules", "mountPath": "/etc/falco/rules.d", "readOnly": True}]
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": namespace, "labels": labels, "resourceVersion": "1"},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": {"checksum/rules": "abc"}},
                "spec": {"containers": [container], "volumes": volumes},
            },
        },
    }


def configmap_body(name: str, namespace: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}, "resourceVersion": "1"},
        "data": {"rules.yaml": "# not ours\n"},
    }


async def create(kmock: kmock.KubernetesEmulator, body: dict[str, Any]) -> None:
    """POST an object the way kubectl would (watchers see it)."""
    meta = body["metadata"]
    api = f"/apis/{body['apiVersion']}" if "/" in body["apiVersion"] else f"/api/{body['apiVersion']}"
    plural = {"ConfigMap": "configmaps", "Secret": "secrets", "DaemonSet": "daemonsets", "MispFeed": PLURAL}[
        body["kind"]
    ]
    resp = await kmock.post(f"{api}/namespaces/{meta['namespace']}/{plural}", json=body)
    assert resp.status == 200, await resp.text()


def allow_list_url(name: str = "") -> str:
    """The cluster-scoped MispAllowLists (``name``: one of them)."""
    return f"/apis/{GROUP}/{VERSION}/mispallowlists" + (f"/{name}" if name else "")


async def create_allow_list(kmock: kmock.KubernetesEmulator, name: str, spec: dict[str, Any]) -> None:
    """POST a MispAllowList (cluster-scoped) the way kubectl would."""
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "MispAllowList", "metadata": {"name": name}, "spec": spec}
    resp = await kmock.post(allow_list_url(), json=body)
    assert resp.status == 200, await resp.text()


def feed_url(namespace: str, name: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}"


def status_of(kmock: kmock.KubernetesEmulator, namespace: str, name: str) -> dict[str, Any]:
    obj = kmock.objects[FEEDS, namespace, name]
    return copy.deepcopy(obj.raw.get("status") or {}) if not obj.deleted else {}


def cond(status: dict[str, Any], type_: str) -> dict[str, Any]:
    for c in status.get("conditions") or ():
        if c.get("type") == type_:
            return dict(c)
    return {}


def live(kmock: kmock.KubernetesEmulator, plural: str, namespace: str) -> dict[str, dict[str, Any]]:
    """Live (not deleted) objects of one resource in a namespace, by name (deep copies)."""
    return {
        name: copy.deepcopy(obj.raw)
        for (resource, ns, name), obj in kmock.objects.items()
        if resource.plural == plural and ns == namespace and not obj.deleted
    }


def configmaps(kmock: kmock.KubernetesEmulator, namespace: str) -> dict[str, dict[str, Any]]:
    """Live ConfigMaps of a namespace by name."""
    return live(kmock, "configmaps", namespace)


def events(kmock: kmock.KubernetesEmulator, namespace: str) -> list[tuple[str, str, str]]:
    """(type, reason, message) of the Events posted in a namespace, in order."""
    out = []
    for request in list(kmock):
        if request.resource is not None and request.resource.plural == "events" and request.namespace == namespace:
            data = request.data or {}
            if str(request.method).upper().endswith("POST"):
                out.append((data.get("type", ""), data.get("reason", ""), data.get("message", "")))
    return out


def writes(
    kmock: kmock.KubernetesEmulator, since: int = 0, plurals: tuple[str, ...] = ("configmaps", "daemonsets")
) -> list[str]:
    """Write requests (create, patch, delete) to ConfigMaps and DaemonSets after request number ``since``."""
    out = []
    for request in list(kmock)[since:]:
        if request.resource is None or request.resource.plural not in plurals:
            continue
        if request.headers.get("User-Agent", "").startswith(TEST_CLIENT):
            continue
        method = str(request.method.value if hasattr(request.method, "value") else request.method).upper()
        if method in ("POST", "PATCH", "PUT", "DELETE"):
            out.append(f"{method} {request.resource.plural} {request.namespace}/{request.name or ''}")
    return out


def request_count(kmock: kmock.KubernetesEmulator) -> int:
    return len(list(kmock))
