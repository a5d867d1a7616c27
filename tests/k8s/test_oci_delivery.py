"""Delivery as an OCI artifact (issue 16, mode OCI) by the operator: the real kopf and kubernetes client against kmock,
the MISP emulator, and a real registry (Debian's docker-registry with htpasswd users) on 127.0.0.1.

The push credentials come from a ``kubernetes.io/dockerconfigjson`` Secret; the artifact is read back from the
registry with plain HTTP requests of the test's own (manifest, config and layer media types, the layer's files);
the falco-operator Rulesfile the feed keeps is pinned to the pushed digest and valid against the real CRD. Unchanged
rules push nothing (the registry's access log shows no write); a refused push keeps the last good one.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import logging
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
from falco_misp.delivery.artifact import (
    CONFIG_MEDIA_TYPE,
    LAYER_MEDIA_TYPE,
    build_artifact,
    build_layer,
    digest,
    layer_files,
    read_layer,
)
from falco_misp.delivery.registry import RegistryAuth, RegistryTarget, parse_reference, push_artifact
from falco_misp.rendering.shards import render_rules
from helpers import feed, indicators, misp_event
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
        # The tag did not exist: every indicator is new to the followers.
        assert status["lastChange"] == {"time": first["time"], "added": {"outbound_addresses": 20}, "removed": {}}
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
        # lastChange against the artifact the registry served before (read back from it, not from memory).
        assert status_of(kmock, "sec", "intel")["lastChange"] == {
            "time": second["time"], "added": {"outbound_addresses": 5}, "removed": {}
        }  # fmt: skip
        await eventually(lambda: ("Normal", "RulesChanged", "+5 outbound addresses (25 indicators now)") in
                         events(kmock, "sec"))  # fmt: skip
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
            assert status["configMaps"] == []
            # falcoctl followers tell no one: Delivered says what is known, and that nothing more can be.
            delivered = cond(status, "Delivered")
            assert (delivered["status"], delivered["reason"]) == ("Unknown", "PushedToRegistry")
            assert f"{server.host}/{REPOSITORY}@{push['digest']}" in delivered["message"]
            assert "cannot be observed" in delivered["message"]
        cluster_writes = [(m, p) for m, p, _, _ in operator_requests(kmock, start) if m in ("POST", "PATCH", "DELETE")]
        assert {p for _, p in cluster_writes} <= {"mispfeeds", "events"}
        assert {p for _, p, _, _ in operator_requests(kmock, start)}.isdisjoint({PLURAL, "daemonsets", "pods"})
    finally:
        server.stop()


async def test_delivered_follows_the_mode_never_left_from_the_previous_one(
    kmock: kmock.KubernetesEmulator, misp: MispEmulator, clock: FakeClock, registry: RegistryServer
) -> None:
    """Rulesfiles (programmed) -> plain OCI -> OCI with a pinned Rulesfile: each switch drops the old answer; plain OCI
    says PushedToRegistry, a pinned Rulesfile is asked again from the start."""
    misp.add_event(misp_event(1, ip_attrs(ips(3))))
    await create(kmock, secret_body("misp-auth", "sec", misp.api_key))
    await create(kmock, docker_config_secret("push-creds", "sec", registry.host))
    oci = {"reference": f"{registry.host}/{REPOSITORY}", "credentialsSecretRef": {"name": "push-creds"},
           "plainHTTP": True}  # fmt: skip

    def delivered() -> dict[str, Any]:
        return cond(status_of(kmock, "sec", "intel"), "Delivered")

    async def switch(generation: int, delivery: dict[str, Any]) -> dict[str, Any]:
        spec = misp_spec(misp, falco={"namespace": "falco", "delivery": delivery})
        resp = await kmock.patch(feed_url("sec", "intel"), json={"metadata": {"generation": generation}, "spec": spec})
        assert resp.status == 200
        return dict(await eventually(lambda: (s := status_of(kmock, "sec", "intel")).get("appliedGeneration")
                                     == generation and s, what=f"generation {generation} applied"))  # fmt: skip

    async with running_operator(kmock, clock):
        spec = misp_spec(misp, falco={"namespace": "falco", "delivery": {"mode": "Rulesfiles"}})
        await create(kmock, feed_body("intel", "sec", spec))
        await eventually(lambda: f"{PREFIX}-0" in rulesfiles(kmock), what="Rulesfile written")
        await set_conditions(kmock, f"{PREFIX}-0", **PROGRAMMED)
        await eventually(lambda: delivered().get("reason") == "AllProgrammed", what="programmed")

        status = await switch(2, {"mode": "OCI", "oci": oci})
        now = cond(status, "Delivered")
        assert (now["status"], now["reason"]) == ("Unknown", "PushedToRegistry")
        assert status["push"]["digest"] in now["message"] and "rulesfiles" not in (status.get("delivery") or {})
        pushed = status["lastChange"]
        assert pushed["added"] == {"outbound_addresses": 3}  # the registry held none of them
        await eventually(lambda: rulesfiles(kmock) == {}, what="Rulesfiles withdrawn")
        clock.advance(hours=2)  # the next sync (same rules, nothing pushed) says the same
        await eventually(lambda: push_of(kmock)["time"] != status["push"]["time"], what="resynced")
        assert delivered() == now

        status = await switch(3, {"mode": "OCI", "oci": {**oci, "rulesfile": True}})
        assert delivered().get("reason") != "PushedToRegistry"
        waiting = await eventually(lambda: (c := delivered()) and c, what="the pinned Rulesfile asked")
        assert (waiting["status"], waiting["reason"]) == ("Unknown", "Propagating")
        await set_conditions(kmock, PREFIX, **PROGRAMMED)
        await eventually(lambda: delivered().get("reason") == "AllProgrammed", what="pinned Rulesfile programmed")
        assert status["push"]["pushed"] is False and status["lastChange"] == pushed  # same rules: nothing pushed


def test_push_reads_back_what_it_replaces_bounded_and_never_failing_for_it(
    registry: RegistryServer, caplog: pytest.LogCaptureFixture
) -> None:
    """``read_previous``: the files of the artifact the moving tag served ({} for a new tag); an unreadable one is
    logged and left unknown (None), the push itself succeeds."""
    f = feed(name="intel", falco={"delivery": {"mode": "OCI", "oci": {"reference": f"{registry.host}/{REPOSITORY}"}}})
    target = RegistryTarget(reference=parse_reference(f"{registry.host}/{REPOSITORY}"), plain_http=True)
    auth = RegistryAuth(USER, PASSWORD)

    def bundle(*values: str) -> Any:
        return render_rules(f, indicators(list(values), f))

    first = push_artifact(target, build_artifact(f, bundle("45.0.0.1")), auth, read_previous=True)
    assert first.pushed and first.previous == {}
    second_bundle = bundle("45.0.0.1", "45.0.0.2")
    second = push_artifact(target, build_artifact(f, second_bundle), auth, read_previous=True)
    assert second.previous == layer_files(f, bundle("45.0.0.1"))  # byte-equal to what was pushed before
    assert push_artifact(target, build_artifact(f, second_bundle), auth, read_previous=True).previous is None

    # The tag now holds our annotation over a layer that is no tar.gz: unknown, logged, and the push goes on.
    good = build_artifact(f, bundle("45.0.0.3"))
    layer = b"not a tar.gz"
    manifest = json.loads(good.manifest)
    manifest["layers"][0].update(digest=digest(layer), size=len(layer))
    raw = json.dumps(manifest).encode()
    broken = dataclasses.replace(
        good, layer=layer, layer_digest=digest(layer), manifest=raw, manifest_digest=digest(raw)
    )
    push_artifact(target, broken, auth)
    with caplog.at_level(logging.WARNING, logger="falco_misp.delivery.registry"):
        after = push_artifact(target, build_artifact(f, bundle("45.0.0.4")), auth, read_previous=True)
    assert after.pushed and after.previous is None
    assert "cannot read the artifact this push replaces" in caplog.text and "not a tar.gz" in caplog.text
    assert pulled(registry, "latest")[0] == after.digest


def test_a_layer_is_read_back_only_within_its_bounds() -> None:
    files = {"a.yaml": b"- list: x\n", "b.yaml": b"# nothing\n"}
    assert read_layer(build_layer(files), 1024) == files
    with pytest.raises(ValueError, match="more than 15 bytes"):
        read_layer(build_layer(files), 15)
    with pytest.raises(ValueError, match="more than 1 files"):
        read_layer(build_layer(files), 1024, max_files=1)
    bomb = build_layer({"big.yaml": b"\0" * 50_000_000})  # 50 MB of zeros, about 50 KB packed
    assert len(bomb) < 100_000
    with pytest.raises(ValueError, match="more than 1048576 bytes"):
        read_layer(bomb, 1024 * 1024)  # refused from the header, before anything is unpacked
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        tar.addfile(tarfile.TarInfo("../escape.yaml"), io.BytesIO(b""))
    with pytest.raises(ValueError, match="not a plain file name"):
        read_layer(raw.getvalue(), 1024)
    with pytest.raises(ValueError, match=r"not a tar\.gz"):
        read_layer(b"garbage", 1024)
