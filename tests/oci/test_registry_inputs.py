"""What the pusher reads before it speaks to a registry: references, docker config credentials, auth challenges."""

from __future__ import annotations

import base64
import json

import pytest

from falco_misp.delivery.registry import (
    Reference,
    RegistryAuth,
    auth_from_docker_config,
    parse_challenge,
    parse_reference,
)
from falco_misp.errors import RegistryError


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("127.0.0.1:5000/falco/rules", Reference("127.0.0.1:5000", "falco/rules", None)),
        ("127.0.0.1:5000/falco/rules:stable", Reference("127.0.0.1:5000", "falco/rules", "stable")),
        ("ghcr.io/acme/security/misp-rules:1.0", Reference("ghcr.io", "acme/security/misp-rules", "1.0")),
        ("localhost/rules", Reference("localhost", "rules", None)),
        ("localhost:5000/a.b_c__d-e/f:v_1", Reference("localhost:5000", "a.b_c__d-e/f", "v_1")),
        ("[::1]:5000/rules:latest", Reference("[::1]:5000", "rules", "latest")),
        ("registry.example.org/rules", Reference("registry.example.org", "rules", None)),
    ],
)
def test_references(ref: str, expected: Reference) -> None:
    assert parse_reference(ref) == expected
    assert str(parse_reference(ref)) == ref


@pytest.mark.parametrize(
    ("ref", "why"),
    [
        ("falcosecurity/rules", "not a registry host"),  # no implied Docker Hub
        ("rules", "no repository"),
        ("ghcr.io/", "no repository"),
        ("https://ghcr.io/acme/rules", "no scheme"),
        ("ghcr.io/acme/rules@sha256:" + "0" * 64, "digest"),
        ("ghcr.io/Acme/rules", "not a valid repository"),
        ("ghcr.io/acme//rules", "not a valid repository"),
        ("ghcr.io/acme/rules:", "not a valid tag"),
        ("ghcr.io/acme/rules:-x", "not a valid tag"),
        ("ghcr.io/acme/rules:" + "x" * 129, "not a valid tag"),
        ("ghcr.io/acme/rules:a:b", "not a valid repository"),
        ("bad_host.io/rules", "not a registry host"),
    ],
)
def test_bad_references(ref: str, why: str) -> None:
    with pytest.raises(RegistryError) as caught:
        parse_reference(ref)
    assert caught.value.reason == "BadReference"
    assert why in caught.value.message


@pytest.mark.parametrize(
    ("auths", "registry", "expected"),
    [
        ({"127.0.0.1:5000": {"auth": b64("u:p:with:colons")}}, "127.0.0.1:5000", RegistryAuth("u", "p:with:colons")),
        ({"https://ghcr.io": {"username": "u", "password": "p"}}, "ghcr.io", RegistryAuth("u", "p")),
        ({"https://index.docker.io/v1/": {"auth": b64("hub:tok")}}, "docker.io", RegistryAuth("hub", "tok")),
        ({"GHCR.io/": {"auth": b64("u:p")}}, "ghcr.io", RegistryAuth("u", "p")),
        ({"ghcr.io": {"auth": b64("u:p")}}, "quay.io", None),
        ({"127.0.0.1:5000": {"auth": b64("u:p")}}, "127.0.0.1:5001", None),
        ({}, "ghcr.io", None),
    ],
)
def test_docker_config(auths: dict[str, object], registry: str, expected: RegistryAuth | None) -> None:
    assert auth_from_docker_config(json.dumps({"auths": auths}), registry) == expected


def test_legacy_dockercfg_without_auths() -> None:
    legacy = json.dumps({"ghcr.io": {"auth": b64("u:p"), "email": "x@example.org"}})
    assert auth_from_docker_config(legacy, "ghcr.io") == RegistryAuth("u", "p")


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("{not json", "not valid JSON"),
        ("[1]", "not a JSON object"),
        (json.dumps({"auths": []}), "auths is not an object"),
        (json.dumps({"auths": {"ghcr.io": {"auth": "***not base64***"}}}), "not base64"),
        (json.dumps({"auths": {"ghcr.io": {"auth": b64("no-colon-s3cret")}}}), "not user:password"),
        (json.dumps({"auths": {"ghcr.io": {"identitytoken": "s3cret"}}}), "identity token"),
    ],
)
def test_unusable_docker_config_never_quotes_it(text: str, why: str) -> None:
    with pytest.raises(RegistryError) as caught:
        auth_from_docker_config(text, "ghcr.io")
    assert caught.value.reason == "BadCredentials"
    assert why in caught.value.message
    assert "s3cret" not in str(caught.value) and "not base64***" not in str(caught.value)


def test_auth_repr_hides_the_password() -> None:
    assert "s3cret" not in repr(RegistryAuth("u", "s3cret"))


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            'Bearer realm="https://auth.example.org/token",service="registry.example.org",'
            'scope="repository:a/b:pull,push"',
            ("bearer", {"realm": "https://auth.example.org/token", "service": "registry.example.org",
                        "scope": "repository:a/b:pull,push"}),
        ),
        ('Basic realm="Registry Realm"', ("basic", {"realm": "Registry Realm"})),
        ("bearer realm=https://t.example.org/x,service=s",
         ("bearer", {"realm": "https://t.example.org/x", "service": "s"})),
    ],
)  # fmt: skip
def test_challenges(header: str, expected: tuple[str, dict[str, str]]) -> None:
    assert parse_challenge(header) == expected
