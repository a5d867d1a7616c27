"""The ClusterMispServer and MispServer CRDs (issue 15): CRDs a real kube-apiserver accepts (k8s/crdcheck.py),
documented, with printer columns, whose schemas have exactly the fields feed/servers.py reads and whose status
admits every field the status check writes."""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from falco_misp.conditions import Condition, build_conditions, format_time
from falco_misp.errors import SpecError
from falco_misp.feed import parse as spec_module
from falco_misp.feed.model import API_GROUP, API_VERSION, ServerKind
from falco_misp.feed.servers import PLURALS, parse_server
from k8s.crdcheck import (
    REPO,
    admission_errors,
    convention_problems,
    crd_problems,
    load_crd,
    nodes,
    pruned_fields,
    schema_of,
    validate,
)

CRDS = {kind: load_crd(REPO / "deploy" / "crds" / f"{PLURALS[kind]}.{API_GROUP}.yaml") for kind in ServerKind}
MAXIMAL: dict[str, Any] = {
    "url": "https://misp.example.org",
    "authKeySecretRef": {"name": "misp-auth", "key": "authkey"},
    "verifyTLS": True,
    "caBundleSecretRef": {"name": "misp-ca", "key": "ca.crt"},
    "timeoutSeconds": 20,
    "pageSize": 1000,
    "zmq": {"url": "tcp://misp.example.org:50000", "credentialsSecretRef": {"name": "misp-zmq"}, "debounce": "5s"},
}
MAXIMAL_CLUSTER: dict[str, Any] = {
    **MAXIMAL,
    "allowedNamespaces": {
        "names": ["security"],
        "selector": {
            "matchLabels": {"misp": "circl"},
            "matchExpressions": [{"key": "team", "operator": "In", "values": ["secops"]}],
        },
    },
}


def maximal(kind: ServerKind) -> dict[str, Any]:
    return copy.deepcopy(MAXIMAL_CLUSTER if kind is ServerKind.CLUSTER else MAXIMAL)


def manifest(kind: ServerKind, spec: dict[str, Any], name: str = "circl") -> dict[str, Any]:
    meta = {"name": name} if kind is ServerKind.CLUSTER else {"name": name, "namespace": "security"}
    return {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": kind.value, "metadata": meta, "spec": spec}


@pytest.mark.parametrize("kind", list(ServerKind))
def test_the_crd_is_structural_documented_and_shows_its_status(kind: ServerKind) -> None:
    crd = CRDS[kind]
    assert crd_problems(crd) == []
    assert convention_problems(schema_of(crd)) == []
    assert crd["spec"]["scope"] == ("Cluster" if kind is ServerKind.CLUSTER else "Namespaced")
    assert crd["spec"]["names"]["kind"] == kind.value
    assert crd["metadata"]["name"] == f"{PLURALS[kind]}.{API_GROUP}"
    (version,) = crd["spec"]["versions"]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert list(columns) == ["URL", "Reachable", "Key Valid", "Version", "Age"]
    assert columns["Reachable"] == '.status.conditions[?(@.type=="Reachable")].status'
    assert columns["Version"] == ".status.mispVersion"


@pytest.mark.parametrize("kind", list(ServerKind))
def test_the_maximal_server_is_admitted_and_parsed(kind: ServerKind) -> None:
    doc = manifest(kind, maximal(kind))
    schema = schema_of(CRDS[kind])
    assert validate(doc, schema) == []
    assert admission_errors(doc, schema) == []
    server = parse_server(kind, "circl", doc["metadata"].get("namespace"), doc["spec"])
    assert server.server.zmq is not None and server.server.zmq.credentials_secret == "misp-zmq"
    assert server.server.auth_key is not None and server.server.auth_key.name == "misp-auth"
    if kind is ServerKind.CLUSTER:
        assert server.allowed.names == ("security",)
        assert server.allowed.selector is not None and server.allowed.selector.match_labels == (("misp", "circl"),)


@pytest.mark.parametrize("kind", list(ServerKind))
def test_the_schema_has_exactly_the_fields_the_parser_reads(kind: ServerKind, monkeypatch: pytest.MonkeyPatch) -> None:
    read: set[str] = set()
    for method in ("raw", "has"):
        original = getattr(spec_module._Reader, method)

        def recording(self: Any, key: str, _original: Any = original) -> Any:
            read.add(re.sub(r"\[\d+\]", "[]", self.at(key)))
            return _original(self, key)

        monkeypatch.setattr(spec_module._Reader, method, recording)
    parse_server(kind, "circl", None, maximal(kind))
    prefix = f"{PLURALS[kind]}/circl."
    read = {p.removeprefix(prefix) for p in read if p.startswith(prefix)}
    spec = schema_of(CRDS[kind])["properties"]["spec"]
    in_schema = {
        re.sub(r"\[\]\.", "[].", p) for p, _ in nodes(spec, "spec") if p != "spec" and not p.endswith(("[]", ".*"))
    }
    assert sorted(in_schema ^ read) == []


@pytest.mark.parametrize(
    ("kind", "change", "path"),
    [
        (ServerKind.CLUSTER, {"url": "ftp://x"}, "clustermispservers/circl.spec.url"),
        (ServerKind.CLUSTER, {"authKeySecretRef": None}, "clustermispservers/circl.spec.authKeySecretRef"),
        (ServerKind.CLUSTER, {"allowedNamespaces": {"names": ["Bad_Name"]}},
         "clustermispservers/circl.spec.allowedNamespaces.names[0]"),
        (ServerKind.NAMESPACED, {"allowedNamespaces": {"names": ["a"]}}, "mispservers/circl.spec.allowedNamespaces"),
        (ServerKind.NAMESPACED, {"zmq": {"url": "tcp://x:1", "credentialsSecretRef": {"name": "A"}}},
         "mispservers/circl.spec.zmq.credentialsSecretRef.name"),
    ],
)  # fmt: skip
def test_bad_servers_name_the_field(kind: ServerKind, change: dict[str, Any], path: str) -> None:
    spec = {**maximal(kind), **change}
    with pytest.raises(SpecError) as caught:
        parse_server(kind, "circl", None, {k: v for k, v in spec.items() if v is not None})
    assert caught.value.field == path


@pytest.mark.parametrize("kind", list(ServerKind))
def test_the_status_schema_admits_what_the_check_writes(kind: ServerKind) -> None:
    now = datetime(2026, 1, 5, tzinfo=UTC)
    conditions = build_conditions(
        [], [Condition("Reachable", True, "Answered", "ok"), Condition("KeyValid", False, "KeyRejected", "no")], now, 3
    )
    status = {"observedGeneration": 3, "lastCheck": format_time(now), "mispVersion": "2.5.2", "conditions": conditions}
    schema = schema_of(CRDS[kind])["properties"]["status"]
    assert pruned_fields(status, schema, ".status") == []
    assert pruned_fields({**status, "bogus": 1}, schema, ".status") == [".status.bogus"]


@pytest.mark.parametrize("kind", list(ServerKind))
@pytest.mark.parametrize("debounce", ["6m", "301s", "1h"])
def test_the_debounce_rule_rejects_more_than_five_minutes(kind: ServerKind, debounce: str) -> None:
    spec = maximal(kind)
    spec["zmq"]["debounce"] = debounce
    errors = admission_errors(manifest(kind, spec), schema_of(CRDS[kind]))
    assert any("zmq.debounce must be between 1s and 5m" in str(e) for e in errors), errors
    with pytest.raises(SpecError) as caught:
        parse_server(kind, "circl", None, spec)
    assert caught.value.field.endswith(".spec.zmq.debounce")
