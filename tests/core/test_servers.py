"""Who may send a Secret where (issue 15, pure): a Secret goes only to an origin its annotation names; a
ClusterMispServer serves only the namespaces it allows, by name or label selector; a feed's serverRef is parsed
and excludes the inline connection fields."""

from __future__ import annotations

from typing import Any

import pytest

from falco_misp.errors import SpecError
from falco_misp.feed.model import ServerKind
from falco_misp.feed.parse import parse_spec
from falco_misp.feed.servers import ALLOWED_URL_ANNOTATION, namespace_denial, origin, pairing_problem, parse_server

KEY = {"url": "https://misp.example.org", "authKeySecretRef": {"name": "k", "key": "authkey"}}


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://MISP.example.org/", "https://misp.example.org:443"),
        ("https://misp.example.org:443/misp/", "https://misp.example.org:443"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://[::1]/", "http://[::1]:80"),
        ("tcp://misp.example.org:50000", "tcp://misp.example.org:50000"),
        ("misp.example.org", None),
        ("https://x:notaport", None),
    ],
)
def test_origin(url: str, expected: str | None) -> None:
    assert origin(url) == expected


@pytest.mark.parametrize(
    ("annotation", "url", "paired"),
    [
        ("https://misp.example.org", "https://misp.example.org", True),
        ("https://misp.example.org/", "https://misp.example.org:443/", True),  # slash and default port: same origin
        ("https://other.example.org https://misp.example.org", "https://misp.example.org/misp", True),
        ("http://misp.example.org", "https://misp.example.org", False),  # the scheme counts
        ("https://misp.example.org:8443", "https://misp.example.org", False),  # so does the port
        ("https://misp.example.org.evil.example", "https://misp.example.org", False),
        ("https://misp.example.org", "https://misp.example.org.evil.example", False),
        ("", "https://misp.example.org", False),
        (None, "https://misp.example.org", False),
    ],
)
def test_a_secret_goes_only_where_its_owner_paired_it(annotation: str | None, url: str, paired: bool) -> None:
    annotations = {} if annotation is None else {ALLOWED_URL_ANNOTATION: annotation}
    problem = pairing_problem("team-a/misp-auth", annotations, url)
    assert (problem is None) is paired
    if problem is not None:  # names the Secret, the annotation and what to set
        assert "team-a/misp-auth" in problem and ALLOWED_URL_ANNOTATION in problem
        assert f"kubectl annotate secret -n team-a misp-auth {ALLOWED_URL_ANNOTATION}=" in problem


def cluster(allowed: dict[str, Any] | None) -> Any:
    spec = dict(KEY) | ({"allowedNamespaces": allowed} if allowed is not None else {})
    return parse_server(ServerKind.CLUSTER, "circl", None, spec)


@pytest.mark.parametrize(
    ("allowed", "namespace", "labels", "denied"),
    [
        (None, "security", {}, "allows no namespace"),
        ({}, "security", {}, "allows no namespace"),
        ({"names": ["security"]}, "security", None, None),
        ({"names": ["security"]}, "team-b", None, "does not allow namespace team-b (spec.allowedNamespaces: names"),
        ({"selector": {}}, "anything", None, None),  # Kubernetes' empty selector: every namespace
        ({"selector": {"matchLabels": {"misp": "yes"}}}, "team-b", {"misp": "yes"}, None),
        ({"selector": {"matchLabels": {"misp": "yes"}}}, "team-b", {"misp": "no"}, "selector misp=yes"),
        ({"selector": {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["dev"]}]}},
         "team-b", {"tier": "dev"}, "selector tier notin (dev)"),
        ({"selector": {"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}}, "team-b", {}, None),
        ({"selector": {"matchExpressions": [{"key": "tier", "operator": "Exists"}]}}, "team-b", {}, "selector tier"),
    ],
)  # fmt: skip
def test_which_namespaces_a_cluster_server_serves(
    allowed: dict[str, Any] | None, namespace: str, labels: dict[str, str] | None, denied: str | None
) -> None:
    why = namespace_denial(cluster(allowed), namespace, labels)
    if denied is None:
        assert why is None
    else:
        assert why is not None and "ClusterMispServer/circl" in why and denied in why


def test_a_namespaced_server_serves_its_namespace_only() -> None:
    server = parse_server(ServerKind.NAMESPACED, "circl", "team-a", KEY)
    assert namespace_denial(server, "team-a", None) is None
    assert "serves only feeds of namespace team-a" in (namespace_denial(server, "team-b", None) or "")


def test_a_feed_refers_to_a_server_instead_of_url_and_key() -> None:
    spec = parse_spec({"source": {"misp": {"serverRef": {"kind": "MispServer", "name": "circl"}, "verifyTLS": True}}})
    misp = spec.source.misp
    assert misp is not None and misp.server_ref is not None
    assert (misp.server_ref.kind, misp.server_ref.name, misp.url, misp.auth_key) == (
        ServerKind.NAMESPACED, "circl", "", None
    )  # fmt: skip


@pytest.mark.parametrize(
    ("misp", "field"),
    [
        ({"serverRef": {"kind": "MispServer", "name": "c"}, **KEY}, "spec.source.misp.url"),
        ({"serverRef": {"kind": "MispServer", "name": "c"}, "zmq": {"url": "tcp://h:1"}}, "spec.source.misp.zmq"),
        ({"serverRef": {"kind": "Issuer", "name": "c"}}, "spec.source.misp.serverRef.kind"),
        ({"authKeySecretRef": {"name": "k", "key": "k"}}, "spec.source.misp.url"),
        ({**KEY, "zmq": {"url": "tcp://h:1", "credentialsSecretRef": {"name": "z"}}},
         "spec.source.misp.zmq.credentialsSecretRef"),  # inline: no ZeroMQ credentials from the feed's namespace
    ],
)  # fmt: skip
def test_server_ref_excludes_the_inline_fields(misp: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec({"source": {"misp": misp}})
    assert caught.value.field == field
