"""`--format configmaps` and the command it documents: what a real API server accepts (reference/KUBERNETES.md).

Client-side `kubectl apply` stores the whole object in the annotation
`kubectl.kubernetes.io/last-applied-configuration`, and all annotations of an object together may hold at most
262,144 bytes; `kubectl apply --server-side` stores no copy, so there only the ConfigMap data limit (1,048,576
bytes) applies. These tests build full shards at the default budget and check both limits against what we emit,
and that every place that tells the user how to apply the manifests says `--server-side`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from falco_misp.cli import main
from falco_misp.delivery.configmaps import build_configmaps
from falco_misp.errors import SpecError
from falco_misp.feed.model import DEFAULT_SHARD_BYTES, MAX_SHARD_BYTES
from falco_misp.feed.parse import parse_feed
from falco_misp.indicators.builder import IndicatorBuilder
from falco_misp.rendering.shards import render_rules
from falco_misp.sources.attributes import Attribute
from helpers import REPO

ANNOTATIONS_MAX = 262_144  # all annotations of one object (measured on kube-apiserver v1.32)
CONFIGMAP_DATA_MAX = 1_048_576
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def client_side_annotations_bytes(manifest: dict[str, object]) -> int:
    """What client-side apply puts into the object's annotations: its own ones plus the JSON copy of the object."""
    meta = manifest["metadata"]
    assert isinstance(meta, dict)
    own = meta.get("annotations") or {}
    copy = json.dumps(manifest, separators=(",", ":"))
    return sum(len(k) + len(v) for k, v in own.items()) + len(LAST_APPLIED) + len(copy)


def full_shard_manifests(count: int) -> list[dict[str, object]]:
    feed = parse_feed(
        {
            "kind": "MispFeed",
            "metadata": {"name": "big", "namespace": "sec"},
            "spec": {"source": {"text": {"url": "x"}}},
        }
    )
    values = (f"45.{i // 62500}.{i // 250 % 250}.{i % 250 + 1}" for i in range(count))
    builder = IndicatorBuilder(feed.spec).add_all(Attribute(value=v, type="ip-dst", timestamp=1) for v in values)
    bundle = render_rules(feed, builder.build())
    return build_configmaps(feed, bundle)


def test_default_shards_need_server_side_apply() -> None:
    manifests = full_shard_manifests(90_000)  # ~14 bytes a bare address in flow-style lists: > one shard
    assert len(manifests) >= 2  # the first shard is full at the default budget
    first = manifests[0]
    data = first["data"]
    assert isinstance(data, dict)
    size = sum(len(k) + len(v.encode()) for k, v in data.items())
    assert ANNOTATIONS_MAX < size <= CONFIGMAP_DATA_MAX  # fits server-side, not client-side
    assert client_side_annotations_bytes(first) > ANNOTATIONS_MAX


def test_the_largest_shard_fits_a_configmap_with_the_longest_key() -> None:
    """A ConfigMap's data, keys included, holds at most 1,048,576 bytes (measured: reference/KUBERNETES.md); a key
    is at most 253 bytes. The default and the largest allowed shardBytes stay below, whatever the feed's name."""
    assert DEFAULT_SHARD_BYTES <= MAX_SHARD_BYTES
    assert MAX_SHARD_BYTES + 253 <= CONFIGMAP_DATA_MAX
    with pytest.raises(SpecError, match="shardBytes"):
        spec = {"source": {"text": {"url": "x"}}, "falco": {"shardBytes": MAX_SHARD_BYTES + 1}}
        parse_feed({"kind": "MispFeed", "metadata": {"name": "big", "namespace": "sec"}, "spec": spec})


def test_render_prints_the_server_side_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cms"
    code = main(["render", "--feed", str(REPO / "examples" / "sample-feed.yaml"), "--out", str(out),
                 "--format", "configmaps"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert f"kubectl apply --server-side -f {out}" in printed
    for path in out.glob("*.configmap.yaml"):
        assert yaml.safe_load(path.read_text())["kind"] == "ConfigMap"


def test_docs_never_suggest_client_side_apply_for_rendered_configmaps() -> None:
    texts = {p: p.read_text(encoding="utf-8") for p in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]}
    mentions = 0
    for path, text in texts.items():
        for line in text.splitlines():
            if re.search(r"configmap\.yaml|--format configmaps", line):
                mentions += 1
                assert "kubectl apply -f" not in line, f"{path.name}: {line}"
    assert mentions  # the README documents the format
    assert "kubectl apply --server-side" in texts[REPO / "README.md"]
