"""`falco-misp render --allow-list FILE` (and `diff`, `push`): the MispAllowLists a feed names are merged in (networks
and domains never emitted, exceptions on the rules) with the operator's merge, so the files are the bytes the operator
would write; a named list that no file holds is a usage error naming it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from falco_misp.cli import main
from falco_misp.feed.allowlist import allow_list_documents, merge_allow_lists
from falco_misp.feed.parse import parse_feed
from falco_misp.pipeline import render_attributes
from falco_misp.sources.attributes import attributes_from_document
from helpers import REPO, misp_event
from rulecheck import block_items, load

EVENT = misp_event(1, [{"type": "ip-dst", "value": v} for v in ("45.0.0.7", "198.51.100.9", "45.9.0.0/16")])
ALLOW_LIST = {
    "apiVersion": "falco-misp.io/v1alpha1",
    "kind": "MispAllowList",
    "metadata": {"name": "corp-egress"},
    "spec": {
        "networks": ["198.51.100.0/24", "45.9.128.0/17"],
        "exceptions": [{"name": "scanner", "fields": ["proc.name"], "values": [["nessusd"]]}],
    },
}


def write(tmp: Path, allow_lists: list[str]) -> Path:
    (tmp / "events.json").write_text(json.dumps(EVENT))
    spec = {"source": {"file": {"url": "events.json"}}, "exclusions": {"allowLists": allow_lists}}
    feed = {"apiVersion": "falco-misp.io/v1alpha1", "kind": "MispFeed", "metadata": {"name": "cli"}, "spec": spec}
    path = tmp / "feed.yaml"
    path.write_text(yaml.safe_dump(feed))
    return path


def items(out: Path) -> list[str]:
    return sorted(i for p in sorted(out.glob("*.yaml")) for v in block_items(load(p.read_bytes())).values() for i in v)


def test_render_merges_the_allow_lists(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    feed_path = write(tmp_path, ["corp-egress"])
    lists = tmp_path / "allow-lists.yaml"
    lists.write_text(yaml.safe_dump_all([ALLOW_LIST, {"kind": "ConfigMap", "metadata": {"name": "ignored"}}]))
    out = tmp_path / "out"
    assert main(["render", "--feed", str(feed_path), "--allow-list", str(lists), "--out", str(out), "-q"]) == 0
    # 198.51.100.9 is inside the list's network; 45.9.0.0/16 is carved around 45.9.128.0/17
    assert items(out) == ["45.0.0.7", "45.9.0.0/17"]
    (written,) = sorted(out.glob("*.yaml"))
    rules = [d for d in load(written.read_bytes()) if "rule" in d]
    assert rules and all([e["name"] for e in r["exceptions"]] == ["corp-egress:scanner"] for r in rules)
    # the operator's merge and render give the same bytes
    feed = merge_allow_lists(parse_feed(yaml.safe_load(feed_path.read_text())), allow_list_documents([ALLOW_LIST]))
    (shard,) = render_attributes(feed, attributes_from_document(EVENT)).bundle.shards
    assert written.read_bytes() == shard.content


def test_a_missing_allow_list_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    feed_path = write(tmp_path, ["corp-egress", "lab"])
    lists = tmp_path / "allow-lists.yaml"
    lists.write_text(yaml.safe_dump(ALLOW_LIST))
    out = tmp_path / "out"
    assert main(["render", "--feed", str(feed_path), "--allow-list", str(lists), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--allow-list" in err and "lab" in err and "corp-egress," not in err
    assert not out.exists()  # nothing written
    assert main(["render", "--feed", str(feed_path), "--out", str(out)]) == 2  # no --allow-list at all


def test_repeated_allow_list_files_and_the_example(tmp_path: Path) -> None:
    feed_path = write(tmp_path, ["corp-egress", "lab"])
    corp, lab = tmp_path / "corp.yaml", tmp_path / "lab.yaml"
    corp.write_text(yaml.safe_dump(ALLOW_LIST))
    lab_list: dict[str, Any] = {**ALLOW_LIST, "metadata": {"name": "lab"}, "spec": {"networks": ["45.0.0.7"]}}
    lab.write_text(yaml.safe_dump(lab_list))
    out = tmp_path / "out"
    args = ["render", "--feed", str(feed_path), "--allow-list", str(corp), "--allow-list", str(lab), "--out", str(out)]
    assert main([*args, "-q"]) == 0
    assert items(out) == ["45.9.0.0/17"]
    example = REPO / "examples" / "allow-list.yaml"
    assert set(allow_list_documents(yaml.safe_load_all(example.read_text()))) == {"corp-egress"}


def test_diff_uses_the_same_merge(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`diff --allow-list` compares a render merged like `render --allow-list`: no change; without it, an error."""
    feed_path = write(tmp_path, ["corp-egress"])
    lists = tmp_path / "allow-lists.yaml"
    lists.write_text(yaml.safe_dump(ALLOW_LIST))
    out = tmp_path / "out"
    assert main(["render", "--feed", str(feed_path), "--allow-list", str(lists), "--out", str(out), "-q"]) == 0
    capsys.readouterr()
    assert (
        main(["diff", "--feed", str(feed_path), "--allow-list", str(lists), "--against", str(out), "--exit-code"]) == 0
    )
    assert "no indicator changed" in capsys.readouterr().out
    assert main(["diff", "--feed", str(feed_path), "--against", str(out)]) == 2
    assert "corp-egress" in capsys.readouterr().err
