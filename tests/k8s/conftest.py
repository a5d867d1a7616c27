"""Fixtures for the operator tests: kmock's Kubernetes emulator with our CRD's resource, the MISP emulator, a
controllable clock, and the record of the calls the operator makes. Operator tests use them with
``pytestmark = OPERATOR_TEST`` (see kubetest).

The real kopf, the real ``kubernetes`` client (pointed at kmock's URL) and the real PyMISP (pointed at the MISP
emulator) run; only the cluster and MISP are emulated. Every (verb, resource, namespace) the operator calls is
recorded in :data:`OPERATOR_CALLS`, checked against the RBAC the operator is meant to need
(:data:`kubetest.EXPECTED_CALLS`) and dumped as JSON to ``$FALCO_MISP_RBAC_CALLS`` when set.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import kmock
import pytest
from kubetest import ALLOW_LISTS, CLUSTER_SERVERS, EXPECTED_CALLS, FEEDS, PAIRED_URLS, SERVERS, TEST_CLIENT, FakeClock

from emulators.misp import MispEmulator
from k8s.crdcheck import load_crd, pruned_fields, schema_of

# (verb, resource, namespace-or-"*") of every call the operator made in any test of this session.
OPERATOR_CALLS: set[tuple[str, str, str]] = set()
_VERBS = {"LIST": "list", "WATCH": "watch", "FETCH": "get", "CREATE": "create", "UPDATE": "patch", "DELETE": "delete"}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def misp() -> Iterator[MispEmulator]:
    with MispEmulator() as server:
        PAIRED_URLS.append(server.url)  # kubetest.secret_body pairs Secrets with it (issue 15)
        try:
            yield server
        finally:
            PAIRED_URLS.remove(server.url)


@pytest.fixture
def resources(kmock: kmock.KubernetesEmulator) -> None:
    kmock.resources.load_bundled()  # core v1, apps/v1 and discovery: kopf waits for them before it starts
    kmock.resources[FEEDS] = kmock.ResourceInfo(
        kind="MispFeed",
        singular="mispfeed",
        namespaced=True,
        verbs={"list", "watch", "get", "patch", "create", "delete"},
        subresources={"status"},
    )
    kmock.resources[ALLOW_LISTS] = kmock.ResourceInfo(
        kind="MispAllowList",
        singular="mispallowlist",
        namespaced=False,
        verbs={"list", "watch", "get", "create", "patch", "delete"},
    )
    for resource, kind, namespaced in ((CLUSTER_SERVERS, "ClusterMispServer", False), (SERVERS, "MispServer", True)):
        kmock.resources[resource] = kmock.ResourceInfo(  # issue 15
            kind=kind,
            singular=kind.lower(),
            namespaced=namespaced,
            verbs={"list", "watch", "get", "create", "patch", "delete"},
            subresources={"status"},
        )


def _resource_name(resource: Any, subresource: str | None) -> str:
    group = f"{resource.group}/" if resource.group else ""
    name = f"{group}{resource.plural}"
    return f"{name}/{subresource}" if subresource else name


@pytest.fixture
def api_calls(kmock: kmock.KubernetesEmulator) -> Iterator[set[tuple[str, str, str]]]:
    """The (verb, resource, namespace) calls the operator made in this test (the test's own are excluded)."""
    calls: set[tuple[str, str, str]] = set()
    yield calls
    for request in list(kmock):
        agent = request.headers.get("User-Agent", "")
        if request.resource is None or request.resource.plural is None or agent.startswith(TEST_CLIENT):
            continue  # discovery, or the test's own requests
        verb = _VERBS.get(request.action.name if request.action is not None else "", str(request.method).lower())
        calls.add((verb, _resource_name(request.resource, request.subresource), request.namespace or "*"))
    OPERATOR_CALLS.update(calls)
    status_schema = schema_of(load_crd())["properties"]["status"]
    for request in list(kmock):
        if request.resource is not None and request.resource.plural == "mispfeeds" and request.subresource == "status":
            pruned = pruned_fields((request.data or {}).get("status") or {}, status_schema, ".status")
            assert not pruned, f"the operator wrote status fields a real API server prunes: {pruned}"
    unexpected = {(verb, resource) for verb, resource, _ in calls} - EXPECTED_CALLS
    assert not unexpected, f"the operator made calls its RBAC would not allow: {sorted(unexpected)}"
    target = os.environ.get("FALCO_MISP_RBAC_CALLS")
    if target:
        with open(target, "w", encoding="utf-8") as out:
            json.dump(sorted(OPERATOR_CALLS), out, indent=1)
