"""The rulesfile artifact (pure): falcoctl's media types and config, a layer holding exactly the shard files, and
the same bytes for the same rules whatever the clock says."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import tarfile
import time

import pytest
import yaml

from falco_misp.delivery import artifact as art
from falco_misp.delivery.artifact import build_artifact
from falco_misp.feed.model import Feed
from falco_misp.rendering.shards import RulesBundle, render_rules
from helpers import feed, indicators

# semver.org's regular expression (what falcoctl's semver.Parse accepts) and the OCI distribution tag grammar
SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
OCI_TAG = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")


def addresses(n: int, second: int = 0) -> list[str]:
    return [f"45.{second}.{i // 100}.{2 * (i % 100) + 1}" for i in range(n)]  # no two adjacent: no collapse


def bundle_of(values: list[str], **falco: object) -> tuple[Feed, RulesBundle]:
    f = feed(name="fleet", falco=dict(falco))
    return f, render_rules(f, indicators(values, f))


def members(layer: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(layer), mode="r:gz") as tar:
        return tar.getmembers()


def files_of(layer: bytes) -> dict[str, bytes]:
    out = {}
    with tarfile.open(fileobj=io.BytesIO(layer), mode="r:gz") as tar:
        for member in tar.getmembers():
            extracted = tar.extractfile(member)
            assert extracted is not None
            out[member.name] = extracted.read()
    return out


def test_layer_holds_the_shard_files_and_a_placeholder_for_every_other_index() -> None:
    f, bundle = bundle_of(addresses(4000), shardBytes=16384, maxShards=8)
    assert 3 <= len(bundle.shards) < 8  # several files, so the order and the names matter
    artifact = build_artifact(f, bundle)
    files = files_of(artifact.layer)
    assert {s.filename: files[s.filename] for s in bundle.shards} == {s.filename: s.content for s in bundle.shards}
    # falcoctl never deletes a file: every other index gets a rules file without rules, replacing a stale shard
    assert sorted(files) == sorted(f"misp-ns-fleet-{i}.yaml" for i in range(8))
    for index in range(len(bundle.shards), 8):
        text = files[f"misp-ns-fleet-{index}.yaml"]
        assert yaml.safe_load(text) is None and f"Shard {index} of MISP feed ns/fleet" in text.decode()
    assert [m.name for m in members(artifact.layer)] == sorted(files)


def test_layer_is_deterministic_tar_gz() -> None:
    f, bundle = bundle_of(addresses(300))
    layer = build_artifact(f, bundle).layer
    # gzip header: magic, deflate, no FNAME flag (0x08), MTIME 0
    assert layer[:3] == b"\x1f\x8b\x08"
    assert layer[3] & 0x08 == 0
    assert layer[4:8] == b"\0\0\0\0"
    for member in members(layer):
        assert member.isreg()
        assert (member.mtime, member.uid, member.gid, member.uname, member.gname) == (0, 0, 0, "", "")
        assert member.mode == 0o644
        assert "/" not in member.name  # falcoctl installs files flat into its rules folder


def test_same_input_same_bytes_whatever_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    values = addresses(500)
    first = build_artifact(*bundle_of(values))
    monkeypatch.setattr(time, "time", lambda: 2_000_000_000.0)  # gzip and tarfile would take their time from here
    second = build_artifact(*bundle_of(values))  # a new Feed and bundle: nothing cached
    assert (second.manifest, second.config, second.layer) == (first.manifest, first.config, first.layer)
    assert second.manifest_digest == first.manifest_digest


def test_media_types_digests_and_annotations() -> None:
    f, bundle = bundle_of(addresses(10))
    artifact = build_artifact(f, bundle)
    manifest = json.loads(artifact.manifest)
    assert manifest["schemaVersion"] == 2
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"] == {
        "mediaType": "application/vnd.cncf.falco.rulesfile.config.v1+json",
        "digest": "sha256:" + hashlib.sha256(artifact.config).hexdigest(),
        "size": len(artifact.config),
    }
    [layer] = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.cncf.falco.rulesfile.layer.v1+tar.gz"
    assert layer["digest"] == artifact.layer_digest == "sha256:" + hashlib.sha256(artifact.layer).hexdigest()
    assert layer["size"] == len(artifact.layer)
    # falcoctl saves the layer under its title before unpacking it: without one the pull fails
    assert layer["annotations"] == {"org.opencontainers.image.title": "misp-ns-fleet.tar.gz"}
    assert manifest["annotations"]["io.falco-misp.rules-sha256"] == bundle.sha256 == artifact.rules_sha256
    assert manifest["annotations"]["io.falco-misp.feed"] == "ns/fleet"
    assert manifest["annotations"]["org.opencontainers.image.version"] == artifact.version
    assert artifact.manifest_digest == "sha256:" + hashlib.sha256(artifact.manifest).hexdigest()
    assert gzip.decompress(artifact.layer)  # a real gzip stream


def test_config_is_falcoctls_artifact_config() -> None:
    f, bundle = bundle_of(addresses(10))
    artifact = build_artifact(f, bundle)
    config = json.loads(artifact.config)
    assert config == {
        "name": "misp-ns-fleet",
        "version": artifact.version,
        "requirements": [{"name": "engine_version_semver", "version": "0.31.0"}],
    }
    # falcoctl compares engine_version_semver with semver: same major as Falco's engine (0), not newer
    assert SEMVER.match(config["requirements"][0]["version"])


@pytest.mark.parametrize("count", [1, 10, 2000])
def test_version_is_semver_a_valid_tag_and_names_the_rules(count: int) -> None:
    f, bundle = bundle_of(addresses(count))
    artifact = build_artifact(f, bundle)
    assert artifact.version == f"1.0.0-rules-{bundle.sha256[:12]}"
    assert SEMVER.match(artifact.version), "falcoctl lists tags with semver.Parse: latest or semver only"
    assert OCI_TAG.match(artifact.version)


def test_all_digit_hashes_still_give_valid_semver() -> None:
    # a hash prefix of digits with a leading zero is not a valid pre-release identifier on its own
    assert SEMVER.match(art.artifact_version("012345678901" + "a" * 52))


def test_other_rules_other_version_and_digest() -> None:
    one = build_artifact(*bundle_of(addresses(10)))
    two = build_artifact(*bundle_of(addresses(11)))
    assert one.rules_sha256 != two.rules_sha256
    assert one.version != two.version
    assert one.manifest_digest != two.manifest_digest
    assert one.layer_digest != two.layer_digest
