"""Delivery as an OCI artifact (issue 16, mode OCI) by the operator: the real kopf and kubernetes client against kmock,
the MISP emulator, and a real registry (Debian's docker-registry with htpasswd users) on 127.0.0.1.

The push credentials come from a ``kubernetes.io/dockerconfigjson`` Secret; the artifact is read back from the
registry with plain HTTP requests of the test's own (manifest, config and layer media types, the layer's files);
the falco-operator Rulesfile the feed keeps is pinned to the pushed digest and valid against the real CRD. Unchanged
rules push nothing (the registry's access log shows no write); a refused push keeps the last good one.
"""

from __future__ import annotations

import base64
import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kmock
import pytest
from kubetest import (
    FEEDS,
    OPERATOR_TEST,
    FakeClock,
    cond,
    configmaps,
    create,
    events,
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

from emulators.misp import MispEmulator
from falco_misp.delivery.artifact import CONFIG_MEDIA_TYPE, LAYER_MEDIA_TYPE
from helpers import misp_event
from k8s.test_rulesfiles import (
    PLURAL,
    PROGRAMMED,
    operator_requests,
    rulesfile_resource,  # noqa: F401  (the Rulesfile resource in kmock: an autouse fixture)
    rulesfile_schema,
    rulesfiles,
    set_conditions,
)
from oci.registryserver import PASSWORD, USER, RegistryServer, htpasswd_file, make_cert, start_registry

pytestmark = OPERATOR_TEST
REPOSITORY = "falco/misp-rules"
PREFIX = "misp-sec-intel"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RegistryServer]:
    """A registry that wants :data:`USER`/:data:`PASSWORD` (plain HTTP on 127.0.0.1)."""
    server = start_registry(
        tmp_path / "registry", tmp_path / "storage", htpasswd=htpasswd_file(tmp_path, {USER: PASSWORD})
    )
    try:
        yield server
    finally:
        server.stop()


def docker_config_secret(name: str, namespace: str, host: str) -> dict[str, Any]:
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    config = json.dumps({"auths": {host: {"auth": auth}}})
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": "1"},
        "data": {".dockerconfigjson": base64.b64encode(config.encode()).decode()},
    }


def pulled(server: RegistryServer, reference: str) -> tuple[str, dict[str, Any], dict[str, Any], dict[str, bytes]]:
    """(digest, manifest, config, layer files) of a tag or digest, read with the test's own requests."""
    auth = (USER, PASSWORD)
    answer = server.get(f"/v2/{REPOSITORY}/manifests/{reference}", headers={"Accept": MANIFEST}, auth=auth)
    assert answer.status_code == 200, answer.text
    manifest = answer.json()
    config = server.get(f"/v2/{REPOSITORY}/blobs/{manifest['config']['digest']}", auth=auth).json()
    (layer,) = manifest["layers"]
    blob = server.get(f"/v2/{REPOSITORY}/blobs/{layer['digest']}", auth=auth).content
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    return answer.headers["Docker-Content-Digest"], manifest, config, files


def degraded(status: dict[str, Any]) -> bool:
    return cond(status, "Degraded").get("status") == "True"


def push_of(emulator: kmock.KubernetesEmulator) -> dict[str, Any]:
    return dict(status_of(emulator, "sec", "intel").get("push") or {})


async def test_pushed_pinned_unchanged_changed_refused_and_removed(
    kmock: kmock.KubernetesEmulator, misp: MispEmulator, clock: FakeClock, registry: RegistryServer
) -> None:
    misp.add_event(misp_event(1, ip_attrs(ips(20))))
    await create(kmock, secret_body("misp-auth", "sec", misp.api_key))
    await create(kmock, docker_config_secret("push-creds", "sec", registry.host))
    oci = {
        "reference": f"{registry.host}/{REPOSITORY}",
        "credentialsSecretRef": {"name": "push-creds"},
        "plainHTTP": True,
        "rulesfile": True,
    }
    spec = misp_spec(misp, falco={"namespace": "falco", "delivery": {"mode": "OCI", "oci": oci}})
    start = request_count(kmock)

    async with running_operator(kmock, clock):
        await create(kmock, feed_body("intel", "sec", spec))
        first = await eventually(lambda: push_of(kmock).get("digest") and push_of(kmock), what="pushed")
        status = status_of(kmock, "sec", "intel")
        assert cond(status, "Ready")["status"] == "True" and status["rollout"]["mode"] == "OCI"
        assert first["reference"] == f"{registry.host}/{REPOSITORY}" and first["pushed"] is True
        version = first["tags"][0]
        assert first["tags"] == [version, "latest"] and version.startswith("1.0.0-rules-")

        # Read back independently: both tags name the digest in status; falcoctl's media types; the shard file.
        for tag in first["tags"]:
            digest, manifest, config, files = pulled(registry, tag)
            assert digest == first["digest"]
        assert manifest["config"]["mediaType"] == CONFIG_MEDIA_TYPE
        assert [layer["mediaType"] for layer in manifest["layers"]] == [LAYER_MEDIA_TYPE]
        assert config["name"] == PREFIX and config["version"] == version
        assert f"{PREFIX.replace('-', '_')}_0_" in files[f"{PREFIX}-0.yaml"].decode()
        assert all(ip in files[f"{PREFIX}-0.yaml"].decode() for ip in ips(20))

        # The falco-operator's Rulesfile, pinned to the digest (it pulls again only when the spec changes).
        (pinned,) = rulesfiles(kmock).values()
        assert pinned["metadata"]["name"] == PREFIX == first["rulesfile"]
        assert pinned["spec"]["ociArtifact"] == {
            "image": {"repository": REPOSITORY, "tag": first["digest"]},
            "registry": {"name": registry.host, "plainHTTP": True},
        }
        validator = jsonschema.Draft202012Validator(rulesfile_schema())
        created = [b for m, p, _, b in operator_requests(kmock, start) if (m, p) == ("POST", PLURAL)]
        assert created and all(list(validator.iter_errors(body)) == [] for body in created)
        assert configmaps(kmock, "falco") == {}  # nothing for a DaemonSet to mount
        await set_conditions(kmock, PREFIX, **PROGRAMMED)
        done = await eventually(lambda: (c := cond(status_of(kmock, "sec", "intel"), "Delivered")) and
                                c["status"] == "True" and c, what="delivered")  # fmt: skip
        assert done["reason"] == "AllProgrammed"

        # The same rules at the next refresh: nothing written to the registry, nor to the Rulesfile.
        registry.mark()
        mark = request_count(kmock)
        clock.advance(hours=2)
        again = await eventually(lambda: (p := push_of(kmock)) and p["time"] != first["time"] and p, what="resynced")
        assert (again["digest"], again["pushed"]) == (first["digest"], False)
        assert registry.writes_since_mark() == []
        assert [(m, p) for m, p, _, _ in operator_requests(kmock, mark) if p == PLURAL and m != "GET"] == []

        # New MISP data: a new version tag and digest, the Rulesfile re-pinned.
        misp.add_event(misp_event(2, ip_attrs(ips(5, second=9))))
        clock.advance(hours=2)
        second = await eventually(
            lambda: (p := push_of(kmock)) and p["digest"] != first["digest"] and p, what="new push"
        )
        assert second["pushed"] is True and second["tags"][0] != version
        assert pulled(registry, "latest")[0] == second["digest"]
        assert pulled(registry, version)[0] == first["digest"]  # the old version stays pullable
        await eventually(lambda: rulesfiles(kmock)[PREFIX]["spec"]["ociArtifact"]["image"]["tag"] == second["digest"])

        # The registry goes away: Degraded with the registry's reason, the last good push kept, nothing re-pinned.
        registry.stop()
        misp.add_event(misp_event(3, ip_attrs(ips(5, second=20))))
        clock.advance(hours=2)
        failed = await eventually(lambda: (s := status_of(kmock, "sec", "intel")) and degraded(s) and s, what="refused")
        assert cond(failed, "Degraded")["reason"] == "RegistryUnreachable"
        assert failed["push"] == second
        assert cond(failed, "Ready")["status"] == "True" and cond(failed, "Ready")["reason"] == "LastGoodRules"
        assert rulesfiles(kmock)[PREFIX]["spec"]["ociArtifact"]["image"]["tag"] == second["digest"]
        await eventually(lambda: ("Warning", "RegistryUnreachable") in [(t, r) for t, r, _ in events(kmock, "sec")])
        assert ("Normal", "RulesPushed") in [(t, r) for t, r, _ in events(kmock, "sec")]

        # The feed is deleted: the pinned Rulesfile goes (the pushed artifact stays in the registry).
        resp = await kmock.delete(feed_url("sec", "intel"))
        assert resp.status == 200
        await eventually(lambda: kmock.objects[FEEDS, "sec", "intel"].deleted, what="finalizer released")
        assert rulesfiles(kmock) == {}

    asked = {plural for _, plural, _, _ in operator_requests(kmock, start)}
    assert asked.isdisjoint({"daemonsets", "pods"}), asked


async def test_a_tls_registry_with_a_ca_secret_and_user_password_keys_needs_no_rulesfile_at_all(
    kmock: kmock.KubernetesEmulator, misp: MispEmulator, clock: FakeClock, tmp_path: Path
) -> None:
    """Mode OCI alone (every falcoctl follows the tag): the CA and the credentials come from Secrets (keys username and
    password), nothing else is written in the cluster, no Rulesfile is even listed (no RBAC for them needed)."""
    cert = make_cert(tmp_path / "tls")
    server = start_registry(
        tmp_path / "registry", tmp_path / "storage", htpasswd=htpasswd_file(tmp_path, {USER: PASSWORD}), tls=cert
    )
    try:
        misp.add_event(misp_event(1, ip_attrs(ips(7))))
        await create(kmock, secret_body("misp-auth", "sec", misp.api_key))
        creds = {"username": USER, "password": PASSWORD, "ca.crt": cert.cert.read_text()}
        await create(kmock, {
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "registry", "namespace": "sec", "resourceVersion": "1"},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in creds.items()},
        })  # fmt: skip
        oci = {
            "reference": f"{server.host}/{REPOSITORY}:stable",
            "credentialsSecretRef": {"name": "registry"},
            "caSecretRef": {"name": "registry", "key": "ca.crt"},
        }
        spec = misp_spec(misp, falco={"namespace": "falco", "delivery": {"mode": "OCI", "oci": oci}})
        start = request_count(kmock)
        async with running_operator(kmock, clock):
            await create(kmock, feed_body("intel", "sec", spec))
            push = await eventually(lambda: push_of(kmock).get("digest") and push_of(kmock), what="pushed")
            assert push["tags"][1:] == ["stable"] and "rulesfile" not in push
            assert pulled(server, "stable")[0] == push["digest"]
            status = status_of(kmock, "sec", "intel")
            assert status["configMaps"] == [] and "Delivered" not in {c["type"] for c in status["conditions"]}
        cluster_writes = [(m, p) for m, p, _, _ in operator_requests(kmock, start) if m in ("POST", "PATCH", "DELETE")]
        assert {p for _, p in cluster_writes} <= {"mispfeeds", "events"}
        assert {p for _, p, _, _ in operator_requests(kmock, start)}.isdisjoint({PLURAL, "daemonsets", "pods"})
    finally:
        server.stop()
