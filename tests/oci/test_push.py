"""Pushing to a real registry (docker-registry on 127.0.0.1) and pulling back with an independent client (oras):
media types, the layer's files byte-equal to ``falco-misp render``, no write for unchanged rules, both tags, auth,
TLS, a refused push keeping the last good rules, and ``falco-misp push``'s exit codes."""

from __future__ import annotations

import base64
import io
import json
import tarfile
import time
from pathlib import Path

import oras.client
import pytest
import requests
import yaml
from registryserver import PASSWORD, USER, RegistryServer, StartRegistry, TokenServer, free_port, make_cert

from falco_misp.cli import load_feed, main
from falco_misp.delivery.artifact import Artifact, build_artifact
from falco_misp.delivery.registry import RegistryAuth, RegistryTarget, parse_reference, push_artifact
from falco_misp.errors import RegistryError
from falco_misp.pipeline import fetch_and_render
from falco_misp.rendering.shards import render_rules
from falco_misp.sources.locations import FetchContext
from helpers import REPO, feed, indicators

SAMPLE = REPO / "examples" / "sample-feed.yaml"
REPO_PATH = "falco/misp-rules"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def sample_artifact() -> Artifact:
    """The bundled sample feed, fetched and rendered as ``falco-misp push`` does."""
    f = load_feed(SAMPLE)
    result = fetch_and_render(f, FetchContext(now=int(time.time()), base_dir=SAMPLE.parent))
    return build_artifact(f, result.bundle)


def other_artifact(count: int) -> Artifact:
    """Another feed's rules: ``count`` addresses (the count changes the rules hash)."""
    f = feed(name="sample")
    return build_artifact(
        f, render_rules(f, indicators([f"45.1.{i // 100}.{2 * (i % 100) + 1}" for i in range(count)], f))
    )


def target(server: RegistryServer, tag: str | None = None, **kw: object) -> RegistryTarget:
    ref = parse_reference(f"{server.host}/{REPO_PATH}" + (f":{tag}" if tag else ""))
    return RegistryTarget(reference=ref, plain_http=server.scheme == "http", timeout_seconds=10, **kw)  # type: ignore[arg-type]


def tag_digest(server: RegistryServer, tag: str, **kw: object) -> str | None:
    answer = server.get(f"/v2/{REPO_PATH}/manifests/{tag}", headers={"Accept": OCI_MANIFEST}, **kw)
    if answer.status_code == 404:
        return None
    assert answer.status_code == 200, answer.text
    digest: str = answer.headers["Docker-Content-Digest"]
    return digest


def untar(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def rendered_files(tmp_path: Path) -> dict[str, bytes]:
    """What ``falco-misp render --format files`` writes for the sample feed."""
    out = tmp_path / "rendered"
    assert main(["render", "--feed", str(SAMPLE), "--out", str(out), "--format", "files", "-q"]) == 0
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.yaml"))}


# ----------------------------------------------------------------------------------------------- push and pull
def test_cli_push_then_oras_pulls_the_files_render_writes(
    registry: RegistryServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = rendered_files(tmp_path)
    assert expected and all(name.startswith("misp-falco-sample-") for name in expected)
    capsys.readouterr()
    code = main(["push", "--feed", str(SAMPLE), "--to", f"{registry.host}/{REPO_PATH}", "--plain-http"])
    out = capsys.readouterr().out
    assert code == 0
    artifact = sample_artifact()
    assert f"pushed: {registry.host}/{REPO_PATH}@{artifact.manifest_digest}" in out
    assert f"tags: {artifact.version}, latest" in out

    client = oras.client.OrasClient(hostname=registry.host, insecure=True)
    for tag in ("latest", artifact.version):
        pulled = client.pull(target=f"{registry.host}/{REPO_PATH}:{tag}", outdir=str(tmp_path / f"pull-{tag}"))
        assert [Path(p).name for p in pulled] == ["misp-falco-sample.tar.gz"]  # the title annotation falcoctl uses
        files = untar(Path(pulled[0]))
        assert {name: files[name] for name in expected} == expected  # same names, same bytes as `render`
        rest = files.keys() - expected.keys()  # the other indices up to maxShards: no rules, stale copies replaced
        assert len(files) == 16 and all(yaml.safe_load(files[name]) is None for name in rest)


def test_media_types_and_config_through_plain_gets(registry: RegistryServer) -> None:
    artifact = sample_artifact()
    result = push_artifact(target(registry), artifact)
    answer = registry.get(f"/v2/{REPO_PATH}/manifests/latest", headers={"Accept": OCI_MANIFEST})
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == OCI_MANIFEST
    assert answer.headers["Docker-Content-Digest"] == result.digest == artifact.manifest_digest
    assert answer.content == artifact.manifest  # stored byte for byte
    manifest = answer.json()
    assert manifest["config"]["mediaType"] == "application/vnd.cncf.falco.rulesfile.config.v1+json"
    assert [layer["mediaType"] for layer in manifest["layers"]] == [
        "application/vnd.cncf.falco.rulesfile.layer.v1+tar.gz"
    ]
    assert manifest["annotations"]["io.falco-misp.rules-sha256"] == artifact.rules_sha256
    config = registry.get(f"/v2/{REPO_PATH}/blobs/{manifest['config']['digest']}")
    assert config.status_code == 200
    assert config.json() == {
        "name": "misp-falco-sample",
        "version": artifact.version,
        "requirements": [{"name": "engine_version_semver", "version": "0.31.0"}],
    }
    layer = registry.get(f"/v2/{REPO_PATH}/blobs/{artifact.layer_digest}")
    assert layer.content == artifact.layer


def test_both_tags_resolve_to_the_pushed_digest(registry: RegistryServer) -> None:
    artifact = sample_artifact()
    result = push_artifact(target(registry), artifact)
    assert result.pushed
    assert result.tags == (artifact.version, "latest")
    assert tag_digest(registry, "latest") == tag_digest(registry, artifact.version) == result.digest
    assert sorted(registry.get(f"/v2/{REPO_PATH}/tags/list").json()["tags"]) == sorted(result.tags)


def test_unchanged_rules_push_nothing(registry: RegistryServer) -> None:
    registry.mark()
    first = push_artifact(target(registry), sample_artifact())
    assert first.pushed and first.writes == 6  # config and layer (POST + PUT each), two manifests
    assert len(registry.writes_since_mark()) == 6
    registry.mark()
    again = push_artifact(target(registry), sample_artifact())
    assert (again.pushed, again.writes, again.digest) == (False, 0, first.digest)
    assert registry.writes_since_mark() == []  # the registry saw no POST, PUT, PATCH or DELETE
    assert {method for method, _, _ in registry.requests_since_mark()} == {"GET"}


def test_changed_rules_move_latest_and_keep_the_old_version_tag(registry: RegistryServer) -> None:
    old, new = other_artifact(10), other_artifact(11)
    first = push_artifact(target(registry), old)
    second = push_artifact(target(registry), new)
    assert second.pushed and second.digest != first.digest
    assert tag_digest(registry, "latest") == second.digest
    assert tag_digest(registry, new.version) == second.digest
    assert tag_digest(registry, old.version) == first.digest  # still there to pin or roll back to


def test_blobs_the_registry_holds_are_not_sent_again(registry: RegistryServer) -> None:
    artifact = sample_artifact()
    push_artifact(target(registry), artifact)
    registry.mark()
    result = push_artifact(target(registry, tag="stable"), artifact)  # same rules, a tag that does not hold them
    assert result.pushed and result.tags == (artifact.version, "stable") and result.writes == 2
    writes = registry.writes_since_mark()
    assert [(m, p) for m, p, _ in writes] == [
        ("PUT", f"/v2/{REPO_PATH}/manifests/{artifact.version}"),
        ("PUT", f"/v2/{REPO_PATH}/manifests/stable"),
    ]
    assert tag_digest(registry, "stable") == artifact.manifest_digest


# ------------------------------------------------------------------------------------------------------ auth
def test_htpasswd_right_password_pushes(auth_registry: RegistryServer) -> None:
    artifact = sample_artifact()
    result = push_artifact(target(auth_registry), artifact, RegistryAuth(USER, PASSWORD))
    assert result.pushed
    assert tag_digest(auth_registry, "latest", auth=(USER, PASSWORD)) == artifact.manifest_digest
    again = push_artifact(target(auth_registry), artifact, RegistryAuth(USER, PASSWORD))
    assert (again.pushed, again.writes) == (False, 0)


@pytest.mark.parametrize("auth", [RegistryAuth(USER, "wrong-" + PASSWORD), RegistryAuth("nobody", PASSWORD), None])
def test_htpasswd_refused_credentials(auth_registry: RegistryServer, auth: RegistryAuth | None) -> None:
    with pytest.raises(RegistryError) as caught:
        push_artifact(target(auth_registry), sample_artifact(), auth)
    assert caught.value.reason == "RegistryAuthFailed"
    assert auth_registry.host in caught.value.message
    assert PASSWORD not in str(caught.value) and "wrong-" not in str(caught.value)
    assert tag_digest(auth_registry, "latest", auth=(USER, PASSWORD)) is None


def test_bearer_token_flow(start: StartRegistry, tmp_path: Path) -> None:
    signer = make_cert(tmp_path / "signer", "signer")
    with TokenServer(signer, {USER: PASSWORD}, service="falco-misp-registry", issuer="falco-misp-issuer") as tokens:
        server = start(
            token={
                "realm": tokens.realm,
                "service": "falco-misp-registry",
                "issuer": "falco-misp-issuer",
                "rootcertbundle": str(signer.cert),
            }
        )
        artifact = sample_artifact()
        result = push_artifact(target(server), artifact, RegistryAuth(USER, PASSWORD))
        assert result.pushed
        asked = [r for r in tokens.requests if r["user"] == USER]
        assert asked and all(r["query"]["service"] == ["falco-misp-registry"] for r in asked)
        scopes = [scope.rpartition(":") for r in asked for scope in r["query"].get("scope", [])]
        assert any(name == f"repository:{REPO_PATH}" and set(actions.split(",")) == {"pull", "push"}
                   for name, _, actions in scopes)  # fmt: skip
        token = tokens.issue(USER, [f"repository:{REPO_PATH}:pull"])
        answer = server.get(
            f"/v2/{REPO_PATH}/manifests/latest",
            headers={"Accept": OCI_MANIFEST, "Authorization": f"Bearer {token}"},
        )
        assert answer.headers["Docker-Content-Digest"] == artifact.manifest_digest
        with pytest.raises(RegistryError) as caught:
            push_artifact(target(server), other_artifact(3), RegistryAuth(USER, "not-" + PASSWORD))
        assert caught.value.reason == "RegistryAuthFailed"
        assert PASSWORD not in str(caught.value)


# ------------------------------------------------------------------------------------------ refusals and TLS
def test_read_only_registry_refuses_and_the_last_good_stays(start: StartRegistry, tmp_path: Path) -> None:
    storage = tmp_path / "shared-storage"
    writable = start(storage=storage)
    good = push_artifact(target(writable), other_artifact(10))
    writable.stop()
    readonly = start(storage=storage, readonly=True)
    unchanged = push_artifact(target(readonly), other_artifact(10))  # nothing to write: no refusal either
    assert (unchanged.pushed, unchanged.writes, unchanged.digest) == (False, 0, good.digest)
    with pytest.raises(RegistryError) as caught:
        push_artifact(target(readonly), other_artifact(11))
    assert caught.value.reason == "PushRefused"
    assert readonly.host in caught.value.message and "HTTP 405" in caught.value.message
    assert tag_digest(readonly, "latest") == good.digest


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")  # the skip is the point
def test_tls_with_the_ca_bundle(tls_registry: RegistryServer) -> None:
    artifact = sample_artifact()
    ca = tls_registry.ca_bundle
    assert ca
    with pytest.raises(RegistryError) as caught:  # the system CAs do not know a self-signed certificate
        push_artifact(target(tls_registry), artifact)
    assert caught.value.reason == "RegistryUnreachable" and "TLS" in caught.value.message
    result = push_artifact(target(tls_registry, ca_bundle=ca), artifact)
    assert result.pushed
    skipped = push_artifact(target(tls_registry, verify_tls=False), artifact)
    assert (skipped.pushed, skipped.writes) == (False, 0)
    assert tag_digest(tls_registry, "latest") == artifact.manifest_digest


def test_plain_http_to_a_tls_registry_is_a_clear_error(tls_registry: RegistryServer) -> None:
    ref = parse_reference(f"{tls_registry.host}/{REPO_PATH}")
    with pytest.raises(RegistryError) as caught:
        push_artifact(RegistryTarget(reference=ref, plain_http=True, timeout_seconds=10), sample_artifact())
    assert caught.value.reason in ("BadAnswer", "PushRefused", "RegistryUnreachable")


def test_unreadable_ca_bundle(tls_registry: RegistryServer, tmp_path: Path) -> None:
    with pytest.raises(RegistryError) as caught:
        push_artifact(target(tls_registry, ca_bundle=str(tmp_path / "absent.pem")), sample_artifact())
    assert caught.value.reason == "RegistryUnreachable" and "CA bundle" in caught.value.message


def test_unreachable_registry() -> None:
    ref = parse_reference(f"127.0.0.1:{free_port()}/{REPO_PATH}")
    with pytest.raises(RegistryError) as caught:
        push_artifact(RegistryTarget(reference=ref, plain_http=True, timeout_seconds=5), sample_artifact())
    assert caught.value.reason == "RegistryUnreachable" and "refused" in caught.value.message


# ------------------------------------------------------------------------------------------------------- CLI
def test_cli_credentials_from_env_and_docker_config(
    auth_registry: RegistryServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    to = f"{auth_registry.host}/{REPO_PATH}"
    monkeypatch.setenv("PUSH_USER", USER)
    monkeypatch.setenv("PUSH_PASSWORD", "wrong-" + PASSWORD)
    args = ["push", "--feed", str(SAMPLE), "--to", to, "--plain-http", "-q"]
    assert main([*args, "--username-env", "PUSH_USER", "--password-env", "PUSH_PASSWORD"]) == 1
    err = capsys.readouterr().err
    assert "RegistryAuthFailed" in err and "nothing was pushed" in err and PASSWORD not in err
    monkeypatch.setenv("PUSH_PASSWORD", PASSWORD)
    assert main([*args, "--username-env", "PUSH_USER", "--password-env", "PUSH_PASSWORD"]) == 0
    # a docker config (what a kubernetes.io/dockerconfigjson Secret holds) keyed by host:port
    encoded = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"auths": {auth_registry.host: {"auth": encoded}}}))
    capsys.readouterr()
    assert main(["push", "--feed", str(SAMPLE), "--to", to, "--plain-http", "--docker-config", str(config)]) == 0
    assert "unchanged" in capsys.readouterr().out


def test_cli_exit_codes(registry: RegistryServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    to = f"{registry.host}/{REPO_PATH}"
    base = ["push", "--feed", str(SAMPLE), "--plain-http", "-q"]
    assert main([*base, "--to", to]) == 0
    assert main([*base, "--to", to]) == 0  # unchanged is success too
    assert main([*base, "--to", "falcosecurity/rules"]) == 2  # no registry host
    assert main([*base, "--to", f"{to}@sha256:{'0' * 64}"]) == 2  # a digest cannot be pushed to
    assert main(["push", "--feed", str(tmp_path / "missing.yaml"), "--to", to, "--plain-http"]) == 2
    monkeypatch.setenv("REGISTRY_USERNAME", USER)
    monkeypatch.delenv("REGISTRY_PASSWORD", raising=False)
    assert main([*base, "--to", to, "--ca-bundle", str(tmp_path / "absent.pem")]) == 2
    assert main([*base, "--to", to, "--timeout", "0"]) == 2
    assert main([*base, "--to", to]) == 2  # a user name without a password
    monkeypatch.delenv("REGISTRY_USERNAME")
    (tmp_path / "empty.json").write_text('{"auths": {}}')
    assert main([*base, "--to", to, "--docker-config", str(tmp_path / "empty.json")]) == 2
    with pytest.raises(SystemExit) as usage:
        main(["push", "--feed", str(SAMPLE)])  # --to is required
    assert usage.value.code == 2
    assert main([*base, "--to", f"127.0.0.1:{free_port()}/{REPO_PATH}", "--timeout", "5"]) == 1


def test_cli_source_failure_pushes_nothing(registry: RegistryServer, tmp_path: Path) -> None:
    broken = tmp_path / "feed.yaml"
    broken.write_text(SAMPLE.read_text().replace("sample-data/events.json", str(tmp_path / "absent.json")))
    registry.mark()
    assert main(["push", "--feed", str(broken), "--to", f"{registry.host}/{REPO_PATH}", "--plain-http", "-q"]) == 1
    assert registry.writes_since_mark() == []
    assert tag_digest(registry, "latest") is None


def test_oras_sees_falcoctls_layout(registry: RegistryServer, tmp_path: Path) -> None:
    """What falcoctl's puller needs: one manifest, the first layer a rulesfile layer with a title."""
    push_artifact(target(registry), sample_artifact())
    client = oras.client.OrasClient(hostname=registry.host, insecure=True)
    manifest = client.get_manifest(f"{registry.host}/{REPO_PATH}:latest")
    assert manifest["layers"][0]["mediaType"] == "application/vnd.cncf.falco.rulesfile.layer.v1+tar.gz"
    assert manifest["layers"][0]["annotations"]["org.opencontainers.image.title"].endswith(".tar.gz")
    raw = requests.get(registry.url(f"/v2/{REPO_PATH}/blobs/{manifest['layers'][0]['digest']}"), timeout=10)
    with tarfile.open(fileobj=io.BytesIO(raw.content), mode="r:gz") as tar:
        assert all(m.isreg() and "/" not in m.name for m in tar.getmembers())
